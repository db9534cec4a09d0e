use clap::{CommandFactory as _, Parser as _};

use super::*;
use crate::cli::KindArg;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("denylistctl").chain(args.iter().copied()))
}

fn revoke_args(args: &[&str]) -> RevokeArgs {
    let mut full = vec!["revoke"];
    full.extend_from_slice(args);
    match parse(&full).unwrap().command {
        Command::Revoke(r) => r,
        other => panic!("{other:?}"),
    }
}

/// 2026-01-01T00:00:00Z
const NOW_MS: i64 = 1_767_225_600_000;

#[test]
fn the_command_line_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn revoke_parses_kind_targets_and_flags() {
    let r = revoke_args(&[
        "subject",
        "--issuer",
        "https://auth.example.com",
        "u1",
        "u2",
        "--reason",
        "takeover",
        "--actor",
        "alice",
        "--cutoff",
        "2026-01-01T00:00:00Z",
    ]);
    assert_eq!(r.kind, Some(KindArg::Subject));
    assert_eq!(r.targets, ["u1", "u2"]);
    let event = revoke_event(&r, NOW_MS).unwrap();
    let Action::Revoke(rv) = &event.action else {
        panic!()
    };
    assert_eq!(rv.kind, RuleKind::Subject);
    assert_eq!(rv.cutoff, NOW_MS / 1000);
    assert_eq!(event.actor, "alice");
    assert_eq!(event.reason, "takeover");
    assert_eq!(event.created_at_ms, NOW_MS);
    assert_eq!(event.event_id.len(), 26);
}

#[test]
fn revoke_defaults_the_cutoff_to_now_only_for_cutoff_kinds() {
    let e = revoke_event(&revoke_args(&["issuer", "--issuer", "iss"]), NOW_MS).unwrap();
    let Action::Revoke(r) = &e.action else {
        panic!()
    };
    assert_eq!(r.cutoff, NOW_MS / 1000);
    assert!(r.targets.is_empty());
    let e = revoke_event(
        &revoke_args(&["jti", "--issuer", "iss", "t", "--event-id", "ev-1"]),
        NOW_MS,
    )
    .unwrap();
    let Action::Revoke(r) = &e.action else {
        panic!()
    };
    assert_eq!(r.cutoff, 0);
    assert_eq!(e.event_id, "ev-1");
}

#[test]
fn revoke_mistakes_are_explained() {
    let err = |args: &[&str]| {
        revoke_event(&revoke_args(args), NOW_MS)
            .unwrap_err()
            .to_string()
    };
    assert!(err(&["jti", "--issuer", "iss"]).contains("name at least one token id"));
    assert!(err(&["issuer", "--issuer", "iss", "x"]).contains("takes no targets"));
    assert!(
        err(&["key", "--issuer", "iss", "k", "--cutoff", "now"]).contains("--cutoff applies only")
    );
    assert!(err(&["subject", "--issuer", "iss", "u", "--cutoff", "+1d"]).contains("in the future"));
    assert!(
        err(&["jti", "--issuer", "iss", "t", "--expires-at", "-1h"]).contains("not in the future")
    );
    assert!(
        err(&["jti", "--issuer", "iss", "t", "--event-id", "has space"]).contains("--event-id")
    );
    assert!(err(&["jti", "--issuer", "", "t"]).contains("--issuer is required"));
}

#[test]
fn from_file_excludes_single_revocation_flags() {
    assert!(parse(&["revoke", "--from-file", "x.csv"]).is_ok());
    assert!(
        parse(&[
            "revoke",
            "--from-file",
            "x.csv",
            "--reason",
            "r",
            "--in-flight",
            "10"
        ])
        .is_ok()
    );
    assert!(parse(&["revoke", "--from-file", "x.csv", "--issuer", "iss"]).is_err());
    assert!(parse(&["revoke", "--from-file", "x.csv", "jti"]).is_err());
    assert!(
        parse(&["revoke", "jti", "t"]).is_err(),
        "--issuer is required"
    );
    let bulk_flag_alone = revoke_args(&["--in-flight", "3", "jti", "--issuer", "i", "t"]);
    let err = revoke_event(&bulk_flag_alone, NOW_MS)
        .unwrap_err()
        .to_string();
    assert!(err.contains("only to --from-file"), "{err}");
}

#[test]
fn globals_work_after_the_command_and_have_defaults() {
    let cli = parse(&[
        "list",
        "-o",
        "json",
        "--nats",
        "nats://a:1,nats://b:2",
        "--kind",
        "subject",
    ])
    .unwrap();
    assert_eq!(cli.global.output, Output::Json);
    assert_eq!(
        nats_options(&cli.global).servers(),
        ["nats://a:1", "nats://b:2"]
    );
    assert_eq!(cli.global.timeout, Duration::from_secs(30));
    let Command::List(list) = cli.command else {
        panic!()
    };
    assert_eq!(
        list.filter.kind,
        Some(replay::KindFilter::Rule(RuleKind::Subject))
    );
    assert!(
        parse(&[
            "history",
            "--kind",
            "lift",
            "--since",
            "2h",
            "--subject",
            "u1"
        ])
        .is_ok()
    );
    assert!(parse(&["list", "--kind", "bogus"]).is_err());
}

#[test]
fn stream_init_flags() {
    let cli = parse(&["stream", "init", "--replicas", "3", "--max-age", "forever"]).unwrap();
    let Command::Stream {
        command: StreamCommand::Init(args),
    } = cli.command
    else {
        panic!()
    };
    assert_eq!(args.replicas, 3);
    assert_eq!(args.max_age, Duration::ZERO);
    assert_eq!(args.duplicate_window, Duration::from_secs(120));
    let cli = parse(&["stream", "init"]).unwrap();
    let Command::Stream {
        command: StreamCommand::Init(args),
    } = cli.command
    else {
        panic!()
    };
    assert_eq!(args.max_age, Duration::from_secs(30 * 86_400));
}

#[test]
fn keygen_writes_a_private_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("publisher.pem");
    let cli = parse(&["keygen", "--out", out.to_str().unwrap(), "-o", "json"]).unwrap();
    keygen(&cli.global, &out).unwrap();
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pem = std::fs::read_to_string(&out).unwrap();
    SigningKey::from_pkcs8_pem(&pem).unwrap();
    let err = keygen(&cli.global, &out).unwrap_err().to_string();
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), pem);
}
