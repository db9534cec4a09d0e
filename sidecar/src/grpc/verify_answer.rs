//! Verify's answer on the wire, with the claims encoded once per verified token.
//!
//! A Verify answer carries the token's claims, the whole payload among them as a
//! `google.protobuf.Struct`. Building that message and encoding it was most of what
//! the sidecar added to a call beyond gRPC's own cost (measured with callgrind, see
//! docs/BENCHMARKS.md), and for a token in the verified-token cache it is the same
//! every time. So [`VerifyRoute`] serves `denylist.v1.Verifier/Verify` with a codec
//! whose answer, [`VerifyAnswer`], writes the per-call fields (the reason, the matched
//! rule, the denylist's sequence and age) fresh and copies the claims field from the
//! bytes kept with the verified token ([`VerifiedToken::claims_field`]): a cache hit
//! costs a copy. The revocation check and the freshness figures are not cached; they
//! are computed on every call as before.
//!
//! The bytes are what prost writes for the whole answer: protobuf concatenation is a
//! merge, and the parts are written in field order (1–3, the claims as field 4, then
//! 5–8). A test checks the two are identical.
//!
//! Every other method, and every service on the router, is tonic's generated code.

use std::convert::Infallible;
use std::sync::Arc;

use denylist_proto::pb;
use denylist_proto::pb::verifier_server::VerifierServer;
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use super::{VerifierService, revocation_to_proto};
use crate::verify::{Verdict, VerifiedToken};

/// The path tonic's generated server routes to `Verifier::verify`.
const VERIFY_PATH: &str = "/denylist.v1.Verifier/Verify";

/// One Verify answer: the fields computed for this call, and the verified token whose
/// encoded claims are copied in.
#[derive(Debug)]
pub(crate) struct VerifyAnswer {
    /// Fields 1–3: `valid`, `reason`, `detail`.
    head: pb::VerifyResponse,
    /// Field 4 comes from here.
    token: Option<Arc<VerifiedToken>>,
    /// Fields 5–8: `revocation`, `denylist_sequence`, `denylist_age_ms`, `stale`.
    tail: pb::VerifyResponse,
}

impl VerifyAnswer {
    /// The answer to a verdict.
    pub(crate) fn new(verdict: Verdict) -> Self {
        Self {
            head: pb::VerifyResponse {
                valid: verdict.is_valid(),
                reason: verdict.reason as i32,
                detail: verdict.detail.into_owned(),
                ..Default::default()
            },
            token: verdict.token,
            tail: pb::VerifyResponse {
                revocation: verdict.revocation.as_ref().map(revocation_to_proto),
                denylist_sequence: verdict.freshness.sequence,
                denylist_age_ms: verdict.freshness.age_ms,
                stale: verdict.freshness.stale,
                ..Default::default()
            },
        }
    }

    /// The answer as a prost message (for callers of the `Verifier` trait in process).
    pub(crate) fn into_response(self) -> pb::VerifyResponse {
        let Self { head, token, tail } = self;
        pb::VerifyResponse {
            claims: token.as_deref().map(super::claims_to_proto),
            revocation: tail.revocation,
            denylist_sequence: tail.denylist_sequence,
            denylist_age_ms: tail.denylist_age_ms,
            stale: tail.stale,
            ..head
        }
    }

    /// Writes the answer as prost would write [`VerifyAnswer::into_response`], to a
    /// buffer that grows as needed (tonic's `EncodeBuf`, a `Vec`).
    pub(super) fn encode(&self, buf: &mut impl bytes::BufMut) -> Result<(), prost::EncodeError> {
        self.head.encode(buf)?;
        if let Some(token) = &self.token {
            buf.put_slice(token.claims_field());
        }
        self.tail.encode(buf)
    }
}

/// The `claims` field of a Verify answer for `token`, encoded: what
/// [`VerifiedToken::claims_field`] keeps.
pub(crate) fn encode_claims_field(token: &VerifiedToken) -> Box<[u8]> {
    pb::VerifyResponse {
        claims: Some(super::claims_to_proto(token)),
        ..Default::default()
    }
    .encode_to_vec()
    .into_boxed_slice()
}

/// Decodes a `VerifyRequest` as tonic's prost codec does, encodes a [`VerifyAnswer`].
#[derive(Debug, Clone, Copy, Default)]
struct VerifyCodec;

impl Codec for VerifyCodec {
    type Encode = VerifyAnswer;
    type Decode = pb::VerifyRequest;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self::Encoder {
        Self
    }

    fn decoder(&mut self) -> Self::Decoder {
        Self
    }
}

impl Encoder for VerifyCodec {
    type Item = VerifyAnswer;
    type Error = Status;

    fn encode(&mut self, item: VerifyAnswer, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the answer: {e}")))
    }
}

impl Decoder for VerifyCodec {
    type Item = pb::VerifyRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<pb::VerifyRequest>, Status> {
        // As tonic's prost codec: a message that does not parse is INTERNAL.
        pb::VerifyRequest::decode(buf)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// The Verifier service as tonic generates it, except that Verify is answered through
/// [`VerifyCodec`].
#[derive(Debug, Clone)]
pub(crate) struct VerifyRoute {
    service: Arc<VerifierService>,
    generated: VerifierServer<VerifierService>,
    max_decoding: usize,
    max_encoding: usize,
}

impl VerifyRoute {
    /// The service, with the message size limits the generated server is given too.
    pub(crate) fn new(service: VerifierService, max_decoding: usize, max_encoding: usize) -> Self {
        let service = Arc::new(service);
        Self {
            generated: VerifierServer::from_arc(Arc::clone(&service))
                .max_decoding_message_size(max_decoding)
                .max_encoding_message_size(max_encoding),
            service,
            max_decoding,
            max_encoding,
        }
    }
}

impl NamedService for VerifyRoute {
    const NAME: &'static str = <VerifierServer<VerifierService> as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for VerifyRoute
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != VERIFY_PATH {
            return self.generated.call(request);
        }
        let answering = Answering(Arc::clone(&self.service));
        let mut grpc = tonic::server::Grpc::new(VerifyCodec)
            .max_decoding_message_size(self.max_decoding)
            .max_encoding_message_size(self.max_encoding);
        Box::pin(async move { Ok(grpc.unary(answering, request).await) })
    }
}

/// Verify as a unary service answering [`VerifyAnswer`]s.
struct Answering(Arc<VerifierService>);

impl tonic::server::UnaryService<pb::VerifyRequest> for Answering {
    type Response = VerifyAnswer;
    type Future = BoxFuture<Response<VerifyAnswer>, Status>;

    fn call(&mut self, request: Request<pb::VerifyRequest>) -> Self::Future {
        let service = Arc::clone(&self.0);
        Box::pin(async move {
            service
                .answer_verify(request.into_inner())
                .await
                .map(Response::new)
        })
    }
}
