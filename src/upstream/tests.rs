//! The pool of one server's connections, against a real loopback listener.

use super::*;

/// Connections to a local listener, and the server's ends.
async fn conns_to(
    upstream: &Upstream,
    listener: &tokio::net::TcpListener,
    n: usize,
) -> Vec<(Box<UpstreamConn>, TcpStream)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (client, accepted) = tokio::join!(
            TcpStream::connect(listener.local_addr().unwrap()),
            listener.accept()
        );
        let conn = UpstreamConn::new(client.unwrap(), upstream.cutter.flag());
        out.push((conn, accepted.unwrap().0));
    }
    out
}

#[tokio::test]
async fn idle_connections_the_server_closed_are_dropped() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = Upstream::new(
        ServerAddr {
            host: addr.ip().to_string(),
            port: addr.port(),
        },
        Arc::default(),
    );
    let mut conns = conns_to(&upstream, &listener, 3).await;
    let (newest, newest_server) = conns.pop().unwrap();
    let servers: Vec<_> = conns
        .into_iter()
        .map(|(conn, server)| {
            upstream.release(conn);
            server
        })
        .collect();
    // The server closes the two idle ones.
    drop(servers);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Every CHECK_OLDEST_EVERY-th return checks the oldest idle
    // connection. Two returns so far: the live one goes back and forth
    // until the return before that.
    let mut live = newest;
    for _ in 2..CHECK_OLDEST_EVERY - 1 {
        upstream.release(live);
        live = upstream.checkout().expect("the live connection");
        assert_eq!(
            lock(&upstream.idle).conns.len(),
            2,
            "checked before its turn"
        );
    }
    upstream.release(live);
    assert_eq!(
        lock(&upstream.idle).conns.len(),
        2,
        "the oldest closed one stayed"
    );
    // Checkouts take the live one, then find only the closed one.
    let taken = upstream.checkout().expect("the live connection");
    assert!(
        upstream.checkout().is_none(),
        "a connection the server closed was handed out"
    );
    assert!(lock(&upstream.idle).conns.is_empty());
    drop((taken, newest_server));

    // A cut makes every connection of the pool unusable.
    let (conn, _server) = conns_to(&upstream, &listener, 1).await.pop().unwrap();
    upstream.release(conn);
    upstream.cutter.cut();
    assert!(upstream.checkout().is_none());
}
