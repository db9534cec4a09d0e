//! One verification key, checked once at load and prepared for jsonwebtoken.

use std::fmt;

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents, RsaSubjectPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;

use super::pem::{self, SpkiKind};
use super::{KeyError, MAX_RSA_BITS, MIN_HMAC_SECRET_BYTES, MIN_RSA_BITS, SignatureError};
use crate::algorithm::{Algorithm, KeyFamily};

/// A key that verifies JWS signatures: an RSA, EC P-256/P-384 or Ed25519 public key,
/// or an HMAC secret.
///
/// Built once when a key source loads: the key material is validated then (aws-lc
/// parses it, and RSA sizes and HMAC lengths are checked), and its jsonwebtoken
/// [`DecodingKey`] is prepared, in the encoding jsonwebtoken's aws-lc provider reads
/// first (PKCS#1 for RSA, SubjectPublicKeyInfo for EC, the raw 32 bytes for Ed25519).
/// `Debug` shows the kid, family and a fingerprint of public keys, never a secret.
pub struct VerifyingKey {
    kid: Option<String>,
    family: KeyFamily,
    /// The JWK's `alg`, if it named one: the only algorithm this key verifies.
    alg: Option<Algorithm>,
    decoding: DecodingKey,
    /// An HMAC secret's length, which decides the hashes it may key (RFC 7518 §3.2);
    /// an RSA modulus' size in bits (shown by `Debug`); 0 for EC and Ed25519 keys.
    size: usize,
    /// SHA-256 over the key material (SubjectPublicKeyInfo for public keys), used to
    /// tell whether a reloaded key set differs. Never printed for secrets.
    fingerprint: [u8; 32],
}

impl VerifyingKey {
    /// Parses a PEM public key: `PUBLIC KEY` (SubjectPublicKeyInfo: RSA, EC P-256/P-384,
    /// Ed25519), `RSA PUBLIC KEY` (PKCS#1), or `CERTIFICATE` (X.509; only its public key
    /// is used — validity and chain are not checked; in a chain, the first certificate).
    ///
    /// Private keys, RSA keys under 2048 bits and other curves are rejected with an
    /// error that says so.
    pub fn from_pem(pem: &[u8], kid: Option<String>) -> Result<Self, KeyError> {
        let blocks = pem::parse_pem(pem)?;
        let mut public = Vec::new();
        let mut certificates = Vec::new();
        for block in &blocks {
            match block.label.as_str() {
                "PUBLIC KEY" | "RSA PUBLIC KEY" => public.push(block),
                "CERTIFICATE" => certificates.push(block),
                label if label.contains("PRIVATE KEY") => {
                    return Err(KeyError::Invalid(format!(
                        "PEM block {label:?} is a private key; configure the public key \
                         (`openssl pkey -in key.pem -pubout`)"
                    )));
                }
                _ => {}
            }
        }
        let mut key = match (public.as_slice(), certificates.first()) {
            ([block], None) if block.label == "RSA PUBLIC KEY" => Self::from_rsa_der(&block.der)?,
            ([block], None) => Self::from_spki(&block.der)?,
            ([], Some(cert)) => Self::from_spki(pem::certificate_spki(&cert.der)?)?,
            ([], None) => {
                let labels: Vec<_> = blocks.iter().map(|b| b.label.as_str()).collect();
                return Err(KeyError::Invalid(format!(
                    "no public key in PEM blocks {labels:?}; expected `PUBLIC KEY`, \
                     `RSA PUBLIC KEY` or `CERTIFICATE`"
                )));
            }
            _ => {
                return Err(KeyError::Invalid(
                    "more than one public key in one PEM file; use one file per key".into(),
                ));
            }
        };
        key.kid = kid;
        Ok(key)
    }

    /// An HMAC key from the raw secret bytes, which must be at least 32 bytes long. It
    /// verifies HS256, and HS384 and HS512 only if it is at least as long as their hash
    /// output (48 and 64 bytes), as RFC 7518 §3.2 requires.
    pub fn from_hmac_secret(secret: &[u8], kid: Option<String>) -> Result<Self, KeyError> {
        if secret.len() < MIN_HMAC_SECRET_BYTES {
            return Err(KeyError::Weak(format!(
                "HMAC secret has {} bytes; at least {MIN_HMAC_SECRET_BYTES} are required",
                secret.len()
            )));
        }
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"hmac\0");
        ctx.update(secret);
        Ok(Self {
            kid,
            family: KeyFamily::Hmac,
            alg: None,
            decoding: DecodingKey::from_secret(secret),
            size: secret.len(),
            fingerprint: fingerprint_of(ctx.finish()),
        })
    }

    /// Parses a JSON Web Key (RFC 7517): `kty` `RSA`, `EC` (P-256, P-384), `OKP`
    /// (Ed25519) or `oct`.
    ///
    /// `kid` is kept. `alg`, if present, must be a supported algorithm that fits the key,
    /// and becomes the only algorithm the key verifies. A key marked `"use": "enc"` (or any
    /// `use` but `sig`), or whose `key_ops` lack `verify`, is rejected, as is one that
    /// carries private key material (`d`). Unknown members are ignored.
    pub fn from_jwk(jwk: &serde_json::Value) -> Result<Self, KeyError> {
        super::jwk::parse(jwk)
    }

    /// The key id, if the key has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The key family, which decides the algorithms the key can verify.
    pub fn family(&self) -> KeyFamily {
        self.family
    }

    /// The JWK's `alg`, if it named one: then the key verifies only that algorithm.
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.alg
    }

    /// Whether the key can verify `alg`: the right family, the JWK `alg` if any, and
    /// for HMAC a secret at least as long as the hash output.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        alg.family() == self.family
            && self.alg.is_none_or(|a| a == alg)
            && alg
                .min_hmac_secret_bytes()
                .is_none_or(|min| self.size >= min)
    }

    /// The key as jsonwebtoken takes it. Check [`VerifyingKey::accepts`] first:
    /// jsonwebtoken only checks that the family fits.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// Checks a raw signature over `signing_input` (the ASCII `header.payload`) with
    /// jsonwebtoken, as `jsonwebtoken::decode` does for a token and this key: for
    /// callers (and tests) holding a signature rather than a token.
    ///
    /// [`SignatureError::WrongKeyType`] if [`VerifyingKey::accepts`] refuses `alg`;
    /// [`SignatureError::Invalid`] when the check fails. ECDSA signatures must be the
    /// fixed-length r‖s form JWS uses: a DER one, another length or a zero r or s is
    /// invalid.
    pub fn verify(
        &self,
        alg: Algorithm,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        if !self.accepts(alg) {
            return Err(SignatureError::WrongKeyType);
        }
        // jsonwebtoken takes the signature as the token carries it.
        let signature = URL_SAFE_NO_PAD.encode(signature);
        match jsonwebtoken::crypto::verify(&signature, signing_input, &self.decoding, alg.to_jwt())
        {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(SignatureError::Invalid),
        }
    }

    /// The key with `alg` as its only algorithm. The caller checks `alg` fits the family.
    pub(super) fn with_algorithm(mut self, alg: Option<Algorithm>) -> Self {
        self.alg = alg;
        self
    }

    /// The key with `kid`.
    pub(super) fn with_kid(mut self, kid: Option<String>) -> Self {
        self.kid = kid;
        self
    }

    /// SHA-256 fingerprint of the key material.
    pub(super) fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// A key from a DER SubjectPublicKeyInfo.
    pub(super) fn from_spki(spki: &[u8]) -> Result<Self, KeyError> {
        match pem::spki_kind(spki)? {
            SpkiKind::Rsa => Self::from_rsa_der(spki),
            SpkiKind::EcP256 => Self::from_ec(KeyFamily::EcP256, spki),
            SpkiKind::EcP384 => Self::from_ec(KeyFamily::EcP384, spki),
            SpkiKind::Ed25519 => Self::from_ed25519(spki),
        }
    }

    /// An RSA key from a DER PKCS#1 `RSAPublicKey` or SubjectPublicKeyInfo.
    fn from_rsa_der(der: &[u8]) -> Result<Self, KeyError> {
        let key = RsaSubjectPublicKey::from_der(der)
            .map_err(|e| KeyError::Invalid(format!("not a valid RSA public key: {e}")))?;
        Self::from_rsa_components(
            key.modulus().big_endian_without_leading_zero(),
            key.exponent().big_endian_without_leading_zero(),
        )
    }

    /// An RSA key from its modulus and exponent (big-endian).
    pub(super) fn from_rsa_components(n: &[u8], e: &[u8]) -> Result<Self, KeyError> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        let bits = match n.first() {
            Some(&first) => (n.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
            None => 0,
        };
        if bits < MIN_RSA_BITS {
            return Err(KeyError::Weak(format!(
                "RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"
            )));
        }
        if bits > MAX_RSA_BITS {
            return Err(KeyError::Invalid(format!(
                "RSA key has {bits} bits; at most {MAX_RSA_BITS} are supported"
            )));
        }
        let invalid = |err: &dyn fmt::Display| {
            KeyError::Invalid(format!("not a valid RSA public key: {err}"))
        };
        // Parsed once to validate it (aws-lc checks the modulus and exponent) and to
        // encode it: SubjectPublicKeyInfo for the fingerprint, PKCS#1 for jsonwebtoken.
        let parsed = RsaPublicKeyComponents { n, e }
            .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
            .map_err(|err| invalid(&err))?;
        let spki = parsed
            .as_der()
            .map_err(|_| KeyError::Invalid("cannot encode the public key".into()))?;
        let pkcs1 =
            aws_lc_rs::rsa::PublicKey::from_der(spki.as_ref()).map_err(|err| invalid(&err))?;
        Ok(Self {
            kid: None,
            family: KeyFamily::Rsa,
            alg: None,
            decoding: DecodingKey::from_rsa_der(pkcs1.as_ref()),
            size: bits,
            fingerprint: fingerprint_of(digest::digest(&digest::SHA256, spki.as_ref())),
        })
    }

    /// An EC key from a DER SubjectPublicKeyInfo or an uncompressed SEC1 point
    /// (`04 ‖ x ‖ y`).
    pub(super) fn from_ec(family: KeyFamily, bytes: &[u8]) -> Result<Self, KeyError> {
        let (alg, curve) = match family {
            KeyFamily::EcP256 => (&signature::ECDSA_P256_SHA256_FIXED, "P-256"),
            KeyFamily::EcP384 => (&signature::ECDSA_P384_SHA384_FIXED, "P-384"),
            other => {
                return Err(KeyError::Invalid(format!(
                    "{other:?} is not an EC key family"
                )));
            }
        };
        let parsed = ParsedPublicKey::new(alg, bytes)
            .map_err(|e| KeyError::Invalid(format!("not a valid EC {curve} public key: {e}")))?;
        let (spki, fingerprint) = spki_and_fingerprint(&parsed)?;
        Ok(Self {
            kid: None,
            family,
            alg: None,
            decoding: DecodingKey::from_ec_der(&spki),
            size: 0,
            fingerprint,
        })
    }

    /// An Ed25519 key from a DER SubjectPublicKeyInfo or the raw 32 bytes.
    pub(super) fn from_ed25519(bytes: &[u8]) -> Result<Self, KeyError> {
        let parsed = ParsedPublicKey::new(&signature::ED25519, bytes)
            .map_err(|e| KeyError::Invalid(format!("not a valid Ed25519 public key: {e}")))?;
        let (spki, fingerprint) = spki_and_fingerprint(&parsed)?;
        // An Ed25519 SubjectPublicKeyInfo is 12 fixed bytes and then the key itself.
        let raw = spki
            .len()
            .checked_sub(32)
            .map(|at| &spki[at..])
            .ok_or_else(|| KeyError::Invalid("cannot encode the Ed25519 key".into()))?;
        Ok(Self {
            kid: None,
            family: KeyFamily::Ed25519,
            alg: None,
            decoding: DecodingKey::from_ed_der(raw),
            size: 0,
            fingerprint,
        })
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("VerifyingKey");
        d.field("kid", &self.kid)
            .field("family", &self.family)
            .field("alg", &self.alg);
        match self.family {
            // A digest of a secret is still derived from it: show nothing.
            KeyFamily::Hmac => d.field("secret", &"<redacted>"),
            KeyFamily::Rsa => d
                .field("bits", &self.size)
                .field("fingerprint", &Hex(&self.fingerprint[..8])),
            KeyFamily::EcP256 | KeyFamily::EcP384 | KeyFamily::Ed25519 => {
                d.field("fingerprint", &Hex(&self.fingerprint[..8]))
            }
        };
        d.finish()
    }
}

/// Lowercase hex in `Debug`.
struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// The key's canonical SubjectPublicKeyInfo and its SHA-256, so the same key read from
/// a PEM file or a JWK has the same fingerprint.
fn spki_and_fingerprint(key: &ParsedPublicKey) -> Result<(Vec<u8>, [u8; 32]), KeyError> {
    let der = key
        .as_der()
        .map_err(|_| KeyError::Invalid("cannot encode the public key".into()))?;
    let fingerprint = fingerprint_of(digest::digest(&digest::SHA256, der.as_ref()));
    Ok((der.as_ref().to_vec(), fingerprint))
}

fn fingerprint_of(d: digest::Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&d.as_ref()[..32]);
    out
}
