//! One issuer's keys at one moment: immutable, indexed for the lookups a token needs.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::digest;

use super::{KeyLookupError, VerifyingKey};
use crate::algorithm::Algorithm;

const ALGORITHMS: usize = Algorithm::ALL.len();

// `key_for` indexes by `alg as usize`: that holds while `ALL` follows declaration order.
const _: () = {
    let mut i = 0;
    while i < ALGORITHMS {
        assert!(Algorithm::ALL[i] as usize == i);
        i += 1;
    }
};

/// An immutable key set. Built off the hot path; every lookup answer is precomputed
/// so [`KeySet::key_for`] is a hash lookup or an array index and an `Arc` clone.
#[derive(Debug, Default)]
pub(super) struct KeySet {
    keys: Vec<Arc<VerifyingKey>>,
    /// Keys by `kid`. Usually one per kid; several when a JWKS repeats a kid.
    by_kid: HashMap<String, Vec<Arc<VerifyingKey>>>,
    /// Per algorithm: the only key (with or without kid) that accepts it, if exactly one does.
    only_key: [Option<Arc<VerifyingKey>>; ALGORITHMS],
    /// Per algorithm: the only kid-less key that accepts it, if exactly one does.
    only_kidless_key: [Option<Arc<VerifyingKey>>; ALGORITHMS],
    /// Digest over every key's kid, alg and fingerprint, in a canonical order.
    digest: [u8; 32],
}

impl KeySet {
    pub(super) fn new(keys: Vec<VerifyingKey>) -> Self {
        let keys: Vec<Arc<VerifyingKey>> = keys.into_iter().map(Arc::new).collect();
        let mut by_kid: HashMap<String, Vec<Arc<VerifyingKey>>> = HashMap::new();
        for key in &keys {
            if let Some(kid) = key.kid() {
                by_kid.entry(kid.to_owned()).or_default().push(key.clone());
            }
        }
        let only = |kidless: bool, alg: Algorithm| {
            let mut fitting = keys
                .iter()
                .filter(|k| k.accepts(alg) && (!kidless || k.kid().is_none()));
            match (fitting.next(), fitting.next()) {
                (Some(k), None) => Some(k.clone()),
                _ => None,
            }
        };
        let only_key = Algorithm::ALL.map(|alg| only(false, alg));
        let only_kidless_key = Algorithm::ALL.map(|alg| only(true, alg));

        let mut entries: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| {
                let mut e = Vec::new();
                e.extend_from_slice(k.fingerprint());
                e.extend_from_slice(k.algorithm().map_or("", |a| a.name()).as_bytes());
                e.push(0);
                if let Some(kid) = k.kid() {
                    e.push(1);
                    e.extend_from_slice(kid.as_bytes());
                }
                e
            })
            .collect();
        entries.sort();
        let mut ctx = digest::Context::new(&digest::SHA256);
        for e in &entries {
            ctx.update(&(e.len() as u64).to_be_bytes());
            ctx.update(e);
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ctx.finish().as_ref());

        Self {
            keys,
            by_kid,
            only_key,
            only_kidless_key,
            digest,
        }
    }

    /// See [`super::IssuerKeys::key_for`].
    #[inline]
    pub(super) fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyingKey>, KeyLookupError> {
        if self.keys.is_empty() {
            return Err(KeyLookupError::NoKeys);
        }
        // `Algorithm::ALL` follows declaration order (checked at compile time above).
        let index = alg as usize;
        match kid {
            Some(kid) => match self.by_kid.get(kid).map(Vec::as_slice) {
                Some([key]) => Ok(key.clone()),
                Some(several) => {
                    // A repeated kid: the one key that accepts `alg`, else no guessing.
                    let mut fitting = several.iter().filter(|k| k.accepts(alg));
                    match (fitting.next(), fitting.next()) {
                        (Some(key), None) => Ok(key.clone()),
                        _ => Err(KeyLookupError::UnknownKey),
                    }
                }
                None => self.only_kidless_key[index]
                    .clone()
                    .ok_or(KeyLookupError::UnknownKey),
            },
            None => self.only_key[index]
                .clone()
                .ok_or(KeyLookupError::UnknownKey),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether two sets hold the same keys (same material, kids and algs; order aside).
    pub(super) fn same_keys(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}
