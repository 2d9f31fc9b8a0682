//! Exchange's recipient attributes on AD accounts: which of them the schema has (read from
//! the schema naming context, since AD's subschema is not read), and the
//! [`ExchangeRecipient`] an entry's values make. A DC without Exchange's schema is never
//! asked for them.

use crate::model::ExchangeRecipient;

/// The attributes read, when the schema has them.
pub const ATTRIBUTES: [&str; 4] = [
    "msExchRecipientTypeDetails",
    "msExchRemoteRecipientType",
    "msExchMailboxGuid",
    "targetAddress",
];

/// The filter that finds these attributes' definitions in the schema naming context.
pub fn schema_filter() -> String {
    let names: String = ATTRIBUTES
        .iter()
        .map(|a| format!("(lDAPDisplayName={a})"))
        .collect();
    format!("(&(objectClass=attributeSchema)(|{names}))")
}

/// The recipient an entry's values describe (`first` gives an attribute's first text
/// value; `has_binary` whether a binary attribute is set); `None` when none is set.
/// Numbers that do not parse (or are negative: AD's large integers are signed) read as
/// not set, except that a negative `msExchRecipientTypeDetails` is its 64-bit pattern.
pub fn recipient(
    first: &dyn Fn(&str) -> Option<String>,
    has_binary: &dyn Fn(&str) -> bool,
) -> Option<ExchangeRecipient> {
    let number = |name: &str| {
        first(name).and_then(|v| {
            let v = v.trim();
            v.parse::<u64>()
                .ok()
                .or_else(|| v.parse::<i64>().ok().map(|n| n.cast_unsigned()))
        })
    };
    let recipient = ExchangeRecipient {
        recipient_type_details: number("msExchRecipientTypeDetails"),
        remote_recipient_type: number("msExchRemoteRecipientType"),
        mailbox_guid: has_binary("msExchMailboxGuid"),
        target_address: first("targetAddress")
            .map(|t| t.trim().chars().take(1123).collect::<String>())
            .filter(|t| !t.is_empty()),
    };
    (recipient != ExchangeRecipient::default()).then_some(recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(values: &[(&str, &str)], guid: bool) -> Option<ExchangeRecipient> {
        let first = |name: &str| {
            values
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_string())
        };
        recipient(&first, &|name| guid && name == "msExchMailboxGuid")
    }

    #[test]
    fn a_plain_user_has_no_recipient() {
        assert_eq!(read(&[], false), None);
    }

    #[test]
    fn values_are_read_and_clamped() {
        let r = read(
            &[
                ("msExchRecipientTypeDetails", "2147483648"),
                ("msExchRemoteRecipientType", "4"),
                ("targetAddress", " SMTP:a@lab.mail.onmicrosoft.com "),
            ],
            true,
        )
        .unwrap_or_default();
        assert_eq!(r.recipient_type_details, Some(1 << 31));
        assert_eq!(r.remote_recipient_type, Some(4));
        assert!(r.mailbox_guid);
        assert_eq!(
            r.target_address.as_deref(),
            Some("SMTP:a@lab.mail.onmicrosoft.com")
        );
        let r = read(&[("msExchRecipientTypeDetails", "-1")], false).unwrap_or_default();
        assert_eq!(r.recipient_type_details, Some(u64::MAX));
        assert_eq!(read(&[("msExchRemoteRecipientType", "x")], false), None);
    }

    #[test]
    fn the_schema_filter_names_every_attribute() {
        let f = schema_filter();
        for a in ATTRIBUTES {
            assert!(f.contains(&format!("(lDAPDisplayName={a})")), "{f}");
        }
    }
}
