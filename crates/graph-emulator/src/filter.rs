//! The `$filter` subset of contract §2.1/§3.2: a small OData expression parser, the check of
//! which clauses need advanced query parameters (`ConsistencyLevel: eventual` + `$count=true`),
//! and evaluation against a user's Graph view. Pure functions, no I/O.

use serde_json::{Map, Value};

use super::directory::canonical_property;

/// A parsed `$filter` expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare {
        prop: String,
        op: Op,
        value: Literal,
    },
    In {
        prop: String,
        values: Vec<Literal>,
    },
    StartsWith {
        prop: String,
        value: String,
    },
    EndsWith {
        prop: String,
        value: String,
    },
    Any {
        prop: String,
        inner: Box<Expr>,
    },
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// Literal values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Str(String),
    Bool(bool),
    Null,
    Num(f64),
}

/// Why a filter was refused; each maps to one exact Graph error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FilterError {
    /// 400 BadRequest "Invalid filter clause: ...".
    Syntax(String),
    /// 400 BadRequest: the property does not exist on user.
    UnknownProperty(String),
    /// 400 Request_UnsupportedQuery: clause not supported for the property.
    Unsupported(String),
    /// 400 Request_UnsupportedQuery "The request uses a filter property that is not indexed".
    NotIndexed,
}

/// What a filter needs to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Need {
    Default,
    Advanced,
}

/// The value inside a lambda: `x` in `otherMails/any(x:x eq 'a')`.
const LAMBDA_SELF: &str = "$it";

const EQ_DEFAULT: &[&str] = &[
    "id",
    "userPrincipalName",
    "mail",
    "userType",
    "onPremisesImmutableId",
    "onPremisesSyncEnabled",
    "externalUserState",
    "employeeId",
    "accountEnabled",
    "creationType",
    "displayName",
    "givenName",
    "surname",
    "mailNickname",
    "onPremisesSecurityIdentifier",
    "onPremisesUserPrincipalName",
    "jobTitle",
    "department",
    "officeLocation",
    "preferredLanguage",
    "mobilePhone",
    "externalUserStateChangeDateTime",
    "createdDateTime",
];
const EQ_ADVANCED: &[&str] = &["onPremisesSamAccountName"];
const STARTS_DEFAULT: &[&str] = &[
    "userPrincipalName",
    "mail",
    "displayName",
    "givenName",
    "surname",
    "mailNickname",
    "onPremisesUserPrincipalName",
    "jobTitle",
    "department",
    "employeeId",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
];
const STARTS_ADVANCED: &[&str] = &["onPremisesSamAccountName"];
const ENDS_ADVANCED: &[&str] = &["mail", "userPrincipalName"];
const RANGE_DEFAULT: &[&str] = &["externalUserStateChangeDateTime", "createdDateTime"];
const COLLECTIONS: &[&str] = &[
    "otherMails",
    "proxyAddresses",
    "identities",
    "businessPhones",
];

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(f64),
    Open,
    Close,
    Comma,
    Colon,
}

fn lex(input: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            ':' => {
                tokens.push(Token::Colon);
                i += 1;
            }
            '\'' => {
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(FilterError::Syntax(format!(
                                "Unterminated string literal at position {i} in '{input}'."
                            )));
                        }
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            value.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(other) => {
                            value.push(*other);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token::Str(value));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || ".-:".contains(chars[i]))
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let number = text.parse::<f64>().map_err(|_| {
                    FilterError::Syntax(format!("Syntax error at position {start} in '{input}'."))
                })?;
                tokens.push(Token::Num(number));
            }
            c if c.is_alphabetic() || c == '_' || c == '$' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || "_/$.@".contains(chars[i]))
                {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
            }
            _ => {
                return Err(FilterError::Syntax(format!(
                    "Syntax error: character '{c}' is not valid at position {i} in '{input}'."
                )));
            }
        }
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    input: &'a str,
    /// The lambda variable currently in scope, if any.
    lambda: Option<String>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn syntax(&self) -> FilterError {
        FilterError::Syntax(format!(
            "Syntax error at position {} in '{}'.",
            self.pos, self.input
        ))
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Ident(w)) if w.eq_ignore_ascii_case(word))
    }

    fn expect(&mut self, token: &Token) -> Result<(), FilterError> {
        if self.next().as_ref() == Some(token) {
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.keyword("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    /// Resolves a property path to its canonical name (or a lambda-relative name).
    fn property(&self, path: &str) -> Result<String, FilterError> {
        if let Some(var) = &self.lambda {
            if path == var {
                return Ok(LAMBDA_SELF.to_owned());
            }
            if let Some(rest) = path.strip_prefix(&format!("{var}/")) {
                return Ok(rest.to_owned());
            }
        }
        canonical_property(path)
            .map(str::to_owned)
            .ok_or_else(|| FilterError::UnknownProperty(path.to_owned()))
    }

    fn literal(&mut self) -> Result<Literal, FilterError> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Literal::Str(s)),
            Some(Token::Num(n)) => Ok(Literal::Num(n)),
            Some(Token::Ident(w)) if w.eq_ignore_ascii_case("true") => Ok(Literal::Bool(true)),
            Some(Token::Ident(w)) if w.eq_ignore_ascii_case("false") => Ok(Literal::Bool(false)),
            Some(Token::Ident(w)) if w.eq_ignore_ascii_case("null") => Ok(Literal::Null),
            _ => Err(self.syntax()),
        }
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        let token = self.next().ok_or_else(|| self.syntax())?;
        let name = match token {
            Token::Open => {
                let inner = self.or()?;
                self.expect(&Token::Close)?;
                return Ok(inner);
            }
            Token::Ident(name) => name,
            _ => return Err(self.syntax()),
        };
        if self.peek() == Some(&Token::Open) {
            let lower = name.to_ascii_lowercase();
            if lower == "startswith" || lower == "endswith" {
                self.pos += 1;
                let operand = match self.next() {
                    Some(Token::Ident(p)) => self.property(&p)?,
                    _ => return Err(self.syntax()),
                };
                self.expect(&Token::Comma)?;
                let value = match self.next() {
                    Some(Token::Str(s)) => s,
                    _ => return Err(self.syntax()),
                };
                self.expect(&Token::Close)?;
                return Ok(if lower == "startswith" {
                    Expr::StartsWith {
                        prop: operand,
                        value,
                    }
                } else {
                    Expr::EndsWith {
                        prop: operand,
                        value,
                    }
                });
            }
            if let Some(collection) = name
                .strip_suffix("/any")
                .or_else(|| name.strip_suffix("/ANY"))
            {
                self.pos += 1;
                let prop = self.property(collection)?;
                let var = match self.next() {
                    Some(Token::Ident(v)) => v,
                    _ => return Err(self.syntax()),
                };
                self.expect(&Token::Colon)?;
                let outer = self.lambda.replace(var);
                let inner = self.or();
                self.lambda = outer;
                let inner = inner?;
                self.expect(&Token::Close)?;
                return Ok(Expr::Any {
                    prop,
                    inner: Box::new(inner),
                });
            }
            return Err(FilterError::Syntax(format!(
                "Unknown function '{name}' in '{}'.",
                self.input
            )));
        }
        let prop = self.property(&name)?;
        let op = match self.next() {
            Some(Token::Ident(op)) => op.to_ascii_lowercase(),
            _ => return Err(self.syntax()),
        };
        let op = match op.as_str() {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            "in" => {
                self.expect(&Token::Open)?;
                let mut values = vec![self.literal()?];
                while self.peek() == Some(&Token::Comma) {
                    self.pos += 1;
                    values.push(self.literal()?);
                }
                self.expect(&Token::Close)?;
                return Ok(Expr::In { prop, values });
            }
            _ => return Err(self.syntax()),
        };
        let value = self.literal()?;
        Ok(Expr::Compare { prop, op, value })
    }
}

/// Parses a `$filter` value.
pub(crate) fn parse(input: &str) -> Result<Expr, FilterError> {
    if input.len() > 4096 {
        return Err(FilterError::Syntax("The filter is too long.".into()));
    }
    let mut parser = Parser {
        tokens: lex(input)?,
        pos: 0,
        input,
        lambda: None,
    };
    let expr = parser.or()?;
    if parser.pos != parser.tokens.len() {
        return Err(parser.syntax());
    }
    Ok(expr)
}

/// What the filter needs to run: default support, or advanced query parameters.
pub(crate) fn need(expr: &Expr) -> Result<Need, FilterError> {
    let has = |list: &[&str], prop: &str| list.contains(&prop);
    match expr {
        Expr::And(a, b) | Expr::Or(a, b) => Ok(need(a)?.max(need(b)?)),
        Expr::Not(inner) => {
            need(inner)?;
            Ok(Need::Advanced)
        }
        Expr::Compare { prop, op, value } => {
            let eq_ok = has(EQ_DEFAULT, prop) || has(EQ_ADVANCED, prop);
            match op {
                Op::Eq if !eq_ok => Err(FilterError::Unsupported(prop.clone())),
                Op::Eq if *value == Literal::Null => Ok(Need::Advanced),
                Op::Eq if has(EQ_ADVANCED, prop) => Ok(Need::Advanced),
                Op::Eq => Ok(Need::Default),
                Op::Ne if eq_ok => Ok(Need::Advanced),
                Op::Ne => Err(FilterError::Unsupported(prop.clone())),
                Op::Ge | Op::Le | Op::Gt | Op::Lt if has(RANGE_DEFAULT, prop) => Ok(Need::Default),
                Op::Ge | Op::Le | Op::Gt | Op::Lt if eq_ok => Err(FilterError::NotIndexed),
                Op::Ge | Op::Le | Op::Gt | Op::Lt => Err(FilterError::Unsupported(prop.clone())),
            }
        }
        Expr::In { prop, values } => {
            let advanced = values.contains(&Literal::Null) || has(EQ_ADVANCED, prop);
            if !has(EQ_DEFAULT, prop) && !has(EQ_ADVANCED, prop) {
                Err(FilterError::Unsupported(prop.clone()))
            } else if advanced {
                Ok(Need::Advanced)
            } else {
                Ok(Need::Default)
            }
        }
        Expr::StartsWith { prop, .. } if has(STARTS_DEFAULT, prop) => Ok(Need::Default),
        Expr::StartsWith { prop, .. } if has(STARTS_ADVANCED, prop) => Ok(Need::Advanced),
        Expr::EndsWith { prop, .. } if has(ENDS_ADVANCED, prop) => Ok(Need::Advanced),
        Expr::StartsWith { prop, .. } | Expr::EndsWith { prop, .. } => {
            Err(FilterError::Unsupported(prop.clone()))
        }
        Expr::Any { prop, inner } => {
            if !COLLECTIONS.contains(&prop.as_str()) {
                return Err(FilterError::Unsupported(prop.clone()));
            }
            lambda_need(prop, inner)
        }
    }
}

/// Support inside `any(...)`: strings take `eq`/`startsWith` (and `endsWith` as AQ); identities
/// need `issuer` and `issuerAssignedId` together.
fn lambda_need(collection: &str, inner: &Expr) -> Result<Need, FilterError> {
    let unsupported = || FilterError::Unsupported(collection.to_owned());
    if collection == "identities" {
        let mut props = Vec::new();
        collect_identity_props(inner, &mut props).ok_or_else(unsupported)?;
        let both =
            props.iter().any(|p| p == "issuer") && props.iter().any(|p| p == "issuerAssignedId");
        return if both {
            Ok(Need::Default)
        } else {
            Err(unsupported())
        };
    }
    match inner {
        Expr::Compare {
            prop, op: Op::Eq, ..
        }
        | Expr::In { prop, .. }
        | Expr::StartsWith { prop, .. }
            if prop == LAMBDA_SELF =>
        {
            Ok(Need::Default)
        }
        Expr::EndsWith { prop, .. } if prop == LAMBDA_SELF => Ok(Need::Advanced),
        Expr::Or(a, b) => Ok(lambda_need(collection, a)?.max(lambda_need(collection, b)?)),
        _ => Err(unsupported()),
    }
}

fn collect_identity_props(expr: &Expr, out: &mut Vec<String>) -> Option<()> {
    match expr {
        Expr::And(a, b) => {
            collect_identity_props(a, out)?;
            collect_identity_props(b, out)
        }
        Expr::Compare {
            prop, op: Op::Eq, ..
        } if ["issuer", "issuerAssignedId", "signInType"].contains(&prop.as_str()) => {
            out.push(prop.clone());
            Some(())
        }
        _ => None,
    }
}

fn lookup<'a>(view: &'a Map<String, Value>, prop: &str) -> &'a Value {
    view.get(prop).unwrap_or(&Value::Null)
}

fn equals(value: &Value, literal: &Literal) -> bool {
    match (value, literal) {
        (Value::Null, Literal::Null) => true,
        (Value::Array(items), Literal::Null) => items.is_empty(),
        (Value::String(a), Literal::Str(b)) => {
            a.eq_ignore_ascii_case(b) || a.to_lowercase() == b.to_lowercase()
        }
        (Value::Bool(a), Literal::Bool(b)) => a == b,
        (Value::Number(a), Literal::Num(b)) => a.as_f64() == Some(*b),
        _ => false,
    }
}

fn order(value: &Value, literal: &Literal) -> Option<std::cmp::Ordering> {
    match (value, literal) {
        (Value::String(a), Literal::Str(b)) => Some(a.to_lowercase().cmp(&b.to_lowercase())),
        (Value::Number(a), Literal::Num(b)) => a.as_f64()?.partial_cmp(b),
        _ => None,
    }
}

/// Evaluates the filter against a user's Graph view (or a lambda element).
pub(crate) fn eval(expr: &Expr, view: &Map<String, Value>) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match expr {
        Expr::And(a, b) => eval(a, view) && eval(b, view),
        Expr::Or(a, b) => eval(a, view) || eval(b, view),
        Expr::Not(inner) => !eval(inner, view),
        Expr::Compare { prop, op, value } => {
            let actual = lookup(view, prop);
            match op {
                Op::Eq => equals(actual, value),
                Op::Ne => !equals(actual, value),
                Op::Gt => order(actual, value) == Some(Greater),
                Op::Ge => matches!(order(actual, value), Some(Greater | Equal)),
                Op::Lt => order(actual, value) == Some(Less),
                Op::Le => matches!(order(actual, value), Some(Less | Equal)),
            }
        }
        Expr::In { prop, values } => values.iter().any(|v| equals(lookup(view, prop), v)),
        Expr::StartsWith { prop, value } => lookup(view, prop)
            .as_str()
            .is_some_and(|s| s.to_lowercase().starts_with(&value.to_lowercase())),
        Expr::EndsWith { prop, value } => lookup(view, prop)
            .as_str()
            .is_some_and(|s| s.to_lowercase().ends_with(&value.to_lowercase())),
        Expr::Any { prop, inner } => match lookup(view, prop) {
            Value::Array(items) => items.iter().any(|item| {
                let element = match item {
                    Value::Object(map) => map.clone(),
                    other => {
                        let mut map = Map::new();
                        map.insert(LAMBDA_SELF.to_owned(), other.clone());
                        map
                    }
                };
                eval(inner, &element)
            }),
            _ => false,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_duplicate_check_query() {
        let expr = parse(
            "userPrincipalName eq 'a@b.c' or mail eq 'a@b.c' or otherMails/any(x:x eq 'a@b.c')",
        )
        .unwrap();
        assert!(matches!(expr, Expr::Or(..)));
        assert_eq!(need(&expr), Ok(Need::Default));
    }

    #[test]
    fn endswith_needs_advanced_queries() {
        let expr = parse("endsWith(mail,'@outlook.com')").unwrap();
        assert_eq!(need(&expr), Ok(Need::Advanced));
    }

    #[test]
    fn id_ge_is_not_indexed() {
        let expr = parse("id ge 'a'").unwrap();
        assert_eq!(need(&expr), Err(FilterError::NotIndexed));
    }

    #[test]
    fn escaped_quotes_round_trip() {
        let expr = parse("displayName eq 'O''Brien'").unwrap();
        assert_eq!(
            expr,
            Expr::Compare {
                prop: "displayName".into(),
                op: Op::Eq,
                value: Literal::Str("O'Brien".into())
            }
        );
    }

    #[test]
    fn identities_need_issuer_and_assigned_id() {
        let both =
            parse("identities/any(i:i/issuer eq 'x' and i/issuerAssignedId eq 'y')").unwrap();
        assert_eq!(need(&both), Ok(Need::Default));
        let one = parse("identities/any(i:i/issuer eq 'x')").unwrap();
        assert!(matches!(need(&one), Err(FilterError::Unsupported(_))));
    }
}
