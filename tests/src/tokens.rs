//! Test token issuers: HS256 secrets shared with the sidecars' config, and a builder for
//! tokens with exactly the claims a test needs (`jti`, `sub`, `sid`, `iat`, `exp`, and
//! the header `kid`).
//!
//! ```
//! let issuer = denylist_tests::Issuer::new("https://issuer.test");
//! let token = issuer.token().sub("alice").sid("s-1").mint();
//! assert_eq!(token.split('.').count(), 3);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

/// The issuer every [`crate::Fleet`] configures (`iss` of its tokens).
pub const ISSUER: &str = "https://issuer.test";
/// A second issuer, for `issuer` rules ("log everyone out") that must not touch [`ISSUER`].
pub const OTHER_ISSUER: &str = "https://other-issuer.test";
/// The key id tokens are signed with by default.
pub const DEFAULT_KID: &str = "k1";
/// A second key of each issuer, for `key` rules that must not touch [`DEFAULT_KID`].
pub const SECOND_KID: &str = "k2";

/// Now, in Unix seconds.
pub fn now_secs() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs(),
    )
    .expect("seconds fit i64")
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_millis(),
    )
    .expect("milliseconds fit i64")
}

/// A value unique within this test process, e.g. `"{prefix}-<pid>-<n>"`: for `jti`s,
/// event ids, subjects.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A token issuer with HS256 keys ([`DEFAULT_KID`] and [`SECOND_KID`], 64 random bytes
/// each). [`crate::SidecarOptions`] writes its secrets into the sidecar's config.
#[derive(Clone)]
pub struct Issuer {
    iss: String,
    keys: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("iss", &self.iss)
            .field(
                "kids",
                &self.keys.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// An issuer named `iss` with fresh random keys.
    pub fn new(iss: &str) -> Self {
        let keys = [DEFAULT_KID, SECOND_KID]
            .into_iter()
            .map(|kid| {
                let mut secret = vec![0u8; 64];
                aws_lc_rs::rand::fill(&mut secret).expect("the system RNG works");
                (kid.to_owned(), secret)
            })
            .collect();
        Self {
            iss: iss.to_owned(),
            keys,
        }
    }

    /// The `iss` value.
    pub fn iss(&self) -> &str {
        &self.iss
    }

    /// `(kid, secret)` of every key, as the sidecar config lists them.
    pub fn keys(&self) -> &[(String, Vec<u8>)] {
        &self.keys
    }

    /// Starts a token: a unique `jti`, `sub = "user"`, `iat = now`, `exp = now + 1 h`,
    /// signed with [`DEFAULT_KID`].
    pub fn token(&self) -> TokenBuilder<'_> {
        let now = now_secs();
        TokenBuilder {
            issuer: self,
            kid: DEFAULT_KID.to_owned(),
            claims: Map::from_iter([
                ("iss".to_owned(), json!(self.iss)),
                ("sub".to_owned(), json!("user")),
                ("jti".to_owned(), json!(unique("jti"))),
                ("iat".to_owned(), json!(now)),
                ("exp".to_owned(), json!(now + 3600)),
            ]),
        }
    }
}

/// Builds one token; see [`Issuer::token`] for the defaults.
#[derive(Debug)]
pub struct TokenBuilder<'a> {
    issuer: &'a Issuer,
    kid: String,
    claims: Map<String, Value>,
}

impl TokenBuilder<'_> {
    /// Sets `jti`.
    pub fn jti(mut self, jti: &str) -> Self {
        self.claims.insert("jti".into(), json!(jti));
        self
    }

    /// Sets `sub`.
    #[allow(
        clippy::should_implement_trait,
        reason = "named after the JWT claim, like the others"
    )]
    pub fn sub(mut self, sub: &str) -> Self {
        self.claims.insert("sub".into(), json!(sub));
        self
    }

    /// Sets `sid` (the OIDC session id).
    pub fn sid(mut self, sid: &str) -> Self {
        self.claims.insert("sid".into(), json!(sid));
        self
    }

    /// Sets `iat` (Unix seconds).
    pub fn iat(mut self, iat: i64) -> Self {
        self.claims.insert("iat".into(), json!(iat));
        self
    }

    /// Sets `exp` (Unix seconds).
    pub fn exp(mut self, exp: i64) -> Self {
        self.claims.insert("exp".into(), json!(exp));
        self
    }

    /// Removes a claim (e.g. `"iat"`).
    pub fn without(mut self, claim: &str) -> Self {
        self.claims.remove(claim);
        self
    }

    /// Signs with the issuer's key `kid` (it must be one of [`Issuer::keys`]).
    pub fn kid(mut self, kid: &str) -> Self {
        kid.clone_into(&mut self.kid);
        self
    }

    /// The compact HS256 JWS.
    pub fn mint(self) -> String {
        let secret = &self
            .issuer
            .keys
            .iter()
            .find(|(k, _)| *k == self.kid)
            .unwrap_or_else(|| panic!("test bug: issuer has no key {:?}", self.kid))
            .1;
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(self.claims).to_string())
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let tag = hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }
}
