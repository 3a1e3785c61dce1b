//! HTTP/2 floods from a raw h2c client: CONTINUATION frames without end
//! and rapid reset both end in GOAWAY ENHANCE_YOUR_CALM (what h2 guards
//! with the limits set in `proxy::builder`), an oversized header list gets
//! 431, and other clients keep being served.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 4;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET http://a/`: static-table `:method GET`, `:scheme http`, `:path /`,
/// then `:authority: a` as a literal.
const GET_BLOCK: &[u8] = &[0x82, 0x86, 0x84, 0x41, 0x01, b'a'];

/// The preface, our SETTINGS and the ACK of the server's.
fn hello() -> Vec<u8> {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    bytes.extend(frame(SETTINGS, 1, 0, &[]));
    bytes
}

/// Reads frames until the server closes; returns the GOAWAY error code, if
/// one came, and the status of any response HEADERS (first byte of block).
async fn read_until_close(stream: &mut TcpStream) -> (Option<u32>, Vec<(u8, Vec<u8>)>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let (mut goaway, mut frames, mut at) = (None, Vec::new(), 0);
    while buf.len() >= at + 9 {
        let len = (usize::from(buf[at]) << 16)
            | (usize::from(buf[at + 1]) << 8)
            | usize::from(buf[at + 2]);
        let kind = buf[at + 3];
        let end = (at + 9 + len).min(buf.len());
        let payload = buf[at + 9..end].to_vec();
        if kind == GOAWAY && payload.len() >= 8 {
            goaway = Some(u32::from_be_bytes(
                payload[4..8].try_into().expect("4 bytes"),
            ));
        }
        frames.push((kind, payload));
        at = end;
    }
    (goaway, frames)
}

async fn proxy() -> (Upstream, Upstream, Cutover) {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let proxy = Cutover::start(&blue_green(&blue, &green)).await;
    (blue, green, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_gets_goaway_enhance_your_calm() {
    within(BOUND, async {
        let (blue, _green, proxy) = proxy().await;
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let mut bytes = hello();
        // A header block that never ends: one HEADERS, then CONTINUATION
        // frames without END_HEADERS, far more than a 64 KiB list needs.
        bytes.extend(frame(HEADERS, END_STREAM, 1, GET_BLOCK));
        for _ in 0..200 {
            bytes.extend(frame(CONTINUATION, 0, 1, &[]));
        }
        // The peer may close before all of it is written.
        let _ = stream.write_all(&bytes).await;
        let (goaway, _) = read_until_close(&mut stream).await;
        assert_eq!(goaway, Some(ENHANCE_YOUR_CALM));
        assert_eq!(blue.hits(), 0, "the unfinished request was never forwarded");
        assert_eq!(
            Client::h2(proxy.addr).await.get("/").await.echo().upstream,
            "blue"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_gets_goaway_enhance_your_calm() {
    within(BOUND, async {
        let (blue, _green, proxy) = proxy().await;
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let mut bytes = hello();
        // Open and at once cancel 1000 streams (CVE-2023-44487).
        for i in 0..1000u32 {
            let id = 2 * i + 1;
            bytes.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, GET_BLOCK));
            bytes.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
        }
        let _ = stream.write_all(&bytes).await;
        let (goaway, _) = read_until_close(&mut stream).await;
        assert_eq!(goaway, Some(ENHANCE_YOUR_CALM));
        assert!(blue.hits() < 1000, "every reset stream was forwarded");
        assert_eq!(
            Client::h2(proxy.addr).await.get("/").await.echo().upstream,
            "blue"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_list_over_max_header_bytes_is_431_on_h2() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let toml =
            "[server.limits]\nmax_header_bytes = 4096\n\n".to_string() + &blue_green(&blue, &green);
        let proxy = Cutover::start(&toml).await;
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        // `x-big: <8000 bytes>` as a literal without indexing, new name.
        let mut block = GET_BLOCK.to_vec();
        block.extend([0x00, 0x05]);
        block.extend(b"x-big");
        block.extend([0x7f, 0xc1, 0x3d]); // 127 + 7873 = 8000, 7-bit prefix varint
        block.extend(vec![b'v'; 8000]);
        let mut bytes = hello();
        bytes.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1, &block));
        stream.write_all(&bytes).await.unwrap();
        // The answer is a 431 on the stream: `:status` is not in the static
        // table with 431, so h2 sends it as a literal, Huffman-coded
        // (RFC 7541 Appendix B: '4' 011010, '3' 011001, '1' 00001, EOS pad).
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let found = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return false;
                }
                got.extend_from_slice(&chunk[..n]);
                if got.windows(4).any(|w| w == [0x83, 0x69, 0x90, 0xff]) {
                    return true;
                }
            }
        })
        .await
        .unwrap_or(false);
        assert!(found, "no 431 in {got:?}");
        assert_eq!(blue.hits(), 0);
    })
    .await;
}
