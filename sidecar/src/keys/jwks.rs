//! A JWKS document (RFC 7517 §5) to a list of keys, within size and count limits.

use serde_json::Value;

use super::{KeyError, MAX_JWKS_BYTES, MAX_JWKS_KEYS, VerifyingKey};

/// Parses a JWKS document.
///
/// Keys that fail to parse (unsupported type, `"use": "enc"`, weak, malformed) are
/// skipped with a warning, so one odd key an identity provider publishes does not take
/// the others down. Symmetric (`oct`) keys are skipped too: a JWKS source serves
/// public-key issuers only, and a shared secret in a JWKS is a mistake not to act on.
/// The document fails as a whole if it is too big, not JSON, has no `keys` array, has
/// more than [`MAX_JWKS_KEYS`] keys, or has no usable key (an empty set is refused
/// rather than swapped in, so a broken endpoint cannot wipe the keys).
pub(super) fn parse_jwks(
    body: &[u8],
    issuer: &str,
    location: &str,
) -> Result<Vec<VerifyingKey>, KeyError> {
    if body.len() > MAX_JWKS_BYTES {
        return Err(KeyError::Jwks(format!(
            "{} bytes; at most {MAX_JWKS_BYTES} are accepted",
            body.len()
        )));
    }
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| KeyError::Jwks(format!("not JSON: {e}")))?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| KeyError::Jwks("no \"keys\" array".into()))?;
    if entries.is_empty() {
        return Err(KeyError::Jwks("the \"keys\" array is empty".into()));
    }
    if entries.len() > MAX_JWKS_KEYS {
        return Err(KeyError::Jwks(format!(
            "{} keys; at most {MAX_JWKS_KEYS} are accepted",
            entries.len()
        )));
    }
    let mut keys = Vec::with_capacity(entries.len());
    let mut first_problem = None;
    for (index, entry) in entries.iter().enumerate() {
        let kid = entry.get("kid").and_then(Value::as_str).unwrap_or("");
        let parsed = if entry.get("kty").and_then(Value::as_str) == Some("oct") {
            Err(KeyError::Invalid(
                "symmetric (\"oct\") keys are not accepted from a JWKS; use hmac_secret_files"
                    .into(),
            ))
        } else {
            VerifyingKey::from_jwk(entry)
        };
        match parsed {
            Ok(key) => keys.push(key),
            Err(error) => {
                tracing::warn!(issuer, location, index, kid, %error, "skipping a JWKS key");
                first_problem.get_or_insert_with(|| format!("key {index} ({kid:?}): {error}"));
            }
        }
    }
    if keys.is_empty() {
        return Err(KeyError::Jwks(format!(
            "none of its {} keys is usable; first problem: {}",
            entries.len(),
            first_problem.unwrap_or_default()
        )));
    }
    Ok(keys)
}
