//! PEM text and just enough DER to find a public key: the algorithm of a
//! SubjectPublicKeyInfo, and the SubjectPublicKeyInfo inside an X.509 certificate.
//!
//! A hand-rolled reader rather than an ASN.1 crate: it only walks a few TLVs to
//! dispatch on the key algorithm; aws-lc then parses and validates the key itself.

use base64::Engine as _;

use super::KeyError;

/// One `-----BEGIN label-----` … `-----END label-----` block.
#[derive(Debug)]
pub(super) struct PemBlock {
    pub(super) label: String,
    pub(super) der: Vec<u8>,
}

/// Parses every PEM block in `text`.
pub(super) fn parse_pem(text: &[u8]) -> Result<Vec<PemBlock>, KeyError> {
    let text = std::str::from_utf8(text)
        .map_err(|_| KeyError::Invalid("not PEM text (binary data; DER is not accepted)".into()))?;
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for line in lines.by_ref() {
            if line == end {
                closed = true;
                break;
            }
            if line.contains(':') {
                // RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`): only ever on private keys.
                return Err(KeyError::Invalid(format!(
                    "PEM block {label:?} has headers (an encrypted private key?); a public key is expected"
                )));
            }
            body.push_str(line);
        }
        if !closed {
            return Err(KeyError::Invalid(format!(
                "PEM block {label:?} has no `{end}` line"
            )));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|e| KeyError::Invalid(format!("PEM block {label:?}: bad base64: {e}")))?;
        blocks.push(PemBlock {
            label: label.to_owned(),
            der,
        });
    }
    if blocks.is_empty() {
        return Err(KeyError::Invalid(
            "no PEM block found; expected `-----BEGIN PUBLIC KEY-----`".into(),
        ));
    }
    Ok(blocks)
}

/// A DER tag-length-value.
struct Tlv<'a> {
    tag: u8,
    /// The contents.
    value: &'a [u8],
    /// Tag, length and contents: the whole encoding.
    whole: &'a [u8],
}

/// Reads one TLV from the front of `input`; returns it and the rest.
fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // high tag numbers never occur in the structures read here
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None; // indefinite length (BER) or absurd size
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (value, rest) = rest.split_at(len);
    let header_len = input.len() - rest.len() - len;
    let whole = &input[..header_len + len];
    Some((Tlv { tag, value, whole }, rest))
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const INTEGER: u8 = 0x02;
const CONTEXT_0: u8 = 0xa0;

/// DER contents of the object identifiers this module recognises.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_ED448: &[u8] = &[0x2b, 0x65, 0x71];

/// The key algorithm a SubjectPublicKeyInfo declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SpkiKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

/// Reads the algorithm of a DER SubjectPublicKeyInfo.
pub(super) fn spki_kind(spki: &[u8]) -> Result<SpkiKind, KeyError> {
    let bad = || KeyError::Invalid("malformed SubjectPublicKeyInfo".into());
    let (outer, _) = read_tlv(spki)
        .filter(|(t, _)| t.tag == SEQUENCE)
        .ok_or_else(bad)?;
    let (alg_id, _) = read_tlv(outer.value)
        .filter(|(t, _)| t.tag == SEQUENCE)
        .ok_or_else(bad)?;
    let (oid, params) = read_tlv(alg_id.value)
        .filter(|(t, _)| t.tag == OID)
        .ok_or_else(bad)?;
    match oid.value {
        OID_RSA => Ok(SpkiKind::Rsa),
        OID_EC_PUBLIC_KEY => {
            let curve = read_tlv(params)
                .filter(|(t, _)| t.tag == OID)
                .map(|(t, _)| t.value)
                .ok_or_else(|| {
                    KeyError::Invalid("EC key without a named curve (explicit parameters are not accepted)".into())
                })?;
            match curve {
                OID_P256 => Ok(SpkiKind::EcP256),
                OID_P384 => Ok(SpkiKind::EcP384),
                OID_P521 => Err(KeyError::Invalid(
                    "EC curve P-521 (ES512) is not supported; use P-256 or P-384".into(),
                )),
                other => Err(KeyError::Invalid(format!(
                    "EC curve {} is not supported; use P-256 or P-384",
                    oid_text(other)
                ))),
            }
        }
        OID_ED25519 => Ok(SpkiKind::Ed25519),
        OID_ED448 => Err(KeyError::Invalid("Ed448 keys are not supported; use Ed25519".into())),
        OID_RSA_PSS => Err(KeyError::Invalid(
            "RSASSA-PSS-restricted key (OID 1.2.840.113549.1.1.10) is not supported; use an rsaEncryption key".into(),
        )),
        other => Err(KeyError::Invalid(format!(
            "key algorithm {} is not supported (RSA, EC P-256/P-384 and Ed25519 are)",
            oid_text(other)
        ))),
    }
}

/// The DER SubjectPublicKeyInfo inside a DER X.509 certificate.
///
/// The certificate is only a container here: its signature, validity period and chain
/// are not checked (the operator vouches for the file, as for a bare public key).
pub(super) fn certificate_spki(cert: &[u8]) -> Result<&[u8], KeyError> {
    let bad = || KeyError::Invalid("malformed X.509 certificate".into());
    let (certificate, _) = read_tlv(cert)
        .filter(|(t, _)| t.tag == SEQUENCE)
        .ok_or_else(bad)?;
    let (tbs, _) = read_tlv(certificate.value)
        .filter(|(t, _)| t.tag == SEQUENCE)
        .ok_or_else(bad)?;
    let mut rest = tbs.value;
    // version [0] EXPLICIT, optional
    if let Some((t, r)) = read_tlv(rest)
        && t.tag == CONTEXT_0
    {
        rest = r;
    }
    // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    let expected = [INTEGER, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE];
    let mut last = None;
    for tag in expected {
        let (t, r) = read_tlv(rest)
            .filter(|(t, _)| t.tag == tag)
            .ok_or_else(bad)?;
        last = Some(t.whole);
        rest = r;
    }
    last.ok_or_else(bad)
}

/// Dotted text of an OID's DER contents, for error messages.
fn oid_text(der: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut value: u64 = 0;
    for (i, &b) in der.iter().enumerate() {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() {
                let first = if value < 80 { value / 40 } else { 2 };
                parts.push(first.to_string());
                parts.push((value - first * 40).to_string());
            } else {
                parts.push(value.to_string());
            }
            value = 0;
        } else if i == der.len() - 1 || value > u64::MAX >> 7 {
            return "(malformed OID)".into();
        }
    }
    format!("OID {}", parts.join("."))
}
