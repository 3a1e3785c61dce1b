//! Middleware labels (pure): `stripprefix`, `headers` custom request and
//! response headers and `redirectscheme`, read per container, then a
//! router's chain of names turned into one [`Middlewares`].
//!
//! A middleware of another kind (`basicauth`, `ratelimit`, ...) is not
//! applied, and its labels are listed as ignored; a router that names one
//! is left out rather than served without it.

use std::collections::BTreeMap;

use http::HeaderValue;

use super::values::{boolean, list, Labeled};
use crate::config::{check, HeaderEdit, Middlewares, Redirect};

/// One middleware as a container's labels define it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MiddlewareLabels {
    /// `stripprefix.prefixes`.
    StripPrefix {
        /// The prefixes.
        prefixes: Option<Labeled<Vec<String>>>,
    },
    /// `headers.customrequestheaders.<H>` and `.customresponseheaders.<H>`.
    Headers {
        /// Request headers set or removed, in label order.
        request: Vec<HeaderEdit>,
        /// Response headers set or removed, in label order.
        response: Vec<HeaderEdit>,
    },
    /// `redirectscheme.scheme` and `.permanent`.
    RedirectScheme {
        /// `http` or `https`.
        scheme: Option<Labeled<&'static str>>,
        /// 301/308 rather than 302/307.
        permanent: bool,
    },
    /// A kind cutover does not apply.
    Unsupported {
        /// Its kind, as written in the label.
        kind: String,
    },
}

impl MiddlewareLabels {
    fn kind(&self) -> &str {
        match self {
            MiddlewareLabels::StripPrefix { .. } => "stripprefix",
            MiddlewareLabels::Headers { .. } => "headers",
            MiddlewareLabels::RedirectScheme { .. } => "redirectscheme",
            MiddlewareLabels::Unsupported { kind } => kind,
        }
    }
}

/// Reads `traefik.http.middlewares.<name>.<rest>` (`rest` lowercased;
/// `header` is the 7th part of the key as written, a header's name).
/// `Ok(false)`: a label cutover does not read.
pub(super) fn read(
    defs: &mut BTreeMap<String, MiddlewareLabels>,
    name: String,
    key: &str,
    rest: &[&str],
    header: Option<&str>,
    value: &str,
) -> Result<bool, String> {
    let Some(kind) = rest.first() else {
        return Ok(false);
    };
    let fresh = match *kind {
        "stripprefix" => MiddlewareLabels::StripPrefix { prefixes: None },
        "headers" => MiddlewareLabels::Headers {
            request: Vec::new(),
            response: Vec::new(),
        },
        "redirectscheme" => MiddlewareLabels::RedirectScheme {
            scheme: None,
            permanent: false,
        },
        other => MiddlewareLabels::Unsupported {
            kind: other.to_string(),
        },
    };
    let def = defs.entry(name.clone()).or_insert(fresh);
    if def.kind() != *kind {
        return Err(format!(
            "middleware {name} has labels of two kinds ({} and {kind}); one middleware is one kind",
            def.kind()
        ));
    }
    match (def, &rest[1..]) {
        (MiddlewareLabels::StripPrefix { prefixes }, ["prefixes"]) => {
            let list = list(value);
            if let Some(bad) = list.iter().find(|p| !p.starts_with('/')) {
                return Err(format!(
                    "prefix {bad:?} does not start with \"/\" (expected e.g. \"/api\")"
                ));
            }
            *prefixes = Some(Labeled {
                value: list,
                label: key.to_string(),
            });
        }
        (MiddlewareLabels::Headers { request, .. }, ["customrequestheaders", _]) => {
            request.push(edit(header, value)?);
        }
        (MiddlewareLabels::Headers { response, .. }, ["customresponseheaders", _]) => {
            response.push(edit(header, value)?);
        }
        (MiddlewareLabels::RedirectScheme { scheme, .. }, ["scheme"]) => {
            let parsed = match value.trim().to_ascii_lowercase().as_str() {
                "http" => "http",
                "https" => "https",
                _ => {
                    return Err(format!(
                        "{value:?} is not a scheme cutover redirects to (expected http or https)"
                    ))
                }
            };
            *scheme = Some(Labeled {
                value: parsed,
                label: key.to_string(),
            });
        }
        (MiddlewareLabels::RedirectScheme { permanent, .. }, ["permanent"]) => {
            *permanent = boolean(value)?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// A custom header: set to `value`, or removed when it is empty.
fn edit(name: Option<&str>, value: &str) -> Result<HeaderEdit, String> {
    let name = check::header_name(name.unwrap_or_default())?;
    let value = if value.is_empty() {
        None
    } else {
        Some(HeaderValue::from_str(value).map_err(|_| {
            format!("{value:?} is not a header value (expected visible text on one line)")
        })?)
    };
    Ok(HeaderEdit { name, value })
}

/// The middlewares a router's chain names, in order, as one
/// [`Middlewares`]; `defs` are every container's definitions merged.
///
/// # Errors
///
/// What is wrong with the first name that cannot be applied: not defined,
/// another provider's, of a kind cutover does not apply, or incomplete.
pub(super) fn resolve(
    chain: &[String],
    defs: &BTreeMap<String, MiddlewareLabels>,
) -> Result<Middlewares, String> {
    let mut out = Middlewares::default();
    for name in chain {
        if let Some((_, provider)) = name.split_once('@') {
            return Err(format!(
                "middleware {name:?} is from the {provider} provider, which cutover does not read"
            ));
        }
        let Some(def) = defs.get(name) else {
            let known: Vec<&String> = defs.keys().collect();
            return Err(format!(
                "middleware {name:?} is not defined by any container (defined: {known:?})"
            ));
        };
        match def {
            MiddlewareLabels::StripPrefix { prefixes } => {
                let prefixes = prefixes
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or_default();
                if prefixes.is_empty() {
                    return Err(format!("middleware {name:?} has no stripprefix.prefixes"));
                }
                out.strip_prefixes.push(prefixes);
            }
            MiddlewareLabels::Headers { request, response } => {
                out.request_headers.extend(request.iter().cloned());
                out.response_headers.extend(response.iter().cloned());
            }
            MiddlewareLabels::RedirectScheme { scheme, permanent } => {
                let Some(scheme) = scheme else {
                    return Err(format!("middleware {name:?} has no redirectscheme.scheme"));
                };
                out.redirect.get_or_insert(Redirect {
                    scheme: scheme.value,
                    permanent: *permanent,
                });
            }
            MiddlewareLabels::Unsupported { kind } => {
                return Err(format!(
                    "middleware {name:?} is a {kind}, which cutover does not apply: the router is left out rather than served without it"
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `traefik.http.middlewares.*` labels as the labels' reader does.
    fn defs(pairs: &[(&str, &str)]) -> (BTreeMap<String, MiddlewareLabels>, Vec<(String, String)>) {
        let (mut defs, mut issues) = (BTreeMap::new(), Vec::new());
        for (key, value) in pairs {
            let lower = key.to_ascii_lowercase();
            let parts: Vec<&str> = lower.split('.').collect();
            let names: Vec<&str> = key.split('.').collect();
            let name = names[3].to_string();
            if let Err(m) = read(
                &mut defs,
                name,
                key,
                &parts[4..],
                names.get(6).copied(),
                value,
            ) {
                issues.push((key.to_string(), m));
            }
        }
        (defs, issues)
    }

    #[test]
    fn a_chain_becomes_one_set_of_middlewares_in_order() {
        let (d, issues) = defs(&[
            (
                "traefik.http.middlewares.strip.stripprefix.prefixes",
                "/api,/v1",
            ),
            (
                "traefik.http.middlewares.hdr.headers.customRequestHeaders.X-Env",
                "prod",
            ),
            (
                "traefik.http.middlewares.hdr.headers.customrequestheaders.X-Drop",
                "",
            ),
            (
                "traefik.http.middlewares.hdr.headers.customResponseHeaders.X-Served-By",
                "cutover",
            ),
            (
                "traefik.http.middlewares.tls.redirectscheme.scheme",
                "https",
            ),
            (
                "traefik.http.middlewares.tls.redirectscheme.permanent",
                "true",
            ),
        ]);
        assert!(issues.is_empty(), "{issues:?}");
        let chain = ["tls", "strip", "hdr"].map(String::from);
        let m = resolve(&chain, &d).unwrap();
        assert_eq!(
            m.redirect,
            Some(Redirect {
                scheme: "https",
                permanent: true
            })
        );
        assert_eq!(
            m.strip_prefixes,
            [vec!["/api".to_string(), "/v1".to_string()]]
        );
        let names: Vec<(&str, Option<&str>)> = m
            .request_headers
            .iter()
            .map(|e| {
                (
                    e.name.as_str(),
                    e.value.as_ref().and_then(|v| v.to_str().ok()),
                )
            })
            .collect();
        assert_eq!(names, [("x-env", Some("prod")), ("x-drop", None)]);
        assert_eq!(m.response_headers[0].name.as_str(), "x-served-by");
    }

    #[test]
    fn a_missing_or_unsupported_middleware_is_an_error_naming_it() {
        let (d, _) = defs(&[("traefik.http.middlewares.auth.basicauth.users", "u:p")]);
        let e = resolve(&["nope".into()], &d).unwrap_err();
        assert!(e.contains("\"nope\" is not defined"), "{e}");
        let e = resolve(&["auth".into()], &d).unwrap_err();
        assert!(e.contains("basicauth"), "{e}");
        let e = resolve(&["auth@file".into()], &d).unwrap_err();
        assert!(e.contains("file provider"), "{e}");
    }

    #[test]
    fn one_middleware_of_two_kinds_is_an_issue() {
        let (_, issues) = defs(&[
            (
                "traefik.http.middlewares.m.headers.customrequestheaders.X-A",
                "1",
            ),
            ("traefik.http.middlewares.m.stripprefix.prefixes", "/a"),
        ]);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(issues[0].1.contains("two kinds"), "{issues:?}");
    }
}
