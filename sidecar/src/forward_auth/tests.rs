use super::*;

fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
            HeaderValue::from_bytes(value).expect("test header value"),
        );
    }
    map
}

fn authorization() -> HeaderName {
    HeaderName::from_static("authorization")
}

#[test]
fn the_bearer_scheme_is_read_case_insensitively() {
    for value in ["Bearer abc", "bearer abc", "BEARER  abc ", " Bearer abc"] {
        let h = headers(&[("Authorization", value.as_bytes())]);
        assert_eq!(
            credentials(&authorization(), None, &h),
            Credentials::Token("abc"),
            "{value:?}"
        );
    }
}

#[test]
fn a_non_bearer_or_empty_credential_is_no_token() {
    for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "abc", ""] {
        let h = headers(&[("authorization", value.as_bytes())]);
        assert_eq!(
            credentials(&authorization(), Some("session"), &h),
            Credentials::None,
            "{value:?}"
        );
    }
}

#[test]
fn two_token_headers_or_a_non_text_one_are_refused() {
    let h = headers(&[
        ("authorization", b"Bearer a"),
        ("authorization", b"Bearer b"),
    ]);
    assert!(matches!(
        credentials(&authorization(), None, &h),
        Credentials::Ambiguous(_)
    ));
    let h = headers(&[("authorization", b"Bearer \xff\xfe")]);
    assert!(matches!(
        credentials(&authorization(), None, &h),
        Credentials::Ambiguous(_)
    ));
}

#[test]
fn the_cookie_is_tried_only_without_the_header() {
    let h = headers(&[("cookie", b"theme=dark; session=tok; other=x")]);
    assert_eq!(
        credentials(&authorization(), Some("session"), &h),
        Credentials::Token("tok")
    );
    assert_eq!(credentials(&authorization(), None, &h), Credentials::None);
    // HTTP/2 style: several Cookie headers.
    let h = headers(&[("cookie", b"theme=dark"), ("cookie", b"session=tok2")]);
    assert_eq!(
        credentials(&authorization(), Some("session"), &h),
        Credentials::Token("tok2")
    );
    // A name that merely ends like the cookie's is another cookie.
    let h = headers(&[("cookie", b"xsession=evil")]);
    assert_eq!(
        credentials(&authorization(), Some("session"), &h),
        Credentials::None
    );
    // The header wins even when it holds no Bearer token.
    let h = headers(&[("authorization", b"Basic x"), ("cookie", b"session=tok")]);
    assert_eq!(
        credentials(&authorization(), Some("session"), &h),
        Credentials::None
    );
}

#[test]
fn a_configured_header_replaces_authorization() {
    let name = HeaderName::from_static("x-token");
    let h = headers(&[("authorization", b"Bearer a"), ("x-token", b"Bearer b")]);
    assert_eq!(credentials(&name, None, &h), Credentials::Token("b"));
}

#[test]
fn challenges_follow_rfc_6750() {
    assert_eq!(
        Decision::MissingToken.challenge().as_deref(),
        Some("Bearer realm=\"denylist\"")
    );
    let invalid = Decision::Invalid {
        reason: denylist_proto::pb::Reason::Revoked,
        detail: "revoked by jti rule ev-1".into(),
    };
    assert_eq!(
        invalid.challenge().as_deref(),
        Some(
            "Bearer realm=\"denylist\", error=\"invalid_token\", \
             error_description=\"REASON_REVOKED\""
        )
    );
    let body: serde_json::Value = serde_json::from_str(&invalid.body()).expect("JSON body");
    assert_eq!(body["error"], "REASON_REVOKED");
    assert_eq!(body["detail"], "revoked by jti rule ev-1");
    let unavailable = Decision::Unavailable {
        error: "not_ready",
        detail: "loading".into(),
    };
    assert_eq!(unavailable.challenge(), None);
}

#[test]
fn denials_are_401_or_503_with_reason_and_no_store() {
    let r = denial(&Decision::MissingToken);
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer realm=\"denylist\"");
    assert_eq!(r.headers()[REASON_HEADER], "missing_token");
    assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
    let r = denial(&Decision::Unavailable {
        error: "REASON_DENYLIST_STALE",
        detail: "stale".into(),
    });
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()[RETRY_AFTER], "1");
    assert_eq!(r.headers()[REASON_HEADER], "REASON_DENYLIST_STALE");
    assert!(r.headers().get(WWW_AUTHENTICATE).is_none());
}
