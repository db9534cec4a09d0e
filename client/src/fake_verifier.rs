//! An in-process fake of the sidecar's `Verifier` on a temporary Unix socket, for the unit
//! tests of [`crate::Client`] and [`crate::VerifyLayer`]. End-to-end tests use the real
//! sidecar (the `tests/` crate).
//!
//! Tokens script the answer: `good` is valid (subject `alice`), `revoked`, `expired` and
//! `stale` are rejected with those reasons, `slow` answers after a second, `internal` fails
//! with `INTERNAL`. The first `unavailable_first` calls of any kind answer `UNAVAILABLE`.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use denylist_proto::pb;
use denylist_proto::pb::verifier_server::{Verifier, VerifierServer};
use tokio::sync::oneshot;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) calls: AtomicU32,
    pub(crate) unavailable_left: AtomicU32,
}

struct FakeVerifier {
    counters: Arc<Counters>,
}

impl FakeVerifier {
    fn gate(&self) -> Result<(), Status> {
        self.counters.calls.fetch_add(1, Ordering::SeqCst);
        let left = &self.counters.unavailable_left;
        if left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Status::unavailable("denylist is catching up"));
        }
        Ok(())
    }
}

fn rejected(reason: pb::Reason, detail: &str) -> pb::VerifyResponse {
    pb::VerifyResponse {
        valid: false,
        reason: reason as i32,
        detail: detail.to_owned(),
        denylist_sequence: 7,
        denylist_age_ms: 12,
        ..pb::VerifyResponse::default()
    }
}

fn valid() -> pb::VerifyResponse {
    pb::VerifyResponse {
        valid: true,
        reason: pb::Reason::Ok as i32,
        claims: Some(pb::Claims {
            iss: "https://auth.example.com".to_owned(),
            sub: "alice".to_owned(),
            jti: "j-1".to_owned(),
            ..pb::Claims::default()
        }),
        denylist_sequence: 7,
        denylist_age_ms: 12,
        ..pb::VerifyResponse::default()
    }
}

type WatchStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::RevocationNotice, Status>> + Send>>;

#[tonic::async_trait]
impl Verifier for FakeVerifier {
    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        self.gate()?;
        let token = request.into_inner().token;
        let token = token.strip_prefix("Bearer ").unwrap_or(&token);
        let answer = match token {
            "good" => valid(),
            "revoked" => {
                let mut a = rejected(pb::Reason::Revoked, "revoked by a subject rule");
                a.revocation = Some(pb::Revocation {
                    kind: pb::RuleKind::Subject as i32,
                    event_id: "ev-secret".to_owned(),
                    actor: "alice@sec".to_owned(),
                    ..pb::Revocation::default()
                });
                a
            }
            "expired" => rejected(pb::Reason::Expired, "expired 5 minutes ago"),
            "stale" => rejected(pb::Reason::DenylistStale, "denylist is 40s old"),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                valid()
            }
            "internal" => return Err(Status::internal("boom")),
            _ => rejected(pb::Reason::Malformed, "not a compact JWS"),
        };
        Ok(Response::new(answer))
    }

    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        self.gate()?;
        let revoked = request.into_inner().jti == "revoked-jti";
        Ok(Response::new(pb::CheckResponse {
            revoked,
            denylist_sequence: 7,
            ..pb::CheckResponse::default()
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.gate()?;
        Ok(Response::new(pb::StatusResponse {
            ready: true,
            denylist_sequence: 7,
            name: "fake".to_owned(),
            ..pb::StatusResponse::default()
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not faked"))
    }
}

/// A running fake; stops when dropped.
pub(crate) struct FakeServer {
    pub(crate) socket: PathBuf,
    pub(crate) counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl FakeServer {
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("sidecar.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind the fake's socket");
        let counters = Arc::new(Counters::default());
        let service = VerifierServer::new(FakeVerifier {
            counters: Arc::clone(&counters),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    stopped.await.ok();
                })
                .await
                .expect("fake verifier serves");
        });
        Self {
            socket,
            counters,
            stop: Some(stop),
            _dir: dir,
        }
    }

    pub(crate) fn unavailable_first(&self, n: u32) {
        self.counters.unavailable_left.store(n, Ordering::SeqCst);
    }

    pub(crate) fn calls(&self) -> u32 {
        self.counters.calls.load(Ordering::SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
    }
}
