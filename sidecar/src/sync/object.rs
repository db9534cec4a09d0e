//! Reading an object of a JetStream object store without a consumer: the snapshot a
//! starting sidecar loads.
//!
//! async-nats reads an object through an ordered consumer on the bucket's stream, one
//! per download: per-sidecar server state during every rollout, and the reason sidecars
//! needed `$JS.API.CONSUMER.*` permissions (issue 10). The object store's layout makes
//! that unnecessary. A bucket `B` is the stream `OBJ_B`; an object's info (size, chunk
//! count, SHA-256, and the `nuid` its chunks are stored under) is the last message on
//! `$O.B.M.<base64url(name)>`, and its chunks are the messages on `$O.B.C.<nuid>`, in
//! order. So [`ObjectReader`] reads the info with one direct get (`last_by_subj`) and
//! the chunks with batched direct gets filtered by subject (`next_by_subj`, see
//! [`super::direct`]), which keep nothing on the server per reader. The stream needs
//! `allow_direct`: async-nats sets it on every bucket it creates, and `denylistctl
//! snapshot create` turns it on for a bucket made without it.
//!
//! Before anything is used, the object must be whole and unchanged: its size within the
//! reader's bound (checked on the info, before a byte of it is read, and again as
//! chunks arrive), exactly `chunks` chunks, and the SHA-256 its info records. An object
//! replaced while it was read (its chunks purged under the reader) fails those checks
//! and is read again, a bounded number of times with jittered backoff.

use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;

use super::backoff::Backoff;
use super::direct::{DirectGetError, DirectReadOptions, DirectReader, UpTo};

/// Why an object could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ObjectReadError {
    /// Reading the bucket's stream failed.
    #[error(transparent)]
    Direct(#[from] DirectGetError),
    /// The info message is not an object store's.
    #[error("bucket {bucket}: the info of object {name:?} does not parse: {message}")]
    Info {
        /// Bucket name.
        bucket: String,
        /// Object name.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// The object is larger than the reader accepts.
    #[error("bucket {bucket}: object {name:?} is {size} bytes; at most {max} are read")]
    TooLarge {
        /// Bucket name.
        bucket: String,
        /// Object name.
        name: String,
        /// Its size, per its info.
        size: u64,
        /// The reader's bound.
        max: u64,
    },
    /// The chunks read are not the object the info describes (replaced while read, or
    /// corrupt), after every attempt.
    #[error("bucket {bucket}: object {name:?} read {attempts} time(s), never whole: {message}")]
    Inconsistent {
        /// Bucket name.
        bucket: String,
        /// Object name.
        name: String,
        /// Attempts made.
        attempts: u32,
        /// What the last attempt found.
        message: String,
    },
}

/// Reads objects of one bucket with direct gets; see the module docs.
#[derive(Debug, Clone)]
pub struct ObjectReader {
    /// The bucket's stream, read by direct gets: the info.
    info: DirectReader,
    /// The same, for the chunks: with the caller's attempts, a leader change included.
    chunks: DirectReader,
    bucket: String,
    max_size: u64,
    attempts: u32,
    backoff: Backoff,
}

/// What an object's info says (the fields of async-nats's `ObjectInfo` used here).
#[derive(Debug, serde::Deserialize)]
struct Info {
    #[serde(default)]
    nuid: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    chunks: u64,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    options: Option<serde_json::Value>,
}

/// How long a chunk batch's first reply is waited for before it is asked for again. A whole
/// snapshot comes in one or two batches, and in a rollout every starting sidecar asks for
/// one at once: the server's egress (or, in the fleet simulator, the one process reading
/// them all) then delays the first reply by seconds, and asking again after the stream
/// reads' 2 s only has the server send megabytes twice (measured: 1 000 followers moved
/// 1.4–1.6× the object each). A start that waits on a snapshot is not in a hurry; a lost
/// request still costs only this long.
const CHUNK_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

impl ObjectReader {
    /// A reader of `bucket` over the connection of `reader` (any stream's, whose options
    /// it takes), that reads objects of at most `max_size` bytes. Chunks are asked for
    /// several at a time (up to 4 MiB per batch); the info request gives up after 3
    /// attempts when nobody answers, since a bucket that does not exist (nobody writes
    /// snapshots) answers just so, and a start without snapshots must not wait for it.
    pub fn new(reader: &DirectReader, bucket: &str, max_size: u64) -> Self {
        let base = reader.options();
        let stream = format!("OBJ_{bucket}");
        let chunks = DirectReadOptions {
            batch: 64,
            max_bytes: 4 << 20,
            reply_timeout: base.reply_timeout.max(CHUNK_REPLY_TIMEOUT),
            ..base.clone()
        };
        let info = DirectReadOptions {
            attempts: base.attempts.min(3),
            ..base.clone()
        };
        Self {
            info: reader.for_stream(&stream, info),
            chunks: reader.for_stream(stream, chunks),
            bucket: bucket.to_owned(),
            max_size,
            attempts: 3,
            backoff: base.backoff,
        }
    }

    /// The bytes of object `name`, whole and checked against its info; `None` when the
    /// object does not exist or was deleted.
    pub async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, ObjectReadError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(info) = self.info(name).await? else {
                return Ok(None);
            };
            match self.read_chunks(name, &info).await? {
                Ok(bytes) => return Ok(Some(bytes)),
                Err(message) if attempt >= self.attempts => {
                    return Err(ObjectReadError::Inconsistent {
                        bucket: self.bucket.clone(),
                        name: name.to_owned(),
                        attempts: attempt,
                        message,
                    });
                }
                Err(message) => {
                    let wait = self.backoff.delay(attempt - 1);
                    tracing::info!(bucket = %self.bucket, name, %message, retry_in = ?wait, "object changed while read; reading it again");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The object's info, checked: not a link, within the size bound.
    async fn info(&self, name: &str) -> Result<Option<Info>, ObjectReadError> {
        let subject = format!("$O.{}.M.{}", self.bucket, URL_SAFE.encode(name));
        let Some(message) = self.info.last_for_subject(&subject).await? else {
            return Ok(None);
        };
        let info_error = |message: String| ObjectReadError::Info {
            bucket: self.bucket.clone(),
            name: name.to_owned(),
            message,
        };
        let info: Info =
            serde_json::from_slice(&message.payload).map_err(|e| info_error(e.to_string()))?;
        if info.deleted {
            return Ok(None);
        }
        if info.options.as_ref().is_some_and(|o| !o["link"].is_null()) {
            return Err(info_error("a link to another object, not read".to_owned()));
        }
        if info.size > self.max_size {
            return Err(ObjectReadError::TooLarge {
                bucket: self.bucket.clone(),
                name: name.to_owned(),
                size: info.size,
                max: self.max_size,
            });
        }
        if info.nuid.is_empty() || info.nuid.contains(['.', '*', '>', ' ']) {
            return Err(info_error(format!("chunk id {:?}", info.nuid)));
        }
        Ok(Some(info))
    }

    /// The chunks of the object `info` describes: `Ok(Err(why))` when they are not that
    /// object (it may have been replaced meanwhile).
    async fn read_chunks(
        &self,
        name: &str,
        info: &Info,
    ) -> Result<Result<Vec<u8>, String>, ObjectReadError> {
        let Some(want) = info
            .digest
            .as_deref()
            .and_then(|d| d.strip_prefix("SHA-256="))
        else {
            return Err(ObjectReadError::Info {
                bucket: self.bucket.clone(),
                name: name.to_owned(),
                message: format!("no SHA-256 digest ({:?})", info.digest),
            });
        };
        let chunks = self
            .chunks
            .clone()
            .with_filter(format!("$O.{}.C.{}", self.bucket, info.nuid));
        // Sized up front: the info's size is within the bound, checked.
        let mut bytes = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0));
        let mut sha256 = digest::Context::new(&digest::SHA256);
        let mut count = 0u64;
        let mut range = chunks.range(1, UpTo::End);
        while let Some(batch) = range.next_batch().await? {
            for chunk in &batch.messages {
                if (bytes.len() + chunk.payload.len()) as u64 > info.size {
                    return Ok(Err(format!(
                        "more than the {} bytes its info says",
                        info.size
                    )));
                }
                sha256.update(&chunk.payload);
                bytes.extend_from_slice(&chunk.payload);
                count += 1;
            }
        }
        let stats = range.stats();
        metrics::counter!("denylist_direct_get_requests_total").increment(stats.requests);
        if bytes.len() as u64 != info.size || count != info.chunks {
            return Ok(Err(format!(
                "{} bytes in {count} chunks, its info says {} in {}",
                bytes.len(),
                info.size,
                info.chunks
            )));
        }
        // async-nats writes the digest base64url with padding; accept it without too.
        let got = URL_SAFE.encode(sha256.finish());
        if got.trim_end_matches('=') != want.trim_end_matches('=') {
            return Ok(Err("its SHA-256 differs from its info's".to_owned()));
        }
        Ok(Ok(bytes))
    }
}
