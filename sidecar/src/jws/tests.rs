use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::*;
use crate::testing::Rng;

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

fn token(header: &str, payload: &str, sig: &str) -> String {
    format!("{}.{}.{}", b64(header), b64(payload), sig)
}

fn reason(t: &str) -> Reason {
    parse(t, 8192, &mut HeaderBuf::new()).unwrap_err().reason
}

#[test]
fn parses_a_well_formed_header() {
    let t = token(r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#, "{}", "AAAA");
    let mut buf = HeaderBuf::new();
    let jws = parse(&t, 8192, &mut buf).unwrap();
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
    let mut buf = HeaderBuf::new();
    let jws = parse(&t, 8192, &mut buf).unwrap();
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
fn peek_issuer_reads_only_iss() {
    assert_eq!(
        peek_issuer(&b64(r#"{"iss":"https://a","exp":"x"}"#)).as_deref(),
        Some("https://a")
    );
    assert_eq!(peek_issuer(&b64("garbage")), None);
}

// --- The JSON scanner: one test per rejection, each with an accepted near-miss. ---

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

fn claims_of(json: &str) -> Result<RegisteredClaims, Rejection> {
    parse_claims(&b64(json)).map(|c| registered(&c))
}

fn claims_reason(json: &str) -> Reason {
    match claims_of(json) {
        Ok(_) => Reason::Ok,
        Err(r) => r.reason,
    }
}

fn header_reason(header: &str) -> Reason {
    match parse(&token(header, "{}", "AAAA"), 1 << 20, &mut HeaderBuf::new()) {
        Ok(_) => Reason::Ok,
        Err(r) => r.reason,
    }
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
    // Long names that share their first seven bytes and their length differ.
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

    for bad in [
        r#"{"alg":"HS256","alg":"HS256"}"#,
        r#"{"alg":"HS256","\u0061lg":"HS256"}"#,
        r#"{"alg":"HS256","typ":"JWT","typ":"JWT"}"#,
        r#"{"alg":"HS256","x5u":"a","x5\u0075":"b"}"#,
    ] {
        assert_eq!(header_reason(bad), Reason::Malformed, "{bad}");
    }
}

#[test]
fn duplicates_are_found_past_the_inline_names() {
    let members: Vec<String> = (0..40).map(|i| format!(r#""m{i}":{i}"#)).collect();
    let ok = format!("{{{}}}", members.join(","));
    assert_eq!(claims_reason(&ok), Reason::Ok);
    for dup in ["m0", "m15", "m16", "m39"] {
        let bad = format!(r#"{{{},"{dup}":0}}"#, members.join(","));
        assert_eq!(claims_reason(&bad), Reason::Malformed, "{dup}");
    }
    // A duplicate of a name that was inline when the set switched to hashing.
    let bad = format!(r#"{{{},"\u006d3":0}}"#, members.join(","));
    assert_eq!(claims_reason(&bad), Reason::Malformed);
    // Names with escapes are kept apart (decoded) until they too overflow.
    let escaped: Vec<String> = (0..40).map(|i| format!(r#""\u006d{i}":{i}"#)).collect();
    let ok = format!("{{{}}}", escaped.join(","));
    assert_eq!(claims_reason(&ok), Reason::Ok);
    for dup in [r#""m0""#, r#""m39""#, r#""\u006d20""#] {
        let bad = format!(r#"{{{},{dup}:0}}"#, escaped.join(","));
        assert_eq!(claims_reason(&bad), Reason::Malformed, "{dup}");
    }
    let mixed: Vec<&String> = members[..10].iter().chain(&escaped[20..30]).collect();
    let mixed: Vec<&str> = mixed.into_iter().map(String::as_str).collect();
    assert_eq!(
        claims_reason(&format!("{{{}}}", mixed.join(","))),
        Reason::Ok
    );
    let bad = format!(r#"{{{},"m5":0,"m25":0}}"#, mixed.join(","));
    assert_eq!(claims_reason(&bad), Reason::Malformed);
}

#[test]
fn nesting_is_limited_to_32_levels() {
    assert_eq!(claims_reason(&nested(31)), Reason::Ok);
    assert_eq!(claims_reason(&nested(32)), Reason::Malformed);
    let objects = |n: usize| format!("{{{}\"a\":1{}}}", r#""a":{"#.repeat(n), "}".repeat(n));
    assert_eq!(claims_reason(&objects(31)), Reason::Ok);
    assert_eq!(claims_reason(&objects(32)), Reason::Malformed);
    assert_eq!(peek_issuer(&b64(&nested(31))).as_deref(), Some("i"));
    assert_eq!(peek_issuer(&b64(&nested(32))), None);
    // In `aud` and `crit` as well.
    let aud = |n: usize| format!(r#"{{"aud":[{}{}]}}"#, "[".repeat(n), "]".repeat(n));
    assert_eq!(claims_reason(&aud(30)), Reason::InvalidClaim);
    assert_eq!(claims_reason(&aud(31)), Reason::Malformed);
    let crit = |n: usize| {
        format!(
            r#"{{"alg":"HS256","crit":[{}{}]}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    assert_eq!(header_reason(&crit(30)), Reason::UnsupportedCriticalHeader);
    assert_eq!(header_reason(&crit(31)), Reason::Malformed);
    let header = |n: usize| {
        format!(
            r#"{{"alg":"HS256","x":{}{}}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    assert_eq!(header_reason(&header(31)), Reason::Ok);
    assert_eq!(header_reason(&header(32)), Reason::Malformed);
    // Far past the limit, nothing recurses.
    assert_eq!(claims_reason(&nested(100_000)), Reason::Malformed);
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
        assert_eq!(
            claims_reason(&format!("{{\"sub\":\"x{c}\"}}")),
            Reason::Malformed,
            "{c:?} in `sub`"
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
    // Beyond f64's range: refused like serde_json refuses it, anywhere.
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
    // Only `iss` matters to peek_issuer.
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
        r#"{"alg":"HS256","kid":null}"#,
        r#"{"alg":"HS256","kid":["k"]}"#,
        r#"{"alg":"HS256","cty":1}"#,
        r#"{"alg":"HS256","crit":"b64"}"#,
        r#"{"alg":"HS256","crit":null}"#,
        r#"{"alg":"HS256","crit":{}}"#,
        r#"{"alg":"HS256","crit":["a",]}"#,
    ] {
        assert_eq!(header_reason(bad), Reason::Malformed, "{bad}");
    }
    for present in ["null", "false", "\"\"", "{}", "[]"] {
        for member in ["enc", "zip"] {
            let h = format!(r#"{{"alg":"HS256","{member}":{present}}}"#);
            assert_eq!(header_reason(&h), Reason::EncryptedOrNested, "{h}");
        }
        let h = format!(r#"{{"alg":"HS256","b64":{present}}}"#);
        assert_eq!(header_reason(&h), Reason::UnsupportedCriticalHeader, "{h}");
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
    let mut buf = HeaderBuf::new();
    let jws = parse(&t, 8192, &mut buf).unwrap();
    assert_eq!(jws.alg, Algorithm::HS256);
    assert_eq!(jws.kid.as_deref(), Some("k\"1"));
    assert_eq!(
        header_reason(r#"{"alg":"HS256","cty":"\u006aWT"}"#),
        Reason::EncryptedOrNested
    );
}

#[test]
fn headers_past_the_stack_buffer_and_over_the_bound() {
    let kid = "k".repeat(3000);
    let t = token(&format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#), "{}", "AAAA");
    assert_eq!(
        parse(&t, 1 << 20, &mut HeaderBuf::new())
            .unwrap()
            .kid
            .as_deref(),
        Some(kid.as_str())
    );
    let pad = "p".repeat(MAX_HEADER_BYTES);
    let t = token(&format!(r#"{{"alg":"HS256","x":"{pad}"}}"#), "{}", "AAAA");
    let r = parse(&t, 1 << 20, &mut HeaderBuf::new()).unwrap_err();
    assert_eq!(r.reason, Reason::Malformed);
    assert!(r.detail.contains("limit"), "{}", r.detail);
}

#[test]
fn details_say_where_and_never_echo_long_values() {
    let long = "n".repeat(200);
    let r = claims_of(&format!(r#"{{"{long}":1,"{long}":2}}"#)).unwrap_err();
    assert!(r.detail.contains("duplicate"), "{}", r.detail);
    assert!(r.detail.contains("byte"), "{}", r.detail);
    assert!(r.detail.len() < 100, "{}", r.detail);
    let r = claims_of(&format!(r#"{{"sub":"{long}","a":1.}}"#)).unwrap_err();
    assert!(r.detail.contains("invalid number at byte"), "{}", r.detail);
    assert!(!r.detail.contains(&long[..20]), "{}", r.detail);
    let r = claims_of(&format!(r#"{{"exp":"{long}"}}"#)).unwrap_err();
    assert_eq!(r.reason, Reason::InvalidClaim);
    assert!(r.detail.contains("`exp`"), "{}", r.detail);
    assert!(!r.detail.contains(&long[..20]), "{}", r.detail);
}

#[test]
fn the_kid_is_borrowed_from_the_header_buffer_unless_it_cannot_be() {
    let mut buf = HeaderBuf::new();
    let t = token(r#"{"alg":"HS256","kid":"k1"}"#, "{}", "AAAA");
    let jws = parse(&t, 8192, &mut buf).unwrap();
    assert!(
        matches!(jws.kid, Some(Cow::Borrowed("k1"))),
        "{:?}",
        jws.kid
    );
    let t = token(r#"{"alg":"HS256","kid":"k\u0031"}"#, "{}", "AAAA");
    let jws = parse(&t, 8192, &mut buf).unwrap();
    assert!(
        matches!(jws.kid, Some(Cow::Owned(ref k)) if k == "k1"),
        "{:?}",
        jws.kid
    );
    // Past the buffer the header is decoded on the heap, and the kid copied out of it.
    let long = "k".repeat(300);
    let t = token(
        &format!(r#"{{"alg":"HS256","kid":"{long}"}}"#),
        "{}",
        "AAAA",
    );
    let jws = parse(&t, 8192, &mut buf).unwrap();
    assert!(matches!(jws.kid, Some(Cow::Owned(ref k)) if *k == long));
}

#[test]
fn claim_strings_with_and_without_escapes_are_read_back() {
    let json = r#"{"iss":"i\u0031","sub":"plain","aud":["a","b\"c","d"],"jti":"\u00e9t\u00e9","sid":"s","x":"\n"}"#;
    let c = parse_claims(&b64(json)).unwrap();
    // The payload is returned as it was, whatever was decoded after it.
    assert_eq!(c.payload(), json.as_bytes());
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
fn the_payload_is_returned_at_its_exact_size() {
    for json in ["{}", r#"{"a":1}"#, r#"{"ab":12}"#, r#"{"abc":123}"#] {
        // A `Box<str>` inside: no spare capacity by construction.
        let claims = parse_claims(&b64(json)).unwrap();
        assert_eq!(claims.payload(), json.as_bytes());
    }
    for bad in ["e30=", "e", "e30!", "e31"] {
        assert_eq!(
            parse_claims(bad).unwrap_err().reason,
            Reason::Malformed,
            "{bad}"
        );
    }
}

// --- Differential test against serde_json. ---

const REGISTERED: [&str; 8] = ["iss", "sub", "jti", "sid", "aud", "exp", "nbf", "iat"];

fn gen_ws(r: &mut Rng, out: &mut String) {
    if r.chance(20) {
        for _ in 0..=r.below(2) {
            out.push_str(r.pick(&[" ", "\t", "\n", "\r"]));
        }
    }
}

fn gen_string(r: &mut Rng, out: &mut String) {
    out.push('"');
    for _ in 0..r.below(8) {
        match r.below(12) {
            0 => out.push_str(r.pick(&[r#"\""#, r"\\", r"\/", r"\b", r"\f", r"\n", r"\r", r"\t"])),
            1 => out.push_str(r.pick(&[r"\u0041", r"\u00e9", r"\u20AC", r"\u0000", r"\u001f"])),
            2 => out.push_str(r.pick(&[r"\ud83d\ude00", r"\uD800\uDC00", r"\udbff\udfff"])),
            // Lone surrogates: refused by both sides (serde_json decodes every
            // string of a `Value`, and refuses them then).
            3 if r.chance(10) => out.push_str(r.pick(&[r"\ud800", r"\udc00", r"\ud800\u0041"])),
            4 => out.push_str(r.pick(&["é", "€", "😀", "\u{7f}"])),
            _ => out.push(char::from(b'a' + u8::try_from(r.below(26)).expect("small"))),
        }
    }
    out.push('"');
}

/// A member name; returns the registered claim it spells, if any.
fn gen_name(r: &mut Rng, out: &mut String) -> Option<&'static str> {
    match r.below(10) {
        0..=2 => {
            let name = r.pick(&REGISTERED);
            out.push('"');
            if r.chance(15) {
                // The first letter escaped: the same name, decoded.
                out.push_str(&format!(r"\u{:04x}", name.as_bytes()[0]));
                out.push_str(&name[1..]);
            } else {
                out.push_str(name);
            }
            out.push('"');
            return Some(name);
        }
        3 => out.push_str(r.pick(&[r#""a""#, r#""\u0061""#, r#""c d""#, r#""""#])),
        _ => gen_string(r, out),
    }
    None
}

/// A value of the registered claim's type, mostly; now and then any value.
fn gen_claim_value(r: &mut Rng, claim: &str, out: &mut String) {
    if r.chance(15) {
        return gen_value(r, 1, 0, out);
    }
    gen_ws(r, out);
    match claim {
        "exp" | "nbf" | "iat" => gen_number(r, out),
        "aud" if r.chance(50) => {
            out.push('[');
            for i in 0..r.below(4) {
                if i > 0 {
                    out.push(',');
                }
                gen_ws(r, out);
                gen_string(r, out);
            }
            out.push(']');
        }
        _ => gen_string(r, out),
    }
    gen_ws(r, out);
}

fn gen_number(r: &mut Rng, out: &mut String) {
    if r.chance(50) {
        let n = r.next() % 3_000_000_000;
        out.push_str(&format!("{}{n}", if r.chance(20) { "-" } else { "" }));
        return;
    }
    out.push_str(r.pick(&["", "-"]));
    out.push_str(r.pick(&[
        "0",
        "1",
        "17",
        "1900000000",
        "9007199254740993",
        "99999999999999999999",
    ]));
    if r.chance(40) {
        out.push_str(r.pick(&[".5", ".25", ".0", ".999"]));
    }
    if r.chance(30) {
        out.push_str(r.pick(&["e0", "E+1", "e-2", "e3", "e15", "e308", "e309", "e-400"]));
    }
}

/// A random value at nesting level `depth` (of its container). `forced` more levels
/// of single-element containers come first, to reach and cross the 32-level limit.
fn gen_value(r: &mut Rng, depth: usize, forced: usize, out: &mut String) {
    gen_ws(r, out);
    let container = forced > 0 || (depth < 5 && r.chance(25));
    match r.below(if container { 2 } else { 6 }) {
        0 => {
            out.push('[');
            let n = if forced > 0 { 1 } else { r.below(4) };
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                gen_value(r, depth + 1, forced.saturating_sub(1), out);
            }
            gen_ws(r, out);
            out.push(']');
        }
        1 => {
            out.push('{');
            let n = if forced > 0 { 1 } else { r.below(3) };
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                gen_ws(r, out);
                let _ = gen_name(r, out);
                gen_ws(r, out);
                out.push(':');
                gen_value(r, depth + 1, forced.saturating_sub(1), out);
            }
            gen_ws(r, out);
            out.push('}');
        }
        2 | 3 => gen_string(r, out),
        4 => gen_number(r, out),
        _ => out.push_str(r.pick(&["true", "false", "null"])),
    }
    gen_ws(r, out);
}

fn gen_object(r: &mut Rng) -> String {
    let mut out = String::new();
    gen_ws(r, &mut out);
    out.push('{');
    for i in 0..r.below(12) {
        if i > 0 {
            out.push(',');
        }
        gen_ws(r, &mut out);
        let claim = gen_name(r, &mut out);
        gen_ws(r, &mut out);
        out.push(':');
        match claim {
            Some(claim) => gen_claim_value(r, claim, &mut out),
            None => {
                let forced = if r.chance(3) { 28 + r.below(8) } else { 0 };
                gen_value(r, 1, forced, &mut out);
            }
        }
    }
    gen_ws(r, &mut out);
    out.push('}');
    gen_ws(r, &mut out);
    out
}

/// One byte replaced, inserted or removed.
fn mutate(r: &mut Rng, doc: &str) -> Vec<u8> {
    const BYTES: &[u8] = b"{}[]\",:\\ 0123456789.eE+-tfnua/\x00\x1f\x7f\x0c\xff\xc3";
    let mut b = doc.as_bytes().to_vec();
    let at = r.below(b.len() + 1);
    let byte = BYTES[r.below(BYTES.len())];
    match r.below(3) {
        0 if at < b.len() => b[at] = byte,
        1 if at < b.len() => {
            b.remove(at);
        }
        _ => b.insert(at, byte),
    }
    b
}

/// Depth of a serde_json value, the top level counting 1.
fn depth_of(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth_of).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether the top-level object repeats a member name (serde_json's `Value` keeps the
/// last one silently, so ask it for the names in order).
fn has_duplicate_names(json: &[u8]) -> bool {
    struct Names;
    impl<'de> serde::de::Visitor<'de> for Names {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut duplicate = false;
            while let Some(k) = map.next_key::<String>()? {
                duplicate |= !seen.insert(k);
                map.next_value::<serde::de::IgnoredAny>()?;
            }
            Ok(duplicate)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    serde::Deserializer::deserialize_map(&mut de, Names).unwrap_or(false)
}

/// What the registered claims should be, read from serde_json's `Value` by the
/// rules the scanner implements; `None` when one has the wrong type.
fn expected_claims(v: &serde_json::Map<String, serde_json::Value>) -> Option<RegisteredClaims> {
    use serde_json::Value as J;
    let string = |k: &str| match v.get(k) {
        None => Some(None),
        Some(J::String(s)) => Some(Some(s.clone())),
        Some(_) => None,
    };
    let date = |k: &str| match v.get(k) {
        None => Some(None),
        Some(J::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Some(Some(i))
            } else if n.is_u64() {
                None
            } else {
                let f = n.as_f64()?;
                #[allow(clippy::cast_possible_truncation)]
                (f.is_finite() && (-9.0e15..=9.0e15).contains(&f)).then_some(Some(f.floor() as i64))
            }
        }
        Some(_) => None,
    };
    let aud = match v.get("aud") {
        None => vec![],
        Some(J::String(s)) => vec![s.clone()],
        Some(J::Array(a)) if a.len() <= 64 => a
            .iter()
            .map(|e| e.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?,
        Some(_) => return None,
    };
    Some(RegisteredClaims {
        iss: string("iss")?,
        sub: string("sub")?,
        jti: string("jti")?,
        sid: string("sid")?,
        aud,
        exp: date("exp")?,
        nbf: date("nbf")?,
        iat: date("iat")?,
    })
}

#[derive(Default, Debug)]
struct Tally {
    accepted: usize,
    invalid_claim: usize,
    malformed: usize,
    duplicates: usize,
    too_deep: usize,
}

/// Checks the scanner against serde_json on one document; counts the outcome.
fn differential(json: &[u8], tally: &mut Tally) {
    let shown = String::from_utf8_lossy(json);
    let ours = parse_claims(&URL_SAFE_NO_PAD.encode(json));
    let theirs = serde_json::from_slice::<serde_json::Value>(json);
    let object = match &theirs {
        Ok(serde_json::Value::Object(o)) => Some(o),
        _ => None,
    };
    // Where the scanner is deliberately stricter than serde_json.
    let duplicate = object.is_some() && has_duplicate_names(json);
    let too_deep = theirs.as_ref().is_ok_and(|v| depth_of(v) > 32);
    let peeked = peek_issuer(&URL_SAFE_NO_PAD.encode(json));
    match (object, &ours) {
        (Some(_), _) if duplicate || too_deep => {
            tally.duplicates += usize::from(duplicate);
            tally.too_deep += usize::from(too_deep);
            assert_eq!(
                ours.as_ref().map_err(|r| r.reason).err(),
                Some(Reason::Malformed),
                "duplicate or too deep, yet accepted: {shown}"
            );
            assert_eq!(peeked, None, "{shown}");
        }
        (Some(o), Ok(claims)) => {
            tally.accepted += 1;
            assert_eq!(claims.payload(), json);
            let claims = registered(claims);
            assert_eq!(
                Some(&claims),
                expected_claims(o).as_ref(),
                "claims differ: {shown}"
            );
            assert_eq!(peeked, claims.iss, "{shown}");
        }
        (Some(o), Err(r)) => {
            assert_eq!(
                r.reason,
                Reason::InvalidClaim,
                "serde_json accepts, the scanner says {r}: {shown}"
            );
            assert_eq!(expected_claims(o), None, "{r}: {shown}");
            tally.invalid_claim += 1;
            let iss_ok = matches!(o.get("iss"), None | Some(serde_json::Value::String(_)));
            assert_eq!(peeked.is_some(), iss_ok && o.contains_key("iss"), "{shown}");
        }
        (None, Ok(_)) => panic!("the scanner accepts what serde_json refuses: {shown}"),
        (None, Err(r)) => {
            assert_eq!(r.reason, Reason::Malformed, "{r}: {shown}");
            assert_eq!(peeked, None, "{shown}");
            tally.malformed += 1;
        }
    }
}

#[test]
fn the_scanner_agrees_with_serde_json() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut tally = Tally::default();
    for _ in 0..4000 {
        let doc = gen_object(&mut rng);
        differential(doc.as_bytes(), &mut tally);
        for _ in 0..4 {
            differential(&mutate(&mut rng, &doc), &mut tally);
        }
    }
    // Every outcome was exercised, so agreement is not vacuous.
    assert!(tally.accepted > 3000, "{tally:?}");
    assert!(tally.invalid_claim > 500, "{tally:?}");
    assert!(tally.malformed > 3000, "{tally:?}");
    assert!(tally.duplicates > 300, "{tally:?}");
    assert!(tally.too_deep > 50, "{tally:?}");
}

/// The hand-written base64url decoder accepts exactly what the `base64` crate's
/// `URL_SAFE_NO_PAD` accepts, and decodes it the same.
#[test]
fn base64url_agrees_with_the_base64_crate() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let strays = b"=+/. \n\0\x7f\x80\xff";
    let (mut ok, mut bad) = (0, 0);
    let mut check = |input: &[u8]| {
        let theirs = URL_SAFE_NO_PAD.decode(input).ok();
        let ours = b64::decoded_len(input.len()).and_then(|n| {
            let mut out = vec![0; n];
            b64::decode(input, &mut out).map(|()| out)
        });
        assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(input));
        if ours.is_some() { ok += 1 } else { bad += 1 }
    };
    for _ in 0..20_000 {
        // The canonical encoding of random bytes, then one character changed.
        let bytes: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
        let mut text = URL_SAFE_NO_PAD.encode(&bytes).into_bytes();
        check(&text);
        if !text.is_empty() {
            let at = if rng.chance(50) {
                text.len() - 1
            } else {
                rng.below(text.len())
            };
            text[at] = if rng.chance(80) {
                alphabet[rng.below(64)]
            } else {
                strays[rng.below(strays.len())]
            };
            check(&text);
        }
        // Any length, including the impossible 4k + 1.
        let random: Vec<u8> = (0..rng.below(24))
            .map(|_| alphabet[rng.below(64)])
            .collect();
        check(&random);
    }
    assert!(ok > 20_000 && bad > 10_000, "{ok} accepted, {bad} refused");
    // A wrong-sized output buffer is refused, not written past.
    assert_eq!(b64::decode(b"AAAA", &mut [0; 2]), None);
    assert_eq!(b64::decode(b"AAAA", &mut [0; 4]), None);
}

#[test]
fn signatures_of_every_size_decode_inline_or_on_the_heap() {
    for len in [1, 32, 64, 95, 96, 97, 256, 512, 768, 1024] {
        let sig: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let t = token(r#"{"alg":"RS256"}"#, "{}", &URL_SAFE_NO_PAD.encode(&sig));
        assert_eq!(
            parse(&t, 8192, &mut HeaderBuf::new()).unwrap().signature(),
            sig.as_slice(),
            "{len}"
        );
    }
    let t = token(
        r#"{"alg":"RS256"}"#,
        "{}",
        &URL_SAFE_NO_PAD.encode([1u8; 1025]),
    );
    assert_eq!(reason(&t), Reason::BadSignature);
    for bad in ["AAA=", "AA+A", "A", "AAAAB"] {
        let t = token(r#"{"alg":"RS256"}"#, "{}", bad);
        assert_eq!(reason(&t), Reason::Malformed, "{bad}");
    }
}

#[test]
fn a_header_seen_before_parses_exactly_as_the_first_time() {
    let headers: [(&str, Algorithm, Option<&str>); 6] = [
        (
            r#"{"alg":"HS256","kid":"k1"}"#,
            Algorithm::HS256,
            Some("k1"),
        ),
        (
            r#"{"alg":"ES256","kid":"k\u0032"}"#,
            Algorithm::ES256,
            Some("k2"),
        ),
        (r#"{"alg":"RS256","typ":"JWT"}"#, Algorithm::RS256, None),
        (r#"{"alg":"EdDSA","kid":""}"#, Algorithm::EdDSA, Some("")),
        (
            r#"{"kid":"k5","alg":"PS256"}"#,
            Algorithm::PS256,
            Some("k5"),
        ),
        (
            r#"{"alg":"ES384","kid":"é-6"}"#,
            Algorithm::ES384,
            Some("é-6"),
        ),
    ];
    // More headers than a thread keeps: misses and evictions, then hits (the last four
    // are held), then all of them again.
    let order = (0..6).chain(2..6).chain(2..6).chain(0..6);
    let mut hits = 0;
    for i in order {
        let (header, alg, kid) = headers[i];
        hits += usize::from(recent::holds(&b64(header)));
        let t = token(header, "{}", "AAAA");
        let mut buf = HeaderBuf::new();
        let jws = parse(&t, 8192, &mut buf).unwrap();
        assert_eq!((jws.alg, jws.kid.as_deref()), (alg, kid), "{header}");
    }
    assert!(hits >= 8, "{hits} hits");
    // A remembered header does not vouch for the rest of the token.
    let held = b64(headers[5].0);
    assert_eq!(
        reason(&format!("{held}.{}.", b64("{}"))),
        Reason::BadSignature
    );
    assert_eq!(reason(&format!("{held}..AAAA")), Reason::Malformed);
}

#[test]
fn a_header_that_fails_is_never_remembered() {
    for header in [
        r#"{"alg":"none"}"#,
        r#"{"alg":"HS256","crit":["x"]}"#,
        r#"{"alg":"HS256","alg":"HS256"}"#,
    ] {
        let t = token(header, "{}", "AAAA");
        let first = reason(&t);
        assert_eq!(reason(&t), first, "{header}");
        assert!(!recent::holds(&b64(header)), "{header}");
    }
}
