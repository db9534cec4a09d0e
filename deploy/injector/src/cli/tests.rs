use super::*;

fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
    Args::try_parse_from(
        ["denylist-injector", "--image", "denylist:1"]
            .iter()
            .chain(extra),
    )
}

#[test]
fn defaults_make_valid_settings_and_exclude_the_own_namespace() {
    let settings = parse(&[])
        .unwrap()
        .settings(Some("denylist-system"))
        .unwrap();
    assert_eq!(settings.image, "denylist:1");
    assert!(!settings.legacy_sidecar);
    assert_eq!(
        settings.nats_secret.as_deref(),
        Some("denylist-sidecar-nats")
    );
    for ns in [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "denylist-system",
    ] {
        assert!(settings.excluded_namespaces.contains(ns), "{ns}");
    }
    assert!(settings.resources.cpu_limit.is_none());
}

#[test]
fn errors_name_the_setting() {
    let err = parse(&["--memory-request", "lots"])
        .unwrap()
        .settings(None)
        .unwrap_err();
    assert!(err.to_string().contains("memory_request"), "{err}");
    let err = parse(&["--memory-request", "1Gi"])
        .unwrap()
        .settings(None)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("memory request 1Gi is above the memory limit 256Mi"),
        "{err}"
    );
    let err = parse(&["--sidecar-admin-addr", "127.0.0.1:9151"])
        .unwrap()
        .settings(None)
        .unwrap_err();
    assert!(err.to_string().contains("sidecar_admin_addr"), "{err}");
    assert!(parse(&["--cert-reload-interval", "0s"]).is_err());
    assert!(
        Args::try_parse_from(["denylist-injector"]).is_err(),
        "--image is required"
    );
}

#[test]
fn an_empty_secret_name_mounts_no_credentials() {
    let settings = parse(&["--nats-secret", "", "--legacy-sidecar"])
        .unwrap()
        .settings(None)
        .unwrap();
    assert!(settings.nats_secret.is_none());
    assert!(settings.legacy_sidecar);
}
