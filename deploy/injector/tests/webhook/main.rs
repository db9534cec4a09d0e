//! The injector over real HTTPS: AdmissionReview in, AdmissionReview out. Every patch is
//! applied to the submitted pod, which must then deserialise as a k8s-openapi Pod and
//! validate against the Kubernetes schema.

mod harness;

use std::time::Duration;

use denylist_injector::Drained;
use harness::*;
use serde_json::{Value, json};

const POD: &str = denylist_injector::server::PATH_POD;
const NAMESPACE: &str = denylist_injector::server::PATH_NAMESPACE;

#[tokio::test]
async fn pod_without_the_annotation_is_allowed_without_a_patch() {
    let injector = Injector::start(settings()).await;
    let response = injector.review(POD, &review(&pod(json!({})), "shop")).await;
    assert_allowed_unpatched(&response);
    // No annotations at all, and an explicit opt-out, are the same.
    let mut bare = pod(json!({}));
    bare["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    assert_allowed_unpatched(&injector.review(POD, &review(&bare, "shop")).await);
    let opted_out = pod(json!({"denylist.dev/inject": "false"}));
    assert_allowed_unpatched(&injector.review(POD, &review(&opted_out, "shop")).await);
}

#[tokio::test]
async fn annotated_pod_gets_a_native_sidecar() {
    let injector = Injector::start(settings()).await;
    let original = pod(json!({"denylist.dev/inject": "true"}));
    let response = injector.review(POD, &review(&original, "shop")).await;
    let patched = apply(&original, &response);
    validate_schema(&[&patched], "1.33.0");

    // The sidecar is the first init container, made a native sidecar by restartPolicy.
    let init = patched["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 1);
    let sidecar = &init[0];
    assert_eq!(sidecar["name"], "denylist-sidecar");
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["image"], "registry.example/denylist:1.2.3");
    assert_eq!(sidecar["command"], json!(["denylist-sidecar"]));
    assert_eq!(
        sidecar["args"],
        json!(["--config", "/etc/denylist/config.toml"])
    );
    assert_eq!(
        env(sidecar, "DENYLIST_SOCKET").unwrap()["value"],
        "/var/run/denylist/sidecar.sock"
    );
    assert_eq!(
        env(sidecar, "DENYLIST_ADMIN").unwrap()["value"],
        "0.0.0.0:9151"
    );
    assert_eq!(
        env(sidecar, "POD_NAME").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    // Probes: HTTP on the admin port (the gRPC listener is loopback-only).
    for (probe, path) in [
        ("startupProbe", "/livez"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/livez"),
    ] {
        assert_eq!(sidecar[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(sidecar[probe]["httpGet"]["port"], 9151, "{probe}");
    }
    let sc = &sidecar["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        sidecar["resources"]["requests"],
        json!({"cpu": "50m", "memory": "64Mi"})
    );
    assert_eq!(sidecar["resources"]["limits"], json!({"memory": "256Mi"}));
    assert!(mounts_socket(sidecar));
    let mounts = sidecar["volumeMounts"].as_array().unwrap();
    assert!(mounts.contains(
        &json!({"name": "denylist-config", "mountPath": "/etc/denylist", "readOnly": true})
    ));
    assert!(mounts.contains(&json!({"name": "denylist-nats-credentials", "mountPath": "/var/run/secrets/denylist", "readOnly": true})));

    // Volumes: the socket emptyDir, the config from the ConfigMap, credentials from the Secret.
    let volumes = patched["spec"]["volumes"].as_array().unwrap();
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap().clone();
    assert!(volume("denylist-socket")["emptyDir"].is_object());
    assert_eq!(
        volume("denylist-config")["configMap"]["name"],
        "denylist-sidecar-config"
    );
    assert_eq!(
        volume("denylist-nats-credentials")["secret"]["secretName"],
        "denylist-sidecar-nats"
    );

    // The app container gets the socket and its path, and keeps what it had.
    let web = container(&patched, "containers", "web");
    assert!(mounts_socket(web));
    assert_eq!(
        env(web, "DENYLIST_SOCKET").unwrap()["value"],
        "/var/run/denylist/sidecar.sock"
    );
    assert_eq!(web["ports"], original["spec"]["containers"][0]["ports"]);
    assert_eq!(patched["spec"]["containers"].as_array().unwrap().len(), 1);

    // Marked as injected; the user's annotation is kept.
    let annotations = &patched["metadata"]["annotations"];
    assert_eq!(annotations["denylist.dev/inject"], "true");
    assert_eq!(
        annotations["denylist.dev/injected"],
        env!("CARGO_PKG_VERSION")
    );
}

#[tokio::test]
async fn labelled_namespace_injects_pods_without_the_annotation() {
    let injector = Injector::start(settings()).await;
    let mut original = pod(json!({}));
    original["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let response = injector.review(NAMESPACE, &review(&original, "shop")).await;
    let patched = apply(&original, &response);
    validate_schema(&[&patched], "1.33.0");
    assert_eq!(
        patched["spec"]["initContainers"][0]["name"],
        "denylist-sidecar"
    );
    assert!(mounts_socket(container(&patched, "containers", "web")));
    assert_eq!(
        patched["metadata"]["annotations"]["denylist.dev/injected"],
        env!("CARGO_PKG_VERSION")
    );

    // An explicit opt-out wins over the namespace label.
    let opted_out = pod(json!({"denylist.dev/inject": "false"}));
    assert_allowed_unpatched(
        &injector
            .review(NAMESPACE, &review(&opted_out, "shop"))
            .await,
    );
}

#[tokio::test]
async fn an_injected_pod_is_left_alone() {
    let injector = Injector::start(settings()).await;
    let original = pod(json!({"denylist.dev/inject": "true"}));
    let patched = apply(
        &original,
        &injector.review(POD, &review(&original, "shop")).await,
    );
    // Reinvocation, or a pod spec copied from an injected pod: no second sidecar.
    for path in [POD, NAMESPACE] {
        assert_allowed_unpatched(&injector.review(path, &review(&patched, "shop")).await);
    }
    // Marker annotation lost, but our container and socket volume are there: still injected.
    let mut unmarked = patched.clone();
    unmarked["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("denylist.dev/injected");
    assert_allowed_unpatched(&injector.review(POD, &review(&unmarked, "shop")).await);
    // The marker alone is enough too.
    let marked = pod(json!({"denylist.dev/inject": "true", "denylist.dev/injected": "0.0.1"}));
    assert_allowed_unpatched(&injector.review(POD, &review(&marked, "shop")).await);
}

#[tokio::test]
async fn every_container_and_init_container_gets_the_socket() {
    let injector = Injector::start(settings()).await;
    let original = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "multi", "namespace": "shop", "annotations": {"denylist.dev/inject": "true"}},
        "spec": {
            "initContainers": [
                {"name": "migrate", "image": "registry.example/migrate:1",
                 "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
                {"name": "warmup", "image": "registry.example/warmup:1", "env": [{"name": "MODE", "value": "fast"}]},
            ],
            "containers": [
                {"name": "api", "image": "registry.example/api:1",
                 "env": [{"name": "LOG", "value": "debug"}],
                 "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
                {"name": "worker", "image": "registry.example/worker:1"},
                {"name": "custom", "image": "registry.example/custom:1",
                 "env": [{"name": "DENYLIST_SOCKET", "value": "/var/run/denylist/other.sock"}]},
            ],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        },
    });
    let response = injector.review(POD, &review(&original, "shop")).await;
    let warnings = response["warnings"]
        .as_array()
        .expect("a warning about the existing DENYLIST_SOCKET");
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("\"custom\" already sets DENYLIST_SOCKET")),
        "{warnings:?}"
    );
    let patched = apply(&original, &response);
    validate_schema(&[&patched], "1.33.0");

    // The sidecar comes first, so the other init containers can use it; their order is kept.
    let init: Vec<_> = patched["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(init, ["denylist-sidecar", "migrate", "warmup"]);
    let apps: Vec<_> = patched["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(apps, ["api", "worker", "custom"]);
    for (list, name) in [
        ("initContainers", "migrate"),
        ("initContainers", "warmup"),
        ("containers", "api"),
        ("containers", "worker"),
        ("containers", "custom"),
    ] {
        let c = container(&patched, list, name);
        assert!(mounts_socket(c), "{name} mounts the socket");
        assert!(
            env(c, "DENYLIST_SOCKET").is_some(),
            "{name} has DENYLIST_SOCKET"
        );
    }
    // What was there is still there, in place.
    let api = container(&patched, "containers", "api");
    assert_eq!(api["env"][0], json!({"name": "LOG", "value": "debug"}));
    assert_eq!(
        api["volumeMounts"][0],
        json!({"name": "scratch", "mountPath": "/scratch"})
    );
    assert_eq!(
        container(&patched, "initContainers", "warmup")["env"][0],
        json!({"name": "MODE", "value": "fast"})
    );
    assert_eq!(
        patched["spec"]["volumes"][0],
        json!({"name": "scratch", "emptyDir": {}})
    );
    // A user's own DENYLIST_SOCKET is left as it was.
    assert_eq!(
        env(
            container(&patched, "containers", "custom"),
            "DENYLIST_SOCKET"
        )
        .unwrap()["value"],
        "/var/run/denylist/other.sock"
    );
}

#[tokio::test]
async fn pods_that_cannot_be_patched_safely_are_denied() {
    let injector = Injector::start(settings()).await;
    let annotated = || pod(json!({"denylist.dev/inject": "true"}));

    let mut volume_clash = annotated();
    volume_clash["spec"]["volumes"] = json!([{"name": "denylist-config", "emptyDir": {}}]);
    let response = injector.review(POD, &review(&volume_clash, "shop")).await;
    assert_denied(
        &response,
        &[
            "volume named \"denylist-config\"",
            "denylist.dev/inject: \"false\"",
        ],
    );

    let mut container_clash = annotated();
    container_clash["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "denylist-sidecar", "image": "registry.example/mine:1"}));
    let response = injector
        .review(POD, &review(&container_clash, "shop"))
        .await;
    assert_denied(
        &response,
        &["container named \"denylist-sidecar\"", "did not add"],
    );

    // Our container name *and* our socket volume without the marker would be "already
    // injected"; our container with only another of our volumes is a clash.
    let mut half = container_clash.clone();
    half["spec"]["volumes"] = json!([{"name": "denylist-nats-credentials", "emptyDir": {}}]);
    assert_denied(
        &injector.review(POD, &review(&half, "shop")).await,
        &["denylist-sidecar"],
    );

    let mut mount_clash = annotated();
    mount_clash["spec"]["volumes"] = json!([{"name": "run", "emptyDir": {}}]);
    mount_clash["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "run", "mountPath": "/var/run/denylist/"}]);
    assert_denied(
        &injector.review(POD, &review(&mount_clash, "shop")).await,
        &["\"web\"", "/var/run/denylist"],
    );

    let mut port_clash = annotated();
    port_clash["spec"]["containers"][0]["ports"] = json!([{"containerPort": 9151}]);
    assert_denied(
        &injector.review(POD, &review(&port_clash, "shop")).await,
        &["port 9151"],
    );

    let mut host_network = annotated();
    host_network["spec"]["hostNetwork"] = json!(true);
    assert_denied(
        &injector.review(POD, &review(&host_network, "shop")).await,
        &["hostNetwork"],
    );

    let typo = pod(json!({"denylist.dev/inject": "yes"}));
    assert_denied(
        &injector.review(POD, &review(&typo, "shop")).await,
        &["denylist.dev/inject", "\"yes\""],
    );
}

#[tokio::test]
async fn annotations_override_image_config_and_resources() {
    let injector = Injector::start(settings()).await;
    let original = pod(json!({
        "denylist.dev/inject": "true",
        "denylist.dev/image": "registry.example/denylist:canary",
        "denylist.dev/config": "payments-denylist",
        "denylist.dev/nats-secret": "payments-nats",
        "denylist.dev/cpu-request": "200m",
        "denylist.dev/cpu-limit": "1",
        "denylist.dev/memory-request": "128Mi",
        "denylist.dev/memory-limit": "1Gi",
    }));
    let patched = apply(
        &original,
        &injector.review(POD, &review(&original, "shop")).await,
    );
    validate_schema(&[&patched], "1.33.0");
    let sidecar = container(&patched, "initContainers", "denylist-sidecar");
    assert_eq!(sidecar["image"], "registry.example/denylist:canary");
    assert_eq!(
        sidecar["resources"],
        json!({"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}})
    );
    let volumes = patched["spec"]["volumes"].as_array().unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["configMap"]["name"] == "payments-denylist")
    );
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "payments-nats")
    );

    // An empty Secret name means a standalone sidecar: no credentials volume or mount.
    let standalone = pod(json!({"denylist.dev/inject": "true", "denylist.dev/nats-secret": ""}));
    let patched = apply(
        &standalone,
        &injector.review(POD, &review(&standalone, "shop")).await,
    );
    validate_schema(&[&patched], "1.33.0");
    assert!(!patched.to_string().contains("denylist-nats-credentials"));

    // Bad values are denials that name the annotation, never a broken pod.
    for (key, value, needles) in [
        (
            "denylist.dev/memory-limit",
            "12XB",
            vec![
                "denylist.dev/memory-limit",
                "\"12XB\" is not a Kubernetes quantity",
            ],
        ),
        (
            "denylist.dev/cpu-request",
            "-1",
            vec!["denylist.dev/cpu-request", "negative"],
        ),
        (
            "denylist.dev/memory-request",
            "1Gi",
            vec!["memory request 1Gi is above the memory limit 256Mi"],
        ),
        (
            "denylist.dev/config",
            "Not_A_Name",
            vec!["denylist.dev/config", "not a valid object name"],
        ),
        (
            "denylist.dev/image",
            "bad image",
            vec!["denylist.dev/image", "whitespace"],
        ),
    ] {
        let bad = pod(json!({"denylist.dev/inject": "true", key: value}));
        assert_denied(&injector.review(POD, &review(&bad, "shop")).await, &needles);
    }
}

#[tokio::test]
async fn legacy_mode_injects_a_regular_container() {
    let injector = Injector::start(denylist_injector::InjectionSettings {
        legacy_sidecar: true,
        ..settings()
    })
    .await;
    let mut original = pod(json!({"denylist.dev/inject": "true"}));
    original["spec"]["initContainers"] =
        json!([{"name": "migrate", "image": "registry.example/migrate:1"}]);
    let response = injector.review(POD, &review(&original, "shop")).await;
    let patched = apply(&original, &response);
    // Valid for a cluster before native sidecars, and for a current one.
    validate_schema(&[&patched], "1.28.0");
    validate_schema(&[&patched], "1.33.0");

    let containers = patched["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0]["name"], "denylist-sidecar");
    assert!(
        containers[0].get("restartPolicy").is_none(),
        "a regular container has no restartPolicy"
    );
    assert!(mounts_socket(&containers[0]));
    assert!(mounts_socket(container(&patched, "containers", "web")));
    // Init containers run before a regular sidecar starts: they get nothing.
    assert_eq!(
        patched["spec"]["initContainers"],
        original["spec"]["initContainers"]
    );
    // `kubectl logs` keeps defaulting to the app.
    assert_eq!(
        patched["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
        "web"
    );

    // A pod that is meant to complete is warned that it will not.
    let mut job_pod = pod(json!({"denylist.dev/inject": "true"}));
    job_pod["spec"]["restartPolicy"] = json!("Never");
    let response = injector.review(POD, &review(&job_pod, "shop")).await;
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap()
            .contains("will not complete"),
        "{response}"
    );
}

#[tokio::test]
async fn requests_it_is_not_asked_to_inject_are_allowed() {
    let injector = Injector::start(settings()).await;
    let annotated = pod(json!({"denylist.dev/inject": "true"}));

    // Excluded namespaces are never injected, even when the pod asks.
    assert_allowed_unpatched(
        &injector
            .review(NAMESPACE, &review(&annotated, "kube-system"))
            .await,
    );

    // Not a pod CREATE: an UPDATE, a subresource, another kind.
    let mut update = review(&annotated, "shop");
    update["request"]["operation"] = json!("UPDATE");
    update["request"]["oldObject"] = annotated.clone();
    assert_allowed_unpatched(&injector.review(NAMESPACE, &update).await);
    let mut binding = review(&annotated, "shop");
    binding["request"]["subResource"] = json!("binding");
    assert_allowed_unpatched(&injector.review(NAMESPACE, &binding).await);
    let mut deployment = review(
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {}}),
        "shop",
    );
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    assert_allowed_unpatched(&injector.review(NAMESPACE, &deployment).await);

    // A pod that did not opt in is allowed even if its spec is something we cannot read.
    let mut unreadable = pod(json!({}));
    unreadable["spec"]["containers"] = json!("not a list");
    assert_allowed_unpatched(&injector.review(POD, &review(&unreadable, "shop")).await);
}

#[tokio::test]
async fn malformed_reviews_are_http_400_with_a_message() {
    let injector = Injector::start(settings()).await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", b"{not json".to_vec(), "malformed AdmissionReview"),
        ("empty body", Vec::new(), "malformed AdmissionReview"),
        ("JSON of the wrong shape", br#"[1, 2, 3]"#.to_vec(), "malformed AdmissionReview"),
        (
            "v1beta1",
            serde_json::to_vec(&{
                let mut r = review(&pod(json!({})), "shop");
                r["apiVersion"] = json!("admission.k8s.io/v1beta1");
                r
            })
            .unwrap(),
            "expected apiVersion admission.k8s.io/v1",
        ),
        ("no request", br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#.to_vec(), "has no request"),
        (
            "request without uid and kind",
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}}"#.to_vec(),
            "malformed AdmissionReview",
        ),
        (
            "annotated pod whose spec is not a pod spec",
            serde_json::to_vec(&{
                let mut p = pod(json!({"denylist.dev/inject": "true"}));
                p["spec"]["containers"] = json!({"name": "web"});
                review(&p, "shop")
            })
            .unwrap(),
            "object is not a valid v1 Pod",
        ),
        (
            "pod CREATE without an object",
            serde_json::to_vec(&{
                let mut r = review(&pod(json!({})), "shop");
                r["request"]["object"] = Value::Null;
                r
            })
            .unwrap(),
            "carries no object",
        ),
    ];
    for (what, body, needle) in cases {
        let (status, text) = injector.post_raw(NAMESPACE, body).await;
        assert_eq!(status, 400, "{what}: {text}");
        assert!(
            text.contains(needle),
            "{what}: body {text:?} should contain {needle:?}"
        );
    }
    // Still serving.
    assert_eq!(injector.get("/healthz").await, (200, "ok\n".to_owned()));
    let (_, metrics) = injector.get("/metrics").await;
    assert!(
        metrics.contains("denylist_injector_errors_total{kind=\"bad_request\"} 8"),
        "{metrics}"
    );
}

#[tokio::test]
async fn healthz_and_metrics_report_outcomes() {
    let injector = Injector::start(settings()).await;
    let (_, before) = injector.get("/metrics").await;
    // Every series exists from the first scrape, at zero.
    for series in [
        "denylist_injector_injections_total 0",
        "denylist_injector_skips_total{reason=\"not_requested\"} 0",
        "denylist_injector_denials_total{reason=\"name_clash\"} 0",
        "denylist_injector_errors_total{kind=\"tls\"} 0",
    ] {
        assert!(before.contains(series), "missing {series:?} in:\n{before}");
    }
    injector
        .review(
            POD,
            &review(&pod(json!({"denylist.dev/inject": "true"})), "shop"),
        )
        .await;
    injector.review(POD, &review(&pod(json!({})), "shop")).await;
    injector
        .review(
            POD,
            &review(&pod(json!({"denylist.dev/inject": "false"})), "shop"),
        )
        .await;
    injector
        .review(
            POD,
            &review(
                &pod(json!({"denylist.dev/inject": "true", "denylist.dev/cpu-limit": "x"})),
                "shop",
            ),
        )
        .await;
    let (status, after) = injector.get("/metrics").await;
    assert_eq!(status, 200);
    for series in [
        "denylist_injector_injections_total 1",
        "denylist_injector_skips_total{reason=\"not_requested\"} 1",
        "denylist_injector_skips_total{reason=\"opted_out\"} 1",
        "denylist_injector_denials_total{reason=\"invalid_annotation\"} 1",
    ] {
        assert!(after.contains(series), "missing {series:?} in:\n{after}");
    }
    assert_eq!(injector.get("/healthz").await, (200, "ok\n".to_owned()));
}

#[tokio::test]
async fn a_changed_certificate_is_served_without_restart() {
    let injector = Injector::start(settings()).await;
    assert_eq!(injector.get("/healthz").await.0, 200);
    let dir = injector.dir.path();

    // Unchanged files: nothing to do.
    assert!(!injector.resolver.reload_if_changed().unwrap());

    // A key that does not match the certificate is refused; the old pair stays in use.
    let next = TestCert::new();
    std::fs::write(dir.join("tls.key"), &next.key_pem).unwrap();
    assert!(injector.resolver.reload_if_changed().is_err());
    assert_eq!(
        injector.get("/healthz").await.0,
        200,
        "still serving the old certificate"
    );

    // The whole new pair is picked up; new connections see the new certificate.
    next.write(dir);
    assert!(injector.resolver.reload_if_changed().unwrap());
    let fresh = next.client();
    let response = tokio::time::timeout(TIMEOUT, fresh.get(injector.url("/healthz")).send())
        .await
        .unwrap()
        .expect("a client trusting only the new certificate connects");
    assert_eq!(response.status(), 200);
    let stale = TestCert::new().client(); // trusts neither: proves the check is real
    assert!(
        tokio::time::timeout(TIMEOUT, stale.get(injector.url("/healthz")).send())
            .await
            .unwrap()
            .is_err()
    );
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drains() {
    let injector = Injector::start(settings()).await;
    let addr = injector.addr;
    assert_eq!(injector.get("/healthz").await.0, 200);
    assert_eq!(injector.shutdown().await, Drained::Clean);
    let refused = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .unwrap();
    assert!(refused.is_err(), "the listener is closed after shutdown");
}

/// Under `failurePolicy: Fail`, a refused admission call fails the pod creation: after
/// SIGTERM the injector goes on accepting for its delay, then stops.
#[tokio::test]
async fn after_shutdown_is_requested_new_connections_are_served_for_the_delay() {
    let mut injector =
        Injector::start_with_timing(settings(), Duration::from_secs(3), Duration::from_secs(5))
            .await;
    let addr = injector.addr;
    injector.request_stop();
    // No request was made before, so this one opens a new connection.
    assert_eq!(injector.get("/healthz").await.0, 200);
    assert_eq!(injector.shutdown().await, Drained::Clean);
    let refused = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .unwrap();
    assert!(
        refused.is_err(),
        "the listener is closed once the delay is over"
    );
}

#[tokio::test]
async fn shutdown_gives_up_on_stuck_connections_at_the_deadline() {
    let injector = Injector::start_with_grace(settings(), Duration::from_millis(200)).await;
    // A client that connects and never starts TLS.
    let _stuck = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(injector.addr))
        .await
        .unwrap()
        .unwrap();
    // Connections are accepted in order, so once this request is answered the stuck one
    // has been accepted too.
    assert_eq!(injector.get("/healthz").await.0, 200);
    assert_eq!(
        injector.shutdown().await,
        Drained::DeadlineExceeded { aborted: 1 }
    );
}
