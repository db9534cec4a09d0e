//! JSON Web Key (RFC 7517, 7518, 8037) to [`VerifyingKey`].
//!
//! Parsed by hand from `serde_json::Value` rather than through a typed model: unknown
//! members must be ignored, while the few that decide safety (`use`, `key_ops`, `alg`,
//! `d`) are checked strictly, with errors that say which member is wrong.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use super::{KeyError, VerifyingKey};
use crate::algorithm::{Algorithm, KeyFamily};

/// base64url as JWK members use it: RFC 7518 says without padding; padding is tolerated.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(super) fn parse(jwk: &Value) -> Result<VerifyingKey, KeyError> {
    let obj = jwk
        .as_object()
        .ok_or_else(|| KeyError::Invalid("a JWK must be a JSON object".into()))?;
    let kid = optional_str(obj, "kid")?.map(str::to_owned);
    match optional_str(obj, "use")? {
        None | Some("sig") => {}
        Some(other) => {
            return Err(KeyError::NotForSignatures(format!("\"use\": {other:?}")));
        }
    }
    if let Some(ops) = obj.get("key_ops") {
        let ops = ops
            .as_array()
            .ok_or_else(|| invalid("\"key_ops\" must be an array"))?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Err(KeyError::NotForSignatures(
                "\"key_ops\" does not include \"verify\"".into(),
            ));
        }
    }
    let alg = match optional_str(obj, "alg")? {
        None => None,
        Some(name) => Some(Algorithm::from_name(name).ok_or_else(|| {
            KeyError::Invalid(format!(
                "\"alg\" {name:?} is not a supported signature algorithm"
            ))
        })?),
    };
    let kty = optional_str(obj, "kty")?.ok_or_else(|| invalid("missing \"kty\""))?;
    if kty != "oct" && obj.contains_key("d") {
        return Err(KeyError::Invalid(
            "the JWK carries private key material (\"d\"); publish only public keys".into(),
        ));
    }
    let key = match kty {
        "RSA" => {
            let n = bytes(obj, "n")?;
            let e = bytes(obj, "e")?;
            VerifyingKey::from_rsa_components(&n, &e)?
        }
        "EC" => {
            let crv = optional_str(obj, "crv")?.ok_or_else(|| invalid("missing \"crv\""))?;
            let (family, size) = match crv {
                "P-256" => (KeyFamily::EcP256, 32),
                "P-384" => (KeyFamily::EcP384, 48),
                other => {
                    return Err(KeyError::Invalid(format!(
                        "EC curve {other:?} is not supported; use P-256 or P-384"
                    )));
                }
            };
            let x = bytes(obj, "x")?;
            let y = bytes(obj, "y")?;
            if x.len() != size || y.len() != size {
                return Err(KeyError::Invalid(format!(
                    "EC {crv} coordinates must be {size} bytes each (x has {}, y has {})",
                    x.len(),
                    y.len()
                )));
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            VerifyingKey::from_ec(family, &point)?
        }
        "OKP" => {
            let crv = optional_str(obj, "crv")?.ok_or_else(|| invalid("missing \"crv\""))?;
            if crv != "Ed25519" {
                return Err(KeyError::Invalid(format!(
                    "OKP curve {crv:?} is not supported; use Ed25519"
                )));
            }
            let x = bytes(obj, "x")?;
            if x.len() != 32 {
                return Err(invalid("Ed25519 \"x\" must be 32 bytes"));
            }
            VerifyingKey::from_ed25519(&x)?
        }
        "oct" => VerifyingKey::from_hmac_secret(&bytes(obj, "k")?, None)?,
        other => {
            return Err(KeyError::Invalid(format!(
                "\"kty\" {other:?} is not supported (RSA, EC, OKP, oct are)"
            )));
        }
    };
    if let Some(alg) = alg
        && alg.family() != key.family()
    {
        return Err(KeyError::Invalid(format!(
            "\"alg\" {alg} does not fit this {kty} key"
        )));
    }
    if let Some(alg) = alg
        && !key.accepts(alg)
    {
        return Err(KeyError::Weak(format!(
            "\"alg\" {alg} needs a secret of at least {} bytes (RFC 7518 §3.2)",
            alg.min_hmac_secret_bytes().unwrap_or_default()
        )));
    }
    Ok(key.with_algorithm(alg).with_kid(kid))
}

fn invalid(message: &str) -> KeyError {
    KeyError::Invalid(message.to_owned())
}

/// A member that must be a string if present.
fn optional_str<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, KeyError> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(KeyError::Invalid(format!("\"{name}\" must be a string"))),
    }
}

/// A required base64url member, decoded.
fn bytes(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, KeyError> {
    let text =
        optional_str(obj, name)?.ok_or_else(|| KeyError::Invalid(format!("missing \"{name}\"")))?;
    BASE64URL
        .decode(text)
        .map_err(|e| KeyError::Invalid(format!("\"{name}\" is not base64url: {e}")))
}
