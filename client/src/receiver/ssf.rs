//! A client for an SSF transmitter's stream management API (OpenID Shared Signals Framework
//! 1.0 §7 and §8): its configuration metadata, the configuration endpoint (list, create,
//! update, delete streams), the status endpoint and the verification endpoint. Every
//! request carries the `Authorization` value read from its file just before (a refresher may
//! rewrite the file, e.g. with a short-lived OAuth token); every answer is checked for the
//! status code the specification gives, read up to [`MAX_MANAGEMENT_BODY`] bytes, and a
//! failure says which request failed and how. Every endpoint the metadata names must be
//! `https` (or on a loopback host), since the credential goes to it.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

/// Bound on one management request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of an error body quoted in a message.
const QUOTED_BODY: usize = 200;
/// Most bytes of a management API answer read: stream configurations and metadata are a
/// few KiB; anything past this is refused rather than buffered.
pub const MAX_MANAGEMENT_BODY: usize = 1 << 20;

/// Why a management request failed. [`ApiError::outcome`] is its metric label.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 401: the management `Authorization` value is missing or not accepted.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but not allowed to do that.
    #[error("{0}")]
    Forbidden(String),
    /// Any other unexpected HTTP status.
    #[error("{0}")]
    Http(String),
    /// The transmitter could not be reached (connection, TLS, timeout).
    #[error("{0}")]
    Unreachable(String),
    /// The `Authorization` value could not be read from its file.
    #[error("{0}")]
    Credential(String),
    /// The answer is not what SSF 1.0 says it must be (not JSON, a field missing, `iss` not
    /// the provider's issuer...).
    #[error("{0}")]
    BadResponse(String),
}

impl ApiError {
    /// The `outcome` label of `denylist_receiver_stream_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::Http(_) => "http_error",
            Self::Unreachable(_) => "unreachable",
            Self::Credential(_) => "credential_unreadable",
            Self::BadResponse(_) => "bad_response",
        }
    }
}

/// The transmitter configuration metadata fields the receiver uses (SSF 1.0 §7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// `issuer`.
    pub issuer: String,
    /// `configuration_endpoint`.
    pub configuration_endpoint: String,
    /// `status_endpoint`, if offered.
    pub status_endpoint: Option<String>,
    /// `verification_endpoint`, if offered.
    pub verification_endpoint: Option<String>,
    /// `delivery_methods_supported` (empty when not given).
    pub delivery_methods_supported: Vec<String>,
}

/// What a request to create or update a stream came back with.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// 200/201 with the stream's configuration.
    Stream(Value),
    /// 202 (update accepted, not processed yet), or a 2xx without a body.
    Accepted,
    /// 409: the transmitter allows one stream per receiver and has one.
    Conflict,
}

/// A file holding an `Authorization` header value, read anew for every request, so a
/// refresher (a sidecar, a CronJob rewriting the Secret) can replace a short-lived token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The config field naming the file, for error messages.
    pub field: String,
    /// The file.
    pub path: PathBuf,
}

impl Credential {
    /// The value now in the file, trimmed.
    pub fn read(&self) -> Result<String, ApiError> {
        super::config::read_secret(&self.field, &self.path)
            .map_err(|e| ApiError::Credential(e.to_string()))
    }
}

/// The management API of one transmitter, as one receiver (its `Authorization` value).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    authorization: Credential,
}

/// By hand, so that no secret could ever be printed (only the file's path is held, but the
/// HTTP client and future fields need not be shown either).
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("authorization_file", &self.authorization.path)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client sending the value in `authorization` with every request.
    pub fn new(http: reqwest::Client, authorization: Credential) -> Self {
        Self {
            http,
            authorization,
        }
    }

    /// GETs the metadata at `url` and checks that its `issuer` is `issuer` (SSF 1.0 §7.2.3:
    /// it must equal the `iss` of the SETs) and that it names a configuration endpoint.
    pub async fn metadata(&self, url: &str, issuer: &str) -> Result<Metadata, ApiError> {
        // The metadata is public (§7.1 `authorization_schemes`), so no credential is sent.
        let response = self.send(self.http.get(url), "GET", url).await?;
        let document = expect_json(response, "GET", url, &[200]).await?;
        let text = |name: &str| {
            document
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        // SSF 1.0 §7.2.3: identical, so no trailing-slash tolerance.
        let found = text("issuer").unwrap_or_default();
        if found != issuer {
            return Err(ApiError::BadResponse(format!(
                "GET {url}: the metadata's issuer {found:?} is not the provider's issuer {issuer:?}"
            )));
        }
        // The management credential goes to these endpoints: never in clear over a network.
        let endpoint = |name: &str| -> Result<Option<String>, ApiError> {
            let Some(value) = text(name) else {
                return Ok(None);
            };
            check_secure_url(&value).map_err(|e| {
                ApiError::BadResponse(format!("GET {url}: the metadata's {name}: {e}"))
            })?;
            Ok(Some(value))
        };
        let configuration_endpoint = endpoint("configuration_endpoint")?.ok_or_else(|| {
            ApiError::BadResponse(format!(
                "GET {url}: the transmitter offers no configuration_endpoint (no stream \
                 management API): configure the stream by hand and remove [providers.stream]"
            ))
        })?;
        Ok(Metadata {
            issuer: found,
            configuration_endpoint,
            status_endpoint: endpoint("status_endpoint")?,
            verification_endpoint: endpoint("verification_endpoint")?,
            delivery_methods_supported: document
                .get("delivery_methods_supported")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// The receiver's streams (§8.1.1.2, GET without `stream_id`). A transmitter that
    /// answers one object (one stream per receiver) or 404 (none) is understood too.
    pub async fn list(&self, endpoint: &str) -> Result<Vec<Value>, ApiError> {
        let response = self
            .send_authorized(|| self.http.get(endpoint), "GET", endpoint)
            .await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        match expect_json(response, "GET", endpoint, &[200]).await? {
            Value::Array(streams) => Ok(streams),
            one @ Value::Object(_) => Ok(vec![one]),
            other => Err(ApiError::BadResponse(format!(
                "GET {endpoint}: expected a list of streams, got {}",
                quote(&other.to_string())
            ))),
        }
    }

    /// Creates a stream (§8.1.1.1, POST).
    pub async fn create(&self, endpoint: &str, body: &Value) -> Result<Written, ApiError> {
        self.write(reqwest::Method::POST, endpoint, body).await
    }

    /// Updates a stream's receiver-supplied properties (§8.1.1.3, PATCH).
    pub async fn update(&self, endpoint: &str, body: &Value) -> Result<Written, ApiError> {
        self.write(reqwest::Method::PATCH, endpoint, body).await
    }

    /// Deletes a stream (§8.1.1.5). One already gone (404) counts as deleted: another
    /// replica got there first.
    pub async fn delete(&self, endpoint: &str, stream_id: &str) -> Result<(), ApiError> {
        let url = with_stream_id(endpoint, stream_id)?;
        let response = self
            .send_authorized(|| self.http.delete(url.as_str()), "DELETE", url.as_str())
            .await?;
        match response.status().as_u16() {
            200..=299 | 404 => Ok(()),
            _ => Err(status_error(response, "DELETE", url.as_str()).await),
        }
    }

    /// The stream's status (§8.1.2.1): `(status, reason)`.
    pub async fn status(
        &self,
        endpoint: &str,
        stream_id: &str,
    ) -> Result<(String, Option<String>), ApiError> {
        let url = with_stream_id(endpoint, stream_id)?;
        let response = self
            .send_authorized(|| self.http.get(url.as_str()), "GET", url.as_str())
            .await?;
        let body = expect_json(response, "GET", url.as_str(), &[200]).await?;
        let status = body.get("status").and_then(Value::as_str).ok_or_else(|| {
            ApiError::BadResponse(format!("GET {url}: the answer has no `status`"))
        })?;
        let reason = body.get("reason").and_then(Value::as_str);
        Ok((status.to_owned(), reason.map(str::to_owned)))
    }

    /// Asks for a verification event carrying `state` (§8.1.4.2): 204 expected. A 429 is
    /// an [`ApiError::Http`] like any other refusal.
    pub async fn verify(
        &self,
        endpoint: &str,
        stream_id: &str,
        state: &str,
    ) -> Result<(), ApiError> {
        let body = json!({"stream_id": stream_id, "state": state});
        let response = self
            .send_authorized(|| self.http.post(endpoint).json(&body), "POST", endpoint)
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(status_error(response, "POST", endpoint).await)
        }
    }

    async fn write(
        &self,
        method: reqwest::Method,
        endpoint: &str,
        body: &Value,
    ) -> Result<Written, ApiError> {
        let verb = method.as_str().to_owned();
        let response = self
            .send_authorized(
                || self.http.request(method.clone(), endpoint).json(body),
                &verb,
                endpoint,
            )
            .await?;
        match response.status().as_u16() {
            409 => Ok(Written::Conflict),
            202 | 204 => Ok(Written::Accepted),
            200 | 201 => match expect_json(response, &verb, endpoint, &[200, 201]).await? {
                stream @ Value::Object(_) => Ok(Written::Stream(stream)),
                _ => Ok(Written::Accepted),
            },
            _ => Err(status_error(response, &verb, endpoint).await),
        }
    }

    /// Sends the request `build` makes with the credential now in its file. On a 401 the
    /// file is read again and, if a refresher replaced the value meanwhile, the request is
    /// sent once more with the new one.
    async fn send_authorized(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        verb: &str,
        url: &str,
    ) -> Result<reqwest::Response, ApiError> {
        let sent = self.authorization.read()?;
        let request = build().header(reqwest::header::AUTHORIZATION, &sent);
        let response = self.send(request, verb, url).await?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        match self.authorization.read() {
            Ok(fresh) if fresh != sent => {
                let request = build().header(reqwest::header::AUTHORIZATION, &fresh);
                self.send(request, verb, url).await
            }
            _ => Ok(response),
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        verb: &str,
        url: &str,
    ) -> Result<reqwest::Response, ApiError> {
        request
            .timeout(REQUEST_TIMEOUT)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| ApiError::Unreachable(format!("{verb} {url}: {e}")))
    }
}

/// `endpoint?stream_id=<id>`.
fn with_stream_id(endpoint: &str, stream_id: &str) -> Result<url::Url, ApiError> {
    let mut url = url::Url::parse(endpoint)
        .map_err(|e| ApiError::BadResponse(format!("endpoint {endpoint:?} is not a URL: {e}")))?;
    url.query_pairs_mut().append_pair("stream_id", stream_id);
    Ok(url)
}

async fn expect_json(
    response: reqwest::Response,
    verb: &str,
    url: &str,
    ok: &[u16],
) -> Result<Value, ApiError> {
    if !ok.contains(&response.status().as_u16()) {
        return Err(status_error(response, verb, url).await);
    }
    let body = read_body(response, MAX_MANAGEMENT_BODY)
        .await
        .map_err(|e| e.into_api_error(verb, url))?;
    let text = String::from_utf8_lossy(&body);
    serde_json::from_str(&text).map_err(|e| {
        ApiError::BadResponse(format!("{verb} {url}: not JSON ({e}): {}", quote(&text)))
    })
}

async fn status_error(response: reqwest::Response, verb: &str, url: &str) -> ApiError {
    let status = response.status();
    // Only quoted: what fits in the bound is enough, a longer or unreadable body is not
    // worth failing for.
    let body = read_body(response, MAX_MANAGEMENT_BODY)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = format!("{verb} {url}: HTTP {status} {}", quote(&body));
    match status.as_u16() {
        401 => ApiError::Unauthorized(format!(
            "{message} (the management Authorization value in stream.authorization_file is \
             missing or not accepted)"
        )),
        403 => ApiError::Forbidden(message),
        _ => ApiError::Http(message),
    }
}

fn quote(text: &str) -> String {
    let mut end = text.len().min(QUOTED_BODY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}", &text[..end])
}

/// Why an answer's body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Longer than the bound.
    #[error("the answer is longer than {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: usize,
    },
    /// The connection failed while reading.
    #[error("reading the answer: {0}")]
    Read(#[from] reqwest::Error),
}

impl BodyError {
    fn into_api_error(self, verb: &str, url: &str) -> ApiError {
        match self {
            Self::TooLarge { .. } => ApiError::BadResponse(format!("{verb} {url}: {self}")),
            Self::Read(_) => ApiError::Unreachable(format!("{verb} {url}: {self}")),
        }
    }
}

/// `response`'s body, read chunk by chunk and refused as soon as it passes `limit` bytes,
/// so a broken or hostile transmitter cannot make the receiver buffer without bound.
pub async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Checks that the management or poll credential sent to `url` is protected: `https`, or
/// `http` to a loopback host (`localhost`, 127.0.0.0/8, `::1`: tests, a local proxy).
pub fn check_secure_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(format!("{url:?} has no host")),
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "{url:?} must be an https URL (http only to a loopback host): the credential is \
             sent to it"
        )),
    }
}
