//! The dashboard's page: plain HTML, CSS and JavaScript compiled into the
//! binary (no build step, nothing fetched from elsewhere, so it works
//! offline), served with a content security policy that allows nothing
//! but this origin, and never framed.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

/// One file of the page: its name under `/ui/`, type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: [Asset; 3] = [
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("page/index.html"),
    },
    Asset {
        name: "dashboard.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("page/dashboard.css"),
    },
    Asset {
        name: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("page/dashboard.js"),
    },
];

/// What the page's scripts, styles and connections may reach: this origin.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// The page's weight: every file of it, in bytes.
pub fn weight() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

/// Whether `name` is a file of the page.
pub fn has(name: &str) -> bool {
    ASSETS.iter().any(|a| a.name == name)
}

/// The file `name` (`index.html` for the page itself), with its headers;
/// `None` when there is no such file.
pub fn serve(name: &str) -> Option<Response<Full<Bytes>>> {
    let asset = ASSETS.iter().find(|a| a.name == name)?;
    let mut resp = Response::new(Full::new(Bytes::from_static(asset.body.as_bytes())));
    let h = resp.headers_mut();
    let fixed = [
        (header::CONTENT_TYPE, asset.content_type),
        (header::CONTENT_SECURITY_POLICY, POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    for (name, value) in fixed {
        h.insert(name, HeaderValue::from_static(value));
    }
    Some(resp)
}

/// `GET /`: to the page.
pub fn redirect() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::FOUND;
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_small_and_names_no_other_origin() {
        assert!(weight() < 100 * 1024, "{} bytes", weight());
        for asset in &ASSETS {
            for scheme in ["http://", "https://", "//cdn"] {
                assert!(
                    !asset.body.contains(scheme),
                    "{} mentions {scheme}",
                    asset.name
                );
            }
        }
        let page = serve("index.html").unwrap();
        assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert!(serve("../secret").is_none());
        assert!(has("dashboard.js"));
    }
}
