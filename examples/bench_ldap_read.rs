//! Benchmark helper for `scripts/bench.sh`: reads every mapping's scope through b2bsync's own
//! LDAP adapter, exactly as `b2bsync run` does, and prints one JSON line with the entries read
//! and the seconds taken. Not part of the product; no writes.
//!
//! Usage: `bench_ldap_read CONFIG` (the bind password from the config's `password_env`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use b2bsync::config::Config;
use b2bsync::mapping::MappingSet;
use b2bsync::source::ldap::LdapDirectory;
use b2bsync::source::{Directory, SearchScope};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: bench_ldap_read CONFIG")?;
    let config = Config::load(&path)?;
    let mappings =
        MappingSet::load_dir(&config.mappings.dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let directory = LdapDirectory::new(config.ldap_settings()?)?;
    // Bind and detect the flavour first: ldapsearch's figure includes its bind too, but the
    // comparison is about the paged read.
    directory.flavour().await?;
    let started = Instant::now();
    let mut entries = 0usize;
    for search in mappings.searches() {
        let scope = SearchScope {
            base_dns: vec![search.base_dn.clone()],
            filter: search.filter.clone(),
            attributes: search.attributes.clone(),
            protected_groups: search.protected_groups.clone(),
        };
        entries += directory.accounts(&scope).await?.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{{\"entries\":{entries},\"seconds\":{seconds:.3}}}");
    Ok(())
}
