//! The RFC 8936 poll client: one loop per provider with `[providers.poll]`.
//!
//! Each request acknowledges (`ack`) the SETs whose revocations are stored (or that need
//! none: verification, unknown and disabled events, redeliveries), reports the bad ones in
//! `setErrs` with their RFC 8935 §2.4 code, and asks for up to `maxEvents` more with
//! `returnImmediately`. A SET that could not be stored (NATS down) is neither acknowledged
//! nor reported: the transmitter delivers it again, and the loop waits an interval before
//! asking again. Acknowledgements a failed request could not deliver are sent with the next
//! one.
//!
//! With a managed stream (`[providers.stream]`, `delivery = "poll"`) the endpoint is the one
//! the transmitter assigned to the stream: the loop waits until the stream is configured,
//! follows it when it changes, and asks for a resync when it answers 404 (another replica
//! deleted that stream).
//!
//! The `Authorization` value is read from its file before every request, and again after a
//! 401 (sent once more at once if a refresher replaced it), so short-lived tokens work. An
//! answer is read up to `maxEvents × max_body_bytes` plus 64 KiB ([`answer_limit`]): room
//! for a full batch of SETs each as large as a pushed one may be; a longer answer is
//! refused (`bad_response`) instead of buffered.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::ssf::{self, ApiError, Credential};
use super::{Receiver, now_secs};

/// Room for the poll answer's JSON around its SETs.
const ANSWER_ENVELOPE: usize = 64 * 1024;

/// The most bytes of a poll answer read: `max_events` SETs of up to `max_body_bytes`
/// each, plus the JSON around them.
pub fn answer_limit(max_events: u32, max_body_bytes: usize) -> usize {
    usize::try_from(max_events)
        .unwrap_or(usize::MAX)
        .saturating_mul(max_body_bytes)
        .saturating_add(ANSWER_ENVELOPE)
}

/// The poll credential now in its file (`None`: none configured).
fn authorization(credential: Option<&Credential>) -> Result<Option<String>, ApiError> {
    credential.map(Credential::read).transpose()
}

/// Polls `provider`'s transmitter until `shutdown` turns true.
pub async fn run(receiver: Arc<Receiver>, provider: String, mut shutdown: watch::Receiver<bool>) {
    let Some(p) = receiver.provider(&provider) else {
        return;
    };
    let Some(config) = p.config.poll_config() else {
        return;
    };
    let mut acks: Vec<String> = Vec::new();
    let mut errs = Map::new();
    let mut polling: Option<String> = None;
    let limit = answer_limit(config.max_events, receiver.max_body_bytes);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let Some(endpoint) = p.poll_endpoint() else {
            // The managed stream is not configured yet.
            if wait(&mut shutdown, config.interval).await {
                break;
            }
            continue;
        };
        if polling.as_ref() != Some(&endpoint) {
            tracing::info!(provider = %provider, endpoint = %endpoint, "polling for SETs");
            if polling.is_some() {
                // Acknowledgements belong to the old stream's endpoint.
                acks.clear();
                errs.clear();
            }
            polling = Some(endpoint.clone());
        }
        let body = json!({
            "maxEvents": config.max_events,
            "returnImmediately": true,
            "ack": acks,
            "setErrs": errs,
        });
        let auth = match authorization(p.poll_authorization.as_ref()) {
            Ok(auth) => auth,
            Err(e) => {
                receiver.metrics().poll(&provider, e.outcome());
                tracing::warn!(provider = %provider, error = %e, "poll credential not readable");
                if wait(&mut shutdown, config.interval).await {
                    break;
                }
                continue;
            }
        };
        let request = |auth: Option<&str>| {
            let mut request = receiver
                .http
                .post(&endpoint)
                .timeout(config.request_timeout)
                .header("Content-Type", "application/json")
                .header("Accept", "application/json")
                .body(body.to_string());
            if let Some(auth) = auth {
                request = request.header("Authorization", auth);
            }
            request
        };
        let mut answer = tokio::select! {
            _ = shutdown.changed() => break,
            answer = request(auth.as_deref()).send() => answer,
        };
        if answer
            .as_ref()
            .is_ok_and(|r| r.status() == reqwest::StatusCode::UNAUTHORIZED)
            && let Ok(Some(fresh)) = authorization(p.poll_authorization.as_ref())
            && Some(&fresh) != auth.as_ref()
        {
            // A refresher replaced the token between the read and the request.
            answer = tokio::select! {
                _ = shutdown.changed() => break,
                answer = request(Some(&fresh)).send() => answer,
            };
        }
        let sets = match answer {
            Ok(response) if response.status().is_success() => {
                acks.clear();
                errs.clear();
                let parsed = ssf::read_body(response, limit)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|b| {
                        serde_json::from_slice::<Value>(&b).map_err(|e| format!("not JSON: {e}"))
                    });
                match parsed {
                    Ok(v) => v,
                    Err(e) => {
                        receiver.metrics().poll(&provider, "bad_response");
                        tracing::warn!(provider = %provider, error = %e, "poll response refused");
                        if wait(&mut shutdown, config.interval).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            Ok(response) => {
                receiver.metrics().poll(&provider, "http_error");
                tracing::warn!(provider = %provider, status = %response.status(), "poll refused");
                if response.status() == reqwest::StatusCode::NOT_FOUND
                    && let Some(stream) = &p.stream
                {
                    stream.request_resync();
                }
                if wait(&mut shutdown, config.interval).await {
                    break;
                }
                continue;
            }
            Err(e) => {
                receiver.metrics().poll(&provider, "unreachable");
                tracing::warn!(provider = %provider, error = %e, "poll failed");
                if wait(&mut shutdown, config.interval).await {
                    break;
                }
                continue;
            }
        };
        receiver.metrics().poll(&provider, "ok");
        let more = sets.get("moreAvailable").and_then(Value::as_bool) == Some(true);
        let sets = sets
            .get("sets")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut stalled = false;
        for (jti, set) in &sets {
            let Some(set) = set.as_str() else {
                errs.insert(
                    jti.clone(),
                    json!({"err": "invalid_request", "description": "the SET is not a string"}),
                );
                continue;
            };
            match receiver.set(p, set, now_secs()).await {
                Ok(_) => acks.push(jti.clone()),
                // Not acknowledged: the transmitter delivers it again.
                Err(e) if e.is_retryable() => stalled = true,
                Err(e) => {
                    errs.insert(
                        jti.clone(),
                        json!({"err": e.ssf_code(), "description": e.to_string()}),
                    );
                }
            }
        }
        let idle = sets.is_empty() && !more;
        if (idle || stalled) && acks.is_empty() && errs.is_empty() {
            if wait(&mut shutdown, config.interval).await {
                break;
            }
        } else if stalled && wait(&mut shutdown, config.interval).await {
            break;
        }
    }
    if let Some(endpoint) = polling
        && (!acks.is_empty() || !errs.is_empty())
    {
        // Deliver what is owed before leaving, without asking for more.
        let body = json!({"maxEvents": 0, "returnImmediately": true, "ack": acks, "setErrs": errs});
        let mut request = receiver
            .http
            .post(&endpoint)
            .timeout(std::time::Duration::from_secs(2))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Ok(Some(auth)) = authorization(p.poll_authorization.as_ref()) {
            request = request.header("Authorization", auth);
        }
        if let Err(e) = request.send().await {
            tracing::warn!(provider = %provider, error = %e, "final acknowledgements not delivered");
        }
    }
    tracing::info!(provider = %provider, "polling stopped");
}

/// Waits `d`; true if shutdown came first.
async fn wait(shutdown: &mut watch::Receiver<bool>, d: std::time::Duration) -> bool {
    tokio::select! {
        _ = shutdown.changed() => true,
        () = tokio::time::sleep(d) => false,
    }
}
