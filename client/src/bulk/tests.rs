use super::*;

/// 2026-01-01T00:00:00Z
const NOW: i64 = 1_767_225_600;

fn defaults() -> BulkDefaults {
    BulkDefaults {
        actor: "alice@sec".to_owned(),
        reason: "incident 42".to_owned(),
        now_ms: NOW * 1000,
    }
}

fn csv(content: &str) -> Result<BulkFile, BulkError> {
    parse(content.as_bytes(), FileFormat::Csv, &defaults())
}

fn jsonl(content: &str) -> Result<BulkFile, BulkError> {
    parse(content.as_bytes(), FileFormat::JsonLines, &defaults())
}

fn revoke(event: &Event) -> &Revoke {
    match &event.action {
        Action::Revoke(r) => r,
        Action::Lift { .. } => panic!("not a revocation"),
    }
}

fn errors(e: &BulkError) -> Vec<(u64, &str)> {
    e.errors
        .iter()
        .map(|e| (e.line, e.field.as_str()))
        .collect()
}

const GOOD_CSV: &str = "\
kind,issuer,target,reason,cutoff,expires_at
# a comment line
subject,https://auth.example.com,user-8f14,account takeover,now,
jti,https://auth.example.com,3f2a6c1e-9b7d,,,+30d

session,https://auth.example.com,sid-1,\"leaked, twice\",,
issuer,https://legacy.example.com,,key compromise,2025-12-31T00:00:00Z,
key,https://auth.example.com,kid-2019,,,
";

#[test]
fn a_good_csv_file_gives_one_event_per_line() {
    let file = csv(GOOD_CSV).unwrap();
    assert_eq!(file.format, FileFormat::Csv);
    assert_eq!(file.events.len(), 5);
    let e = &file.events;

    let r = revoke(&e[0]);
    assert_eq!(r.kind, RuleKind::Subject);
    assert_eq!(r.issuer, "https://auth.example.com");
    assert_eq!(r.targets, ["user-8f14"]);
    assert_eq!(r.cutoff, NOW);
    assert_eq!(r.expires_at, None);
    assert_eq!(e[0].reason, "account takeover");
    assert_eq!(e[0].actor, "alice@sec");
    assert_eq!(e[0].created_at_ms, NOW * 1000);

    // Defaults: the --reason for lines without one, no cut-off for jti, relative expiry.
    let r = revoke(&e[1]);
    assert_eq!(e[1].reason, "incident 42");
    assert_eq!(r.cutoff, 0);
    assert_eq!(r.expires_at, Some(NOW + 30 * 86_400));

    assert_eq!(e[2].reason, "leaked, twice");
    let r = revoke(&e[3]);
    assert_eq!(r.kind, RuleKind::Issuer);
    assert!(r.targets.is_empty());
    assert_eq!(r.cutoff, NOW - 86_400);
    assert_eq!(revoke(&e[4]).kind, RuleKind::Key);

    // Ids name the file content, the physical line (header = line 1) and the line's
    // resolved cut-off and expiry.
    let lines: Vec<String> = e.iter().map(|e| e.event_id.clone()).collect();
    let d = &file.digest;
    assert_eq!(
        lines,
        [
            format!("bulk-{d}-3-c{NOW}"),
            format!("bulk-{d}-4-e{}", NOW + 30 * 86_400),
            format!("bulk-{d}-6"),
            format!("bulk-{d}-7-c{}", NOW - 86_400),
            format!("bulk-{d}-8"),
        ]
    );
    for event in e {
        event.validate().unwrap();
    }
}

#[test]
fn ids_are_stable_across_runs_and_distinct_across_files() {
    let first = csv(GOOD_CSV).unwrap();
    let ids = |f: &BulkFile| {
        f.events
            .iter()
            .map(|e| e.event_id.clone())
            .collect::<Vec<_>>()
    };
    let again = csv(GOOD_CSV).unwrap();
    assert_eq!(
        ids(&first),
        ids(&again),
        "a re-run republishes the same ids"
    );
    // An hour later, the lines with relative times (`now`, `+30d`) are new revocations
    // with the new times: sidecars ignore an id they have applied, so reusing the old
    // id would drop the later cut-off. Lines with absolute times or none keep theirs.
    let mut later = defaults();
    later.now_ms += 3_600_000;
    let later = parse(GOOD_CSV.as_bytes(), FileFormat::Csv, &later).unwrap();
    let same: Vec<bool> = ids(&first)
        .iter()
        .zip(ids(&later))
        .map(|(a, b)| *a == b)
        .collect();
    assert_eq!(same, [false, false, true, true, true]);

    let other = csv(&GOOD_CSV.replace("user-8f14", "user-0000")).unwrap();
    assert!(
        ids(&first).iter().all(|id| !ids(&other).contains(id)),
        "another file never reuses an id"
    );
}

#[test]
fn columns_may_come_in_any_order_and_optional_ones_may_be_absent() {
    let file = csv("target,issuer,kind\nu1,iss,subject\n").unwrap();
    let r = revoke(&file.events[0]);
    assert_eq!(
        (r.kind, r.issuer.as_str(), r.targets[0].as_str()),
        (RuleKind::Subject, "iss", "u1")
    );
}

#[test]
fn a_good_json_lines_file() {
    let content = r#"
# comment
{"kind":"jti","issuer":"https://auth.example.com","target":"t-1","reason":"leak"}
{"kind":"subject","issuer":"https://auth.example.com","target":"u-1","cutoff":1767225000,"expires_at":"2026-02-01T00:00:00Z"}
{"kind":"issuer","issuer":"https://legacy.example.com","target":null,"cutoff":"now"}
"#;
    let file = jsonl(content).unwrap();
    assert_eq!(file.events.len(), 3);
    assert_eq!(file.events[0].reason, "leak");
    assert_eq!(file.events[0].event_id, format!("bulk-{}-3", file.digest));
    let r = revoke(&file.events[1]);
    assert_eq!(r.cutoff, 1_767_225_000);
    assert_eq!(r.expires_at, Some(1_769_904_000));
    assert_eq!(revoke(&file.events[2]).cutoff, NOW);
}

#[test]
fn every_bad_line_is_named_with_its_field_and_nothing_is_returned() {
    let content = "\
kind,issuer,target,reason,cutoff,expires_at
subject,iss,u1,,,
jit,iss,t1,,,
jti,,t2,,,
jti,iss,,,,
issuer,iss,someone,,,
jti,iss,t3,,now,
subject,iss,u2,,tomorrow,
subject,iss,u3,,+1d,
jti,iss,t4,,,2020-01-01T00:00:00Z
jti,iss,t5
jti,iss,bad\u{7}target,,,
";
    let e = csv(content).unwrap_err();
    assert_eq!(
        errors(&e),
        [
            (3, "kind"),
            (4, "issuer"),
            (5, "target"),
            (6, "target"),
            (7, "cutoff"),
            (8, "cutoff"),
            (9, "cutoff"),
            (10, "expires_at"),
            (11, ""),
            (12, "target"),
        ]
    );
    assert_eq!(e.total, 10);
    assert!(
        e.to_string()
            .starts_with("10 problem(s), nothing was published; first: line 3, field `kind`"),
        "{e}"
    );
    assert!(
        e.errors[0].message.contains("\"jit\""),
        "{}",
        e.errors[0].message
    );
    assert!(
        e.errors[8].message.contains("has 3 fields"),
        "{}",
        e.errors[8].message
    );
}

#[test]
fn header_problems_are_named() {
    let e = csv("kind,issuer,targets\njti,iss,t\n").unwrap_err();
    assert_eq!(errors(&e), [(1, "targets"), (1, "target")]);
    let e = csv("kind,issuer,target,kind\n").unwrap_err();
    assert_eq!(errors(&e), [(1, "kind")]);
}

#[test]
fn json_lines_problems_are_named() {
    let content = r#"{"kind":"jti","issuer":"iss","target":"t"}
{"kind":"jti","issuer":"iss","target":"t","actor":"mallory"}
not json
["an","array"]
{"kind":"jti","issuer":"iss","target":7}
{"kind":"subject","issuer":"iss","target":"u","cutoff":1.5}
{"kind":"subject","issuer":"iss","target":"u","cutoff":true}
{"kind":"key","issuer":"iss"}
"#;
    let e = jsonl(content).unwrap_err();
    assert_eq!(
        errors(&e),
        [
            (2, "actor"),
            (3, ""),
            (4, ""),
            (5, "target"),
            (5, "target"),
            (6, "cutoff"),
            (7, "cutoff"),
            (8, "target")
        ]
    );
}

#[test]
fn an_empty_file_is_an_error() {
    let e = csv("kind,issuer,target\n# nothing\n").unwrap_err();
    assert_eq!(e.errors[0].message, "the file holds no revocations");
    let e = jsonl("\n\n").unwrap_err();
    assert_eq!(e.total, 1);
}

#[test]
fn a_byte_order_mark_is_ignored() {
    let file = csv("\u{feff}kind,issuer,target\njti,iss,t\n").unwrap();
    assert_eq!(file.events.len(), 1);
    let file = jsonl("\u{feff}{\"kind\":\"jti\",\"issuer\":\"iss\",\"target\":\"t\"}\n").unwrap();
    assert_eq!(file.events.len(), 1);
}

#[test]
fn the_error_list_is_bounded_but_the_count_is_not() {
    let mut content = String::from("kind,issuer,target\n");
    for _ in 0..(MAX_REPORTED_ERRORS + 50) {
        content.push_str("nope,iss,t\n");
    }
    let e = csv(&content).unwrap_err();
    assert_eq!(e.errors.len(), MAX_REPORTED_ERRORS);
    assert_eq!(e.total, MAX_REPORTED_ERRORS + 50);
}

#[test]
fn a_hundred_thousand_lines_parse() {
    let mut content = String::from("kind,issuer,target,reason\n");
    for i in 0..100_000 {
        content.push_str(&format!("jti,https://auth.example.com,token-{i},bulk\n"));
    }
    let file = csv(&content).unwrap();
    assert_eq!(file.events.len(), 100_000);
    assert_eq!(
        file.events[99_999].event_id,
        format!("bulk-{}-100001", file.digest)
    );
}

#[test]
fn format_detection() {
    use std::path::Path;
    assert_eq!(
        FileFormat::detect(Path::new("x.csv"), b"{"),
        FileFormat::Csv
    );
    assert_eq!(
        FileFormat::detect(Path::new("x.JSONL"), b"kind"),
        FileFormat::JsonLines
    );
    assert_eq!(
        FileFormat::detect(Path::new("x.ndjson"), b""),
        FileFormat::JsonLines
    );
    assert_eq!(
        FileFormat::detect(Path::new("x.txt"), b"# c\n\n {\"kind\":1}"),
        FileFormat::JsonLines
    );
    assert_eq!(
        FileFormat::detect(Path::new("x"), b"kind,issuer,target\n"),
        FileFormat::Csv
    );
}

#[test]
fn crlf_line_ends_and_quoted_line_breaks() {
    let file = csv("kind,issuer,target\r\njti,iss,t\r\n").unwrap();
    assert_eq!(revoke(&file.events[0]).targets, ["t"]);
    let e =
        csv("kind,issuer,target,reason\njti,iss,t,\"two\nlines\"\njti,iss,u,\"say \"\"hi\"\"\"\n")
            .unwrap_err();
    assert_eq!(errors(&e), [(2, ""), (3, "")]);
    assert!(
        e.errors[0].message.contains("unterminated"),
        "{}",
        e.errors[0].message
    );
    let file = csv("kind,issuer,target,reason\njti,iss,u,\"say \"\"hi\"\"\"\n").unwrap();
    assert_eq!(file.events[0].reason, "say \"hi\"");
    // A lone carriage return would make two records of one line (and the second would
    // get no line of its own): the line is refused, naming it.
    let e = csv("kind,issuer,target\njti,iss,a\rjti,iss,b\njti,iss,c\n").unwrap_err();
    assert_eq!(errors(&e), [(2, "")]);
    assert!(
        e.errors[0].message.contains("carriage return"),
        "{}",
        e.errors[0].message
    );
}
