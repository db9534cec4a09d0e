//! The hostile-token suite, through the real gRPC server on a Unix socket.
//!
//! Each case is a token and the exact reason it must get. A case's answer must also be
//! a normal `VerifyResponse` (never a gRPC error), `valid` must agree with the reason,
//! no claims may come back when the token was rejected before its signature was
//! checked, and the detail must never echo the token. After the cases, the same server
//! must still accept good tokens.
//!
//! Each group runs on its own sidecar (so one failing group does not hide another), and
//! [`hostile_suite_on_one_server_keeps_serving`] runs them all against one.

// Loaded with `#[path]` from the crate root, this file's children resolve from its own
// directory, so name their files explicitly.
#[path = "hostile/cases.rs"]
mod cases;
#[path = "hostile/revocation.rs"]
mod revocation;

use denylist_proto::pb::{self, Reason};
use tonic::codegen::http::uri::PathAndQuery;

use crate::harness::{
    Issuer, START_SECS, SidecarBuilder, TestKey, TestSidecar, reason_name, within,
};

/// A hostile (or control) token and the answers it may get (usually exactly one).
pub(crate) struct Case {
    name: String,
    token: String,
    expect: Vec<Reason>,
}

impl Case {
    fn new(name: impl Into<String>, token: String, expect: &[Reason]) -> Self {
        Self {
            name: name.into(),
            token,
            expect: expect.to_vec(),
        }
    }
}

/// The issuers of the several-issuer sidecar, and an attacker's keys.
pub(crate) struct Keys {
    /// RS256, PEM key `rs-1`.
    rs: Issuer,
    /// ES256, PEM key `es-1`, `audiences = ["api"]`.
    es: Issuer,
    /// HS256, secret `hs-1`.
    hs: Issuer,
    /// HS256, secret `hs2-1` (a second issuer with the same algorithm).
    hs2: Issuer,
    /// EdDSA, PEM key `ed-1`.
    ed: Issuer,
    /// Not configured anywhere.
    attacker_rsa: TestKey,
    /// Not configured anywhere.
    attacker_ec: TestKey,
}

impl Keys {
    fn new() -> Self {
        Self {
            rs: Issuer::new("https://rs.example", "RS256", TestKey::rsa(Some("rs-1"))),
            es: Issuer::new(
                "https://es.example",
                "ES256",
                TestKey::ec_p256(Some("es-1")),
            ),
            hs: Issuer::new("https://hs.example", "HS256", TestKey::hmac(Some("hs-1"))),
            hs2: Issuer::new("https://hs2.example", "HS256", TestKey::hmac(Some("hs2-1"))),
            ed: Issuer::new(
                "https://ed.example",
                "EdDSA",
                TestKey::ed25519(Some("ed-1")),
            ),
            attacker_rsa: TestKey::rsa(Some("attacker-1")),
            attacker_ec: TestKey::ec_p256(Some("attacker-ec")),
        }
    }

    fn all(&self) -> [&Issuer; 5] {
        [&self.rs, &self.es, &self.hs, &self.hs2, &self.ed]
    }
}

/// A sidecar with every issuer of `k`: `iss` chooses the keys.
async fn several_issuers(k: &Keys) -> TestSidecar {
    SidecarBuilder::new()
        .issuer(&k.rs, "")
        .issuer(&k.es, "audiences = [\"api\"]")
        .issuer(&k.hs, "")
        .issuer(&k.hs2, "")
        .issuer(&k.ed, "")
        .start()
        .await
}

/// A sidecar with `issuer` only: its keys are used without reading the payload.
async fn one_issuer(issuer: &Issuer) -> TestSidecar {
    SidecarBuilder::new().issuer(issuer, "").start().await
}

/// Reasons given before the signature is checked (or because it failed): no claims may
/// come back with them.
const UNVERIFIED: [Reason; 8] = [
    Reason::BadSignature,
    Reason::UnknownKey,
    Reason::AlgorithmNone,
    Reason::AlgorithmConfusion,
    Reason::AlgorithmNotAllowed,
    Reason::TokenTooLarge,
    Reason::UnsupportedCriticalHeader,
    Reason::EncryptedOrNested,
];

/// What is wrong with `r` as the answer to `case`, if anything.
fn judge(case: &Case, r: &pb::VerifyResponse) -> Vec<String> {
    let mut problems = Vec::new();
    let got = Reason::try_from(r.reason).ok();
    if !got.is_some_and(|g| case.expect.contains(&g)) {
        let want: Vec<_> = case.expect.iter().map(|e| e.as_str_name()).collect();
        problems.push(format!(
            "expected {}, got {} (detail: {:?})",
            want.join(" or "),
            reason_name(r.reason),
            r.detail
        ));
    }
    if r.valid != (got == Some(Reason::Ok)) {
        problems.push(format!(
            "valid = {} with reason {}",
            r.valid,
            reason_name(r.reason)
        ));
    }
    if got.is_some_and(|g| UNVERIFIED.contains(&g)) && r.claims.is_some() {
        problems.push("claims returned for a token whose signature was not verified".to_owned());
    }
    if got == Some(Reason::Ok) {
        match &r.claims {
            None => problems.push("a valid token came back without claims".to_owned()),
            // The contract: claims carry the full payload as a `google.protobuf.Struct`.
            Some(c) if c.payload.is_none() => {
                problems.push(
                    "a valid token came back without its payload (`claims.payload` is empty)"
                        .to_owned(),
                );
            }
            Some(_) => {}
        }
    }
    // The detail must never echo the token (it may end up in logs).
    for segment in case.token.split('.') {
        if segment.len() >= 16 && r.detail.contains(segment) {
            problems.push("the detail echoes part of the token".to_owned());
            break;
        }
    }
    problems
}

/// Runs every case; returns one line per problem.
async fn run(sidecar: &TestSidecar, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        match sidecar.try_verify(&case.token).await {
            Ok(r) => failures.extend(
                judge(case, &r)
                    .into_iter()
                    .map(|p| format!("{}: {p}", case.name)),
            ),
            Err(status) => failures.push(format!(
                "{}: a gRPC error instead of an answer: {:?} {:?}",
                case.name,
                status.code(),
                status.message()
            )),
        }
    }
    failures
}

/// Good tokens of each issuer still get `REASON_OK`.
async fn still_serves(sidecar: &TestSidecar, issuers: &[&Issuer]) -> Vec<String> {
    let mut failures = Vec::new();
    for issuer in issuers {
        let token = issuer.token(&issuer.claims(START_SECS));
        match sidecar.try_verify(&token).await {
            Ok(r) if r.valid && r.reason == Reason::Ok as i32 => {}
            Ok(r) => failures.push(format!(
                "after the hostile cases, a good {} token got {} ({:?})",
                issuer.iss,
                reason_name(r.reason),
                r.detail
            )),
            Err(s) => failures.push(format!("after the hostile cases, Verify failed: {s:?}")),
        }
    }
    failures
}

fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} problem(s):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// Runs one group on a several-issuer sidecar, then checks it still serves.
async fn check_group(group: fn(&Keys) -> Vec<Case>) {
    let keys = Keys::new();
    let sidecar = several_issuers(&keys).await;
    let mut failures = run(&sidecar, &group(&keys)).await;
    failures.extend(still_serves(&sidecar, &keys.all()).await);
    assert_no_failures(&failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_suite_on_one_server_keeps_serving() {
    let keys = Keys::new();
    let groups: [fn(&Keys) -> Vec<Case>; 14] = [
        cases::alg_none,
        cases::alg_none_unsigned,
        cases::algorithm_confusion,
        cases::ecdsa,
        cases::signature_segment,
        cases::kid,
        cases::header_keys,
        cases::crit,
        cases::envelope_and_algorithm,
        cases::claim_types,
        cases::size,
        cases::truncation,
        cases::base64,
        cases::claims,
    ];
    let all: Vec<Case> = groups
        .iter()
        .flat_map(|g| g(&keys))
        .chain(cases::payload_json(&keys.hs))
        .collect();
    let several = several_issuers(&keys).await;
    let mut failures = run(&several, &all).await;

    let single = one_issuer(&keys.hs).await;
    let single_cases: Vec<Case> = cases::payload_json(&keys.hs)
        .into_iter()
        .chain(cases::single_issuer_claims(&keys.hs))
        .collect();
    failures.extend(
        run(&single, &single_cases)
            .await
            .into_iter()
            .map(|f| format!("[one issuer] {f}")),
    );

    // Whatever the answers were, both servers must still be serving.
    failures.extend(still_serves(&several, &keys.all()).await);
    failures.extend(still_serves(&single, &[&keys.hs]).await);
    assert_no_failures(&failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_in_any_letter_case() {
    check_group(cases::alg_none).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_unsecured_jws_with_empty_signature() {
    check_group(cases::alg_none_unsigned).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_key_used_as_hmac_secret_is_algorithm_confusion() {
    check_group(cases::algorithm_confusion).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_der_and_degenerate_signatures_are_bad() {
    check_group(cases::ecdsa).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_stripped_short_and_foreign_signatures() {
    check_group(cases::signature_segment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_hostile_kids_are_unknown_keys() {
    check_group(cases::kid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jku_x5u_jwk_headers_are_never_used() {
    check_group(cases::header_keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_crit_is_rejected() {
    check_group(cases::crit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_nested_and_disallowed_algorithms() {
    check_group(cases::envelope_and_algorithm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_claims_of_the_wrong_json_type() {
    check_group(cases::claim_types).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_over_the_size_bound() {
    check_group(cases::size).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_missplit_segments() {
    check_group(cases::truncation).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_canonical_base64url_and_non_json_headers() {
    check_group(cases::base64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_claim_checks() {
    check_group(cases::claims).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_json_utf8_nesting_duplicates_with_several_issuers() {
    check_group(|k| cases::payload_json(&k.hs)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_json_utf8_nesting_duplicates_with_one_issuer() {
    let keys = Keys::new();
    let sidecar = one_issuer(&keys.hs).await;
    let mut failures = run(&sidecar, &cases::payload_json(&keys.hs)).await;
    failures.extend(still_serves(&sidecar, &[&keys.hs]).await);
    assert_no_failures(&failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_claim_checks_with_one_issuer() {
    let keys = Keys::new();
    let sidecar = one_issuer(&keys.hs).await;
    let mut failures = run(&sidecar, &cases::single_issuer_claims(&keys.hs)).await;
    failures.extend(still_serves(&sidecar, &[&keys.hs]).await);
    assert_no_failures(&failures);
}

/// A properly signed HS256 token of exactly `len` bytes.
fn token_of_length(issuer: &Issuer, len: usize) -> String {
    // base64url can spell every length except 4k + 1, so vary the header too.
    for header_pad in 0..4 {
        let mut header = issuer.header();
        header["x"] = serde_json::json!("h".repeat(header_pad));
        let with_pad = |pad: usize| {
            let mut claims = issuer.claims(START_SECS);
            claims["pad"] = serde_json::json!("p".repeat(pad));
            issuer.token_with_header(&header, &claims)
        };
        // Each padding byte adds 4/3 characters: start just short of the target.
        let base = with_pad(0).len();
        let start = (len.saturating_sub(base) * 3 / 4).saturating_sub(4);
        for pad in start..start + 16 {
            let token = with_pad(pad);
            if token.len() == len {
                return token;
            }
            if token.len() > len {
                break;
            }
        }
    }
    panic!("test bug: cannot build a token of {len} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_at_the_size_bound_is_read_and_one_byte_more_is_not() {
    let keys = Keys::new();
    let sidecar = several_issuers(&keys).await;
    // Default `verify.max_token_bytes` is 8192.
    let at = token_of_length(&keys.hs, 8192);
    sidecar
        .assert_reason(&at, Reason::Ok, "a token of exactly 8192 bytes")
        .await;
    let over = token_of_length(&keys.hs, 8193);
    sidecar
        .assert_reason(&over, Reason::TokenTooLarge, "a token of 8193 bytes")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_grpc_request_gets_a_status_and_the_server_keeps_serving() {
    let keys = Keys::new();
    let sidecar = several_issuers(&keys).await;
    // Default `listen.max_request_bytes` is 64 KiB.
    let huge = "a".repeat(100_000);
    let status = sidecar
        .try_verify(&huge)
        .await
        .expect_err("a 100 KB request must be refused by the server");
    assert_eq!(
        status.code(),
        tonic::Code::ResourceExhausted,
        "the over-limit request gets the status gRPC clients expect: {status:?}"
    );
    assert!(
        status.message().contains("too large"),
        "the status says why: {status:?}"
    );
    // Over the request limit and the 16 bytes of framing slack the server allows
    // (`FRAMING_BYTES` in the sidecar's gRPC module): refused too.
    let status = sidecar
        .try_verify(&"a".repeat(64 * 1024 + 16 + 1))
        .await
        .expect_err("a token over the request limit and its framing slack");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    // Under the request limit, over the token limit: a normal answer, up to a token
    // of exactly the request limit (its protobuf framing is not counted).
    sidecar
        .assert_reason(&"a".repeat(60_000), Reason::TokenTooLarge, "a 60 KB token")
        .await;
    sidecar
        .assert_reason(
            &"a".repeat(64 * 1024),
            Reason::TokenTooLarge,
            "a token of exactly max_request_bytes",
        )
        .await;
    // The same connection keeps working.
    assert_no_failures(&still_serves(&sidecar, &keys.all()).await);
    // And so does a new one.
    let fresh = crate::harness::connect(&sidecar.socket)
        .await
        .expect("reconnect");
    let mut client = pb::verifier_client::VerifierClient::new(fresh);
    let good = keys.hs.token(&keys.hs.claims(START_SECS));
    let r = within(
        "Verify on a new connection",
        client.verify(pb::VerifyRequest { token: good }),
    )
    .await
    .expect("Verify")
    .into_inner();
    assert_eq!(reason_name(r.reason), "REASON_OK");
}

/// `VerifyRequest` on the wire, but with `token` as raw bytes (so it can be invalid UTF-8).
#[derive(Clone, PartialEq, prost::Message)]
struct RawBytesRequest {
    #[prost(bytes = "vec", tag = "1")]
    token: Vec<u8>,
}

/// `VerifyRequest` on the wire, but with field 1 as a varint (the wrong wire type).
#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireTypeRequest {
    #[prost(uint64, tag = "1")]
    token: u64,
}

async fn raw_verify<M>(
    sidecar: &TestSidecar,
    message: M,
) -> Result<pb::VerifyResponse, tonic::Status>
where
    M: prost::Message + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(sidecar.channel());
    within("channel ready", grpc.ready())
        .await
        .expect("channel ready");
    within(
        "raw Verify",
        grpc.unary(
            tonic::Request::new(message),
            PathAndQuery::from_static("/denylist.v1.Verifier/Verify"),
            tonic_prost::ProstCodec::<M, pb::VerifyResponse>::default(),
        ),
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_grpc_requests_get_a_status_and_the_server_keeps_serving() {
    let keys = Keys::new();
    let sidecar = several_issuers(&keys).await;

    let invalid_utf8 = raw_verify(
        &sidecar,
        RawBytesRequest {
            token: b"eyJ\xff\xfe.x.y".to_vec(),
        },
    )
    .await;
    let status =
        invalid_utf8.expect_err("a `string` field holding invalid UTF-8 cannot be decoded");
    assert_ne!(status.code(), tonic::Code::Ok);
    assert!(
        !status.message().is_empty(),
        "the status says why: {status:?}"
    );

    let wrong_type = raw_verify(&sidecar, WrongWireTypeRequest { token: 42 }).await;
    let status = wrong_type.expect_err("field 1 with the wrong wire type cannot be decoded");
    assert!(
        !status.message().is_empty(),
        "the status says why: {status:?}"
    );

    assert_no_failures(&still_serves(&sidecar, &keys.all()).await);
}
