//! WebSocket (HTTP/1.1 Upgrade) is tunnelled: the handshake reaches the
//! active pool and messages echo back both ways, direct and through cutover.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

async fn assert_websocket_echo(addr: SocketAddr, label: &str) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .unwrap_or_else(|e| panic!("{label}: handshake failed: {e}"));
    assert_eq!(resp.status(), 101, "{label}");

    let messages = vec![
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text("ünïcödé ✓"),
        Message::binary(vec![7u8; 100_000]),
        Message::text("last"),
    ];
    for msg in &messages {
        ws.send(msg.clone()).await.unwrap();
        let Some(back) = ws.next().await else {
            panic!("{label}: closed early");
        };
        let back = back.unwrap();
        assert_eq!(&back, msg, "{label}");
    }
    // Several in flight at once come back in order.
    for i in 0..10 {
        ws.send(Message::text(format!("burst {i}"))).await.unwrap();
    }
    for i in 0..10 {
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back, Message::text(format!("burst {i}")), "{label}");
    }
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_echo_back_through_the_proxy() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        assert_websocket_echo(blue.addr, "direct").await;
        assert_websocket_echo(proxy.addr, "through cutover").await;
        assert_eq!((blue.hits(), green.hits()), (2, 0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_plain_requests_share_the_proxy_independently() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        let stream = TcpStream::connect(proxy.addr).await.unwrap();
        let (mut ws, _) =
            tokio_tungstenite::client_async(format!("ws://{}/ws", proxy.addr), stream)
                .await
                .unwrap();
        // While the tunnel is open, ordinary requests still flow.
        for _ in 0..5 {
            assert_eq!(fetch(proxy.addr, "/").await.echo().upstream, "blue");
        }
        ws.send(Message::text("still here")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("still here")
        );
        ws.close(None).await.unwrap();
    })
    .await;
}
