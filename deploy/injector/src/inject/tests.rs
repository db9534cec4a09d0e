use kube::core::admission::AdmissionReview;
use serde_json::json;

use super::*;

fn request(pod: Value, namespace: &str) -> AdmissionRequest<DynamicObject> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {},
            "object": pod,
            "oldObject": null,
        }
    }))
    .unwrap();
    review.try_into().unwrap()
}

fn bare_pod(annotations: Option<Value>) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    });
    if let Some(a) = annotations {
        pod["metadata"]["annotations"] = a;
    }
    pod
}

fn injected(decision: Decision) -> Injection {
    match decision {
        Decision::Inject(i) => i,
        other => panic!("expected an injection, got {other:?}"),
    }
}

#[test]
fn absent_lists_are_created_whole_and_nothing_is_replaced() {
    let settings = InjectionSettings::default();
    let decision = decide(
        &settings,
        OptIn::Namespace,
        &request(bare_pod(None), "shop"),
    )
    .unwrap();
    let patch = injected(decision).patch;
    let paths: Vec<String> = patch
        .0
        .iter()
        .map(|op| match op {
            PatchOperation::Add(add) => add.path.to_string(),
            other => panic!("only `add` operations, got {other:?}"),
        })
        .collect();
    assert_eq!(
        paths,
        [
            "/spec/containers/0/volumeMounts",
            "/spec/containers/0/env",
            "/spec/volumes",
            "/spec/initContainers",
            "/metadata/annotations",
        ]
    );
}

#[test]
fn existing_lists_are_appended_to_and_annotation_keys_escaped() {
    let settings = InjectionSettings::default();
    let mut pod = bare_pod(Some(json!({"denylist.dev/inject": "true"})));
    pod["spec"]["volumes"] = json!([]);
    pod["spec"]["initContainers"] = json!([]);
    pod["spec"]["containers"][0]["env"] = json!([]);
    let patch =
        injected(decide(&settings, OptIn::PodAnnotation, &request(pod, "shop")).unwrap()).patch;
    let paths: Vec<String> = patch
        .0
        .iter()
        .map(|op| match op {
            PatchOperation::Add(add) => add.path.to_string(),
            other => panic!("only `add` operations, got {other:?}"),
        })
        .collect();
    assert!(
        paths.contains(&"/spec/containers/0/env/-".to_owned()),
        "{paths:?}"
    );
    assert_eq!(
        paths.iter().filter(|p| *p == "/spec/volumes/-").count(),
        4,
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/spec/initContainers/0".to_owned()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/metadata/annotations/denylist.dev~1injected".to_owned()),
        "{paths:?}"
    );
}

#[test]
fn the_state_volume_is_the_sidecars_alone() {
    let settings = InjectionSettings::default();
    let mut pod = bare_pod(Some(json!({"denylist.dev/inject": "true"})));
    let patch = injected(
        decide(
            &settings,
            OptIn::PodAnnotation,
            &request(pod.clone(), "shop"),
        )
        .unwrap(),
    )
    .patch;
    json_patch::patch(&mut pod, &patch).unwrap();
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == VOLUME_STATE)
        .expect("a state volume");
    assert_eq!(volume["emptyDir"], json!({}), "on disk, no size limit");
    let mounts = |c: &Value| {
        c["volumeMounts"]
            .as_array()
            .map(|m| m.iter().any(|m| m["name"] == VOLUME_STATE))
            .unwrap_or(false)
    };
    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], SIDECAR_CONTAINER);
    assert!(mounts(sidecar));
    assert!(
        sidecar["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": ENV_STATE_DIR, "value": STATE_DIR}))
    );
    assert!(
        !pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(mounts),
        "no app container may mount the state"
    );
}

#[test]
fn the_local_state_can_be_turned_off_per_pod() {
    let settings = InjectionSettings::default();
    let annotated = |value: &str| {
        bare_pod(Some(
            json!({"denylist.dev/inject": "true", "denylist.dev/local-state": value}),
        ))
    };
    let mut pod = annotated("false");
    let decision = decide(
        &settings,
        OptIn::PodAnnotation,
        &request(pod.clone(), "shop"),
    );
    json_patch::patch(&mut pod, &injected(decision.unwrap()).patch).unwrap();
    let text = pod.to_string();
    assert!(!text.contains(VOLUME_STATE), "{text}");
    assert!(!text.contains(ENV_STATE_DIR), "{text}");
    match decide(
        &settings,
        OptIn::PodAnnotation,
        &request(annotated("no"), "shop"),
    ) {
        Ok(Decision::Deny(denial)) => {
            assert!(
                denial.message.contains(ANNOTATION_LOCAL_STATE),
                "{}",
                denial.message
            )
        }
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn opt_in_rules() {
    let settings = InjectionSettings::default();
    let skip = |opt_in, annotations, namespace| match decide(
        &settings,
        opt_in,
        &request(bare_pod(annotations), namespace),
    )
    .unwrap()
    {
        Decision::Skip(reason) => Some(reason),
        _ => None,
    };
    assert_eq!(
        skip(OptIn::PodAnnotation, None, "shop"),
        Some(SkipReason::NotRequested)
    );
    assert_eq!(skip(OptIn::Namespace, None, "shop"), None);
    assert_eq!(
        skip(
            OptIn::Namespace,
            Some(json!({"denylist.dev/inject": "false"})),
            "shop"
        ),
        Some(SkipReason::OptedOut)
    );
    assert_eq!(
        skip(
            OptIn::Namespace,
            Some(json!({"denylist.dev/inject": "true"})),
            "kube-system"
        ),
        Some(SkipReason::ExcludedNamespace)
    );
    assert_eq!(
        skip(
            OptIn::PodAnnotation,
            Some(json!({"denylist.dev/inject": "true", "denylist.dev/injected": "x"})),
            "shop"
        ),
        Some(SkipReason::AlreadyInjected)
    );
}

#[test]
fn a_request_above_its_limit_names_both() {
    let settings = InjectionSettings::default();
    let pod = bare_pod(Some(
        json!({"denylist.dev/inject": "true", "denylist.dev/cpu-request": "2", "denylist.dev/cpu-limit": "1"}),
    ));
    match decide(&settings, OptIn::PodAnnotation, &request(pod, "shop")).unwrap() {
        Decision::Deny(d) => {
            assert_eq!(d.reason, DenyReason::InvalidAnnotation);
            assert!(
                d.message.contains("cpu request 2 is above the cpu limit 1"),
                "{}",
                d.message
            );
        }
        other => panic!("expected a denial, got {other:?}"),
    }
}
