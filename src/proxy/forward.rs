//! One request through the proxy: route → middlewares (a route's redirect,
//! prefix and headers, when it has any) → pick pool and server → rewrite
//! headers → send upstream (retrying once on another server when the
//! connection could not be made, and, during a deploy, once on the old
//! pool what the new one failed) → stream the answer back.
//!
//! Loads the routing snapshot once, takes no lock, and keeps the chosen
//! pool's in-flight guard until the response body (or upgraded tunnel) ends,
//! which is what lets a switched-away pool drain.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, HOST, TRAILER, TRANSFER_ENCODING};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use super::body::{RequestBody, RequestBodyError, ResponseBody};
use super::conn::Upgraded;
use super::error::ProxyError;
use super::{failpoint, headers, middleware, stream, tunnel};
use crate::balance;
use crate::config::{Listener, Middlewares, PoolName};
use crate::http1::{self, RequestHead, UpstreamBody};
use crate::metrics::PoolMetrics;
use crate::snapshot::{InflightGuard, PoolState, Routing, Server, Service};
use crate::upstream::{Timeouts, UpstreamError};

/// Where a request came from.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    /// The peer address.
    pub addr: SocketAddr,
    /// `"http"` or `"https"`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
}

/// Proxies one request and always produces a response.
///
/// `client_upgrade` is where the client's side of an HTTP/1.1 upgrade will
/// arrive, when the request asks for one: the connection hands its stream
/// over once the 101 is written. `refusal` is why the connection's raw bytes
/// make this request one to answer 400 without routing it, when they do.
///
/// Routing, the checks and the header rewrite run now, before the returned
/// future exists; the future then holds the request in one place until it
/// is written to a connection, and nothing is passed by value from one
/// level of it to the next: the future is boxed, and so copied, once per
/// request, and every copy of the request inside it would grow it.
pub fn forward(
    routing: &Routing,
    req: Request<Incoming>,
    client: ClientInfo,
    client_upgrade: Option<oneshot::Receiver<Upgraded>>,
    refusal: Option<&'static str>,
) -> impl Future<Output = Response<ResponseBody>> + Send + 'static {
    let mut prepared = match refusal {
        Some(why) => Prepared::Answer(refuse(routing, ProxyError::BadRequest(why))),
        None => {
            // Kept for the log of a panic: the method is a copy, the target
            // shares the request's bytes, and both go before any await. A
            // request without a body leaves nothing unread when it panics:
            // its connection can carry the next one.
            let (method, uri) = (req.method().clone(), req.uri().clone());
            let has_body = !http_body::Body::is_end_stream(req.body());
            let prepared = std::panic::catch_unwind(AssertUnwindSafe(|| {
                prepare(routing, req, has_body, client, client_upgrade)
            }));
            prepared.unwrap_or_else(|panic| {
                let unrouted = &routing.load().unrouted;
                unrouted.panics.inc();
                tracing::error!(
                    client.addr = %client.addr, method = %method, path = uri.path(),
                    panic = panic_message(&*panic),
                    "panic while routing a request: answered 502"
                );
                let resp = answer(ProxyError::Panicked, has_body, client.addr);
                unrouted.record(resp.status().as_u16(), std::time::Duration::ZERO);
                Prepared::Answer(resp)
            })
        }
    };
    async move {
        // Borrowed where it lies: moving it out would copy it into the future again.
        match prepared {
            Prepared::Answer(resp) => resp,
            Prepared::Send(ref mut exchange) => {
                let sent = AssertUnwindSafe(exchange.run()).catch_unwind().await;
                match sent {
                    Ok(resp) => resp,
                    Err(panic) => exchange.panicked(&*panic),
                }
            }
        }
    }
}

/// The text a panic carried, when it is text.
pub(super) fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not text)")
}

/// A request after routing: answered already, or ready to send.
// One per request and never stored beside others: the size difference
// between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Prepared {
    Answer(Response<ResponseBody>),
    Send(Exchange),
}

/// One request on its way to an upstream.
struct Exchange {
    target: Target,
    /// The rewritten request until it is written to a connection; put back
    /// when it never left (see [`Upstream::send`](crate::upstream::Upstream::send)).
    /// Only its method and body are left in it: `head` is what is written.
    req: Option<Request<RequestBody>>,
    /// The request's head, encoded once.
    head: RequestHead,
    client_upgrade: Option<oneshot::Receiver<Upgraded>>,
    client: SocketAddr,
    start: Instant,
    /// A request without a body leaves nothing unread: its connection can
    /// stay open after a synthetic answer.
    has_body: bool,
    /// The method, to send an idempotent request again.
    method: Method,
    /// How long after `start` the upstream's response head came, once it
    /// did: the request's latency, read once for its metrics and its body.
    head_after: Option<std::time::Duration>,
    /// A panic asked for while the request is sent (debug builds).
    #[cfg(debug_assertions)]
    panic_in_exchange: bool,
}

/// `has_body`: the request has a body still to read.
fn prepare(
    routing: &Routing,
    req: Request<Incoming>,
    has_body: bool,
    client: ClientInfo,
    client_upgrade: Option<oneshot::Receiver<Upgraded>>,
) -> Prepared {
    let start = Instant::now();
    failpoint::check(req.headers(), failpoint::At::Routing);
    let (target, mut seen) = match select(routing, &req, client) {
        Ok(selected) => selected,
        Err((err, unrouted)) => {
            let resp = answer(err, has_body, client.addr);
            unrouted.record(resp.status().as_u16(), start.elapsed());
            return Prepared::Answer(resp);
        }
    };
    // The length is looked up only when there is a limit to hold it to.
    if let Some(limit) = target.max_body {
        if content_length(&req).is_some_and(|len| len > limit) {
            let resp = answer(ProxyError::PayloadTooLarge { limit }, has_body, client.addr);
            target
                .pool_state()
                .metrics
                .record(resp.status().as_u16(), start.elapsed());
            return Prepared::Answer(resp);
        }
    }
    let mut req = req;
    if let Some(m) = &target.middlewares {
        if let Some(resp) = apply_middlewares(m, &mut req, &mut seen, client.proto, has_body) {
            target
                .pool_state()
                .metrics
                .record(resp.status().as_u16(), start.elapsed());
            return Prepared::Answer(resp);
        }
    }
    // The connection registers for an upgrade only when the request is an
    // HTTP/1.1 upgrade, so this is the same test, already made.
    let upgrade = client_upgrade.is_some();
    let method = req.method().clone();
    #[cfg(debug_assertions)]
    let panic_in_exchange = failpoint::asked(req.headers(), failpoint::At::Exchange);
    let (req, head) = rewrite(req, seen, client, upgrade, target.max_body);
    Prepared::Send(Exchange {
        target,
        req: Some(req),
        head,
        client_upgrade,
        client: client.addr,
        start,
        has_body,
        method,
        head_after: None,
        #[cfg(debug_assertions)]
        panic_in_exchange,
    })
}

/// A route's middlewares on `req`: its redirect, when the request is to be
/// redirected (the answer), else its prefix and request headers.
fn apply_middlewares(
    m: &Middlewares,
    req: &mut Request<Incoming>,
    seen: &mut Seen,
    proto: &'static str,
    has_body: bool,
) -> Option<Response<ResponseBody>> {
    let host = seen
        .host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let redirect = middleware::redirect(m, proto, req.method(), host, req.uri(), has_body);
    if redirect.is_some() {
        return redirect;
    }
    let mut uri = req.uri().clone();
    middleware::on_request(m, &mut uri, req.headers_mut());
    *req.uri_mut() = uri;
    if m.request_headers.iter().any(|e| e.name == HOST) {
        seen.host = req.headers().get(HOST).cloned();
    }
    None
}

/// The proxy's own answer; `body_unread` says the request body was not read.
fn answer(err: ProxyError, body_unread: bool, client: SocketAddr) -> Response<ResponseBody> {
    tracing::debug!(client.addr = %client, status = err.status().as_u16(), error = %err, "answered by proxy");
    err.response(body_unread)
}

impl Exchange {
    async fn run(&mut self) -> Response<ResponseBody> {
        #[cfg(debug_assertions)]
        if self.panic_in_exchange {
            failpoint::fire(failpoint::At::Exchange);
        }
        let resp = match self.send().await {
            Ok(resp) => resp,
            Err((err, body_unread)) => answer(err, body_unread && self.has_body, self.client),
        };
        let latency = self.head_after.unwrap_or_else(|| self.start.elapsed());
        let pool = self.target.pool_state();
        pool.metrics.record(resp.status().as_u16(), latency);
        resp
    }

    async fn send(&mut self) -> Result<Response<ResponseBody>, (ProxyError, bool)> {
        let mut sent = send(&self.target, &mut self.req, &self.head).await;
        if let Some(fallback) = self.fallback(&sent) {
            sent = self.send_to_fallback(fallback, sent).await;
        }
        let (resp, guard) = sent?;
        let head = self.start.elapsed();
        self.head_after = Some(head);
        tracing::debug!(
            service = %self.target.service.name,
            pool = %guard.pool().name,
            server = guard.server().upstream.label(),
            status = resp.status().as_u16(),
            "proxied"
        );
        let (mut parts, body) = resp.into_parts();
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            // Only a request that asked for an upgrade gets this far with
            // a 101 (the connection refuses any other), and only such a
            // request has the client side's stream coming.
            let client = self.client_upgrade.take();
            let (Some(client), Some(upstream)) = (client, body.into_switched()) else {
                // The client's body was not all read: its connection closes.
                let refused = http1::Error::Invalid("101 before the request was sent whole");
                return Err((
                    ProxyError::Upstream(self.upstream_error(&guard, refused)),
                    true,
                ));
            };
            // The tunnel ends itself at the cut, once its sides are told.
            let cut = guard.pool().cutter().flag();
            let websocket = parts
                .headers
                .get(http::header::UPGRADE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
            let (panics, service) = (
                self.target.pool_state().metrics.panics.clone(),
                self.target.service.name.clone(),
            );
            tokio::spawn(async move {
                let tunnelled =
                    AssertUnwindSafe(tunnel::run(client, upstream, guard, head, websocket, cut));
                if let Err(panic) = tunnelled.catch_unwind().await {
                    panics.inc();
                    tracing::error!(
                        service = %service, panic = panic_message(&*panic),
                        "panic in an upgraded tunnel: closed"
                    );
                }
            });
            headers::remove_hop_by_hop(&mut parts.headers, true);
            return Ok(Response::from_parts(parts, ResponseBody::empty()));
        }
        // The connection kept its hop-by-hop fields, but for a `Connection`
        // that names others (see `http1::response`).
        if parts.headers.contains_key(CONNECTION) {
            // The connection left in only what is end-to-end of the
            // fields `remove_hop_by_hop` takes out: the codings still on
            // the body and `Trailer` (see `http1::response`).
            let coded = parts.headers.remove(TRANSFER_ENCODING);
            let trailer = parts.headers.remove(TRAILER);
            headers::remove_hop_by_hop(&mut parts.headers, false);
            if let Some(coded) = coded {
                parts.headers.insert(TRANSFER_ENCODING, coded);
            }
            if let Some(trailer) = trailer {
                parts.headers.insert(TRAILER, trailer);
            }
        }
        if let Some(m) = &self.target.middlewares {
            middleware::on_response(m, &mut parts.headers);
        }
        let event_stream = stream::is_event_stream(&parts.headers);
        let drain_event = event_stream
            .then(|| self.target.service.drain_sse_event.clone())
            .flatten();
        Ok(Response::from_parts(
            parts,
            ResponseBody::upstream(body, guard, self.start, head, event_stream, drain_event),
        ))
    }

    /// The answer after a panic in [`Exchange::run`]: counted, logged once
    /// with the request (its method and target as written upstream) and
    /// its service, and answered 502 (no response has started: the
    /// response is what `run` returns).
    fn panicked(&self, panic: &(dyn Any + Send)) -> Response<ResponseBody> {
        let line = self.head.as_bytes().split(|&b| b == b'\r').next();
        let mut words = line.unwrap_or_default().split(|&b| b == b' ');
        let mut word = || String::from_utf8_lossy(words.next().unwrap_or_default()).into_owned();
        let (method, path) = (word(), word());
        let metrics = &self.target.pool_state().metrics;
        metrics.panics.inc();
        tracing::error!(
            client.addr = %self.client, method, path, service = %self.target.service.name,
            pool = self.target.pool.as_str(), panic = panic_message(panic),
            "panic while proxying a request: answered 502"
        );
        let resp = ProxyError::Panicked.response(self.has_body);
        metrics.record(resp.status().as_u16(), self.start.elapsed());
        resp
    }

    /// The pool to send the request to again, when the active pool failed
    /// it before any byte reached the client, during a deploy (see
    /// [`Service::fallback`]): a connection that failed or broke, no
    /// healthy server, or a 502, 503 or 504 answer; an idempotent method,
    /// no upgrade, and a body that never left (or none).
    fn fallback(&self, sent: &Sent) -> Option<PoolName> {
        let fallback = self.target.service.fallback?;
        if self.target.pool != self.target.service.active || fallback == self.target.pool {
            return None;
        }
        let failed = match sent {
            Ok((resp, _)) => matches!(resp.status().as_u16(), 502..=504),
            Err((err, _)) => matches!(
                err,
                ProxyError::Connect(_)
                    | ProxyError::Upstream(_)
                    | ProxyError::NoHealthyServer { .. }
            ),
        };
        let resendable = self.req.is_some() || !self.has_body;
        (failed && resendable && self.method.is_idempotent() && self.client_upgrade.is_none())
            .then_some(fallback)
    }

    /// Counts the failed attempt where it happened (the rollback watch
    /// judges the new pool by it), then sends the request to `fallback`.
    async fn send_to_fallback(&mut self, fallback: PoolName, failed: Sent) -> Sent {
        let status = match &failed {
            Ok((resp, _)) => resp.status().as_u16(),
            Err((err, _)) => err.status().as_u16(),
        };
        drop(failed);
        self.target
            .pool_state()
            .metrics
            .record(status, self.start.elapsed());
        tracing::debug!(service = %self.target.service.name, from = %self.target.pool, to = %fallback, status, "retried on the old pool");
        if self.req.is_none() {
            let mut again = Request::new(RequestBody::empty());
            *again.method_mut() = self.method.clone();
            self.req = Some(again);
        }
        self.target.pool = fallback;
        send(&self.target, &mut self.req, &self.head).await
    }

    /// An upstream failure found after the response head, as `send` would
    /// have reported it.
    fn upstream_error(&self, guard: &InflightGuard, source: http1::Error) -> UpstreamError {
        UpstreamError::Request {
            addr: guard.server().upstream.label().to_owned(),
            source,
        }
    }
}

/// What sending to one pool gave.
type Sent = Result<(Response<UpstreamBody<RequestBody>>, InflightGuard), (ProxyError, bool)>;

/// The routing decision for one request, taken from one snapshot.
struct Target {
    service: Arc<Service>,
    pool: PoolName,
    timeouts: Timeouts,
    max_body: Option<u64>,
    /// The route's middlewares, when it has any.
    middlewares: Option<Arc<Middlewares>>,
}

impl Target {
    fn pool_state(&self) -> &PoolState {
        &self.service.pool(self.pool).state
    }
}

/// Answers a request the proxy refuses before routing, counted like any
/// unrouted answer.
fn refuse(routing: &Routing, err: ProxyError) -> Response<ResponseBody> {
    tracing::debug!(status = err.status().as_u16(), error = %err, "answered by proxy");
    let resp = err.response(true);
    routing
        .load()
        .unrouted
        .record(resp.status().as_u16(), std::time::Duration::ZERO);
    resp
}

/// Refuses what an upstream could read differently from the proxy, so that
/// nothing ambiguous is forwarded (hyper has already refused malformed
/// lines, obs-fold and conflicting lengths):
///
/// - the request target: authority-form (CONNECT is not proxied), `*`
///   outside OPTIONS, userinfo in an absolute-form authority;
/// - Host: missing on HTTP/1.1, sent twice, not a valid `host[:port]`, or
///   different from the absolute-form (HTTP/2: `:authority`) authority; an
///   authority that stands in for a missing Host, not a valid `host[:port]`;
/// - header names that name a framing, Host, hop-by-hop or `X-Forwarded-*`
///   header once `_` is read as `-` (as CGI-style servers do).
///
/// Byte scans only; no allocation. Returns the Host header, when there is
/// one (looked up once here for the route and the rewrite alike), and
/// whether the client sent an `X-Forwarded-*` header of its own.
fn check(req: &Request<Incoming>) -> Result<(Option<&HeaderValue>, bool), &'static str> {
    let uri = req.uri();
    if req.method() == Method::CONNECT {
        return Err("CONNECT is not supported");
    }
    if uri.scheme().is_none() && uri.authority().is_some() {
        return Err("bad request target");
    }
    if uri.path() == "*" && req.method() != Method::OPTIONS {
        return Err("bad request target");
    }
    let authority = uri.authority();
    if authority.is_some_and(|a| a.as_str().contains('@')) {
        return Err("userinfo in request target");
    }
    // One walk over the fields: the Host (without a lookup of its own),
    // names that read as another once `_` is `-`, the client's own
    // `X-Forwarded-*`.
    let (mut host, mut hosts, mut ambiguous, mut forwarded) = (None, 0, false, false);
    for (name, value) in req.headers() {
        if name == HOST {
            host = host.or(Some(value));
            hosts += 1;
            continue;
        }
        let name = name.as_str();
        ambiguous |= headers::ambiguous_name(name);
        forwarded |= name.starts_with("x-forwarded-") || headers::names_a_forwarder(name);
    }
    match (host, hosts > 1) {
        (Some(_), true) => return Err("multiple host headers"),
        (Some(host), false) => {
            if !headers::valid_host(host.as_bytes()) {
                return Err("invalid host header");
            }
            if authority
                .is_some_and(|a| !a.as_str().as_bytes().eq_ignore_ascii_case(host.as_bytes()))
            {
                return Err("host header does not match the request target");
            }
        }
        (None, _) => {
            if req.version() == Version::HTTP_11 {
                return Err("missing host header");
            }
            // HTTP/1.0 and HTTP/2: the Host the upstream gets is the
            // authority, held to the same rule as a Host header.
            if authority.is_some_and(|a| !headers::valid_host(a.as_str().as_bytes())) {
                return Err("invalid host in request target");
            }
        }
    }
    if ambiguous {
        return Err("ambiguous header name");
    }
    Ok((host, forwarded))
}

/// What [`check`] saw in a request's headers that the rewrite needs.
struct Seen {
    /// The Host header.
    host: Option<HeaderValue>,
    /// The client sent an `X-Forwarded-*`, `Forwarded` or `X-Real-IP`
    /// header of its own.
    forwarded: bool,
    /// ... and is not in `trusted_ips`: those headers are not to be
    /// believed, and go (see [`headers::forget_untrusted`]).
    untrusted: bool,
}

/// Checks and routes `req`, which came to the `proto` listener. With the
/// target comes what the checks saw, for the rewrite.
fn select(
    routing: &Routing,
    req: &Request<Incoming>,
    client: ClientInfo,
) -> Result<(Target, Seen), (ProxyError, Arc<PoolMetrics>)> {
    let snapshot = routing.load();
    let (host, forwarded) = match check(req) {
        Ok(seen) => seen,
        Err(why) => return Err((ProxyError::BadRequest(why), snapshot.unrouted.clone())),
    };
    // `check` let only a visible-ASCII Host through: `to_str` cannot fail.
    let host_name = match host {
        Some(h) => h.to_str().ok(),
        None => req.uri().authority().map(|a| a.as_str()),
    };
    let listener = Listener::parse(client.proto);
    let Some(found) = snapshot.router.find(listener, host_name, req.uri().path()) else {
        return Err((ProxyError::NoRoute, snapshot.unrouted.clone()));
    };
    let service = snapshot.services[found.service].clone();
    let pool = balance::pick_pool(&service, req.headers());
    let target = Target {
        service,
        pool,
        timeouts: snapshot.timeouts,
        max_body: snapshot.max_body_bytes,
        middlewares: found.middlewares.cloned(),
    };
    // Looked up only for a request that carries such headers.
    let untrusted = forwarded
        && !(snapshot.config.server.trusted_ips)
            .iter()
            .any(|range| range.contains(client.addr.ip()));
    let seen = Seen {
        host: host.cloned(),
        forwarded,
        untrusted,
    };
    Ok((target, seen))
}

fn content_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The upstream request: origin-form URI, HTTP/1.1, Host kept (or taken
/// from an HTTP/2 `:authority`), hop-by-hop removed (but for an upgrade's
/// `Upgrade`, with `Connection: upgrade`), `X-Forwarded-*` set, in its map
/// or, when the client sent none of them and asks for no upgrade, as the
/// header lines written after its headers. The head is encoded here, once.
fn rewrite(
    req: Request<Incoming>,
    seen: Seen,
    client: ClientInfo,
    upgrade: bool,
    max_body: Option<u64>,
) -> (Request<RequestBody>, RequestHead) {
    let (mut parts, body) = req.into_parts();
    let host = seen.host.or_else(|| {
        let authority = parts.uri.authority()?;
        let host = HeaderValue::from_str(authority.as_str()).ok()?;
        parts.headers.insert(HOST, host.clone());
        Some(host)
    });
    // The `X-Forwarded-*` fields go into the map when the client sent its
    // own, or on an upgrade, whose `Connection` is rewritten there too;
    // otherwise they are written after its headers (see
    // `headers::push_forwarded_lines`), which costs less than three entries
    // added to the map and encoded from there.
    let in_map = upgrade || seen.forwarded;
    if in_map {
        if seen.untrusted {
            headers::forget_untrusted(&mut parts.headers);
        }
        // Room for the three `X-Forwarded-*` at once rather than growing twice.
        parts.headers.reserve(3);
        headers::rewrite_request(
            &mut parts.headers,
            client.addr.ip(),
            client.proto,
            host.as_ref(),
            upgrade,
        );
    } else {
        headers::remove_hop_by_hop(&mut parts.headers, false);
    }
    let ended = http_body::Body::is_end_stream(&body);
    let (ip, proto) = (client.addr.ip(), client.proto);
    let mut head = RequestHead::of(&parts.method, &parts.uri, &parts.headers, ended, |out| {
        if !in_map {
            headers::push_forwarded_lines(out, ip, proto, host.as_ref());
        }
    });
    if upgrade {
        head = head.asking_upgrade();
    }
    // Written from `head` from now on: the parsed target and header values
    // go now, before the first await (see `RequestHead`). The map itself
    // stays, empty, and holds the response's headers (see
    // `UpstreamConn::round_trip`).
    parts.uri = Uri::default();
    parts.headers.clear();
    parts.version = Version::HTTP_11;
    let req = Request::from_parts(parts, RequestBody::new(body, max_body));
    (req, head)
}

/// Sends to a healthy server of the target pool; a request whose connection
/// could not be made is retried once on another server of the same pool.
/// `req` holds the request until it is written to a connection. The error
/// says whether the request body is still unread.
async fn send(
    target: &Target,
    req: &mut Option<Request<RequestBody>>,
    head: &RequestHead,
) -> Result<(Response<UpstreamBody<RequestBody>>, InflightGuard), (ProxyError, bool)> {
    let view = target.service.pool(target.pool);
    let no_server = || ProxyError::NoHealthyServer {
        service: target.service.name.to_string(),
        pool: target.pool.as_str(),
    };
    let mut server: Arc<Server> = balance::pick_server(view, target.service.balance, None)
        .ok_or_else(|| (no_server(), true))?
        .clone();
    let mut retried = false;
    loop {
        let guard = InflightGuard::new(view.state.clone(), server.clone());
        let error = match server.upstream.send(req, head, &target.timeouts).await {
            Ok(resp) => return Ok((resp, guard)),
            Err(error) => error,
        };
        if req.is_some() && !retried {
            // The request never left: another server may take it.
            let next = balance::pick_server(view, target.service.balance, Some(&server))
                .filter(|next| !Arc::ptr_eq(next, &server))
                .cloned();
            tracing::debug!(server = server.upstream.label(), error = %error, retry = next.is_some(), "upstream connect failed");
            server.report_failure(error.to_string());
            match next {
                Some(next) => {
                    server = next;
                    retried = true;
                    continue;
                }
                None => return Err((classify(error), true)),
            }
        }
        let unread = req.is_some();
        let err = classify(error);
        if matches!(err, ProxyError::Upstream(_) | ProxyError::Timeout(_))
            && server.upstream.strike()
        {
            tracing::debug!(server = server.upstream.label(), error = %err, "upstream keeps failing");
            server.report_failure(err.to_string());
        }
        return Err((err, unread));
    }
}

fn classify(error: UpstreamError) -> ProxyError {
    match &error {
        UpstreamError::Connect { .. } | UpstreamError::ConnectTimeout { .. } => {
            ProxyError::Connect(error)
        }
        UpstreamError::ResponseTimeout { .. } => ProxyError::Timeout(error),
        UpstreamError::Request { .. } => match body_error(&error) {
            Some(RequestBodyError::TooLarge { limit }) => {
                ProxyError::PayloadTooLarge { limit: *limit }
            }
            Some(RequestBodyError::Client(_)) => {
                ProxyError::BadRequest("request body could not be read")
            }
            None => ProxyError::Upstream(error),
        },
    }
}

/// The request-body error behind an upstream error, if that is what failed.
fn body_error(e: &UpstreamError) -> Option<&RequestBodyError> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<RequestBodyError>() {
            return Some(b);
        }
        source = s.source();
    }
    None
}
