//! The injector's Prometheus metrics, on a registry the caller owns (no global recorder).
//!
//! Counters are registered once, up front, so `/metrics` lists every series at zero from the
//! first scrape: an alert on "denials > 0" works before the first denial.

use metrics::{Counter, Key, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::inject::{DenyReason, SkipReason};

/// Why a request failed before a decision could be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body was not a well-formed `AdmissionReview` (HTTP 400).
    BadRequest,
    /// Building the response failed (HTTP 500).
    Internal,
    /// A TLS handshake failed or timed out.
    Tls,
    /// Re-reading the certificate or key failed; the previous pair stays in use.
    CertReload,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Internal => "internal",
            Self::Tls => "tls",
            Self::CertReload => "cert_reload",
        }
    }
}

const SKIPS: [SkipReason; 5] = [
    SkipReason::NotPodCreate,
    SkipReason::ExcludedNamespace,
    SkipReason::NotRequested,
    SkipReason::OptedOut,
    SkipReason::AlreadyInjected,
];
const DENIALS: [DenyReason; 5] = [
    DenyReason::InvalidAnnotation,
    DenyReason::NameClash,
    DenyReason::MountClash,
    DenyReason::PortClash,
    DenyReason::InvalidPod,
];
const ERRORS: [ErrorKind; 4] = [
    ErrorKind::BadRequest,
    ErrorKind::Internal,
    ErrorKind::Tls,
    ErrorKind::CertReload,
];

/// Counters of admission outcomes, and the handle that renders them.
pub struct InjectorMetrics {
    handle: PrometheusHandle,
    injections: Counter,
    skips: Vec<Counter>,
    denials: Vec<Counter>,
    errors: Vec<Counter>,
    cert_reloads: Counter,
}

impl std::fmt::Debug for InjectorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InjectorMetrics").finish_non_exhaustive()
    }
}

impl Default for InjectorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl InjectorMetrics {
    /// Creates a private registry with every series registered at zero.
    pub fn new() -> Self {
        let recorder: PrometheusRecorder = PrometheusBuilder::new().build_recorder();
        let meta = Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
        let describe = |name: &'static str, help: &'static str| {
            recorder.describe_counter(
                name.into(),
                Some(Unit::Count),
                SharedString::const_str(help),
            );
        };
        describe(
            "denylist_injector_injections_total",
            "Pods patched with the denylist sidecar.",
        );
        describe(
            "denylist_injector_skips_total",
            "Admission requests allowed without a patch, by reason.",
        );
        describe(
            "denylist_injector_denials_total",
            "Pods denied because they could not be injected safely, by reason.",
        );
        describe(
            "denylist_injector_errors_total",
            "Requests or connections that failed before a decision, by kind.",
        );
        describe(
            "denylist_injector_cert_reloads_total",
            "Successful reloads of a changed TLS certificate and key.",
        );
        let labelled = |name: &'static str, label: &'static str, value: &'static str| {
            recorder.register_counter(
                &Key::from_parts(name, vec![Label::new(label, value)]),
                &meta,
            )
        };
        Self {
            injections: recorder.register_counter(
                &Key::from_static_name("denylist_injector_injections_total"),
                &meta,
            ),
            skips: SKIPS
                .iter()
                .map(|r| labelled("denylist_injector_skips_total", "reason", r.as_str()))
                .collect(),
            denials: DENIALS
                .iter()
                .map(|r| labelled("denylist_injector_denials_total", "reason", r.as_str()))
                .collect(),
            errors: ERRORS
                .iter()
                .map(|k| labelled("denylist_injector_errors_total", "kind", k.as_str()))
                .collect(),
            cert_reloads: recorder.register_counter(
                &Key::from_static_name("denylist_injector_cert_reloads_total"),
                &meta,
            ),
            handle: recorder.handle(),
        }
    }

    /// Counts a patched pod.
    pub fn injected(&self) {
        self.injections.increment(1);
    }

    /// Counts a pod allowed without a patch.
    pub fn skipped(&self, reason: SkipReason) {
        let i = SKIPS.iter().position(|r| *r == reason).unwrap_or_default();
        self.skips[i].increment(1);
    }

    /// Counts a denied pod.
    pub fn denied(&self, reason: DenyReason) {
        let i = DENIALS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or_default();
        self.denials[i].increment(1);
    }

    /// Counts a failure before a decision.
    pub fn error(&self, kind: ErrorKind) {
        let i = ERRORS.iter().position(|k| *k == kind).unwrap_or_default();
        self.errors[i].increment(1);
    }

    /// Counts a certificate reload.
    pub fn cert_reloaded(&self) {
        self.cert_reloads.increment(1);
    }

    /// Renders every series in the Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}
