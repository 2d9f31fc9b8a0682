//! Table tests for every lifecycle row and every precondition, for both kinds of account,
//! plus determinism, secret-freedom, "apply then plan again plans nothing new", and a
//! property test that random attribute values never make map + join + plan panic.

use std::path::Path;

use proptest::prelude::*;
use proptest::strategy::ValueTree;

use super::*;
use crate::join::join;
use crate::mapping::{Mapping, MappingSet, map_accounts};
use crate::model::{Anchor, Attributes, CloudUser, SourceAccount};

const MAPPING: &str = r#"address = "lower(trim(otherMailbox))"

[source]
attributes = ["otherMailbox", "sAMAccountName", "userPrincipalName", "info"]

[scope]
base_dns = ["OU=Partners,DC=lab,DC=example,DC=com"]
deny = ["p.denied"]
protected_groups = ["CN=Protected,OU=Groups,DC=lab,DC=example,DC=com"]

[join]
anchor = "objectGUID"

[join.cloud_only]
source = "userPrincipalName"
cloud = "userPrincipalName"

[write]
cloud_only = ["otherMails", "mail"]

[invitation]
redirect_url = "https://myapps.microsoft.com/?tenantid=t"
"#;

fn set_with(text: &str) -> MappingSet {
    let m = Mapping::parse(Path::new("mappings/partners.toml"), text).unwrap();
    MappingSet::from_mappings(vec![m]).unwrap()
}

fn set() -> MappingSet {
    set_with(MAPPING)
}

fn now() -> Timestamp {
    "2026-11-23T12:00:00Z".parse().unwrap()
}

fn days_ago(d: i64) -> Timestamp {
    Timestamp::from_second(now().as_second() - d * 86_400).unwrap()
}

fn guid(n: u8) -> Anchor {
    Anchor::from_bytes(&[n; 16])
}

/// A partner account with its external address in `otherMailbox`.
fn account(n: u8, sam: &str, external: Option<&str>) -> SourceAccount {
    let mut attributes = Attributes::new();
    attributes.insert("sAMAccountName".to_string(), vec![sam.to_string()]);
    attributes.insert(
        "info".to_string(),
        vec!["SENTINEL-not-for-plans".to_string()],
    );
    if let Some(e) = external {
        attributes.insert("otherMailbox".to_string(), vec![e.to_string()]);
    }
    SourceAccount {
        dn: format!("CN={sam},OU=Partners,DC=lab,DC=example,DC=com"),
        object_guid: Some(guid(n)),
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

/// The cloud user of `account`, synced or cloud-only.
fn user_of(a: &SourceAccount, n: u8, kind: AccountKind) -> CloudUser {
    CloudUser {
        id: format!("00000000-0000-0000-0000-0000000000{n:02}"),
        user_principal_name: a.user_principal_name.clone().unwrap_or_default(),
        display_name: a.display_name.clone(),
        user_type: Some("Member".into()),
        account_enabled: Some(true),
        on_premises_sync_enabled: (kind == AccountKind::Synced).then_some(true),
        on_premises_immutable_id: (kind == AccountKind::Synced)
            .then(|| a.object_guid.as_ref().unwrap().as_str().to_string()),
        ..CloudUser::default()
    }
}

struct World {
    accounts: Vec<SourceAccount>,
    users: Vec<CloudUser>,
    progress: BTreeMap<String, Progress>,
    tenant: Tenant,
    policy: Policy,
    defaults: InvitationSettings,
}

impl World {
    fn new() -> Self {
        World {
            accounts: vec![],
            users: vec![],
            progress: BTreeMap::new(),
            tenant: Tenant {
                verified_domains: vec!["lab.example.com".into()],
                other_addresses: vec![],
            },
            policy: Policy::default(),
            defaults: InvitationSettings::default(),
        }
    }

    fn plan_with(&self, set: &MappingSet) -> Plan {
        let found = self
            .accounts
            .iter()
            .map(|a| ("partners".to_string(), a.clone()))
            .collect();
        let joined = join(map_accounts(set, found), self.users.clone());
        plan(
            joined,
            set,
            &self.progress,
            &self.tenant,
            &self.policy,
            &self.defaults,
            now(),
        )
    }

    fn plan(&self) -> Plan {
        self.plan_with(&set())
    }

    /// Plays `plan` as apply would (every action succeeds) and records progress.
    fn apply(&mut self, plan: &Plan) {
        for o in &plan.accounts {
            let ops: Vec<&Op> = plan
                .actions
                .iter()
                .filter(|a| a.account == o.key)
                .map(|a| &a.op)
                .collect();
            for op in &ops {
                match op {
                    Op::SetDirectoryMail { dn, to, .. } => {
                        let a = self.accounts.iter_mut().find(|a| a.dn == *dn).unwrap();
                        a.mail = Some(to.clone());
                    }
                    Op::SetCloudAddress {
                        user_id,
                        other_mails_to,
                        mail_to,
                        ..
                    } => {
                        let u = self.users.iter_mut().find(|u| u.id == *user_id).unwrap();
                        if let Some(o) = other_mails_to {
                            u.other_mails = o.clone();
                        }
                        if let Some(m) = mail_to {
                            u.mail = Some(m.clone());
                        }
                    }
                    Op::Invite(inv) | Op::Reinvite(inv) => {
                        let u = self.users.iter_mut().find(|u| u.id == inv.user_id).unwrap();
                        u.external_user_state = Some("PendingAcceptance".into());
                    }
                    Op::RandomizePassword { .. } | Op::RevokeSessions { .. } => {}
                    Op::SetUserType { user_id, to, .. } => {
                        let u = self.users.iter_mut().find(|u| u.id == *user_id).unwrap();
                        u.user_type = Some(to.as_str().into());
                    }
                }
            }
            let p = progress_after(self.progress.get(&o.key), o, &ops, Some("inv-1"), now());
            self.progress.insert(o.key.clone(), p);
        }
    }

    /// One Entra Connect cycle: AD `mail` flows to the synced cloud users.
    fn sync(&mut self) {
        for u in self
            .users
            .iter_mut()
            .filter(|u| u.kind() == AccountKind::Synced)
        {
            if let Some(a) = self.accounts.iter().find(|a| {
                a.object_guid.as_ref().map(Anchor::as_str) == u.on_premises_immutable_id.as_deref()
            }) {
                u.mail = a.mail.clone();
            }
        }
    }

    fn accept_all(&mut self) {
        for u in &mut self.users {
            if u.external_user_state.is_some() {
                u.external_user_state = Some("Accepted".into());
            }
        }
    }
}

/// One account of `kind`, its user, and a tweak applied to both.
fn one(
    kind: AccountKind,
    tweak: impl FnOnce(&mut SourceAccount, &mut CloudUser, &mut World),
) -> (Plan, World) {
    let mut w = World::new();
    let mut a = account(1, "p.adams", Some("Ana.Adams@Fabrikam.example"));
    let mut u = user_of(&a, 1, kind);
    tweak(&mut a, &mut u, &mut w);
    w.accounts.push(a);
    w.users.push(u);
    (w.plan(), w)
}

fn ops(p: &Plan) -> Vec<&'static str> {
    p.actions.iter().map(|a| a.op.name()).collect()
}

fn codes(p: &Plan) -> Vec<&'static str> {
    p.accounts[0]
        .reasons
        .iter()
        .map(|r| r.reason.code())
        .collect()
}

const BOTH: [AccountKind; 2] = [AccountKind::Synced, AccountKind::CloudOnly];

/// An earlier run randomized the password of the accepted account `a` a day ago, and revoked
/// its sign-in sessions if `revoked`.
fn randomized_earlier(a: &SourceAccount, w: &mut World, revoked: bool) {
    w.progress.insert(
        a.object_guid.as_ref().unwrap().as_str().into(),
        Progress {
            state: Lifecycle::Accepted,
            password_randomized_at: Some(days_ago(1)),
            sessions_revoked_at: revoked.then(|| days_ago(1)),
            ..Progress::default()
        },
    );
}

#[test]
fn lifecycle_table_synced() {
    use Lifecycle::*;
    type Tweak = fn(&mut SourceAccount, &mut CloudUser, &mut World);
    let cases: Vec<(&str, Tweak, Lifecycle, Lifecycle, Vec<&str>)> = vec![
        (
            "needs_address",
            |_, _, _| {},
            NeedsAddress,
            AwaitingSync,
            vec!["set_directory_mail"],
        ),
        (
            "awaiting_sync",
            |a, _, _| a.mail = Some("ana.adams@fabrikam.example".into()),
            AwaitingSync,
            AwaitingSync,
            vec![],
        ),
        (
            "ready",
            |a, u, _| {
                a.mail = Some("ana.adams@fabrikam.example".into());
                u.mail = Some("Ana.Adams@fabrikam.example".into());
            },
            Ready,
            Invited,
            vec!["invite"],
        ),
        (
            "cloud shows the address, AD does not (sync would undo it)",
            |_, u, _| u.mail = Some("ana.adams@fabrikam.example".into()),
            NeedsAddress,
            AwaitingSync,
            vec!["set_directory_mail"],
        ),
        (
            "invited (cloud shows it)",
            |_, u, _| u.external_user_state = Some("PendingAcceptance".into()),
            Invited,
            Invited,
            vec![],
        ),
        (
            "accepted",
            |_, u, _| u.external_user_state = Some("Accepted".into()),
            Accepted,
            Done,
            vec!["randomize_password", "revoke_sessions"],
        ),
        (
            "done, sessions not revoked yet (a crash between the two)",
            |a, u, w| {
                u.external_user_state = Some("Accepted".into());
                randomized_earlier(a, w, false);
            },
            Done,
            Done,
            vec!["revoke_sessions"],
        ),
        (
            "done",
            |a, u, w| {
                u.external_user_state = Some("Accepted".into());
                randomized_earlier(a, w, true);
            },
            Done,
            Done,
            vec![],
        ),
        (
            "already a guest (invited by invitation)",
            |_, u, _| {
                u.creation_type = Some("Invitation".into());
                u.user_type = Some("Guest".into());
            },
            Accepted,
            Done,
            vec!["randomize_password", "revoke_sessions"],
        ),
    ];
    for (name, tweak, state, next, expected) in cases {
        let (p, _) = one(AccountKind::Synced, tweak);
        let o = &p.accounts[0];
        assert_eq!((o.state, o.next), (state, next), "{name}: {o:#?}");
        assert_eq!(ops(&p), expected, "{name}");
        assert!(o.reasons.is_empty(), "{name}: {:?}", o.reasons);
    }
}

#[test]
fn synced_address_write_carries_before_and_after() {
    let (p, _) = one(AccountKind::Synced, |a, _, _| {
        a.mail = Some("p.adams@lab.example.com".into())
    });
    assert_eq!(
        p.actions[0].op,
        Op::SetDirectoryMail {
            dn: "CN=p.adams,OU=Partners,DC=lab,DC=example,DC=com".into(),
            from: Some("p.adams@lab.example.com".into()),
            to: "ana.adams@fabrikam.example".into(),
        }
    );
}

#[test]
fn cloud_only_writes_the_address_then_invites_in_one_run() {
    let (p, _) = one(AccountKind::CloudOnly, |_, u, _| {
        u.other_mails = vec!["old@x.example".into()]
    });
    let o = &p.accounts[0];
    assert_eq!(
        (o.state, o.next),
        (Lifecycle::NeedsAddress, Lifecycle::Invited)
    );
    assert_eq!(ops(&p), vec!["set_cloud_address", "invite"]);
    assert_eq!(
        p.actions[0].op,
        Op::SetCloudAddress {
            user_id: o.cloud_id.clone().unwrap(),
            other_mails_from: vec!["old@x.example".into()],
            other_mails_to: Some(vec![
                "old@x.example".into(),
                "ana.adams@fabrikam.example".into()
            ]),
            mail_from: None,
            mail_to: Some("ana.adams@fabrikam.example".into()),
        }
    );
    let Op::Invite(inv) = &p.actions[1].op else {
        panic!("not an invite")
    };
    assert_eq!(inv.email, "ana.adams@fabrikam.example");
    assert_eq!(inv.redirect_url, "https://myapps.microsoft.com/?tenantid=t");
    assert!(inv.send_message);
    assert_eq!(inv.attempt, 1);
    assert_eq!(p.actions[1].seq, 1);

    let (p, _) = one(AccountKind::CloudOnly, |_, u, _| {
        u.other_mails = vec!["ana.adams@fabrikam.example".into()];
        u.mail = Some("ana.adams@fabrikam.example".into());
    });
    assert_eq!(p.accounts[0].state, Lifecycle::Ready);
    assert_eq!(ops(&p), vec!["invite"]);
    assert!(p.accounts[0].warnings.is_empty());

    // Writing otherMails only: invited, with a warning that User.Mail differs.
    let only_other = set_with(&MAPPING.replace(
        "cloud_only = [\"otherMails\", \"mail\"]",
        "cloud_only = [\"otherMails\"]",
    ));
    let (_, w) = one(AccountKind::CloudOnly, |_, _, _| {});
    let p = w.plan_with(&only_other);
    assert_eq!(ops(&p), vec!["set_cloud_address", "invite"]);
    assert_eq!(
        p.accounts[0].warnings[0].reason,
        Warning::MailDiffers { mail: None }
    );
}

#[test]
fn lifecycle_after_invitation_for_both_kinds() {
    for kind in BOTH {
        // Invitation recorded but the cloud does not show it yet: no second invitation.
        let (p, _) = one(kind, |a, u, w| {
            u.mail = Some("ana.adams@fabrikam.example".into());
            u.other_mails = vec!["ana.adams@fabrikam.example".into()];
            w.progress.insert(
                a.object_guid.as_ref().unwrap().as_str().into(),
                Progress {
                    state: Lifecycle::Invited,
                    invitation_id: Some("inv".into()),
                    invited_at: Some(days_ago(0)),
                    invitations_sent: 1,
                    ..Progress::default()
                },
            );
        });
        assert_eq!(p.accounts[0].state, Lifecycle::Invited, "{kind}");
        assert!(p.actions.is_empty(), "{kind}: {:?}", p.actions);

        // Pending for 20 days: re-invite (resetRedemption), attempt 2.
        let (p, _) = one(kind, |a, u, w| {
            u.mail = Some("ana.adams@fabrikam.example".into());
            u.external_user_state = Some("PendingAcceptance".into());
            w.progress.insert(
                a.object_guid.as_ref().unwrap().as_str().into(),
                Progress {
                    state: Lifecycle::Invited,
                    invited_at: Some(days_ago(20)),
                    invitations_sent: 1,
                    ..Progress::default()
                },
            );
        });
        assert_eq!(ops(&p), vec!["reinvite"], "{kind}");
        let Op::Reinvite(inv) = &p.actions[0].op else {
            panic!()
        };
        assert_eq!(inv.attempt, 2);

        // Re-invited the maximum number of times and pending for long: a warning only.
        let (p, _) = one(kind, |a, u, w| {
            u.mail = Some("ana.adams@fabrikam.example".into());
            u.external_user_state = Some("PendingAcceptance".into());
            w.progress.insert(
                a.object_guid.as_ref().unwrap().as_str().into(),
                Progress {
                    state: Lifecycle::Invited,
                    invited_at: Some(days_ago(40)),
                    invitations_sent: 3,
                    ..Progress::default()
                },
            );
        });
        assert!(p.actions.is_empty(), "{kind}");
        assert!(p.accounts[0].warnings.iter().any(|w| w.reason
            == Warning::InvitationPending {
                days: 40,
                reinvitations_left: 0
            }));

        // Accepted: randomize, then done; Guest user type when asked.
        let (p, _) = one(kind, |_, u, w| {
            u.external_user_state = Some("Accepted".into());
            u.mail = Some("ana.adams@fabrikam.example".into());
            w.defaults.user_type = Some(UserType::Guest);
        });
        assert_eq!(
            ops(&p),
            vec!["randomize_password", "revoke_sessions", "set_user_type"],
            "{kind}"
        );
        assert_eq!(p.accounts[0].next, Lifecycle::Done);
    }
}

#[test]
fn password_policy_decides_when_to_randomize() {
    for kind in BOTH {
        let (p, _) = one(kind, |_, u, w| {
            u.external_user_state = Some("Accepted".into());
            w.policy.randomize_password = RandomizeWhen::Never;
        });
        assert_eq!(p.accounts[0].state, Lifecycle::Done, "{kind}");
        assert!(p.actions.is_empty());

        let (p, _) = one(kind, |a, u, w| {
            a.mail = Some("ana.adams@fabrikam.example".into());
            u.mail = Some("ana.adams@fabrikam.example".into());
            u.other_mails = vec!["ana.adams@fabrikam.example".into()];
            w.policy.randomize_password = RandomizeWhen::AfterInvitation;
        });
        assert_eq!(ops(&p), vec!["invite", "randomize_password"], "{kind}");

        let (p, _) = one(kind, |_, u, w| {
            u.external_user_state = Some("PendingAcceptance".into());
            w.policy.randomize_password = RandomizeWhen::AfterInvitation;
        });
        assert_eq!(ops(&p), vec!["randomize_password"], "{kind}");
        assert_eq!(p.accounts[0].next, Lifecycle::Invited);
    }
}

/// Issue 19: `revoke_sessions` comes right after `randomize_password` of a converted
/// account, once; never for a blocked or unconverted one; again in a later run when the
/// randomization was recorded without it; never with `[policy] revoke_sessions = false`.
#[test]
fn sessions_are_revoked_once_after_the_randomization_of_converted_accounts_only() {
    for kind in BOTH {
        // The next action after the randomization, for the same user.
        let (p, _) = one(kind, |_, u, _| {
            u.external_user_state = Some("Accepted".into());
        });
        assert_eq!(ops(&p), vec!["randomize_password", "revoke_sessions"]);
        assert_eq!(p.actions[1].seq, p.actions[0].seq + 1);
        assert_eq!(
            p.actions[1].op,
            Op::RevokeSessions {
                user_id: p.accounts[0].cloud_id.clone().unwrap()
            }
        );

        // Turned off.
        let (p, _) = one(kind, |_, u, w| {
            u.external_user_state = Some("Accepted".into());
            w.policy.revoke_sessions = false;
        });
        assert_eq!(ops(&p), vec!["randomize_password"], "{kind}");

        // Unconverted: the password may be randomized at invitation, the sessions wait.
        let (p, _) = one(kind, |_, u, w| {
            u.external_user_state = Some("PendingAcceptance".into());
            w.policy.randomize_password = RandomizeWhen::AfterInvitation;
        });
        assert_eq!(ops(&p), vec!["randomize_password"], "{kind}");
        // ... and once it is accepted, a later run revokes them.
        let (p, _) = one(kind, |a, u, w| {
            u.external_user_state = Some("Accepted".into());
            w.policy.randomize_password = RandomizeWhen::AfterInvitation;
            randomized_earlier(a, w, false);
        });
        assert_eq!(ops(&p), vec!["revoke_sessions"], "{kind}");

        // Randomized, not revoked (a crash between the two), now blocked: nothing.
        let (p, _) = one(kind, |a, u, w| {
            u.external_user_state = Some("Accepted".into());
            a.admin_count = true;
            randomized_earlier(a, w, false);
        });
        assert!(p.actions.is_empty(), "{kind}: {:?}", ops(&p));

        // Never when b2bsync does not randomize.
        let (p, _) = one(kind, |_, u, w| {
            u.external_user_state = Some("Accepted".into());
            w.policy.randomize_password = RandomizeWhen::Never;
        });
        assert!(p.actions.is_empty(), "{kind}");
    }

    // Over a whole lifecycle: exactly one revocation per converted account.
    let mut w = population();
    let mut revoked: BTreeMap<String, usize> = BTreeMap::new();
    for step in 0..6 {
        let p = w.plan();
        for a in &p.actions {
            if let Op::RevokeSessions { user_id } = &a.op {
                *revoked.entry(user_id.clone()).or_default() += 1;
            }
        }
        w.apply(&p);
        match step {
            0 => w.sync(),
            1 => w.accept_all(),
            _ => {}
        }
    }
    let p = w.plan();
    let done: Vec<&str> = p
        .accounts
        .iter()
        .filter(|o| o.state == Lifecycle::Done)
        .filter_map(|o| o.cloud_id.as_deref())
        .collect();
    assert!(!done.is_empty());
    assert!(revoked.values().all(|n| *n == 1), "{revoked:?}");
    let revoked_ids: Vec<&str> = revoked.keys().map(String::as_str).collect();
    let mut done_sorted = done.clone();
    done_sorted.sort();
    assert_eq!(revoked_ids, done_sorted);
}

#[test]
fn reinvitations_never_go_to_an_address_the_cloud_does_not_show() {
    let (p, _) = one(AccountKind::CloudOnly, |a, u, w| {
        u.mail = Some("p.adams@lab.example.com".into());
        u.external_user_state = Some("PendingAcceptance".into());
        w.progress.insert(
            a.object_guid.as_ref().unwrap().as_str().into(),
            Progress {
                state: Lifecycle::Invited,
                invited_at: Some(days_ago(20)),
                invitations_sent: 1,
                ..Progress::default()
            },
        );
    });
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(matches!(
        p.accounts[0].warnings[0].reason,
        Warning::ReinviteImpossible { .. }
    ));
}

#[test]
fn the_awaiting_sync_clock_starts_when_first_seen() {
    let (p, mut w) = one(AccountKind::Synced, |a, _, _| {
        a.mail = Some("ana.adams@fabrikam.example".into())
    });
    assert_eq!(p.accounts[0].state, Lifecycle::AwaitingSync);
    w.apply(&p);
    let stored = w.progress.values().next().unwrap();
    assert_eq!(stored.address_staged_at, Some(now()));
}

#[test]
fn a_changed_directory_mail_after_invitation_is_warned_about() {
    let (p, _) = one(AccountKind::Synced, |a, u, _| {
        a.mail = Some("someone.else@x.example".into());
        u.mail = Some("ana.adams@fabrikam.example".into());
        u.external_user_state = Some("PendingAcceptance".into());
    });
    assert_eq!(p.accounts[0].state, Lifecycle::Invited);
    assert_eq!(
        p.accounts[0].warnings[0].reason,
        Warning::DirectoryMailChanged {
            invited: "ana.adams@fabrikam.example".into(),
            directory: Some("someone.else@x.example".into()),
        }
    );
}

#[test]
fn awaiting_sync_warns_after_the_configured_age() {
    let (p, _) = one(AccountKind::Synced, |a, _, w| {
        a.mail = Some("ana.adams@fabrikam.example".into());
        w.progress.insert(
            a.object_guid.as_ref().unwrap().as_str().into(),
            Progress {
                state: Lifecycle::AwaitingSync,
                address_staged_at: Some(days_ago(1)),
                ..Progress::default()
            },
        );
    });
    assert_eq!(p.accounts[0].state, Lifecycle::AwaitingSync);
    assert_eq!(
        p.accounts[0].warnings[0].reason,
        Warning::AwaitingSyncLong { minutes: 1440 }
    );
}

#[test]
fn every_precondition_blocks_with_a_reason_and_help_for_both_kinds() {
    type Tweak = fn(&mut SourceAccount, &mut CloudUser, &mut World);
    let cases: Vec<(&str, Tweak)> = vec![
        ("on_premises_user_principal_name", |_, u, _| {
            u.on_premises_user_principal_name = Some("p.adams@lab.example.com".into())
        }),
        ("role_holder", |_, u, _| {
            u.roles = vec!["Reports Reader".into()]
        }),
        ("mailbox", |_, u, _| u.has_mailbox = true),
        ("onprem_mailbox", |a, _, _| {
            a.exchange = Some(crate::model::ExchangeRecipient {
                recipient_type_details: Some(1),
                mailbox_guid: true,
                ..Default::default()
            })
        }),
        ("onprem_mailbox", |a, _, _| {
            a.exchange = Some(crate::model::ExchangeRecipient {
                recipient_type_details: Some(1 << 31),
                remote_recipient_type: Some(4),
                target_address: Some("SMTP:ana@lab.mail.onmicrosoft.com".into()),
                ..Default::default()
            })
        }),
        ("no_address", |a, _, _| {
            a.attributes.remove("otherMailbox");
        }),
        ("invalid_address", |a, _, _| {
            a.attributes.insert(
                "otherMailbox".into(),
                vec!["ana(adams)@fabrikam.example".into()],
            );
        }),
        ("address_in_verified_domain", |a, _, _| {
            a.attributes.insert(
                "otherMailbox".into(),
                vec!["ana@sub.lab.example.com".into()],
            );
        }),
        ("address_in_use", |_, _, w| {
            w.users.push(CloudUser {
                id: "other-guest".into(),
                user_principal_name: "x#EXT#@lab.example.com".into(),
                proxy_addresses: vec!["SMTP:Ana.Adams@fabrikam.example".into()],
                ..CloudUser::default()
            });
        }),
        ("address_in_use", |_, _, w| {
            w.users.push(CloudUser {
                id: "other".into(),
                user_principal_name: "o@lab.example.com".into(),
                other_mails: vec!["ana.adams@fabrikam.example".into()],
                ..CloudUser::default()
            });
        }),
        ("address_in_use", |_, _, w| {
            w.tenant.other_addresses.push(OtherAddress {
                object_id: "contact-1".into(),
                attribute: "proxyAddresses".into(),
                address: "smtp:ana.adams@fabrikam.example".into(),
            });
        }),
        ("address_shared", |_, _, w| {
            w.accounts
                .push(account(2, "p.twin", Some("ANA.ADAMS@fabrikam.example")));
        }),
        ("admin_count", |a, _, _| a.admin_count = true),
        ("protected_group", |a, _, _| {
            a.member_of = vec!["CN=Protected,OU=Groups,DC=lab,DC=example,DC=com".into()]
        }),
        ("deny_list", |a, _, _| {
            a.account_name = Some("p.denied".into());
        }),
        ("disabled", |a, _, _| a.user_account_control = Some(0x202)),
        ("disabled", |_, u, _| u.account_enabled = Some(false)),
        ("cloud_user_changed", |a, _, w| {
            w.progress.insert(
                a.object_guid.as_ref().unwrap().as_str().into(),
                Progress {
                    cloud_id: Some("another-user".into()),
                    ..Progress::default()
                },
            );
        }),
    ];
    for kind in BOTH {
        for (code, tweak) in &cases {
            let (p, _) = one(kind, tweak);
            let o = &p.accounts[0];
            assert_eq!(o.state, Lifecycle::Blocked, "{kind} {code}: {o:#?}");
            assert!(codes(&p).contains(code), "{kind} {code}: {:?}", codes(&p));
            assert!(
                p.actions.iter().all(|a| a.account != o.key),
                "{kind} {code}"
            );
            assert!(
                o.reasons
                    .iter()
                    .all(|r| !r.help.is_empty() && !r.message.is_empty())
            );
        }
    }
}

#[test]
fn protection_also_stops_the_password_randomization() {
    for kind in BOTH {
        let (p, _) = one(kind, |a, u, _| {
            u.external_user_state = Some("Accepted".into());
            a.admin_count = true;
        });
        assert_eq!(p.accounts[0].state, Lifecycle::Blocked, "{kind}");
        assert_eq!(p.accounts[0].stage, Lifecycle::Accepted);
        assert!(p.actions.is_empty());
    }
}

#[test]
fn join_failures_leave_the_account_unmatched_with_a_reason() {
    // No cloud user.
    let mut w = World::new();
    w.accounts
        .push(account(1, "p.adams", Some("a@fabrikam.example")));
    let p = w.plan();
    assert_eq!(p.accounts[0].state, Lifecycle::Unmatched);
    assert_eq!(codes(&p), vec!["no_cloud_user"]);
    assert!(
        p.accounts[0].reasons[0]
            .help
            .contains("next sync cycle (Entra Connect or Cloud Sync)")
    );

    // Two cloud-only users with the same UPN.
    let a = account(1, "p.adams", Some("a@fabrikam.example"));
    let u1 = user_of(&a, 1, AccountKind::CloudOnly);
    let mut u2 = user_of(&a, 2, AccountKind::CloudOnly);
    u2.user_principal_name = u2.user_principal_name.to_uppercase();
    w.users = vec![u1, u2];
    let p = w.plan();
    assert_eq!(codes(&p), vec!["several_cloud_users"]);

    // Two mapping files with the account in scope.
    let a = Mapping::parse(Path::new("mappings/a.toml"), MAPPING).unwrap();
    let b = Mapping::parse(Path::new("mappings/b.toml"), MAPPING).unwrap();
    let two = MappingSet::from_mappings(vec![a, b]).unwrap();
    let found = vec![
        (
            "a".to_string(),
            account(1, "p.adams", Some("a@fabrikam.example")),
        ),
        (
            "b".to_string(),
            account(1, "p.adams", Some("a@fabrikam.example")),
        ),
    ];
    let joined = join(map_accounts(&two, found), vec![]);
    let p = plan(
        joined,
        &two,
        &BTreeMap::new(),
        &Tenant::default(),
        &Policy::default(),
        &InvitationSettings::default(),
        now(),
    );
    assert_eq!(codes(&p), vec!["in_several_scopes"]);
}

fn population() -> World {
    let mut w = World::new();
    let addresses = [
        Some("ana.adams@fabrikam.example"),
        Some("bob.baker@contoso-partner.example"),
        Some("wei.chen@northwind.example"),
        None,
        Some("verified@lab.example.com"),
        Some("shared@dup.example"),
        Some("shared@dup.example"),
        Some("cloud.one@tailspin.example"),
        Some("cloud.two@tailspin.example"),
    ];
    for (i, addr) in addresses.iter().enumerate() {
        let n = u8::try_from(i + 1).unwrap();
        let a = account(n, &format!("p.user{n}"), *addr);
        let kind = if i >= 7 {
            AccountKind::CloudOnly
        } else {
            AccountKind::Synced
        };
        w.users.push(user_of(&a, n, kind));
        w.accounts.push(a);
    }
    let mut admin = account(20, "p.admin", Some("admin@fabrikam.example"));
    admin.admin_count = true;
    w.users.push(user_of(&admin, 20, AccountKind::Synced));
    w.accounts.push(admin);
    w.accounts
        .push(account(21, "p.orphan", Some("orphan@fabrikam.example")));
    w
}

#[test]
fn the_same_inputs_give_the_same_plan_whatever_their_order() {
    let w = population();
    let expected = serde_json::to_string(&w.plan()).unwrap();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..20 {
        let mut shuffled = World {
            accounts: w.accounts.clone(),
            users: w.users.clone(),
            progress: w.progress.clone(),
            tenant: w.tenant.clone(),
            policy: w.policy.clone(),
            defaults: w.defaults.clone(),
        };
        let perm_a = Just(shuffled.accounts.clone()).prop_shuffle();
        let perm_u = Just(shuffled.users.clone()).prop_shuffle();
        shuffled.accounts = perm_a.new_tree(&mut runner).unwrap().current();
        shuffled.users = perm_u.new_tree(&mut runner).unwrap().current();
        assert_eq!(serde_json::to_string(&shuffled.plan()).unwrap(), expected);
    }
    // Sorted by account key, then seq.
    let p = w.plan();
    let keys: Vec<_> = p
        .actions
        .iter()
        .map(|a| (a.account.clone(), a.seq))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

#[test]
fn plans_carry_no_secret_and_no_unused_attribute() {
    let mut w = population();
    let p = w.plan();
    w.apply(&p);
    w.sync();
    let p = w.plan();
    w.apply(&p);
    w.accept_all();
    let p = w.plan();
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a.op, Op::RandomizePassword { .. }))
    );
    let json = serde_json::to_string(&p).unwrap();
    assert!(
        !json.contains("SENTINEL"),
        "an unused attribute leaked into the plan"
    );
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    fn no_password_values(v: &serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let k = k.to_lowercase();
                    assert!(
                        !((k.contains("password") || k.contains("secret")) && v.is_string()),
                        "key {k} holds a value"
                    );
                    no_password_values(v);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(no_password_values),
            _ => {}
        }
    }
    no_password_values(&value);
    // And it round-trips.
    let back: Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
}

#[test]
fn applying_a_plan_then_planning_again_plans_nothing_new() {
    let mut w = population();
    let first = w.plan();
    assert!(!first.actions.is_empty());
    w.apply(&first);
    // Nothing happened in the world (no sync, no acceptance): nothing to do.
    let second = w.plan();
    assert!(second.actions.is_empty(), "{:#?}", second.actions);

    // Entra Connect syncs: the synced accounts are ready and get invited, once.
    w.sync();
    let third = w.plan();
    assert!(third.actions.iter().all(|a| a.op.name() == "invite"));
    assert_eq!(third.actions.len(), 3);
    w.apply(&third);
    assert!(w.plan().actions.is_empty());

    // The partners accept: passwords are randomized, once.
    w.accept_all();
    let fourth = w.plan();
    assert_eq!(
        fourth
            .summary
            .actions
            .get(&Category::PasswordRandomizations),
        Some(&5)
    );
    w.apply(&fourth);
    let fifth = w.plan();
    assert!(fifth.actions.is_empty(), "{:#?}", fifth.actions);
    assert_eq!(fifth.summary.states.get(&Lifecycle::Done), Some(&5));
}

fn attr_value() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[a-z.]{1,10}@[a-z]{1,8}\\.example",
        "[()*\\\\&|!=<>~,;:\"'#]{0,30}",
        "[\\PC]{0,200}",
        Just("x".repeat(5000)),
        Just("Élodie.Dübois@lafayette.example".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_attribute_values_never_panic(
        values in proptest::collection::vec((attr_value(), attr_value(), attr_value(), any::<bool>()), 1..8),
    ) {
        let set = set_with(&MAPPING.replace(
            "address = \"lower(trim(otherMailbox))\"",
            "address = \"normalize_diacritics(lower(trim(coalesce(otherMailbox, userPrincipalName))))\"",
        ));
        let mut w = World::new();
        for (i, (mailbox, sam, upn, synced)) in values.into_iter().enumerate() {
            let n = u8::try_from(i).unwrap();
            let mut a = account(n, &sam, Some(&mailbox));
            a.dn = format!("CN={},OU=Partners,DC=lab,DC=example,DC=com", sam.replace(',', "\\,"));
            a.user_principal_name = Some(upn.clone());
            a.attributes.insert("userPrincipalName".into(), vec![upn]);
            let kind = if synced { AccountKind::Synced } else { AccountKind::CloudOnly };
            let mut u = user_of(&a, n, kind);
            u.mail = Some(mailbox);
            w.users.push(u);
            w.accounts.push(a);
        }
        let p = w.plan_with(&set);
        prop_assert!(p.accounts.len() <= w.accounts.len());
        let _ = crate::mapping::filter::validate(&w.accounts[0].dn);
    }

    #[test]
    fn random_expressions_and_filters_never_panic(s in "[\\PC]{0,300}") {
        let _ = crate::mapping::filter::validate(&s);
        let _ = Mapping::parse(Path::new("mappings/p.toml"), &MAPPING.replace("lower(trim(otherMailbox))", &s.replace(['"', '\\'], "")));
    }
}

#[test]
fn a_hundred_thousand_accounts_plan_in_one_pass() {
    // Correctness at scale (speed is for scripts/bench.sh): every account gets its write.
    let mut w = World::new();
    for i in 0..100_000u32 {
        let mut a = account(
            0,
            &format!("p.bulk{i:06}"),
            Some(&format!("bulk{i:06}@bulk-partner.example")),
        );
        let mut g = [0u8; 16];
        g[..4].copy_from_slice(&i.to_le_bytes());
        a.object_guid = Some(Anchor::from_bytes(&g));
        let mut u = user_of(&a, 0, AccountKind::Synced);
        u.id = format!("id-{i:06}");
        w.users.push(u);
        w.accounts.push(a);
    }
    let p = w.plan();
    assert_eq!(
        p.summary.actions.get(&Category::AddressWrites),
        Some(&100_000)
    );
}

/// Plays the lifecycle of the world's accounts to its end: invited, accepted, randomized.
fn convert_all(w: &mut World) {
    for _ in 0..4 {
        let p = w.plan();
        w.apply(&p);
        w.sync();
        w.accept_all();
    }
    let p = w.plan();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(
        w.progress
            .values()
            .all(|p| p.password_randomized_at.is_some())
    );
}

/// A partner without an anchor: keyed by its DN and joined as a cloud-only user by UPN.
fn anchorless_world() -> World {
    let mut w = World::new();
    let mut a = account(1, "p.adams", Some("Ana.Adams@Fabrikam.example"));
    let u = user_of(&a, 1, AccountKind::CloudOnly);
    a.object_guid = None;
    w.accounts.push(a);
    w.users.push(u);
    w
}

#[test]
fn a_renamed_account_without_anchor_is_still_one_account() {
    let mut w = anchorless_world();
    convert_all(&mut w);
    let old_key = w.progress.keys().next().unwrap().clone();
    assert!(old_key.starts_with("dn:"), "{old_key}");

    w.accounts[0].dn = "CN=p.adams,OU=Moved,OU=Partners,DC=lab,DC=example,DC=com".into();
    let p = w.plan();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.accounts[0].state, Lifecycle::Done);
    assert_eq!(
        p.carried,
        vec![Carried {
            from: old_key,
            to: p.accounts[0].key.clone(),
            by: CarriedBy::CloudUser,
        }]
    );
}

#[test]
fn an_account_keyed_by_its_dn_keeps_its_progress_when_it_gains_an_anchor() {
    let mut w = anchorless_world();
    convert_all(&mut w);
    let old_key = w.progress.keys().next().unwrap().clone();
    // The directory now shows an anchor (a server whose anchor attribute is read now).
    w.accounts[0].object_guid = Some(guid(1));
    let p = w.plan();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.carried.len(), 1);
    assert_eq!(p.carried[0].from, old_key);
    assert_eq!(p.carried[0].by, CarriedBy::Dn);
    assert_eq!(p.carried[0].to, guid(1).as_str());
}

#[test]
fn an_ambiguous_earlier_key_carries_nothing_over() {
    let mut w = anchorless_world();
    convert_all(&mut w);
    // Two remembered keys were joined to the same cloud user: neither is taken.
    let (_, p) = w
        .progress
        .iter()
        .next()
        .map(|(k, p)| (k.clone(), p.clone()))
        .unwrap();
    w.progress
        .insert("dn:cn=ghost,ou=partners,dc=lab,dc=example,dc=com".into(), p);
    w.accounts[0].dn = "CN=p.adams,OU=Moved,OU=Partners,DC=lab,DC=example,DC=com".into();
    let plan = w.plan();
    assert!(plan.carried.is_empty(), "{:?}", plan.carried);

    // With nothing remembered there is nothing to carry.
    let mut fresh = anchorless_world();
    fresh.progress.clear();
    assert!(fresh.plan().carried.is_empty());
}

/// Issue 13: `after_sign_in` randomizes only once `signInActivity` shows a successful
/// sign-in at or after the acceptance (else the invitation time), never in the future;
/// until then the account waits, without actions, and says what for.
#[test]
fn after_sign_in_waits_for_a_successful_sign_in_since_the_acceptance() {
    let accepted = days_ago(2);
    let with = |sign_in: Option<String>, accepted_at: Option<Timestamp>| {
        move |a: &mut SourceAccount, u: &mut CloudUser, w: &mut World| {
            u.external_user_state = Some("Accepted".into());
            u.last_successful_sign_in = sign_in;
            w.policy.randomize_password = RandomizeWhen::AfterSignIn;
            w.progress.insert(
                a.object_guid.as_ref().unwrap().as_str().into(),
                Progress {
                    state: Lifecycle::Accepted,
                    invited_at: Some(days_ago(5)),
                    invitations_sent: 1,
                    accepted_at,
                    ..Progress::default()
                },
            );
        }
    };
    // Acceptance recorded with a fraction of a second (when b2bsync first read it), the
    // sign-in in that same second (Graph's times have whole seconds): it counts.
    let fractional = Timestamp::from_second(accepted.as_second()).unwrap()
        + jiff::SignedDuration::from_millis(700);
    let whole = Timestamp::from_second(accepted.as_second()).unwrap();
    for kind in BOTH {
        let (p, _) = one(kind, with(Some(whole.to_string()), Some(fractional)));
        assert!(
            p.accounts[0].warnings.is_empty(),
            "{kind}: a sign-in in the acceptance's second counts: {:?}",
            p.accounts[0].warnings
        );
        assert!(!p.actions.is_empty(), "{kind}: randomized");
    }
    let since = accepted.to_string();
    let waits = [
        ("no sign-in", None, Some(accepted)),
        (
            "before the acceptance",
            Some(days_ago(3).to_string()),
            Some(accepted),
        ),
        ("unparseable", Some("yesterday".to_string()), Some(accepted)),
        (
            "in the future",
            Some(days_ago(-1).to_string()),
            Some(accepted),
        ),
        ("before the invitation", Some(days_ago(6).to_string()), None),
    ];
    for kind in BOTH {
        for (case, sign_in, accepted_at) in waits.clone() {
            let (p, _) = one(kind, with(sign_in, accepted_at));
            assert!(p.actions.is_empty(), "{kind} {case}: {:?}", ops(&p));
            let o = &p.accounts[0];
            assert_eq!(
                (o.state, o.next),
                (Lifecycle::Accepted, Lifecycle::Accepted)
            );
            let want = accepted_at.unwrap_or(days_ago(5)).to_string();
            assert_eq!(
                o.warnings[0].reason,
                Warning::AwaitingSignIn { since: Some(want) },
                "{kind} {case}"
            );
        }
        assert_eq!(
            Warning::AwaitingSignIn {
                since: Some(since.clone())
            }
            .to_string(),
            format!("waiting for the partner's first external sign-in since {since}")
        );

        // Signed in after the acceptance (or, without accepted_at, after the invitation):
        // randomized once, and the next plan over the applied state does nothing more.
        for accepted_at in [Some(accepted), None] {
            let (p, mut w) = one(kind, with(Some(days_ago(1).to_string()), accepted_at));
            assert_eq!(
                ops(&p),
                vec!["randomize_password", "revoke_sessions"],
                "{kind}"
            );
            assert_eq!(p.accounts[0].next, Lifecycle::Done);
            assert!(p.accounts[0].warnings.is_empty());
            w.apply(&p);
            let again = w.plan();
            assert!(again.actions.is_empty(), "{kind}: {:?}", ops(&again));
            assert_eq!(again.accounts[0].state, Lifecycle::Done);
        }
    }
}

#[test]
fn exchange_attributes_block_a_mailbox_and_let_a_mail_user_through() {
    use crate::model::ExchangeRecipient;
    let r = |details: Option<u64>, remote: Option<u64>, guid: bool, target: Option<&str>| {
        ExchangeRecipient {
            recipient_type_details: details,
            remote_recipient_type: remote,
            mailbox_guid: guid,
            target_address: target.map(str::to_string),
        }
        .mailbox()
    };
    // The recipient type decides when set.
    assert_eq!(
        r(Some(1), None, true, None).as_deref(),
        Some("on-premises UserMailbox")
    );
    assert_eq!(
        r(Some(4), None, false, None).as_deref(),
        Some("on-premises SharedMailbox")
    );
    assert_eq!(
        r(Some(1 << 35), Some(96), false, None).as_deref(),
        Some("remote mailbox (RemoteSharedMailbox)")
    );
    // A mail user is no mailbox, even with a mailbox GUID or a routing address.
    assert_eq!(
        r(Some(128), None, true, Some("SMTP:a@x.mail.onmicrosoft.com")),
        None
    );
    // Without it: the remote recipient type, then the GUID, then the routing domain.
    assert!(r(None, Some(1), false, None).is_some());
    assert_eq!(
        r(None, Some(1 | 8), false, None),
        None,
        "being deprovisioned"
    );
    assert_eq!(r(None, Some(2), false, None), None, "an archive only");
    assert!(r(None, None, true, None).is_some());
    assert!(
        r(
            None,
            None,
            false,
            Some("smtp:A@Contoso.MAIL.onmicrosoft.com")
        )
        .is_some()
    );
    assert_eq!(
        r(None, None, false, Some("SMTP:ana@fabrikam.example")),
        None
    );
    assert_eq!(r(Some(0), None, false, None), None);

    // In the plan: blocked with the reason and its fix, no action; a mail user converts.
    for (exchange, blocked) in [
        (r_full(Some(1), true), true),
        (r_full(Some(128), false), false),
    ] {
        let (p, _) = one(AccountKind::Synced, |a, _, _| a.exchange = Some(exchange));
        let o = &p.accounts[0];
        let reason = o
            .reasons
            .iter()
            .find(|r| r.reason.code() == "onprem_mailbox");
        assert_eq!(reason.is_some(), blocked, "{o:#?}");
        if let Some(reason) = reason {
            assert_eq!(o.state, Lifecycle::Blocked);
            assert!(p.actions.is_empty(), "{:?}", p.actions);
            assert!(
                reason.help.contains("mail user (MailUser)"),
                "{}",
                reason.help
            );
        } else {
            assert!(!p.actions.is_empty(), "a mail user is staged");
        }
    }
}

fn r_full(details: Option<u64>, guid: bool) -> crate::model::ExchangeRecipient {
    crate::model::ExchangeRecipient {
        recipient_type_details: details,
        mailbox_guid: guid,
        ..Default::default()
    }
}
