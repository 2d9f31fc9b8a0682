//! `invitations --pending`: the invitations sent without Microsoft's email and not redeemed
//! yet, with the redeem link an admin delivers (CSV, JSON or a table). The only output of
//! b2bsync that holds redeem links: the caller writes it to stdout or an owner-only file.

use serde_json::{Value, json};

use super::{csv_text, terminal_safe, write_cells};
use crate::state::PendingLink;

/// The columns, in order (the CSV header is written even when no invitation is pending).
pub const COLUMNS: [&str; 5] = ["account", "dn", "partner_address", "invited_at", "link"];

/// A name an admin recognizes for the account: its UPN or sAMAccountName as the state store
/// names it (the same name as every other report), else the value of the DN's first RDN
/// (`CN=Ann Lee,OU=…` → `Ann Lee`), or the DN itself, or the state store's key.
fn account_name(link: &PendingLink) -> String {
    if let Some(name) = link.name.as_deref().filter(|n| !n.trim().is_empty()) {
        return name.to_string();
    }
    let Some(dn) = link.dn.as_deref() else {
        return link.key.clone();
    };
    // The first unescaped comma ends the first RDN.
    let mut end = dn.len();
    let mut escaped = false;
    for (i, c) in dn.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    match dn[..end].split_once('=') {
        Some((_, value)) if !value.trim().is_empty() => value.trim().replace('\\', ""),
        _ => dn.to_string(),
    }
}

/// One row's cells, in [`COLUMNS`] order.
fn cells(link: &PendingLink) -> [String; 5] {
    [
        account_name(link),
        link.dn.clone().unwrap_or_default(),
        link.address.clone().unwrap_or_default(),
        link.invited_at.map(|t| t.to_string()).unwrap_or_default(),
        link.redeem_url.clone(),
    ]
}

/// CSV with a header line, one row per pending invitation.
pub fn csv(links: &[PendingLink]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    for link in links {
        let row = cells(link);
        write_cells(&mut w, row.iter().map(String::as_str))?;
    }
    csv_text(w)
}

/// A JSON array of objects keyed by [`COLUMNS`].
pub fn json(links: &[PendingLink]) -> String {
    let rows: Vec<Value> = links
        .iter()
        .map(|link| {
            let row = cells(link);
            let object: serde_json::Map<String, Value> = COLUMNS
                .iter()
                .zip(row)
                .map(|(k, v)| ((*k).to_string(), json!(v)))
                .collect();
            Value::Object(object)
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&Value::Array(rows)).unwrap_or_default();
    text.push('\n');
    text
}

/// Aligned columns for a terminal, values made terminal-safe.
pub fn table(links: &[PendingLink]) -> String {
    let rows: Vec<[String; 5]> = links
        .iter()
        .map(|l| cells(l).map(|c| terminal_safe(&c).into_owned()))
        .collect();
    let mut widths = COLUMNS.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut text = line(&COLUMNS);
    for row in &rows {
        let refs: Vec<&str> = row.iter().map(String::as_str).collect();
        text.push_str(&line(&refs));
    }
    if rows.is_empty() {
        text.push_str("(no invitation is waiting for its partner with a link to deliver)\n");
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn link(dn: Option<&str>) -> PendingLink {
        PendingLink {
            key: "k1".into(),
            name: None,
            dn: dn.map(str::to_string),
            address: Some("ann@fabrikam.example".into()),
            invited_at: Some("2026-12-01T10:00:00Z".parse().unwrap()),
            redeem_url: "https://login.microsoftonline.com/redeem?rd=x".into(),
        }
    }

    #[test]
    fn the_account_is_named_by_the_first_rdn() {
        assert_eq!(
            account_name(&link(Some("CN=Lee\\, Ann,OU=Partners,DC=corp"))),
            "Lee, Ann"
        );
        assert_eq!(account_name(&link(None)), "k1");
    }

    #[test]
    fn the_account_is_named_as_every_report_names_it_when_the_store_knows() {
        let mut l = link(Some("CN=Lee\\, Ann,OU=Partners,DC=corp"));
        l.name = Some("ann.lee@corp.example".into());
        assert_eq!(account_name(&l), "ann.lee@corp.example");
    }

    #[test]
    fn csv_has_a_header_even_when_empty_and_one_row_per_link() {
        assert_eq!(
            csv(&[]).unwrap(),
            "account,dn,partner_address,invited_at,link\n"
        );
        let text = csv(&[link(Some("CN=Ann,DC=corp"))]).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1],
            "Ann,\"CN=Ann,DC=corp\",ann@fabrikam.example,2026-12-01T10:00:00Z,https://login.microsoftonline.com/redeem?rd=x"
        );
        let parsed: Value = serde_json::from_str(&json(&[link(None)])).unwrap();
        assert_eq!(parsed[0]["partner_address"], "ann@fabrikam.example");
        assert!(table(&[]).contains("no invitation"));
    }
}
