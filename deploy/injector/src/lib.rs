//! `denylist-injector`: a mutating admission webhook that adds the denylist sidecar to pods.
//!
//! A pod opts in with the annotation `denylist.dev/inject: "true"`, or by living in a
//! namespace labelled `denylist.dev/injection=enabled`; `denylist.dev/inject: "false"`
//! always opts out. AdmissionReview does not carry namespace labels, so the
//! `MutatingWebhookConfiguration` (deploy/base/injector) registers two webhooks with
//! complementary namespace selectors: labelled namespaces call [`server::PATH_NAMESPACE`]
//! (inject unless opted out, `failurePolicy: Fail`), all others call [`server::PATH_POD`]
//! (inject only annotated pods, `failurePolicy: Ignore`, so an injector outage never blocks a
//! pod that did not opt in). The injector needs no Kubernetes API access at all.
//!
//! Modules: [`inject`] decides and builds the patch (pure), [`server`] serves it over TLS
//! from [`tls`] with reloading certificates, [`metrics`] counts outcomes, [`settings`] and
//! [`cli`] hold the configuration, [`names`] every shared name, [`quantity`] resource values.

pub mod cli;
pub mod inject;
pub mod metrics;
pub mod names;
pub mod quantity;
pub mod server;
pub mod settings;
pub mod tls;

pub use inject::{Decision, OptIn, decide};
pub use metrics::InjectorMetrics;
pub use server::{App, Drained, run};
pub use settings::InjectionSettings;
pub use tls::{ReloadingCertResolver, server_config};
