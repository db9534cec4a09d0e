use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::*;

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

fn token(header: &str, payload: &str, sig: &str) -> String {
    format!("{}.{}.{}", b64(header), b64(payload), sig)
}

/// Splits and reads the header of `t` with a size bound of `max`.
fn read(t: &str, max: usize) -> Result<Header, Rejection> {
    read_header(&split(t, max)?)
}

fn reason(t: &str) -> Reason {
    read(t, 8192).unwrap_err().reason
}

fn header_reason(header: &str) -> Reason {
    match read(&token(header, "{}", "AAAA"), 1 << 20) {
        Ok(_) => Reason::Ok,
        Err(r) => r.reason,
    }
}

/// The registered claims as owned values, to compare in one assertion.
#[derive(Debug, Default, PartialEq, Eq)]
struct RegisteredClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Vec<String>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    jti: Option<String>,
    sid: Option<String>,
}

fn registered(c: &Claims) -> RegisteredClaims {
    let owned = |s: Option<&str>| s.map(str::to_owned);
    RegisteredClaims {
        iss: owned(c.iss()),
        sub: owned(c.sub()),
        aud: c.audiences().map(str::to_owned).collect(),
        exp: c.exp(),
        nbf: c.nbf(),
        iat: c.iat(),
        jti: owned(c.jti()),
        sid: owned(c.sid()),
    }
}

/// What the Verify path does with a verified payload: read it strictly, then the
/// registered claims' types.
fn parse_claims(payload_b64: &str) -> Result<Claims, Rejection> {
    Claims::new(decode_payload(payload_b64)?)
}

fn claims_of(json: &str) -> Result<RegisteredClaims, Rejection> {
    parse_claims(&b64(json)).map(|c| registered(&c))
}

fn claims_reason(json: &str) -> Reason {
    match claims_of(json) {
        Ok(_) => Reason::Ok,
        Err(r) => r.reason,
    }
}

/// The `iss` the several-issuer path reads before the signature, if the payload is a
/// strict object with a string `iss`.
fn peek_issuer(payload_b64: &str) -> Option<String> {
    let payload = decode_payload(payload_b64).ok()?;
    payload.get("iss")?.as_str().map(str::to_owned)
}

/// Nested arrays `levels` deep inside a member of the top-level object, so the whole
/// document is `levels + 1` deep.
fn nested(levels: usize) -> String {
    format!(
        r#"{{"iss":"i","x":{}{}}}"#,
        "[".repeat(levels),
        "]".repeat(levels)
    )
}

#[test]
fn reads_a_well_formed_header() {
    let t = token(r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#, "{}", "AAAA");
    let h = read(&t, 8192).unwrap();
    assert_eq!(h.alg, Algorithm::ES256);
    assert_eq!(h.kid.as_deref(), Some("k1"));
    let s = split(&t, 8192).unwrap();
    assert_eq!(format!("{}.{}.{}", s.header, s.payload, s.signature), t);
}

#[test]
fn alg_none_in_any_case_is_its_own_reason() {
    for alg in ["none", "None", "NONE", "nOnE"] {
        let t = token(&format!(r#"{{"alg":"{alg}"}}"#), "{}", "AAAA");
        assert_eq!(reason(&t), Reason::AlgorithmNone, "{alg}");
        let unsigned = token(&format!(r#"{{"alg":"{alg}"}}"#), "{}", "");
        assert_eq!(reason(&unsigned), Reason::AlgorithmNone, "{alg}, unsigned");
    }
}

#[test]
fn structural_rejections() {
    assert_eq!(reason(""), Reason::Malformed);
    assert_eq!(reason("a.b"), Reason::Malformed);
    assert_eq!(reason("a.b.c.d"), Reason::Malformed);
    assert_eq!(reason("a.b.c.d.e"), Reason::EncryptedOrNested);
    assert_eq!(
        reason(&format!("{}..AAAA", b64(r#"{"alg":"HS256"}"#))),
        Reason::Malformed
    );
    assert_eq!(reason("!!!.e30.AAAA"), Reason::Malformed);
    assert_eq!(reason(&token("not json", "{}", "AAAA")), Reason::Malformed);
    assert_eq!(
        reason(&token(r#"{"kid":"x"}"#, "{}", "AAAA")),
        Reason::Malformed
    );
    // An empty signature passes the header: the Verify path answers BAD_SIGNATURE.
    let unsigned = format!("{}.{}.", b64(r#"{"alg":"HS256"}"#), b64("{}"));
    assert_eq!(split(&unsigned, 8192).unwrap().signature, "");
    assert!(read(&unsigned, 8192).is_ok());
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
    assert_eq!(read(&t, 8192).unwrap().kid.as_deref(), Some("k"));
    // A registered member jsonwebtoken cannot read makes the header unreadable.
    for bad in [
        r#"{"alg":"RS256","jwk":"not a JWK"}"#,
        r#"{"alg":"RS256","x5c":"not an array"}"#,
        r#"{"alg":"RS256","typ":1}"#,
    ] {
        assert_eq!(header_reason(bad), Reason::Malformed, "{bad}");
    }
}

#[test]
fn size_bound_is_checked_before_anything_else() {
    let t = "x".repeat(9000);
    assert_eq!(reason(&t), Reason::TokenTooLarge);
    assert_eq!(reason(&".".repeat(9000)), Reason::TokenTooLarge);
}

#[test]
fn claims_types_are_checked() {
    let ok = parse_claims(&b64(
        r#"{"iss":"i","aud":["a","b"],"exp":1.9e9,"iat":100,"x":{"deep":[1,2]}}"#,
    ))
    .unwrap();
    let ok = registered(&ok);
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
fn peeking_reads_only_iss() {
    assert_eq!(
        peek_issuer(&b64(r#"{"iss":"https://a","exp":"x"}"#)).as_deref(),
        Some("https://a")
    );
    assert_eq!(peek_issuer(&b64("garbage")), None);
}

#[test]
fn a_payload_number_serde_json_refuses_is_malformed() {
    // serde_json refuses this spelling of f64::MAX: the payload cannot become the
    // `claims` Struct, so the token must not be accepted without it.
    let r = parse_claims(&b64(r#"{"iss":"i","x":1.7976931348623158e308}"#)).unwrap_err();
    assert_eq!(r.reason, Reason::Malformed, "{r}");
}

#[test]
fn duplicates_are_refused_for_every_member_compared_decoded() {
    for bad in [
        r#"{"sub":"a","sub":"b"}"#,
        r#"{"iss":"a","\u0069ss":"a"}"#,
        r#"{"\u0069ss":"a","iss":"a"}"#,
        r#"{"custom":1,"custom":1}"#,
        r#"{"a":1,"\u0061":1}"#,
        r#"{"é":1,"\u00e9":1}"#,
        r#"{"😀":1,"\ud83d\ude00":1}"#,
    ] {
        assert_eq!(claims_reason(bad), Reason::Malformed, "{bad}");
        assert_eq!(peek_issuer(&b64(bad)), None, "{bad}");
    }
    assert_eq!(
        claims_reason(r#"{"abcdefgX":1,"abcdefgY":1,"abcdefg":1,"abcdefgXY":1}"#),
        Reason::Ok
    );
    assert_eq!(
        claims_reason(r#"{"abcdefgX":1,"abcdefgY":1,"abcdefgX":1}"#),
        Reason::Malformed
    );
    // Nested objects are other objects: the same name there is no duplicate.
    assert_eq!(claims_reason(r#"{"a":{"a":1},"b":{"a":2}}"#), Reason::Ok);
    assert_eq!(claims_reason(r#"{"a":1,"A":1,"a ":1}"#), Reason::Ok);

    // Registered header members: jsonwebtoken refuses a repeated one.
    for bad in [
        r#"{"alg":"HS256","alg":"HS256"}"#,
        r#"{"alg":"HS256","\u0061lg":"HS256"}"#,
        r#"{"alg":"HS256","typ":"JWT","typ":"JWT"}"#,
        r#"{"alg":"HS256","x5u":"a","x5\u0075":"b"}"#,
        r#"{"alg":"HS256","kid":"a","kid":"b"}"#,
        r#"{"alg":"HS256","crit":["x"],"crit":["y"]}"#,
    ] {
        assert_eq!(header_reason(bad), Reason::Malformed, "{bad}");
    }
}

#[test]
fn duplicates_are_found_among_many_members() {
    let members: Vec<String> = (0..40).map(|i| format!(r#""m{i}":{i}"#)).collect();
    let ok = format!("{{{}}}", members.join(","));
    assert_eq!(claims_reason(&ok), Reason::Ok);
    for dup in ["m0", "m15", "m16", "m39"] {
        let bad = format!(r#"{{{},"{dup}":0}}"#, members.join(","));
        assert_eq!(claims_reason(&bad), Reason::Malformed, "{dup}");
    }
    let bad = format!(r#"{{{},"\u006d3":0}}"#, members.join(","));
    assert_eq!(claims_reason(&bad), Reason::Malformed);
}

#[test]
fn payload_nesting_is_limited_to_32_levels() {
    assert_eq!(claims_reason(&nested(31)), Reason::Ok);
    assert_eq!(claims_reason(&nested(32)), Reason::Malformed);
    let objects = |n: usize| format!("{{{}\"a\":1{}}}", r#""a":{"#.repeat(n), "}".repeat(n));
    assert_eq!(claims_reason(&objects(31)), Reason::Ok);
    assert_eq!(claims_reason(&objects(32)), Reason::Malformed);
    assert_eq!(peek_issuer(&b64(&nested(31))).as_deref(), Some("i"));
    assert_eq!(peek_issuer(&b64(&nested(32))), None);
    // In `aud` as well.
    let aud = |n: usize| format!(r#"{{"aud":[{}{}]}}"#, "[".repeat(n), "]".repeat(n));
    assert_eq!(claims_reason(&aud(30)), Reason::InvalidClaim);
    assert_eq!(claims_reason(&aud(31)), Reason::Malformed);
    // Far past the limit, nothing recurses.
    assert_eq!(claims_reason(&nested(100_000)), Reason::Malformed);
}

#[test]
fn header_nesting_is_bounded() {
    // jsonwebtoken's serde_json refuses more than 128 levels; the header's unregistered
    // members are never read, so that bound is the one that applies to them.
    let header = |n: usize| {
        format!(
            r#"{{"alg":"HS256","x":{}{}}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    assert_eq!(header_reason(&header(31)), Reason::Ok);
    assert_eq!(header_reason(&header(200)), Reason::Malformed);
    assert_eq!(header_reason(&header(2000)), Reason::Malformed);
    // `crit` is read when jsonwebtoken cannot: within 32 levels it is refused as `crit`.
    let crit = |n: usize| {
        format!(
            r#"{{"alg":"HS256","crit":[{}{}]}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    assert_eq!(header_reason(&crit(30)), Reason::UnsupportedCriticalHeader);
    assert_eq!(header_reason(&crit(31)), Reason::Malformed);
}

#[test]
fn only_an_object_is_accepted() {
    for bad in [
        "[]", "\"x\"", "null", "1", "true", "", " ", "{", "}", "{}}", "{,}",
    ] {
        assert_eq!(claims_reason(bad), Reason::Malformed, "{bad:?}");
        assert_eq!(header_reason(bad), Reason::Malformed, "{bad:?}");
    }
    assert_eq!(claims_reason(" \t\r\n{ \t\r\n} \t\r\n"), Reason::Ok);
}

#[test]
fn only_whitespace_may_follow_the_object() {
    for bad in [
        "{} x", "{}{}", "{}\u{c}", "{}\u{0}", "{}\u{a0}", "{} ,", "{}]",
    ] {
        assert_eq!(claims_reason(bad), Reason::Malformed, "{bad:?}");
        assert_eq!(peek_issuer(&b64(bad)), None, "{bad:?}");
    }
    assert_eq!(
        header_reason("{\"alg\":\"HS256\"} x"),
        Reason::Malformed,
        "header"
    );
    assert_eq!(claims_reason("{}\n"), Reason::Ok);
    // Nor may anything but JSON whitespace precede it (a form feed, a BOM).
    assert_eq!(claims_reason("\u{c}{}"), Reason::Malformed);
    assert_eq!(claims_reason("\u{feff}{}"), Reason::Malformed);
}

#[test]
fn syntax_errors_are_malformed() {
    for bad in [
        r#"{"a":1,}"#,
        r#"{"a":1 "b":2}"#,
        r#"{"a" 1}"#,
        r#"{"a":}"#,
        r#"{a:1}"#,
        r#"{'a':1}"#,
        r#"{"a":[1,]}"#,
        r#"{"a":[,1]}"#,
        r#"{"a":[1 2]}"#,
        r#"{"a":{"b"}}"#,
        r#"{"a":{"b":1,}}"#,
        r#"{"a":{1:2}}"#,
        r#"{"a":tru}"#,
        r#"{"a":True}"#,
        r#"{"a":nul}"#,
        r#"{"a":falsey}"#,
        r#"{"a":undefined}"#,
        r#"{"a":"x}"#,
        r#"{"a":1}/* c */"#,
        r#"{"a":1//c
}"#,
    ] {
        assert_eq!(claims_reason(bad), Reason::Malformed, "{bad}");
        assert_eq!(peek_issuer(&b64(bad)), None, "{bad}");
    }
    assert_eq!(
        claims_reason(r#"{"a":[true,false,null,{},[],"",0,{"b":[{}]}]}"#),
        Reason::Ok
    );
}

#[test]
fn invalid_escapes_are_malformed() {
    for bad in [
        r#"{"a":"\x41"}"#,
        r#"{"a":"\'"}"#,
        r#"{"a":"\U0041"}"#,
        r#"{"a":"\u004"}"#,
        r#"{"a":"\u00G1"}"#,
        r#"{"a":"\u"}"#,
        r#"{"a":"\"}"#,
        r#"{"\q":1}"#,
        r#"{"sub":"\a"}"#,
    ] {
        assert_eq!(claims_reason(bad), Reason::Malformed, "{bad}");
    }
    let c = claims_of(r#"{"sub":"q\"b\\s\/b\bf\fn\nr\rt\t\u00e9\u00E9\ud83d\ude00é"}"#).unwrap();
    assert_eq!(
        c.sub.as_deref(),
        Some("q\"b\\s/b\u{8}f\u{c}n\nr\rt\té\u{e9}😀é")
    );
}

#[test]
fn raw_control_characters_in_strings_are_malformed() {
    for c in (0u8..0x20).map(char::from) {
        assert_eq!(
            claims_reason(&format!("{{\"a\":\"x{c}y\"}}")),
            Reason::Malformed,
            "{c:?} in a value"
        );
        assert_eq!(
            claims_reason(&format!("{{\"x{c}\":1}}")),
            Reason::Malformed,
            "{c:?} in a name"
        );
    }
    // DEL is not a control character for JSON.
    assert_eq!(
        claims_of("{\"sub\":\"\u{7f}\"}").unwrap().sub.as_deref(),
        Some("\u{7f}")
    );
}

#[test]
fn lone_surrogate_escapes_are_malformed_everywhere() {
    for s in [
        r"\ud800",
        r"\uDBFF",
        r"\udc00",
        r"\uDFFF",
        r"\ud800\u0041",
        r"\ud800\ud800",
        r"\ud800x",
        r"\ud800\n",
        r"\ude00\ud83d",
    ] {
        for doc in [
            format!(r#"{{"sub":"{s}"}}"#),
            format!(r#"{{"note":"{s}"}}"#),
            format!(r#"{{"{s}":1}}"#),
            format!(r#"{{"x":{{"{s}":[1]}}}}"#),
        ] {
            assert_eq!(claims_reason(&doc), Reason::Malformed, "{doc}");
        }
        assert_eq!(
            header_reason(&format!(r#"{{"alg":"HS256","x":"{s}"}}"#)),
            Reason::Malformed,
            "{s} in the header"
        );
    }
    assert_eq!(
        claims_of(r#"{"sub":"\uD83D\uDE00"}"#)
            .unwrap()
            .sub
            .as_deref(),
        Some("😀")
    );
}

#[test]
fn numbers_follow_the_json_grammar() {
    for bad in [
        "01",
        "-01",
        "00",
        "+1",
        ".5",
        "1.",
        "-",
        "--1",
        "1e",
        "1e+",
        "1E-",
        "1.e5",
        "0x10",
        "NaN",
        "Infinity",
        "-Infinity",
        "1_000",
        "1.5.5",
        "1e5e5",
        "- 1",
        "\u{660}",
    ] {
        let doc = format!(r#"{{"x":{bad}}}"#);
        assert_eq!(claims_reason(&doc), Reason::Malformed, "{bad}");
        let doc = format!(r#"{{"exp":{bad}}}"#);
        assert_eq!(claims_reason(&doc), Reason::Malformed, "exp {bad}");
    }
    for good in [
        "0",
        "-0",
        "1",
        "-1",
        "0.5",
        "-0.5",
        "1e5",
        "1E5",
        "1e+5",
        "1e-5",
        "0e0",
        "1.25E+02",
        "123456789012345678901234567890",
        "1e308",
        "1e-400",
    ] {
        let doc = format!(r#"{{"x":{good},"y":[{good}]}}"#);
        assert_eq!(claims_reason(&doc), Reason::Ok, "{good}");
    }
    // Beyond f64's range: refused by serde_json, anywhere.
    for bad in ["1e309", "-1e309", "1e400", &"9".repeat(400)] {
        assert_eq!(
            claims_reason(&format!(r#"{{"x":{bad}}}"#)),
            Reason::Malformed,
            "{bad}"
        );
        assert_eq!(
            claims_reason(&format!(r#"{{"exp":{bad}}}"#)),
            Reason::Malformed,
            "exp {bad}"
        );
    }
}

#[test]
fn numeric_dates() {
    let exp = |n: &str| claims_of(&format!(r#"{{"exp":{n}}}"#)).map(|c| c.exp.unwrap());
    assert_eq!(exp("1900000000"), Ok(1_900_000_000));
    assert_eq!(exp("-5"), Ok(-5));
    assert_eq!(exp("-0"), Ok(0));
    assert_eq!(exp("9223372036854775807"), Ok(i64::MAX));
    assert_eq!(exp("-9223372036854775808"), Ok(i64::MIN));
    assert_eq!(exp("1.9e9"), Ok(1_900_000_000));
    assert_eq!(exp("1900000000.999"), Ok(1_900_000_000));
    assert_eq!(exp("-0.5"), Ok(-1));
    assert_eq!(exp("1e0"), Ok(1));
    assert_eq!(exp("9e15"), Ok(9_000_000_000_000_000));
    assert_eq!(exp("-9e15"), Ok(-9_000_000_000_000_000));
    for out_of_range in [
        "9223372036854775808",
        "-9223372036854775809",
        "18446744073709551616",
        "9.1e15",
        "-9.1e15",
        "1e300",
    ] {
        assert_eq!(
            exp(out_of_range).unwrap_err().reason,
            Reason::InvalidClaim,
            "{out_of_range}"
        );
    }
    let c = claims_of(r#"{"nbf":1.5,"iat":-2.5e0}"#).unwrap();
    assert_eq!((c.nbf, c.iat), (Some(1), Some(-3)));
}

#[test]
fn registered_claims_of_the_wrong_type_are_invalid_claims() {
    for claim in ["iss", "sub", "jti", "sid", "aud", "exp", "nbf", "iat"] {
        let mut wrong = vec!["null", "true", "false", "{}", r#"{"a":"b"}"#, "[[]]"];
        wrong.push(if matches!(claim, "exp" | "nbf" | "iat") {
            r#""1""#
        } else {
            "1"
        });
        if claim != "aud" {
            wrong.push(r#"["a"]"#);
        }
        for value in wrong {
            let doc = format!(r#"{{"{claim}":{value}}}"#);
            assert_eq!(claims_reason(&doc), Reason::InvalidClaim, "{doc}");
        }
    }
    // Only `iss` matters to the several-issuer path.
    assert_eq!(peek_issuer(&b64(r#"{"iss":null}"#)), None);
    assert_eq!(
        peek_issuer(&b64(r#"{"exp":null,"aud":1,"iss":"i"}"#)).as_deref(),
        Some("i")
    );
}

#[test]
fn audiences() {
    let aud = |json: &str| claims_of(json).map(|c| c.aud);
    assert_eq!(aud(r#"{"aud":"a"}"#), Ok(vec!["a".to_owned()]));
    assert_eq!(aud(r#"{"aud":[]}"#), Ok(vec![]));
    assert_eq!(
        aud(r#"{"aud":[ "a" , "\u0062" ]}"#),
        Ok(vec!["a".to_owned(), "b".to_owned()])
    );
    let list = |n: usize| {
        let v: Vec<String> = (0..n).map(|i| format!("\"a{i}\"")).collect();
        format!(r#"{{"aud":[{}]}}"#, v.join(","))
    };
    assert_eq!(aud(&list(64)).unwrap().len(), 64);
    assert_eq!(aud(&list(65)).unwrap_err().reason, Reason::InvalidClaim);
    for bad in [
        r#"{"aud":["a",1]}"#,
        r#"{"aud":["a",null]}"#,
        r#"{"aud":[["a"]]}"#,
    ] {
        assert_eq!(aud(bad).unwrap_err().reason, Reason::InvalidClaim, "{bad}");
    }
    for bad in [
        r#"{"aud":["a",]}"#,
        r#"{"aud":["a""b"]}"#,
        r#"{"aud":["a"}"#,
    ] {
        assert_eq!(aud(bad).unwrap_err().reason, Reason::Malformed, "{bad}");
    }
}

#[test]
fn a_syntax_fault_wins_over_a_wrong_claim_type() {
    assert_eq!(claims_reason(r#"{"exp":"x","a":}"#), Reason::Malformed);
    assert_eq!(claims_reason(r#"{"exp":"x","exp":1}"#), Reason::Malformed);
    assert_eq!(claims_reason(r#"{"exp":"x"} x"#), Reason::Malformed);
    assert_eq!(claims_reason(r#"{"aud":[1,2,"#), Reason::Malformed);
    assert_eq!(claims_reason(r#"{"exp":"x","a":1}"#), Reason::InvalidClaim);
}

#[test]
fn header_member_types() {
    for bad in [
        r#"{"alg":null}"#,
        r#"{"alg":"HS256","kid":["k"]}"#,
        r#"{"alg":"HS256","kid":{}}"#,
        r#"{"alg":"HS256","cty":1}"#,
        r#"{"alg":"HS256","crit":"b64"}"#,
        r#"{"alg":"HS256","crit":{}}"#,
        r#"{"alg":"HS256","crit":["a",]}"#,
    ] {
        assert_eq!(header_reason(bad), Reason::Malformed, "{bad}");
    }
    for present in ["false", "\"\"", "\"DEF\"", "{}", "[]"] {
        for member in ["enc", "zip"] {
            let h = format!(r#"{{"alg":"HS256","{member}":{present}}}"#);
            assert_eq!(header_reason(&h), Reason::EncryptedOrNested, "{h}");
        }
    }
    for present in ["null", "false", "\"\"", "{}", "[]"] {
        let h = format!(r#"{{"alg":"HS256","b64":{present}}}"#);
        assert_eq!(header_reason(&h), Reason::UnsupportedCriticalHeader, "{h}");
    }
    // jsonwebtoken reads a registered member set to `null` as absent.
    for absent in ["kid", "cty", "crit", "enc", "zip"] {
        let h = format!(r#"{{"alg":"HS256","{absent}":null}}"#);
        assert_eq!(header_reason(&h), Reason::Ok, "{h}");
    }
    for crit in ["[]", r#"["b64"]"#, r#"[1,{"a":[2]},null]"#] {
        let h = format!(r#"{{"alg":"HS256","crit":{crit}}}"#);
        assert_eq!(header_reason(&h), Reason::UnsupportedCriticalHeader, "{h}");
    }
    // `none` is checked before the members that would reject the token otherwise.
    assert_eq!(
        header_reason(r#"{"alg":"NoNe","enc":"x","crit":[],"b64":true}"#),
        Reason::AlgorithmNone
    );
    // Escaped member names and values are decoded before they are read.
    let t = token(
        r#"{"\u0061lg":"HS\u0032\u00356","kid":"k\"1"}"#,
        "{}",
        "AAAA",
    );
    let h = read(&t, 8192).unwrap();
    assert_eq!(h.alg, Algorithm::HS256);
    assert_eq!(h.kid.as_deref(), Some("k\"1"));
    assert_eq!(
        header_reason(r#"{"alg":"HS256","cty":"\u006aWT"}"#),
        Reason::EncryptedOrNested
    );
}

#[test]
fn long_headers_and_the_header_bound() {
    let kid = "k".repeat(3000);
    let t = token(&format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#), "{}", "AAAA");
    assert_eq!(
        read(&t, 1 << 20).unwrap().kid.as_deref(),
        Some(kid.as_str())
    );
    let pad = "p".repeat(MAX_HEADER_BYTES);
    let t = token(&format!(r#"{{"alg":"HS256","x":"{pad}"}}"#), "{}", "AAAA");
    let r = read(&t, 1 << 20).unwrap_err();
    assert_eq!(r.reason, Reason::Malformed);
    assert!(r.detail.contains("limit"), "{}", r.detail);
    // At the bound exactly: read.
    let fill = MAX_HEADER_BYTES - r#"{"alg":"HS256","x":""}"#.len();
    let t = token(
        &format!(r#"{{"alg":"HS256","x":"{}"}}"#, "p".repeat(fill)),
        "{}",
        "AAAA",
    );
    assert!(read(&t, 1 << 20).is_ok());
}

#[test]
fn details_say_where_and_never_echo_long_values() {
    let long = "n".repeat(200);
    let r = claims_of(&format!(r#"{{"{long}":1,"{long}":2}}"#)).unwrap_err();
    assert!(r.detail.contains("duplicate"), "{}", r.detail);
    assert!(r.detail.contains("column"), "{}", r.detail);
    assert!(r.detail.len() < 100, "{}", r.detail);
    let r = claims_of(&format!(r#"{{"sub":"{long}","a":1.}}"#)).unwrap_err();
    assert!(r.detail.contains("invalid number"), "{}", r.detail);
    assert!(!r.detail.contains(&long[..20]), "{}", r.detail);
    let r = claims_of(&format!(r#"{{"exp":"{long}"}}"#)).unwrap_err();
    assert_eq!(r.reason, Reason::InvalidClaim);
    assert!(r.detail.contains("`exp`"), "{}", r.detail);
    assert!(!r.detail.contains(&long[..20]), "{}", r.detail);
    // A payload that is a long string: not quoted back.
    let r = claims_of(&format!(r#""{long}""#)).unwrap_err();
    assert!(r.detail.contains("not a JSON object"), "{}", r.detail);
    assert!(!r.detail.contains(&long[..20]), "{}", r.detail);
    // Neither is an unsupported algorithm beyond a few characters, nor a header
    // member jsonwebtoken cannot read.
    let r = read(
        &token(&format!(r#"{{"alg":"{long}"}}"#), "{}", "AAAA"),
        8192,
    )
    .unwrap_err();
    assert_eq!(r.reason, Reason::AlgorithmNotAllowed);
    assert!(!r.detail.contains(&long[..20]), "{}", r.detail);
    let h = format!(r#"{{"alg":"HS256","jwk":"{long}"}}"#);
    let r = read(&token(&h, "{}", "AAAA"), 8192).unwrap_err();
    assert_eq!(r.reason, Reason::Malformed);
    assert!(!r.detail.contains(&long[..20]), "{}", r.detail);
}

#[test]
fn claim_strings_with_and_without_escapes_are_read_back() {
    let json = r#"{"iss":"i\u0031","sub":"plain","aud":["a","b\"c","d"],"jti":"\u00e9t\u00e9","sid":"s","x":"\n"}"#;
    let c = parse_claims(&b64(json)).unwrap();
    // The payload text is the same object (serialised again).
    let again: serde_json::Value = serde_json::from_slice(c.payload()).unwrap();
    let original: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(again, original);
    assert_eq!(c.object().len(), 6);
    assert_eq!(c.iss(), Some("i1"));
    assert_eq!(c.sub(), Some("plain"));
    assert_eq!(c.jti(), Some("été"));
    assert_eq!(c.sid(), Some("s"));
    assert_eq!(c.audiences().collect::<Vec<_>>(), ["a", "b\"c", "d"]);
    assert_eq!(peek_issuer(&b64(json)).as_deref(), Some("i1"));
    let one = |aud: &str| {
        let c = parse_claims(&b64(&format!(r#"{{"aud":{aud}}}"#))).unwrap();
        c.audiences().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(one(r#""x""#), ["x"]);
    assert_eq!(one(r#"["x"]"#), ["x"]);
    assert_eq!(one(r#"["x","y"]"#), ["x", "y"]);
    assert_eq!(one("[]"), Vec::<String>::new());
    let none = parse_claims(&b64("{}")).unwrap();
    assert_eq!(none.audiences().len(), 0);
    assert_eq!((none.iss(), none.exp()), (None, None));
}

#[test]
fn payloads_that_are_not_base64url_are_malformed() {
    for bad in ["e30=", "e", "e30!", "e31", "e30+"] {
        assert_eq!(
            parse_claims(bad).unwrap_err().reason,
            Reason::Malformed,
            "{bad}"
        );
    }
    assert!(parse_claims("e30").is_ok());
}
