//! Reading the stream without a consumer: batched direct gets.
//!
//! [`DirectReader`] reads the messages stored from one sequence up to a bound, in order, with
//! requests to `$JS.API.DIRECT.GET.<stream>` of the form `{"seq":S,"batch":B,"max_bytes":M}`
//! ([ADR-31]; nats-server ≥ 2.11, and the stream needs `allow_direct`, which
//! `denylistctl stream init` sets). The server keeps nothing per reader: no consumer, and no
//! entry in the JetStream API queue either, since direct gets are answered by the stream's own
//! queue subscription on every replica rather than by the API dispatcher. That is what lets ten
//! thousand sidecars catch up at once (issue 10): a consumer per catch-up is server state
//! created by all of them together after a NATS restart, and a stream allows 1 000 consumers by
//! default.
//!
//! What a batch reply says, and how this module reads it:
//!
//! - Up to `B` messages in sequence order, each with `Nats-Stream`, `Nats-Subject`,
//!   `Nats-Sequence`, `Nats-Time-Stamp` and `Nats-Num-Pending` (messages left after it), then a
//!   `204 EOB` status message with `Nats-Num-Pending` for what is left after the batch. The
//!   server stops early once it has sent `max_bytes`. `Nats-Last-Sequence` is the sequence of
//!   the *previous* message of the batch (on the EOB, the last one sent), not the stream's last
//!   sequence: no batch reply carries that. Callers know it from elsewhere (the live subject's
//!   sequence header, the heartbeat, a stream info) and pass it as the bound.
//! - A batch steps over sequences that are not stored (deleted, purged, aged out): a jump from
//!   5 to 9 means 6–8 are gone. Replicas apply the stream's log in order, so one that holds 9
//!   has applied every removal before it, and the jump is real.
//! - `404` means no message at or after the requested sequence on the replica that answered.
//! - Any replica may answer, followers included, so a reply is not read-after-write coherent:
//!   a follower may not hold the newest messages yet. When a bounded read ([`UpTo::Sequence`])
//!   finds nothing more below its bound, the end is ambiguous — removed, or not replicated yet.
//!   The reader asks again a few times with backoff; if it still ends there, it asks the stream
//!   leader once (`STREAM.MSG.GET` with `next_by_subj`, which is coherent) and believes it.
//! - Followers join the direct-get queue group only once they are current, checked every 2 s
//!   after a leader change, and a follower without a leader is not current. So for up to ~2 s
//!   after a stream is created or loses its leader, a request may find no responder at all
//!   (`503`). A follower that has joined stays in the group through an election: the server
//!   leaves it only when `allow_direct` is turned off or the stream stops.
//! - When the stream leader settles the end of a bounded read, the range is covered up to
//!   the caller's bound with no stored message to prove it: the bound is then believed.
//!   [`Batch::settled`] says so, so a caller whose bound is only a hint (an unsigned live
//!   header) can confirm it before moving past sequences it never saw.
//! - `503` (no responders: also a stream that does not exist or has no direct gets), no reply
//!   within [`DirectReadOptions::reply_timeout`], or a lost connection: retried with jittered
//!   backoff, [`DirectReadOptions::attempts`] times in all. Once a batch has begun, a
//!   timeout before its end is waited out (up to 3 × `reply_timeout` from the request)
//!   while the connection it came on is still up: the server sends a batch at once,
//!   so the rest is late only because this process has not read it yet, and asking again
//!   would have the server send it twice (a fleet rollout measured that: 43 % more bytes).
//!
//! Each range reads with one request outstanding at a time and a bounded batch, so a reader
//! never has more than one batch (`max_bytes`) in flight: a storm of readers is bounded by
//! their number, and their retries are jittered apart.
//!
//! [ADR-31]: https://github.com/nats-io/nats-architecture-and-design/blob/main/adr/ADR-31.md

use std::time::Duration;

use async_nats::Subscriber;
use async_nats::jetstream::{self, message::StreamMessage, stream::RawMessageErrorKind};
use futures::StreamExt as _;
use serde::Serialize;
use tokio::time::Instant;

use super::backoff::Backoff;

/// How a [`DirectReader`] asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectReadOptions {
    /// Messages asked for per request. Default 512.
    pub batch: usize,
    /// Bytes asked for per request (the server stops after the message that reaches it).
    /// Default 256 KiB: well under the server's slow-consumer threshold for one client.
    pub max_bytes: usize,
    /// How long to wait for the first reply to a request, and then for each next one (in
    /// the middle of a batch, longer while its connection is up: see the module docs).
    /// Default 2 s.
    pub reply_timeout: Duration,
    /// Attempts per batch before a failure is returned (timeouts, no responders). Default 8:
    /// with the default backoff that waits 2.5–5 s in all, longer than the 2 s a follower
    /// replica may take to join the direct-get queue group after a leader change (until then,
    /// without a leader, nobody answers).
    pub attempts: u32,
    /// Waits between attempts. Default 50 ms doubling up to 2 s, jittered.
    pub backoff: Backoff,
    /// How many times a bounded read asks again when the replica that answers holds nothing
    /// more below the bound, before asking the stream leader. Default 3.
    pub tail_retries: u32,
    /// The JetStream API prefix. Default `$JS.API`.
    pub api_prefix: String,
}

impl Default for DirectReadOptions {
    fn default() -> Self {
        Self {
            batch: 512,
            max_bytes: 256 * 1024,
            reply_timeout: Duration::from_secs(2),
            attempts: 8,
            backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_secs(2),
            },
            tail_retries: 3,
            api_prefix: "$JS.API".to_owned(),
        }
    }
}

/// Where a read ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpTo {
    /// At this sequence, inclusive. Sequences up to it that are not returned are not stored
    /// (confirmed with the stream leader when the replica that answered could merely lag).
    Sequence(u64),
    /// At the last message the answering replica holds.
    End,
}

/// Why a direct read failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectGetError {
    /// Nobody answers direct gets for the stream.
    #[error(
        "stream {stream}: no direct-get responder after {attempts} attempt(s): the stream does not exist or does not allow direct gets (`denylistctl stream init` turns them on)"
    )]
    NoResponders {
        /// Stream name.
        stream: String,
        /// Attempts made.
        attempts: u32,
    },
    /// Requests went unanswered.
    #[error(
        "stream {stream}: no answer to a direct get from sequence {from} within {} ({attempts} attempt(s))",
        humantime::format_duration(*.timeout)
    )]
    TimedOut {
        /// Stream name.
        stream: String,
        /// The sequence asked for.
        from: u64,
        /// The wait for each reply.
        timeout: Duration,
        /// Attempts made.
        attempts: u32,
    },
    /// The server answers single direct gets but not batches.
    #[error(
        "stream {stream}: the server does not support batched direct gets (nats-server 2.11 or later is needed)"
    )]
    Unsupported {
        /// Stream name.
        stream: String,
    },
    /// The server refused the request.
    #[error("stream {stream}: direct get from sequence {from} refused: {status} {description}")]
    Refused {
        /// Stream name.
        stream: String,
        /// The sequence asked for.
        from: u64,
        /// The status code.
        status: u16,
        /// The status description.
        description: String,
    },
    /// NATS failed (subscribing, sending, a reply that is not a stream message), or the stream
    /// leader could not confirm the end of a range.
    #[error("stream {stream}: {message}")]
    Nats {
        /// Stream name.
        stream: String,
        /// What failed.
        message: String,
    },
}

impl DirectGetError {
    /// The error with the number of attempts it took.
    fn after_attempts(mut self, n: u32) -> Self {
        if let Self::NoResponders { attempts, .. } | Self::TimedOut { attempts, .. } = &mut self {
            *attempts = n;
        }
        self
    }
}

/// Counters of one read, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReadStats {
    /// Direct-get requests sent (retries included).
    pub requests: u64,
    /// Requests that were retried (timeouts, no responders, an ambiguous end).
    pub retries: u64,
    /// Requests to the stream leader to settle an ambiguous end.
    pub leader_checks: u64,
    /// Reply timeouts in the middle of a batch that were waited out instead of asking again
    /// (the connection the batch came on still up).
    pub extended_waits: u64,
    /// Messages returned.
    pub messages: u64,
    /// Payload bytes returned.
    pub bytes: u64,
}

/// One batch of a [`DirectRange`].
#[derive(Debug)]
pub struct Batch {
    /// Messages in sequence order, every one above the previous batch's `covered_through`.
    pub messages: Vec<StreamMessage>,
    /// Every sequence up to this one has now been returned or is not stored.
    pub covered_through: u64,
    /// Messages the answering replica still held after this batch (`Nats-Num-Pending`).
    pub pending: u64,
    /// The stream leader said nothing is stored from the previous batch's end up to the
    /// bound: `covered_through` rests on the caller's bound, not on a stored message.
    pub settled: bool,
}

/// A whole read: see [`DirectReader::read`].
#[derive(Debug)]
pub struct DirectRead {
    /// Messages in sequence order.
    pub messages: Vec<StreamMessage>,
    /// Every sequence from the start up to this one was returned or is not stored (the
    /// start − 1 when nothing is).
    pub covered_through: u64,
    /// What it took.
    pub stats: ReadStats,
}

/// Reads a stream with batched direct gets; see the module docs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DirectReader {
    client: async_nats::Client,
    stream: String,
    subject: String,
    /// Only messages on subjects matching this filter (`next_by_subj`), if set.
    filter: Option<String>,
    options: DirectReadOptions,
}

impl DirectReader {
    /// A reader of `stream` over `client`, with default options.
    pub fn new(client: async_nats::Client, stream: impl Into<String>) -> Self {
        Self::with_options(client, stream, DirectReadOptions::default())
    }

    /// A reader with the given options.
    pub fn with_options(
        client: async_nats::Client,
        stream: impl Into<String>,
        options: DirectReadOptions,
    ) -> Self {
        let stream = stream.into();
        Self {
            subject: format!("{}.DIRECT.GET.{stream}", options.api_prefix),
            client,
            stream,
            filter: None,
            options,
        }
    }

    /// A reader of another stream over the same connection, with `options`.
    pub fn for_stream(&self, stream: impl Into<String>, options: DirectReadOptions) -> Self {
        Self::with_options(self.client.clone(), stream, options)
    }

    /// This reader, reading only the messages whose subject matches `filter` (a NATS
    /// subject, wildcards allowed): each batch asks with `next_by_subj`, and
    /// `Nats-Num-Pending` then counts matching messages only. Sequences stepped over are
    /// then other subjects' as well as removed ones.
    pub fn with_filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    /// How this reader asks.
    pub fn options(&self) -> &DirectReadOptions {
        &self.options
    }

    /// The last message stored on `subject` (a direct get with `last_by_subj`), or `None`
    /// when there is none. Timeouts and no responders are retried with backoff,
    /// [`DirectReadOptions::attempts`] times in all, as batches are.
    pub async fn last_for_subject(
        &self,
        subject: &str,
    ) -> Result<Option<StreamMessage>, DirectGetError> {
        let body = serde_json::json!({ "last_by_subj": subject }).to_string();
        let mut failures = 0u32;
        loop {
            let error = match tokio::time::timeout(
                self.options.reply_timeout,
                self.client
                    .request(self.subject.clone(), body.clone().into()),
            )
            .await
            {
                Err(_) => DirectGetError::TimedOut {
                    stream: self.stream.clone(),
                    from: 0,
                    timeout: self.options.reply_timeout,
                    attempts: 1,
                },
                Ok(Err(e)) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {
                    DirectGetError::NoResponders {
                        stream: self.stream.clone(),
                        attempts: 1,
                    }
                }
                Ok(Err(e)) => self.error_nats(format!("direct get of {subject}: {e}")),
                Ok(Ok(reply)) => match reply.status.map(|s| s.as_u16()) {
                    None => {
                        return StreamMessage::try_from(reply).map(Some).map_err(|e| {
                            self.error_nats(format!("the last message on {subject}: {e}"))
                        });
                    }
                    Some(404) => return Ok(None),
                    Some(503) => DirectGetError::NoResponders {
                        stream: self.stream.clone(),
                        attempts: 1,
                    },
                    Some(status) => {
                        return Err(DirectGetError::Refused {
                            stream: self.stream.clone(),
                            from: 0,
                            status,
                            description: reply.description.unwrap_or_default(),
                        });
                    }
                },
            };
            failures += 1;
            if failures >= self.options.attempts {
                return Err(error.after_attempts(failures));
            }
            tokio::time::sleep(self.options.backoff.delay(failures - 1)).await;
        }
    }

    /// The stream read.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The messages from `from` (at least 1) up to `up_to`, batch by batch. Nothing is sent
    /// until [`DirectRange::next_batch`] is called.
    pub fn range(&self, from: u64, up_to: UpTo) -> DirectRange<'_> {
        DirectRange {
            reader: self,
            cursor: Cursor::new(from, up_to),
            inbox: None,
            requests: 0,
            stats: ReadStats::default(),
        }
    }

    /// Reads every message from `from` up to `up_to` into memory.
    pub async fn read(&self, from: u64, up_to: UpTo) -> Result<DirectRead, DirectGetError> {
        let mut range = self.range(from, up_to);
        let mut messages = Vec::new();
        while let Some(batch) = range.next_batch().await? {
            messages.extend(batch.messages);
        }
        Ok(DirectRead {
            messages,
            covered_through: range.covered_through(),
            stats: range.stats(),
        })
    }

    fn error_nats(&self, message: impl std::fmt::Display) -> DirectGetError {
        DirectGetError::Nats {
            stream: self.stream.clone(),
            message: message.to_string(),
        }
    }
}

/// A read in progress; see [`DirectReader::range`]. Its inbox subscription ends when it is
/// dropped.
#[derive(Debug)]
pub struct DirectRange<'r> {
    reader: &'r DirectReader,
    cursor: Cursor,
    /// The reply subscription (`<inbox>.*`), made at the first request.
    inbox: Option<(String, Subscriber)>,
    /// Requests sent, which numbers their reply subjects.
    requests: u64,
    stats: ReadStats,
}

/// Where a range stands, and what a reply does to it: the part of reading that involves no
/// I/O, kept apart so that it can be tested alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    /// The next sequence to ask for; everything below is covered.
    next: u64,
    up_to: UpTo,
    done: bool,
}

impl Cursor {
    fn new(from: u64, up_to: UpTo) -> Self {
        let next = from.max(1);
        Self {
            next,
            up_to,
            done: matches!(up_to, UpTo::Sequence(last) if last < next),
        }
    }

    /// How many messages to ask for: a batch, or fewer if the bound is closer.
    fn limit(&self, batch: usize) -> usize {
        let batch = batch.max(1);
        match self.up_to {
            UpTo::Sequence(last) => usize::try_from(last.saturating_sub(self.next) + 1)
                .map_or(batch, |left| left.min(batch)),
            UpTo::End => batch,
        }
    }

    /// Takes the messages of a reply (in order, all at or after `next`), dropping those past
    /// the bound; `pending` is what the replica says it holds after them.
    fn accept(&mut self, messages: &mut Vec<StreamMessage>, pending: u64) {
        if let UpTo::Sequence(last) = self.up_to
            && let Some(at) = messages.iter().position(|m| m.sequence > last)
        {
            // The replica holds a later message, so the sequences between the last one kept
            // and the bound are not stored.
            messages.truncate(at);
            self.next = last + 1;
        }
        if let Some(message) = messages.last() {
            self.next = self.next.max(message.sequence + 1);
        }
        self.done = match self.up_to {
            UpTo::Sequence(last) => self.next > last,
            // The replica has nothing more: that is the end it knows.
            UpTo::End => pending == 0,
        };
    }

    /// Nothing is stored from `next` up to `last`: the range is read.
    fn settle(&mut self, last: u64) {
        self.next = self.next.max(last + 1);
        self.done = true;
    }
}

/// What one request brought back.
enum Reply {
    /// Messages (at least one), and what the replica holds after them.
    Messages {
        messages: Vec<StreamMessage>,
        pending: u64,
    },
    /// No message at or after the sequence asked for (`404`).
    Nothing,
}

/// A request that failed, and whether asking again may help.
enum Failure {
    Transient(DirectGetError),
    Permanent(DirectGetError),
}

impl DirectRange<'_> {
    /// Every sequence up to this one has been returned or is not stored.
    pub fn covered_through(&self) -> u64 {
        self.cursor.next - 1
    }

    /// What the read took so far.
    pub fn stats(&self) -> ReadStats {
        self.stats
    }

    /// The next batch, or `None` when the range is read. A batch may hold no message when it
    /// only settles that the rest of the range is not stored.
    pub async fn next_batch(&mut self) -> Result<Option<Batch>, DirectGetError> {
        let options = &self.reader.options;
        let mut failures = 0u32;
        let mut tail_retries = 0u32;
        loop {
            if self.cursor.done {
                return Ok(None);
            }
            let failure = match self.request(self.cursor.limit(options.batch)).await {
                Ok(Reply::Messages { messages, pending }) => {
                    return Ok(Some(self.accept(messages, pending)));
                }
                Ok(Reply::Nothing) => match self.cursor.up_to {
                    UpTo::End => {
                        self.cursor.done = true;
                        return Ok(None);
                    }
                    UpTo::Sequence(_) if tail_retries < options.tail_retries => {
                        // Removed, or not on this replica yet: ask again before the leader.
                        tail_retries += 1;
                        self.stats.retries += 1;
                        tokio::time::sleep(options.backoff.delay(tail_retries - 1)).await;
                        continue;
                    }
                    UpTo::Sequence(last) => match self.ask_leader(last).await {
                        Ok(batch) => return Ok(Some(batch)),
                        Err(e) => Failure::Transient(e),
                    },
                },
                Err(failure) => failure,
            };
            let error = match failure {
                Failure::Permanent(e) => return Err(e),
                Failure::Transient(e) => e,
            };
            failures += 1;
            if failures >= options.attempts {
                return Err(error.after_attempts(failures));
            }
            self.stats.retries += 1;
            let wait = options.backoff.delay(failures - 1);
            tracing::debug!(stream = %self.reader.stream, from = self.cursor.next, %error, retry_in = ?wait, "direct get failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes a reply's messages into a batch.
    fn accept(&mut self, mut messages: Vec<StreamMessage>, pending: u64) -> Batch {
        self.cursor.accept(&mut messages, pending);
        self.stats.messages += messages.len() as u64;
        self.stats.bytes += messages.iter().map(|m| m.payload.len() as u64).sum::<u64>();
        Batch {
            messages,
            covered_through: self.covered_through(),
            pending,
            settled: false,
        }
    }

    /// Settles an ambiguous end: the replica that answers holds nothing from the next
    /// sequence on, but the caller's bound says the stream went up to `last`. The stream
    /// leader's own store decides (one JetStream API request). A replica that lags far
    /// behind is read past one leader answer at a time: slow, but never wrong.
    async fn ask_leader(&mut self, last: u64) -> Result<Batch, DirectGetError> {
        let reader = self.reader;
        self.stats.leader_checks += 1;
        let js = jetstream::with_prefix(reader.client.clone(), &reader.options.api_prefix);
        let stream = js
            .get_stream_no_info(&reader.stream)
            .await
            .map_err(|e| reader.error_nats(e))?;
        let found = tokio::time::timeout(
            reader.options.reply_timeout,
            stream.get_first_raw_message_by_subject(
                reader.filter.as_deref().unwrap_or(">"),
                self.cursor.next,
            ),
        )
        .await
        .map_err(|_| {
            reader.error_nats(format!(
                "the stream leader did not say within {:?} whether sequences {}..={last} are stored",
                reader.options.reply_timeout, self.cursor.next
            ))
        })?;
        match found {
            Ok(message) if message.sequence <= last && message.sequence >= self.cursor.next => {
                // The replica that answered lags; the leader's copy is as good.
                tracing::debug!(stream = %reader.stream, sequence = message.sequence, "direct-get replica behind the leader");
                Ok(self.accept(vec![message], 1))
            }
            // Nothing stored from `next` up to `last`: removed or aged out.
            Ok(_) => Ok(self.settle(last)),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(self.settle(last)),
            Err(e) => Err(reader.error_nats(format!(
                "asking the stream leader whether sequences {}..={last} are stored: {e}",
                self.cursor.next
            ))),
        }
    }

    /// Ends the range: nothing is stored from the next sequence up to `last`.
    fn settle(&mut self, last: u64) -> Batch {
        self.cursor.settle(last);
        Batch {
            messages: Vec::new(),
            covered_through: self.covered_through(),
            pending: 0,
            settled: true,
        }
    }

    /// Sends one batch request for up to `limit` messages from the next sequence and collects
    /// the replies up to the end of the batch.
    async fn request(&mut self, limit: usize) -> Result<Reply, Failure> {
        let reader = self.reader;
        let options = &reader.options;
        let stream = || reader.stream.clone();
        if self.inbox.is_none() {
            let inbox = reader.client.new_inbox();
            let subscriber = reader
                .client
                .subscribe(format!("{inbox}.*"))
                .await
                .map_err(|e| {
                    Failure::Transient(
                        reader.error_nats(format!("subscribing to a reply inbox: {e}")),
                    )
                })?;
            self.inbox = Some((inbox, subscriber));
        }
        let Some((inbox, replies)) = self.inbox.as_mut() else {
            unreachable!("the inbox was just made");
        };
        self.requests += 1;
        self.stats.requests += 1;
        // A reply subject per request: replies to an earlier, abandoned request are told
        // apart and dropped.
        let reply_to = format!("{inbox}.{}", self.requests);
        let from = self.cursor.next;
        let mut body = serde_json::json!({
            "seq": from,
            "batch": limit,
            "max_bytes": options.max_bytes,
        });
        if let Some(filter) = &reader.filter {
            body["next_by_subj"] = filter.as_str().into();
        }
        reader
            .client
            .publish_with_reply(
                reader.subject.clone(),
                reply_to.clone(),
                body.to_string().into(),
            )
            .await
            .map_err(|e| {
                Failure::Transient(reader.error_nats(format!("sending a direct get: {e}")))
            })?;

        // The connection the request went out on: a batch under way on it is still coming
        // (below) for as long as the same connection stays up.
        let connects = super::connects(&reader.client);
        let batch_deadline = Instant::now() + options.reply_timeout * PATIENCE;
        let mut messages: Vec<StreamMessage> = Vec::new();
        let timed_out = || {
            Failure::Transient(DirectGetError::TimedOut {
                stream: stream(),
                from,
                timeout: options.reply_timeout,
                attempts: 1,
            })
        };
        loop {
            let wait_until = Instant::now() + options.reply_timeout;
            let message = match tokio::time::timeout_at(wait_until, replies.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    self.inbox = None;
                    return Err(Failure::Transient(
                        reader.error_nats("the reply subscription ended"),
                    ));
                }
                // The batch has begun on a connection that is still the same and up: the
                // server sends a batch at once, so the rest was sent too and is only late
                // in being read (a busy process). Asking again would have it sent twice;
                // wait instead, up to `PATIENCE` reply timeouts from the request (bounded:
                // a replica routed to may still die in the middle of a batch).
                Err(_)
                    if !messages.is_empty()
                        && Instant::now() < batch_deadline
                        && connects == super::connects(&reader.client)
                        && reader.client.connection_state()
                            == async_nats::connection::State::Connected =>
                {
                    self.stats.extended_waits += 1;
                    continue;
                }
                // A batch cut short still delivered what it delivered, in order: keep it.
                Err(_) if !messages.is_empty() => {
                    return Ok(Reply::Messages {
                        messages,
                        pending: 1,
                    });
                }
                Err(_) => return Err(timed_out()),
            };
            if message.subject.as_str() != reply_to {
                continue;
            }
            match message.status.map(|s| s.as_u16()) {
                None => {}
                Some(204) => {
                    let pending = header_u64(&message, NUM_PENDING).unwrap_or(0);
                    if messages.is_empty() {
                        // An end of batch with nothing before it: nothing there.
                        return Ok(Reply::Nothing);
                    }
                    return Ok(Reply::Messages { messages, pending });
                }
                Some(404) => {
                    if messages.is_empty() {
                        return Ok(Reply::Nothing);
                    }
                    return Ok(Reply::Messages {
                        messages,
                        pending: 0,
                    });
                }
                Some(503) => {
                    return Err(Failure::Transient(DirectGetError::NoResponders {
                        stream: stream(),
                        attempts: 1,
                    }));
                }
                Some(status) => {
                    let description = message.description.clone().unwrap_or_default();
                    let refused = DirectGetError::Refused {
                        stream: stream(),
                        from,
                        status,
                        description,
                    };
                    // 408: the request itself is wrong; asking again will not change that.
                    return Err(if matches!(status, 400 | 408 | 412 | 413) {
                        Failure::Permanent(refused)
                    } else {
                        Failure::Transient(refused)
                    });
                }
            }
            if messages.is_empty() && header_u64(&message, NUM_PENDING).is_none() {
                // ADR-31: a server without batch support answers with one plain message.
                return Err(Failure::Permanent(DirectGetError::Unsupported {
                    stream: stream(),
                }));
            }
            let stored = StreamMessage::try_from(message).map_err(|e| {
                Failure::Transient(
                    reader.error_nats(format!("a direct-get reply is not a stream message: {e}")),
                )
            })?;
            let floor = messages.last().map_or(from, |m| m.sequence + 1);
            if stored.sequence < floor {
                return Err(Failure::Transient(reader.error_nats(format!(
                    "direct-get replies out of order: sequence {} after {}",
                    stored.sequence,
                    floor - 1
                ))));
            }
            messages.push(stored);
        }
    }
}

/// How many reply timeouts from its request a batch already under way is waited for while
/// its connection stays up (see the module docs).
const PATIENCE: u32 = 3;

/// Messages left after a batch reply (ADR-31); not among async-nats's header constants.
const NUM_PENDING: &str = "Nats-Num-Pending";

/// A numeric header of a reply.
fn header_u64(message: &async_nats::Message, name: &str) -> Option<u64> {
    message.headers.as_ref()?.get(name)?.as_str().parse().ok()
}

#[cfg(test)]
mod tests;
