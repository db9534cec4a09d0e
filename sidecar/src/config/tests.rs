use super::*;
use std::time::Duration;

const MINIMAL: &str = r#"
[denylist]
file = "revocations.jsonl"

[[issuers]]
issuer = "https://idp.example"
algorithms = ["ES256"]
[issuers.keys]
pem_files = [{ path = "es256.pem", kid = "k1" }]
"#;

fn field_of(err: ConfigError) -> String {
    match err {
        ConfigError::Invalid { field, .. } => field,
        other => panic!("expected an invalid-field error, got {other}"),
    }
}

#[test]
fn minimal_config_validates_with_documented_defaults() {
    let c = Config::from_toml(MINIMAL).unwrap();
    c.validate().unwrap();
    assert_eq!(c.verify.max_token_bytes, 8192);
    assert_eq!(c.issuers[0].leeway, Duration::from_secs(30));
    assert!(c.issuers[0].require_jti);
    assert_eq!(c.denylist.staleness_policy, StalenessPolicy::FailClosed);
}

#[test]
fn unknown_field_is_a_parse_error_naming_it() {
    let err =
        Config::from_toml(&MINIMAL.replace("[denylist]", "[denylist]\nmax_stalenes = \"5s\""))
            .unwrap_err();
    assert!(err.to_string().contains("max_stalenes"), "{err}");
}

#[test]
fn mixing_hmac_and_public_key_algorithms_is_rejected() {
    let c = Config::from_toml(&MINIMAL.replace("[\"ES256\"]", "[\"ES256\", \"HS256\"]")).unwrap();
    assert_eq!(field_of(c.validate().unwrap_err()), "issuers[0].algorithms");
}

#[test]
fn two_key_sources_are_rejected() {
    let c = Config::from_toml(&format!("{MINIMAL}jwks_file = \"x.json\"\n")).unwrap();
    assert_eq!(field_of(c.validate().unwrap_err()), "issuers[0].keys");
}

#[test]
fn jwks_url_must_be_https_unless_loopback() {
    for (url, ok) in [
        ("https://idp.example/jwks", true),
        ("http://127.0.0.1:8080/jwks", true),
        ("http://localhost/jwks", true),
        ("http://idp.example/jwks", false),
        ("file:///etc/passwd", false),
    ] {
        let text = MINIMAL.replace(
            "pem_files = [{ path = \"es256.pem\", kid = \"k1\" }]",
            &format!("jwks_url = \"{url}\""),
        );
        let res = Config::from_toml(&text).unwrap().validate();
        assert_eq!(res.is_ok(), ok, "{url}: {res:?}");
    }
}

#[test]
fn non_loopback_tcp_listener_is_rejected() {
    let mut c = Config::from_toml(MINIMAL).unwrap();
    c.apply_env(|k| (k == env::TCP).then(|| "0.0.0.0:50151".to_owned()))
        .unwrap();
    assert_eq!(field_of(c.validate().unwrap_err()), "listen.tcp");
}

#[test]
fn environment_overrides_file_and_empty_disables_a_listener() {
    let mut c = Config::from_toml(MINIMAL).unwrap();
    c.apply_env(|k| match k {
        env::SOCKET => Some(String::new()),
        env::NAME => Some("pod-7".to_owned()),
        _ => None,
    })
    .unwrap();
    assert_eq!(c.listen.socket, None);
    assert_eq!(c.name, "pod-7");
    c.validate().unwrap();
}

#[test]
fn duplicate_issuer_is_rejected() {
    let dup = MINIMAL.split_once("[[issuers]]").unwrap().1;
    let c = Config::from_toml(&format!("{MINIMAL}\n[[issuers]]{dup}")).unwrap();
    assert_eq!(field_of(c.validate().unwrap_err()), "issuers[1].issuer");
}

#[test]
fn empty_listener_in_file_disables_it() {
    let c = Config::from_toml(&format!("[listen]\ntcp = \"\"\nadmin = \"\"\n{MINIMAL}")).unwrap();
    assert_eq!(c.listen.tcp, None);
    assert_eq!(c.listen.admin, None);
    assert!(c.listen.socket.is_some());
    let err = Config::from_toml(&format!("[listen]\ntcp = \"nonsense\"\n{MINIMAL}")).unwrap_err();
    assert!(err.to_string().contains("tcp"), "{err}");
}

#[test]
fn nats_mode_needs_servers_and_trusted_keys_and_names_a_bad_url() {
    let base = MINIMAL.replace(
        "[denylist]\nfile = \"revocations.jsonl\"",
        "[denylist]\nsource = \"nats\"",
    );
    let c = Config::from_toml(&base).unwrap();
    assert_eq!(field_of(c.validate().unwrap_err()), "nats.servers");
    let key = "m53AbgRdXFN0hRN6eFeVepCpV9BMJtmlLcpcDZbsNOU";
    let ok = format!(
        "[nats]\nservers = [\"nats://a:4222\", \"nats://b:4222\"]\ntrusted_publishers = [\"{key}\"]\n{base}"
    );
    Config::from_toml(&ok).unwrap().validate().unwrap();
    let bad_port = ok.replace("nats://b:4222", "nats://b:99999");
    assert_eq!(
        field_of(
            Config::from_toml(&bad_port)
                .unwrap()
                .validate()
                .unwrap_err()
        ),
        "nats.servers[1]"
    );
    let no_keys = ok.replace(&format!("\"{key}\""), "");
    assert_eq!(
        field_of(Config::from_toml(&no_keys).unwrap().validate().unwrap_err()),
        "nats.trusted_publishers"
    );
}

#[test]
fn refetch_interval_has_a_floor() {
    let text = MINIMAL.replace(
        "pem_files = [{ path = \"es256.pem\", kid = \"k1\" }]",
        "jwks_url = \"https://idp.example/jwks\"\nrefetch_min_interval = \"0s\"",
    );
    let c = Config::from_toml(&text).unwrap();
    assert_eq!(
        field_of(c.validate().unwrap_err()),
        "issuers[0].keys.refetch_min_interval"
    );
}

/// The poll or heartbeat is what "heard from" means: one that is not well inside
/// `max_staleness` would turn a healthy denylist stale between two of them.
#[test]
fn a_poll_or_heartbeat_too_slow_for_max_staleness_is_rejected() {
    let with = |lines: &str| MINIMAL.replace("[denylist]", &format!("[denylist]\n{lines}"));
    let ok = Config::from_toml(&with(
        "file_poll_interval = \"10s\"\nmax_staleness = \"30s\"",
    ));
    ok.unwrap().validate().unwrap();
    let slow = Config::from_toml(&with(
        "file_poll_interval = \"11s\"\nmax_staleness = \"30s\"",
    ));
    let err = slow.unwrap().validate().unwrap_err();
    assert!(err.to_string().contains("30s"), "{err}");
    assert_eq!(field_of(err), "denylist.file_poll_interval");

    // In fleet mode, the heartbeat is checked instead (the file poll does not apply).
    let key = "m53AbgRdXFN0hRN6eFeVepCpV9BMJtmlLcpcDZbsNOU";
    let nats = |heartbeat: &str| {
        format!(
            "{}\n[nats]\nservers = [\"nats://127.0.0.1:4222\"]\ntrusted_publishers = [\"{key}\"]\nheartbeat_interval = \"{heartbeat}\"\nrequest_timeout = \"2s\"\n",
            with("source = \"nats\"\nfile_poll_interval = \"1h\"\nmax_staleness = \"6s\"")
        )
    };
    let c = Config::from_toml(&nats("2s")).unwrap();
    c.validate().unwrap();
    let err = Config::from_toml(&nats("3s"))
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(field_of(err), "nats.heartbeat_interval");
}

/// The heartbeat, its fallback and the catch-up jitter: defaults, and values that would
/// make a healthy sidecar stale or read the wrong subject fail at start, naming the field.
#[test]
fn heartbeat_fallback_and_jitter_are_validated() {
    let key = "m53AbgRdXFN0hRN6eFeVepCpV9BMJtmlLcpcDZbsNOU";
    let nats = |lines: &str| {
        format!(
            "{}\n[nats]\nservers = [\"nats://127.0.0.1:4222\"]\ntrusted_publishers = [\"{key}\"]\n{lines}\n",
            MINIMAL.replace(
                "[denylist]",
                "[denylist]\nsource = \"nats\"\nmax_staleness = \"30s\"",
            )
        )
    };
    let c = Config::from_toml(&nats("")).unwrap();
    c.validate().unwrap();
    assert_eq!(c.nats.heartbeat_subject, "denylist.v1.heartbeat");
    assert_eq!(c.nats.catch_up_jitter, Duration::from_secs(1));
    assert_eq!(c.nats.heartbeat_fallback_after(), Duration::from_secs(4));
    assert_eq!(c.nats.reconnect_delay, Duration::from_millis(500));
    let c = Config::from_toml(&nats(
        "heartbeat_fallback_after = \"10s\"\ncatch_up_jitter = \"0s\"",
    ))
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.nats.heartbeat_fallback_after(), Duration::from_secs(10));

    for (lines, field) in [
        (
            "heartbeat_subject = \"denylist.v1.*\"",
            "nats.heartbeat_subject",
        ),
        ("heartbeat_subject = \"\"", "nats.heartbeat_subject"),
        ("heartbeat_subject = \"a..b\"", "nats.heartbeat_subject"),
        (
            "heartbeat_subject = \"denylist.v1.events.hb\"",
            "nats.heartbeat_subject",
        ),
        (
            "heartbeat_subject = \"denylist.v1.live.hb\"",
            "nats.heartbeat_subject",
        ),
        (
            "heartbeat_fallback_after = \"1s\"",
            "nats.heartbeat_fallback_after",
        ),
        (
            "heartbeat_fallback_after = \"29s\"",
            "nats.heartbeat_fallback_after",
        ),
        ("catch_up_jitter = \"11s\"", "nats.catch_up_jitter"),
        // Fallback after 4 s plus a 27 s request: an in-time answer still finds it stale.
        ("request_timeout = \"27s\"", "nats.request_timeout"),
        ("reconnect_delay = \"16s\"", "nats.reconnect_delay"),
        ("reconnect_delay = \"10ms\"", "nats.reconnect_delay"),
    ] {
        let err = Config::from_toml(&nats(lines))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(field_of(err), field, "{lines}");
    }
}

/// Sizes that would allocate gigabytes fail at start, naming the field.
#[test]
fn absurd_sizes_are_rejected() {
    let with = |section: &str, line: &str| {
        MINIMAL.replace(&format!("[{section}]"), &format!("[{section}]\n{line}"))
    };
    let c = Config::from_toml(&with("denylist", "expected_entries = 10000000000")).unwrap();
    assert_eq!(
        field_of(c.validate().unwrap_err()),
        "denylist.expected_entries"
    );
    let c = Config::from_toml(&with("denylist", "expected_entries = 100000000")).unwrap();
    c.validate().unwrap();
    let c = Config::from_toml(&format!("{MINIMAL}\n[verify]\ncache_entries = 20000000\n"));
    assert_eq!(
        field_of(c.unwrap().validate().unwrap_err()),
        "verify.cache_entries"
    );
}

/// `MINIMAL` with a `[forward_auth]` section of `lines`.
fn with_forward_auth(lines: &str) -> Result<(), ConfigError> {
    Config::from_toml(&format!("[forward_auth]\n{lines}\n{MINIMAL}"))?.validate()
}

#[test]
fn forward_auth_is_off_by_default_on_loopback() {
    let c = Config::from_toml(MINIMAL).unwrap();
    assert!(!c.forward_auth.enabled);
    assert_eq!(
        c.forward_auth.listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 9152)))
    );
    assert_eq!(c.forward_auth.socket, None);
    assert_eq!(c.forward_auth.header, "authorization");
    assert_eq!(
        c.forward_auth.forward_claims.get("sub").map(String::as_str),
        Some("x-denylist-subject")
    );
    with_forward_auth("enabled = true").unwrap();
    with_forward_auth("enabled = true\nlisten = \"\"\nsocket = \"/run/denylist/fa.sock\"").unwrap();
    with_forward_auth("enabled = true\nlisten = \"[::1]:9152\"").unwrap();
}

#[test]
fn forward_auth_refuses_a_non_loopback_address_even_when_off() {
    for addr in [
        "0.0.0.0:9152",
        "10.0.0.7:9152",
        "[::]:9152",
        "[::ffff:127.0.0.1]:9152",
    ] {
        for enabled in [true, false] {
            let err = with_forward_auth(&format!("enabled = {enabled}\nlisten = \"{addr}\""))
                .unwrap_err();
            assert!(err.to_string().contains("loopback"), "{err}");
            assert_eq!(field_of(err), "forward_auth.listen", "{addr}");
        }
    }
}

#[test]
fn forward_auth_needs_a_listener_of_its_own() {
    let err = with_forward_auth("enabled = true\nlisten = \"\"").unwrap_err();
    assert_eq!(field_of(err), "forward_auth");
    // Disabled, no listener is fine.
    with_forward_auth("listen = \"\"").unwrap();
    let err = with_forward_auth("enabled = true\nsocket = \"/var/run/denylist/sidecar.sock\"")
        .unwrap_err();
    assert_eq!(field_of(err), "forward_auth.socket");
    let err = with_forward_auth("enabled = true\nlisten = \"127.0.0.1:9151\"").unwrap_err();
    assert!(err.to_string().contains("listen.admin"), "{err}");
    assert_eq!(field_of(err), "forward_auth.listen");
}

#[test]
fn forward_auth_header_cookie_and_claims_are_checked() {
    for (lines, field) in [
        ("header = \"Authorization\"", "forward_auth.header"),
        ("header = \"x token\"", "forward_auth.header"),
        ("cookie = \"a=b\"", "forward_auth.cookie"),
        ("cookie = \"\"", "forward_auth.cookie"),
        ("cookie = \"a;b\"", "forward_auth.cookie"),
        (
            "forward_claims = { sub = \"X-Subject\" }",
            "forward_auth.forward_claims.sub",
        ),
        (
            "forward_claims = { sub = \"x-subject\\r\\nx-admin\" }",
            "forward_auth.forward_claims.sub",
        ),
        (
            "forward_claims = { sub = \"host\" }",
            "forward_auth.forward_claims.sub",
        ),
        (
            "forward_claims = { sub = \"content-length\" }",
            "forward_auth.forward_claims.sub",
        ),
        (
            "forward_claims = { sub = \"authorization\" }",
            "forward_auth.forward_claims.sub",
        ),
        (
            "forward_claims = { sub = \"proxy-user\" }",
            "forward_auth.forward_claims.sub",
        ),
        (
            "header = \"x-token\"\nforward_claims = { sub = \"x-token\" }",
            "forward_auth.forward_claims.sub",
        ),
        (
            "forward_claims = { email = \"x-user\", sub = \"x-user\" }",
            "forward_auth.forward_claims.sub",
        ),
        (
            "forward_claims = { \"\" = \"x-user\" }",
            "forward_auth.forward_claims",
        ),
    ] {
        let err = with_forward_auth(lines).unwrap_err();
        assert_eq!(field_of(err), field, "{lines}");
    }
    with_forward_auth(
        "enabled = true\nheader = \"x-token\"\ncookie = \"__Host-session\"\n\
         forward_claims = { sub = \"x-user\", roles = \"x-user-roles\", aud = \"x-aud\" }",
    )
    .unwrap();
}

#[test]
fn ext_authz_claims_get_the_same_checks() {
    let err = Config::from_toml(&format!(
        "[ext_authz]\nforward_claims = {{ sub = \"host\" }}\n{MINIMAL}"
    ))
    .unwrap()
    .validate()
    .unwrap_err();
    assert_eq!(field_of(err), "ext_authz.forward_claims.sub");
}

/// `[[nats.trusted_publisher]]`: scoped keys beside the plain list, and every mistake
/// refused at start naming its field.
#[test]
fn scoped_trusted_publishers_are_read_and_validated() {
    let a = "m53AbgRdXFN0hRN6eFeVepCpV9BMJtmlLcpcDZbsNOU";
    let b = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    let nats = |lines: &str| {
        format!(
            "{}\n[nats]\nservers = [\"nats://127.0.0.1:4222\"]\n{lines}\n",
            MINIMAL.replace("[denylist]", "[denylist]\nsource = \"nats\"")
        )
    };
    let scoped = |fields: &str| {
        nats(&format!(
            "trusted_publishers = [\"{a}\"]\n[[nats.trusted_publisher]]\nkey = \"{b}\"\n{fields}"
        ))
    };
    let c = Config::from_toml(&scoped(
        "kinds = [\"session\", \"subject\"]\nissuers = [\"https://idp.example\"]",
    ))
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.nats.trusted_keys().unwrap().len(), 2);
    // Only scoped keys, no plain list: fine too.
    let only = nats(&format!(
        "[[nats.trusted_publisher]]\nkey = \"{b}\"\nkinds = [\"jti\"]"
    ));
    Config::from_toml(&only).unwrap().validate().unwrap();
    // A heartbeat key beside a key with full authority.
    let c = Config::from_toml(&scoped("heartbeats_only = true")).unwrap();
    c.validate().unwrap();
    assert_eq!(c.nats.trusted_keys().unwrap().len(), 2);

    for (fields, field) in [
        (
            "kinds = [\"sessoin\"]",
            "nats.trusted_publisher[0].kinds[0]",
        ),
        ("kinds = []", "nats.trusted_publisher[0].kinds"),
        (
            "kinds = [\"jti\", \"jti\"]",
            "nats.trusted_publisher[0].kinds[1]",
        ),
        ("issuers = []", "nats.trusted_publisher[0].issuers"),
        ("issuers = [\"\"]", "nats.trusted_publisher[0].issuers[0]"),
        (
            "issuers = [\"https://x\", \"https://x\"]",
            "nats.trusted_publisher[0].issuers[1]",
        ),
        (
            "heartbeats_only = true\nkinds = [\"jti\"]",
            "nats.trusted_publisher[0].heartbeats_only",
        ),
        (
            "heartbeats_only = true\nissuers = [\"https://x\"]",
            "nats.trusted_publisher[0].heartbeats_only",
        ),
    ] {
        let err = Config::from_toml(&scoped(fields))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(field_of(err), field, "{fields}");
    }
    let err = Config::from_toml(&scoped("kinds = [\"sessoin\"]"))
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("sessoin"), "{err}");

    // The same key twice, in either form, leaves its scope ambiguous.
    let twice = nats(&format!(
        "trusted_publishers = [\"{a}\"]\n[[nats.trusted_publisher]]\nkey = \"{a}\"\nkinds = [\"jti\"]"
    ));
    let err = Config::from_toml(&twice).unwrap().validate().unwrap_err();
    assert!(err.to_string().contains("already trusted"), "{err}");
    assert_eq!(field_of(err), "nats.trusted_publisher[0].key");
    let twice = nats(&format!("trusted_publishers = [\"{a}\", \"{a}\"]"));
    assert_eq!(
        field_of(Config::from_toml(&twice).unwrap().validate().unwrap_err()),
        "nats.trusted_publishers[1]"
    );
    let bad = nats("[[nats.trusted_publisher]]\nkey = \"AAAA\"");
    assert_eq!(
        field_of(Config::from_toml(&bad).unwrap().validate().unwrap_err()),
        "nats.trusted_publisher[0].key"
    );
    // A misspelt field or a missing key is a parse error naming it.
    let err = Config::from_toml(&scoped("kind = [\"jti\"]")).unwrap_err();
    assert!(err.to_string().contains("unknown field `kind`"), "{err}");
    let err =
        Config::from_toml(&nats("[[nats.trusted_publisher]]\nkinds = [\"jti\"]")).unwrap_err();
    assert!(err.to_string().contains("missing field `key`"), "{err}");
}
