//! The fuzz-only keys under `fuzz/keys/` (never used anywhere else), read once per
//! process: signers for tokens and publisher events, and an independent signature
//! check that does not go through the sidecar's code.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The fixed "now" of every fuzz target, Unix milliseconds (a fake clock stands
/// still there, so an input means the same thing in every run).
pub const NOW_MS: i64 = 1_800_000_000_000;

/// [`NOW_MS`] in seconds.
pub const NOW: i64 = NOW_MS / 1000;

/// Where the fuzz keys live.
pub fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("keys")
}

/// Path of one key file, as the sidecar's config names it.
pub fn key_path(name: &str) -> String {
    keys_dir().join(name).display().to_string()
}

fn pem_der(name: &str) -> Vec<u8> {
    let pem = std::fs::read_to_string(keys_dir().join(name)).expect("fuzz key file");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).expect("PEM body")
}

/// A JWS algorithm this fixture can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// HMAC SHA-256.
    Hs256,
    /// RSA PKCS#1 v1.5 SHA-256.
    Rs256,
    /// RSA-PSS SHA-256.
    Ps256,
    /// ECDSA P-256 SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl Alg {
    /// Every algorithm.
    pub const ALL: [Self; 5] = [
        Self::Hs256,
        Self::Rs256,
        Self::Ps256,
        Self::Es256,
        Self::EdDsa,
    ];

    /// The header `alg`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::Ps256 => "PS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }
}

/// The private and public halves of the fuzz keys.
pub struct Keys {
    hmac_secret: Vec<u8>,
    rsa: aws_lc_rs::rsa::KeyPair,
    p256: sig::EcdsaKeyPair,
    ed25519: sig::Ed25519KeyPair,
    /// The Ed25519 key as a denylist publisher key (events and snapshots).
    pub publisher: denylist_proto::envelope::SigningKey,
    rng: SystemRandom,
}

/// The keys, read on first use.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let ed_pem =
            std::fs::read_to_string(keys_dir().join("ed25519-private.pem")).expect("ed25519 key");
        Keys {
            hmac_secret: std::fs::read(keys_dir().join("hmac.secret")).expect("hmac secret"),
            rsa: aws_lc_rs::rsa::KeyPair::from_pkcs8(&pem_der("rsa-private.pem")).expect("rsa"),
            p256: sig::EcdsaKeyPair::from_pkcs8(
                &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                &pem_der("p256-private.pem"),
            )
            .expect("p256"),
            ed25519: sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pem_der(
                "ed25519-private.pem",
            ))
            .expect("ed25519"),
            publisher: denylist_proto::envelope::SigningKey::from_pkcs8_pem(&ed_pem)
                .expect("publisher key"),
            rng: SystemRandom::new(),
        }
    })
}

impl Keys {
    /// Signs `message` (a JWS signing input) with `alg`.
    pub fn sign(&self, alg: Alg, message: &[u8]) -> Vec<u8> {
        match alg {
            Alg::Hs256 => {
                let key = hmac::Key::new(hmac::HMAC_SHA256, &self.hmac_secret);
                hmac::sign(&key, message).as_ref().to_vec()
            }
            Alg::Rs256 | Alg::Ps256 => {
                let padding: &'static dyn sig::RsaEncoding = if alg == Alg::Rs256 {
                    &sig::RSA_PKCS1_SHA256
                } else {
                    &sig::RSA_PSS_SHA256
                };
                let mut out = vec![0; self.rsa.public_modulus_len()];
                self.rsa
                    .sign(padding, &self.rng, message, &mut out)
                    .expect("rsa sign");
                out
            }
            Alg::Es256 => self
                .p256
                .sign(&self.rng, message)
                .expect("es256 sign")
                .as_ref()
                .to_vec(),
            Alg::EdDsa => self.ed25519.sign(message).as_ref().to_vec(),
        }
    }

    /// Signs with the publisher key, for snapshots (the snapshot module's own signing
    /// is crate-private; Ed25519 is deterministic, so this is the same signature).
    pub fn sign_as_publisher(&self, message: &[u8]) -> Vec<u8> {
        self.ed25519.sign(message).as_ref().to_vec()
    }

    /// The publisher's public key, as sidecars list it.
    pub fn publisher_public_key(&self) -> String {
        self.publisher.public_key()
    }

    /// Whether `signature` over `message` verifies under any fuzz key with any
    /// algorithm that key can be used with. The fuzz inputs cannot produce such a
    /// signature themselves, so a token the sidecar accepts must pass this check.
    pub fn any_key_signed(&self, message: &[u8], signature: &[u8]) -> bool {
        let hmacs = [hmac::HMAC_SHA256, hmac::HMAC_SHA384, hmac::HMAC_SHA512];
        if hmacs.into_iter().any(|a| {
            hmac::verify(&hmac::Key::new(a, &self.hmac_secret), message, signature).is_ok()
        }) {
            return true;
        }
        let rsa_pub = self.rsa.public_key().as_ref();
        let rsa: [&'static dyn sig::VerificationAlgorithm; 6] = [
            &sig::RSA_PKCS1_2048_8192_SHA256,
            &sig::RSA_PKCS1_2048_8192_SHA384,
            &sig::RSA_PKCS1_2048_8192_SHA512,
            &sig::RSA_PSS_2048_8192_SHA256,
            &sig::RSA_PSS_2048_8192_SHA384,
            &sig::RSA_PSS_2048_8192_SHA512,
        ];
        if rsa.into_iter().any(|a| {
            UnparsedPublicKey::new(a, rsa_pub)
                .verify(message, signature)
                .is_ok()
        }) {
            return true;
        }
        let p256_pub = self.p256.public_key().as_ref();
        UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, p256_pub)
            .verify(message, signature)
            .is_ok()
            || UnparsedPublicKey::new(&sig::ED25519, self.ed25519.public_key().as_ref())
                .verify(message, signature)
                .is_ok()
    }
}

/// A byte reader for structured inputs: each call takes what it needs and yields
/// zeros once the input runs out, so every input is usable.
#[derive(Debug)]
pub struct Bytes<'a> {
    rest: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// Reads `data` from the start.
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// One byte (0 when none is left).
    pub fn byte(&mut self) -> u8 {
        let (&b, rest) = self.rest.split_first().unwrap_or((&0, &[]));
        self.rest = rest;
        b
    }

    /// A little-endian `u16` (missing bytes are 0).
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Everything not read yet.
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }
}
