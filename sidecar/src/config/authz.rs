//! The proxy-facing authorization endpoints' settings: Envoy `ext_authz` and the HTTP
//! forward-auth endpoint (nginx `auth_request`, Traefik `ForwardAuth`, Caddy
//! `forward_auth`). Both find the token the same way and forward claims as headers, so
//! both are validated by the same rules here.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, ListenConfig, empty_as_none, invalid};

/// Header names a claim may never be forwarded as: the token's own headers, the
/// message framing and hop-by-hop headers (a claim there would corrupt or re-route the
/// request), and the headers the endpoints answer with themselves.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "content-type",
    "content-encoding",
    "cache-control",
    "www-authenticate",
    "retry-after",
    "x-denylist-reason",
    "x-denylist-stale",
];

/// How the Envoy `ext_authz` endpoint finds the token and what it forwards.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtAuthzConfig {
    /// Serve `envoy.service.auth.v3.Authorization/Check` on the gRPC listeners. Default true.
    pub enabled: bool,
    /// Request header carrying `Bearer <token>`. Default `authorization`.
    pub header: String,
    /// Cookie holding the bare token, tried when the header is absent. Default: none.
    pub cookie: Option<String>,
    /// Claims forwarded to the upstream as request headers: claim name → header name.
    /// Headers named here are always removed from the client's request first, so a
    /// client cannot forge them. Default `{ sub = "x-denylist-subject" }`.
    pub forward_claims: BTreeMap<String, String>,
}

impl Default for ExtAuthzConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            header: "authorization".to_owned(),
            cookie: None,
            forward_claims: default_forward_claims(),
        }
    }
}

impl ExtAuthzConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        validate_token_source(
            "ext_authz",
            &self.header,
            self.cookie.as_deref(),
            &self.forward_claims,
        )
    }
}

/// The HTTP forward-auth endpoint: any request to it is an authorization check of the
/// token it carries (the conventions of nginx `auth_request`, Traefik `ForwardAuth` and
/// Caddy `forward_auth`). Off by default; loopback or a Unix socket only.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardAuthConfig {
    /// Serve the endpoint. Default false.
    pub enabled: bool,
    /// Loopback TCP address. Default `127.0.0.1:9152`; empty disables.
    #[serde(deserialize_with = "empty_as_none")]
    pub listen: Option<SocketAddr>,
    /// Unix socket path (for a proxy in the same pod). Default: none.
    #[serde(deserialize_with = "empty_as_none")]
    pub socket: Option<PathBuf>,
    /// Request header carrying `Bearer <token>`. Default `authorization`.
    pub header: String,
    /// Cookie holding the bare token, tried when the header is absent. Default: none.
    pub cookie: Option<String>,
    /// Claims answered as response headers for the proxy to copy onto the upstream
    /// request: claim name → header name. Default `{ sub = "x-denylist-subject" }`.
    pub forward_claims: BTreeMap<String, String>,
}

impl Default for ForwardAuthConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9152))),
            socket: None,
            header: "authorization".to_owned(),
            cookie: None,
            forward_claims: default_forward_claims(),
        }
    }
}

impl ForwardAuthConfig {
    /// Checked whether enabled or not: a typo in a section that is switched on later
    /// should fail now, not then.
    pub(super) fn validate(&self, listen: &ListenConfig) -> Result<(), ConfigError> {
        if let Some(addr) = self.listen
            && !addr.ip().is_loopback()
        {
            // The endpoint answers whoever asks with a token's claims and its validity;
            // it is for a proxy on the same host or pod, never for the network.
            return Err(invalid(
                "forward_auth.listen",
                format!(
                    "{addr} is not a loopback address; forward-auth is for a proxy in the \
                     same pod or host (use a loopback address or forward_auth.socket)"
                ),
            ));
        }
        if self
            .socket
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(invalid("forward_auth.socket", "must not be empty"));
        }
        validate_token_source(
            "forward_auth",
            &self.header,
            self.cookie.as_deref(),
            &self.forward_claims,
        )?;
        if !self.enabled {
            return Ok(());
        }
        if self.listen.is_none() && self.socket.is_none() {
            return Err(invalid(
                "forward_auth",
                "enabled, but neither `listen` nor `socket` is set",
            ));
        }
        if let Some(socket) = &self.socket
            && listen.socket.as_ref() == Some(socket)
        {
            return Err(invalid(
                "forward_auth.socket",
                format!(
                    "{} is already the gRPC socket (listen.socket)",
                    socket.display()
                ),
            ));
        }
        if let Some(addr) = self.listen {
            for (field, other) in [("listen.tcp", listen.tcp), ("listen.admin", listen.admin)] {
                if other == Some(addr) && addr.port() != 0 {
                    return Err(invalid(
                        "forward_auth.listen",
                        format!("{addr} is already used by {field}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn default_forward_claims() -> BTreeMap<String, String> {
    [("sub".to_owned(), "x-denylist-subject".to_owned())].into()
}

/// `header`, `cookie` and `forward_claims` of `section`.
fn validate_token_source(
    section: &str,
    header: &str,
    cookie: Option<&str>,
    forward_claims: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    if !is_header_name(header) {
        return Err(invalid(
            format!("{section}.header"),
            "must be a lower-case HTTP header name (proxies lower-case them)",
        ));
    }
    if let Some(cookie) = cookie
        && !is_cookie_name(cookie)
    {
        return Err(invalid(
            format!("{section}.cookie"),
            "must be a cookie name (letters, digits and !#$%&'*+-.^_`|~)",
        ));
    }
    let mut used = HashSet::new();
    for (claim, name) in forward_claims {
        let field = || format!("{section}.forward_claims.{claim}");
        if claim.is_empty() {
            return Err(invalid(
                format!("{section}.forward_claims"),
                "a claim name must not be empty",
            ));
        }
        if !is_header_name(name) {
            return Err(invalid(field(), "must be a lower-case HTTP header name"));
        }
        if RESERVED_HEADERS.contains(&name.as_str()) || name.starts_with("proxy-") {
            return Err(invalid(
                field(),
                format!(
                    "{name:?} is reserved (request framing, credentials or the endpoint's own answer)"
                ),
            ));
        }
        if name == header {
            return Err(invalid(
                field(),
                format!("{name:?} is the header the token is read from"),
            ));
        }
        if !used.insert(name.as_str()) {
            return Err(invalid(
                field(),
                format!("{name:?} is the header of another claim too"),
            ));
        }
    }
    Ok(())
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
}

/// An RFC 6265 cookie-name (an RFC 9110 token).
fn is_cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}
