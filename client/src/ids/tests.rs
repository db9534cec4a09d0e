use super::*;
use denylist_proto::events::validate_event_id;

#[test]
fn ulid_layout_sorts_by_time() {
    let a = ulid(1_767_225_600_000, [0; 10]);
    let b = ulid(1_767_225_600_001, [0; 10]);
    let c = ulid(1_767_225_600_001, [0xff; 10]);
    assert_eq!(a.len(), 26);
    assert!(a < b && b < c, "{a} {b} {c}");
    assert_eq!(ulid(0, [0; 10]), "00000000000000000000000000");
    assert_eq!(ulid(0, [0xff; 10]), "0000000000ZZZZZZZZZZZZZZZZ");
}

#[test]
fn fresh_ids_are_valid_and_unique() {
    let a = new_event_id(1_767_225_600_000);
    let b = new_event_id(1_767_225_600_000);
    assert_ne!(a, b);
    validate_event_id("event_id", &a).unwrap();
}

#[test]
fn bulk_ids_depend_on_content_and_line_only() {
    let d1 = file_digest(b"kind,issuer,target\njti,iss,a\n");
    let d2 = file_digest(b"kind,issuer,target\njti,iss,a\n");
    let d3 = file_digest(b"kind,issuer,target\njti,iss,b\n");
    assert_eq!(d1, d2);
    assert_ne!(d1, d3);
    assert_eq!(d1.len(), 16);
    let id = bulk_event_id(&d1, 2, None, None);
    assert_eq!(id, format!("bulk-{d1}-2"));
    validate_event_id("event_id", &id).unwrap();
    let longest = bulk_event_id(&d1, 10_000_000, Some(i64::MAX), Some(i64::MAX));
    assert_eq!(longest, format!("bulk-{d1}-10000000-c{0}-e{0}", i64::MAX));
    validate_event_id("event_id", &longest).unwrap();
    assert_ne!(
        bulk_event_id(&d1, 2, Some(1_767_225_600), None),
        bulk_event_id(&d1, 2, Some(1_767_225_601), None)
    );
}
