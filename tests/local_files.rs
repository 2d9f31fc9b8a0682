//! The local files b2bsync opens, without servers: a state store written by a newer build is
//! refused before anything touches it, a restored store is made owner-only, and a full disk
//! gets its own help line.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;

use b2bsync::state::{Error, Store};

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// See: issue 10, finding 8 (a newer store was switched to WAL before it was refused).
#[test]
fn a_store_from_a_newer_build_is_refused_before_anything_touches_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b2bsync.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = DELETE; CREATE TABLE future (x); PRAGMA user_version = 99;",
        )
        .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let files = files_in(dir.path());
    assert_eq!(files, ["b2bsync.db"]);

    match Store::open(&path) {
        Err(e @ Error::NewerSchema { found: 99, .. }) => {
            assert!(e.help().contains("newer b2bsync"), "{}", e.help());
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a store of schema 99 was opened"),
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the refused file changed"
    );
    // No `-wal`/`-shm`: the file was never switched to WAL.
    assert_eq!(files_in(dir.path()), files);
}

#[test]
fn a_store_of_this_build_opens_again_after_the_version_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b2bsync.db");
    let store = Store::open(&path).unwrap();
    let run = store.begin_run("run").unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.runs().unwrap()[0].id, run);
    // A file that is not SQLite is a state-store error, not a refused newer version.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    assert!(matches!(Store::open(&junk), Err(Error::Sql(_))));
}

// See: issue 10, finding 8 (a store restored with `sqlite3 .backup` stayed 0644).
#[cfg(unix)]
#[test]
fn a_restored_store_and_its_wal_files_are_made_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original.db");
    drop(Store::open(&original).unwrap());
    let path = dir.path().join("b2bsync.db");
    {
        // A copy SQLite makes itself, as `sqlite3 original.db ".backup b2bsync.db"` does:
        // a new file with the process's default mode.
        let src = rusqlite::Connection::open(&original).unwrap();
        src.execute("VACUUM INTO ?1", [path.to_str().unwrap()])
            .unwrap();
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A stale `-shm` left readable by an earlier process.
    let shm = dir.path().join("b2bsync.db-shm");
    std::fs::write(&shm, []).unwrap();
    std::fs::set_permissions(&shm, std::fs::Permissions::from_mode(0o644)).unwrap();

    let store = Store::open(&path).unwrap();
    store.begin_run("run").unwrap();
    assert_eq!(mode(&path), 0o600);
    for suffix in ["-wal", "-shm"] {
        let side = dir.path().join(format!("b2bsync.db{suffix}"));
        assert!(side.exists(), "{suffix} missing while the store is open");
        assert_eq!(mode(&side), 0o600, "{suffix}");
    }
}

// See: issue 10, finding 8 (a full disk got "restore the state file from its backup").
#[test]
fn a_full_disk_gets_its_own_help_not_restore_from_backup() {
    let full = Error::Sql(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
        Some("database or disk is full".into()),
    ));
    let help = full.help();
    assert!(
        help.starts_with("the disk holding the state store ([state] path) is full; free space and run again; nothing was lost:"),
        "{help}"
    );
    assert!(!help.contains("restore"), "{help}");
    let corrupt = Error::Sql(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        None,
    ));
    assert!(corrupt.help().contains("restore the state file"));
}
