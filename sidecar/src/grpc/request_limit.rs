//! `RESOURCE_EXHAUSTED` for a request over `listen.max_request_bytes`.
//!
//! tonic refuses a message longer than its decoding limit with `OUT_OF_RANGE`,
//! which gRPC reserves for "operation attempted past the valid range" (a seek past
//! the end of a file). Clients of every language treat a request that is too large
//! as `RESOURCE_EXHAUSTED` (grpc-go, grpc-java and grpc C-core all use it for their
//! own message limits), so retry and alerting logic keys on that code. Our handlers
//! never answer `OUT_OF_RANGE` themselves, so on the services wrapped here it can only
//! mean the decoding limit: [`RequestLimit`] rewrites it, and only it.
//!
//! The rewrite applies to a trailers-only answer (status in the response headers),
//! which is how tonic answers a request it could not decode.

use std::task::{Context, Poll};

use tonic::Status;
use tonic::codegen::http::{HeaderValue, Request, Response};
use tonic::server::NamedService;

/// `grpc-status` of `OUT_OF_RANGE`.
const OUT_OF_RANGE: &str = "11";
/// `grpc-status` of `RESOURCE_EXHAUSTED`.
const RESOURCE_EXHAUSTED: &str = "8";

/// Bytes of protobuf framing around a request's one string field (a tag byte and a
/// length of up to five bytes, rounded up): the decoding limit is the configured
/// limit plus this, so a Verify token of up to `max_request_bytes` is decoded and
/// answered with a reason (`REASON_TOKEN_TOO_LARGE` when over the token bound).
pub(crate) const FRAMING_BYTES: usize = 16;

/// Wraps a gRPC service, answering `RESOURCE_EXHAUSTED` where tonic's decoding limit
/// answered `OUT_OF_RANGE`.
#[derive(Debug, Clone)]
pub(crate) struct RequestLimit<S> {
    inner: S,
}

impl<S> RequestLimit<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S: NamedService> NamedService for RequestLimit<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for RequestLimit<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = futures::future::MapOk<S::Future, fn(Response<ResBody>) -> Response<ResBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        use futures::TryFutureExt as _;
        self.inner
            .call(request)
            .map_ok(rewrite as fn(Response<ResBody>) -> Response<ResBody>)
    }
}

fn rewrite<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    // A named header, not a `&str`: a string key is parsed into a name on every call,
    // and this runs on every answer.
    if let Some(status) = headers.get_mut(Status::GRPC_STATUS)
        && status.as_bytes() == OUT_OF_RANGE.as_bytes()
    {
        *status = HeaderValue::from_static(RESOURCE_EXHAUSTED);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_status(code: &'static str) -> Response<()> {
        let mut r = Response::new(());
        r.headers_mut()
            .insert("grpc-status", HeaderValue::from_static(code));
        r
    }

    #[test]
    fn out_of_range_becomes_resource_exhausted_and_nothing_else_changes() {
        let r = rewrite(with_status(OUT_OF_RANGE));
        assert_eq!(r.headers()["grpc-status"], RESOURCE_EXHAUSTED);
        for other in ["0", "3", "8", "13", "14"] {
            assert_eq!(rewrite(with_status(other)).headers()["grpc-status"], other);
        }
        assert!(
            rewrite(Response::new(()))
                .headers()
                .get("grpc-status")
                .is_none()
        );
    }
}
