//! Mapping expressions: a sandboxed minijinja environment with a small, whitelisted function
//! library, and the load-time checks that make a typo an error with a position instead of an
//! empty value at run time.
//!
//! Every expression is compiled with [`UndefinedBehavior::Strict`], a fuel limit and a low
//! recursion limit. The only variables an expression may use are the attributes its mapping
//! declares in `[source]`; the only callables are the functions of [`FUNCTIONS`] and the
//! lookup tables the mapping names.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use minijinja::value::{Rest, Value, ValueKind};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use super::table::Table;

/// Fuel for one evaluation: far more than any sensible mapping expression needs (a
/// `lower(trim(x))` uses about ten), small enough to stop a runaway one at once.
pub const FUEL: u64 = 5_000;

/// Recursion limit for one evaluation (nested calls and literals).
const RECURSION_LIMIT: usize = 32;

/// The functions an expression may call (also usable as filters: `x | lower`), with the
/// aliases Entra provisioning admins know (`ToLower`, `Coalesce`, `IIF`, ...).
pub const FUNCTIONS: &[&str] = &[
    "lower",
    "upper",
    "trim",
    "replace",
    "split",
    "join",
    "first",
    "coalesce",
    "normalize_diacritics",
    "lookup",
    "domain",
    "local_part",
    "iif",
    "ToLower",
    "ToUpper",
    "Trim",
    "Replace",
    "Split",
    "Join",
    "Coalesce",
    "NormalizeDiacritics",
    "IIF",
];

/// Builds the sandboxed environment of one mapping, with its lookup tables.
pub fn environment(tables: Arc<BTreeMap<String, Table>>) -> Environment<'static> {
    let mut env = Environment::empty();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);

    for (names, f) in [
        (["lower", "ToLower"], lower as fn(Value) -> Value),
        (["upper", "ToUpper"], upper),
        (["trim", "Trim"], trim),
        (
            ["normalize_diacritics", "NormalizeDiacritics"],
            normalize_diacritics,
        ),
        (["domain", "domain"], domain),
        (["local_part", "local_part"], local_part),
        (["first", "first"], first),
    ] {
        for name in names {
            env.add_function(name, f);
            env.add_filter(name, f);
        }
    }
    for name in ["replace", "Replace"] {
        env.add_function(name, replace);
        env.add_filter(name, replace);
    }
    for name in ["split", "Split"] {
        env.add_function(name, split);
        env.add_filter(name, split);
    }
    for name in ["join", "Join"] {
        env.add_function(name, join);
        env.add_filter(name, join);
    }
    for name in ["coalesce", "Coalesce"] {
        env.add_function(name, coalesce);
    }
    for name in ["iif", "IIF"] {
        env.add_function(name, iif);
    }
    env.add_function(
        "lookup",
        move |table: String,
              key: Value,
              default: Option<Value>|
              -> Result<Value, minijinja::Error> {
            let Some(t) = tables.get(&table) else {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("no lookup table `{table}` in this mapping"),
                ));
            };
            let found = key.as_str().and_then(|k| t.get(k));
            Ok(match found {
                Some(v) => Value::from(v),
                None => default.unwrap_or(Value::from(())),
            })
        },
    );
    env.add_test("defined", minijinja::tests::is_defined);
    env.add_test("undefined", minijinja::tests::is_undefined);
    env.add_test("none", minijinja::tests::is_none);
    env.add_test("string", minijinja::tests::is_string);
    env.add_test("sequence", minijinja::tests::is_sequence);
    env.add_test("startingwith", minijinja::tests::is_startingwith);
    env.add_test("endingwith", minijinja::tests::is_endingwith);
    env
}

/// Whether a value carries nothing: undefined, none, an empty or blank string, an empty list.
pub fn is_empty(v: &Value) -> bool {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => true,
        ValueKind::String => v.as_str().is_none_or(|s| s.trim().is_empty()),
        ValueKind::Seq => v.len() == Some(0),
        _ => false,
    }
}

/// Applies a string function to a string, to each string of a list, and passes none through.
fn map_str(v: Value, f: &dyn Fn(&str) -> String) -> Value {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => Value::from(()),
        ValueKind::Seq | ValueKind::Iterable => match v.try_iter() {
            Ok(items) => Value::from(items.map(|i| map_str(i, f)).collect::<Vec<_>>()),
            Err(_) => Value::from(()),
        },
        ValueKind::String => Value::from(f(v.as_str().unwrap_or_default())),
        _ => Value::from(f(&v.to_string())),
    }
}

fn lower(v: Value) -> Value {
    map_str(v, &str::to_lowercase)
}

fn upper(v: Value) -> Value {
    map_str(v, &str::to_uppercase)
}

fn trim(v: Value) -> Value {
    map_str(v, &|s| s.trim().to_string())
}

fn domain(v: Value) -> Value {
    match v.as_str().and_then(|s| s.rsplit_once('@')) {
        Some((_, d)) => Value::from(d),
        None => Value::from(()),
    }
}

fn local_part(v: Value) -> Value {
    match v.as_str().and_then(|s| s.rsplit_once('@')) {
        Some((l, _)) => Value::from(l),
        None => Value::from(()),
    }
}

fn first(v: Value) -> Value {
    match v.kind() {
        ValueKind::Seq | ValueKind::Iterable => v
            .try_iter()
            .ok()
            .and_then(|mut i| i.next())
            .unwrap_or(Value::from(())),
        _ => v,
    }
}

/// Removes accents and folds the letters that have no decomposition (`ß`, `æ`, `ø`, `ł`...),
/// the way Entra provisioning's `NormalizeDiacritics` does.
pub fn fold_diacritics(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.nfd() {
        if is_combining_mark(c) {
            continue;
        }
        match c {
            'ß' => out.push_str("ss"),
            'æ' => out.push_str("ae"),
            'Æ' => out.push_str("AE"),
            'œ' => out.push_str("oe"),
            'Œ' => out.push_str("OE"),
            'ø' => out.push('o'),
            'Ø' => out.push('O'),
            'ł' => out.push('l'),
            'Ł' => out.push('L'),
            'đ' => out.push('d'),
            'Đ' => out.push('D'),
            'þ' => out.push_str("th"),
            'Þ' => out.push_str("TH"),
            'ı' => out.push('i'),
            _ => out.push(c),
        }
    }
    out
}

fn normalize_diacritics(v: Value) -> Value {
    map_str(v, &fold_diacritics)
}

fn replace(v: Value, from: String, to: String) -> Value {
    if from.is_empty() {
        return v;
    }
    map_str(v, &|s| s.replace(&from, &to))
}

fn split(v: Value, sep: Option<String>) -> Value {
    match v.as_str() {
        None => Value::from(()),
        Some(s) => {
            let parts: Vec<Value> = match sep.as_deref() {
                None | Some("") => s.split_whitespace().map(Value::from).collect(),
                Some(sep) => s.split(sep).map(Value::from).collect(),
            };
            Value::from(parts)
        }
    }
}

fn join(v: Value, sep: Option<String>) -> Value {
    let sep = sep.unwrap_or_default();
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => Value::from(()),
        ValueKind::Seq | ValueKind::Iterable => match v.try_iter() {
            Ok(items) => Value::from(
                items
                    .filter(|i| !i.is_none() && !i.is_undefined())
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(&sep),
            ),
            Err(_) => Value::from(()),
        },
        _ => v,
    }
}

fn coalesce(args: Rest<Value>) -> Value {
    args.0
        .into_iter()
        .find(|v| !is_empty(v))
        .unwrap_or(Value::from(()))
}

fn iif(cond: Value, yes: Value, no: Value) -> Value {
    if cond.is_true() { yes } else { no }
}

/// A problem found in an expression at load time, with the byte offset inside the
/// expression text where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// minijinja refused the syntax.
    Syntax { message: String, offset: usize },
    /// A variable that is not a declared attribute.
    UnknownAttribute {
        name: String,
        offset: usize,
        suggestion: Option<String>,
    },
    /// A call to a function that is not in the library.
    UnknownFunction {
        name: String,
        offset: usize,
        suggestion: Option<String>,
    },
    /// `lookup` names a table the mapping does not define, or not as a literal.
    UnknownTable { name: Option<String>, offset: usize },
}

/// Compiles `source` in `env` and checks every name it uses against the declared attributes
/// (`declared`, by the name the expression sees) and the mapping's tables.
pub fn check(
    env: &Environment<'static>,
    source: &str,
    declared: &BTreeSet<String>,
    tables: &BTreeSet<String>,
) -> Result<(), Problem> {
    let expr = env
        .compile_expression(source)
        .map_err(|e| Problem::Syntax {
            message: e.detail().unwrap_or("invalid expression").to_string(),
            // Without minijinja's `debug` feature there is no span: point at the expression.
            offset: 0,
        })?;
    let mut names: Vec<String> = expr.undeclared_variables(false).into_iter().collect();
    names.sort();
    for name in names {
        let offset = find_identifier(source, &name).unwrap_or(0);
        let called = source
            .get(offset + name.len()..)
            .is_some_and(|rest| rest.trim_start().starts_with('('));
        if FUNCTIONS.contains(&name.as_str()) {
            continue;
        }
        if declared.contains(&name) && !called {
            continue;
        }
        if called {
            return Err(Problem::UnknownFunction {
                suggestion: closest(&name, FUNCTIONS.iter().copied()),
                name,
                offset,
            });
        }
        return Err(Problem::UnknownAttribute {
            suggestion: closest(&name, declared.iter().map(String::as_str)),
            name,
            offset,
        });
    }
    check_lookups(source, tables)
}

/// Every `lookup(` call must name one of the mapping's tables as a quoted literal, so a
/// misspelt table is caught at load rather than on the first account that reaches it.
fn check_lookups(source: &str, tables: &BTreeSet<String>) -> Result<(), Problem> {
    let mut from = 0;
    while let Some(rel) = find_identifier(&source[from..], "lookup") {
        let at = from + rel;
        from = at + "lookup".len();
        let rest = source[from..].trim_start();
        let Some(args) = rest.strip_prefix('(') else {
            continue;
        };
        let args = args.trim_start();
        let quote = args.chars().next();
        let literal = match quote {
            Some(q @ ('"' | '\'')) => args[1..].split(q).next().map(str::to_string),
            _ => None,
        };
        match literal {
            Some(name) if tables.contains(&name) => {}
            name => return Err(Problem::UnknownTable { name, offset: at }),
        }
    }
    Ok(())
}

/// Byte offset of the first occurrence of `name` as a whole identifier outside string literals.
pub fn find_identifier(source: &str, name: &str) -> Option<usize> {
    let bytes = source.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == b'\\' {
                i += 2;
                continue;
            }
            if b == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if b == b'"' || b == b'\'' {
            quote = Some(b);
            i += 1;
            continue;
        }
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        if bytes[i..].starts_with(name.as_bytes())
            && (i == 0 || !ident(bytes[i - 1]))
            && bytes.get(i + name.len()).is_none_or(|c| !ident(*c))
        {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The candidate closest to `name` (case-insensitive edit distance), when it is close enough
/// to be a plausible typo.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let lower = name.to_lowercase();
    candidates
        .map(|c| (distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| c.to_string())
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use minijinja::context;

    fn env() -> Environment<'static> {
        let mut t = BTreeMap::new();
        t.insert(
            "partners".to_string(),
            Table::from_pairs([("p.adams", "ana@fabrikam.example")]),
        );
        environment(Arc::new(t))
    }

    fn eval(src: &str, ctx: Value) -> Value {
        let env = env();
        let e = env.compile_expression(src).unwrap();
        e.eval(ctx).unwrap()
    }

    #[test]
    fn functions_do_what_the_docs_say() {
        let ctx = context!(m => "  Ana.Adams@Fabrikam.Example ", n => (), sam => "P.ADAMS");
        assert_eq!(
            eval("lower(trim(m))", ctx.clone()).as_str(),
            Some("ana.adams@fabrikam.example")
        );
        assert_eq!(
            eval("m | trim | upper", ctx.clone()).as_str(),
            Some("ANA.ADAMS@FABRIKAM.EXAMPLE")
        );
        assert_eq!(
            eval("coalesce(n, '', m)", ctx.clone()).as_str(),
            Some("  Ana.Adams@Fabrikam.Example ")
        );
        assert!(eval("lower(n)", ctx.clone()).is_none());
        assert_eq!(
            eval("lookup('partners', lower(sam))", ctx.clone()).as_str(),
            Some("ana@fabrikam.example")
        );
        assert!(eval("lookup('partners', 'nobody')", ctx.clone()).is_none());
        assert_eq!(
            eval("domain(trim(m))", ctx.clone()).as_str(),
            Some("Fabrikam.Example")
        );
        assert_eq!(
            eval("join(split('a b  c'), '.')", ctx.clone()).as_str(),
            Some("a.b.c")
        );
        assert_eq!(
            eval("replace(sam, 'P.', 'x-')", ctx.clone()).as_str(),
            Some("x-ADAMS")
        );
        assert_eq!(
            eval("normalize_diacritics('Élodie Øster Straße')", ctx.clone()).as_str(),
            Some("Elodie Oster Strasse")
        );
        assert_eq!(eval("IIF(n is none, 'a', 'b')", ctx).as_str(), Some("a"));
    }

    #[test]
    fn undeclared_names_are_errors_with_offsets() {
        let env = env();
        let declared: BTreeSet<String> = ["otherMailbox".to_string()].into();
        let tables: BTreeSet<String> = ["partners".to_string()].into();
        assert_eq!(
            check(&env, "lower(otherMailbox)", &declared, &tables),
            Ok(())
        );
        match check(&env, "lower(otherMailbx)", &declared, &tables) {
            Err(Problem::UnknownAttribute {
                name,
                offset,
                suggestion,
            }) => {
                assert_eq!((name.as_str(), offset), ("otherMailbx", 6));
                assert_eq!(suggestion.as_deref(), Some("otherMailbox"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check(&env, "lowr(otherMailbox)", &declared, &tables),
            Err(Problem::UnknownFunction { offset: 0, .. })
        ));
        assert!(matches!(
            check(&env, "lookup('partner', otherMailbox)", &declared, &tables),
            Err(Problem::UnknownTable { .. })
        ));
        assert!(matches!(
            check(&env, "lower(", &declared, &tables),
            Err(Problem::Syntax { .. })
        ));
        // A name inside a string literal is not a variable.
        assert_eq!(
            check(&env, "'x' ~ otherMailbox", &declared, &tables),
            Ok(())
        );
    }

    #[test]
    fn runaway_expressions_run_out_of_fuel() {
        let env = env();
        let e = env
            .compile_expression("join(split('a ' * 100000))")
            .unwrap();
        // Either refused for fuel or finished: never hangs, never panics.
        let _ = e.eval(context!());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod doc_examples {
    //! Every example of docs/mapping.md evaluates as documented.
    use super::*;
    use minijinja::context;

    #[test]
    fn documented_syntax_and_functions_work() {
        let env = environment(Arc::new(BTreeMap::new()));
        let ctx = context!(
            company => "X", department => "Sales", otherMailbox => " A@B.example ",
            sAMAccountName => "svc-x", mail => (), givenName => "Élodie", sn => "Dübois",
            x => "abc", proxyAddresses => vec!["SMTP:a@b.example", "smtp:c@d.example"],
        );
        let cases = [
            ("company != 'Internal'", "True"),
            (
                "department in ['Logistics', 'Sales'] and otherMailbox is not none",
                "True",
            ),
            ("department not in ['Logistics']", "True"),
            ("otherMailbox | trim | lower", "a@b.example"),
            (
                "otherMailbox if otherMailbox is not none else mail",
                " A@B.example ",
            ),
            (
                "x is string and x is startingwith('a') and x is endingwith('c')",
                "True",
            ),
            ("split('a;b', ';')[0]", "a"),
            ("first(proxyAddresses)", "SMTP:a@b.example"),
            (
                "normalize_diacritics(lower(givenName ~ '.' ~ sn)) ~ '@fabrikam.example'",
                "elodie.dubois@fabrikam.example",
            ),
            ("iif(company == 'X', 'x', 'y')", "x"),
            ("coalesce(mail, otherMailbox) | trim", "A@B.example"),
            (
                "local_part('a@fabrikam.example') ~ '|' ~ domain('a@fabrikam.example')",
                "a|fabrikam.example",
            ),
            ("ToLower(Trim(otherMailbox))", "a@b.example"),
            ("join(['a', none, 'b'], '.')", "a.b"),
            (
                "(sAMAccountName | lower) is not startingwith('svc-')",
                "False",
            ),
        ];
        for (src, want) in cases {
            let v = env
                .compile_expression(src)
                .unwrap_or_else(|e| panic!("{src}: {e}"))
                .eval(ctx.clone())
                .unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(v.to_string(), want, "{src}");
        }
    }
}
