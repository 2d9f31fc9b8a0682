//! Random passwords for the on-premises randomization step: drawn from the OS CSPRNG, made to
//! satisfy AD complexity (including "must not contain the account name"), used once, never
//! stored or printed.
//!
//! The work is bounded whatever the directory holds: only the first [`MAX_DISPLAY_NAME_CHARS`]
//! characters of `displayName` are split into tokens (AD caps the attribute there; a generic
//! LDAP server may hold far more), and at most [`MAX_ATTEMPTS`] candidates are drawn. Past
//! that, [`generate`] returns [`Error::NoCompliantPassword`] for that one account.

use std::collections::BTreeSet;

use rand::TryRngCore;
use rand::rngs::OsRng;
use rand::seq::{IndexedRandom, SliceRandom};
use secrecy::SecretString;
use zeroize::Zeroizing;

const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
const DIGITS: &[u8] = b"23456789";
/// No quotes or backslash: they confuse shells and LDIF if an operator ever retypes one.
const SYMBOLS: &[u8] = b"!#%+-.:=?@^_~*";

/// The default length: far above any default `minPwdLength`.
pub const DEFAULT_LENGTH: usize = 32;

/// AD's upper bound of `displayName` (`rangeUpper` 256): only this many characters of it are
/// considered, so a hostile generic LDAP entry cannot make the check unbounded.
pub const MAX_DISPLAY_NAME_CHARS: usize = 256;

/// The shortest token of `displayName` AD forbids in a password (shorter ones are ignored).
pub const MIN_TOKEN_CHARS: usize = 3;

/// Candidates drawn before giving up. With at most 256 characters of `displayName` (at most
/// 64 tokens of 3 characters), a candidate is rejected with a probability of a few percent, so
/// reaching this bound means the inputs are hostile, not unlucky.
pub const MAX_ATTEMPTS: usize = 1000;

/// Why no password could be made for an account. Never holds a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Every candidate drawn contained the account name or a `displayName` token.
    #[error(
        "no random password of {length} characters avoided the account name and the {tokens} displayName token(s) AD forbids, after {attempts} attempts"
    )]
    NoCompliantPassword {
        length: usize,
        tokens: usize,
        attempts: usize,
    },
}

impl Error {
    /// One line telling the admin what to do about it.
    pub fn help(&self) -> String {
        match self {
            Error::NoCompliantPassword { .. } => {
                "the account's name or displayName forbids nearly every password: check the entry in the directory (a displayName this long or varied is not a person's name), or raise [apply] password_length".into()
            }
        }
    }
}

/// A fresh random password of `length` (at least 16) characters with upper, lower, digit and
/// symbol characters, which contains neither `account_name` nor any token of `display_name`
/// of three or more characters (AD's rule), compared case-insensitively. Past
/// [`MAX_ATTEMPTS`] candidates it gives up with [`Error::NoCompliantPassword`]: that account
/// fails alone, and the run goes on.
pub fn generate(
    length: usize,
    account_name: &str,
    display_name: Option<&str>,
) -> Result<SecretString, Error> {
    let forbidden = forbidden_tokens(account_name, display_name);
    draw(length, &forbidden, MAX_ATTEMPTS)
}

/// The lower-case strings a password must not contain: the account name when it has three
/// characters or more, and each token of the first [`MAX_DISPLAY_NAME_CHARS`] characters of
/// `display_name` (split at anything but letters and digits) of three characters or more.
fn forbidden_tokens(account_name: &str, display_name: Option<&str>) -> BTreeSet<String> {
    let mut forbidden = BTreeSet::new();
    if account_name.chars().count() >= MIN_TOKEN_CHARS {
        forbidden.insert(account_name.to_lowercase());
    }
    if let Some(name) = display_name {
        let end = name
            .char_indices()
            .nth(MAX_DISPLAY_NAME_CHARS)
            .map_or(name.len(), |(i, _)| i);
        let considered = name.get(..end).unwrap_or_default();
        forbidden.extend(
            considered
                .split(|c: char| !c.is_alphanumeric())
                .filter(|t| t.chars().count() >= MIN_TOKEN_CHARS)
                .map(str::to_lowercase),
        );
    }
    forbidden
}

/// Draws up to `attempts` candidates; the first that contains no forbidden string wins. On
/// failure, the error and the last candidate.
fn draw(
    length: usize,
    forbidden: &BTreeSet<String>,
    attempts: usize,
) -> Result<SecretString, Error> {
    let length = length.max(16);
    // A token longer than the password, or with characters the alphabet lacks, can never
    // occur in it.
    let relevant: Vec<&str> = forbidden
        .iter()
        .map(String::as_str)
        .filter(|f| f.len() <= length && f.is_ascii())
        .collect();
    // OsRng reads the operating system's CSPRNG; unwrap_err panics only if the OS cannot
    // provide randomness at all, in which case no safe password can exist.
    let mut rng = OsRng.unwrap_err();
    let all: Vec<u8> = [UPPER, LOWER, DIGITS, SYMBOLS].concat();
    for _ in 0..attempts {
        let mut bytes: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(length));
        for class in [UPPER, LOWER, DIGITS, SYMBOLS] {
            bytes.extend(class.choose(&mut rng));
        }
        while bytes.len() < length {
            bytes.extend(all.choose(&mut rng));
        }
        bytes.shuffle(&mut rng);
        let text: Zeroizing<String> = Zeroizing::new(bytes.iter().map(|&b| b as char).collect());
        let lower = Zeroizing::new(text.to_lowercase());
        if relevant.iter().all(|f| !lower.contains(f)) {
            return Ok(SecretString::from(text.as_str()));
        }
    }
    Err(Error::NoCompliantPassword {
        length,
        tokens: forbidden.len(),
        attempts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn meets_complexity_and_length() {
        for _ in 0..200 {
            let pw = generate(DEFAULT_LENGTH, "p.adams", Some("Ana Adams")).unwrap();
            let s = pw.expose_secret();
            assert_eq!(s.chars().count(), DEFAULT_LENGTH);
            assert!(s.bytes().any(|b| b.is_ascii_uppercase()));
            assert!(s.bytes().any(|b| b.is_ascii_lowercase()));
            assert!(s.bytes().any(|b| b.is_ascii_digit()));
            assert!(s.bytes().any(|b| SYMBOLS.contains(&b)));
            assert!(!s.contains('"') && !s.contains('\\'));
        }
    }

    #[test]
    fn never_contains_the_name() {
        // A two-letter alphabet of names makes collisions likely without the rule.
        for _ in 0..500 {
            let pw = generate(16, "abc", Some("Xy Zzz")).unwrap();
            let lower = pw.expose_secret().to_lowercase();
            assert!(!lower.contains("abc"));
            assert!(!lower.contains("zzz"));
        }
    }

    #[test]
    fn two_passwords_differ_and_debug_hides_them() {
        let a = generate(24, "x", None).unwrap();
        let b = generate(24, "x", None).unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(!format!("{a:?}").contains(a.expose_secret()));
    }

    /// Every three-character string of the password alphabet (lower-cased): a displayName made
    /// of all of them forbids every candidate.
    fn every_triple() -> Vec<String> {
        let mut chars: Vec<char> = [UPPER, LOWER, DIGITS]
            .concat()
            .iter()
            .map(|&b| (b as char).to_ascii_lowercase())
            .collect();
        chars.sort_unstable();
        chars.dedup();
        let mut out = Vec::new();
        for a in &chars {
            for b in &chars {
                for c in &chars {
                    out.push(format!("{a}{b}{c}"));
                }
            }
        }
        out
    }

    // See: issue 10, finding 6 (the retry loop had no bound).
    #[test]
    fn a_huge_display_name_is_cut_at_ads_limit_and_does_not_hang() {
        let hostile = every_triple().join(" ");
        assert!(hostile.chars().count() > 100_000);
        let forbidden = forbidden_tokens("p.adams", Some(&hostile));
        // The account name, and the tokens of the first 256 characters only (64 triples).
        assert_eq!(forbidden.len(), 1 + MAX_DISPLAY_NAME_CHARS / 4);
        assert!(forbidden.iter().all(|t| t.len() >= MIN_TOKEN_CHARS));
        let started = std::time::Instant::now();
        let pw = generate(16, "p.adams", Some(&hostile)).expect("bounded tokens leave room");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let lower = pw.expose_secret().to_lowercase();
        assert!(forbidden.iter().all(|t| !lower.contains(t.as_str())));
    }

    #[test]
    fn short_tokens_and_a_short_account_name_forbid_nothing() {
        let forbidden = forbidden_tokens("ab", Some("Li Wu, Jo-Ann"));
        assert_eq!(forbidden, BTreeSet::from(["ann".to_string()]));
    }

    // See: issue 10, finding 6: past the bound, a typed error that names no password.
    #[test]
    fn past_the_attempt_bound_generation_fails_with_a_typed_error() {
        // Every letter and digit forbidden: no candidate can pass, so only the bound ends it.
        let forbidden: BTreeSet<String> = [LOWER, DIGITS, b"ilo"]
            .concat()
            .iter()
            .map(|&b| (b as char).to_string())
            .collect();
        let Err(error) = draw(20, &forbidden, MAX_ATTEMPTS) else {
            panic!("a candidate without letters or digits")
        };
        assert_eq!(
            error,
            Error::NoCompliantPassword {
                length: 20,
                tokens: forbidden.len(),
                attempts: MAX_ATTEMPTS
            }
        );
        // Nothing that could be a candidate (20 characters of the alphabet) is in the text.
        let shown = format!("{error} {error:?} {}", error.help());
        assert!(
            !shown
                .split(|c: char| c.is_whitespace())
                .any(|w| w.len() >= 20
                    && w.bytes()
                        .all(|b| SYMBOLS.contains(&b) || b.is_ascii_alphanumeric())),
            "{shown}"
        );
        assert!(shown.contains("1000 attempts"), "{shown}");
    }
}
