//! The state store: one SQLite file (WAL, `synchronous=FULL`, schema versioned with
//! `user_version`) holding each account's progress, the runs, the append-only journal of every
//! write (phase `started` before the call, `done` or `failed` after), the watermarks of
//! incremental reads and the snapshot of both sides those reads are applied to.
//! A lock file beside it stops two runs from overlapping. Nothing secret is ever stored.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::model::{Lifecycle, Progress};

mod index;
pub use index::IndexRow;

/// The schema version this build writes. 2: the snapshot table; 3: `accounts.sessions_revoked_at`;
/// 4: `runs.state_counts` (accounts per lifecycle state at the end of each run),
/// `accounts.accepted_at`, `accounts.account_name`, `accounts.upn` (how people name the
/// account), `accounts.invitation_mismatch` and `accounts.redeem_url`; 5: `accounts.gone_at`
/// (when the account left the directory's scope: deleted, moved out or filtered out); 6: the
/// snapshot's indexes and the unsettled accounts (`index`), filled by the next read.
const SCHEMA_VERSION: i64 = 6;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    key TEXT PRIMARY KEY,
    dn TEXT,
    kind TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    cloud_id TEXT,
    address TEXT,
    address_staged_at TEXT,
    invitation_id TEXT,
    invited_at TEXT,
    invitations_sent INTEGER NOT NULL DEFAULT 0,
    password_randomized_at TEXT,
    updated_at TEXT NOT NULL,
    sessions_revoked_at TEXT,
    accepted_at TEXT,
    account_name TEXT,
    upn TEXT,
    invitation_mismatch TEXT,
    redeem_url TEXT,
    gone_at TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    exit_code INTEGER,
    summary TEXT,
    state_counts TEXT
);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    action_key TEXT NOT NULL,
    action TEXT NOT NULL,
    account_key TEXT NOT NULL,
    phase TEXT NOT NULL CHECK (phase IN ('started', 'done', 'failed')),
    before_value TEXT,
    after_value TEXT,
    request_id TEXT,
    client_request_id TEXT,
    error TEXT,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_action ON journal (action_key);
CREATE INDEX IF NOT EXISTS journal_run ON journal (run_id);
CREATE TABLE IF NOT EXISTS watermarks (
    source TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot (
    side TEXT NOT NULL,
    key TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (side, key)
) WITHOUT ROWID;
";

/// A state-store failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the state store {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error(
        "the state store {path} has schema version {found}, newer than this b2bsync ({SCHEMA_VERSION})"
    )]
    NewerSchema { path: PathBuf, found: i64 },
    #[error("another b2bsync run holds the lock {path}")]
    Locked { path: PathBuf },
    #[error("state store error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state store holds an unreadable value: {0}")]
    Value(String),
}

impl Error {
    /// One line telling the admin what to do.
    pub fn help(&self) -> &'static str {
        match self {
            Error::Open { .. } => {
                "check [state] path and that the directory exists and is writable by this account"
            }
            Error::NewerSchema { .. } => {
                "a newer b2bsync wrote this file: run that version, or restore a backup"
            }
            Error::Locked { .. } => {
                "wait for the other run to finish; if none runs, the lock is released when its process exits"
            }
            Error::Sql(e) if disk_full(e) => DISK_FULL_HELP,
            Error::Sql(_) | Error::Value(_) => {
                "restore the state file from its backup (see docs/operations.md)"
            }
        }
    }
}

/// The help of a state store whose disk is full (SQLITE_FULL). SQLite rolled the failed
/// transaction back, so the file holds every step committed before it.
const DISK_FULL_HELP: &str = "the disk holding the state store ([state] path) is full; free space and run again; nothing was lost: the store keeps every step saved before the failure, and the next run settles any action it left unfinished";

/// Whether a SQLite error says the disk (or the file's quota) is full.
fn disk_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

/// One journal record, parsed: the stored text of each column is read into its type once,
/// here, and a value that does not parse is an [`Error::Value`] naming the row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    pub seq: i64,
    pub run_id: String,
    pub action_key: String,
    pub action: Action,
    pub account_key: String,
    pub phase: Phase,
    pub before: Option<Values>,
    pub after: Option<Values>,
    pub request_id: Option<String>,
    pub client_request_id: Option<String>,
    pub error: Option<String>,
    pub at: jiff::Timestamp,
}

/// The kind of a journaled action. Its text ([`Action::as_str`]) is the name the journal
/// stores: the plan operation's name (`plan::Op::name`), or that name after `rollback_` for
/// the undo of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    SetDirectoryMail,
    SetCloudAddress,
    Invite,
    Reinvite,
    RandomizePassword,
    RevokeSessions,
    SetUserType,
    RollbackSetDirectoryMail,
    RollbackSetCloudAddress,
    RollbackSetUserType,
}

impl Action {
    /// Every kind.
    pub const ALL: [Action; 10] = [
        Action::SetDirectoryMail,
        Action::SetCloudAddress,
        Action::Invite,
        Action::Reinvite,
        Action::RandomizePassword,
        Action::RevokeSessions,
        Action::SetUserType,
        Action::RollbackSetDirectoryMail,
        Action::RollbackSetCloudAddress,
        Action::RollbackSetUserType,
    ];

    /// The name the journal stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::SetDirectoryMail => "set_directory_mail",
            Action::SetCloudAddress => "set_cloud_address",
            Action::Invite => "invite",
            Action::Reinvite => "reinvite",
            Action::RandomizePassword => "randomize_password",
            Action::RevokeSessions => "revoke_sessions",
            Action::SetUserType => "set_user_type",
            Action::RollbackSetDirectoryMail => "rollback_set_directory_mail",
            Action::RollbackSetCloudAddress => "rollback_set_cloud_address",
            Action::RollbackSetUserType => "rollback_set_user_type",
        }
    }

    /// The kind a stored name stands for; `None` for a name this build never writes.
    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// The undo of this action, for the writes that have one.
    pub fn rollback(self) -> Option<Action> {
        match self {
            Action::SetDirectoryMail => Some(Action::RollbackSetDirectoryMail),
            Action::SetCloudAddress => Some(Action::RollbackSetCloudAddress),
            Action::SetUserType => Some(Action::RollbackSetUserType),
            _ => None,
        }
    }

    /// For an undo, the action it undoes.
    pub fn undoes(self) -> Option<Action> {
        match self {
            Action::RollbackSetDirectoryMail => Some(Action::SetDirectoryMail),
            Action::RollbackSetCloudAddress => Some(Action::SetCloudAddress),
            Action::RollbackSetUserType => Some(Action::SetUserType),
            _ => None,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A journal record's before- or after-value: what the action's target held before the
/// call, or what the call sets, and which entry or user it is. Stored as JSON with the keys
/// in this order and absent fields left out, exactly as earlier builds wrote it. For
/// `mail`, `otherMails` and `userType`, `Some(None)` is a stored `null` (the attribute had
/// no value, or the write does not touch it) and `None` a key the record does not have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Values {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub mail: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub other_mails: Option<Option<Vec<String>>>,
    /// Always `randomized` when present: the password itself is never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub user_type: Option<Option<String>>,
}

/// A key that is present, `null` or not: `Some(None)` for `null`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl Values {
    /// The `mail` value, when the record has one (not null).
    pub fn mail(&self) -> Option<&str> {
        self.mail.as_ref().and_then(|m| m.as_deref())
    }

    /// The `otherMails` value, when the record has one (not null).
    pub fn other_mails(&self) -> Option<&[String]> {
        self.other_mails.as_ref().and_then(|m| m.as_deref())
    }

    /// The `userType` value, when the record has one (not null).
    pub fn user_type(&self) -> Option<&str> {
        self.user_type.as_ref().and_then(|m| m.as_deref())
    }

    /// The stored text.
    pub fn to_json(&self) -> String {
        // Strings, string lists and a number: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    fn parse(text: &str) -> Result<Values, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// One run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    pub id: String,
    pub command: String,
    pub started_at: jiff::Timestamp,
    pub finished_at: Option<jiff::Timestamp>,
    pub exit_code: Option<i64>,
    pub summary: Option<String>,
    /// Accounts per lifecycle state when the run ended; `None` for a run that did not end
    /// or that a build before schema 4 recorded.
    pub state_counts: Option<StateCounts>,
}

/// Accounts per lifecycle state (`ready`, `invited`, ...; states without accounts left out),
/// all together and per partner domain (the domain of the staged external address, lower
/// case), as `runs.state_counts` keeps them at the end of each run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    pub all: BTreeMap<String, u64>,
    #[serde(default)]
    pub domains: BTreeMap<String, BTreeMap<String, u64>>,
}

/// One account row: its progress plus what the last plan said of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountRecord {
    pub key: String,
    pub dn: Option<String>,
    pub kind: Option<String>,
    pub reason: Option<String>,
    pub updated_at: jiff::Timestamp,
    pub progress: Progress,
    /// When a run last found the account gone from the directory's scope (deleted, moved
    /// out of the base DNs, or no longer matching the filter); `None` while it is in scope.
    /// Its progress stays as it was; nothing is written for it while it is gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gone_at: Option<jiff::Timestamp>,
}

impl AccountRecord {
    /// Where the account stands for reports: [`Lifecycle::Gone`] while it is gone, else its
    /// progress's state.
    pub fn state_now(&self) -> Lifecycle {
        if self.gone_at.is_some() {
            Lifecycle::Gone
        } else {
            self.progress.state
        }
    }
}

/// An invitation waiting for its partner, with the link to deliver (`invitations
/// --pending`). Deliberately not `Serialize`/`Debug`: the link is written only where an admin
/// asks for it.
pub struct PendingLink {
    pub key: String,
    /// How people name the account (its UPN, else its sAMAccountName), when known.
    pub name: Option<String>,
    pub dn: Option<String>,
    pub address: Option<String>,
    pub invited_at: Option<jiff::Timestamp>,
    pub redeem_url: String,
}

/// The open state store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// Creates `path` readable and writable by its owner only, if it does not exist yet.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    // On Windows the file inherits the ACL of its directory; docs/operations.md says to keep
    // the state directory readable by the service account only.
    options.open(path).map(|_| ())
}

/// Adds `definition`'s column to `table` when a store written by an older build lacks it
/// (`CREATE TABLE IF NOT EXISTS` leaves an existing table as it is).
fn add_column(conn: &Connection, table: &str, definition: &str) -> rusqlite::Result<()> {
    let column = definition.split_whitespace().next().unwrap_or(definition);
    let mut stmt = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    for name in names {
        if name? == column {
            return Ok(());
        }
    }
    conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {definition}"))
}

/// The `user_version` of an existing store, read without changing it (read-only connection:
/// no journal-mode switch, no `-wal` created for a file in rollback mode).
fn existing_version(path: &Path) -> rusqlite::Result<i64> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Makes an existing `path` owner-only (0600) when group or others may read or write it. A
/// file this account may not change (another owner) is left alone, with a warning.
fn make_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 == 0 {
            return;
        }
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => tracing::info!(
                path = %path.display(),
                was = format!("{mode:04o}"),
                "Made the state file owner-only (0600)."
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:04o}"),
                error = %e,
                help = format!("chmod 600 {}", path.display()),
                "The state file is readable by group or others and its mode cannot be changed."
            ),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
    }
}

impl Store {
    /// Opens (creating, owner-only) and migrates the store.
    ///
    /// A file written by a newer b2bsync (`user_version` above this build's) is refused before
    /// anything touches it: its version is read over a read-only connection first, so the
    /// refusal leaves its bytes and its journal mode alone. A file (or its `-wal`/`-shm`) that
    /// group or others may read, such as one restored with `sqlite3 .backup` under a 022
    /// umask, is made owner-only (0600) when this account may change its mode.
    pub fn open(path: &Path) -> Result<Store, Error> {
        let open_err = |reason: String| Error::Open {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| open_err(e.to_string()))?;
        }
        if path.exists() {
            let version = existing_version(path).map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                    Error::Sql(e)
                }
                _ => open_err(e.to_string()),
            })?;
            if version > SCHEMA_VERSION {
                return Err(Error::NewerSchema {
                    path: path.to_path_buf(),
                    found: version,
                });
            }
        }
        create_private(path).map_err(|e| open_err(e.to_string()))?;
        // Before SQLite opens it: it creates `-wal` and `-shm` with the database's mode.
        make_private(path);
        let conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            make_private(Path::new(&side));
        }
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            // Another process upgraded the file between the two reads.
            return Err(Error::NewerSchema {
                path: path.to_path_buf(),
                found: version,
            });
        }
        if version < SCHEMA_VERSION {
            conn.execute_batch(SCHEMA)?;
            add_column(&conn, "accounts", "sessions_revoked_at TEXT")?;
            add_column(&conn, "accounts", "accepted_at TEXT")?;
            add_column(&conn, "runs", "state_counts TEXT")?;
            add_column(&conn, "accounts", "account_name TEXT")?;
            add_column(&conn, "accounts", "upn TEXT")?;
            add_column(&conn, "accounts", "invitation_mismatch TEXT")?;
            add_column(&conn, "accounts", "redeem_url TEXT")?;
            add_column(&conn, "accounts", "gone_at TEXT")?;
            // After the columns its triggers and indexes name.
            conn.execute_batch(&index::with_count_expressions(index::SCHEMA))?;
            conn.execute_batch(&index::with_count_expressions(index::RECOUNT))?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every account's progress, keyed by account key.
    pub fn progress(&self) -> Result<BTreeMap<String, Progress>, Error> {
        Ok(self
            .accounts()?
            .into_iter()
            .map(|a| (a.key, a.progress))
            .collect())
    }

    /// Every account row, sorted by key.
    pub fn accounts(&self) -> Result<Vec<AccountRecord>, Error> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY key"
        ))?;
        let rows = stmt.query_map([], stored_account)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?.parse()?);
        }
        Ok(out)
    }

    /// One account row, when the store has it.
    pub fn account(&self, key: &str) -> Result<Option<AccountRecord>, Error> {
        let row = self
            .conn
            .prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE key = ?1"
            ))?
            .query_row(params![key], stored_account)
            .optional()?;
        row.map(StoredAccount::parse).transpose()
    }

    /// Moves an account's row and its journal records from the key the store remembers to
    /// its key now (see `plan::Carried`), in one transaction. A row already under `to` (an
    /// account with no progress yet) gives way to the remembered one.
    pub fn rekey(&mut self, moves: &[(&str, &str)]) -> Result<(), Error> {
        self.transaction(|s| {
            for (from, to) in moves {
                s.conn
                    .execute("DELETE FROM accounts WHERE key = ?1", params![to])?;
                // The new key is in scope: the progress it takes over is no longer gone.
                s.conn.execute(
                    "UPDATE accounts SET key = ?2, gone_at = NULL WHERE key = ?1",
                    params![from, to],
                )?;
                s.conn.execute(
                    "UPDATE journal SET account_key = ?2 WHERE account_key = ?1",
                    params![from, to],
                )?;
            }
            Ok(())
        })
    }

    /// The names of every account that has some, keyed by account key.
    pub fn names(&self) -> Result<BTreeMap<String, crate::model::Names>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT key, account_name, upn FROM accounts
             WHERE account_name IS NOT NULL OR upn IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                crate::model::Names {
                    account_name: r.get(1)?,
                    upn: r.get(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records the names of an account already saved (no row: nothing to name).
    pub fn save_names(&self, key: &str, names: &crate::model::Names) -> Result<(), Error> {
        self.conn
            .prepare_cached(
                "UPDATE accounts SET account_name = ?2, upn = ?3
                 WHERE key = ?1 AND (account_name IS NOT ?2 OR upn IS NOT ?3)",
            )?
            .execute(params![key, names.account_name, names.upn])?;
        Ok(())
    }

    /// Writes an account's progress and what the plan said of it.
    pub fn save_account(
        &self,
        key: &str,
        dn: Option<&str>,
        kind: Option<&str>,
        reason: Option<&str>,
        p: &Progress,
    ) -> Result<(), Error> {
        // A row that would not change is not written: `updated_at` is when the row last
        // changed, and a full run over a million settled accounts writes nothing here.
        self.conn.prepare_cached(
            "INSERT INTO accounts (key, dn, kind, state, reason, cloud_id, address, address_staged_at,
                 invitation_id, invited_at, invitations_sent, password_randomized_at, updated_at,
                 sessions_revoked_at, accepted_at, invitation_mismatch)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT (key) DO UPDATE SET dn = excluded.dn, kind = excluded.kind,
                 state = excluded.state, reason = excluded.reason, cloud_id = excluded.cloud_id,
                 address = excluded.address, address_staged_at = excluded.address_staged_at,
                 invitation_id = excluded.invitation_id, invited_at = excluded.invited_at,
                 invitations_sent = excluded.invitations_sent,
                 password_randomized_at = excluded.password_randomized_at,
                 updated_at = excluded.updated_at,
                 sessions_revoked_at = excluded.sessions_revoked_at,
                 accepted_at = excluded.accepted_at,
                 invitation_mismatch = excluded.invitation_mismatch
             WHERE dn IS NOT excluded.dn OR kind IS NOT excluded.kind
                 OR state IS NOT excluded.state OR reason IS NOT excluded.reason
                 OR cloud_id IS NOT excluded.cloud_id OR address IS NOT excluded.address
                 OR address_staged_at IS NOT excluded.address_staged_at
                 OR invitation_id IS NOT excluded.invitation_id
                 OR invited_at IS NOT excluded.invited_at
                 OR invitations_sent IS NOT excluded.invitations_sent
                 OR password_randomized_at IS NOT excluded.password_randomized_at
                 OR sessions_revoked_at IS NOT excluded.sessions_revoked_at
                 OR accepted_at IS NOT excluded.accepted_at
                 OR invitation_mismatch IS NOT excluded.invitation_mismatch",
        )?.execute(params![
                key,
                dn,
                kind,
                p.state.as_str(),
                reason,
                p.cloud_id,
                p.address,
                p.address_staged_at.map(|t| t.to_string()),
                p.invitation_id,
                p.invited_at.map(|t| t.to_string()),
                p.invitations_sent,
                p.password_randomized_at.map(|t| t.to_string()),
                now(),
                p.sessions_revoked_at.map(|t| t.to_string()),
                p.accepted_at.map(|t| t.to_string()),
                p.invitation_mismatch
            ],
        )?;
        Ok(())
    }

    /// Keeps the redeem link of the account's last invitation (an account row must exist).
    /// The link is as sensitive as a one-time password: it stays in this owner-only file.
    pub fn set_redeem_url(&self, key: &str, url: &str) -> Result<(), Error> {
        self.conn.execute(
            "UPDATE accounts SET redeem_url = ?2 WHERE key = ?1",
            params![key, url],
        )?;
        Ok(())
    }

    /// The accounts invited and not accepted yet that have a redeem link, sorted by key.
    pub fn pending_links(&self) -> Result<Vec<PendingLink>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT key, dn, address, invited_at, redeem_url, coalesce(upn, account_name)
             FROM accounts WHERE state = 'invited' AND redeem_url IS NOT NULL ORDER BY key",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (key, dn, address, invited_at, redeem_url, name) = row?;
            let invited_at = invited_at
                .map(|t| time(&t, &format!("accounts row {key}, invited_at")))
                .transpose()?;
            out.push(PendingLink {
                key,
                name,
                dn,
                address,
                invited_at,
                redeem_url,
            });
        }
        Ok(out)
    }

    /// Forgets an account's invitation mismatch (an admin checked it), so that the next
    /// run decides it afresh. `false`: no account with this key had one.
    pub fn clear_invitation_mismatch(&self, key: &str) -> Result<bool, Error> {
        let changed = self.conn.execute(
            "UPDATE accounts SET invitation_mismatch = NULL, reason = NULL
             WHERE key = ?1 AND invitation_mismatch IS NOT NULL",
            params![key],
        )?;
        Ok(changed > 0)
    }

    /// Runs `f` in one transaction (used to save a whole plan's outcome atomically).
    pub fn transaction<T>(
        &mut self,
        f: impl FnOnce(&Store) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Records the start of a run and returns its id (a UUIDv7: sortable by time).
    pub fn begin_run(&self, command: &str) -> Result<String, Error> {
        let id = uuid::Uuid::now_v7().to_string();
        self.conn.execute(
            "INSERT INTO runs (id, command, started_at) VALUES (?1, ?2, ?3)",
            params![id, command, now()],
        )?;
        Ok(id)
    }

    /// Records the end of a run, with the accounts per lifecycle state at that moment (the
    /// progress chart of `status` draws one point per run from them).
    pub fn finish_run(&self, id: &str, exit_code: i64, summary: &str) -> Result<(), Error> {
        let counts = serde_json::to_string(&self.state_counts()?)
            .map_err(|e| Error::Value(format!("runs row {id}, state_counts: {e}")))?;
        self.conn.execute(
            "UPDATE runs SET finished_at = ?2, exit_code = ?3, summary = ?4, state_counts = ?5
             WHERE id = ?1",
            params![id, now(), exit_code, summary, counts],
        )?;
        Ok(())
    }

    /// Records which accounts a run found in the directory's scope (`present`, by key): an
    /// account row not among them is gone from `now` on (its earlier `gone_at` kept), one
    /// among them is no longer gone. Returns how many became gone and how many came back.
    pub fn mark_gone(
        &mut self,
        present: &std::collections::HashSet<&str>,
        now: jiff::Timestamp,
    ) -> Result<(usize, usize), Error> {
        self.transaction(|s| {
            let rows: Vec<(String, bool)> = {
                let mut stmt = s
                    .conn
                    .prepare("SELECT key, gone_at IS NOT NULL FROM accounts")?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?
            };
            let (mut left, mut back) = (0, 0);
            for (key, gone) in rows {
                match (present.contains(key.as_str()), gone) {
                    (false, false) => {
                        s.conn.execute(
                            "UPDATE accounts SET gone_at = ?2 WHERE key = ?1",
                            params![key, now.to_string()],
                        )?;
                        left += 1;
                    }
                    (true, true) => {
                        s.conn.execute(
                            "UPDATE accounts SET gone_at = NULL WHERE key = ?1",
                            params![key],
                        )?;
                        back += 1;
                    }
                    _ => {}
                }
            }
            Ok((left, back))
        })
    }

    /// Accounts per lifecycle state now (`gone` for an account that is), all together and
    /// per partner domain.
    pub fn state_counts(&self) -> Result<StateCounts, Error> {
        // Kept by triggers on `accounts` (state::index): no account is read.
        let mut stmt = self
            .conn
            .prepare("SELECT state, domain, n FROM account_counts WHERE n > 0")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut counts = StateCounts::default();
        for row in rows {
            let (state, domain, n) = row?;
            let n = u64::try_from(n).unwrap_or(0);
            *counts.all.entry(state.clone()).or_default() += n;
            if let Some(domain) = domain.filter(|d| !d.is_empty()) {
                *counts
                    .domains
                    .entry(domain)
                    .or_default()
                    .entry(state)
                    .or_default() += n;
            }
        }
        Ok(counts)
    }

    /// All runs, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT id, command, started_at, finished_at, exit_code, summary, state_counts
             FROM runs ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get::<_, Option<String>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, command, started_at, finished_at, exit_code, summary, counts) = row?;
            let state_counts = counts
                .map(|c| {
                    serde_json::from_str(&c).map_err(|e| {
                        Error::Value(format!(
                            "runs row {id}, state_counts: `{c}` does not parse: {e}"
                        ))
                    })
                })
                .transpose()?;
            let at = |column: &str, text: &str| time(text, &format!("runs row {id}, {column}"));
            out.push(RunRecord {
                started_at: at("started_at", &started_at)?,
                finished_at: finished_at.map(|t| at("finished_at", &t)).transpose()?,
                id,
                command,
                exit_code,
                summary,
                state_counts,
            });
        }
        Ok(out)
    }

    /// Appends a journal record. `started` goes in (and is synced) before the remote call.
    #[allow(clippy::too_many_arguments)]
    pub fn journal(
        &self,
        run_id: &str,
        action_key: &str,
        action: Action,
        account_key: &str,
        phase: Phase,
        before: Option<&Values>,
        after: Option<&Values>,
        request_id: Option<&str>,
        client_request_id: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO journal (run_id, action_key, action, account_key, phase, before_value,
                 after_value, request_id, client_request_id, error, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                run_id,
                action_key,
                action.as_str(),
                account_key,
                phase.as_str(),
                before.map(Values::to_json),
                after.map(Values::to_json),
                request_id,
                client_request_id,
                error,
                now()
            ],
        )?;
        Ok(())
    }

    /// Journal records, oldest first, of one run or all.
    pub fn journal_entries(&self, run_id: Option<&str>) -> Result<Vec<JournalEntry>, Error> {
        self.select_journal("?1 IS NULL OR run_id = ?1", params![run_id])
    }

    /// Journal records, oldest first, of one account (its timeline, for `explain`).
    pub fn account_journal(&self, account_key: &str) -> Result<Vec<JournalEntry>, Error> {
        self.select_journal("account_key = ?1", params![account_key])
    }

    /// The first journal record of `action_key` after `seq`. For an action a run left
    /// `started`, that is the verdict the reconciliation of a later run recorded (nothing
    /// else writes that action key before it is settled).
    pub fn next_record(&self, action_key: &str, seq: i64) -> Result<Option<JournalEntry>, Error> {
        Ok(self
            .select_journal(
                "seq = (SELECT min(seq) FROM journal WHERE action_key = ?1 AND seq > ?2)",
                params![action_key, seq],
            )?
            .into_iter()
            .next())
    }

    /// Journal records matching `condition` (an SQL expression over `params`), oldest first.
    fn select_journal(
        &self,
        condition: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<JournalEntry>, Error> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT seq, run_id, action_key, action, account_key, phase, before_value, after_value,
                    request_id, client_request_id, error, at
             FROM journal WHERE ({condition}) ORDER BY seq"
        ))?;
        let rows = stmt.query_map(params, |r| {
            Ok(StoredRecord {
                seq: r.get(0)?,
                run_id: r.get(1)?,
                action_key: r.get(2)?,
                action: r.get(3)?,
                account_key: r.get(4)?,
                phase: r.get(5)?,
                before: r.get(6)?,
                after: r.get(7)?,
                request_id: r.get(8)?,
                client_request_id: r.get(9)?,
                error: r.get(10)?,
                at: r.get(11)?,
            })
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?.parse()?);
        }
        Ok(out)
    }

    /// Actions journaled as `started` whose last record is still `started`: a run stopped in
    /// the middle of the call. They must be reconciled by reading the world before any retry.
    pub fn unfinished(&self) -> Result<Vec<JournalEntry>, Error> {
        Ok(self
            .journal_entries(None)?
            .into_iter()
            .fold(BTreeMap::<String, JournalEntry>::new(), |mut last, e| {
                last.insert(e.action_key.clone(), e);
                last
            })
            .into_values()
            .filter(|e| e.phase == Phase::Started)
            .collect())
    }

    /// A watermark by source name.
    pub fn watermark(&self, source: &str) -> Result<Option<String>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM watermarks WHERE source = ?1",
                params![source],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Sets a watermark.
    pub fn set_watermark(&self, source: &str, value: &str) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO watermarks (source, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (source) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![source, value, now()],
        )?;
        Ok(())
    }

    /// Every watermark: source name and value, by name.
    pub fn watermarks(&self) -> Result<Vec<(String, String)>, Error> {
        let mut statement = self
            .conn
            .prepare("SELECT source, value FROM watermarks ORDER BY source")?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// How many rows one side of the snapshot holds.
    /// Whether one side of the snapshot holds any row (without counting them).
    pub fn snapshot_has_rows(&self, side: &str) -> Result<bool, Error> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM snapshot WHERE side = ?1)",
            params![side],
            |r| r.get(0),
        )?)
    }

    pub fn snapshot_len(&self, side: &str) -> Result<usize, Error> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM snapshot WHERE side = ?1",
            params![side],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Forgets a watermark (the next read of that source is a full one).
    pub fn clear_watermark(&self, source: &str) -> Result<(), Error> {
        self.conn
            .execute("DELETE FROM watermarks WHERE source = ?1", params![source])?;
        Ok(())
    }

    /// Every row of one side of the snapshot, decoded, in key order.
    pub fn snapshot<T: serde::de::DeserializeOwned>(
        &self,
        side: &str,
    ) -> Result<Vec<(String, T)>, Error> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT key, data FROM snapshot WHERE side = ?1 ORDER BY key")?;
        let rows = statement.query_map(params![side], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (key, data) = row?;
            let value = serde_json::from_str(&data).map_err(|e| {
                Error::Value(format!("snapshot row {side}/{key} does not decode: {e}"))
            })?;
            out.push((key, value));
        }
        Ok(out)
    }

    /// One snapshot row, decoded, when present.
    pub fn snapshot_row<T: serde::de::DeserializeOwned>(
        &self,
        side: &str,
        key: &str,
    ) -> Result<Option<T>, Error> {
        let data: Option<String> = self
            .conn
            .query_row(
                "SELECT data FROM snapshot WHERE side = ?1 AND key = ?2",
                params![side, key],
                |r| r.get(0),
            )
            .optional()?;
        data.map(|d| {
            serde_json::from_str(&d).map_err(|e| {
                Error::Value(format!("snapshot row {side}/{key} does not decode: {e}"))
            })
        })
        .transpose()
    }

    /// Drops every row of one side of the snapshot (before a full read replaces it).
    pub fn clear_snapshot(&self, side: &str) -> Result<(), Error> {
        self.conn
            .execute("DELETE FROM snapshot WHERE side = ?1", params![side])?;
        Ok(())
    }

    /// Writes (inserts or replaces) one snapshot row.
    pub fn put_snapshot<T: Serialize>(
        &self,
        side: &str,
        key: &str,
        value: &T,
    ) -> Result<(), Error> {
        self.write_snapshot_row(side, key, value)?;
        Ok(())
    }

    /// Writes one snapshot row unless it holds this value already; whether it wrote.
    fn write_snapshot_row<T: Serialize>(
        &self,
        side: &str,
        key: &str,
        value: &T,
    ) -> Result<bool, Error> {
        let data = serde_json::to_string(value)
            .map_err(|e| Error::Value(format!("snapshot row {side}/{key} does not encode: {e}")))?;
        let changed = self
            .conn
            .prepare_cached(
                "INSERT INTO snapshot (side, key, data) VALUES (?1, ?2, ?3)
                 ON CONFLICT (side, key) DO UPDATE SET data = excluded.data
                 WHERE data IS NOT excluded.data",
            )?
            .execute(params![side, key, data])?;
        Ok(changed > 0)
    }

    /// Makes one side of the snapshot hold exactly `rows` (after a full read), writing only
    /// the rows that differ from what it holds: a full read that found nothing new writes
    /// nothing. The keys written (new or changed) and the keys deleted, each sorted.
    pub fn replace_snapshot<'a, T: Serialize + 'a>(
        &self,
        side: &str,
        rows: impl IntoIterator<Item = (String, &'a T)>,
    ) -> Result<(Vec<String>, Vec<String>), Error> {
        // The keys read go where a read compared page by page keeps them (SQLite's temp
        // store, not this process's memory); `not_read` gives the rows to delete.
        self.compare_begin(side)?;
        // In key order: the B-tree is walked once, front to back, instead of at random.
        let mut rows: Vec<(String, &T)> = rows.into_iter().collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut written = Vec::new();
        {
            let mut read = self.conn.prepare_cached(KEEP_KEY_READ)?;
            for (key, value) in rows {
                read.execute(params![side, key])?;
                if self.write_snapshot_row(side, &key, value)? {
                    written.push(key);
                }
            }
        }
        written.dedup();
        let (deleted, _) = self.not_read(side)?;
        for key in &deleted {
            self.delete_snapshot(side, key)?;
        }
        Ok((written, deleted))
    }

    /// Starts comparing a full read of one side with its snapshot, page by page
    /// ([`Store::compare_page`]): the keys read are kept in SQLite's temp store (a file, not
    /// this process's memory) until [`Store::not_read`] gives the stored keys the read did
    /// not find. Nothing of the snapshot changes.
    pub fn compare_begin(&self, side: &str) -> Result<(), Error> {
        self.conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS keys_read (side TEXT NOT NULL, key TEXT NOT NULL);
             DROP INDEX IF EXISTS temp.keys_read_by_key;",
        )?;
        self.conn
            .prepare_cached("DELETE FROM temp.keys_read WHERE side = ?1")?
            .execute(params![side])?;
        Ok(())
    }

    /// One page of a full read of one side (after [`Store::compare_begin`]): the rows that
    /// differ from the stored ones (new or changed). Each row is compared as the text it
    /// would be stored as, with one lookup of its key; its key is kept for
    /// [`Store::not_read`].
    pub fn compare_page<T: Serialize>(
        &self,
        side: &str,
        rows: impl IntoIterator<Item = (String, T)>,
    ) -> Result<Vec<(String, T)>, Error> {
        let mut differ = Vec::new();
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut same =
                tx.prepare_cached("SELECT data = ?3 FROM snapshot WHERE side = ?1 AND key = ?2")?;
            let mut read = tx.prepare_cached(KEEP_KEY_READ)?;
            for (key, value) in rows {
                let data = serde_json::to_string(&value).map_err(|e| {
                    Error::Value(format!("snapshot row {side}/{key} does not encode: {e}"))
                })?;
                let equal: Option<bool> = same
                    .query_row(params![side, key, data], |r| r.get(0))
                    .optional()?;
                read.execute(params![side, key])?;
                if equal != Some(true) {
                    differ.push((key, value));
                }
            }
        }
        tx.commit()?;
        Ok(differ)
    }

    /// The stored keys of one side that the full read compared page by page did not find,
    /// in key order, and how many keys it read; forgets the keys read.
    pub fn not_read(&self, side: &str) -> Result<(Vec<String>, usize), Error> {
        // Indexed once, after the read: a sort, instead of a B-tree grown at random.
        self.conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS temp.keys_read_by_key ON keys_read (side, key);",
        )?;
        let read: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM temp.keys_read WHERE side = ?1")?
            .query_row(params![side], |r| r.get(0))?;
        let gone: Vec<String> = self
            .conn
            .prepare_cached(
                "SELECT key FROM snapshot n WHERE side = ?1 AND NOT EXISTS
                     (SELECT 1 FROM temp.keys_read r WHERE r.side = ?1 AND r.key = n.key)
                 ORDER BY key",
            )?
            .query_map(params![side], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        self.conn
            .execute_batch("DROP INDEX IF EXISTS temp.keys_read_by_key;")?;
        self.conn
            .prepare_cached("DELETE FROM temp.keys_read WHERE side = ?1")?
            .execute(params![side])?;
        Ok((gone, usize::try_from(read).unwrap_or(0)))
    }

    /// Removes one snapshot row, if present.
    pub fn delete_snapshot(&self, side: &str, key: &str) -> Result<(), Error> {
        self.conn
            .prepare_cached("DELETE FROM snapshot WHERE side = ?1 AND key = ?2")?
            .execute(params![side, key])?;
        Ok(())
    }
}

/// Keeps a key a full read found, for [`Store::not_read`] (after [`Store::compare_begin`]).
const KEEP_KEY_READ: &str = "INSERT INTO temp.keys_read (side, key) VALUES (?1, ?2)";

/// The columns [`stored_account`] reads, in its order.
const ACCOUNT_COLUMNS: &str = "key, dn, kind, state, reason, cloud_id, address, address_staged_at, invitation_id, invited_at, invitations_sent, password_randomized_at, updated_at, sessions_revoked_at, accepted_at, invitation_mismatch, gone_at";

/// An accounts row as selected with [`ACCOUNT_COLUMNS`].
fn stored_account(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredAccount> {
    Ok(StoredAccount {
        key: r.get(0)?,
        dn: r.get(1)?,
        kind: r.get(2)?,
        state: r.get(3)?,
        reason: r.get(4)?,
        cloud_id: r.get(5)?,
        address: r.get(6)?,
        address_staged_at: r.get(7)?,
        invitation_id: r.get(8)?,
        invited_at: r.get(9)?,
        invitations_sent: r.get(10)?,
        password_randomized_at: r.get(11)?,
        updated_at: r.get(12)?,
        sessions_revoked_at: r.get(13)?,
        accepted_at: r.get(14)?,
        invitation_mismatch: r.get(15)?,
        gone_at: r.get(16)?,
    })
}

/// An accounts row as stored, before its columns are parsed.
struct StoredAccount {
    key: String,
    dn: Option<String>,
    kind: Option<String>,
    state: String,
    reason: Option<String>,
    cloud_id: Option<String>,
    address: Option<String>,
    address_staged_at: Option<String>,
    invitation_id: Option<String>,
    invited_at: Option<String>,
    invitations_sent: u32,
    password_randomized_at: Option<String>,
    updated_at: String,
    sessions_revoked_at: Option<String>,
    accepted_at: Option<String>,
    invitation_mismatch: Option<String>,
    gone_at: Option<String>,
}

impl StoredAccount {
    fn parse(self) -> Result<AccountRecord, Error> {
        let key = self.key;
        let at = |column: &str, text: Option<&str>| {
            text.map(|t| time(t, &format!("accounts row {key}, {column}")))
                .transpose()
        };
        let progress = Progress {
            state: parse_state(&self.state)?,
            cloud_id: self.cloud_id,
            address: self.address,
            address_staged_at: at("address_staged_at", self.address_staged_at.as_deref())?,
            invitation_id: self.invitation_id,
            invited_at: at("invited_at", self.invited_at.as_deref())?,
            invitations_sent: self.invitations_sent,
            password_randomized_at: at(
                "password_randomized_at",
                self.password_randomized_at.as_deref(),
            )?,
            sessions_revoked_at: at("sessions_revoked_at", self.sessions_revoked_at.as_deref())?,
            accepted_at: at("accepted_at", self.accepted_at.as_deref())?,
            invitation_mismatch: self.invitation_mismatch,
        };
        let updated_at = time(&self.updated_at, &format!("accounts row {key}, updated_at"))?;
        let gone_at = at("gone_at", self.gone_at.as_deref())?;
        Ok(AccountRecord {
            key,
            dn: self.dn,
            kind: self.kind,
            reason: self.reason,
            updated_at,
            progress,
            gone_at,
        })
    }
}

/// A journal row as stored, before its columns are parsed.
struct StoredRecord {
    seq: i64,
    run_id: String,
    action_key: String,
    action: String,
    account_key: String,
    phase: String,
    before: Option<String>,
    after: Option<String>,
    request_id: Option<String>,
    client_request_id: Option<String>,
    error: Option<String>,
    at: String,
}

impl StoredRecord {
    fn parse(self) -> Result<JournalEntry, Error> {
        let seq = self.seq;
        let bad = |column: &str, text: &str, why: &str| {
            Error::Value(format!(
                "journal row {seq} (action {}): {column} `{text}` {why}",
                self.action_key
            ))
        };
        let action = Action::parse(&self.action)
            .ok_or_else(|| bad("action", &self.action, "is not an action b2bsync knows"))?;
        let phase = Phase::parse(&self.phase)
            .ok_or_else(|| bad("phase", &self.phase, "is not started, done or failed"))?;
        let values = |column: &str, text: Option<&str>| {
            text.map(|t| {
                Values::parse(t).map_err(|e| bad(column, t, &format!("does not decode: {e}")))
            })
            .transpose()
        };
        let before = values("before_value", self.before.as_deref())?;
        let after = values("after_value", self.after.as_deref())?;
        let at = self
            .at
            .parse::<jiff::Timestamp>()
            .map_err(|e| bad("at", &self.at, &format!("is not a time: {e}")))?;
        Ok(JournalEntry {
            seq,
            run_id: self.run_id,
            action_key: self.action_key,
            action,
            account_key: self.account_key,
            phase,
            before,
            after,
            request_id: self.request_id,
            client_request_id: self.client_request_id,
            error: self.error,
            at,
        })
    }
}

/// A stored time (RFC 3339, as [`now`] writes it); `row` names where it was read.
fn time(text: &str, row: &str) -> Result<jiff::Timestamp, Error> {
    text.parse()
        .map_err(|e| Error::Value(format!("{row}: `{text}` is not a time: {e}")))
}

fn parse_state(s: &str) -> Result<Lifecycle, Error> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| Error::Value(format!("unknown lifecycle state `{s}`")))
}

/// A journal phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Started,
    Done,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Started => "started",
            Phase::Done => "done",
            Phase::Failed => "failed",
        }
    }

    /// The phase a stored name stands for.
    pub fn parse(text: &str) -> Option<Phase> {
        [Phase::Started, Phase::Done, Phase::Failed]
            .into_iter()
            .find(|p| p.as_str() == text)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The single-instance lock: held while a run may write, released when dropped or when the
/// process exits (even by `kill -9`), so a crash never leaves a stale lock.
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock file beside the store (`<state>.lock`) without waiting.
    pub fn acquire(state_path: &Path) -> Result<RunLock, Error> {
        let mut name = state_path.as_os_str().to_os_string();
        name.push(".lock");
        let path = PathBuf::from(name);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::Open {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
        create_private(&path).map_err(|e| Error::Open {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Error::Open {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::Open {
                path,
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = Store::open(&dir.path().join("state.db")).unwrap_or_else(|e| panic!("{e}"));
        (dir, s)
    }

    /// Journals `action` under `key` with no values.
    fn bare(s: &Store, run: &str, key: &str, action: Action, phase: Phase) {
        s.journal(
            run, key, action, "acct", phase, None, None, None, None, None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn progress_round_trips() {
        let (_d, s) = store();
        let p = Progress {
            state: Lifecycle::Invited,
            cloud_id: Some("u1".into()),
            invitation_id: Some("i1".into()),
            invitations_sent: 1,
            ..Progress::default()
        };
        s.save_account("k1", Some("CN=x"), Some("synced"), None, &p)
            .unwrap_or_else(|e| panic!("{e}"));
        let all = s.progress().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.get("k1"), Some(&p));
    }

    #[test]
    fn unfinished_actions_are_found() {
        let (_d, s) = store();
        let run = s.begin_run("run").unwrap_or_else(|e| panic!("{e}"));
        let j = |key: &str, phase| bare(&s, &run, key, Action::Invite, phase);
        j("a", Phase::Started);
        j("a", Phase::Done);
        j("b", Phase::Started);
        j("c", Phase::Started);
        j("c", Phase::Failed);
        let open: Vec<String> = s
            .unfinished()
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|e| e.action_key)
            .collect();
        assert_eq!(open, vec!["b".to_string()]);
    }

    #[test]
    fn a_stored_value_that_does_not_parse_is_an_error_naming_the_row() {
        let cases = [
            ("action", "send_fax", "action `send_fax`"),
            ("phase", "maybe", "phase `maybe`"),
            ("at", "yesterday", "at `yesterday`"),
            ("after_value", "{\"colour\":\"red\"}", "after_value"),
            ("before_value", "not json", "before_value `not json`"),
        ];
        for (column, text, named) in cases {
            let (_d, s) = store();
            bare(&s, "run-1", "acct/0/invite", Action::Invite, Phase::Started);
            if column == "phase" {
                // The schema's CHECK keeps other phases out; an older or edited file may not.
                s.conn
                    .execute_batch("PRAGMA ignore_check_constraints = ON")
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            s.conn
                .execute(&format!("UPDATE journal SET {column} = ?1"), [text])
                .unwrap_or_else(|e| panic!("{e}"));
            let err = s.journal_entries(None).expect_err(column).to_string();
            assert!(
                err.contains("journal row 1") && err.contains(named),
                "{column}: {err}"
            );
        }
    }

    #[test]
    fn stored_names_and_times_read_back_as_written() {
        let (_d, s) = store();
        let run = s.begin_run("run").unwrap_or_else(|e| panic!("{e}"));
        for (n, action) in Action::ALL.into_iter().enumerate() {
            assert_eq!(Action::parse(action.as_str()), Some(action));
            bare(&s, &run, &format!("k{n}"), action, Phase::Done);
        }
        s.finish_run(&run, 0, "ok")
            .unwrap_or_else(|e| panic!("{e}"));
        let entries = s
            .journal_entries(Some(&run))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            entries.iter().map(|e| e.action).collect::<Vec<_>>(),
            Action::ALL.to_vec()
        );
        let stored: Vec<(String, String, String)> = s
            .conn
            .prepare("SELECT action, phase, at FROM journal ORDER BY seq")
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .unwrap_or_else(|e| panic!("{e}"));
        for (entry, (action, phase, at)) in entries.iter().zip(stored) {
            assert_eq!(
                (
                    entry.action.to_string(),
                    entry.phase.to_string(),
                    entry.at.to_string()
                ),
                (action, phase, at)
            );
        }
        let runs = s.runs().unwrap_or_else(|e| panic!("{e}"));
        assert!(runs[0].finished_at.is_some_and(|f| f >= runs[0].started_at));
    }

    /// The progress times as the store holds them, in column order.
    fn stored_times(s: &Store, key: &str) -> [Option<String>; 3] {
        s.conn
            .query_row(
                "SELECT address_staged_at, invited_at, password_randomized_at
                 FROM accounts WHERE key = ?1",
                [key],
                |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?]),
            )
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_progress_time_that_does_not_parse_is_an_error_naming_the_row() {
        for column in ["address_staged_at", "invited_at", "password_randomized_at"] {
            let (_d, s) = store();
            s.save_account("k1", None, None, None, &Progress::default())
                .unwrap_or_else(|e| panic!("{e}"));
            s.conn
                .execute(&format!("UPDATE accounts SET {column} = 'last week'"), [])
                .unwrap_or_else(|e| panic!("{e}"));
            let err = s.progress().expect_err(column);
            assert!(matches!(err, Error::Value(_)), "{column}: {err:?}");
            let err = err.to_string();
            assert!(
                err.contains(&format!("accounts row k1, {column}")) && err.contains("`last week`"),
                "{column}: {err}"
            );
        }
    }

    #[test]
    fn progress_times_written_as_text_read_back_to_the_same_instant() {
        let (_d, s) = store();
        // Text as the store held it before `Progress` was typed: `Timestamp::to_string()`,
        // which writes as many fraction digits as the instant needs.
        let now = jiff::Timestamp::now().to_string();
        let texts = [
            now.as_str(),
            "2026-11-23T17:20:11Z",
            "2026-11-23T17:20:11.5Z",
            "2026-11-23T17:20:11.123456789Z",
        ];
        for text in texts {
            s.save_account("old", None, None, None, &Progress::default())
                .unwrap_or_else(|e| panic!("{e}"));
            s.conn
                .execute(
                    "UPDATE accounts SET address_staged_at = ?1, invited_at = ?1,
                         password_randomized_at = ?1",
                    [text],
                )
                .unwrap_or_else(|e| panic!("{e}"));
            let instant: jiff::Timestamp = text.parse().unwrap_or_else(|e| panic!("{e}"));
            let p = s.progress().unwrap_or_else(|e| panic!("{e}"))["old"].clone();
            assert_eq!(
                [p.address_staged_at, p.invited_at, p.password_randomized_at],
                [Some(instant); 3],
                "{text}"
            );
            // Written back, the row holds the same text.
            s.save_account("old", None, None, None, &p)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                stored_times(&s, "old"),
                [
                    Some(text.to_string()),
                    Some(text.to_string()),
                    Some(text.to_string())
                ]
            );
        }
    }

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let (d, _s) = store();
        let path = d.path().join("state.db");
        let lock = RunLock::acquire(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(RunLock::acquire(&path), Err(Error::Locked { .. })));
        drop(lock);
        assert!(RunLock::acquire(&path).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn store_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let (d, _s) = store();
        let mode = std::fs::metadata(d.path().join("state.db"))
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }

    #[test]
    fn watermarks_round_trip() {
        let (_d, s) = store();
        assert_eq!(s.watermark("graph").unwrap_or_else(|e| panic!("{e}")), None);
        s.set_watermark("graph", "t1")
            .unwrap_or_else(|e| panic!("{e}"));
        s.set_watermark("graph", "t2")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.watermark("graph")
                .unwrap_or_else(|e| panic!("{e}"))
                .as_deref(),
            Some("t2")
        );
    }

    #[test]
    fn a_full_read_writes_only_the_snapshot_rows_that_differ() {
        let (_d, s) = store();
        let v = |x: &str| vec![x.to_string()];
        let (one, two, three) = (v("one"), v("two"), v("three"));
        let replace = |rows: Vec<(&str, &Vec<String>)>| {
            s.replace_snapshot("cloud", rows.into_iter().map(|(k, v)| (k.to_string(), v)))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        s.put_snapshot("other", "a", &one)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            replace(vec![("a", &one), ("b", &two)]),
            (vec!["a".to_string(), "b".to_string()], vec![])
        );
        // The same rows again: no row written (the upsert changed none).
        assert_eq!(replace(vec![("b", &two), ("a", &one)]), (vec![], vec![]));
        // One changed, one gone, one new; another side untouched.
        assert_eq!(
            replace(vec![("a", &three), ("c", &one)]),
            (
                vec!["a".to_string(), "c".to_string()],
                vec!["b".to_string()]
            )
        );
        let rows: Vec<(String, Vec<String>)> =
            s.snapshot("cloud").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rows,
            vec![
                ("a".to_string(), three.clone()),
                ("c".to_string(), one.clone())
            ]
        );
        let other: Vec<(String, Vec<String>)> =
            s.snapshot("other").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(other, vec![("a".to_string(), one.clone())]);
    }

    #[test]
    fn a_full_read_compared_page_by_page_gives_what_differs_and_changes_nothing() {
        let (_d, s) = store();
        let v = |x: &str| vec![x.to_string()];
        let (one, two, three) = (v("one"), v("two"), v("three"));
        for (key, value) in [("a", &one), ("b", &two)] {
            s.put_snapshot("cloud", key, value)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        s.put_snapshot("other", "z", &one)
            .unwrap_or_else(|e| panic!("{e}"));
        let compare = |pages: Vec<Vec<(&str, &Vec<String>)>>| {
            s.compare_begin("cloud").unwrap_or_else(|e| panic!("{e}"));
            // Another side compared meanwhile is its own.
            s.compare_begin("other").unwrap_or_else(|e| panic!("{e}"));
            s.compare_page("other", [("z".to_string(), &one)])
                .unwrap_or_else(|e| panic!("{e}"));
            let mut differ = Vec::new();
            for page in pages {
                let rows = page.into_iter().map(|(k, v)| (k.to_string(), v.clone()));
                differ.extend(
                    s.compare_page("cloud", rows)
                        .unwrap_or_else(|e| panic!("{e}")),
                );
            }
            let (gone, read) = s.not_read("cloud").unwrap_or_else(|e| panic!("{e}"));
            (differ, gone, read)
        };
        // The same rows, in two pages and another order: nothing differs.
        assert_eq!(
            compare(vec![vec![("b", &two)], vec![("a", &one)]]),
            (vec![], vec![], 2)
        );
        // One changed, one gone, one new.
        assert_eq!(
            compare(vec![vec![("c", &one)], vec![("a", &three)]]),
            (
                vec![
                    ("c".to_string(), one.clone()),
                    ("a".to_string(), three.clone())
                ],
                vec!["b".to_string()],
                2
            )
        );
        // Comparing changed no snapshot row, and each read starts with no key read.
        let rows: Vec<(String, Vec<String>)> =
            s.snapshot("cloud").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rows,
            vec![
                ("a".to_string(), one.clone()),
                ("b".to_string(), two.clone())
            ]
        );
        assert_eq!(
            compare(vec![]),
            (vec![], vec!["a".to_string(), "b".to_string()], 0)
        );
        assert_eq!(
            s.not_read("other").unwrap_or_else(|e| panic!("{e}")),
            (vec![], 1)
        );
    }

    #[test]
    fn snapshot_rows_are_put_replaced_deleted_and_cleared_per_side() {
        let (_d, s) = store();
        let ok = |r: Result<(), Error>| r.unwrap_or_else(|e| panic!("{e}"));
        ok(s.put_snapshot("cloud", "b", &vec!["two".to_string()]));
        ok(s.put_snapshot("cloud", "a", &vec!["one".to_string()]));
        ok(s.put_snapshot("cloud", "a", &vec!["one again".to_string()]));
        ok(s.put_snapshot("source:m", "a", &vec!["other side".to_string()]));
        let rows: Vec<(String, Vec<String>)> =
            s.snapshot("cloud").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rows,
            vec![
                ("a".to_string(), vec!["one again".to_string()]),
                ("b".to_string(), vec!["two".to_string()])
            ]
        );
        ok(s.delete_snapshot("cloud", "a"));
        let rows: Vec<(String, Vec<String>)> =
            s.snapshot("cloud").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), 1);
        ok(s.clear_snapshot("cloud"));
        let rows: Vec<(String, Vec<String>)> =
            s.snapshot("cloud").unwrap_or_else(|e| panic!("{e}"));
        assert!(rows.is_empty());
        let other: Vec<(String, Vec<String>)> =
            s.snapshot("source:m").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(other.len(), 1, "clearing one side leaves the other");
        ok(s.clear_watermark("cloud"));
    }

    #[test]
    fn a_version_2_store_gains_sessions_revoked_at_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
            conn.execute_batch(
                "CREATE TABLE accounts (key TEXT PRIMARY KEY, dn TEXT, kind TEXT, state TEXT NOT NULL,
                     reason TEXT, cloud_id TEXT, address TEXT, address_staged_at TEXT,
                     invitation_id TEXT, invited_at TEXT, invitations_sent INTEGER NOT NULL DEFAULT 0,
                     password_randomized_at TEXT, updated_at TEXT NOT NULL);
                 INSERT INTO accounts (key, state, password_randomized_at, updated_at)
                     VALUES ('k', 'done', '2026-01-02T03:04:05Z', '2026-01-02T03:04:05Z');
                 PRAGMA user_version = 2;",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        let s = Store::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut progress = s.progress().unwrap_or_else(|e| panic!("{e}"));
        let p = progress.get_mut("k").unwrap_or_else(|| panic!("row kept"));
        assert!(p.password_randomized_at.is_some());
        assert_eq!(p.sessions_revoked_at, None);
        let at: jiff::Timestamp = "2026-01-02T04:00:00Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        p.sessions_revoked_at = Some(at);
        s.save_account("k", None, None, None, p)
            .unwrap_or_else(|e| panic!("{e}"));
        drop(s);
        // Opening it again (now version 3) changes nothing and reads the value back.
        let s = Store::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let progress = s.progress().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(progress["k"].sessions_revoked_at, Some(at));
    }

    #[test]
    fn a_version_1_store_gains_the_snapshot_table() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
            conn.execute_batch(
                "CREATE TABLE watermarks (source TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL);
                 INSERT INTO watermarks VALUES ('x', 'kept', 'then');
                 PRAGMA user_version = 1;",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        let s = Store::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.watermark("x")
                .unwrap_or_else(|e| panic!("{e}"))
                .as_deref(),
            Some("kept")
        );
        s.put_snapshot("cloud", "k", &1)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn the_counts_kept_by_triggers_equal_a_count_of_every_account() {
        let (_d, mut s) = store();
        let ok = |r: Result<(), Error>| r.unwrap_or_else(|e| panic!("{e}"));
        let states = [
            Lifecycle::Invited,
            Lifecycle::Done,
            Lifecycle::Blocked,
            Lifecycle::NeedsAddress,
        ];
        let addresses = [
            None,
            Some("a@Fabrikam.example"),
            Some("b@contoso.example"),
            Some("x"),
        ];
        let progress = |n: usize| Progress {
            state: states[n % states.len()],
            address: addresses[(n / 2) % addresses.len()].map(str::to_string),
            ..Progress::default()
        };
        let recount = |s: &Store| -> StateCounts {
            let mut counts = StateCounts::default();
            for a in s.accounts().unwrap_or_else(|e| panic!("{e}")) {
                let state = a.state_now().to_string();
                *counts.all.entry(state.clone()).or_default() += 1;
                let domain = a
                    .progress
                    .address
                    .as_deref()
                    .and_then(|x| x.split_once('@'))
                    .map(|(_, d)| d.to_lowercase());
                if let Some(d) = domain {
                    *counts
                        .domains
                        .entry(d)
                        .or_default()
                        .entry(state)
                        .or_default() += 1;
                }
            }
            counts
        };
        for n in 0..24 {
            ok(s.save_account(&format!("k{n}"), None, None, None, &progress(n)));
        }
        // Progress moves, addresses change, some leave the scope and one comes back, one
        // takes over another's key.
        for n in (0..24).step_by(3) {
            ok(s.save_account(&format!("k{n}"), None, None, None, &progress(n + 5)));
        }
        let t: jiff::Timestamp = "2026-12-01T10:00:00Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let present: std::collections::HashSet<&str> =
            ["k1", "k2", "k3", "k4", "k5", "k6"].into_iter().collect();
        s.mark_gone(&present, t).unwrap_or_else(|e| panic!("{e}"));
        let present: std::collections::HashSet<&str> = ["k1", "k2", "k3", "k4", "k5", "k6", "k7"]
            .into_iter()
            .collect();
        s.mark_gone(&present, t).unwrap_or_else(|e| panic!("{e}"));
        ok(s.rekey(&[("k9", "k2")]));
        assert_eq!(
            s.state_counts().unwrap_or_else(|e| panic!("{e}")),
            recount(&s)
        );
    }

    #[test]
    fn accounts_not_found_are_gone_with_their_time_and_come_back() {
        let (_d, mut s) = store();
        let p = Progress {
            state: Lifecycle::Invited,
            ..Progress::default()
        };
        for key in ["a", "b", "c"] {
            s.save_account(key, Some("CN=x"), Some("synced"), None, &p)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let t1: jiff::Timestamp = "2026-12-01T10:00:00Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let t2: jiff::Timestamp = "2026-12-02T10:00:00Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let present = |keys: &[&'static str]| {
            keys.iter()
                .copied()
                .collect::<std::collections::HashSet<&str>>()
        };
        assert_eq!(s.mark_gone(&present(&["a"]), t1).ok(), Some((2, 0)));
        // Still gone the next day: the first time is kept.
        assert_eq!(s.mark_gone(&present(&["a"]), t2).ok(), Some((0, 0)));
        let gone = |s: &Store| -> Vec<(String, Option<jiff::Timestamp>, Lifecycle)> {
            s.accounts()
                .unwrap_or_else(|e| panic!("{e}"))
                .into_iter()
                .map(|a| (a.key.clone(), a.gone_at, a.state_now()))
                .collect()
        };
        assert_eq!(
            gone(&s),
            vec![
                ("a".into(), None, Lifecycle::Invited),
                ("b".into(), Some(t1), Lifecycle::Gone),
                ("c".into(), Some(t1), Lifecycle::Gone),
            ]
        );
        // Their progress is kept as it was.
        let progress = s.progress().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(progress.get("b"), Some(&p));
        let counts = s.state_counts().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(counts.all.get("gone"), Some(&2));
        assert_eq!(counts.all.get("invited"), Some(&1));
        // b comes back (the same anchor): its lifecycle resumes.
        assert_eq!(s.mark_gone(&present(&["a", "b"]), t2).ok(), Some((0, 1)));
        assert_eq!(gone(&s)[1], ("b".into(), None, Lifecycle::Invited));
    }
}
