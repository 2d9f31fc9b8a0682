//! The state store's indexes of both snapshots, written in the same transaction as the
//! snapshot rows: per in-scope source account the external address its mapping yields and
//! its join keys, per cloud user the addresses it holds, its join values and whether it holds
//! a directory role; and the accounts whose plan is not settled. An incremental run asks
//! them which accounts a change touches (through an address or a join key) instead of
//! decoding both snapshots; see `pipeline::incremental`.
//!
//! Rows are `(kind, value)` pairs: `kind` is `address`, `roles`, `scope` (an in-scope
//! account with neither an address nor a join key) or a cloud property name
//! (`onPremisesImmutableId`, ...) for a join value.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{OptionalExtension, params};

use super::{Error, Store};
use crate::model::Progress;

/// Tables and triggers of the indexes (schema version 6).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS source_index (
    side TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (side, key, kind, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS source_index_value ON source_index (kind, value);
CREATE INDEX IF NOT EXISTS source_index_key ON source_index (key);
CREATE TABLE IF NOT EXISTS cloud_index (
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (id, kind, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cloud_index_value ON cloud_index (kind, value);
-- A trigger's own conflict clause gives way to an upsert's: it checks instead.
CREATE TABLE IF NOT EXISTS unsettled (key TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS accounts_unsettled_insert AFTER INSERT ON accounts
BEGIN INSERT INTO unsettled (key) SELECT NEW.key
    WHERE NOT EXISTS (SELECT 1 FROM unsettled WHERE key = NEW.key); END;
CREATE TRIGGER IF NOT EXISTS accounts_unsettled_update AFTER UPDATE ON accounts
BEGIN INSERT INTO unsettled (key) SELECT NEW.key
    WHERE NOT EXISTS (SELECT 1 FROM unsettled WHERE key = NEW.key); END;
-- The accounts that left the scope (the plan's orphans), found without a scan.
CREATE INDEX IF NOT EXISTS accounts_gone ON accounts (key) WHERE gone_at IS NOT NULL;
-- Accounts per lifecycle state and partner domain ('' for none), kept by triggers, so
-- that a run's end counts them without reading every account.
CREATE TABLE IF NOT EXISTS account_counts (
    state TEXT NOT NULL,
    domain TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (state, domain)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS accounts_count_insert AFTER INSERT ON accounts
BEGIN INSERT INTO account_counts (state, domain, n) VALUES (COUNT_STATE(NEW), COUNT_DOMAIN(NEW), 1)
    ON CONFLICT (state, domain) DO UPDATE SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS accounts_count_delete AFTER DELETE ON accounts
BEGIN UPDATE account_counts SET n = n - 1
    WHERE state = COUNT_STATE(OLD) AND domain = COUNT_DOMAIN(OLD); END;
-- How many accounts the source index holds (distinct keys), kept by triggers, so that an
-- incremental run counts the accounts in scope without reading the index.
CREATE TABLE IF NOT EXISTS index_counts (name TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS source_index_count_insert AFTER INSERT ON source_index
WHEN (SELECT count(*) FROM source_index WHERE key = NEW.key) = 1
BEGIN INSERT INTO index_counts (name, n) VALUES ('in_scope', 1)
    ON CONFLICT (name) DO UPDATE SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS source_index_count_delete AFTER DELETE ON source_index
WHEN NOT EXISTS (SELECT 1 FROM source_index WHERE key = OLD.key)
BEGIN UPDATE index_counts SET n = n - 1 WHERE name = 'in_scope'; END;
CREATE TRIGGER IF NOT EXISTS accounts_count_update AFTER UPDATE OF state, gone_at, address ON accounts
BEGIN UPDATE account_counts SET n = n - 1
    WHERE state = COUNT_STATE(OLD) AND domain = COUNT_DOMAIN(OLD);
    INSERT INTO account_counts (state, domain, n) VALUES (COUNT_STATE(NEW), COUNT_DOMAIN(NEW), 1)
    ON CONFLICT (state, domain) DO UPDATE SET n = n + 1; END;
";

/// `index_counts` and `account_counts` from every row (when the schema is created or
/// migrated).
pub(super) const RECOUNT: &str = "
DELETE FROM index_counts;
INSERT INTO index_counts (name, n) SELECT 'in_scope', count(DISTINCT key) FROM source_index;
DELETE FROM account_counts;
INSERT INTO account_counts (state, domain, n)
    SELECT COUNT_STATE(a), COUNT_DOMAIN(a), count(*) FROM accounts a GROUP BY 1, 2;
";

/// [`SCHEMA`] or [`RECOUNT`] with the state and domain expressions of a row written out.
pub(super) fn with_count_expressions(sql: &str) -> String {
    let mut out = sql.to_string();
    for row in ["NEW", "OLD", "a"] {
        out = out
            .replace(
                &format!("COUNT_STATE({row})"),
                &format!("CASE WHEN {row}.gone_at IS NOT NULL THEN 'gone' ELSE {row}.state END"),
            )
            .replace(
                &format!("COUNT_DOMAIN({row})"),
                &format!(
                    "coalesce(CASE WHEN instr({row}.address, '@') > 0 THEN \
                     lower(substr({row}.address, instr({row}.address, '@') + 1)) END, '')"
                ),
            );
    }
    out
}

/// One index row of an account or a user.
pub type IndexRow = (String, String);

impl Store {
    /// Drops every index row of one directory search (before a full read replaces them).
    pub fn clear_source_index(&self, side: &str) -> Result<(), Error> {
        self.conn
            .execute("DELETE FROM source_index WHERE side = ?1", params![side])?;
        Ok(())
    }

    /// Drops every index row of the cloud users.
    pub fn clear_cloud_index(&self) -> Result<(), Error> {
        self.conn.execute("DELETE FROM cloud_index", [])?;
        Ok(())
    }

    /// Replaces the index rows of one account of one search (none: it is out of scope).
    pub fn put_source_index(&self, side: &str, key: &str, rows: &[IndexRow]) -> Result<(), Error> {
        self.conn
            .prepare_cached("DELETE FROM source_index WHERE side = ?1 AND key = ?2")?
            .execute(params![side, key])?;
        let mut insert = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO source_index (side, key, kind, value) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (kind, value) in rows {
            insert.execute(params![side, key, kind, value])?;
        }
        Ok(())
    }

    /// Replaces the index rows of one cloud user (none: it is gone).
    pub fn put_cloud_index(&self, id: &str, rows: &[IndexRow]) -> Result<(), Error> {
        self.conn
            .prepare_cached("DELETE FROM cloud_index WHERE id = ?1")?
            .execute(params![id])?;
        let mut insert = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO cloud_index (id, kind, value) VALUES (?1, ?2, ?3)",
        )?;
        for (kind, value) in rows {
            insert.execute(params![id, kind, value])?;
        }
        Ok(())
    }

    /// The index rows of an account, over every search that holds it.
    pub fn source_index_of(&self, key: &str) -> Result<Vec<IndexRow>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT kind, value FROM source_index WHERE key = ?1")?;
        let rows = stmt.query_map(params![key], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The index rows of a cloud user.
    pub fn cloud_index_of(&self, id: &str) -> Result<Vec<IndexRow>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT kind, value FROM cloud_index WHERE id = ?1")?;
        let rows = stmt.query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The accounts with this index row (an address they map to, a join key).
    pub fn accounts_with(&self, kind: &str, value: &str) -> Result<Vec<String>, Error> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT key FROM source_index WHERE kind = ?1 AND value = ?2",
        )?;
        let rows = stmt.query_map(params![kind, value], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The cloud users with this index row (an address they hold, a join value, `roles`).
    pub fn users_with(&self, kind: &str, value: &str) -> Result<Vec<String>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM cloud_index WHERE kind = ?1 AND value = ?2")?;
        let rows = stmt.query_map(params![kind, value], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// How many accounts are in scope, as the index knows them.
    /// Kept by triggers on `source_index` (`index_counts`): nothing is counted here.
    pub fn indexed_accounts(&self) -> Result<usize, Error> {
        let n: Option<i64> = self
            .conn
            .query_row(
                "SELECT n FROM index_counts WHERE name = 'in_scope'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(usize::try_from(n.unwrap_or(0)).unwrap_or(0))
    }

    /// As [`Store::mark_gone`] for a run that planned only some accounts: the accounts in
    /// scope are those the source index holds (every in-scope account has a row there), so
    /// an account row missing from it is gone from `now` on (its earlier `gone_at` kept)
    /// and one back in it is no longer gone. Returns how many became gone and came back.
    pub fn mark_gone_by_index(&self, now: jiff::Timestamp) -> Result<(usize, usize), Error> {
        {
            let s = self;
            let left = s.conn.execute(
                "UPDATE accounts SET gone_at = ?1 WHERE gone_at IS NULL
                     AND NOT EXISTS (SELECT 1 FROM source_index i WHERE i.key = accounts.key)",
                params![now.to_string()],
            )?;
            let back = s.conn.execute(
                "UPDATE accounts SET gone_at = NULL WHERE gone_at IS NOT NULL
                     AND EXISTS (SELECT 1 FROM source_index i WHERE i.key = accounts.key)",
                [],
            )?;
            Ok((left, back))
        }
    }

    /// As [`Store::mark_gone_by_index`] for only these accounts (those a change touched):
    /// written in the same transaction as their index rows, so `gone_at` and the index
    /// agree after any crash.
    pub fn mark_gone_of<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
        now: jiff::Timestamp,
    ) -> Result<(usize, usize), Error> {
        let now = now.to_string();
        let mut present = self
            .conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM source_index WHERE key = ?1)")?;
        let mut back = self.conn.prepare_cached(
            "UPDATE accounts SET gone_at = NULL WHERE key = ?1 AND gone_at IS NOT NULL",
        )?;
        let mut gone = self.conn.prepare_cached(
            "UPDATE accounts SET gone_at = ?2 WHERE key = ?1 AND gone_at IS NULL",
        )?;
        let (mut left, mut returned) = (0, 0);
        for key in keys {
            if present.query_row(params![key], |r| r.get::<_, bool>(0))? {
                returned += back.execute(params![key])?;
            } else {
                left += gone.execute(params![key, now])?;
            }
        }
        Ok((left, returned))
    }

    /// How many accounts the store remembers progress of.
    pub fn progress_len(&self) -> Result<usize, Error> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The progress of these accounts (those the store remembers).
    pub fn progress_of<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<BTreeMap<String, Progress>, Error> {
        let mut out = BTreeMap::new();
        for key in keys {
            if let Some(record) = self.account(key)? {
                out.insert(record.key, record.progress);
            }
        }
        Ok(out)
    }

    /// Accounts with progress that no search holds in scope now (the plan's orphans: their
    /// progress may carry over to a new key).
    /// `gone_at` is kept with the index (see [`Store::mark_gone_of`]), so these are the
    /// accounts marked gone.
    pub fn orphans(&self) -> Result<Vec<String>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key FROM accounts WHERE gone_at IS NOT NULL")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Accounts whose plan is not settled: their progress changed since, or their last plan
    /// had actions or a state that moves with time.
    pub fn unsettled(&self) -> Result<BTreeSet<String>, Error> {
        let mut stmt = self.conn.prepare_cached("SELECT key FROM unsettled")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<BTreeSet<_>, _>>()?)
    }

    /// Marks accounts as not settled: the next incremental run plans them again.
    pub fn unsettle<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Result<(), Error> {
        let mut insert = self
            .conn
            .prepare_cached("INSERT OR IGNORE INTO unsettled (key) VALUES (?1)")?;
        for key in keys {
            insert.execute(params![key])?;
        }
        Ok(())
    }

    /// Marks accounts as settled: an incremental run plans them only when a change touches them.
    pub fn settle<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Result<(), Error> {
        // Only the keys the table holds (usually few): a full plan settles a million.
        let unsettled = self.unsettled()?;
        let mut delete = self
            .conn
            .prepare_cached("DELETE FROM unsettled WHERE key = ?1")?;
        for key in keys.into_iter().filter(|k| unsettled.contains(*k)) {
            delete.execute(params![key])?;
        }
        Ok(())
    }
}
