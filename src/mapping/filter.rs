//! LDAP filter validation for a mapping's scope.
//!
//! `ldap3::parse_filter` is the parser the client itself encodes with, so whatever it accepts
//! goes on the wire unchanged. It recurses once per nesting level and overflows the stack on
//! deeply nested input (about 10,000 levels), so we cap the length and the depth first.

/// Longest filter accepted, in bytes.
pub const MAX_LENGTH: usize = 4096;
/// Deepest parenthesis nesting accepted.
pub const MAX_DEPTH: usize = 32;

/// Why a filter is refused; `offset` is the byte offset in the filter text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterError {
    TooLong { length: usize },
    TooDeep { depth: usize, offset: usize },
    Unbalanced { offset: usize },
    Invalid,
}

/// Checks `filter` against the caps, then parses it with `ldap3`.
pub fn validate(filter: &str) -> Result<(), FilterError> {
    if filter.len() > MAX_LENGTH {
        return Err(FilterError::TooLong {
            length: filter.len(),
        });
    }
    let mut depth = 0usize;
    for (offset, b) in filter.bytes().enumerate() {
        match b {
            b'(' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(FilterError::TooDeep { depth, offset });
                }
            }
            b')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or(FilterError::Unbalanced { offset })?;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(FilterError::Unbalanced {
            offset: filter.len(),
        });
    }
    ldap3::parse_filter(filter).map_err(|()| FilterError::Invalid)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ad_filters_and_refuses_bad_ones() {
        assert_eq!(
            validate(
                "(&(objectCategory=person)(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))"
            ),
            Ok(())
        );
        assert_eq!(validate("(cn=a\\28b\\29)"), Ok(()));
        assert_eq!(
            validate("(&(cn=a)"),
            Err(FilterError::Unbalanced { offset: 8 })
        );
        assert_eq!(
            validate("(cn=a))"),
            Err(FilterError::Unbalanced { offset: 6 })
        );
        assert_eq!(validate("(=a)"), Err(FilterError::Invalid));
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!("{}(cn=a){}", "(!".repeat(10_000), ")".repeat(10_000));
        assert!(matches!(validate(&deep), Err(FilterError::TooLong { .. })));
        let deep = format!("{}(cn=a){}", "(!".repeat(40), ")".repeat(40));
        assert!(matches!(
            validate(&deep),
            Err(FilterError::TooDeep { depth: 33, .. })
        ));
        let ok = format!("{}(cn=a){}", "(!".repeat(31), ")".repeat(31));
        assert_eq!(validate(&ok), Ok(()));
    }
}
