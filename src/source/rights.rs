//! What the service account may write on an account, read without writing anything: the
//! read-only probe `check` runs. Active Directory lists the attributes the bound account may
//! write on an entry in `allowedAttributesEffective`; generic LDAP servers have no such
//! attribute, and the first write shows their ACLs.

use super::{Flavour, LdapDirectory};

/// The operational attribute AD computes per entry for the bound account.
const ATTR_ALLOWED_EFFECTIVE: &str = "allowedAttributesEffective";

/// The attribute b2bsync writes on an account.
const ATTR_MAIL: &str = "mail";

/// What the directory says the service account may write on an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rights {
    MayWriteMail,
    MayNotWriteMail,
    /// The directory cannot tell (generic LDAP), or could not be asked: why.
    Unknown(String),
}

impl LdapDirectory {
    /// Whether the bound account may write `mail` on the entry at `dn`, read with a base
    /// search; nothing is written.
    pub async fn mail_rights(&self, dn: &str) -> Rights {
        match self.flavour().await {
            Ok(Flavour::ActiveDirectory) => {}
            Ok(_) => {
                return Rights::Unknown(
                    "generic LDAP servers expose no effective-rights attribute; the first write shows the ACLs".into(),
                );
            }
            Err(e) => return Rights::Unknown(e.to_string()),
        }
        let mut ldap = match self.connect().await {
            Ok(l) => l,
            Err(e) => return Rights::Unknown(e.to_string()),
        };
        let result = ldap
            .search(
                dn,
                ldap3::Scope::Base,
                "(objectClass=*)",
                vec![ATTR_ALLOWED_EFFECTIVE],
            )
            .await
            .and_then(|r| r.success());
        let _ = ldap.unbind().await;
        match result {
            Ok((entries, _)) => {
                let writable = entries
                    .into_iter()
                    .map(ldap3::SearchEntry::construct)
                    .any(|e| {
                        e.attrs
                            .iter()
                            .filter(|(k, _)| k.eq_ignore_ascii_case(ATTR_ALLOWED_EFFECTIVE))
                            .any(|(_, v)| v.iter().any(|a| a.eq_ignore_ascii_case(ATTR_MAIL)))
                    });
                if writable {
                    Rights::MayWriteMail
                } else {
                    Rights::MayNotWriteMail
                }
            }
            Err(e) => Rights::Unknown(e.to_string()),
        }
    }
}
