//! The trusted publisher keys that check what `denylistctl` reads back: `--trust` keys
//! (full authority) and the `[nats]` trusted publishers of a sidecar configuration file
//! (`--trust-config`), scoped keys with their scopes.
//!
//! Scopes matter here: `snapshot create` bakes every accepted event into one snapshot
//! that sidecars apply under the snapshot signer's full authority. A scoped key (the
//! signal receiver's) passed as a plain `--trust` key would let its out-of-scope events
//! into the snapshot; left out altogether, its in-scope revocations would be missing
//! from it, and a sidecar starting from that snapshot would never apply them.

use std::path::Path;

use anyhow::Context as _;
use denylist_proto::envelope::TrustedKeys;
use denylist_proto::trust::{self, TrustedPublisher};
use serde::Deserialize;

/// The part of a sidecar configuration file read here; every other key is ignored.
#[derive(Debug, Default, Deserialize)]
struct SidecarFile {
    #[serde(default)]
    nats: NatsTrust,
}

#[derive(Debug, Default, Deserialize)]
struct NatsTrust {
    #[serde(default)]
    trusted_publishers: Vec<String>,
    #[serde(default)]
    trusted_publisher: Vec<TrustedPublisher>,
}

/// The keys of `--trust` (full authority) and of the `--trust-config` file; `None` when
/// neither is given (signatures are then not checked). A key listed twice, in either or
/// both, is an error: its scope would be ambiguous.
pub(crate) fn trusted(
    keys: &[String],
    config: Option<&Path>,
) -> anyhow::Result<Option<TrustedKeys>> {
    let Some(path) = config else {
        if keys.is_empty() {
            return Ok(None);
        }
        return Ok(Some(
            TrustedKeys::from_public_keys(keys).context("--trust")?,
        ));
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--trust-config {}: cannot read it", path.display()))?;
    let file: SidecarFile = toml::from_str(&text).with_context(|| {
        format!(
            "--trust-config {}: not a sidecar configuration",
            path.display()
        )
    })?;
    let mut trusted =
        trust::trusted_keys(&file.nats.trusted_publishers, &file.nats.trusted_publisher)
            .with_context(|| format!("--trust-config {}", path.display()))?;
    for (i, key) in keys.iter().enumerate() {
        trusted.add(key, None).with_context(|| {
            format!("--trust key #{i} (with --trust-config {})", path.display())
        })?;
    }
    Ok(Some(trusted))
}

#[cfg(test)]
mod tests {
    use denylist_proto::envelope::SigningKey;

    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn a_sidecar_config_gives_its_keys_with_their_scopes() {
        let (admin, _) = SigningKey::generate().unwrap();
        let (receiver, _) = SigningKey::generate().unwrap();
        let (extra, _) = SigningKey::generate().unwrap();
        let file = write(&format!(
            "name = \"web-1\"\n[denylist]\nsource = \"nats\"\n[nats]\nservers = [\"nats://x:4222\"]\n\
             trusted_publishers = [\"{}\"]\n[[nats.trusted_publisher]]\nkey = \"{}\"\n\
             kinds = [\"session\"]\n[[issuers]]\nissuer = \"https://idp\"\n",
            admin.public_key(),
            receiver.public_key()
        ));
        let keys = trusted(&[extra.public_key()], Some(file.path()))
            .unwrap()
            .unwrap();
        assert_eq!(keys.len(), 3);
        assert!(keys.has_full_authority(admin.key_id()));
        assert!(keys.has_full_authority(extra.key_id()));
        assert!(keys.contains(receiver.key_id()));
        assert!(!keys.has_full_authority(receiver.key_id()));
    }

    #[test]
    fn without_either_nothing_is_checked_and_bad_files_name_the_fault() {
        assert!(trusted(&[], None).unwrap().is_none());
        let (key, _) = SigningKey::generate().unwrap();
        let cases = [
            ("[nats]\n".to_owned(), "nats.trusted_publishers"),
            (
                format!(
                    "[[nats.trusted_publisher]]\nkey = \"{}\"\nkinds = [\"everything\"]\n",
                    key.public_key()
                ),
                "nats.trusted_publisher[0].kinds[0]",
            ),
            ("[nats\n".to_owned(), "not a sidecar configuration"),
            (
                format!(
                    "[[nats.trusted_publisher]]\nkey = \"{}\"\nkind = [\"jti\"]\n",
                    key.public_key()
                ),
                "not a sidecar configuration",
            ),
        ];
        for (text, expected) in cases {
            let file = write(&text);
            let err = format!("{:#}", trusted(&[], Some(file.path())).unwrap_err());
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        let file = write(&format!(
            "[nats]\ntrusted_publishers = [\"{}\"]\n",
            key.public_key()
        ));
        let err = format!(
            "{:#}",
            trusted(&[key.public_key()], Some(file.path())).unwrap_err()
        );
        assert!(err.contains("listed twice"), "{err}");
        let missing = Path::new("/nonexistent/sidecar.toml");
        let err = format!("{:#}", trusted(&[], Some(missing)).unwrap_err());
        assert!(err.contains("cannot read it"), "{err}");
    }
}
