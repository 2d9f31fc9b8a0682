//! Random passwords for the on-premises randomization step: drawn from the OS CSPRNG, made to
//! satisfy AD complexity (including "must not contain the account name"), used once, never
//! stored or printed.

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

/// A fresh random password of `length` (at least 16) characters with upper, lower, digit and
/// symbol characters, which contains neither `account_name` nor any token of `display_name`
/// of three or more characters (AD's rule), compared case-insensitively.
pub fn generate(length: usize, account_name: &str, display_name: Option<&str>) -> SecretString {
    let length = length.max(16);
    let mut forbidden: Vec<String> = Vec::new();
    if account_name.chars().count() > 2 {
        forbidden.push(account_name.to_lowercase());
    }
    if let Some(name) = display_name {
        forbidden.extend(
            name.split(|c: char| !c.is_alphanumeric())
                .filter(|t| t.chars().count() >= 3)
                .map(str::to_lowercase),
        );
    }
    // OsRng reads the operating system's CSPRNG; unwrap_err panics only if the OS cannot
    // provide randomness at all, in which case no safe password can exist.
    let mut rng = OsRng.unwrap_err();
    let all: Vec<u8> = [UPPER, LOWER, DIGITS, SYMBOLS].concat();
    loop {
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
        if forbidden.iter().all(|f| !lower.contains(f.as_str())) {
            return SecretString::from(text.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn meets_complexity_and_length() {
        for _ in 0..200 {
            let pw = generate(DEFAULT_LENGTH, "p.adams", Some("Ana Adams"));
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
            let pw = generate(16, "abc", Some("Xy Zzz"));
            let lower = pw.expose_secret().to_lowercase();
            assert!(!lower.contains("abc"));
            assert!(!lower.contains("zzz"));
        }
    }

    #[test]
    fn two_passwords_differ_and_debug_hides_them() {
        let a = generate(24, "x", None);
        let b = generate(24, "x", None);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(!format!("{a:?}").contains(a.expose_secret()));
    }
}
