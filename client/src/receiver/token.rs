//! Verifying a signed signal (a logout token or a SET) as its specifications require:
//! the header policy, the signature against the provider's keys (jsonwebtoken), `iss`,
//! `aud`, `iat` within the provider's window, `exp` if present, and a `jti`. What each
//! kind of signal adds (`events`, `sid`/`sub`, no `nonce`) is in its own module.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::keys::KeySet;

/// Why a signal was not acted on. Client errors (the signal is bad) are answered 4xx
/// and never published; the others (5xx) ask the provider to deliver again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// Not a well-formed token, form or SET, or a claim is missing or malformed.
    #[error("{0}")]
    Malformed(String),
    /// The signature does not verify, or the header asks for something refused.
    #[error("{0}")]
    Signature(String),
    /// No key of the provider fits the token.
    #[error("{0}")]
    UnknownKey(String),
    /// `iss` is not the provider's.
    #[error("{0}")]
    Issuer(String),
    /// `aud` names none of the provider's audiences.
    #[error("{0}")]
    Audience(String),
    /// `iat`/`exp` outside the accepted window.
    #[error("{0}")]
    Time(String),
    /// The `jti` was seen before.
    #[error("{0}")]
    Replayed(String),
    /// The signal names a subject or issuer this receiver may not revoke.
    #[error("{0}")]
    NotAllowed(String),
    /// The provider's keys cannot be loaded now (retry later).
    #[error("{0}")]
    KeysUnavailable(String),
    /// The revocation could not be stored in JetStream in time (retry later).
    #[error("{0}")]
    Publish(String),
}

impl SignalError {
    /// Whether the provider should deliver again later (5xx) rather than drop it (4xx).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::KeysUnavailable(_) | Self::Publish(_))
    }

    /// The RFC 8935 §2.4 error code (`err`) for this error.
    pub fn ssf_code(&self) -> &'static str {
        match self {
            Self::Malformed(_) | Self::Time(_) | Self::Replayed(_) => "invalid_request",
            Self::Signature(_) | Self::UnknownKey(_) => "invalid_key",
            Self::Issuer(_) => "invalid_issuer",
            Self::Audience(_) => "invalid_audience",
            Self::NotAllowed(_) => "access_denied",
            Self::KeysUnavailable(_) | Self::Publish(_) => "temporarily_unavailable",
        }
    }

    /// The metrics outcome label.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Signature(_) => "bad_signature",
            Self::UnknownKey(_) => "unknown_key",
            Self::Issuer(_) => "wrong_issuer",
            Self::Audience(_) => "wrong_audience",
            Self::Time(_) => "bad_time",
            Self::Replayed(_) => "replayed",
            Self::NotAllowed(_) => "not_allowed",
            Self::KeysUnavailable(_) => "keys_unavailable",
            Self::Publish(_) => "publish_failed",
        }
    }
}

/// What a provider accepts, for [`verify`].
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// Exact `iss`.
    pub issuer: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// Accepted header `alg`s.
    pub algorithms: Vec<Algorithm>,
    /// Oldest `iat` accepted, seconds before now.
    pub max_age_secs: i64,
    /// Clock skew allowed, seconds.
    pub leeway_secs: i64,
}

/// A token whose signature and common claims verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The payload.
    pub claims: Map<String, Value>,
    /// `jti`.
    pub jti: String,
    /// `iat`, Unix seconds.
    pub iat: i64,
}

/// Longest `jti` accepted (it is part of the revocation's reason).
const MAX_JTI_LEN: usize = 256;

/// Verifies `token` against `keys` and `policy` at `now` (Unix seconds). `typ` lists the
/// header `typ` values accepted (compared case-insensitively, with or without the
/// `application/` prefix); an absent `typ` is accepted, as both specifications allow.
pub async fn verify(
    token: &str,
    keys: &KeySet,
    policy: &TokenPolicy,
    typ: &[&str],
    now: i64,
) -> Result<VerifiedToken, SignalError> {
    let token = token.trim();
    match token.bytes().filter(|b| *b == b'.').count() {
        2 => {}
        4 => {
            return Err(SignalError::Malformed(
                "encrypted tokens (JWE) are not accepted".into(),
            ));
        }
        _ => {
            return Err(SignalError::Malformed(
                "not a compact JWS (three base64url parts separated by dots)".into(),
            ));
        }
    }
    // jsonwebtoken refuses `alg: none` (and any algorithm it does not know) here: its
    // `Algorithm` has no such variant.
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| SignalError::Malformed(format!("token header: {e}")))?;
    if let Some(crit) = &header.crit {
        return Err(SignalError::Signature(format!(
            "header `crit` {crit:?} names extensions this receiver does not understand"
        )));
    }
    if header.jku.is_some() || header.jwk.is_some() || header.x5u.is_some() {
        tracing::debug!("token header names keys (jku/jwk/x5u); they are ignored");
    }
    if let Some(t) = &header.typ {
        let t = t.to_ascii_lowercase();
        let t = t.strip_prefix("application/").unwrap_or(&t);
        if !typ.contains(&t) {
            return Err(SignalError::Malformed(format!(
                "header `typ` {:?} is not {}",
                header.typ.as_deref().unwrap_or_default(),
                typ.join(" or ")
            )));
        }
    }
    if !policy.algorithms.contains(&header.alg) {
        return Err(SignalError::Signature(format!(
            "algorithm {:?} is not accepted from this provider",
            header.alg
        )));
    }
    let key = keys.key_for(header.kid.as_deref(), header.alg).await?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    validation.set_issuer(&[&policy.issuer]);
    validation.set_audience(&policy.audiences);
    validation.set_required_spec_claims(&["iss", "aud"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(
        |e| match e.kind() {
            ErrorKind::InvalidSignature => {
                SignalError::Signature("signature does not verify".into())
            }
            ErrorKind::InvalidIssuer => {
                SignalError::Issuer(format!("`iss` is not {:?}", policy.issuer))
            }
            ErrorKind::InvalidAudience => {
                SignalError::Audience(format!("`aud` names none of {:?}", policy.audiences))
            }
            ErrorKind::MissingRequiredClaim(c) => {
                SignalError::Malformed(format!("claim `{c}` is missing"))
            }
            ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => {
                SignalError::UnknownKey(format!("the provider's key cannot verify this token: {e}"))
            }
            _ => SignalError::Malformed(format!("token: {e}")),
        },
    )?;
    let claims = data.claims;
    let iat = claims
        .get("iat")
        .ok_or_else(|| SignalError::Malformed("claim `iat` is missing".into()))?;
    let iat = numeric_date(iat)
        .ok_or_else(|| SignalError::Malformed("claim `iat` is not a NumericDate".into()))?;
    if iat > now + policy.leeway_secs {
        return Err(SignalError::Time(format!(
            "`iat` {iat} is {}s in the future",
            iat - now
        )));
    }
    if iat < now - policy.max_age_secs {
        return Err(SignalError::Time(format!(
            "`iat` {iat} is {}s old; at most {}s is accepted",
            now - iat,
            policy.max_age_secs
        )));
    }
    if let Some(exp) = claims.get("exp") {
        let exp = numeric_date(exp)
            .ok_or_else(|| SignalError::Malformed("claim `exp` is not a NumericDate".into()))?;
        if exp + policy.leeway_secs < now {
            return Err(SignalError::Time(format!(
                "expired {}s ago (`exp`)",
                now - exp
            )));
        }
    }
    let jti = match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() && j.len() <= MAX_JTI_LEN => j.clone(),
        Some(_) => {
            return Err(SignalError::Malformed(format!(
                "claim `jti` must be a string of 1 to {MAX_JTI_LEN} characters"
            )));
        }
        None => return Err(SignalError::Malformed("claim `jti` is missing".into())),
    };
    Ok(VerifiedToken { claims, jti, iat })
}

/// A NumericDate (RFC 7519): seconds, integer or not; fractions are dropped.
pub(crate) fn numeric_date(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                .map(|f| f as i64)
        }),
        _ => None,
    }
}
