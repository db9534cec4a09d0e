use super::*;

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

fn token(header: &str, payload: &str, sig: &str) -> String {
    format!("{}.{}.{}", b64(header), b64(payload), sig)
}

fn reason(t: &str) -> Reason {
    parse(t, 8192).unwrap_err().reason
}

#[test]
fn parses_a_well_formed_header() {
    let t = token(r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#, "{}", "AAAA");
    let jws = parse(&t, 8192).unwrap();
    assert_eq!(jws.alg, Algorithm::ES256);
    assert_eq!(jws.kid.as_deref(), Some("k1"));
    assert_eq!(jws.signature(), &[0, 0, 0]);
    assert!(t.starts_with(jws.signing_input));
}

#[test]
fn alg_none_in_any_case_is_its_own_reason() {
    for alg in ["none", "None", "NONE", "nOnE"] {
        let t = token(&format!(r#"{{"alg":"{alg}"}}"#), "{}", "AAAA");
        assert_eq!(reason(&t), Reason::AlgorithmNone, "{alg}");
    }
}

#[test]
fn structural_rejections() {
    assert_eq!(reason(""), Reason::Malformed);
    assert_eq!(reason("a.b"), Reason::Malformed);
    assert_eq!(reason("a.b.c.d"), Reason::Malformed);
    assert_eq!(reason("a.b.c.d.e"), Reason::EncryptedOrNested);
    assert_eq!(
        reason(&format!("{}.{}.", b64(r#"{"alg":"HS256"}"#), b64("{}"))),
        Reason::BadSignature
    );
    assert_eq!(
        reason(&format!("{}..AAAA", b64(r#"{"alg":"HS256"}"#))),
        Reason::Malformed
    );
    assert_eq!(reason("!!!.e30.AAAA"), Reason::Malformed);
    assert_eq!(
        reason(&token(r#"{"alg":"HS256"}"#, "{}", "@@@@")),
        Reason::Malformed
    );
    assert_eq!(reason(&token("not json", "{}", "AAAA")), Reason::Malformed);
    assert_eq!(
        reason(&token(r#"{"kid":"x"}"#, "{}", "AAAA")),
        Reason::Malformed
    );
}

#[test]
fn header_rejections() {
    assert_eq!(
        reason(&token(
            r#"{"alg":"HS256","crit":["exp"],"exp":1}"#,
            "{}",
            "AAAA"
        )),
        Reason::UnsupportedCriticalHeader
    );
    assert_eq!(
        reason(&token(r#"{"alg":"HS256","b64":false}"#, "{}", "AAAA")),
        Reason::UnsupportedCriticalHeader
    );
    assert_eq!(
        reason(&token(r#"{"alg":"HS256","cty":"JWT"}"#, "{}", "AAAA")),
        Reason::EncryptedOrNested
    );
    assert_eq!(
        reason(&token(
            r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#,
            "{}",
            "AAAA"
        )),
        Reason::EncryptedOrNested
    );
    assert_eq!(
        reason(&token(r#"{"alg":"hs256"}"#, "{}", "AAAA")),
        Reason::AlgorithmNotAllowed
    );
    assert_eq!(
        reason(&token(r#"{"alg":"HS256","alg":"none"}"#, "{}", "AAAA")),
        Reason::Malformed
    );
    assert_eq!(
        reason(&token(r#"{"alg":"HS256","kid":7}"#, "{}", "AAAA")),
        Reason::Malformed
    );
}

#[test]
fn jku_x5u_jwk_are_ignored_not_followed() {
    let t = token(
        r#"{"alg":"RS256","kid":"k","jku":"https://evil/jwks","x5u":"https://evil/c","jwk":{"kty":"oct","k":"AAAA"}}"#,
        "{}",
        "AAAA",
    );
    let jws = parse(&t, 8192).unwrap();
    assert_eq!(jws.kid.as_deref(), Some("k"));
}

#[test]
fn size_bound_is_checked_before_anything_else() {
    let t = "x".repeat(9000);
    assert_eq!(reason(&t), Reason::TokenTooLarge);
}

#[test]
fn claims_types_are_checked() {
    let ok = parse_claims(&b64(
        r#"{"iss":"i","aud":["a","b"],"exp":1.9e9,"iat":100,"x":{"deep":[1,2]}}"#,
    ))
    .unwrap()
    .0;
    assert_eq!(ok.aud, vec!["a", "b"]);
    assert_eq!(ok.exp, Some(1_900_000_000));
    for bad in [
        r#"{"exp":"1900000000"}"#,
        r#"{"nbf":true}"#,
        r#"{"iat":[1]}"#,
        r#"{"aud":7}"#,
        r#"{"iss":1}"#,
        r#"{"exp":1e300}"#,
    ] {
        assert_eq!(
            parse_claims(&b64(bad)).unwrap_err().reason,
            Reason::InvalidClaim,
            "{bad}"
        );
    }
}

#[test]
fn claims_syntax_duplicates_and_nesting_are_malformed() {
    let deep = format!("{{\"x\":{}{}}}", "[".repeat(200), "]".repeat(200));
    for bad in [
        r#"{"sub":"a","sub":"b"}"#.to_owned(),
        r#"{"custom":1,"custom":2}"#.to_owned(),
        "[1,2]".to_owned(),
        "{".to_owned(),
        deep,
    ] {
        assert_eq!(
            parse_claims(&b64(&bad)).unwrap_err().reason,
            Reason::Malformed,
            "{bad}"
        );
    }
    let invalid_utf8 = URL_SAFE_NO_PAD.encode(b"{\"sub\":\"\xff\xfe\"}");
    assert_eq!(
        parse_claims(&invalid_utf8).unwrap_err().reason,
        Reason::Malformed
    );
}

#[test]
fn peek_issuer_reads_only_iss() {
    assert_eq!(
        peek_issuer(&b64(r#"{"iss":"https://a","exp":"x"}"#)).as_deref(),
        Some("https://a")
    );
    assert_eq!(peek_issuer(&b64("garbage")), None);
}
