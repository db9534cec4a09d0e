//! The Unix socket serves whatever `:authority` a gRPC client of another language
//! sends (DECISIONS.md, "The Unix socket serves every gRPC client").
//!
//! No Rust HTTP/2 client can send these authorities (the `http` crate refuses them
//! as URIs), so this test speaks HTTP/2 itself: the connection preface, one
//! `HEADERS` frame whose header block is HPACK literals without indexing (RFC 7541
//! §6.2.2, no Huffman), and one `DATA` frame with an empty `StatusRequest`. It then
//! reads frames until the stream's answer: a gRPC message (the call was served) or
//! `RST_STREAM` (refused before any service code ran). The real Python, Node and Rust
//! clients are in [`crate::clients`].

use denylist_proto::pb;
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

use crate::binary::start_es256;
use crate::harness::within;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const PROTOCOL_ERROR: u32 = 0x1;

/// How a request on stream 1 ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The service answered: the gRPC message bytes (without the 5-byte prefix).
    Answered(Vec<u8>),
    /// The stream was reset with this HTTP/2 error code.
    Reset(u32),
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small frame");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), first byte ORed with `high`.
fn hpack_int(out: &mut Vec<u8>, high: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(high | u8::try_from(value).expect("below prefix"));
        return;
    }
    out.push(high | u8::try_from(max).expect("prefix"));
    value -= max;
    while value >= 128 {
        out.push(u8::try_from(value % 128).expect("7 bits") | 0x80);
        value /= 128;
    }
    out.push(u8::try_from(value).expect("7 bits"));
}

/// A literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2).
fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    hpack_int(out, 0, 7, name.len());
    out.extend(name.as_bytes());
    hpack_int(out, 0, 7, value.len());
    out.extend(value.as_bytes());
}

/// Calls `denylist.v1.Verifier/Status` over a new connection to `socket`, sending
/// `authority` as `:authority` (or none), and `:scheme` only when `with_scheme`.
async fn status_call(
    socket: &std::path::Path,
    authority: Option<&str>,
    with_scheme: bool,
) -> Outcome {
    let mut conn = within("connect", UnixStream::connect(socket))
        .await
        .expect("connect to the socket");
    let mut block = Vec::new();
    hpack_literal(&mut block, ":method", "POST");
    if with_scheme {
        hpack_literal(&mut block, ":scheme", "http");
    }
    hpack_literal(&mut block, ":path", "/denylist.v1.Verifier/Status");
    if let Some(authority) = authority {
        hpack_literal(&mut block, ":authority", authority);
    }
    hpack_literal(&mut block, "content-type", "application/grpc");
    hpack_literal(&mut block, "te", "trailers");
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frame(HEADERS, END_HEADERS, 1, &block));
    // An empty StatusRequest: uncompressed flag, zero length.
    out.extend(frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]));
    within("send the request", conn.write_all(&out))
        .await
        .expect("write");

    let mut message = Vec::new();
    loop {
        let mut head = [0u8; 9];
        within("read a frame header", conn.read_exact(&mut head))
            .await
            .expect("the server closed the connection without answering stream 1");
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        within("read a frame payload", conn.read_exact(&mut payload))
            .await
            .expect("read payload");
        match (kind, stream) {
            (SETTINGS, 0) if flags & ACK == 0 => {
                within(
                    "ack settings",
                    conn.write_all(&frame(SETTINGS, ACK, 0, &[])),
                )
                .await
                .expect("write");
            }
            (DATA, 1) => message.extend(payload),
            (HEADERS, 1) if flags & END_STREAM != 0 => {
                assert!(message.len() >= 5, "trailers before any message");
                return Outcome::Answered(message.split_off(5));
            }
            (RST_STREAM, 1) => {
                return Outcome::Reset(u32::from_be_bytes(
                    payload[..4].try_into().expect("4 bytes"),
                ));
            }
            (GOAWAY, 0) => panic!("the server sent GOAWAY: {payload:?}"),
            _ => {}
        }
    }
}

fn assert_served(outcome: Outcome, what: &str) {
    let Outcome::Answered(message) = outcome else {
        panic!("{what}: the call was not served: {outcome:?}");
    };
    let status = pb::StatusResponse::decode(message.as_slice())
        .unwrap_or_else(|e| panic!("{what}: not a StatusResponse: {e}"));
    assert!(status.ready, "{what}: the sidecar answered, and is ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_authority_a_grpc_client_sends_is_served_and_a_malformed_request_is_logged() {
    let mut sidecar = start_es256("3s").await;
    let path = sidecar.socket.to_string_lossy().into_owned();
    // grpc C-core (Python, C++, Ruby, PHP) ≥ 1.57: the percent-encoded path.
    let percent: String = path
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let cases = [
        ("percent-encoded path (grpc C-core)", Some(percent.as_str())),
        ("raw path (grpc-java, grpc-swift)", Some(path.as_str())),
        ("localhost (grpc-go)", Some("localhost")),
        ("no :authority", None),
        ("empty :authority", Some("")),
    ];
    for (what, authority) in cases {
        assert_served(status_call(&sidecar.socket, authority, true).await, what);
    }

    // A request that still cannot be served (no :scheme) is refused, and the
    // operator is told why at warn level.
    assert_eq!(
        status_call(&sidecar.socket, Some("localhost"), false).await,
        Outcome::Reset(PROTOCOL_ERROR)
    );
    let (_, stderr) = sidecar.terminate().await;
    let warned = stderr
        .lines()
        .any(|l| l.contains("WARN") && l.contains("missing scheme"));
    assert!(
        warned,
        "a WARN line says why the stream was reset:\n{stderr}"
    );
}

/// The test's own HPACK integer encoding, against RFC 7541 §C.1's examples.
#[test]
fn hpack_integers_match_the_rfc_examples() {
    let mut out = Vec::new();
    hpack_int(&mut out, 0, 5, 10);
    assert_eq!(out, [10]);
    out.clear();
    hpack_int(&mut out, 0, 5, 1337);
    assert_eq!(out, [31, 154, 10]);
    out.clear();
    hpack_int(&mut out, 0, 8, 42);
    assert_eq!(out, [42]);
}
