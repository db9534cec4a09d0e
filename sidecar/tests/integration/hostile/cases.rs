//! The hostile tokens, in groups, each with the answer it must get.
//!
//! Unless a case says otherwise, a hostile token is signed with the issuer's real key,
//! so the one thing wrong with it is the thing the case is about.

use denylist_proto::pb::Reason;
use serde_json::{Value, json};

use super::{Case, Keys};
use crate::harness::{
    Issuer, START_SECS, TestKey, b64, compact, fresh_jti, sign_input, sign_raw, unb64,
};

const NOW: i64 = START_SECS;

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("test bug: hex"))
        .collect()
}

fn case(name: impl Into<String>, token: String, expect: Reason) -> Case {
    Case::new(name, token, &[expect])
}

fn case_any(name: impl Into<String>, token: String, expect: &[Reason]) -> Case {
    Case::new(name, token, expect)
}

/// Splits a compact token into its three segments.
fn segments(token: &str) -> (&str, &str, &str) {
    let mut it = token.splitn(3, '.');
    match (it.next(), it.next(), it.next()) {
        (Some(h), Some(p), Some(s)) => (h, p, s),
        _ => panic!("test bug: {token:?} is not a compact JWS"),
    }
}

/// Claims with `key` set to `value` (or removed when `value` is `None`).
fn claims_with(issuer: &Issuer, key: &str, value: Option<Value>) -> Value {
    let mut c = issuer.claims(NOW);
    match value {
        Some(v) => c[key] = v,
        None => {
            c.as_object_mut().expect("object").remove(key);
        }
    }
    c
}

/// `alg: none` in any letter case, with a (meaningless) signature present.
pub(super) fn alg_none(k: &Keys) -> Vec<Case> {
    let claims = k.rs.claims(NOW).to_string();
    let mut cases = Vec::new();
    for spelling in ["none", "NONE", "None", "nOnE", "NoNe", "noNE"] {
        let header = json!({"alg": spelling}).to_string();
        cases.push(case(
            format!("alg {spelling:?} with a signature"),
            compact(header.as_bytes(), claims.as_bytes(), b"not-a-signature"),
            Reason::AlgorithmNone,
        ));
        let header = json!({"alg": spelling, "kid": "rs-1"}).to_string();
        cases.push(case(
            format!("alg {spelling:?} with the issuer's kid"),
            compact(header.as_bytes(), claims.as_bytes(), b"not-a-signature"),
            Reason::AlgorithmNone,
        ));
    }
    // Near-misses are not `none`, but must never be accepted either.
    for spelling in ["none\u{0}", " none", "none "] {
        let header = json!({"alg": spelling}).to_string();
        cases.push(case_any(
            format!("alg {spelling:?}"),
            compact(header.as_bytes(), claims.as_bytes(), b"not-a-signature"),
            &[Reason::AlgorithmNone, Reason::AlgorithmNotAllowed],
        ));
    }
    cases
}

/// The canonical unsecured JWS (RFC 7515 A.5): `alg: none` and an EMPTY signature.
/// DESIGN.md: `alg: none` is always rejected with its own reason — the empty signature
/// is part of what makes it an unsecured JWS, not a different fault.
pub(super) fn alg_none_unsigned(k: &Keys) -> Vec<Case> {
    let claims = k.rs.claims(NOW).to_string();
    ["none", "NONE", "None", "nOnE"]
        .into_iter()
        .map(|spelling| {
            let header = json!({"alg": spelling}).to_string();
            case(
                format!("unsecured JWS, alg {spelling:?}, empty signature"),
                format!("{}.{}.", b64(header), b64(&claims)),
                Reason::AlgorithmNone,
            )
        })
        .collect()
}

/// An issuer's public key used as an HMAC secret.
pub(super) fn algorithm_confusion(k: &Keys) -> Vec<Case> {
    let mut cases = Vec::new();
    for (issuer, name) in [(&k.rs, "RS256"), (&k.es, "ES256"), (&k.ed, "EdDSA")] {
        let claims = issuer.claims(NOW).to_string();
        let pem = TestKey::hmac_from(None, issuer.key.public_pem().into_bytes());
        let der = TestKey::hmac_from(None, issuer.key.public_spki_der());
        let kid = issuer.key.kid.clone().expect("kid");
        for alg in ["HS256", "HS384", "HS512"] {
            let header = json!({"alg": alg, "kid": kid}).to_string();
            cases.push(case(
                format!("{name} issuer: {alg} keyed with its PEM public key"),
                sign_raw(&pem, alg, header.as_bytes(), claims.as_bytes()),
                Reason::AlgorithmConfusion,
            ));
        }
        let header = json!({"alg": "HS256"}).to_string();
        cases.push(case(
            format!("{name} issuer: HS256 keyed with its PEM public key, no kid"),
            sign_raw(&pem, "HS256", header.as_bytes(), claims.as_bytes()),
            Reason::AlgorithmConfusion,
        ));
        let header = json!({"alg": "HS256", "kid": kid}).to_string();
        cases.push(case(
            format!("{name} issuer: HS256 keyed with its DER public key"),
            sign_raw(&der, "HS256", header.as_bytes(), claims.as_bytes()),
            Reason::AlgorithmConfusion,
        ));
    }
    cases
}

/// ECDSA signatures in the wrong form or with degenerate values.
pub(super) fn ecdsa(k: &Keys) -> Vec<Case> {
    let header = k.es.header().to_string();
    let claims = k.es.claims(NOW).to_string();
    let input = format!("{}.{}", b64(&header), b64(&claims));
    let good = k.es.key.sign("ES256", input.as_bytes());
    assert_eq!(good.len(), 64);
    // The order of P-256: r or s equal to it is out of range.
    let n = hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    assert_eq!(n.len(), 32);
    let with_sig = |sig: &[u8]| format!("{input}.{}", b64(sig));
    let der = k.es.key.sign_es256_der(input.as_bytes());
    let mut r_zero = good.clone();
    r_zero[..32].fill(0);
    let mut s_zero = good.clone();
    s_zero[32..].fill(0);
    let mut long = good.clone();
    long.push(0);
    let attacker_input = input.clone();
    vec![
        case(
            "ES256 signature DER-encoded instead of r‖s",
            with_sig(&der),
            Reason::BadSignature,
        ),
        case(
            "ECDSA r = s = 0 (64 zero bytes)",
            with_sig(&[0u8; 64]),
            Reason::BadSignature,
        ),
        case(
            "ECDSA r = s = 0, DER-encoded",
            with_sig(&[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]),
            Reason::BadSignature,
        ),
        case(
            "ECDSA r = 0, real s",
            with_sig(&r_zero),
            Reason::BadSignature,
        ),
        case(
            "ECDSA real r, s = 0",
            with_sig(&s_zero),
            Reason::BadSignature,
        ),
        case(
            "ECDSA r = s = n (the group order)",
            with_sig(&[n.clone(), n].concat()),
            Reason::BadSignature,
        ),
        case(
            "ES256 signature with a trailing byte",
            with_sig(&long),
            Reason::BadSignature,
        ),
        case(
            "ES256 signature of 63 bytes",
            with_sig(&good[..63]),
            Reason::BadSignature,
        ),
        case(
            "ES256 signed by an attacker key under the issuer's kid",
            format!(
                "{attacker_input}.{}",
                b64(k.attacker_ec.sign("ES256", attacker_input.as_bytes()))
            ),
            Reason::BadSignature,
        ),
    ]
}

/// Empty, stripped, short, long and foreign signatures.
pub(super) fn signature_segment(k: &Keys) -> Vec<Case> {
    let token = k.rs.token(&k.rs.claims(NOW));
    let (h, p, s) = segments(&token);
    let sig = unb64(s);
    let other = k.rs.token(&k.rs.claims(NOW));
    let (_, _, other_sig) = segments(&other);
    let hs = k.hs.token(&k.hs.claims(NOW));
    let (hh, hp, hsig) = segments(&hs);
    vec![
        // jws.rs answers BAD_SIGNATURE for a present-but-empty third segment: the token
        // has the shape of a JWS, and what it carries as a signature does not verify.
        case(
            "empty signature segment (`h.p.`)",
            format!("{h}.{p}."),
            Reason::BadSignature,
        ),
        case(
            "empty HMAC signature segment",
            format!("{hh}.{hp}."),
            Reason::BadSignature,
        ),
        // Two segments is not a compact JWS at all: MALFORMED.
        case(
            "signature segment stripped (`h.p`)",
            format!("{h}.{p}"),
            Reason::Malformed,
        ),
        case(
            "another token's signature",
            format!("{h}.{p}.{other_sig}"),
            Reason::BadSignature,
        ),
        case(
            "RSA signature one byte short",
            format!("{h}.{p}.{}", b64(&sig[..255])),
            Reason::BadSignature,
        ),
        case(
            "RSA signature, 256 zero bytes",
            format!("{h}.{p}.{}", b64([0u8; 256])),
            Reason::BadSignature,
        ),
        case(
            "signature of 600 bytes",
            format!("{h}.{p}.{}", b64([7u8; 600])),
            Reason::BadSignature,
        ),
        case(
            "HMAC tag truncated to 16 bytes",
            format!("{hh}.{hp}.{}", b64(&unb64(hsig)[..16])),
            Reason::BadSignature,
        ),
        case(
            "HMAC tag of one byte",
            format!("{hh}.{hp}.{}", b64([0u8])),
            Reason::BadSignature,
        ),
    ]
}

/// `kid` values that name no key: unknown, path-like, quoted, with NUL.
pub(super) fn kid(k: &Keys) -> Vec<Case> {
    let claims = k.rs.claims(NOW);
    let long = "a".repeat(2048);
    let hostile = [
        "nope",
        "../../etc/passwd",
        "/etc/passwd",
        "..\\..\\windows\\win.ini",
        "file:///etc/passwd",
        "\"; DROP TABLE keys; --",
        "' OR '1'='1",
        "rs-1\u{0}",
        "rs-1\u{0}../../etc/passwd",
        "\u{0}",
        "RS-1",
        " rs-1",
        "rs-1 ",
        "rs-1/../rs-1",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "es-1",
        long.as_str(),
    ];
    let mut cases: Vec<Case> = hostile
        .iter()
        .map(|kid| {
            let header = json!({"alg": "RS256", "kid": kid});
            let shown: String = kid.chars().take(40).collect();
            case(
                format!("kid {shown:?}"),
                k.rs.token_with_header(&header, &claims),
                Reason::UnknownKey,
            )
        })
        .collect();
    for bad in [
        json!(123),
        json!({"path": "../../etc/passwd"}),
        json!(["rs-1"]),
        json!(true),
    ] {
        let header = json!({"alg": "RS256", "kid": bad});
        cases.push(case(
            format!("kid of JSON type {bad}"),
            k.rs.token_with_header(&header, &claims),
            Reason::Malformed,
        ));
    }
    cases
}

/// `jku`, `x5u`, `jwk`, `x5c` pointing at or carrying an attacker's key; the token is
/// signed by that key. Keys come only from configuration, so none of these can be OK.
pub(super) fn header_keys(k: &Keys) -> Vec<Case> {
    let claims = k.rs.claims(NOW).to_string();
    let attacker_jwk = k.attacker_rsa.public_jwk();
    let mut anonymous_jwk = attacker_jwk.clone();
    anonymous_jwk.as_object_mut().expect("object").remove("kid");
    let attacker = |header: Value| {
        sign_raw(
            &k.attacker_rsa,
            "RS256",
            header.to_string().as_bytes(),
            claims.as_bytes(),
        )
    };
    let jku = "https://attacker.example/.well-known/jwks.json";
    let x5u = "https://attacker.example/cert.pem";
    let never_ok = [Reason::UnknownKey, Reason::BadSignature];
    let es_claims = k.es.claims(NOW).to_string();
    let ec_jwk = k.attacker_ec.public_jwk();
    vec![
        case(
            "jku → attacker JWKS, attacker kid",
            attacker(json!({"alg": "RS256", "kid": "attacker-1", "jku": jku})),
            Reason::UnknownKey,
        ),
        case_any(
            "jku → attacker JWKS, no kid",
            attacker(json!({"alg": "RS256", "jku": jku})),
            &never_ok,
        ),
        case(
            "jku → attacker JWKS, issuer's kid",
            attacker(json!({"alg": "RS256", "kid": "rs-1", "jku": jku})),
            Reason::BadSignature,
        ),
        case(
            "x5u → attacker certificate, attacker kid",
            attacker(json!({"alg": "RS256", "kid": "attacker-1", "x5u": x5u})),
            Reason::UnknownKey,
        ),
        case_any(
            "x5u → attacker certificate, no kid",
            attacker(json!({"alg": "RS256", "x5u": x5u})),
            &never_ok,
        ),
        case(
            "jwk = attacker public key, attacker kid",
            attacker(json!({"alg": "RS256", "kid": "attacker-1", "jwk": attacker_jwk})),
            Reason::UnknownKey,
        ),
        case_any(
            "jwk = attacker public key, no kid",
            attacker(json!({"alg": "RS256", "jwk": anonymous_jwk})),
            &never_ok,
        ),
        case(
            "jwk = attacker public key, issuer's kid",
            attacker(json!({"alg": "RS256", "kid": "rs-1", "jwk": anonymous_jwk})),
            Reason::BadSignature,
        ),
        case(
            "x5c = attacker chain, issuer's kid",
            attacker(
                json!({"alg": "RS256", "kid": "rs-1", "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]}),
            ),
            Reason::BadSignature,
        ),
        case(
            "ES256: jwk = attacker EC key, issuer's kid",
            sign_raw(
                &k.attacker_ec,
                "ES256",
                json!({"alg": "ES256", "kid": "es-1", "jwk": ec_jwk})
                    .to_string()
                    .as_bytes(),
                es_claims.as_bytes(),
            ),
            Reason::BadSignature,
        ),
    ]
}

/// `crit` naming extensions the verifier does not understand.
pub(super) fn crit(k: &Keys) -> Vec<Case> {
    let claims = k.rs.claims(NOW);
    let with = |header: Value| k.rs.token_with_header(&header, &claims);
    vec![
        case(
            "crit names an unknown extension",
            with(json!({"alg": "RS256", "kid": "rs-1", "crit": ["exp-ext"], "exp-ext": 1})),
            Reason::UnsupportedCriticalHeader,
        ),
        case(
            "crit names an extension that is absent",
            with(json!({"alg": "RS256", "kid": "rs-1", "crit": ["http://example.invalid/x"]})),
            Reason::UnsupportedCriticalHeader,
        ),
        case(
            "crit: [\"b64\"] with b64: false (RFC 7797)",
            with(json!({"alg": "RS256", "kid": "rs-1", "crit": ["b64"], "b64": false})),
            Reason::UnsupportedCriticalHeader,
        ),
        case(
            "crit: [] (forbidden by RFC 7515 §4.1.11)",
            with(json!({"alg": "RS256", "kid": "rs-1", "crit": []})),
            Reason::UnsupportedCriticalHeader,
        ),
    ]
}

/// JWE, nested tokens, and algorithms outside the issuer's allowlist.
pub(super) fn envelope_and_algorithm(k: &Keys) -> Vec<Case> {
    let claims = k.rs.claims(NOW);
    let with = |header: Value| k.rs.token_with_header(&header, &claims);
    let input = format!(
        "{}.{}",
        b64(json!({"alg": "RS384", "kid": "rs-1"}).to_string()),
        b64(claims.to_string())
    );
    let jwe = format!(
        "{}.{}.{}.{}.{}",
        b64(json!({"alg": "RSA-OAEP", "enc": "A256GCM"}).to_string()),
        b64([1u8; 256]),
        b64([2u8; 12]),
        b64([3u8; 64]),
        b64([4u8; 16])
    );
    let es_on_rs = sign_raw(
        &k.attacker_ec,
        "ES256",
        json!({"alg": "ES256", "kid": "rs-1"})
            .to_string()
            .as_bytes(),
        claims.to_string().as_bytes(),
    );
    vec![
        case("JWE (five segments)", jwe, Reason::EncryptedOrNested),
        case(
            "cty: JWT (nested token)",
            with(json!({"alg": "RS256", "kid": "rs-1", "cty": "JWT"})),
            Reason::EncryptedOrNested,
        ),
        case(
            "cty: jwt (nested, lower case)",
            with(json!({"alg": "RS256", "kid": "rs-1", "cty": "jwt"})),
            Reason::EncryptedOrNested,
        ),
        case(
            "enc in a three-segment token",
            with(json!({"alg": "RS256", "kid": "rs-1", "enc": "A256GCM"})),
            Reason::EncryptedOrNested,
        ),
        case(
            "RS384, supported but not allowed for the issuer",
            sign_input(&k.rs.key, "RS384", &input),
            Reason::AlgorithmNotAllowed,
        ),
        case(
            "ES256 on an RS256 issuer",
            es_on_rs,
            Reason::AlgorithmNotAllowed,
        ),
        case(
            "alg ES512 (unsupported)",
            with(json!({"alg": "ES512", "kid": "rs-1"})),
            Reason::AlgorithmNotAllowed,
        ),
        case(
            "alg rs256 (algorithm names are case-sensitive)",
            with(json!({"alg": "rs256", "kid": "rs-1"})),
            Reason::AlgorithmNotAllowed,
        ),
        case(
            "header without alg",
            with(json!({"kid": "rs-1"})),
            Reason::Malformed,
        ),
        case(
            "alg: null",
            with(json!({"alg": null, "kid": "rs-1"})),
            Reason::Malformed,
        ),
        case(
            "alg: 256",
            with(json!({"alg": 256, "kid": "rs-1"})),
            Reason::Malformed,
        ),
        case(
            "alg: [\"RS256\"]",
            with(json!({"alg": ["RS256"], "kid": "rs-1"})),
            Reason::Malformed,
        ),
    ]
}

/// Registered claims of the wrong JSON type (the signature holds).
pub(super) fn claim_types(k: &Keys) -> Vec<Case> {
    let i = &k.rs;
    let bad = [
        ("exp", json!((NOW + 600).to_string())),
        ("exp", json!(true)),
        ("exp", json!(null)),
        ("exp", json!({"$date": NOW + 600})),
        ("exp", json!([NOW + 600])),
        ("exp", json!(1e300)),
        ("exp", json!(u64::MAX)),
        ("nbf", json!("yesterday")),
        ("nbf", json!([])),
        ("nbf", json!(false)),
        ("iat", json!("now")),
        ("iat", json!({})),
        ("iat", json!(null)),
        ("aud", json!(42)),
        ("aud", json!([1, 2])),
        ("aud", json!({"api": true})),
        ("sub", json!(42)),
        ("jti", json!(true)),
        ("sid", json!(7)),
    ];
    bad.into_iter()
        .map(|(claim, value)| {
            case(
                format!("`{claim}` = {value}"),
                i.token(&claims_with(i, claim, Some(value.clone()))),
                Reason::InvalidClaim,
            )
        })
        .collect()
}

/// Tokens over the size bound (default 8 KiB).
pub(super) fn size(k: &Keys) -> Vec<Case> {
    let padded = |n: usize| claims_with(&k.hs, "pad", Some(json!("x".repeat(n))));
    vec![
        case(
            "signed token of ~9 KB",
            k.hs.token(&padded(6_600)),
            Reason::TokenTooLarge,
        ),
        case(
            "signed token of ~60 KB",
            k.hs.token(&padded(44_000)),
            Reason::TokenTooLarge,
        ),
        case(
            "9000 bytes of garbage",
            "a".repeat(9_000),
            Reason::TokenTooLarge,
        ),
        case("9000 dots", ".".repeat(9_000), Reason::TokenTooLarge),
    ]
}

/// Tokens cut short or split wrongly (several-issuer server: the payload is read for
/// `iss` before the signature, so a cut payload cannot choose an issuer).
pub(super) fn truncation(k: &Keys) -> Vec<Case> {
    let token = k.rs.token(&k.rs.claims(NOW));
    let (h, p, s) = segments(&token);
    assert_eq!(s.len(), 342, "RS256 signature is 342 base64url characters");
    vec![
        case("empty token", String::new(), Reason::Malformed),
        case("one segment", h.to_owned(), Reason::Malformed),
        case("`h.`", format!("{h}."), Reason::Malformed),
        case(
            "`h.p.s.x` (four segments)",
            format!("{token}.{s}"),
            Reason::Malformed,
        ),
        case("trailing dot", format!("{token}."), Reason::Malformed),
        case("empty header", format!(".{p}.{s}"), Reason::Malformed),
        case("empty payload", format!("{h}..{s}"), Reason::Malformed),
        case("`..`", "..".to_owned(), Reason::Malformed),
        case(
            "header cut in half",
            format!("{}.{p}.{s}", &h[..h.len() / 2]),
            Reason::Malformed,
        ),
        case(
            "payload cut in half",
            format!("{h}.{}.{s}", &p[..p.len() / 2]),
            Reason::Malformed,
        ),
        case(
            "payload cut by one character",
            format!("{h}.{}.{s}", &p[..p.len() - 1]),
            Reason::Malformed,
        ),
        // 341 characters is not a valid base64url length.
        case(
            "signature cut by one character",
            format!("{h}.{p}.{}", &s[..341]),
            Reason::Malformed,
        ),
        // 340 characters decode to 255 bytes, which do not verify.
        case(
            "signature cut by two characters",
            format!("{h}.{p}.{}", &s[..340]),
            Reason::BadSignature,
        ),
        case("trailing newline", format!("{token}\n"), Reason::Malformed),
        case("leading space", format!(" {token}"), Reason::Malformed),
        case("space inside", format!("{h}. {p}.{s}"), Reason::Malformed),
    ]
}

/// Segments that are not canonical base64url.
pub(super) fn base64(k: &Keys) -> Vec<Case> {
    let token = k.rs.token(&k.rs.claims(NOW));
    let (h, p, s) = segments(&token);
    let mut std_alphabet = h.to_owned();
    std_alphabet.replace_range(1..2, "+");
    let mut slash_sig = s.to_owned();
    slash_sig.replace_range(10..11, "/");
    // A 256-byte signature ends in two characters carrying 8 bits; the last one has 4
    // unused bits that must be zero. Setting one gives a second spelling of the same bytes.
    let last = s.as_bytes()[s.len() - 1];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let value = alphabet
        .iter()
        .position(|&c| c == last)
        .expect("base64url char");
    assert_eq!(value & 0x0f, 0, "canonical encoding");
    let non_canonical = format!("{}{}", &s[..s.len() - 1], alphabet[value | 1] as char);
    let header_json = |text: &str| {
        let input = format!("{}.{p}", b64(text));
        sign_input(&k.rs.key, "RS256", &input)
    };
    vec![
        case(
            "header with `=` padding",
            format!("{h}==.{p}.{s}"),
            Reason::Malformed,
        ),
        case(
            "header in the standard alphabet (`+`)",
            format!("{std_alphabet}.{p}.{s}"),
            Reason::Malformed,
        ),
        case("header `%%%`", format!("%%%.{p}.{s}"), Reason::Malformed),
        case(
            "payload with `!`",
            format!("{h}.{}!.{s}", &p[..p.len() - 1]),
            Reason::Malformed,
        ),
        case(
            "payload with `=` padding",
            format!("{h}.{p}=.{s}"),
            Reason::Malformed,
        ),
        case(
            "signature with `=` padding",
            format!("{h}.{p}.{s}=="),
            Reason::Malformed,
        ),
        case(
            "signature in the standard alphabet (`/`)",
            format!("{h}.{p}.{slash_sig}"),
            Reason::Malformed,
        ),
        case(
            "signature with non-zero trailing bits",
            format!("{h}.{p}.{non_canonical}"),
            Reason::Malformed,
        ),
        case("signature `***`", format!("{h}.{p}.***"), Reason::Malformed),
        case(
            "fullwidth dots (U+FF0E)",
            format!("{h}\u{ff0e}{p}\u{ff0e}{s}"),
            Reason::Malformed,
        ),
        case(
            "header is not JSON",
            header_json("hello"),
            Reason::Malformed,
        ),
        case(
            "header is a JSON array",
            header_json("[\"RS256\"]"),
            Reason::Malformed,
        ),
        case(
            "header is a JSON string",
            header_json("\"RS256\""),
            Reason::Malformed,
        ),
        case(
            "header is JSON null",
            header_json("null"),
            Reason::Malformed,
        ),
    ]
}

/// Payloads and headers whose JSON is broken: invalid UTF-8, deep nesting, duplicate
/// members, not an object. Signed with the issuer's real key, so these are checked both
/// where `iss` is peeked first (several issuers) and where the signature comes first
/// (one issuer).
pub(super) fn payload_json(i: &Issuer) -> Vec<Case> {
    let iss = &i.iss;
    let jti = fresh_jti();
    let exp = NOW + 600;
    let body =
        |rest: &str| format!(r#"{{"iss":"{iss}","iat":{NOW},"exp":{exp},"jti":"{jti}"{rest}}}"#);
    let raw = |rest: &[u8]| {
        let mut v = body("").into_bytes();
        v.pop(); // the closing brace
        v.extend_from_slice(rest);
        v.push(b'}');
        v
    };
    let mut cases = vec![
        // Invalid UTF-8.
        case(
            "invalid UTF-8 in `sub`",
            i.token_payload(&raw(b",\"sub\":\"\xff\xfe\"")),
            Reason::Malformed,
        ),
        case(
            "invalid UTF-8 in an unregistered claim",
            i.token_payload(&raw(b",\"note\":\"ok \xff\"")),
            Reason::Malformed,
        ),
        case(
            "invalid UTF-8 in a claim name",
            i.token_payload(&raw(b",\"\xff\":1")),
            Reason::Malformed,
        ),
        case(
            "overlong UTF-8 (C0 AF) in `sub`",
            i.token_payload(&raw(b",\"sub\":\"\xc0\xaf\"")),
            Reason::Malformed,
        ),
        case(
            "UTF-8-encoded surrogate (ED A0 80) in `sub`",
            i.token_payload(&raw(b",\"sub\":\"\xed\xa0\x80\"")),
            Reason::Malformed,
        ),
        case(
            "lone surrogate escape in `sub`",
            i.token_payload(&raw(b",\"sub\":\"\\ud800\"")),
            Reason::Malformed,
        ),
        case(
            "invalid UTF-8 in the header's kid",
            i.token_raw(
                b"{\"alg\":\"HS256\",\"kid\":\"hs-\xff\"}",
                body("").as_bytes(),
            ),
            Reason::Malformed,
        ),
        case(
            "byte-order mark before the payload",
            i.token_payload(&[b"\xef\xbb\xbf".as_slice(), body("").as_bytes()].concat()),
            Reason::Malformed,
        ),
        // Not a JSON object, or not JSON.
        case(
            "payload is not JSON",
            i.token_payload(b"hello"),
            Reason::Malformed,
        ),
        case(
            "payload is a JSON array",
            i.token_payload(b"[]"),
            Reason::Malformed,
        ),
        case(
            "payload is a JSON string",
            i.token_payload(b"\"claims\""),
            Reason::Malformed,
        ),
        case(
            "payload is JSON null",
            i.token_payload(b"null"),
            Reason::Malformed,
        ),
        case(
            "trailing garbage after the payload",
            i.token_payload(format!("{} x", body("")).as_bytes()),
            Reason::Malformed,
        ),
        case(
            "two payload objects",
            i.token_payload(format!("{0}{0}", body("")).as_bytes()),
            Reason::Malformed,
        ),
        case(
            "trailing comma",
            i.token_payload(body(",").as_bytes()),
            Reason::Malformed,
        ),
        case(
            "NaN as a value",
            i.token_payload(body(r#","x":NaN"#).as_bytes()),
            Reason::Malformed,
        ),
        case(
            "a comment",
            i.token_payload(body(r#"/* hi */"#).as_bytes()),
            Reason::Malformed,
        ),
        // Deep nesting (parser stack exhaustion); sized to stay under the 8 KiB bound.
        case(
            "2500-deep arrays in an unregistered claim",
            i.token_payload(
                body(&format!(
                    r#","deep":{}{}"#,
                    "[".repeat(2500),
                    "]".repeat(2500)
                ))
                .as_bytes(),
            ),
            Reason::Malformed,
        ),
        case(
            "900-deep objects in an unregistered claim",
            i.token_payload(
                body(&format!(
                    r#","deep":{}1{}"#,
                    r#"{"a":"#.repeat(900),
                    "}".repeat(900)
                ))
                .as_bytes(),
            ),
            Reason::Malformed,
        ),
        case(
            "payload is 2500-deep arrays",
            i.token_payload(format!("{}{}", "[".repeat(2500), "]".repeat(2500)).as_bytes()),
            Reason::Malformed,
        ),
        case(
            "2000-deep arrays in a header member",
            i.token_raw(
                format!(
                    r#"{{"alg":"HS256","kid":"hs-1","x":{}{}}}"#,
                    "[".repeat(2000),
                    "]".repeat(2000)
                )
                .as_bytes(),
                body("").as_bytes(),
            ),
            Reason::Malformed,
        ),
        case_any(
            "2500-deep arrays in `aud`",
            i.token_payload(
                body(&format!(
                    r#","aud":{}{}"#,
                    "[".repeat(2500),
                    "]".repeat(2500)
                ))
                .as_bytes(),
            ),
            &[Reason::Malformed, Reason::InvalidClaim],
        ),
        // Duplicate members: parsers disagree on which one wins, so none may.
        case(
            "duplicate `iss`",
            i.token_payload(body(&format!(r#","iss":"{iss}""#)).as_bytes()),
            Reason::Malformed,
        ),
        case(
            "duplicate `iss` spelled with an escape (\\u0069ss)",
            i.token_payload(body(&format!(r#","\u0069ss":"{iss}""#)).as_bytes()),
            Reason::Malformed,
        ),
        case(
            "duplicate `exp`",
            i.token_payload(body(&format!(r#","exp":{}"#, NOW + 60)).as_bytes()),
            Reason::Malformed,
        ),
        case(
            "duplicate `jti`",
            i.token_payload(body(r#","jti":"other""#).as_bytes()),
            Reason::Malformed,
        ),
        case(
            "duplicate `sub`",
            i.token_payload(body(r#","sub":"alice","sub":"admin""#).as_bytes()),
            Reason::Malformed,
        ),
        case(
            "duplicate unregistered claim",
            i.token_payload(body(r#","role":"user","role":"admin""#).as_bytes()),
            Reason::Malformed,
        ),
        case(
            "duplicate `alg` in the header",
            i.token_raw(
                br#"{"alg":"HS256","alg":"none","kid":"hs-1"}"#,
                body("").as_bytes(),
            ),
            Reason::Malformed,
        ),
        case(
            "duplicate `kid` in the header",
            i.token_raw(
                br#"{"alg":"HS256","kid":"hs-1","kid":"other"}"#,
                body("").as_bytes(),
            ),
            Reason::Malformed,
        ),
    ];
    // The same body, well-formed, is accepted: the cases above fail for their fault only.
    cases.push(case(
        "control: the well-formed body",
        i.token_payload(body(r#","sub":"alice""#).as_bytes()),
        Reason::Ok,
    ));
    cases
}

/// Registered-claim checks on a server with several issuers.
pub(super) fn claims(k: &Keys) -> Vec<Case> {
    let es = &k.es; // audiences = ["api"]
    let rs = &k.rs;
    let hs = &k.hs;
    let with = |i: &Issuer, key: &str, v: Option<Value>| i.token(&claims_with(i, key, v));
    let with2 = |i: &Issuer, a: (&str, Value), b: (&str, Value)| {
        let mut c = i.claims(NOW);
        c[a.0] = a.1;
        c[b.0] = b.1;
        i.token(&c)
    };
    let hs_kid_as_hs2 =
        hs.token(&json!({"iss": k.hs2.iss, "iat": NOW, "exp": NOW + 600, "jti": fresh_jti()}));
    let hs_no_kid_as_hs2 = hs.token_with_header(
        &json!({"alg": "HS256"}),
        &json!({"iss": k.hs2.iss, "iat": NOW, "exp": NOW + 600, "jti": fresh_jti()}),
    );
    vec![
        case(
            "control: valid RS256",
            rs.token(&rs.claims(NOW)),
            Reason::Ok,
        ),
        case(
            "control: valid ES256 with aud",
            es.token(&es.claims(NOW)),
            Reason::Ok,
        ),
        case(
            "control: valid HS256",
            hs.token(&hs.claims(NOW)),
            Reason::Ok,
        ),
        case(
            "control: valid EdDSA",
            k.ed.token(&k.ed.claims(NOW)),
            Reason::Ok,
        ),
        case(
            "control: `Bearer ` prefix",
            format!("Bearer {}", hs.token(&hs.claims(NOW))),
            Reason::Ok,
        ),
        case(
            "control: `bearer ` prefix (the scheme is case-insensitive)",
            format!("bearer {}", hs.token(&hs.claims(NOW))),
            Reason::Ok,
        ),
        case(
            "`Bearer` without its space is not a scheme",
            format!("Bearer{}", hs.token(&hs.claims(NOW))),
            Reason::Malformed,
        ),
        case(
            "exp an hour ago",
            with2(rs, ("exp", json!(NOW - 3600)), ("iat", json!(NOW - 4000))),
            Reason::Expired,
        ),
        case(
            "exp 31 s ago (leeway 30 s)",
            with2(rs, ("exp", json!(NOW - 31)), ("iat", json!(NOW - 600))),
            Reason::Expired,
        ),
        case(
            "exp i64::MIN (the expiry detail must not overflow)",
            with2(rs, ("exp", json!(i64::MIN)), ("iat", json!(NOW - 600))),
            Reason::Expired,
        ),
        case(
            "exp 30 s ago (within leeway)",
            with2(rs, ("exp", json!(NOW - 30)), ("iat", json!(NOW - 600))),
            Reason::Ok,
        ),
        case(
            "exp as a fraction",
            with(rs, "exp", Some(json!(NOW as f64 + 600.5))),
            Reason::Ok,
        ),
        case(
            "nbf in an hour",
            with(rs, "nbf", Some(json!(NOW + 3600))),
            Reason::NotYetValid,
        ),
        case(
            "nbf in 31 s",
            with(rs, "nbf", Some(json!(NOW + 31))),
            Reason::NotYetValid,
        ),
        case(
            "nbf in 30 s (within leeway)",
            with(rs, "nbf", Some(json!(NOW + 30))),
            Reason::Ok,
        ),
        case(
            "iat in an hour",
            with2(rs, ("iat", json!(NOW + 3600)), ("exp", json!(NOW + 4000))),
            Reason::NotYetValid,
        ),
        case(
            "aud names another audience",
            with(es, "aud", Some(json!("other"))),
            Reason::AudienceMismatch,
        ),
        case(
            "aud differs in case",
            with(es, "aud", Some(json!("API"))),
            Reason::AudienceMismatch,
        ),
        case(
            "aud list without the audience",
            with(es, "aud", Some(json!(["other", "web"]))),
            Reason::AudienceMismatch,
        ),
        case(
            "aud list with the audience",
            with(es, "aud", Some(json!(["other", "api"]))),
            Reason::Ok,
        ),
        case(
            "aud missing where audiences are set",
            with(es, "aud", None),
            Reason::MissingClaim,
        ),
        case(
            "aud: [] where audiences are set",
            with(es, "aud", Some(json!([]))),
            Reason::MissingClaim,
        ),
        case("exp missing", with(rs, "exp", None), Reason::MissingClaim),
        case("jti missing", with(rs, "jti", None), Reason::MissingClaim),
        case(
            "jti empty",
            with(rs, "jti", Some(json!(""))),
            Reason::MissingClaim,
        ),
        case(
            "lifetime 1 h + 1 s (max 1 h)",
            with2(rs, ("iat", json!(NOW)), ("exp", json!(NOW + 3601))),
            Reason::LifetimeTooLong,
        ),
        case(
            "lifetime exactly 1 h",
            with2(rs, ("iat", json!(NOW)), ("exp", json!(NOW + 3600))),
            Reason::Ok,
        ),
        case(
            "no iat, exp in 2 h (max 1 h)",
            without_iat(rs, NOW + 7200),
            Reason::LifetimeTooLong,
        ),
        case(
            "iss of no configured issuer",
            with(hs, "iss", Some(json!("https://evil.example"))),
            Reason::IssuerUnknown,
        ),
        case(
            "iss with a trailing slash",
            with(hs, "iss", Some(json!("https://hs.example/"))),
            Reason::IssuerUnknown,
        ),
        case(
            "iss in upper case",
            with(hs, "iss", Some(json!("HTTPS://HS.EXAMPLE"))),
            Reason::IssuerUnknown,
        ),
        case(
            "iss of another issuer, signed by this issuer's kid",
            hs_kid_as_hs2,
            Reason::UnknownKey,
        ),
        case_any(
            "iss of another issuer, signed by this issuer's key, no kid",
            hs_no_kid_as_hs2,
            &[Reason::BadSignature, Reason::UnknownKey],
        ),
        // With several issuers `iss` picks the keys; without it there is nothing to verify with.
        case_any(
            "iss missing (several issuers)",
            with(hs, "iss", None),
            &[
                Reason::MissingClaim,
                Reason::Malformed,
                Reason::IssuerUnknown,
            ],
        ),
    ]
}

fn without_iat(i: &Issuer, exp: i64) -> String {
    let mut c = claims_with(i, "iat", None);
    c["exp"] = json!(exp);
    i.token(&c)
}

/// Registered-claim checks on a server with one issuer (whose keys are used without
/// reading the payload).
pub(super) fn single_issuer_claims(i: &Issuer) -> Vec<Case> {
    vec![
        case("control: valid", i.token(&i.claims(NOW)), Reason::Ok),
        case(
            "iss of another issuer, signed by the only issuer's key",
            i.token(&claims_with(i, "iss", Some(json!("https://other.example")))),
            Reason::IssuerUnknown,
        ),
        case(
            "iss missing",
            i.token(&claims_with(i, "iss", None)),
            Reason::MissingClaim,
        ),
        case(
            "payload cut by one character (signature no longer matches)",
            {
                let t = i.token(&i.claims(NOW));
                let (h, p, s) = segments(&t);
                format!("{h}.{}.{s}", &p[..p.len() - 1])
            },
            Reason::BadSignature,
        ),
    ]
}
