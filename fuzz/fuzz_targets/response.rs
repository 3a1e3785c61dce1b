//! The upstream response parser and body decoder over arbitrary server
//! bytes: they never panic, never give more body than the server sent,
//! and decide the same however the bytes are split into reads.

#![no_main]

use bytes::BytesMut;
use cutover::http1::{Decoded, Decoder, Framing, ResponseParser};
use http::header::HeaderMap;
use http::Method;
use libfuzzer_sys::fuzz_target;

/// What the parser and decoder made of a response: its status (or why
/// there is none), the body's data, its trailers, and how it ended.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    head: Result<u16, &'static str>,
    data: Vec<u8>,
    trailers: Option<HeaderMap>,
    end: &'static str,
}

fn run<'a>(method: &Method, upgrade: bool, reads: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut reads = reads.into_iter();
    let mut parser = ResponseParser::default();
    let mut buf = BytesMut::new();
    let mut headers = HeaderMap::new();
    let mut out = Outcome {
        head: Err("cut"),
        data: Vec::new(),
        trailers: None,
        end: "",
    };
    let head = loop {
        match parser.parse(&mut buf, method, upgrade, &mut headers) {
            Err(_) => {
                out.head = Err("refused");
                return out;
            }
            Ok(Some(head)) => break head,
            Ok(None) => match reads.next() {
                Some(read) => buf.extend_from_slice(read),
                None => return out,
            },
        }
    };
    out.head = Ok(head.response.status().as_u16());
    if head.framing == Framing::Switched {
        assert!(
            upgrade,
            "a 101 switched a request that asked for no upgrade"
        );
        out.end = "switched";
        return out;
    }
    let mut decoder = Decoder::new(head.framing);
    out.end = loop {
        match decoder.decode(&mut buf) {
            Err(_) => break "refused",
            Ok(Decoded::End) => break "whole",
            Ok(Decoded::Frame(frame)) => match frame.into_data() {
                Ok(data) => out.data.extend_from_slice(&data),
                Err(frame) => out.trailers = frame.into_trailers().ok(),
            },
            Ok(Decoded::More) => match reads.next() {
                Some(read) => buf.extend_from_slice(read),
                None => match decoder.closed() {
                    Ok(()) => break "whole",
                    Err(_) => break "cut",
                },
            },
        }
    };
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    // The low bits choose the request, the rest where the bytes split.
    let method = if first & 1 == 1 {
        Method::HEAD
    } else {
        Method::GET
    };
    let upgrade = first & 2 == 2;
    let whole = run(&method, upgrade, [bytes]);
    assert!(whole.data.len() <= bytes.len(), "more body than bytes");
    let at = usize::from(first >> 2) * bytes.len() / 64;
    let (a, b) = bytes.split_at(at);
    assert_eq!(whole, run(&method, upgrade, [a, b]), "split at {at}");
    if bytes.len() < 4096 {
        assert_eq!(
            whole,
            run(&method, upgrade, bytes.chunks(1)),
            "byte by byte"
        );
    }
});
