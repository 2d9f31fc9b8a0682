//! Active Directory accounts that left a scope between two incremental reads without
//! matching it any more: deleted (their tombstone, or their recycled object, in the Deleted
//! Objects container, read with the show-deleted control) or moved out of every base DN.
//! Both move the entry's `uSNChanged`, so one search of the domain for users changed since
//! the mark finds them; the pipeline keeps only those it knows.
//!
//! Pure: [`departed`] sorts what that search returned ([`Changed`]) into [`Departed`].

use crate::model::{Anchor, Dn};

use super::Departed;

/// LDAP_SERVER_SHOW_DELETED_OID: a search also returns deleted objects (tombstones, and
/// with the Recycle Bin on, recycled and deleted-but-recoverable ones).
pub const SHOW_DELETED_OID: &str = "1.2.840.113556.1.4.417";

/// Attributes the search asks for besides the anchors.
pub const ATTRIBUTES: [&str; 2] = ["isDeleted", "lastKnownParent"];

/// The filter of the search: users changed since the mark (`marker`, a `(uSNChanged>=n)`).
pub fn filter(marker: &str) -> String {
    format!("(&(objectClass=user){marker})")
}

/// One entry of the search, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub dn: String,
    pub anchor: Option<Anchor>,
    /// `isDeleted: TRUE`.
    pub deleted: bool,
    /// `lastKnownParent`: where a deleted object was (for the log).
    pub last_known_parent: Option<String>,
}

/// The searched naming contexts: for each base DN the longest naming context it is under,
/// once each (a base under none is searched itself).
pub fn search_bases(base_dns: &[String], naming_contexts: &[String]) -> Vec<String> {
    let mut bases: Vec<String> = Vec::new();
    for base in base_dns {
        let dn = Dn::new(base);
        let context = naming_contexts
            .iter()
            .filter(|nc| dn.is_under(&Dn::new(nc)))
            .max_by_key(|nc| nc.len())
            .unwrap_or(base);
        if !bases.iter().any(|b| Dn::new(b) == Dn::new(context)) {
            bases.push(context.clone());
        }
    }
    bases
}

/// The entries that left the scope: every deleted one, and every other one under none of
/// `base_dns` (moved out). Entries still under a base DN are read by the scope's own
/// searches (changed, or departed from its filter).
pub fn departed(entries: Vec<Changed>, base_dns: &[String]) -> Vec<Departed> {
    let bases: Vec<Dn> = base_dns.iter().map(|b| Dn::new(b)).collect();
    entries
        .into_iter()
        .filter(|e| e.deleted || !bases.iter().any(|b| Dn::new(&e.dn).is_under(b)))
        .map(|e| Departed {
            dn: e.dn,
            anchor: e.anchor,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dn: &str, n: u8, deleted: bool) -> Changed {
        Changed {
            dn: dn.into(),
            anchor: Some(Anchor::from_bytes(&[n; 16])),
            deleted,
            last_known_parent: None,
        }
    }

    #[test]
    fn deleted_and_moved_out_entries_depart_the_others_stay() {
        let bases = vec!["OU=Partners,DC=lab,DC=example,DC=com".to_string()];
        let entries = vec![
            entry("CN=a,OU=Partners,DC=lab,DC=example,DC=com", 1, false),
            entry(
                "CN=b\\0ADEL:1234,CN=Deleted Objects,DC=lab,DC=example,DC=com",
                2,
                true,
            ),
            entry("CN=c,OU=Former,DC=lab,DC=example,DC=com", 3, false),
            entry("CN=d,OU=XPartners,DC=lab,DC=example,DC=com", 4, false),
            entry("CN=e,ou=partners, dc=lab,dc=example,dc=com", 5, false),
        ];
        let gone: Vec<u8> = departed(entries, &bases)
            .iter()
            .map(|d| d.anchor.as_ref().map_or(0, |a| a.bytes()[0]))
            .collect();
        assert_eq!(gone, vec![2, 3, 4]);
    }

    #[test]
    fn each_naming_context_is_searched_once() {
        let ncs = vec![
            "DC=lab,DC=example,DC=com".to_string(),
            "CN=Configuration,DC=lab,DC=example,DC=com".to_string(),
            "DC=child,DC=lab,DC=example,DC=com".to_string(),
        ];
        let bases = vec![
            "OU=A,DC=lab,DC=example,DC=com".to_string(),
            "OU=B,DC=lab,DC=example,DC=com".to_string(),
            "OU=C,DC=child,DC=lab,DC=example,DC=com".to_string(),
            "OU=D,DC=other".to_string(),
        ];
        assert_eq!(
            search_bases(&bases, &ncs),
            vec![
                "DC=lab,DC=example,DC=com".to_string(),
                "DC=child,DC=lab,DC=example,DC=com".to_string(),
                "OU=D,DC=other".to_string(),
            ]
        );
    }

    #[test]
    fn the_filter_asks_for_users_changed_since_the_mark() {
        assert_eq!(
            filter("(uSNChanged>=42)"),
            "(&(objectClass=user)(uSNChanged>=42))"
        );
    }
}
