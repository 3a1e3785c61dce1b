//! Streams as release signals: the stream metrics of each pool, a canary
//! judged on its streams, and the event an event stream gets at the end of
//! its pool's drain.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::upstream::Listening;
use crate::support::*;

/// The bound of each test here.
const BOUND: Duration = Duration::from_secs(20);

/// How a [`stream_upstream`] ends its event streams.
#[derive(Clone, Copy, PartialEq)]
enum Streams {
    /// Ten events 10 ms apart, then a proper end.
    Whole,
    /// Five of the ten, then the connection closes: cut halfway.
    CutHalfway,
    /// An event every 20 ms until the client goes.
    Endless,
}

/// A raw HTTP/1.1 upstream, one request per connection: `/stream` is an
/// event stream whose events carry `id:` (counting on from the request's
/// `Last-Event-ID`) and `data: <name> <id>`; any other path answers `ok`.
async fn stream_upstream(name: &'static str, streams: Streams) -> Listening {
    Listening::start(move |mut conn: TcpStream| async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf).await {
                Ok(n @ 1..) => head.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        if !head.starts_with("get /stream") {
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                name.len()
            );
            let _ = conn.write_all(answer.as_bytes()).await;
            return;
        }
        let from: u64 = head
            .lines()
            .find_map(|l| l.strip_prefix("last-event-id:"))
            .and_then(|v| v.trim().parse().ok())
            .map_or(0, |last: u64| last + 1);
        let start = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                     transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
        if conn.write_all(start.as_bytes()).await.is_err() {
            return;
        }
        let (count, gap) = match streams {
            Streams::Endless => (u64::MAX, 20),
            _ => (10, 10),
        };
        for i in 0..count {
            if streams == Streams::CutHalfway && i == 5 {
                return;
            }
            let event = format!("id: {}\ndata: {name} {}\n\n", from + i, from + i);
            let chunk = format!("{:x}\r\n{event}\r\n", event.len());
            if conn.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(gap)).await;
        }
        let _ = conn.write_all(b"0\r\n\r\n").await;
    })
    .await
}

/// Service `app` over the two upstreams, blue active, with `extra` lines in
/// `[service.app]` and `tables` after it.
fn config(blue: SocketAddr, green: SocketAddr, extra: &str, tables: &str) -> String {
    format!(
        "{}[service.app]\nactive = \"blue\"\n{extra}\n\n\
         [service.app.pools.blue]\nservers = [\"{blue}\"]\n\n\
         [service.app.pools.green]\nservers = [\"{green}\"]\n\n{tables}\n",
        route(None, "/", "app"),
    )
}

/// Opens `/stream` (with `last_id` as `Last-Event-ID`) and reads it to its
/// end: the body's bytes and whether it ended properly.
async fn read_stream(addr: SocketAddr, last_id: Option<u64>) -> (String, bool) {
    let mut client = Client::http1(addr).await;
    let mut req = get("/stream");
    if let Some(id) = last_id {
        req.headers_mut()
            .insert("last-event-id", id.to_string().parse().unwrap());
    }
    let mut resp = client.send(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut text = Vec::new();
    loop {
        match resp.body_mut().frame().await {
            None => return (String::from_utf8_lossy(&text).into_owned(), true),
            Some(Err(_)) => return (String::from_utf8_lossy(&text).into_owned(), false),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    text.extend_from_slice(&data);
                }
            }
        }
    }
}

/// The `id:` values of the events in `text`.
fn ids(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|id| id.parse().expect("numeric id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_aborts_on_a_green_whose_streams_are_cut_while_short_requests_succeed() {
    within(BOUND, async {
        let blue = stream_upstream("blue", Streams::Whole).await;
        let green = stream_upstream("green", Streams::CutHalfway).await;
        let stage = "[[service.app.canary.stages]]\nweight = 50\nhold = \"5s\"\n\
                     min_requests = 20\nmax_error_rate = 0.01\nmax_p99 = \"1s\"\n\
                     max_stream_abort_rate = 0.05\n";
        let proxy = Cutover::start(&config(blue.addr, green.addr, "", stage)).await;
        let reply = admin_post(proxy.admin, "/api/v1/services/app/canary", json!({})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

        let addr = proxy.addr;
        let streams = tokio::spawn(async move {
            let mut cut = 0;
            for _ in 0..20 {
                let (text, whole) = read_stream(addr, None).await;
                if !whole {
                    assert!(text.starts_with("id: 0\ndata: green 0\n\n"), "{text:?}");
                    cut += 1;
                }
            }
            cut
        });
        let mut short = Vec::new();
        for _ in 0..60 {
            short.push(fetch(proxy.addr, "/").await);
        }
        let cut = streams.await.unwrap();

        assert!(
            short.iter().all(|r| r.status == StatusCode::OK),
            "a short request failed"
        );
        assert!(cut > 0, "no stream went to green");
        // The canary is judged once a second.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let aborts = loop {
            let aborts = proxy.events_with("app", "canary_abort").await;
            if !aborts.is_empty() || tokio::time::Instant::now() > deadline {
                break aborts;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(aborts.len(), 1, "{aborts:#?}");
        let detail = &aborts[0]["detail"];
        assert_eq!(detail["criterion"], "max_stream_abort_rate", "{detail:#}");
        assert_eq!(detail["measured"]["stream_abort_rate"], 1.0, "{detail:#}");
        let status = proxy.service("app").await;
        assert_eq!(status["weights"], json!({"blue": 100, "green": 0}));
        assert_eq!(status["canary"], Value::Null);

        let scrape = proxy.scrape().await;
        let streams = |pool, outcome| {
            scrape.value(
                "cutover_streams_total",
                &[("service", "app"), ("pool", pool), ("outcome", outcome)],
            )
        };
        assert_eq!(streams("green", "upstream_abort"), cut as f64);
        assert_eq!(streams("blue", "completed"), 20.0 - cut as f64);
        assert_eq!(streams("blue", "upstream_abort"), 0.0);
        let open = [("service", "app"), ("pool", "green")];
        assert_eq!(scrape.value("cutover_streams_open", &open), 0.0);
        let ttfb = scrape.value("cutover_stream_ttfb_seconds_count", &open);
        assert_eq!(ttfb, cut as f64);
        let green_5xx: f64 = (500..600)
            .filter_map(|code: u16| {
                let code = code.to_string();
                scrape.get(
                    "cutover_requests_total",
                    &[("service", "app"), ("pool", "green"), ("code", &code)],
                )
            })
            .sum();
        assert_eq!(green_5xx, 0.0, "green's short requests all succeed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_gets_the_drain_event_and_reconnects_to_the_new_pool() {
    within(BOUND, async {
        let blue = stream_upstream("blue", Streams::Endless).await;
        let green = stream_upstream("green", Streams::Whole).await;
        let extra = "drain_timeout = \"300ms\"\n\
                     drain_sse_event = \"event: drain\\ndata: reconnect\"";
        let proxy = Cutover::start(&config(blue.addr, green.addr, extra, "")).await;

        let addr = proxy.addr;
        let first = tokio::spawn(read_stream(addr, None));
        // A few events in, the traffic moves to green.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let reply = proxy.switch("app", json!({"to": "green"})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let (text, whole) = first.await.unwrap();

        assert!(whole, "the stream did not end properly: {text:?}");
        assert!(
            text.ends_with("\n\nevent: drain\ndata: reconnect\n\n"),
            "{text:?}"
        );
        assert!(text.contains("data: blue "), "{text:?}");
        let seen = ids(&text);
        let last = *seen.last().expect("events before the drain's end");
        assert_eq!(seen, (0..=last).collect::<Vec<_>>(), "{text:?}");

        // What an EventSource does: reconnect with the last id it saw.
        let (again, whole) = read_stream(addr, Some(last)).await;
        assert!(whole, "{again:?}");
        assert!(
            again.starts_with(&format!("id: {}\ndata: green {}\n\n", last + 1, last + 1)),
            "{again:?}"
        );
        let scrape = proxy.scrape().await;
        let cut = scrape.value(
            "cutover_streams_total",
            &[
                ("service", "app"),
                ("pool", "blue"),
                ("outcome", "drain_cut"),
            ],
        );
        assert_eq!(cut, 1.0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_deadline_an_event_stream_gets_the_drain_event() {
    within(BOUND, async {
        let blue = stream_upstream("blue", Streams::Endless).await;
        let green = stream_upstream("green", Streams::Whole).await;
        let extra = "drain_timeout = \"300ms\"\n\
                     drain_sse_event = \"event: drain\\ndata: reconnect\"";
        let proxy = Cutover::start(&config(blue.addr, green.addr, extra, "")).await;
        let first = tokio::spawn(read_stream(proxy.addr, None));
        tokio::time::sleep(Duration::from_millis(100)).await;

        // The stream outlives the shutdown's deadline (the longest drain_timeout).
        let _dir = proxy.stop().await;
        let (text, whole) = first.await.unwrap();

        assert!(whole, "the stream did not end properly: {text:?}");
        assert!(text.contains("data: blue 0\n\n"), "{text:?}");
        assert!(
            text.ends_with("\n\nevent: drain\ndata: reconnect\n\n"),
            "{text:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_cut_at_the_drain_deadline_is_refused_so_it_is_retried() {
    within(BOUND, async {
        let blue = stream_upstream("blue", Streams::Endless).await;
        let green = stream_upstream("green", Streams::Whole).await;
        let extra = "drain_timeout = \"300ms\"";
        let proxy = Cutover::start(&config(blue.addr, green.addr, extra, "")).await;
        let mut client = Client::h2(proxy.addr).await;
        let mut resp = client.send(get("/stream")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let reply = proxy.switch("app", json!({"to": "green"})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

        let err = loop {
            match resp.body_mut().frame().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break e,
                None => panic!("the cut stream ended as if whole"),
            }
        };

        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        let mut reason = None;
        while let Some(e) = source {
            if let Some(h2) = e.downcast_ref::<h2::Error>() {
                reason = h2.reason();
            }
            source = e.source();
        }
        assert_eq!(reason, Some(h2::Reason::REFUSED_STREAM), "{err:?}");
        // The connection lives on: the retry lands on green.
        let again = client.get("/").await;
        assert_eq!(again.text(), "green");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_at_the_drain_deadline_gets_close_1001_both_ways() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;

    within(BOUND, async {
        // An upstream that echoes and reports the close it gets.
        let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
        let blue = Listening::start(move |conn: TcpStream| {
            let closed = closed_tx.clone();
            async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(conn).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Close(frame) = msg {
                        let _ = closed.send(frame.map(|f| f.code));
                        return;
                    }
                    if ws.send(msg).await.is_err() {
                        return;
                    }
                }
            }
        })
        .await;
        let green = stream_upstream("green", Streams::Whole).await;
        let extra = "drain_timeout = \"300ms\"";
        let proxy = Cutover::start(&config(blue.addr, green.addr, extra, "")).await;
        let stream = TcpStream::connect(proxy.addr).await.unwrap();
        let (mut ws, _) =
            tokio_tungstenite::client_async(format!("ws://{}/ws", proxy.addr), stream)
                .await
                .expect("handshake through the proxy");
        ws.send(Message::text("before")).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text("before"));

        let reply = proxy.switch("app", json!({"to": "green"})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

        let close = match ws.next().await {
            Some(Ok(Message::Close(frame))) => frame,
            other => panic!("expected a close frame, got {other:?}"),
        };
        assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
        let upstream_close = closed_rx.recv().await.expect("the upstream saw the close");
        assert_eq!(upstream_close, Some(CloseCode::Away));
        let scrape = proxy.scrape().await;
        let cut = scrape.value(
            "cutover_streams_total",
            &[
                ("service", "app"),
                ("pool", "blue"),
                ("outcome", "drain_cut"),
            ],
        );
        assert_eq!(cut, 1.0);
    })
    .await;
}
