use std::path::Path;

use super::*;
use crate::model::{Anchor, Attributes, SourceAccount};

const MINIMAL: &str = r#"address = "lower(otherMailbox)"

[source]
attributes = ["otherMailbox", "sAMAccountName", "userPrincipalName", "company"]

[scope]
base_dns = ["OU=Partners,DC=lab,DC=example,DC=com"]

[join.cloud_only]
source = "userPrincipalName"
cloud = "userPrincipalName"
"#;

fn parse(text: &str) -> Result<Mapping, Errors> {
    Mapping::parse(Path::new("mappings/test.toml"), text)
}

fn first_error(text: &str) -> Error {
    match parse(text) {
        Ok(m) => panic!("expected an error, loaded {m:?}"),
        Err(Errors(e)) => e.into_iter().next().unwrap(),
    }
}

pub(crate) fn account(sam: &str, ou: &str, other_mailbox: Option<&str>) -> SourceAccount {
    let mut guid = [0u8; 16];
    for (i, b) in sam.bytes().enumerate() {
        guid[i % 16] ^= b.wrapping_add(i as u8);
    }
    let mut attributes = Attributes::new();
    attributes.insert("sAMAccountName".to_string(), vec![sam.to_string()]);
    if let Some(m) = other_mailbox {
        attributes.insert("otherMailbox".to_string(), vec![m.to_string()]);
    }
    SourceAccount {
        dn: format!("CN={sam},{ou},DC=lab,DC=example,DC=com"),
        object_guid: Some(Anchor::from_bytes(&guid)),
        consistency_guid: None,
        account_name: Some(sam.to_string()),
        user_principal_name: Some(format!("{sam}@lab.example.com")),
        display_name: Some(sam.to_string()),
        mail: None,
        user_account_control: Some(0x200),
        admin_count: false,
        locked: false,
        member_of: vec![],
        password_changed: None,
        attributes,
        exchange: None,
    }
}

#[test]
fn minimal_mapping_loads_with_defaults() {
    let m = parse(MINIMAL).unwrap();
    assert_eq!(m.name, "test");
    assert_eq!(m.join.anchor, AnchorAttribute::ConsistencyGuid);
    assert_eq!(
        m.join.cloud_only.as_ref().map(|p| p.cloud),
        Some(CloudProperty::UserPrincipalName)
    );
    assert!(m.write.cloud_only_other_mails && !m.write.cloud_only_mail);
    assert_eq!(m.invitation, InvitationSettings::default());
}

#[test]
fn unknown_attribute_names_file_line_column_and_help() {
    let text = MINIMAL.replace(
        "address = \"lower(otherMailbox)\"",
        "address = \"lower(extensionAtribute10)\"",
    );
    let text = text.replace("\"company\"", "\"company\", \"extensionAttribute10\"");
    let e = first_error(&text);
    assert_eq!(
        e.kind,
        ErrorKind::UnknownAttribute {
            name: "extensionAtribute10".into(),
            key: "address".into()
        }
    );
    assert_eq!((e.line, e.column), (1, 18));
    let shown = e.to_string();
    assert!(
        shown.starts_with(
            "mappings/test.toml:1:18: unknown attribute `extensionAtribute10` in `address`\nhelp: did you mean `extensionAttribute10`?"
        ),
        "{shown}"
    );
}

#[test]
fn unknown_keys_functions_tables_and_bad_values_are_errors() {
    let e = first_error(&format!("{MINIMAL}\n[scope2]\nx = 1\n"));
    assert!(matches!(e.kind, ErrorKind::Toml(_)), "{e}");
    assert_eq!((e.line, e.column), (13, 2));
    assert!(e.help.contains("docs/mapping.md"));

    let e = first_error(&MINIMAL.replace("lower(otherMailbox)", "lowr(otherMailbox)"));
    assert!(matches!(e.kind, ErrorKind::UnknownFunction { .. }), "{e}");
    assert!(e.help.contains("`lower`"), "{e}");

    let e = first_error(&MINIMAL.replace("lower(otherMailbox)", "lookup('nope', sAMAccountName)"));
    assert!(matches!(e.kind, ErrorKind::UnknownTable { .. }), "{e}");

    let e = first_error(&MINIMAL.replace("lower(otherMailbox)", "lower(otherMailbox"));
    assert!(matches!(e.kind, ErrorKind::Syntax { .. }), "{e}");

    let e = first_error(&MINIMAL.replace("\"company\"", "\"unicodePwd\""));
    assert!(matches!(e.kind, ErrorKind::PasswordAttribute { .. }), "{e}");

    let e = first_error(&MINIMAL.replace("cloud = \"userPrincipalName\"", "cloud = \"upn\""));
    assert!(matches!(e.kind, ErrorKind::BadValue { .. }), "{e}");
    assert_eq!(e.line, 11);

    let e = first_error(&MINIMAL.replace("OU=Partners,DC=lab,DC=example,DC=com", "Partners"));
    assert!(matches!(e.kind, ErrorKind::BadDn { .. }), "{e}");

    let e = first_error(&format!(
        "{MINIMAL}\n[invitation]\nredirect_url = \"http://x\"\n"
    ));
    assert!(matches!(e.kind, ErrorKind::BadValue { .. }), "{e}");

    let e = first_error(&format!(
        "{MINIMAL}\n[invitation]\ncc = \"a,b@x.example\"\n"
    ));
    assert!(matches!(e.kind, ErrorKind::BadValue { .. }), "{e}");

    let e = first_error(&format!("{MINIMAL}\n[write]\nsynced = [\"otherMails\"]\n"));
    assert!(matches!(e.kind, ErrorKind::BadValue { .. }), "{e}");
}

#[test]
fn every_error_of_a_file_is_reported_at_once() {
    let text = MINIMAL
        .replace("lower(otherMailbox)", "lower(otherMailbx)")
        .replace("cloud = \"userPrincipalName\"", "cloud = \"upn\"");
    let Err(Errors(errors)) = parse(&text) else {
        panic!("expected errors")
    };
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[test]
fn filters_are_capped_and_validated_with_position() {
    let with_filter =
        |f: &str| MINIMAL.replace("base_dns = [", &format!("filter = \"{f}\"\nbase_dns = ["));
    assert!(parse(&with_filter("(&(objectClass=user)(company=Fabrikam))")).is_ok());
    let e = first_error(&with_filter("(&(objectClass=user)"));
    assert!(matches!(e.kind, ErrorKind::Filter(_)), "{e}");
    let deep = format!("{}(cn=a){}", "(!".repeat(40), ")".repeat(40));
    let e = first_error(&with_filter(&deep));
    assert!(e.to_string().contains("nested 33 levels deep"), "{e}");
    // Column points at the 33rd parenthesis: `filter = "` is 10 characters.
    assert_eq!((e.line, e.column), (7, 11 + 64));
    let long = format!("(cn={})", "a".repeat(5000));
    assert!(
        first_error(&with_filter(&long))
            .to_string()
            .contains("more than 4096")
    );
}

#[test]
fn tables_load_relative_to_the_mapping_and_report_csv_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.csv"),
        "account,externalEmail\np.adams,ana@fabrikam.example\n",
    )
    .unwrap();
    let text = format!(
        "{}\n[tables.t]\nfile = \"t.csv\"\n",
        MINIMAL.replace("lower(otherMailbox)", "lookup('t', sAMAccountName)")
    );
    let path = dir.path().join("vendors.toml");
    let m = Mapping::parse(&path, &text).unwrap();
    assert_eq!(m.tables()["t"].get("P.Adams"), Some("ana@fabrikam.example"));

    std::fs::write(
        dir.path().join("t.csv"),
        "account,externalEmail\na,x@y.example\nA,z@y.example\n",
    )
    .unwrap();
    let Err(Errors(e)) = Mapping::parse(&path, &text) else {
        panic!("expected a table error")
    };
    assert!(e[0].path.ends_with("t.csv"), "{}", e[0]);
    assert_eq!(e[0].line, 3);
}

/// A mapping with one table `t` whose `file` is `file`, and where that key's value starts.
fn with_table(file: &str) -> (String, usize, usize) {
    let head = MINIMAL.replace("lower(otherMailbox)", "lookup('t', sAMAccountName)");
    let text = format!("{head}\n[tables.t]\nfile = {file:?}\n");
    let line = text.lines().count();
    (text, line, "file = ".len() + 1)
}

// See: issue 10, finding 5 (a table could read any file and print its first line).
#[cfg(unix)]
#[test]
fn table_files_stay_inside_the_mapping_directory_and_are_never_quoted() {
    let secret = "s3cret-bind-password";
    let outside = tempfile::tempdir().unwrap();
    let secret_file = outside.path().join("bind.pw");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mappings");
    std::fs::create_dir_all(dir.join("tables")).unwrap();
    std::fs::write(root.path().join("above.csv"), format!("{secret}\n")).unwrap();
    std::os::unix::fs::symlink(&secret_file, dir.join("link.csv")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.join("linked-dir")).unwrap();
    let path = dir.join("vendors.toml");

    for (file, why) in [
        (secret_file.display().to_string(), "absolute path"),
        ("/etc/passwd".to_string(), "absolute path"),
        ("../above.csv".to_string(), "`..`"),
        ("tables/../../above.csv".to_string(), "`..`"),
        ("link.csv".to_string(), "outside the mapping directory"),
        (
            "linked-dir/bind.pw".to_string(),
            "outside the mapping directory",
        ),
    ] {
        let (text, line, column) = with_table(&file);
        let Err(Errors(e)) = Mapping::parse(&path, &text) else {
            panic!("{file}: loaded")
        };
        assert_eq!(e.len(), 1, "{file}: {e:?}");
        let e = &e[0];
        assert!(matches!(e.kind, ErrorKind::TablePath { .. }), "{file}: {e}");
        assert_eq!(e.path, path.display().to_string(), "{file}");
        assert_eq!((e.line, e.column), (line, column), "{file}: {e}");
        let shown = e.to_string();
        assert!(shown.contains(why), "{file}: {shown}");
        assert!(!shown.contains(secret), "{file} leaked the secret: {shown}");
        assert!(shown.contains("\nhelp: "), "{shown}");
    }

    // A secret copied inside the directory loads as a table and fails on its header, still
    // without quoting it.
    std::fs::write(dir.join("tables/copy.csv"), format!("{secret}\n")).unwrap();
    let (text, _, _) = with_table("tables/copy.csv");
    let Err(Errors(e)) = Mapping::parse(&path, &text) else {
        panic!("a header without the columns loaded")
    };
    let shown = e[0].to_string();
    assert!(
        shown.starts_with(&format!("{}:1:1:", dir.join("tables/copy.csv").display())),
        "{shown}"
    );
    assert!(!shown.contains(secret), "leaked: {shown}");

    // Links that stay inside the directory are fine.
    std::fs::write(
        dir.join("tables/real.csv"),
        "account,externalEmail\np.adams,ana@fabrikam.example\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(dir.join("tables/real.csv"), dir.join("alias.csv")).unwrap();
    for file in ["tables/real.csv", "alias.csv", "./tables/real.csv"] {
        let (text, _, _) = with_table(file);
        let m = Mapping::parse(&path, &text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(m.tables()["t"].get("p.adams"), Some("ana@fabrikam.example"));
    }
}

#[test]
fn the_mapping_set_rejects_duplicate_names_and_lists_attributes() {
    let a = parse(MINIMAL).unwrap();
    let b = parse(MINIMAL).unwrap();
    assert!(MappingSet::from_mappings(vec![a, b]).is_err());
    let set = MappingSet::from_mappings(vec![parse(MINIMAL).unwrap()]).unwrap();
    let attrs = set.attributes();
    assert!(attrs.contains(&"otherMailbox".to_string()));
    assert!(attrs.contains(&"objectGUID".to_string()));
    assert_eq!(
        attrs
            .iter()
            .filter(|a| a.eq_ignore_ascii_case("samaccountname"))
            .count(),
        1
    );
    let searches = set.searches();
    assert_eq!(searches.len(), 1);
    assert_eq!(searches[0].filter, "(objectClass=user)");
    // A base DN written twice (another case, other spaces) is one search, one snapshot side.
    let twice = MINIMAL.replace(
        r#"base_dns = ["OU=Partners,DC=lab,DC=example,DC=com"]"#,
        r#"base_dns = ["OU=Partners,DC=lab,DC=example,DC=com", "ou=partners, dc=lab,dc=example,dc=com", "OU=Staff,DC=lab,DC=example,DC=com"]"#,
    );
    let set = MappingSet::from_mappings(vec![parse(&twice).unwrap()]).unwrap();
    let bases: Vec<String> = set.searches().into_iter().map(|s| s.base_dn).collect();
    assert_eq!(
        bases,
        [
            "OU=Partners,DC=lab,DC=example,DC=com",
            "OU=Staff,DC=lab,DC=example,DC=com"
        ]
    );
}

#[test]
fn map_decides_scope_address_join_keys_and_protection() {
    let text = MINIMAL
        .replace("[scope]\n", "[scope]\nwhen = \"company != 'Internal'\"\ndeny = [\"p.deny\"]\nprotected_groups = [\"CN=Admins,DC=lab,DC=example,DC=com\"]\n");
    let set = MappingSet::from_mappings(vec![parse(&text).unwrap()]).unwrap();
    let mut internal = account("p.internal", "OU=Partners", Some("i@x.example"));
    internal
        .attributes
        .insert("company".into(), vec!["Internal".into()]);
    let mut admin = account("p.admin", "OU=Partners", Some("ADMIN@x.example "));
    admin.admin_count = true;
    admin.member_of = vec!["cn=admins, dc=lab,dc=example,dc=com".into()];
    let found = vec![
        (
            "test".to_string(),
            account("p.adams", "OU=Partners", Some(" Ana@Fabrikam.example")),
        ),
        ("test".to_string(), account("p.nomail", "OU=Partners", None)),
        (
            "test".to_string(),
            account("outside", "OU=Staff", Some("o@x.example")),
        ),
        ("test".to_string(), internal),
        ("test".to_string(), admin),
        (
            "test".to_string(),
            account("p.deny", "OU=Partners", Some("d@x.example")),
        ),
        (
            "unknown".to_string(),
            account("p.other", "OU=Partners", Some("x@x.example")),
        ),
    ];
    let mapped = map_accounts(&set, found);
    let by_name = |n: &str| {
        mapped
            .iter()
            .find(|m| m.account.account_name.as_deref() == Some(n))
    };
    assert_eq!(mapped.len(), 4, "{mapped:#?}");
    assert!(by_name("outside").is_none() && by_name("p.internal").is_none());
    let adams = by_name("p.adams").unwrap();
    assert_eq!(adams.address, Ok("ana@fabrikam.example".to_string()));
    assert_eq!(adams.join_keys.len(), 2);
    assert!(
        adams
            .join_keys
            .iter()
            .any(|k| k.property == CloudProperty::UserPrincipalName
                && k.value == "p.adams@lab.example.com")
    );
    assert_eq!(
        by_name("p.nomail").unwrap().address,
        Err(AddressProblem::Missing)
    );
    assert_eq!(
        by_name("p.admin").unwrap().protection,
        vec![
            Protection::AdminCount,
            Protection::ProtectedGroup {
                group: "CN=Admins,DC=lab,DC=example,DC=com".into()
            }
        ]
    );
    assert_eq!(
        by_name("p.deny").unwrap().protection,
        vec![Protection::DenyList {
            entry: "p.deny".into()
        }]
    );
}

#[test]
fn an_account_in_two_scopes_is_marked_for_that_account_only() {
    let a = Mapping::parse(Path::new("mappings/a.toml"), MINIMAL).unwrap();
    let b = Mapping::parse(Path::new("mappings/b.toml"), MINIMAL).unwrap();
    let set = MappingSet::from_mappings(vec![b, a]).unwrap();
    let mapped = eval::map_by_base(
        &set,
        vec![account("p.adams", "OU=Partners", Some("a@x.example"))],
    );
    assert_eq!(mapped.len(), 1);
    assert_eq!(mapped[0].mapping, "a");
    assert_eq!(mapped[0].also_in, vec!["b".to_string()]);
}

#[test]
fn invitation_settings_resolve_per_domain_then_mapping_then_defaults() {
    let text = format!(
        "{MINIMAL}\n[invitation]\nlanguage = \"en-US\"\n\n[[invitation.per_domain]]\ndomains = [\"lafayette.example\"]\nlanguage = \"fr-FR\"\n"
    );
    let m = parse(&text).unwrap();
    let defaults = InvitationSettings {
        redirect_url: Some("https://myapps.microsoft.com/".into()),
        send_message: Some(false),
        ..InvitationSettings::default()
    };
    let fr = m.invitation_for("e@sub.lafayette.example", &defaults);
    assert_eq!(fr.language.as_deref(), Some("fr-FR"));
    assert_eq!(fr.send_message, Some(false));
    let en = m.invitation_for("a@fabrikam.example", &defaults);
    assert_eq!(en.language.as_deref(), Some("en-US"));
    assert_eq!(
        en.redirect_url.as_deref(),
        Some("https://myapps.microsoft.com/")
    );
}

#[test]
fn a_missing_directory_or_file_is_an_error_without_position() {
    let Err(Errors(e)) = MappingSet::load_dir(Path::new("/nonexistent/mappings")) else {
        panic!("expected an error")
    };
    assert!(
        e[0].to_string()
            .starts_with("/nonexistent/mappings: cannot read: "),
        "{}",
        e[0]
    );
    let dir = tempfile::tempdir().unwrap();
    let Err(Errors(e)) = MappingSet::load_dir(dir.path()) else {
        panic!("expected an error")
    };
    assert!(matches!(e[0].kind, ErrorKind::NoMappings(_)));
    assert!(e[0].help.contains("example"));
}

#[test]
fn questionable_settings_load_with_positioned_warnings() {
    let text = format!(
        "{MINIMAL}\n[write]\ncloud_only = [\"otherMails\"]\n\n[invitation]\nredirect_url = \"https://myapps.microsoft.com/\"\nlanguage = \"fr-FR\"\nmessage_body = \"Bonjour\"\nsend_message = false\n"
    );
    let m = parse(&text).unwrap();
    let shown: Vec<String> = m.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(m.warnings.len(), 4, "{shown:#?}");
    assert!(
        shown
            .iter()
            .any(|w| w.contains(":18:12: warning: `invitation.language` is ignored")),
        "{shown:#?}"
    );
    assert!(shown.iter().any(|w| w.contains("no tenant id")));
    assert!(parse(MINIMAL).unwrap().warnings.is_empty());
}

#[test]
fn deeply_nested_expressions_are_refused_not_crashed() {
    let deep = format!(
        "{}otherMailbox{}",
        "lower(".repeat(10_000),
        ")".repeat(10_000)
    );
    let e = first_error(&MINIMAL.replace("lower(otherMailbox)", &deep));
    assert!(matches!(e.kind, ErrorKind::Syntax { .. }), "{e}");
}

#[test]
fn join_values_borrow_only_when_already_normalized() {
    use std::borrow::Cow;
    let upn = CloudProperty::UserPrincipalName;
    assert!(matches!(
        eval::normalized_key(upn, " ana@x.example "),
        Cow::Borrowed("ana@x.example")
    ));
    assert_eq!(eval::normalized_key(upn, "Ana@X.example"), "ana@x.example");
    assert_eq!(eval::normalized_key(upn, "ΣΑΣ"), "σας");
    let anchor = CloudProperty::OnPremisesImmutableId;
    let canonical = Anchor::from_bytes(&[7; 16]);
    assert!(matches!(
        eval::normalized_key(anchor, canonical.as_str()),
        Cow::Borrowed(_)
    ));
    // Not base64: compared as written.
    assert_eq!(
        eval::normalized_key(anchor, " Not-An-Anchor "),
        "Not-An-Anchor"
    );
}

#[test]
fn anchors_are_named_for_every_flavour_and_read_as_text_on_generic_servers() {
    let with_anchor = |name: &str| {
        MINIMAL.replace(
            "[join.cloud_only]\n",
            &format!("[join]\nanchor = \"{name}\"\n\n[join.cloud_only]\n"),
        )
    };
    for (name, expected) in [
        ("objectGUID", AnchorAttribute::ObjectGuid),
        ("ms-DS-ConsistencyGuid", AnchorAttribute::ConsistencyGuid),
        ("entryUUID", AnchorAttribute::EntryUuid),
        ("nsuniqueid", AnchorAttribute::NsUniqueId),
        ("ipaUniqueID", AnchorAttribute::IpaUniqueId),
    ] {
        let m = parse(&with_anchor(name)).unwrap();
        assert_eq!(m.join.anchor, expected, "{name}");
        assert_eq!(
            m.join.anchor_at.as_deref(),
            Some("mappings/test.toml:10:10"),
            "{name}"
        );
    }
    let e = first_error(&with_anchor("uid"));
    assert!(matches!(e.kind, ErrorKind::BadValue { .. }), "{e}");
    assert_eq!((e.line, e.column), (10, 10));
    assert!(
        e.help.contains("`nsUniqueId` (389 Directory Server)") && e.help.contains("`entryUUID`"),
        "{e}"
    );

    // The named attribute is read, and its value (389-ds's form) is the join key.
    let m = parse(&with_anchor("nsUniqueId")).unwrap();
    let set = MappingSet::from_mappings(vec![m]).unwrap();
    assert!(set.attributes().iter().any(|a| a == "nsUniqueId"));
    let mut partner = account("p.adams", "OU=Partners", Some("ana@fabrikam.example"));
    partner.attributes.insert(
        "nsUniqueId".into(),
        vec!["b117a9a2-edd911f1-974e8ce8-03de30af".into()],
    );
    let mapped = map_accounts(&set, vec![("test".to_string(), partner)]);
    let key = mapped[0]
        .join_keys
        .iter()
        .find(|k| k.property == CloudProperty::OnPremisesImmutableId)
        .expect("an anchor join key");
    assert_eq!(
        Some(key.value.clone()),
        crate::source::capabilities::AnchorName::NsUniqueId
            .from_text("b117a9a2-edd911f1-974e8ce8-03de30af")
            .map(|a| a.as_str().to_string())
    );
    // Without the attribute there is no anchor key (never another attribute's value).
    let bare = account("p.bare", "OU=Partners", Some("b@fabrikam.example"));
    let mapped = map_accounts(&set, vec![("test".to_string(), bare)]);
    assert!(
        mapped[0]
            .join_keys
            .iter()
            .all(|k| k.property != CloudProperty::OnPremisesImmutableId)
    );
}

#[test]
fn scope_disabled_overrides_the_flavour_s_mark() {
    let text = MINIMAL.replace("[scope]\n", "[scope]\ndisabled = \"company == 'Gone'\"\n");
    let set = MappingSet::from_mappings(vec![parse(&text).unwrap()]).unwrap();
    let mut gone = account("p.gone", "OU=Partners", Some("g@x.example"));
    gone.attributes
        .insert("company".into(), vec!["Gone".into()]);
    // Locked by the directory, but the expression says otherwise.
    let mut locked = account("p.locked", "OU=Partners", Some("l@x.example"));
    locked.locked = true;
    let mapped = map_accounts(
        &set,
        vec![("test".to_string(), gone), ("test".to_string(), locked)],
    );
    let disabled = |n: &str| {
        mapped
            .iter()
            .find(|m| m.account.account_name.as_deref() == Some(n))
            .map(|m| m.account.disabled)
    };
    assert_eq!(disabled("p.gone"), Some(true));
    assert_eq!(disabled("p.locked"), Some(false));

    // Without the key the flavour's mark decides.
    let set = MappingSet::from_mappings(vec![parse(MINIMAL).unwrap()]).unwrap();
    let mut locked = account("p.locked", "OU=Partners", Some("l@x.example"));
    locked.locked = true;
    let mapped = map_accounts(&set, vec![("test".to_string(), locked)]);
    assert!(mapped[0].account.disabled);

    // A misspelt attribute is a load error, like every expression.
    let e = first_error(&MINIMAL.replace("[scope]\n", "[scope]\ndisabled = \"compny == 'x'\"\n"));
    assert_eq!(e.line, 7, "{e}");
}
