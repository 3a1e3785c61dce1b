//! The proxy's own answers: every way a request can fail, who failed
//! (client, upstream or cutover), and the short response it gets.
//!
//! `status` and `reason` are exhaustive matches, so a new variant cannot be
//! added without deciding its answer.

use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use http::{Response, StatusCode};

use super::body::ResponseBody;
use crate::upstream::UpstreamError;

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The client sent something wrong or too slowly.
    Client,
    /// The upstream could not be reached or misbehaved.
    Upstream,
    /// The proxy's own configuration or state (no route, no healthy server).
    Cutover,
}

/// A request the proxy answers itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request is malformed (missing Host, bad URI, bad header).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The client did not send a complete request head within
    /// `header_read_timeout`.
    #[error("request head not received in time")]
    HeadTimeout,
    /// The request head is larger than `max_header_bytes`.
    #[error("request head larger than the limit")]
    HeaderTooLarge,
    /// No route matches the Host and path.
    #[error("no route for this host and path")]
    NoRoute,
    /// The request body is larger than `max_body_bytes`.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The selected pool has no healthy server.
    #[error("no healthy server in pool {pool} of service {service}")]
    NoHealthyServer {
        /// The service.
        service: String,
        /// The pool.
        pool: &'static str,
    },
    /// Connecting to the upstream failed (after the one retry).
    #[error(transparent)]
    Connect(UpstreamError),
    /// The upstream failed after the request was sent (reset, garbage).
    #[error(transparent)]
    Upstream(UpstreamError),
    /// The upstream sent no response head within `response_timeout`.
    #[error(transparent)]
    Timeout(UpstreamError),
    /// The proxy's own code panicked while handling the request (a bug,
    /// counted in `cutover_connection_panics_total` and logged).
    #[error("internal error")]
    Panicked,
}

impl ProxyError {
    /// The response status.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoHealthyServer { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(_) | ProxyError::Upstream(_) | ProxyError::Panicked => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A short machine-readable reason, used as the response body.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(why) => why,
            ProxyError::HeadTimeout => "request head timeout",
            ProxyError::HeaderTooLarge => "request header too large",
            ProxyError::NoRoute => "no route",
            ProxyError::PayloadTooLarge { .. } => "request body too large",
            ProxyError::NoHealthyServer { .. } => "no healthy server",
            ProxyError::Connect(_) => "upstream connection failed",
            ProxyError::Upstream(_) => "upstream request failed",
            ProxyError::Timeout(_) => "upstream timeout",
            ProxyError::Panicked => "internal error",
        }
    }

    /// Who failed.
    pub fn blame(&self) -> Blame {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::HeadTimeout
            | ProxyError::HeaderTooLarge
            | ProxyError::PayloadTooLarge { .. } => Blame::Client,
            ProxyError::NoRoute | ProxyError::NoHealthyServer { .. } | ProxyError::Panicked => {
                Blame::Cutover
            }
            ProxyError::Connect(_) | ProxyError::Upstream(_) | ProxyError::Timeout(_) => {
                Blame::Upstream
            }
        }
    }

    /// The response the client gets. `body_unread`: the request body was not
    /// consumed, so the connection must close rather than be reused.
    pub fn response(&self, body_unread: bool) -> Response<ResponseBody> {
        synthetic(self.status(), self.reason(), body_unread)
    }
}

/// A short plain-text answer: `reason` and a newline. Sets `Connection:
/// close` when the request body was not read.
pub fn synthetic(status: StatusCode, reason: &str, close: bool) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(format!("{reason}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn upstream_err() -> UpstreamError {
        UpstreamError::ConnectTimeout {
            addr: "127.0.0.1:1".into(),
            timeout: std::time::Duration::from_secs(1),
        }
    }

    async fn body_of(e: ProxyError) -> (StatusCode, String) {
        let resp = e.response(false);
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn each_variant_pins_status_and_body() {
        let cases = [
            (
                ProxyError::BadRequest("missing host"),
                400,
                "missing host\n",
            ),
            (ProxyError::HeadTimeout, 408, "request head timeout\n"),
            (
                ProxyError::HeaderTooLarge,
                431,
                "request header too large\n",
            ),
            (ProxyError::NoRoute, 404, "no route\n"),
            (
                ProxyError::PayloadTooLarge { limit: 1 },
                413,
                "request body too large\n",
            ),
            (
                ProxyError::NoHealthyServer {
                    service: "a".into(),
                    pool: "blue",
                },
                503,
                "no healthy server\n",
            ),
            (
                ProxyError::Connect(upstream_err()),
                502,
                "upstream connection failed\n",
            ),
            (
                ProxyError::Upstream(upstream_err()),
                502,
                "upstream request failed\n",
            ),
            (
                ProxyError::Timeout(upstream_err()),
                504,
                "upstream timeout\n",
            ),
            (ProxyError::Panicked, 502, "internal error\n"),
        ];
        for (err, status, body) in cases {
            assert_eq!(
                body_of(err).await,
                (StatusCode::from_u16(status).unwrap(), body.to_string())
            );
        }
    }

    #[test]
    fn unread_body_closes_the_connection() {
        let resp = ProxyError::NoRoute.response(true);
        assert_eq!(resp.headers()[CONNECTION], "close");
        assert!(!ProxyError::NoRoute
            .response(false)
            .headers()
            .contains_key(CONNECTION));
    }
}
