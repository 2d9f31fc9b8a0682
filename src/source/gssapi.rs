//! Kerberos binds (`[ldap] bind = "gssapi"`): SASL GSSAPI with the service's own Kerberos
//! credentials, from a keytab or from the credential cache of the user b2bsync runs as,
//! through the system GSSAPI library (MIT krb5 on Linux) and ldap3's `gssapi` feature. No
//! password is read or held.
//!
//! With a keytab, MIT krb5 gets the tickets itself from its *client keytab*
//! (`KRB5_CLIENT_KTNAME`) into a `MEMORY:` credential cache (`KRB5CCNAME`), both read from
//! the environment when the library starts. This crate forbids `unsafe` code, and changing
//! a running process's environment is unsafe, so [`exec_with_keytab`] starts the same command
//! again (`exec`, same process id and arguments) with those two variables set, before the
//! async runtime starts. Nothing is written to the user's credential cache; the tickets die
//! with the process, and MIT krb5 gets new ones from the keytab when they expire.
//!
//! The security of the connection stays with TLS: over LDAPS or StartTLS the bind carries the
//! TLS channel binding and asks for no SASL layer; over plain `ldap://` ldap3 asks for the
//! Kerberos confidentiality layer. Password operations check the TLS rule on their own
//! ([`super::LdapSettings::encrypted`]), so a Kerberos-sealed `ldap://` connection still
//! cannot reset a password.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use ldap3::Ldap;

use super::{Error, LdapSettings};

/// The first byte of every keytab file (MIT and Heimdal formats 0x0501 and 0x0502).
const KEYTAB_MAGIC: u8 = 0x05;

/// The credential cache of this process's tickets when they come from a keytab: in memory,
/// gone with the process, shared by its reconnects.
pub const MEMORY_CCACHE: &str = "MEMORY:b2bsync";

/// Set in the environment of the command [`exec_with_keytab`] starts, so that it never starts
/// itself again.
const EXEC_MARK: &str = "B2BSYNC_KEYTAB_EXEC";

/// The value of `KRB5_CLIENT_KTNAME` for a keytab file.
fn client_keytab_name(keytab: &Path) -> std::ffi::OsString {
    let mut name = std::ffi::OsString::from("FILE:");
    name.push(keytab.as_os_str());
    name
}

/// Starts this command again with MIT krb5's client keytab set to `keytab` and a memory
/// credential cache, unless the environment already says so. Returns only when it did not
/// (already set, or not Unix), or with the error of a failed `exec`. Call it before any
/// thread starts: the new process begins from `main`.
pub fn exec_with_keytab(keytab: &Path) -> Option<std::io::Error> {
    let wanted = client_keytab_name(keytab);
    let set = std::env::var_os("KRB5_CLIENT_KTNAME").as_deref() == Some(wanted.as_os_str())
        && std::env::var_os("KRB5CCNAME").as_deref() == Some(std::ffi::OsStr::new(MEMORY_CCACHE));
    if set || std::env::var_os(EXEC_MARK).is_some() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        let program = match std::env::current_exe() {
            Ok(p) => p,
            Err(e) => return Some(e),
        };
        Some(
            std::process::Command::new(program)
                .args(std::env::args_os().skip(1))
                .env("KRB5_CLIENT_KTNAME", &wanted)
                .env("KRB5CCNAME", MEMORY_CCACHE)
                .env(EXEC_MARK, "1")
                .exec(),
        )
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Where the Kerberos credentials of a GSSAPI bind come from. Holds no secret: a keytab is
/// named, never read into this value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Kerberos {
    /// Keytab holding the service account's keys. `None`: the credential cache of the user
    /// b2bsync runs as (`KRB5CCNAME`, kept fresh by e.g. `k5start` or a gMSA helper).
    pub keytab: Option<PathBuf>,
    /// Client principal (`svc-b2bsync@EXAMPLE.COM`). `None`: the keytab's first principal,
    /// or the cache's default principal.
    pub principal: Option<String>,
    /// Host part of the directory's service principal `ldap/<host>`. `None`: the URL's host.
    pub spn_host: Option<String>,
}

impl Kerberos {
    /// Who the bind authenticates as, for messages: the principal or where it comes from.
    pub fn describe(&self) -> String {
        match (&self.principal, &self.keytab) {
            (Some(p), Some(k)) => format!("Kerberos principal {p} (keytab {})", k.display()),
            (Some(p), None) => format!("Kerberos principal {p} (credential cache)"),
            (None, Some(k)) => format!("the Kerberos principal of keytab {}", k.display()),
            (None, None) => "the default principal of the Kerberos credential cache".into(),
        }
    }

    /// The host of the service principal `ldap/<host>`: the configured one, else the URL's.
    pub fn service_host(&self, url: &str) -> Result<String, Error> {
        if let Some(host) = &self.spn_host {
            return Ok(host.clone());
        }
        let parsed = url::Url::parse(url).map_err(|e| Error::Url {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        match parsed.host() {
            // ldap:// is not a scheme the url crate knows: an IP address arrives as a domain.
            Some(url::Host::Domain(d))
                if !d.starts_with('[') && d.parse::<std::net::IpAddr>().is_err() =>
            {
                Ok(d.to_ascii_lowercase())
            }
            Some(_) => Err(Error::Kerberos {
                url: url.to_string(),
                reason: "the URL names the server by its IP address, and Kerberos needs its host name for the service principal ldap/<host>".into(),
            }),
            None => Err(Error::Url {
                url: url.to_string(),
                reason: "no host".into(),
            }),
        }
    }
}

/// Checks that the keytab exists, can be read by this process, and is a keytab. Reads only
/// its first byte.
pub fn check_keytab(path: &Path) -> Result<(), Error> {
    let fail = |reason: String| Error::Keytab {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut first = [0u8; 1];
    match file.read(&mut first) {
        Ok(1) if first[0] == KEYTAB_MAGIC => Ok(()),
        Ok(0) => Err(fail("the file is empty".into())),
        Ok(_) => Err(fail("the file is not a keytab".into())),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// SASL GSSAPI bind on an open connection with the credentials `kerberos` names. In a build
/// without the `gssapi` feature: an error saying so.
#[cfg(not(feature = "gssapi"))]
pub async fn bind(
    _ldap: &mut Ldap,
    settings: &LdapSettings,
    _kerberos: &Kerberos,
) -> Result<(), Error> {
    Err(Error::Kerberos {
        url: settings.url.clone(),
        reason: "this b2bsync was built without Kerberos support (cargo feature `gssapi`)".into(),
    })
}

/// SASL GSSAPI bind through SSPI (Windows; untested): as the account the process runs as
/// (a gMSA, a service account). Keytabs and another principal are Unix things.
#[cfg(all(feature = "gssapi", not(unix)))]
pub async fn bind(
    ldap: &mut Ldap,
    settings: &LdapSettings,
    kerberos: &Kerberos,
) -> Result<(), Error> {
    let host = kerberos.service_host(&settings.url)?;
    if kerberos.keytab.is_some() || kerberos.principal.is_some() {
        return Err(Error::Kerberos {
            url: settings.url.clone(),
            reason: "on Windows the bind uses the account b2bsync runs as (SSPI): remove [ldap] keytab and principal".into(),
        });
    }
    let answer = ldap.sasl_gssapi_bind(&host).await;
    bound(answer, settings, kerberos, &host)
}

/// What a GSSAPI bind's answer means: bound, refused by the server, or a Kerberos failure.
#[cfg(feature = "gssapi")]
fn bound(
    answer: Result<ldap3::LdapResult, ldap3::LdapError>,
    settings: &LdapSettings,
    kerberos: &Kerberos,
    host: &str,
) -> Result<(), Error> {
    match answer {
        Ok(result) if result.rc == 0 => Ok(()),
        Ok(result) => Err(Error::Bind {
            url: settings.url.clone(),
            bind_dn: kerberos.describe(),
            rc: result.rc,
            message: result.text,
        }),
        Err(ldap3::LdapError::GssapiOperationError(reason)) => Err(Error::Kerberos {
            url: settings.url.clone(),
            reason: format!("{reason} (service principal ldap/{host})"),
        }),
        Err(e) => Err(Error::Connect {
            url: settings.url.clone(),
            reason: e.to_string(),
        }),
    }
}

/// SASL GSSAPI bind on an open connection with the credentials `kerberos` names.
#[cfg(all(feature = "gssapi", unix))]
pub async fn bind(
    ldap: &mut Ldap,
    settings: &LdapSettings,
    kerberos: &Kerberos,
) -> Result<(), Error> {
    let host = kerberos.service_host(&settings.url)?;
    let kerberos_err = |reason: String| Error::Kerberos {
        url: settings.url.clone(),
        reason,
    };
    if let Some(keytab) = &kerberos.keytab {
        check_keytab(keytab)?;
        let wanted = client_keytab_name(keytab);
        if std::env::var_os("KRB5_CLIENT_KTNAME").as_deref() != Some(wanted.as_os_str()) {
            return Err(kerberos_err(
                "the process was not started with the keytab as its client keytab (KRB5_CLIENT_KTNAME)".into(),
            ));
        }
    }
    let cred = acquire(kerberos.principal.as_deref()).map_err(kerberos_err)?;
    let answer = ldap.sasl_gssapi_cred_bind(cred, &host).await;
    bound(answer, settings, kerberos, &host)
}

/// Initiator credentials for `principal` or the default one: from the credential cache
/// (`KRB5CCNAME`), which MIT krb5 fills from the client keytab when one is set.
#[cfg(all(feature = "gssapi", unix))]
fn acquire(principal: Option<&str>) -> Result<cross_krb5::Cred, String> {
    use libgssapi::credential::{Cred, CredUsage};
    use libgssapi::name::Name;
    use libgssapi::oid::GSS_NT_KRB5_PRINCIPAL;
    let name = principal
        .map(|p| Name::new(p.as_bytes(), Some(&GSS_NT_KRB5_PRINCIPAL)))
        .transpose()
        .map_err(|e| format!("invalid principal: {e}"))?;
    Cred::acquire(name.as_ref(), None, CredUsage::Initiate, None)
        .map(cross_krb5::Cred::from)
        .map_err(|e| format!("no usable Kerberos credentials: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_host_comes_from_the_url_or_the_setting() {
        let k = Kerberos::default();
        assert_eq!(
            k.service_host("ldaps://DC1.Lab.Example.com:636").unwrap(),
            "dc1.lab.example.com"
        );
        let err = k.service_host("ldaps://127.0.0.1:636").unwrap_err();
        assert!(matches!(err, Error::Kerberos { .. }), "{err}");
        assert!(err.help().contains("spn_host"), "{}", err.help());
        let pinned = Kerberos {
            spn_host: Some("dc1.lab.example.com".into()),
            ..Kerberos::default()
        };
        assert_eq!(
            pinned.service_host("ldaps://127.0.0.1:636").unwrap(),
            "dc1.lab.example.com"
        );
    }

    #[test]
    fn a_keytab_must_exist_and_look_like_one() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.keytab");
        let err = check_keytab(&missing).unwrap_err();
        assert!(matches!(err, Error::Keytab { .. }), "{err}");
        assert!(err.help().contains("keytab"), "{}", err.help());
        let text = dir.path().join("text.keytab");
        std::fs::write(&text, "password=hunter2\n").unwrap();
        let err = check_keytab(&text).unwrap_err().to_string();
        assert!(err.contains("not a keytab"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let empty = dir.path().join("empty.keytab");
        std::fs::write(&empty, b"").unwrap();
        assert!(
            check_keytab(&empty)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let good = dir.path().join("good.keytab");
        std::fs::write(&good, [0x05, 0x02]).unwrap();
        check_keytab(&good).unwrap();
    }

    #[test]
    fn describe_names_the_principal_and_its_source() {
        let k = Kerberos {
            keytab: Some("/etc/b2bsync/b2bsync.keytab".into()),
            principal: Some("svc@EXAMPLE.COM".into()),
            spn_host: None,
        };
        assert_eq!(
            k.describe(),
            "Kerberos principal svc@EXAMPLE.COM (keytab /etc/b2bsync/b2bsync.keytab)"
        );
        assert!(Kerberos::default().describe().contains("credential cache"));
    }
}
