//! The signed envelope: a `RevocationEvent` travels as `SignedEvent { event bytes,
//! key id, Ed25519 signature over exactly those bytes }`.
//!
//! A sidecar holds the public keys of trusted publishers and applies nothing else.
//! The event bytes are decoded only after the signature over them has verified, so
//! an unsigned or forged message is never even parsed as an event.
//!
//! Keys: a publisher's private key is an Ed25519 PKCS#8 PEM file
//! (`denylistctl keygen` writes one); its public key travels as base64url of the
//! raw 32 bytes, and its key id is the first 16 hex digits of SHA-256 of those
//! bytes, so a key id can never name a different key.
//!
//! Least privilege: a trusted key may carry a [`Scope`], the rule kinds and issuers
//! it may revoke, or "heartbeats only". Every signed thing is opened here, so the scope
//! is enforced here, once, for every path that applies events (live delivery, catch-up,
//! snapshots): [`TrustedKeys::open`] refuses a scoped key's event outside its scope and
//! any lift by it, and a scoped key's snapshot signature, or heartbeat signature unless
//! it is a heartbeat key, is refused outright ([`EnvelopeError::OutOfScope`]).

use std::collections::HashMap;

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use prost::Message as _;

use crate::events::{Action, Event, EventError, RuleKind};
use crate::pb;

/// Why an envelope or key was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The bytes are not a `SignedEvent`.
    #[error("not a signed event: {0}")]
    Decode(String),
    /// The key id is not among the trusted publishers.
    #[error("signed by untrusted key id {0:?}")]
    UntrustedKey(String),
    /// The signature does not verify.
    #[error("signature does not verify (key id {0:?})")]
    BadSignature(String),
    /// Validly signed by a trusted key whose [`Scope`] does not cover it.
    #[error("outside the scope of key id {key_id:?}: {reason}")]
    OutOfScope {
        /// The key that signed it.
        key_id: String,
        /// What the key may not do.
        reason: String,
    },
    /// The signed bytes are not a valid event.
    #[error("signed event is invalid: {0}")]
    Event(#[from] EventError),
    /// A key could not be read.
    #[error("{0}")]
    Key(String),
}

/// The key id of a raw Ed25519 public key.
pub fn key_id(public_key: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public_key);
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A publisher's signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    key_id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a key; returns it with its PKCS#8 PEM encoding (to store).
    pub fn generate() -> Result<(Self, String), EnvelopeError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|_| EnvelopeError::Key("key generation failed".into()))?;
        let pem = pem_encode("PRIVATE KEY", doc.as_ref());
        Ok((Self::from_pkcs8_der(doc.as_ref())?, pem))
    }

    /// Reads an Ed25519 PKCS#8 PEM private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, EnvelopeError> {
        let der = pem_decode(pem, "PRIVATE KEY")?;
        Self::from_pkcs8_der(&der)
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, EnvelopeError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| EnvelopeError::Key(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let key_id = key_id(pair.public_key().as_ref());
        Ok(Self { pair, key_id })
    }

    /// The key id carried in every envelope this key signs.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key as base64url (what sidecars list as trusted).
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref())
    }

    /// Signs arbitrary bytes (callers add their own domain prefix).
    pub(crate) fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    /// Encodes and signs an event.
    pub fn sign(&self, event: &Event) -> pb::SignedEvent {
        let bytes = event.to_proto().encode_to_vec();
        let signature = self.pair.sign(&bytes).as_ref().to_vec();
        pb::SignedEvent {
            event: bytes,
            key_id: self.key_id.clone(),
            signature,
        }
    }
}

/// What a scoped publisher key may sign: revocations of some rule kinds, for some
/// issuers; or, for a heartbeat key, the fleet heartbeat and nothing else. A scoped key
/// never lifts (a lift names events by id, and a sidecar does not keep which key
/// published each one) and never signs a snapshot (one signature over many events); only
/// a heartbeat key or a key with full authority signs a heartbeat (it vouches for the
/// whole stream's state, not for any revocation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The rule kinds it may revoke; `None`: every kind.
    pub kinds: Option<Vec<RuleKind>>,
    /// The exact issuers (`iss`) whose rules it may revoke; `None`: every issuer.
    pub issuers: Option<Vec<String>>,
    /// A heartbeat key: it signs fleet heartbeats and may revoke nothing (`kinds` and
    /// `issuers` are then unused), so the heartbeat component's key, which signs every
    /// second on every replica, cannot revoke or lift anything if it leaks.
    pub heartbeats_only: bool,
}

impl Scope {
    /// The scope of a heartbeat key.
    pub fn heartbeats_only() -> Self {
        Self {
            heartbeats_only: true,
            ..Self::default()
        }
    }

    /// Whether the scope covers `event`; the error says what it does not allow.
    pub fn permits(&self, event: &Event) -> Result<(), String> {
        if self.heartbeats_only {
            return Err("a heartbeat key may not revoke or lift".into());
        }
        let revoke = match &event.action {
            Action::Revoke(revoke) => revoke,
            Action::Lift { .. } => return Err("a scoped key may not lift revocations".into()),
        };
        if let Some(kinds) = &self.kinds
            && !kinds.contains(&revoke.kind)
        {
            let allowed: Vec<_> = kinds.iter().map(|k| k.as_str()).collect();
            return Err(format!(
                "it may not revoke `{}` rules (only {})",
                revoke.kind,
                allowed.join(", ")
            ));
        }
        if let Some(issuers) = &self.issuers
            && !issuers.contains(&revoke.issuer)
        {
            return Err(format!(
                "it may not revoke rules of issuer {:?}",
                truncate(&revoke.issuer)
            ));
        }
        Ok(())
    }
}

/// A trusted public key and, when it is limited, its scope.
#[derive(Debug, Clone)]
struct TrustedKey {
    key: UnparsedPublicKey<Vec<u8>>,
    /// `None`: full authority (any event, lifts, snapshots, heartbeats).
    scope: Option<Scope>,
}

/// The public keys of trusted publishers, by key id, each with its optional [`Scope`].
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    by_id: HashMap<String, TrustedKey>,
}

/// Decodes a base64url (or standard base64) raw Ed25519 public key.
fn decode_public_key(key: &str) -> Result<Vec<u8>, String> {
    let key = key.trim();
    let raw = URL_SAFE_NO_PAD
        .decode(key)
        .or_else(|_| STANDARD.decode(key))
        .map_err(|_| "is not base64".to_owned())?;
    if raw.len() != 32 {
        return Err(format!(
            "is {} bytes; an Ed25519 public key is 32",
            raw.len()
        ));
    }
    Ok(raw)
}

impl TrustedKeys {
    /// Builds the set from base64url (or standard base64) raw Ed25519 public keys, each
    /// with full authority. The error names the position of a bad key; a key listed
    /// twice is trusted once.
    pub fn from_public_keys<S: AsRef<str>>(keys: &[S]) -> Result<Self, EnvelopeError> {
        let mut by_id = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            let raw = decode_public_key(k.as_ref())
                .map_err(|why| EnvelopeError::Key(format!("trusted key #{i} {why}")))?;
            by_id.insert(
                key_id(&raw),
                TrustedKey {
                    key: UnparsedPublicKey::new(&ED25519, raw),
                    scope: None,
                },
            );
        }
        Ok(Self { by_id })
    }

    /// Trusts one more key (base64url or standard base64, raw Ed25519): with full
    /// authority when `scope` is `None`, else limited to it. Returns its key id. A key
    /// already trusted is an error: two entries would leave its scope ambiguous.
    pub fn add(&mut self, public_key: &str, scope: Option<Scope>) -> Result<String, EnvelopeError> {
        let raw = decode_public_key(public_key)
            .map_err(|why| EnvelopeError::Key(format!("key {why}")))?;
        let id = key_id(&raw);
        if self.by_id.contains_key(&id) {
            return Err(EnvelopeError::Key(format!(
                "key id {id} is already trusted (listed twice)"
            )));
        }
        self.by_id.insert(
            id.clone(),
            TrustedKey {
                key: UnparsedPublicKey::new(&ED25519, raw),
                scope,
            },
        );
        Ok(id)
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no key is trusted (then nothing can be applied).
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether the key with id `key_id` is trusted.
    pub fn contains(&self, key_id: &str) -> bool {
        self.by_id.contains_key(key_id)
    }

    /// Whether the key with id `key_id` is trusted with full authority (no [`Scope`]):
    /// only such a key's snapshot signature is accepted.
    pub fn has_full_authority(&self, key_id: &str) -> bool {
        self.by_id.get(key_id).is_some_and(|k| k.scope.is_none())
    }

    /// Decodes a NATS message body, checks its signature, then decodes and validates
    /// the event inside, and last checks it against the signing key's scope (an
    /// [`EnvelopeError::OutOfScope`] event is validly signed, but never to be applied).
    pub fn open(&self, message: &[u8]) -> Result<Event, EnvelopeError> {
        let signed =
            pb::SignedEvent::decode(message).map_err(|e| EnvelopeError::Decode(e.to_string()))?;
        let signer = self.check(&signed.key_id, &signed.event, &signed.signature)?;
        let event = pb::RevocationEvent::decode(signed.event.as_slice())
            .map_err(|e| EnvelopeError::Decode(e.to_string()))?;
        let event = Event::from_proto(event)?;
        if let Some(scope) = &signer.scope {
            scope
                .permits(&event)
                .map_err(|reason| EnvelopeError::OutOfScope {
                    key_id: signed.key_id,
                    reason,
                })?;
        }
        Ok(event)
    }

    /// Checks a snapshot signature: an Ed25519 signature by the trusted key `key_id`
    /// over `message`, which must have full authority. A scoped key's is refused: one
    /// signature over a whole body could carry events outside its scope.
    pub(crate) fn verify(
        &self,
        key_id: &str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), EnvelopeError> {
        let signer = self.check(key_id, message, signature)?;
        Self::unscoped(signer, key_id, "a scoped key may not sign snapshots")
    }

    /// Checks an Ed25519 signature by the trusted key `key_id` over `message`; returns
    /// that key, for its scope.
    fn check(
        &self,
        key_id: &str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<&TrustedKey, EnvelopeError> {
        let trusted = self
            .by_id
            .get(key_id)
            .ok_or_else(|| EnvelopeError::UntrustedKey(truncate(key_id)))?;
        trusted
            .key
            .verify(message, signature)
            .map_err(|_| EnvelopeError::BadSignature(key_id.to_owned()))?;
        Ok(trusted)
    }

    /// Refuses a signature by a scoped key, for what only a key with full authority
    /// may sign.
    fn unscoped(signer: &TrustedKey, key_id: &str, reason: &str) -> Result<(), EnvelopeError> {
        match signer.scope {
            None => Ok(()),
            Some(_) => Err(EnvelopeError::OutOfScope {
                key_id: key_id.to_owned(),
                reason: reason.to_owned(),
            }),
        }
    }
}

/// The core subject the fleet heartbeat is published on by default.
pub const HEARTBEAT_SUBJECT: &str = "denylist.v1.heartbeat";

/// What a heartbeat signature covers before the heartbeat bytes: the domain of the
/// signature, so that a heartbeat signature never verifies as an event or a snapshot
/// signature (and a key can later be limited to heartbeats).
const HEARTBEAT_SIGNING_PREFIX: &[u8] = b"denylist.v1.heartbeat\n";

/// The stream's state, signed by a heartbeat publisher (see `StreamHeartbeat` in
/// `events.proto`). Opened only through [`TrustedKeys::open_heartbeat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The stream's name.
    pub stream: String,
    /// The stream's creation time, Unix nanoseconds.
    pub stream_created_unix_nanos: i64,
    /// The stream's last sequence.
    pub last_sequence: u64,
    /// The stream's first stored sequence.
    pub first_sequence: u64,
    /// When the state was read, Unix milliseconds (the publisher's clock).
    pub published_at_ms: i64,
    /// The publisher replica's name (informational).
    pub publisher: String,
}

/// Longest publisher name kept from a heartbeat: it is only logged.
const MAX_HEARTBEAT_PUBLISHER_LEN: usize = 128;

impl Heartbeat {
    fn to_proto(&self) -> pb::StreamHeartbeat {
        pb::StreamHeartbeat {
            stream: self.stream.clone(),
            stream_created_unix_nanos: self.stream_created_unix_nanos,
            last_sequence: self.last_sequence,
            first_sequence: self.first_sequence,
            published_at_ms: self.published_at_ms,
            publisher: self.publisher.clone(),
        }
    }

    /// Checks what a signature cannot: the fields make sense together.
    fn from_proto(p: pb::StreamHeartbeat) -> Result<Self, EnvelopeError> {
        let bad = |m: &str| EnvelopeError::Decode(format!("heartbeat: {m}"));
        if p.stream.is_empty() {
            return Err(bad("no stream name"));
        }
        if p.stream_created_unix_nanos <= 0 {
            return Err(bad("no stream creation time"));
        }
        if p.published_at_ms <= 0 {
            return Err(bad("no publication time"));
        }
        // An empty stream has first = last + 1 (or 0 when nothing was ever stored).
        if p.first_sequence > p.last_sequence.saturating_add(1) {
            return Err(bad("first sequence beyond the last"));
        }
        Ok(Self {
            stream: p.stream,
            stream_created_unix_nanos: p.stream_created_unix_nanos,
            last_sequence: p.last_sequence,
            first_sequence: p.first_sequence,
            published_at_ms: p.published_at_ms,
            publisher: p
                .publisher
                .chars()
                .take(MAX_HEARTBEAT_PUBLISHER_LEN)
                .collect(),
        })
    }
}

impl SigningKey {
    /// Encodes and signs a heartbeat (domain-separated from event signatures).
    pub fn sign_heartbeat(&self, heartbeat: &Heartbeat) -> pb::SignedHeartbeat {
        let bytes = heartbeat.to_proto().encode_to_vec();
        let mut signed = HEARTBEAT_SIGNING_PREFIX.to_vec();
        signed.extend_from_slice(&bytes);
        pb::SignedHeartbeat {
            signature: self.sign_bytes(&signed),
            key_id: self.key_id.clone(),
            heartbeat: bytes,
        }
    }
}

impl TrustedKeys {
    /// Decodes a heartbeat message body, checks its signature by a trusted key with full
    /// authority or a heartbeat key (another scoped key's heartbeat is
    /// [`EnvelopeError::OutOfScope`]), then decodes and checks the heartbeat. Returns it
    /// with the key id that signed it.
    pub fn open_heartbeat(&self, message: &[u8]) -> Result<(Heartbeat, String), EnvelopeError> {
        let signed = pb::SignedHeartbeat::decode(message)
            .map_err(|e| EnvelopeError::Decode(e.to_string()))?;
        let mut bytes = HEARTBEAT_SIGNING_PREFIX.to_vec();
        bytes.extend_from_slice(&signed.heartbeat);
        let signer = self.check(&signed.key_id, &bytes, &signed.signature)?;
        if !signer.scope.as_ref().is_some_and(|s| s.heartbeats_only) {
            Self::unscoped(
                signer,
                &signed.key_id,
                "a scoped key may not sign heartbeats",
            )?;
        }
        let heartbeat = pb::StreamHeartbeat::decode(signed.heartbeat.as_slice())
            .map_err(|e| EnvelopeError::Decode(format!("heartbeat: {e}")))?;
        Ok((Heartbeat::from_proto(heartbeat)?, signed.key_id))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

/// PEM-encodes DER bytes.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_decode(pem: &str, label: &str) -> Result<Vec<u8>, EnvelopeError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem
        .find(&begin)
        .ok_or_else(|| EnvelopeError::Key(format!("no `{begin}` line")))?;
    let rest = &pem[start + begin.len()..];
    let stop = rest
        .find(&end)
        .ok_or_else(|| EnvelopeError::Key(format!("no `{end}` line")))?;
    let body: String = rest[..stop].split_whitespace().collect();
    STANDARD
        .decode(body)
        .map_err(|_| EnvelopeError::Key("PEM body is not base64".into()))
}

#[cfg(test)]
mod tests;
