//! Lookup tables: a CSV file a migration project hands over (`account,externalEmail`), loaded
//! once with the mapping and queried by `lookup('name', key)` in expressions.
//!
//! Keys compare case-insensitively and trimmed, as `sAMAccountName` does in AD. A duplicate key
//! or a missing column is a load error naming the CSV line and column. An error never quotes
//! the file's contents (a cell, a header): only where the problem is. The file could be
//! anything the mapping points at, and its first line may be a secret.

use std::collections::HashMap;

/// One loaded table: key → value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    rows: HashMap<String, String>,
}

/// Why a CSV table could not be loaded; `line` and `column` are 1-based in the CSV file
/// (line 0 = the whole file). The message never holds a cell or header of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError {
    pub line: u64,
    pub column: u64,
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
                    column: 1,
                    // The header's own cells are not quoted: see the module doc.
                    message: format!(
                        "no column `{name}` in the header ({} column(s))",
                        headers.len()
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
            let key_column = column_of(text, &record, key_at);
            let key = normalize(record.get(key_at).unwrap_or_default());
            let value = record.get(value_at).unwrap_or_default().to_string();
            if key.is_empty() {
                continue;
            }
            if let Some(first) = first_line.get(&key) {
                return Err(TableError {
                    line,
                    column: key_column,
                    message: format!("duplicate key (first on line {first})"),
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

/// 1-based column (in characters) where field `field` of `record` starts on its line (after
/// the blanks the reader trims), or 1 when that cannot be told.
fn column_of(text: &str, record: &csv::StringRecord, field: usize) -> u64 {
    let Some(start) = record
        .position()
        .and_then(|p| usize::try_from(p.byte()).ok())
    else {
        return 1;
    };
    let line = text
        .get(start..)
        .and_then(|rest| rest.split('\n').next())
        .unwrap_or_default();
    // Walk the raw line to the field's first byte, honouring quotes.
    let mut fields_seen = 0;
    let mut quoted = false;
    let mut at = None;
    for (i, c) in line.char_indices() {
        if fields_seen == field && !matches!(c, ' ' | '\t') {
            at = Some(i);
            break;
        }
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields_seen += 1,
            _ => {}
        }
    }
    let at = at.unwrap_or(line.len());
    u64::try_from(line.get(..at).unwrap_or_default().chars().count() + 1).unwrap_or(1)
}

/// A CSV reading error, described without the `csv` crate's message: that message may quote
/// the bytes it choked on.
fn csv_error(e: &csv::Error) -> TableError {
    let line = e.position().map_or(0, csv::Position::line);
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => {
            format!("not UTF-8 (field {})", err.field() + 1)
        }
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} field(s) where the header has {expected_len}"),
        csv::ErrorKind::Io(_) => "cannot be read".to_string(),
        _ => "not valid CSV".to_string(),
    };
    TableError {
        line,
        column: 1,
        message,
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

    // See: issue 10, finding 5 (a table error printed the file's first line).
    #[test]
    fn errors_name_line_and_column_but_never_quote_the_file() {
        let secret = "hunter2-bind-password";
        for (text, line, column) in [
            // A one-line secret file: its only line is taken as the header.
            (format!("{secret}\n"), 1, 1),
            // /etc/passwd-like rows: unequal field counts.
            (format!("account,externalEmail\na,b\n{secret},x,y\n"), 3, 1),
            // A duplicate key: where the key is, not what it is.
            (
                format!("externalEmail,account\nx,{secret}\n y ,  {secret}\n"),
                3,
                7,
            ),
        ] {
            let e = Table::parse(&text, "account", "externalEmail").unwrap_err();
            assert_eq!((e.line, e.column), (line, column), "{text:?}: {e:?}");
            assert!(!e.message.contains(secret), "{}", e.message);
            assert!(!e.help.contains(secret), "{}", e.help);
        }
    }
}
