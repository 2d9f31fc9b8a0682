//! Lookup tables: a CSV file a migration project hands over (`account,externalEmail`), loaded
//! once with the mapping and queried by `lookup('name', key)` in expressions.
//!
//! Keys compare case-insensitively and trimmed, as `sAMAccountName` does in AD. A duplicate key
//! or a missing column is a load error naming the CSV line.

use std::collections::HashMap;

/// One loaded table: key → value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    rows: HashMap<String, String>,
}

/// Why a CSV table could not be loaded; `line` is 1-based in the CSV file (0 = the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError {
    pub line: u64,
    pub message: String,
    pub help: String,
}

impl Table {
    /// A table from literal pairs (tests and examples).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Table {
            rows: pairs
                .into_iter()
                .map(|(k, v)| (normalize(k), v.to_string()))
                .collect(),
        }
    }

    /// Parses CSV text with a header row naming `key_column` and `value_column`.
    pub fn parse(text: &str, key_column: &str, value_column: &str) -> Result<Self, TableError> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(false)
            .from_reader(text.as_bytes());
        let headers = reader.headers().map_err(|e| csv_error(&e))?.clone();
        let column = |name: &str| {
            headers
                .iter()
                .position(|h| h.eq_ignore_ascii_case(name))
                .ok_or_else(|| TableError {
                    line: 1,
                    message: format!(
                        "no column `{name}` in the header (columns: {})",
                        headers.iter().collect::<Vec<_>>().join(", ")
                    ),
                    help: format!(
                        "the first line must name the columns, e.g. `{key_column},{value_column}`; or set `key`/`value` in the table's section"
                    ),
                })
        };
        let key_at = column(key_column)?;
        let value_at = column(value_column)?;
        let mut rows = HashMap::new();
        let mut first_line: HashMap<String, u64> = HashMap::new();
        for record in reader.records() {
            let record = record.map_err(|e| csv_error(&e))?;
            let line = record.position().map_or(0, csv::Position::line);
            let key = normalize(record.get(key_at).unwrap_or_default());
            let value = record.get(value_at).unwrap_or_default().to_string();
            if key.is_empty() {
                continue;
            }
            if let Some(first) = first_line.get(&key) {
                return Err(TableError {
                    line,
                    message: format!("duplicate key `{key}` (first on line {first})"),
                    help: "each account may appear once; remove or merge one of the lines"
                        .to_string(),
                });
            }
            first_line.insert(key.clone(), line);
            rows.insert(key, value);
        }
        Ok(Table { rows })
    }

    /// The value for `key` (case-insensitive, trimmed); empty values count as absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.rows
            .get(&normalize(key))
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

fn normalize(key: &str) -> String {
    key.trim().to_lowercase()
}

fn csv_error(e: &csv::Error) -> TableError {
    TableError {
        line: e.position().map_or(0, csv::Position::line),
        message: format!("not valid CSV: {e}"),
        help: "save the table as UTF-8 CSV with a header row and the same number of fields on every line"
            .to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up_case_insensitively() {
        let t = Table::parse(
            "account,externalEmail\np.Adams, ana@fabrikam.example\np.empty,\n",
            "account",
            "externalEmail",
        )
        .unwrap();
        assert_eq!(t.get("P.ADAMS"), Some("ana@fabrikam.example"));
        assert_eq!(t.get("p.empty"), None);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn duplicate_keys_and_missing_columns_name_the_line() {
        let e = Table::parse(
            "account,externalEmail\na,x\nb,y\nA,z\n",
            "account",
            "externalEmail",
        )
        .unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.message.contains("first on line 2"), "{}", e.message);
        let e = Table::parse("sam,mail\n", "account", "externalEmail").unwrap_err();
        assert_eq!(e.line, 1);
    }
}
