//! The RFC 8936 poll client: one loop per provider with `[providers.poll]`.
//!
//! Each request acknowledges (`ack`) the SETs whose revocations are stored (or that need
//! none: verification, unknown and disabled events, redeliveries), reports the bad ones in
//! `setErrs` with their RFC 8935 §2.4 code, and asks for up to `maxEvents` more with
//! `returnImmediately`. A SET that could not be stored (NATS down) is neither acknowledged
//! nor reported: the transmitter delivers it again, and the loop waits an interval before
//! asking again. Acknowledgements a failed request could not deliver are sent with the next
//! one.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::{Receiver, now_secs};

/// Polls `provider`'s transmitter until `shutdown` turns true.
pub async fn run(receiver: Arc<Receiver>, provider: String, mut shutdown: watch::Receiver<bool>) {
    let Some(p) = receiver.provider(&provider) else {
        return;
    };
    let Some(config) = p.config.poll.clone() else {
        return;
    };
    tracing::info!(provider = %provider, endpoint = %config.endpoint, "polling for SETs");
    let mut acks: Vec<String> = Vec::new();
    let mut errs = Map::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let body = json!({
            "maxEvents": config.max_events,
            "returnImmediately": true,
            "ack": acks,
            "setErrs": errs,
        });
        let mut request = receiver
            .http
            .post(&config.endpoint)
            .timeout(config.request_timeout)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(body.to_string());
        if let Some(auth) = &p.poll_authorization {
            request = request.header("Authorization", auth);
        }
        let answer = tokio::select! {
            _ = shutdown.changed() => break,
            answer = request.send() => answer,
        };
        let sets = match answer {
            Ok(response) if response.status().is_success() => {
                acks.clear();
                errs.clear();
                match response.json::<Value>().await {
                    Ok(v) => v,
                    Err(e) => {
                        receiver.metrics().poll(&provider, "bad_response");
                        tracing::warn!(provider = %provider, error = %e, "poll response is not JSON");
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
    if !acks.is_empty() || !errs.is_empty() {
        // Deliver what is owed before leaving, without asking for more.
        let body = json!({"maxEvents": 0, "returnImmediately": true, "ack": acks, "setErrs": errs});
        let mut request = receiver
            .http
            .post(&config.endpoint)
            .timeout(std::time::Duration::from_secs(2))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some(auth) = &p.poll_authorization {
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
