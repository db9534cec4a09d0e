//! The Verify path: parse → find key → check signature → check claims → check the
//! denylist. It reads top to bottom in [`Verifier::verify`].
//!
//! A bounded cache of verified tokens (keyed by a secret-keyed 128-bit hash of the
//! whole token) lets repeats skip the header parse and signature check. The cache
//! never skips the revocation check, and an entry is only used while the token is
//! unexpired and its key is still the issuer's current key.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::Hasher as _;
use std::sync::Arc;

use denylist_proto::pb::Reason;
use siphasher::sip128::{Hasher128 as _, SipHasher13};

use crate::algorithm::Algorithm;
use crate::clock::SharedClock;
use crate::config::{Config, IssuerConfig, StalenessPolicy};
use crate::denylist::{Denylist, Revocation, TokenFacts};
use crate::freshness::{Freshness, FreshnessView};
use crate::jws::{self, Claims, HeaderBuf, Rejection};
use crate::keys::{IssuerKeys, KeyLookupError, KeyStore, SignatureError, VerifyingKey};

/// One trusted issuer: its policy from config and its live key set.
#[derive(Debug)]
pub struct IssuerPolicy {
    /// Exact `iss`.
    pub issuer: String,
    algorithms: Vec<Algorithm>,
    audiences: Vec<String>,
    leeway: i64,
    max_lifetime: i64,
    require_exp: bool,
    require_jti: bool,
    symmetric: bool,
    keys: Arc<IssuerKeys>,
}

impl IssuerPolicy {
    fn new(config: &IssuerConfig, keys: Arc<IssuerKeys>) -> Self {
        Self {
            issuer: config.issuer.clone(),
            algorithms: config.algorithms.clone(),
            audiences: config.audiences.clone(),
            leeway: secs(config.leeway),
            max_lifetime: secs(config.max_lifetime),
            require_exp: config.require_exp,
            require_jti: config.require_jti,
            symmetric: config.is_symmetric(),
            keys,
        }
    }
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A token whose signature and claims have been verified.
///
/// Two allocations in all: this one and the payload buffer in [`Claims`], which the
/// claim strings borrow from.
#[derive(Debug)]
pub struct VerifiedToken {
    /// The issuer it was verified against.
    pub issuer: Arc<IssuerPolicy>,
    /// Header `alg`.
    pub alg: Algorithm,
    /// The decoded payload and its registered claims.
    pub claims: Claims,
    kid: TokenKid,
    key: Arc<VerifyingKey>,
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
        let payload = token.split('.').nth(1)?;
        self.issuers.get(&jws::peek_issuer(payload)?).cloned()
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

    #[allow(clippy::type_complexity)]
    fn check_signature_and_claims(
        &self,
        token: &str,
        now: i64,
    ) -> Result<Arc<VerifiedToken>, (Rejection, Option<Arc<VerifiedToken>>)> {
        let no_claims = |r: Rejection| (r, None);
        // A match rather than `map_err(..)?`, which moved the (large) parsed token
        // through one more `Result`.
        let mut header_buf = HeaderBuf::new();
        let jws = match jws::parse(token, self.max_token_bytes, &mut header_buf) {
            Ok(jws) => jws,
            Err(r) => return Err(no_claims(r)),
        };

        // Borrowed: the one clone goes into the verified token.
        let issuer: &Arc<IssuerPolicy> = match &self.single {
            Some(single) => single,
            None => {
                let iss = jws::peek_issuer(jws.payload_b64).ok_or_else(|| {
                    no_claims(Rejection::new(
                        Reason::Malformed,
                        "cannot read `iss` to choose the issuer's keys",
                    ))
                })?;
                self.issuers.get(&iss).ok_or_else(|| {
                    no_claims(Rejection::new(
                        Reason::IssuerUnknown,
                        "the token's issuer is not configured",
                    ))
                })?
            }
        };

        if jws.alg.is_hmac() && !issuer.symmetric {
            return Err(no_claims(Rejection::with(
                Reason::AlgorithmConfusion,
                format!(
                    "{} (HMAC) on an issuer configured with public keys",
                    jws.alg
                ),
            )));
        }
        if !issuer.algorithms.contains(&jws.alg) {
            return Err(no_claims(Rejection::with(
                Reason::AlgorithmNotAllowed,
                format!("{} is not in the issuer's allowed algorithms", jws.alg),
            )));
        }
        let key = issuer
            .keys
            .key_for(jws.kid.as_deref(), jws.alg)
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
        key.verify(jws.alg, jws.signing_input.as_bytes(), jws.signature())
            .map_err(|e| {
                no_claims(match e {
                    SignatureError::WrongKeyType => Rejection::with(
                        Reason::AlgorithmNotAllowed,
                        format!("the key named by `kid` cannot verify {}", jws.alg),
                    ),
                    SignatureError::Invalid => {
                        Rejection::new(Reason::BadSignature, "the signature does not verify")
                    }
                })
            })?;

        // Only now is the payload read.
        let claims = jws::parse_claims(jws.payload_b64).map_err(no_claims)?;
        let kid = match jws.kid {
            None => TokenKid::None,
            Some(kid) if key.kid() == Some(&*kid) => TokenKid::SameAsKey,
            Some(kid) => TokenKid::Other(kid.into()),
        };
        let verified = Arc::new(VerifiedToken {
            issuer: Arc::clone(issuer),
            alg: jws.alg,
            claims,
            kid,
            key,
        });
        match check_claims(issuer, &verified.claims, now) {
            Ok(()) => Ok(verified),
            Err(r) => Err((r, Some(verified))),
        }
    }
}

/// Registered-claim checks for a token whose signature holds.
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
