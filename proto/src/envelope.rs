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

use std::collections::HashMap;

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use prost::Message as _;

use crate::events::{Event, EventError};
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

/// The public keys of trusted publishers, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    by_id: HashMap<String, UnparsedPublicKey<Vec<u8>>>,
}

impl TrustedKeys {
    /// Builds the set from base64url (or standard base64) raw Ed25519 public keys.
    /// The error names the position of a bad key.
    pub fn from_public_keys<S: AsRef<str>>(keys: &[S]) -> Result<Self, EnvelopeError> {
        let mut by_id = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            let k = k.as_ref().trim();
            let raw = URL_SAFE_NO_PAD
                .decode(k)
                .or_else(|_| STANDARD.decode(k))
                .map_err(|_| EnvelopeError::Key(format!("trusted key #{i} is not base64")))?;
            if raw.len() != 32 {
                return Err(EnvelopeError::Key(format!(
                    "trusted key #{i} is {} bytes; an Ed25519 public key is 32",
                    raw.len()
                )));
            }
            by_id.insert(key_id(&raw), UnparsedPublicKey::new(&ED25519, raw));
        }
        Ok(Self { by_id })
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

    /// Decodes a NATS message body, checks its signature, then decodes and validates
    /// the event inside.
    pub fn open(&self, message: &[u8]) -> Result<Event, EnvelopeError> {
        let signed =
            pb::SignedEvent::decode(message).map_err(|e| EnvelopeError::Decode(e.to_string()))?;
        self.verify(&signed.key_id, &signed.event, &signed.signature)?;
        let event = pb::RevocationEvent::decode(signed.event.as_slice())
            .map_err(|e| EnvelopeError::Decode(e.to_string()))?;
        Ok(Event::from_proto(event)?)
    }

    /// Checks an Ed25519 signature by the trusted key `key_id` over `message`.
    pub(crate) fn verify(
        &self,
        key_id: &str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), EnvelopeError> {
        let key = self
            .by_id
            .get(key_id)
            .ok_or_else(|| EnvelopeError::UntrustedKey(truncate(key_id)))?;
        key.verify(message, signature)
            .map_err(|_| EnvelopeError::BadSignature(key_id.to_owned()))
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
