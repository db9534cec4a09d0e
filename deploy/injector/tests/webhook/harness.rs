//! Test harness: a real injector on an ephemeral port over HTTPS with a certificate made at
//! test time, a client that trusts only that certificate, AdmissionReview builders, and
//! offline schema validation with `kubernetes-validate`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use denylist_injector::{App, Drained, InjectionSettings, InjectorMetrics, ReloadingCertResolver};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Every await on the network in these tests is bounded by this.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// A self-signed certificate for `localhost` / `127.0.0.1`.
pub(crate) struct TestCert {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl TestCert {
    pub(crate) fn new() -> Self {
        let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("generate a self-signed certificate");
        Self {
            cert_pem: cert.pem(),
            key_pem: signing_key.serialize_pem(),
        }
    }

    pub(crate) fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }

    /// A client that trusts this certificate and nothing else.
    pub(crate) fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).unwrap())
            .timeout(TIMEOUT)
            .build()
            .unwrap()
    }
}

/// A running injector. Dropping it aborts the server; [`Injector::shutdown`] drains it.
pub(crate) struct Injector {
    pub(crate) addr: SocketAddr,
    pub(crate) client: reqwest::Client,
    pub(crate) resolver: Arc<ReloadingCertResolver>,
    pub(crate) dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Drained>>,
}

impl Injector {
    pub(crate) async fn start(settings: InjectionSettings) -> Self {
        Self::start_with_grace(settings, Duration::from_secs(5)).await
    }

    pub(crate) async fn start_with_grace(settings: InjectionSettings, grace: Duration) -> Self {
        Self::start_with_timing(settings, Duration::ZERO, grace).await
    }

    /// Started with `run`'s shutdown `delay` and `grace`.
    pub(crate) async fn start_with_timing(
        settings: InjectionSettings,
        delay: Duration,
        grace: Duration,
    ) -> Self {
        settings.validate().expect("test settings are valid");
        let dir = tempfile::tempdir().unwrap();
        let cert = TestCert::new();
        let (cert_path, key_path) = cert.write(dir.path());
        let resolver = Arc::new(ReloadingCertResolver::load(&cert_path, &key_path).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(denylist_injector::run(
            listener,
            denylist_injector::server_config(resolver.clone()),
            App::new(settings, Arc::new(InjectorMetrics::new())),
            async {
                let _ = stopped.await;
            },
            delay,
            grace,
        ));
        Self {
            addr,
            client: cert.client(),
            resolver,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// POSTs a body; returns the HTTP status and the body text.
    pub(crate) async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, String) {
        let response = tokio::time::timeout(
            TIMEOUT,
            self.client
                .post(self.url(path))
                .header("content-type", "application/json")
                .body(body)
                .send(),
        )
        .await
        .expect("request timed out")
        .expect("request failed");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// Sends an AdmissionReview and returns its `response`, checking the envelope.
    pub(crate) async fn review(&self, path: &str, review: &Value) -> Value {
        let (status, body) = self
            .post_raw(path, serde_json::to_vec(review).unwrap())
            .await;
        assert_eq!(status, 200, "HTTP status; body: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        let response = answer["response"].clone();
        assert_eq!(response["uid"], review["request"]["uid"], "uid is echoed");
        response
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        let response = tokio::time::timeout(TIMEOUT, self.client.get(self.url(path)).send())
            .await
            .expect("request timed out")
            .expect("request failed");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// Stops accepting, drains, and returns how the server ended.
    /// Asks the server to stop, as SIGTERM does, without waiting for it.
    pub(crate) fn request_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub(crate) async fn shutdown(mut self) -> Drained {
        self.request_stop();
        tokio::time::timeout(TIMEOUT, self.task.take().unwrap())
            .await
            .expect("server did not stop in time")
            .expect("server task panicked")
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Settings used by most tests.
pub(crate) fn settings() -> InjectionSettings {
    InjectionSettings {
        image: "registry.example/denylist:1.2.3".to_owned(),
        ..InjectionSettings::default()
    }
}

/// A minimal valid pod with one container.
pub(crate) fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d4b9c-",
            "namespace": "shop",
            "labels": {"app": "web"},
            "annotations": annotations,
        },
        "spec": {
            "containers": [{
                "name": "web",
                "image": "registry.example/web:1",
                "ports": [{"containerPort": 8080, "name": "http"}],
            }],
        },
    })
}

/// Wraps a pod in a CREATE AdmissionReview.
pub(crate) fn review(pod: &Value, namespace: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    })
}

/// Asserts the response allows without a patch.
pub(crate) fn assert_allowed_unpatched(response: &Value) {
    assert_eq!(response["allowed"], true, "{response}");
    assert!(
        response.get("patch").is_none(),
        "expected no patch: {response}"
    );
    assert!(
        response.get("patchType").is_none(),
        "expected no patchType: {response}"
    );
}

/// Asserts a denial whose message contains every one of `needles`.
pub(crate) fn assert_denied(response: &Value, needles: &[&str]) {
    assert_eq!(response["allowed"], false, "{response}");
    assert!(
        response.get("patch").is_none(),
        "a denial carries no patch: {response}"
    );
    assert_eq!(response["status"]["code"], 403, "{response}");
    let message = response["status"]["message"].as_str().unwrap_or_default();
    for needle in needles {
        assert!(
            message.contains(needle),
            "denial message {message:?} should mention {needle:?}"
        );
    }
}

/// Applies the response's JSON patch to `pod` and returns the patched pod, after checking it
/// deserialises as a k8s-openapi Pod and obeys the rules the schema cannot express.
pub(crate) fn apply(pod: &Value, response: &Value) -> Value {
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let encoded = response["patch"]
        .as_str()
        .expect("patch is a base64 string");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("patch is base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("patch is a JSON patch");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch)
        .unwrap_or_else(|e| panic!("patch does not apply: {e}\npatch: {patch:?}"));
    let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(patched.clone())
        .expect("patched pod deserialises as a k8s-openapi Pod");
    check_semantics(&typed);
    patched
}

/// Rules of Kubernetes pod validation that a JSON schema does not check.
fn check_semantics(pod: &k8s_openapi::api::core::v1::Pod) {
    let spec = pod.spec.as_ref().expect("spec");
    let init = spec.init_containers.clone().unwrap_or_default();
    let all: Vec<_> = spec.containers.iter().chain(&init).collect();
    let mut names: Vec<_> = all.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "container names are unique: {names:?}");
    let volumes: Vec<_> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    let mut unique = volumes.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        volumes.len(),
        unique.len(),
        "volume names are unique: {volumes:?}"
    );
    for c in &all {
        let mut paths = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            assert!(
                volumes.contains(&m.name.as_str()),
                "container {} mounts unknown volume {}",
                c.name,
                m.name
            );
            paths.push(m.mount_path.as_str());
        }
        let n = paths.len();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(n, paths.len(), "mount paths of {} are unique", c.name);
        let mut env: Vec<_> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        let n = env.len();
        env.sort_unstable();
        env.dedup();
        assert_eq!(n, env.len(), "env names of {} are unique", c.name);
    }
    for c in &spec.containers {
        assert!(
            c.restart_policy.is_none(),
            "regular container {} has no restartPolicy",
            c.name
        );
    }
}

/// Validates documents against the Kubernetes schema (strict: unknown fields fail) with
/// `kubernetes-validate`, installed on demand. Fails the test if the tool cannot be had,
/// unless DENYLIST_ALLOW_MISSING_KUBERNETES_VALIDATE=1, which skips loudly instead.
pub(crate) fn validate_schema(docs: &[&Value], kubernetes_version: &str) {
    let Some(tool) = kubernetes_validate() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = docs
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            // At admission a pod of a ReplicaSet has only `generateName`; the tool insists on
            // a name, which the API server would have filled in by then.
            let mut doc = (*doc).clone();
            if doc["metadata"].get("name").is_none() {
                doc["metadata"]["name"] = json!(format!(
                    "{}x",
                    doc["metadata"]["generateName"].as_str().unwrap_or("pod-")
                ));
            }
            let path = dir.path().join(format!("doc-{i}.json"));
            std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
            path
        })
        .collect();
    let output = Command::new(tool)
        .args(["--strict", "--kubernetes-version", kubernetes_version])
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let passed = report
        .lines()
        .filter(|l| l.starts_with("INFO") && l.contains(" passed "))
        .count();
    assert!(
        output.status.success()
            && passed == docs.len()
            && !report.contains("ERROR")
            && !report.contains("WARN"),
        "schema validation against Kubernetes {kubernetes_version} failed:\n{report}\ndocuments:\n{}",
        docs.iter()
            .map(|d| serde_json::to_string_pretty(d).unwrap())
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
}

fn kubernetes_validate() -> Option<&'static PathBuf> {
    static TOOL: OnceLock<Option<PathBuf>> = OnceLock::new();
    TOOL.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-python-tool.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg("kubernetes-validate")
            .output()
            .expect("run ensure-python-tool.sh");
        if output.status.success() {
            return Some(PathBuf::from(String::from_utf8(output.stdout).unwrap().trim()));
        }
        let why = String::from_utf8_lossy(&output.stderr);
        if std::env::var("DENYLIST_ALLOW_MISSING_KUBERNETES_VALIDATE").as_deref() == Ok("1") {
            eprintln!(
                "\n!!!!!!!!!! SKIPPING Kubernetes schema validation: kubernetes-validate cannot be installed !!!!!!!!!!\n{why}\n"
            );
            None
        } else {
            panic!(
                "kubernetes-validate is needed to validate patched pods and cannot be installed:\n{why}\n\
                 (set DENYLIST_ALLOW_MISSING_KUBERNETES_VALIDATE=1 to skip this check loudly)"
            );
        }
    })
    .as_ref()
}

/// Finds a container by name in `containers` or `initContainers`.
pub(crate) fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .unwrap_or_else(|| panic!("pod has no {list}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} entry named {name}"))
}

/// The value of env var `name` in a container, if set.
pub(crate) fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

/// Whether the container mounts the socket volume at /var/run/denylist.
pub(crate) fn mounts_socket(container: &Value) -> bool {
    container["volumeMounts"].as_array().is_some_and(|m| {
        m.iter()
            .any(|m| m["name"] == "denylist-socket" && m["mountPath"] == "/var/run/denylist")
    })
}
