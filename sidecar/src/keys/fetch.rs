//! Fetching a JWKS document over HTTP(S).

use std::time::Duration;

use reqwest::{Client, Url, redirect};

use super::{KeyError, MAX_JWKS_BYTES};

/// Most redirects followed for one fetch.
const MAX_REDIRECTS: usize = 5;

/// The HTTP client for JWKS URLs: redirects only to https (a redirect must not downgrade
/// the channel the keys arrive on), at most [`MAX_REDIRECTS`], no cookies (reqwest keeps
/// none unless its `cookies` feature is on). The timeout is set per request.
pub(super) fn http_client() -> Result<Client, KeyError> {
    Client::builder()
        .redirect(redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if attempt.url().scheme() != "https" {
                let refused = format!("refused a redirect to non-https {}", attempt.url());
                attempt.error(refused)
            } else {
                attempt.follow()
            }
        }))
        .user_agent(concat!("denylist-sidecar/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| KeyError::Fetch(format!("cannot build the HTTP client: {}", chain(&e))))
}

/// GETs `url` and returns the body: status 200 only, at most [`MAX_JWKS_BYTES`], all
/// within `timeout` (connect, headers and body).
pub(super) async fn fetch_jwks(
    client: &Client,
    url: &Url,
    timeout: Duration,
) -> Result<Vec<u8>, KeyError> {
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            KeyError::Fetch(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            ))
        } else {
            KeyError::Fetch(chain(&e))
        }
    };
    let mut response = client
        .get(url.clone())
        .timeout(timeout)
        .header(
            reqwest::header::ACCEPT,
            "application/jwk-set+json, application/json",
        )
        .send()
        .await
        .map_err(failed)?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return Err(KeyError::Fetch(format!("HTTP status {status}")));
    }
    let too_big = || KeyError::Fetch(format!("body exceeds {MAX_JWKS_BYTES} bytes"));
    if response
        .content_length()
        .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and its causes on one line: reqwest's own message is only "error sending
/// request"; the cause (connection refused, DNS, TLS) is in the chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The URL as logs and status show it: without user info, which may hold credentials.
pub(super) fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    // Both fail only for URLs that cannot have user info; nothing to redact then.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}
