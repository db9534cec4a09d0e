//! The JWS algorithms the sidecar verifies.

use serde::{Deserialize, Serialize};

/// A supported JWS signature algorithm (RFC 7518, RFC 8037).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum Algorithm {
    /// HMAC with SHA-256.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA P-256 with SHA-256 (raw r‖s signature).
    ES256,
    /// ECDSA P-384 with SHA-384 (raw r‖s signature).
    ES384,
    /// Ed25519.
    EdDSA,
}

/// The family of key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    /// A shared secret.
    Hmac,
    /// An RSA public key (PKCS#1 v1.5 and PSS).
    Rsa,
    /// An EC P-256 public key.
    EcP256,
    /// An EC P-384 public key.
    EcP384,
    /// An Ed25519 public key.
    Ed25519,
}

impl Algorithm {
    /// Every supported algorithm.
    pub const ALL: [Self; 12] = [
        Self::HS256,
        Self::HS384,
        Self::HS512,
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
        Self::ES256,
        Self::ES384,
        Self::EdDSA,
    ];

    /// Parses the header's `alg` value. Exact and case-sensitive, as RFC 7515 requires.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The registered name (`"RS256"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
        }
    }

    /// The same algorithm as jsonwebtoken names it.
    pub fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Self::HS256 => J::HS256,
            Self::HS384 => J::HS384,
            Self::HS512 => J::HS512,
            Self::RS256 => J::RS256,
            Self::RS384 => J::RS384,
            Self::RS512 => J::RS512,
            Self::PS256 => J::PS256,
            Self::PS384 => J::PS384,
            Self::PS512 => J::PS512,
            Self::ES256 => J::ES256,
            Self::ES384 => J::ES384,
            Self::EdDSA => J::EdDSA,
        }
    }

    /// The algorithm jsonwebtoken read from a header; `None` for one it may add in a
    /// later version that the sidecar does not support.
    pub fn from_jwt(alg: jsonwebtoken::Algorithm) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.to_jwt() == alg)
    }

    /// The key family this algorithm verifies with.
    pub fn family(self) -> KeyFamily {
        match self {
            Self::HS256 | Self::HS384 | Self::HS512 => KeyFamily::Hmac,
            Self::RS256 | Self::RS384 | Self::RS512 | Self::PS256 | Self::PS384 | Self::PS512 => {
                KeyFamily::Rsa
            }
            Self::ES256 => KeyFamily::EcP256,
            Self::ES384 => KeyFamily::EcP384,
            Self::EdDSA => KeyFamily::Ed25519,
        }
    }

    /// Whether this is an HMAC (shared-secret) algorithm.
    pub fn is_hmac(self) -> bool {
        self.family() == KeyFamily::Hmac
    }

    /// For an HMAC algorithm, the shortest secret it may be used with: the size of its
    /// hash's output (RFC 7518 §3.2, a MUST). `None` for the public-key algorithms.
    pub fn min_hmac_secret_bytes(self) -> Option<usize> {
        match self {
            Self::HS256 => Some(32),
            Self::HS384 => Some(48),
            Self::HS512 => Some(64),
            _ => None,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
