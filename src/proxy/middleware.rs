//! A route's middlewares on one request (pure): Traefik's
//! `redirectscheme`, `stripprefix` and custom request and response headers,
//! as the route's [`Middlewares`] say. A route without middlewares costs a
//! request one `Option` check in `forward`, nothing else.

use http::header::{HeaderMap, HeaderName, HeaderValue, LOCATION};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Response, StatusCode};

use super::body::ResponseBody;
use super::error::synthetic;
use crate::config::{HeaderEdit, Middlewares};
use crate::route::strip_port;

/// Set to the prefix a `stripprefix` removed, as Traefik does.
const FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// The redirect a request on a `scheme` listener gets, when the route
/// redirects to another scheme: 302 (307 for a method other than GET and
/// HEAD), or 301 (308) when permanent, to the same host without its port
/// and the same path and query. `body_unread`: the connection closes.
pub fn redirect(
    m: &Middlewares,
    scheme: &str,
    method: &Method,
    host: Option<&str>,
    uri: &Uri,
    body_unread: bool,
) -> Option<Response<ResponseBody>> {
    let to = m.redirect.as_ref()?;
    if to.scheme == scheme {
        return None;
    }
    let keeps_method = !matches!(*method, Method::GET | Method::HEAD);
    let status = match (to.permanent, keeps_method) {
        (true, false) => StatusCode::MOVED_PERMANENTLY,
        (true, true) => StatusCode::PERMANENT_REDIRECT,
        (false, false) => StatusCode::FOUND,
        (false, true) => StatusCode::TEMPORARY_REDIRECT,
    };
    let host = host.map(strip_port).unwrap_or_default();
    let target = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let location = HeaderValue::from_str(&format!("{}://{host}{target}", to.scheme)).ok()?;
    let mut resp = synthetic(status, "redirect", body_unread);
    resp.headers_mut().insert(LOCATION, location);
    Some(resp)
}

/// Removes a prefix (`stripprefix`, setting `X-Forwarded-Prefix`) and sets
/// or removes request headers, in the route's order.
pub fn on_request(m: &Middlewares, uri: &mut Uri, headers: &mut HeaderMap) {
    for prefixes in &m.strip_prefixes {
        if let Some(prefix) = prefixes.iter().find(|p| uri.path().starts_with(p.as_str())) {
            if let Some(stripped) = strip(uri, prefix) {
                *uri = stripped;
                if let Ok(value) = HeaderValue::from_str(prefix) {
                    headers.insert(FORWARDED_PREFIX, value);
                }
            }
        }
    }
    edit(headers, &m.request_headers);
}

/// Sets or removes response headers, in the route's order.
pub fn on_response(m: &Middlewares, headers: &mut HeaderMap) {
    edit(headers, &m.response_headers);
}

fn edit(headers: &mut HeaderMap, edits: &[HeaderEdit]) {
    for e in edits {
        match &e.value {
            Some(value) => {
                headers.insert(e.name.clone(), value.clone());
            }
            None => {
                headers.remove(&e.name);
            }
        }
    }
}

/// `uri` without `prefix` at the start of its path, which still starts
/// with `/`; the query stays.
fn strip(uri: &Uri, prefix: &str) -> Option<Uri> {
    let rest = &uri.path()[prefix.len()..];
    let path = if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    };
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Redirect;

    fn strip_mw(prefixes: &[&str]) -> Middlewares {
        Middlewares {
            strip_prefixes: vec![prefixes.iter().map(|p| p.to_string()).collect()],
            ..Middlewares::default()
        }
    }

    #[test]
    fn a_prefix_is_stripped_and_named_in_x_forwarded_prefix() {
        let m = strip_mw(&["/other", "/api"]);
        let mut uri: Uri = "/api/v1/chat?x=1".parse().unwrap();
        let mut headers = HeaderMap::new();
        on_request(&m, &mut uri, &mut headers);
        assert_eq!(uri, "/v1/chat?x=1");
        assert_eq!(headers[&FORWARDED_PREFIX], "/api");
        let mut uri: Uri = "/api".parse().unwrap();
        on_request(&m, &mut uri, &mut HeaderMap::new());
        assert_eq!(uri, "/");
        let mut uri: Uri = "/elsewhere".parse().unwrap();
        let mut headers = HeaderMap::new();
        on_request(&m, &mut uri, &mut headers);
        assert_eq!(uri, "/elsewhere");
        assert!(headers.is_empty());
    }

    #[test]
    fn custom_headers_are_set_and_an_empty_one_removed() {
        let m = Middlewares {
            request_headers: vec![
                HeaderEdit {
                    name: HeaderName::from_static("x-env"),
                    value: Some(HeaderValue::from_static("prod")),
                },
                HeaderEdit {
                    name: HeaderName::from_static("x-drop"),
                    value: None,
                },
            ],
            response_headers: vec![HeaderEdit {
                name: HeaderName::from_static("server"),
                value: None,
            }],
            ..Middlewares::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-drop", HeaderValue::from_static("1"));
        headers.insert("x-env", HeaderValue::from_static("dev"));
        let mut uri: Uri = "/".parse().unwrap();
        on_request(&m, &mut uri, &mut headers);
        assert_eq!(headers["x-env"], "prod");
        assert!(!headers.contains_key("x-drop"));
        let mut answer = HeaderMap::new();
        answer.insert("server", HeaderValue::from_static("app"));
        on_response(&m, &mut answer);
        assert!(answer.is_empty());
    }

    #[test]
    fn a_redirect_goes_to_the_other_scheme_with_the_status_its_method_keeps() {
        let m = Middlewares {
            redirect: Some(Redirect {
                scheme: "https",
                permanent: true,
            }),
            ..Middlewares::default()
        };
        let uri: Uri = "/a?b=1".parse().unwrap();
        let resp = redirect(
            &m,
            "http",
            &Method::GET,
            Some("example.com:8080"),
            &uri,
            false,
        )
        .expect("a redirect");
        assert_eq!(resp.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(resp.headers()[LOCATION], "https://example.com/a?b=1");
        let post = redirect(&m, "http", &Method::POST, Some("example.com"), &uri, true).unwrap();
        assert_eq!(post.status(), StatusCode::PERMANENT_REDIRECT);
        assert!(redirect(&m, "https", &Method::GET, Some("example.com"), &uri, false).is_none());
    }
}
