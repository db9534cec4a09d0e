use super::*;

fn q(s: &str) -> Quantity {
    Quantity::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn accepts_the_kubernetes_grammar() {
    for s in [
        "0", "1", "100m", "0.5", ".5", "5.", "+1", "64Mi", "1Gi", "1.5Gi", "2e3", "2E-3", "1k",
        "1M", "1G", "1T", "1P", "1E", "1Ei", "10n", "10u",
    ] {
        q(s);
    }
}

#[test]
fn rejects_what_the_api_server_rejects() {
    for s in [
        "", "m", "1mi", "1 Gi", "1GB", "1.2.3", "abc", "1e", "1e+", "1Gi ", "--1", "0x10", ".",
    ] {
        assert!(
            matches!(Quantity::parse(s), Err(QuantityError::Syntax(_))),
            "{s:?} should be a syntax error, got {:?}",
            Quantity::parse(s)
        );
    }
    assert!(matches!(
        Quantity::parse("-1"),
        Err(QuantityError::Negative(_))
    ));
    assert!(matches!(
        Quantity::parse("1e100"),
        Err(QuantityError::TooLarge(_))
    ));
    assert!(matches!(
        Quantity::parse("999999999999Ei"),
        Err(QuantityError::TooLarge(_))
    ));
}

#[test]
fn compares_exactly_across_notations() {
    assert_eq!(q("1Gi"), q("1024Mi"));
    assert_eq!(q("0.5"), q("500m"));
    assert_eq!(q("1k"), q("1e3"));
    assert_eq!(q("1500m"), q("1.5"));
    assert!(q("100m") < q("1"));
    assert!(q("1G") < q("1Gi"));
    assert!(q("64Mi") > q("64M"));
    assert!(q("0").is_zero());
    assert!(q("-0").is_zero());
    // Below a nano-unit rounds up, like the API server.
    assert_eq!(q("1e-10"), q("1n"));
}

#[test]
fn keeps_the_original_text() {
    assert_eq!(q("64Mi").as_str(), "64Mi");
    assert_eq!(q("1.5Gi").to_string(), "1.5Gi");
}
