//! `cutover demo`'s pieces, on loopback ports chosen by the OS: the built-in
//! upstreams behind a proxy built from the demo config.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_blue_and_streams_events_progressively() {
    within(BOUND, async {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let blue = cutover::demo::start_upstream(any, "blue", "v1")
            .await
            .unwrap();
        let green = cutover::demo::start_upstream(any, "green", "v2")
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = cutover::demo::config_text(any, any, blue, green, dir.path());
        let proxy = Cutover::start_in(dir, &text).await;

        let reply = fetch(proxy.addr, "/").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["pool"], "blue");
        assert_eq!(reply.json()["version"], "v1");

        // The demo streams 12 tokens 250 ms apart: the first ones must
        // arrive long before the stream ends.
        let sent = Instant::now();
        let mut client = Client::http1(proxy.addr).await;
        let mut resp = client.send(get("/stream")).await;
        assert_eq!(resp.status(), 200);
        let events = read_events(resp.body_mut(), 3).await;
        assert_eq!(events.len(), 3);
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event.json()["i"], i);
            assert_eq!(event.json()["pool"], "blue");
        }
        let first = events[0].at.duration_since(sent);
        assert!(
            first < Duration::from_millis(500),
            "first event after {first:?}"
        );
        let spread = events[2].at.duration_since(events[0].at);
        assert!(
            spread >= Duration::from_millis(400),
            "events 0 and 2 arrived {spread:?} apart, produced 500 ms apart"
        );
        drop(resp);
        drop(client);
        proxy.stop().await;
    })
    .await;
}
