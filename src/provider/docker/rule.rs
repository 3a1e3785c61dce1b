//! Traefik router rules: `Host`, `PathPrefix` and `Path` matchers joined by
//! `&&`, `||` and parentheses (pure).
//!
//! A rule is parsed into the alternatives it matches, each a host (or any)
//! and a path condition (or any): the disjunctive normal form of the
//! expression. `Host(`a`, `b`)` (Traefik v2) and `Host(`a`) || Host(`b`)`
//! (v3) both give two alternatives. A conjunction that can never match
//! (`Host(`a`) && Host(`b`)`) is dropped; a rule left with none is an error,
//! as is any matcher or operator cutover does not route on (`!`,
//! `Headers`, `PathRegexp`, ...): a router is either routed exactly as
//! written or left out, never approximated.

use std::fmt;

/// The path condition of one alternative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The path starts with this (`PathPrefix`).
    Prefix(String),
    /// The path is exactly this (`Path`).
    Exact(String),
}

/// One way a rule matches: a host and a path condition, either of which
/// may be absent (any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    /// The host, lowercased, without a port.
    pub host: Option<String>,
    /// The path condition.
    pub path: Option<PathMatch>,
}

/// Why a rule cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// 1-based character position in the rule where the problem is.
    pub at: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at character {}: {}", self.at, self.message)
    }
}

/// Parses `rule` into the alternatives it matches, in the order written.
///
/// # Errors
///
/// [`RuleError`] naming where the rule does not parse, a matcher or
/// operator cutover does not route on, a bad host or path, or a rule that
/// can never match.
pub fn parse(rule: &str) -> Result<Vec<Alternative>, RuleError> {
    let tokens = lex(rule)?;
    let end = rule.chars().count() + 1;
    let mut parser = Parser {
        tokens,
        pos: 0,
        end,
    };
    let alternatives = parser.or()?;
    if let Some(token) = parser.tokens.get(parser.pos) {
        return Err(RuleError {
            at: token.at,
            message: format!("unexpected {} (expected `&&`, `||` or the end)", token.kind),
        });
    }
    if alternatives.is_empty() {
        return Err(RuleError {
            at: 1,
            message: "the rule can never match (its conditions contradict each other)".into(),
        });
    }
    Ok(alternatives)
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Name(String),
    Str(String),
    Open,
    Close,
    Comma,
    And,
    Or,
    Not,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Name(n) => write!(f, "`{n}`"),
            Kind::Str(s) => write!(f, "the string {s:?}"),
            Kind::Open => f.write_str("`(`"),
            Kind::Close => f.write_str("`)`"),
            Kind::Comma => f.write_str("`,`"),
            Kind::And => f.write_str("`&&`"),
            Kind::Or => f.write_str("`||`"),
            Kind::Not => f.write_str("`!`"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    /// 1-based character position.
    at: usize,
}

fn lex(rule: &str) -> Result<Vec<Token>, RuleError> {
    let chars: Vec<char> = rule.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = i + 1;
        let kind = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => Kind::Open,
            ')' => Kind::Close,
            ',' => Kind::Comma,
            '!' => Kind::Not,
            '&' | '|' => {
                if chars.get(i + 1) != Some(&c) {
                    return Err(RuleError {
                        at,
                        message: format!("`{c}` alone (expected `{c}{c}`)"),
                    });
                }
                i += 1;
                if c == '&' {
                    Kind::And
                } else {
                    Kind::Or
                }
            }
            '`' | '"' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|d| *d == c)
                    .ok_or_else(|| RuleError {
                        at,
                        message: format!("a string opened with {c} is not closed"),
                    })?;
                let s: String = chars[i + 1..i + 1 + end].iter().collect();
                i += end + 1;
                Kind::Str(s)
            }
            c if c.is_ascii_alphabetic() => {
                let end = chars[i..]
                    .iter()
                    .position(|d| !d.is_ascii_alphanumeric())
                    .unwrap_or(chars.len() - i);
                let name: String = chars[i..i + end].iter().collect();
                i += end - 1;
                Kind::Name(name)
            }
            other => {
                return Err(RuleError {
                    at,
                    message: format!("unexpected character {other:?}"),
                })
            }
        };
        tokens.push(Token { kind, at });
        i += 1;
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// The position just past the rule.
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Kind> {
        self.tokens.get(self.pos).map(|t| &t.kind)
    }

    /// Where the next token is (or the end).
    fn here(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |t| t.at)
    }

    fn or(&mut self) -> Result<Vec<Alternative>, RuleError> {
        let mut out = self.and()?;
        while self.peek() == Some(&Kind::Or) {
            self.pos += 1;
            out.extend(self.and()?);
        }
        Ok(out)
    }

    fn and(&mut self) -> Result<Vec<Alternative>, RuleError> {
        let mut out = self.unary()?;
        while self.peek() == Some(&Kind::And) {
            self.pos += 1;
            let right = self.unary()?;
            out = out
                .iter()
                .flat_map(|a| right.iter().filter_map(move |b| both(a, b)))
                .collect();
        }
        Ok(out)
    }

    fn unary(&mut self) -> Result<Vec<Alternative>, RuleError> {
        let at = self.here();
        match self.peek().cloned() {
            Some(Kind::Not) => Err(RuleError {
                at,
                message: "negation (`!`) is not supported: cutover routes on Host, PathPrefix \
                          and Path joined by && and ||"
                    .into(),
            }),
            Some(Kind::Open) => {
                self.pos += 1;
                let inner = self.or()?;
                self.expect(&Kind::Close, "`)`")?;
                Ok(inner)
            }
            Some(Kind::Name(name)) => {
                self.pos += 1;
                self.matcher(&name, at)
            }
            Some(other) => Err(RuleError {
                at,
                message: format!(
                    "unexpected {other} (expected a matcher such as Host(`example.com`))"
                ),
            }),
            None => Err(RuleError {
                at,
                message: "the rule ends early (expected a matcher such as Host(`example.com`))"
                    .into(),
            }),
        }
    }

    fn expect(&mut self, kind: &Kind, what: &str) -> Result<(), RuleError> {
        if self.peek() == Some(kind) {
            self.pos += 1;
            return Ok(());
        }
        let found = match self.peek() {
            Some(k) => k.to_string(),
            None => "the end".into(),
        };
        Err(RuleError {
            at: self.here(),
            message: format!("expected {what}, found {found}"),
        })
    }

    /// `Name(`arg`, ...)` after its name.
    fn matcher(&mut self, name: &str, at: usize) -> Result<Vec<Alternative>, RuleError> {
        self.expect(&Kind::Open, &format!("`(` after {name}"))?;
        let mut args = Vec::new();
        loop {
            let arg_at = self.here();
            match self.peek().cloned() {
                Some(Kind::Str(s)) => {
                    self.pos += 1;
                    args.push((s, arg_at));
                }
                _ => {
                    return Err(RuleError {
                        at: arg_at,
                        message: format!("{name} takes quoted values, e.g. {name}(`value`)"),
                    })
                }
            }
            if self.peek() == Some(&Kind::Comma) {
                self.pos += 1;
                continue;
            }
            self.expect(&Kind::Close, "`)` or `,`")?;
            break;
        }
        let each = |make: &dyn Fn(&str, usize) -> Result<Alternative, RuleError>| {
            args.iter().map(|(s, at)| make(s, *at)).collect()
        };
        match name.to_ascii_lowercase().as_str() {
            "host" | "hostheader" => each(&|s, at| {
                Ok(Alternative {
                    host: Some(host(s, at)?),
                    path: None,
                })
            }),
            "pathprefix" => each(&|s, at| {
                Ok(Alternative {
                    host: None,
                    path: Some(PathMatch::Prefix(path(s, at)?)),
                })
            }),
            "path" => each(&|s, at| {
                Ok(Alternative {
                    host: None,
                    path: Some(PathMatch::Exact(path(s, at)?)),
                })
            }),
            _ => Err(RuleError {
                at,
                message: format!(
                    "matcher {name} is not supported: cutover routes on Host, PathPrefix and Path"
                ),
            }),
        }
    }
}

/// The alternative matching both `a` and `b`, if one can.
fn both(a: &Alternative, b: &Alternative) -> Option<Alternative> {
    let host = match (&a.host, &b.host) {
        (Some(x), Some(y)) if x != y => return None,
        (x, y) => x.clone().or_else(|| y.clone()),
    };
    let path = match (&a.path, &b.path) {
        (None, p) | (p, None) => p.clone(),
        (Some(PathMatch::Exact(x)), Some(PathMatch::Exact(y))) => {
            if x != y {
                return None;
            }
            Some(PathMatch::Exact(x.clone()))
        }
        (Some(PathMatch::Exact(e)), Some(PathMatch::Prefix(p)))
        | (Some(PathMatch::Prefix(p)), Some(PathMatch::Exact(e))) => {
            if !e.starts_with(p.as_str()) {
                return None;
            }
            Some(PathMatch::Exact(e.clone()))
        }
        (Some(PathMatch::Prefix(x)), Some(PathMatch::Prefix(y))) => {
            if x.starts_with(y.as_str()) {
                Some(PathMatch::Prefix(x.clone()))
            } else if y.starts_with(x.as_str()) {
                Some(PathMatch::Prefix(y.clone()))
            } else {
                return None;
            }
        }
    };
    Some(Alternative { host, path })
}

/// A host name or IP literal, lowercased; a port is not part of a Host rule.
fn host(s: &str, at: usize) -> Result<String, RuleError> {
    let bad = |why: &str| RuleError {
        at,
        message: format!("Host value {s:?} {why}"),
    };
    if s.is_empty() {
        return Err(bad("is empty"));
    }
    if s.contains(':') && s.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(bad("has a port (Host matches the name only)"));
    }
    let ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
    if !ok {
        return Err(bad("is not a host name (expected e.g. example.com)"));
    }
    Ok(s.to_ascii_lowercase())
}

/// A path: it starts with `/`.
fn path(s: &str, at: usize) -> Result<String, RuleError> {
    if !s.starts_with('/') {
        return Err(RuleError {
            at,
            message: format!("path {s:?} does not start with / (expected e.g. `/api`)"),
        });
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RuleError {
            at,
            message: format!("path {s:?} contains white space or control characters"),
        });
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests;
