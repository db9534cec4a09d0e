//! The Verify path: read the header → choose the issuer and key → check signature and
//! claims with jsonwebtoken → denylist's own claim checks → the denylist. It reads top
//! to bottom in [`Verifier::verify`].
//!
//! [`jsonwebtoken::decode`] checks the signature and, under a [`Validation`] built once
//! per issuer and algorithm, the registered claims it knows: `alg` in the allowlist,
//! `iss` present and equal to the issuer, `exp` present (when required), `aud` present
//! and accepted (when the issuer names audiences). denylist's checks sit on top where
//! jsonwebtoken has none: `alg: none`, algorithm confusion, `crit`, JWE and the size
//! bound ([`jws`]); key selection by `kid` without guessing and HMAC secret lengths
//! ([`crate::keys`]); and here, the claims' JSON types, the times (`exp`, `nbf`, `iat`
//! against the sidecar's [`Clock`](crate::clock::Clock): jsonwebtoken reads the system
//! clock, which tests cannot move), the maximum lifetime, `jti` and `iat` required.
//! When jsonwebtoken refuses the claims, the same checks run on the payload to give the
//! reason, so every fault has one reason whichever check met it first.
//!
//! A bounded cache of verified tokens (keyed by a secret-keyed 128-bit hash of the
//! whole token) lets repeats skip everything but the revocation check. The cache never
//! skips the revocation check, and an entry is only used while the token is unexpired
//! and its key is still the issuer's current key.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::Hasher as _;
use std::sync::{Arc, OnceLock};

use denylist_proto::pb::Reason;
use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};
use siphasher::sip128::{Hasher128 as _, SipHasher13};

use crate::algorithm::Algorithm;
use crate::clock::SharedClock;
use crate::config::{Config, IssuerConfig, StalenessPolicy};
use crate::denylist::{Denylist, Revocation, TokenFacts};
use crate::freshness::{Freshness, FreshnessView};
use crate::jws::{self, Claims, Rejection, StrictObject};
use crate::keys::{IssuerKeys, KeyLookupError, KeyStore, VerifyingKey};

/// One trusted issuer: its policy from config, its jsonwebtoken validations and its
/// live key set.
#[derive(Debug)]
pub struct IssuerPolicy {
    /// Exact `iss`.
    pub issuer: String,
    audiences: Vec<String>,
    leeway: i64,
    max_lifetime: i64,
    require_exp: bool,
    require_jti: bool,
    require_iat: bool,
    symmetric: bool,
    /// Per allowed algorithm (indexed like [`Algorithm::ALL`]): jsonwebtoken checks
    /// that every algorithm of a `Validation` fits the key's family, so an issuer with
    /// RSA and EC keys needs one per algorithm.
    validations: [Option<Validation>; Algorithm::ALL.len()],
    keys: Arc<IssuerKeys>,
}

impl IssuerPolicy {
    fn new(config: &IssuerConfig, keys: Arc<IssuerKeys>) -> Self {
        Self {
            issuer: config.issuer.clone(),
            audiences: config.audiences.clone(),
            leeway: secs(config.leeway),
            max_lifetime: secs(config.max_lifetime),
            require_exp: config.require_exp,
            require_jti: config.require_jti,
            require_iat: config.require_iat,
            symmetric: config.is_symmetric(),
            validations: Algorithm::ALL.map(|alg| {
                config
                    .algorithms
                    .contains(&alg)
                    .then(|| validation(config, alg))
            }),
            keys,
        }
    }

    /// The validation for `alg`, if the issuer allows it.
    fn validation(&self, alg: Algorithm) -> Option<&Validation> {
        // `Algorithm::ALL` follows declaration order (checked in `keys::key_set`).
        self.validations[alg as usize].as_ref()
    }
}

/// What jsonwebtoken checks for one issuer and algorithm. Times are left to
/// [`check_claims`]: jsonwebtoken compares them with the system clock.
fn validation(config: &IssuerConfig, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg.to_jwt());
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    v.set_issuer(&[&config.issuer]);
    let mut required = vec!["iss"];
    if config.require_exp {
        required.push("exp");
    }
    if config.audiences.is_empty() {
        // Without configured audiences an `aud` is not checked (jsonwebtoken would
        // refuse every token that has one).
        v.validate_aud = false;
    } else {
        v.set_audience(&config.audiences);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A token whose signature and claims have been verified.
#[derive(Debug)]
pub struct VerifiedToken {
    /// The issuer it was verified against.
    pub issuer: Arc<IssuerPolicy>,
    /// Header `alg`.
    pub alg: Algorithm,
    /// The payload and its registered claims.
    pub claims: Claims,
    kid: TokenKid,
    key: Arc<VerifyingKey>,
    /// See [`VerifiedToken::claims_field`].
    claims_field: OnceLock<Box<[u8]>>,
}

/// Where the header `kid` is kept: nowhere when the token named the key that verified
/// it (the usual case; the key holds the same string), else a copy.
#[derive(Debug)]
enum TokenKid {
    None,
    SameAsKey,
    /// A `kid` no key has, verified by the issuer's one kid-less key.
    Other(Box<str>),
}

impl VerifiedToken {
    /// Header `kid`.
    pub fn kid(&self) -> Option<&str> {
        match &self.kid {
            TokenKid::None => None,
            TokenKid::SameAsKey => self.key.kid(),
            TokenKid::Other(kid) => Some(kid),
        }
    }

    /// The `claims` field of a gRPC Verify answer (`denylist.v1.Claims`, the payload
    /// as a `google.protobuf.Struct` among them), encoded with its key and length: made
    /// on first use and kept with the token, so a token answered from the cache is
    /// answered with a copy of these bytes rather than rebuilding and re-encoding its
    /// claims. Everything in it is fixed by the token and its verifying key.
    pub fn claims_field(&self) -> &[u8] {
        self.claims_field
            .get_or_init(|| crate::grpc::encode_claims_field(self))
    }

    /// The facts the denylist matches on.
    ///
    /// `kid` is the header's, or when the header names none, the verifying key's: a
    /// token that leaves `kid` out is still verified by the issuer's only fitting key,
    /// and must not escape a `key` rule against that key.
    pub fn facts(&self) -> TokenFacts<'_> {
        TokenFacts {
            issuer: &self.issuer.issuer,
            jti: self.claims.jti(),
            subject: self.claims.sub(),
            session: self.claims.sid(),
            kid: self.kid().or_else(|| self.key.kid()),
            issued_at: self.claims.iat(),
        }
    }
}

/// The answer to one Verify call.
#[derive(Debug)]
pub struct Verdict {
    /// `Reason::Ok` when valid.
    pub reason: Reason,
    /// Explanation (empty when valid).
    pub detail: Cow<'static, str>,
    /// The verified token, present whenever the signature held (also for expired or revoked tokens).
    pub token: Option<Arc<VerifiedToken>>,
    /// The matching rule, when revoked.
    pub revocation: Option<Revocation>,
    /// Denylist freshness at the time of the answer.
    pub freshness: FreshnessView,
}

impl Verdict {
    /// Whether the token is accepted.
    pub fn is_valid(&self) -> bool {
        self.reason == Reason::Ok
    }
}

/// A rejection, with the token when its signature held.
type Refusal = (Rejection, Option<Arc<VerifiedToken>>);

/// Verifies tokens against the configured issuers and the denylist.
#[derive(Debug)]
pub struct Verifier {
    issuers: HashMap<String, Arc<IssuerPolicy>>,
    /// With a single issuer, its keys are tried without reading the payload first.
    single: Option<Arc<IssuerPolicy>>,
    denylist: Arc<Denylist>,
    freshness: Arc<Freshness>,
    cache: Option<quick_cache::sync::Cache<u128, Arc<VerifiedToken>>>,
    cache_key: (u64, u64),
    clock: SharedClock,
    max_token_bytes: usize,
}

impl Verifier {
    /// Builds a verifier over loaded keys.
    pub fn new(
        config: &Config,
        keys: &KeyStore,
        denylist: Arc<Denylist>,
        freshness: Arc<Freshness>,
        clock: SharedClock,
    ) -> Self {
        // jsonwebtoken picks its crypto backend from its crate features, and panics on
        // the first `decode` when a build enables both (or neither). Name aws-lc-rs
        // explicitly: if another crate in a build ever enabled `rust_crypto` too, every
        // Verify would otherwise panic. Installing twice is refused, harmlessly.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER,
        );
        let issuers: HashMap<_, _> = config
            .issuers
            .iter()
            .filter_map(|c| {
                let k = keys.issuer(&c.issuer)?;
                Some((
                    c.issuer.clone(),
                    Arc::new(IssuerPolicy::new(c, Arc::clone(k))),
                ))
            })
            .collect();
        let single = (issuers.len() == 1)
            .then(|| issuers.values().next().cloned())
            .flatten();
        let cache = (config.verify.cache_entries > 0)
            .then(|| quick_cache::sync::Cache::new(config.verify.cache_entries));
        Self {
            issuers,
            single,
            denylist,
            freshness,
            cache,
            cache_key: (random_u64(), random_u64()),
            clock,
            max_token_bytes: config.verify.max_token_bytes,
        }
    }

    /// The denylist this verifier consults.
    pub fn denylist(&self) -> &Arc<Denylist> {
        &self.denylist
    }

    /// The freshness tracker.
    pub fn freshness(&self) -> &Arc<Freshness> {
        &self.freshness
    }

    /// Verifies a token. On an unknown `kid`, refetches the issuer's JWKS (rate
    /// limited by the key source) and tries once more.
    pub async fn verify_with_refetch(&self, token: &str) -> Verdict {
        let verdict = self.verify(token);
        if verdict.reason != Reason::UnknownKey {
            return verdict;
        }
        let Some(issuer) = self.issuer_for_unknown_key(token) else {
            return verdict;
        };
        if issuer.keys.refetch_for_unknown_kid().await {
            self.verify(token)
        } else {
            verdict
        }
    }

    fn issuer_for_unknown_key(&self, token: &str) -> Option<Arc<IssuerPolicy>> {
        if let Some(single) = &self.single {
            return Some(Arc::clone(single));
        }
        let payload = jws::decode_payload(token.split('.').nth(1)?).ok()?;
        self.issuer_of(&payload).ok().cloned()
    }

    /// With several issuers, the one the unverified payload's `iss` names: the only
    /// claim read before the signature holds.
    fn issuer_of(&self, payload: &Map<String, Value>) -> Result<&Arc<IssuerPolicy>, Rejection> {
        match payload.get("iss") {
            None => Err(Rejection::new(
                Reason::MissingClaim,
                "`iss` is missing: with several issuers it chooses the keys",
            )),
            Some(Value::String(iss)) => self.issuers.get(iss).ok_or(Rejection::new(
                Reason::IssuerUnknown,
                "the token's issuer is not configured",
            )),
            Some(_) => Err(Rejection::new(
                Reason::InvalidClaim,
                "payload: `iss` must be a string",
            )),
        }
    }

    /// Verifies a token without awaiting anything: the hot path.
    pub fn verify(&self, token: &str) -> Verdict {
        // One clock read serves the claims (seconds) and the freshness view (ms).
        let now_ms = self.clock.now_ms();
        let now = now_ms.div_euclid(1000);
        let freshness = self.freshness.view_at(now_ms);
        let token_hash = self.cache.as_ref().map(|_| self.token_hash(token));

        let verified = match self.cached(token_hash, now) {
            Some(hit) => hit,
            None => match self.check_signature_and_claims(token, now) {
                Ok(v) => {
                    if let (Some(cache), Some(h)) = (&self.cache, token_hash) {
                        cache.insert(h, Arc::clone(&v));
                    }
                    v
                }
                Err((rejection, token)) => {
                    return Verdict {
                        reason: rejection.reason,
                        detail: rejection.detail,
                        token,
                        revocation: None,
                        freshness,
                    };
                }
            },
        };

        // The revocation check runs on every call, cached or not.
        if let Some(revocation) = self.denylist.is_revoked(&verified.facts()) {
            return Verdict {
                reason: Reason::Revoked,
                detail: Cow::Owned(format!(
                    "revoked by {} rule {}",
                    revocation.kind, revocation.event_id
                )),
                token: Some(verified),
                revocation: Some(revocation),
                freshness,
            };
        }
        if freshness.stale && self.freshness.policy() == StalenessPolicy::FailClosed {
            return Verdict {
                reason: Reason::DenylistStale,
                detail: Cow::Owned(format!(
                    "the denylist has not heard from its source for {} ms",
                    freshness.age_ms
                )),
                token: Some(verified),
                revocation: None,
                freshness,
            };
        }
        Verdict {
            reason: Reason::Ok,
            detail: Cow::Borrowed(""),
            token: Some(verified),
            revocation: None,
            freshness,
        }
    }

    fn token_hash(&self, token: &str) -> u128 {
        let mut h = SipHasher13::new_with_keys(self.cache_key.0, self.cache_key.1);
        h.write(token.as_bytes());
        h.finish128().as_u128()
    }

    /// A cache hit that is still usable: unexpired, and signed by a key the issuer
    /// still holds (a key rotated out of the JWKS invalidates its tokens' entries).
    fn cached(&self, hash: Option<u128>, now: i64) -> Option<Arc<VerifiedToken>> {
        let (cache, hash) = (self.cache.as_ref()?, hash?);
        let hit = cache.get(&hash)?;
        let unexpired = hit
            .claims
            .exp()
            .is_none_or(|exp| now <= exp.saturating_add(hit.issuer.leeway));
        let key_current = hit
            .issuer
            .keys
            .key_for(hit.kid(), hit.alg)
            .is_ok_and(|k| Arc::ptr_eq(&k, &hit.key));
        if unexpired && key_current {
            Some(hit)
        } else {
            cache.remove(&hash);
            None
        }
    }

    fn check_signature_and_claims(
        &self,
        token: &str,
        now: i64,
    ) -> Result<Arc<VerifiedToken>, Refusal> {
        let no_claims = |r: Rejection| (r, None);
        let segments = jws::split(token, self.max_token_bytes).map_err(no_claims)?;
        let header = jws::read_header(&segments).map_err(no_claims)?;
        // Checked only now, so that an unsigned `alg: none` token gets its own reason.
        if segments.signature.is_empty() {
            return Err(no_claims(Rejection::new(
                Reason::BadSignature,
                "the signature is empty",
            )));
        }

        // Borrowed: the one clone goes into the verified token. With several issuers
        // the payload is read (strictly) for `iss`, and kept for the claims.
        let (issuer, peeked): (&Arc<IssuerPolicy>, _) = match &self.single {
            Some(single) => (single, None),
            None => {
                let payload = jws::decode_payload(segments.payload).map_err(no_claims)?;
                (self.issuer_of(&payload).map_err(no_claims)?, Some(payload))
            }
        };

        let alg = header.alg;
        if alg.is_hmac() && !issuer.symmetric {
            return Err(no_claims(Rejection::with(
                Reason::AlgorithmConfusion,
                format!("{alg} (HMAC) on an issuer configured with public keys"),
            )));
        }
        let Some(validation) = issuer.validation(alg) else {
            return Err(no_claims(Rejection::with(
                Reason::AlgorithmNotAllowed,
                format!("{alg} is not in the issuer's allowed algorithms"),
            )));
        };
        let key = issuer
            .keys
            .key_for(header.kid.as_deref(), alg)
            .map_err(|e| {
                no_claims(match e {
                    KeyLookupError::UnknownKey => Rejection::new(
                        Reason::UnknownKey,
                        "no key of the issuer matches the token's `kid`",
                    ),
                    KeyLookupError::NoKeys => {
                        Rejection::new(Reason::UnknownKey, "the issuer has no usable keys loaded")
                    }
                })
            })?;
        if !key.accepts(alg) {
            return Err(no_claims(Rejection::with(
                Reason::AlgorithmNotAllowed,
                format!("the key named by `kid` cannot verify {alg}"),
            )));
        }

        // The signature, then the claims jsonwebtoken checks. The payload is read only
        // once the signature holds (or was read strictly above, for `iss`).
        let read = if peeked.is_some() {
            jsonwebtoken::decode::<IgnoredAny>(token, key.decoding_key(), validation).map(|_| None)
        } else {
            jsonwebtoken::decode::<StrictObject>(token, key.decoding_key(), validation)
                .map(|data| Some(data.claims.0))
        };
        let (read, refused) = match read {
            Ok(read) => (read, None),
            Err(e) => {
                let refused = refused_by_jsonwebtoken(e.into_kind()).map_err(no_claims)?;
                (None, Some(refused))
            }
        };
        let payload = match read.or(peeked) {
            Some(payload) => payload,
            // jsonwebtoken refused the claims of a token whose signature holds (it reads
            // them only then): read them again, for the verdict and its reason.
            None => jws::decode_payload(segments.payload).map_err(no_claims)?,
        };
        let kid = match header.kid {
            None => TokenKid::None,
            Some(kid) if key.kid() == Some(&*kid) => TokenKid::SameAsKey,
            Some(kid) => TokenKid::Other(kid.into()),
        };
        let verified = Arc::new(VerifiedToken {
            issuer: Arc::clone(issuer),
            alg,
            claims: Claims::new(payload).map_err(no_claims)?,
            kid,
            key,
            claims_field: OnceLock::new(),
        });
        // Ours first: the same fault gets the same reason whether jsonwebtoken saw it
        // or not. What jsonwebtoken refused and ours let through keeps its reason.
        match check_claims(issuer, &verified.claims, now)
            .err()
            .or(refused)
        {
            None => Ok(verified),
            Some(r) => Err((r, Some(verified))),
        }
    }
}

/// Maps a jsonwebtoken error. `Ok` with the rejection when it refused the claims of a
/// token whose signature holds (the caller then reads the claims itself); `Err` when the
/// token failed before that.
fn refused_by_jsonwebtoken(kind: ErrorKind) -> Result<Rejection, Rejection> {
    let claim = |reason: Reason, detail: String| Ok(Rejection::with(reason, detail));
    match kind {
        ErrorKind::InvalidSignature => Err(Rejection::new(
            Reason::BadSignature,
            "the signature does not verify",
        )),
        // The header was read before: only the signature, or a signed payload that is
        // not base64url, can fail to decode.
        ErrorKind::Base64(_) => Err(Rejection::new(
            Reason::Malformed,
            "the signature or the signed payload is not base64url",
        )),
        // The payload as JSON (read again by the caller: if it is not a strict object,
        // that is the reason), or a registered claim jsonwebtoken cannot read: it reads
        // an `exp` or `nbf` that is an object or an array as broken JSON.
        ErrorKind::Json(_) => claim(
            Reason::InvalidClaim,
            "payload: a registered claim has the wrong type".to_owned(),
        ),
        ErrorKind::Utf8(_) => Err(Rejection::new(
            Reason::Malformed,
            "payload is not valid UTF-8",
        )),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Err(Rejection::new(
            Reason::AlgorithmNotAllowed,
            "the algorithm does not fit the issuer or the key",
        )),
        ErrorKind::MissingRequiredClaim(c) => {
            claim(Reason::MissingClaim, format!("`{c}` is missing"))
        }
        ErrorKind::InvalidClaimFormat(c) => claim(
            Reason::InvalidClaim,
            format!("payload: `{c}` has the wrong type"),
        ),
        ErrorKind::InvalidIssuer => claim(
            Reason::IssuerUnknown,
            "`iss` does not match the issuer whose key signed the token".to_owned(),
        ),
        ErrorKind::InvalidAudience => claim(
            Reason::AudienceMismatch,
            "no `aud` value is an accepted audience".to_owned(),
        ),
        ErrorKind::ExpiredSignature => claim(Reason::Expired, "expired".to_owned()),
        ErrorKind::ImmatureSignature => {
            claim(Reason::NotYetValid, "not valid yet (`nbf`)".to_owned())
        }
        // Key errors: the key store only holds keys jsonwebtoken's provider can use.
        other => Err(Rejection::with(
            Reason::BadSignature,
            format!("jsonwebtoken could not check the signature: {other:?}"),
        )),
    }
}

/// denylist's claim checks, in the order that decides the reason: `iss`, `exp`, `nbf`,
/// `iat` in the future, the lifetime, `aud`, then the claims the denylist needs (`jti`,
/// `iat`). The presence and value checks jsonwebtoken also makes are repeated here so
/// that a token's reason does not depend on which of the two met a fault first.
fn check_claims(issuer: &IssuerPolicy, c: &Claims, now: i64) -> Result<(), Rejection> {
    match c.iss() {
        None => return Err(Rejection::new(Reason::MissingClaim, "`iss` is missing")),
        Some(iss) if iss != issuer.issuer => {
            return Err(Rejection::new(
                Reason::IssuerUnknown,
                "`iss` does not match the issuer whose key signed the token",
            ));
        }
        Some(_) => {}
    }
    let leeway = issuer.leeway;
    let (exp, nbf, iat) = (c.exp(), c.nbf(), c.iat());
    match exp {
        None if issuer.require_exp => {
            return Err(Rejection::new(Reason::MissingClaim, "`exp` is missing"));
        }
        Some(exp) if now > exp.saturating_add(leeway) => {
            return Err(Rejection::with(
                Reason::Expired,
                // Saturating: `exp` is the token's, and may be as low as i64::MIN.
                format!("expired {} s ago", now.saturating_sub(exp)),
            ));
        }
        _ => {}
    }
    if let Some(nbf) = nbf
        && now < nbf.saturating_sub(leeway)
    {
        return Err(Rejection::with(
            Reason::NotYetValid,
            format!(
                "not valid for another {} s (`nbf`)",
                nbf.saturating_sub(now)
            ),
        ));
    }
    if let Some(iat) = iat
        && now < iat.saturating_sub(leeway)
    {
        return Err(Rejection::new(
            Reason::NotYetValid,
            "`iat` lies in the future",
        ));
    }
    if let Some(exp) = exp {
        let from = iat.unwrap_or(now);
        if exp.saturating_sub(from) > issuer.max_lifetime {
            return Err(Rejection::with(
                Reason::LifetimeTooLong,
                format!(
                    "lifetime {} s exceeds the issuer's maximum of {} s",
                    exp.saturating_sub(from),
                    issuer.max_lifetime
                ),
            ));
        }
    }
    if !issuer.audiences.is_empty() {
        let mut aud = c.audiences();
        if aud.len() == 0 {
            return Err(Rejection::new(Reason::MissingClaim, "`aud` is missing"));
        }
        if !aud.any(|a| issuer.audiences.iter().any(|ok| ok == a)) {
            return Err(Rejection::new(
                Reason::AudienceMismatch,
                "no `aud` value is an accepted audience",
            ));
        }
    }
    if issuer.require_jti && c.jti().is_none_or(str::is_empty) {
        return Err(Rejection::new(
            Reason::MissingClaim,
            "`jti` is missing (required so the token can be revoked)",
        ));
    }
    if issuer.require_iat && iat.is_none() {
        return Err(Rejection::new(
            Reason::MissingClaim,
            "`iat` is missing (required so cut-off revocations can be judged)",
        ));
    }
    Ok(())
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // aws-lc's system RNG does not fail on Linux; a zero key would only weaken the
    // cache against collision attacks, so fall back rather than abort.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        tracing::error!("system RNG failed; verified-token cache key is weak");
    }
    u64::from_le_bytes(b)
}

impl Verifier {
    /// The revocation check alone, for callers that verify signatures themselves.
    pub fn check(&self, facts: &TokenFacts<'_>) -> (Option<Revocation>, FreshnessView) {
        (self.denylist.is_revoked(facts), self.freshness.view())
    }
}

#[cfg(test)]
mod tests;
