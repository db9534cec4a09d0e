//! The trusted publishers as a sidecar's `[nats]` section lists them: keys with full
//! authority (`trusted_publishers`) and keys with a [`Scope`]
//! (`[[nats.trusted_publisher]]`), turned into [`TrustedKeys`].
//!
//! The sidecar reads them from its configuration, and `denylistctl` from the same file
//! (`--trust-config`), so that what the CLI reads back or bakes into a snapshot is judged
//! exactly as the sidecars judge it: a scoped key's revocations are kept when in scope and
//! left out when not, never taken with full authority.

use serde::Deserialize;

use crate::envelope::{Scope, TrustedKeys};
use crate::events::RuleKind;

/// One trusted publisher key and what it may revoke (`[[nats.trusted_publisher]]`).
///
/// With neither `kinds` nor `issuers` the key has full authority, as one listed in
/// `trusted_publishers`. With either, it is scoped: its revocations outside the scope
/// are refused, and it may not lift, sign snapshots or sign heartbeats (see [`Scope`]).
/// With `heartbeats_only`, it signs the fleet heartbeat and may revoke nothing: the
/// heartbeat component's key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedPublisher {
    /// The public key (base64url, raw Ed25519), as `denylistctl keygen` prints it.
    pub key: String,
    /// The rule kinds it may revoke: `jti`, `subject`, `session`, `key`, `issuer`.
    /// Omitted: every kind.
    pub kinds: Option<Vec<String>>,
    /// The token issuers (exact `iss`) whose rules it may revoke. Omitted: every issuer.
    pub issuers: Option<Vec<String>>,
    /// Signs fleet heartbeats only (`denylistctl heartbeat`): revokes and lifts nothing.
    /// Default false.
    #[serde(default)]
    pub heartbeats_only: bool,
}

/// A trusted publisher entry that cannot be used; `field` is its path in the `[nats]`
/// section (e.g. `nats.trusted_publisher[1].kinds[0]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TrustError {
    /// The configuration field at fault.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> TrustError {
    TrustError {
        field: field.into(),
        message: message.into(),
    }
}

impl TrustedPublisher {
    /// The key's scope (`None`: full authority); `at` is the entry's field path.
    pub fn scope(&self, at: &str) -> Result<Option<Scope>, TrustError> {
        if self.heartbeats_only {
            if self.kinds.is_some() || self.issuers.is_some() {
                return Err(invalid(
                    format!("{at}.heartbeats_only"),
                    "a heartbeat key revokes nothing: leave out `kinds` and `issuers`",
                ));
            }
            return Ok(Some(Scope::heartbeats_only()));
        }
        if self.kinds.is_none() && self.issuers.is_none() {
            return Ok(None);
        }
        let kinds = self
            .kinds
            .as_deref()
            .map(|names| {
                let field = format!("{at}.kinds");
                let mut kinds = Vec::new();
                for (j, name) in names.iter().enumerate() {
                    let kind = name.parse::<RuleKind>().map_err(|_| {
                        invalid(
                            format!("{field}[{j}]"),
                            format!(
                                "unknown rule kind {name:?} (one of jti, subject, session, key, \
                                 issuer)"
                            ),
                        )
                    })?;
                    if kinds.contains(&kind) {
                        return Err(invalid(
                            format!("{field}[{j}]"),
                            format!("{name:?} listed twice"),
                        ));
                    }
                    kinds.push(kind);
                }
                nonempty(kinds, &field)
            })
            .transpose()?;
        let issuers = self
            .issuers
            .as_deref()
            .map(|issuers| {
                let field = format!("{at}.issuers");
                for (j, issuer) in issuers.iter().enumerate() {
                    if issuer.is_empty() || issuer.chars().any(char::is_control) {
                        return Err(invalid(
                            format!("{field}[{j}]"),
                            "must be an issuer (the exact `iss`), without control characters",
                        ));
                    }
                    if issuers[..j].contains(issuer) {
                        return Err(invalid(
                            format!("{field}[{j}]"),
                            format!("{issuer:?} listed twice"),
                        ));
                    }
                }
                nonempty(issuers.to_vec(), &field)
            })
            .transpose()?;
        Ok(Some(Scope {
            kinds,
            issuers,
            heartbeats_only: false,
        }))
    }
}

/// An empty scope list would let the key revoke nothing: almost surely a mistake
/// (leave the field out for "every").
fn nonempty<T>(list: Vec<T>, field: &str) -> Result<Vec<T>, TrustError> {
    if list.is_empty() {
        return Err(invalid(
            field,
            "must not be empty (leave it out to allow every one)",
        ));
    }
    Ok(list)
}

/// The trusted publisher keys of a `[nats]` section: `full` (`trusted_publishers`, full
/// authority) and each `scoped` entry (`[[nats.trusted_publisher]]`) with its scope. The
/// error names the field at fault: no key at all, a bad key, a key listed twice
/// (anywhere), an unknown or repeated kind, an empty list.
pub fn trusted_keys(
    full: &[String],
    scoped: &[TrustedPublisher],
) -> Result<TrustedKeys, TrustError> {
    if full.is_empty() && scoped.is_empty() {
        return Err(invalid(
            "nats.trusted_publishers",
            "list at least one publisher public key, here or in [[nats.trusted_publisher]] \
             (denylistctl keygen prints it)",
        ));
    }
    let mut trusted = TrustedKeys::default();
    for (i, key) in full.iter().enumerate() {
        trusted
            .add(key, None)
            .map_err(|e| invalid(format!("nats.trusted_publishers[{i}]"), e.to_string()))?;
    }
    for (i, publisher) in scoped.iter().enumerate() {
        let at = format!("nats.trusted_publisher[{i}]");
        let scope = publisher.scope(&at)?;
        trusted
            .add(&publisher.key, scope)
            .map_err(|e| invalid(format!("{at}.key"), e.to_string()))?;
    }
    Ok(trusted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::SigningKey;
    use crate::events::{Action, Event, Revoke};

    fn entry(key: &str, kinds: Option<&[&str]>, issuers: Option<&[&str]>) -> TrustedPublisher {
        let list = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        TrustedPublisher {
            key: key.to_owned(),
            kinds: kinds.map(list),
            issuers: issuers.map(list),
            heartbeats_only: false,
        }
    }

    #[test]
    fn full_and_scoped_keys_are_told_apart() {
        let (full, _) = SigningKey::generate().unwrap();
        let (scoped, _) = SigningKey::generate().unwrap();
        let (beat, _) = SigningKey::generate().unwrap();
        let mut heartbeat = entry(&beat.public_key(), None, None);
        heartbeat.heartbeats_only = true;
        let keys = trusted_keys(
            &[full.public_key()],
            &[
                entry(
                    &scoped.public_key(),
                    Some(&["session"]),
                    Some(&["https://idp"]),
                ),
                heartbeat,
            ],
        )
        .unwrap();
        assert_eq!(keys.len(), 3);
        assert!(keys.has_full_authority(full.key_id()));
        assert!(!keys.has_full_authority(scoped.key_id()));
        assert!(!keys.has_full_authority(beat.key_id()));
        assert!(!keys.has_full_authority("not-a-key"));

        let revoke = |kind: RuleKind, targets: Vec<String>| Event {
            event_id: format!("{kind}-1"),
            action: Action::Revoke(Revoke {
                kind,
                issuer: "https://idp".into(),
                targets,
                cutoff: if kind.has_cutoff() { 1_700_000_000 } else { 0 },
                expires_at: None,
            }),
            reason: "test".into(),
            actor: "tester".into(),
            created_at_ms: 1_700_000_000_000,
        };
        let in_scope = scoped.sign(&revoke(RuleKind::Session, vec!["s1".into()]));
        let out_of_scope = scoped.sign(&revoke(RuleKind::Issuer, Vec::new()));
        assert!(keys.open(&prost::Message::encode_to_vec(&in_scope)).is_ok());
        let refused = keys
            .open(&prost::Message::encode_to_vec(&out_of_scope))
            .unwrap_err();
        assert!(refused.to_string().contains("issuer"), "{refused}");
    }

    #[test]
    fn each_bad_entry_names_its_field() {
        let (key, _) = SigningKey::generate().unwrap();
        let key = key.public_key();
        let cases: Vec<(Vec<String>, Vec<TrustedPublisher>, &str)> = vec![
            (vec![], vec![], "nats.trusted_publishers"),
            (vec!["short".into()], vec![], "nats.trusted_publishers[0]"),
            (
                vec![key.clone()],
                vec![entry(&key, Some(&["session"]), None)],
                "nats.trusted_publisher[0].key",
            ),
            (
                vec![],
                vec![entry(&key, Some(&["session", "bogus"]), None)],
                "nats.trusted_publisher[0].kinds[1]",
            ),
            (
                vec![],
                vec![entry(&key, Some(&["jti", "jti"]), None)],
                "nats.trusted_publisher[0].kinds[1]",
            ),
            (
                vec![],
                vec![entry(&key, Some(&[]), None)],
                "nats.trusted_publisher[0].kinds",
            ),
            (
                vec![],
                vec![entry(&key, None, Some(&["a", "\u{7}"]))],
                "nats.trusted_publisher[0].issuers[1]",
            ),
            (
                vec![],
                vec![TrustedPublisher {
                    heartbeats_only: true,
                    ..entry(&key, Some(&["jti"]), None)
                }],
                "nats.trusted_publisher[0].heartbeats_only",
            ),
        ];
        for (full, scoped, field) in cases {
            let err = trusted_keys(&full, &scoped).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }
}
