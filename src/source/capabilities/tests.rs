use super::*;

/// The facts in a fixture captured from a lab server with `ldapsearch -LLL` (rootDSE, then
/// the subschema's `attributeTypes` of interest).
fn facts(ldif: &str) -> ServerFacts {
    let mut root: Vec<(String, Vec<String>)> = Vec::new();
    let mut types = Vec::new();
    for line in ldif.lines() {
        let Some((name, value)) = line.split_once(": ") else {
            continue;
        };
        if name == "attributeTypes" {
            types.push(value.to_string());
        } else if let Some((_, values)) = root.iter_mut().find(|(n, _)| n == name) {
            values.push(value.to_string());
        } else {
            root.push((name.to_string(), vec![value.to_string()]));
        }
    }
    ServerFacts::from_entries(
        root.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        types.iter().map(String::as_str),
    )
}

const SAMBA: &str = include_str!("../../../tests/fixtures/capabilities/samba.ldif");
const OPENLDAP: &str = include_str!("../../../tests/fixtures/capabilities/openldap.ldif");
const DS389: &str = include_str!("../../../tests/fixtures/capabilities/389ds.ldif");
const OVERLAP: Duration = Duration::from_secs(60);

#[test]
fn samba_is_active_directory_with_usn_and_guids() {
    let f = facts(SAMBA);
    let c = detect(&f, OVERLAP);
    assert!(c.active_directory);
    assert_eq!(
        c.vendor,
        "Samba Team (https://www.samba.org) 4.17.12-Debian"
    );
    assert_eq!(c.change_mark, ChangeMark::Usn);
    assert_eq!(c.anchor, Some(AnchorName::ConsistencyGuid));
    assert_eq!(c.lock_attributes, vec!["userAccountControl"]);
    assert!(c.offers_anchor(&f, AnchorName::ObjectGuid));
    assert!(!c.offers_anchor(&f, AnchorName::NsUniqueId));
}

#[test]
fn openldap_reads_by_entry_csn_and_anchors_on_entry_uuid() {
    let f = facts(OPENLDAP);
    let c = detect(&f, OVERLAP);
    assert!(!c.active_directory);
    assert_eq!(c.vendor, "unknown vendor");
    assert_eq!(c.change_mark, ChangeMark::EntryCsn);
    assert_eq!(c.anchor, Some(AnchorName::EntryUuid));
    // The lab's schema adds AD's userAccountControl; ppolicy brings pwdAccountLockedTime.
    assert_eq!(
        c.lock_attributes,
        vec!["userAccountControl", "pwdAccountLockedTime"]
    );
    assert!(!c.member_of_in_schema);
    assert!(c.password_modify);
    assert!(c.offers_anchor(&f, AnchorName::EntryUuid));
    assert!(!c.offers_anchor(&f, AnchorName::NsUniqueId));
    assert!(!c.offers_anchor(&f, AnchorName::ObjectGuid));
}

#[test]
fn the_389_directory_has_no_entry_csn_so_reads_by_modify_timestamp() {
    let f = facts(DS389);
    let c = detect(&f, OVERLAP);
    assert_eq!(c.vendor, "389 Project 389-Directory/2.3.1 B2025.016.1616");
    assert!(!f.has("entryCSN"));
    assert_eq!(
        c.change_mark,
        ChangeMark::ModifyTimestamp { overlap: OVERLAP }
    );
    assert_eq!(
        c.change_mark.to_string(),
        "by modifyTimestamp with 60 s overlap"
    );
    assert_eq!(c.anchor, Some(AnchorName::NsUniqueId));
    assert_eq!(c.lock_attributes, vec!["nsAccountLock"]);
    assert!(c.member_of_in_schema);
    assert_eq!(c.changelog, None);
    let table = c.table(Some(false));
    assert!(table.contains(&("anchor", "nsUniqueId".to_string())));
    assert!(table.contains(&(
        "protected groups",
        "resolved by reading the groups' members, since memberOf is not maintained".to_string()
    )));
}

#[test]
fn a_schema_without_marks_reads_in_full_and_says_why() {
    let mut f = facts(DS389);
    f.schema_attributes.remove("modifytimestamp");
    let c = detect(&f, OVERLAP);
    assert!(
        matches!(&c.change_mark, ChangeMark::None { reason } if reason.contains("neither entryCSN nor modifyTimestamp")),
        "{:?}",
        c.change_mark
    );
    assert_eq!(c.change_mark.attribute(), None);
    f.schema_attributes.clear();
    let c = detect(&f, OVERLAP);
    assert!(
        c.change_mark
            .to_string()
            .contains("subschema could not be read")
    );
    assert_eq!(c.anchor, None);
}

#[test]
fn a_retro_changelog_is_reported() {
    let mut f = facts(DS389);
    f.changelog = Some("cn=changelog".into());
    let c = detect(&f, OVERLAP);
    assert!(
        c.table(None)
            .iter()
            .any(|(k, v)| *k == "changelog" && v.contains("cn=changelog"))
    );
}

#[test]
fn attribute_type_names_are_parsed_in_both_forms() {
    let mut f = ServerFacts::default();
    f.add_attribute_type("( 2.5.4.3 NAME ( 'cn' 'commonName' ) SUP name )");
    f.add_attribute_type("( 1.3.6.1.1.16.4 NAME 'entryUUID' DESC 'x' )");
    f.add_attribute_type("garbage");
    f.add_attribute_type("( 1.2 NAME");
    assert!(f.has("CN") && f.has("commonName") && f.has("entryuuid"));
    assert_eq!(f.schema_attributes.len(), 3);
}

#[test]
fn text_anchors_round_trip_per_attribute() {
    let ns = AnchorName::NsUniqueId
        .from_text("b117a9a2-edd911f1-974e8ce8-03de30af")
        .unwrap();
    assert_eq!(
        AnchorName::NsUniqueId.to_text(&ns).as_deref(),
        Some("b117a9a2-edd911f1-974e8ce8-03de30af")
    );
    let uuid = AnchorName::EntryUuid
        .from_text("02d50135-5d08-41c2-8387-6c47866bb90e")
        .unwrap();
    assert_eq!(
        AnchorName::EntryUuid.to_text(&uuid).as_deref(),
        Some("02d50135-5d08-41c2-8387-6c47866bb90e")
    );
    for bad in ["", "xyz", "02d50135-5d08-41c2-8387-6c47866bb90", "zz"] {
        assert_eq!(AnchorName::EntryUuid.from_text(bad), None, "{bad}");
    }
    assert_eq!(
        AnchorName::parse("NSUNIQUEID"),
        Some(AnchorName::NsUniqueId)
    );
    assert_eq!(
        AnchorName::parse("ms-ds-consistencyguid"),
        Some(AnchorName::ConsistencyGuid)
    );
    assert_eq!(AnchorName::parse("uid"), None);
}

#[test]
fn exchange_attributes_are_read_only_when_the_schema_has_them() {
    let mut f = facts(SAMBA);
    assert!(detect(&f, OVERLAP).exchange_attributes.is_empty());
    let row = |c: &Capabilities| {
        c.table(Some(true))
            .into_iter()
            .find(|(k, _)| *k == "exchange")
            .map(|(_, v)| v)
    };
    assert!(
        row(&detect(&f, OVERLAP)).is_some_and(|v| v.contains("not looked for")),
        "{:?}",
        row(&detect(&f, OVERLAP))
    );
    // What the schema naming context answered on the lab DC with its Exchange extension.
    for name in ["msexchrecipienttypedetails", "targetaddress"] {
        f.schema_attributes.insert(name.into());
    }
    let c = detect(&f, OVERLAP);
    assert_eq!(
        c.exchange_attributes,
        vec!["msExchRecipientTypeDetails", "targetAddress"]
    );
    assert!(row(&c).is_some_and(|v| v.contains("msExchRecipientTypeDetails, targetAddress")));
    // A generic server never reads them, whatever its schema says.
    let mut g = facts(OPENLDAP);
    g.schema_attributes
        .insert("msexchrecipienttypedetails".into());
    assert!(detect(&g, OVERLAP).exchange_attributes.is_empty());
    assert_eq!(row(&detect(&g, OVERLAP)), None);
}

#[test]
fn the_schema_naming_context_is_kept_from_the_root_dse() {
    let f = facts(SAMBA);
    assert!(
        f.schema_naming_context
            .as_deref()
            .is_none_or(|s| s.starts_with("CN=Schema,")),
        "{:?}",
        f.schema_naming_context
    );
    let root = [(
        "schemaNamingContext",
        &["CN=Schema,CN=Configuration,DC=x".to_string()][..],
    )];
    let f = ServerFacts::from_entries(root, std::iter::empty());
    assert_eq!(
        f.schema_naming_context.as_deref(),
        Some("CN=Schema,CN=Configuration,DC=x")
    );
}
