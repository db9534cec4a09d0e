//! Which of the transmitter's streams is this receiver's, and what to do with them (see
//! the [`super`] module docs): what the receiver wants ([`Wanted`]) and a deterministic
//! [`plan`], so replicas that see the same list make the same choice.

use serde_json::{Value, json};

use super::super::config::{Delivery, ProviderConfig, StreamConfig};

/// What the receiver wants the stream to be.
#[derive(Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Push or poll.
    pub delivery: Delivery,
    /// Push: the URL the transmitter POSTs to.
    pub endpoint_url: Option<String>,
    /// Push: the `Authorization` value the transmitter must send.
    pub authorization_header: Option<String>,
    /// `events_requested`, sorted.
    pub events: Vec<String>,
    /// `description`.
    pub description: String,
}

/// What to do with the streams the transmitter listed.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// None is this receiver's: create one.
    Create,
    /// Keep `keep` (updating it with `update`, a PATCH body, if set) and delete `delete`.
    Use {
        /// The stream kept: the matching one with the lowest `stream_id`.
        keep: Value,
        /// The other matching streams' ids.
        delete: Vec<String>,
        /// The PATCH body, when the kept stream differs from what is wanted.
        update: Option<Value>,
    },
}

impl Wanted {
    /// The stream a provider's config asks for (`push_authorization` read from
    /// `[providers.push]`).
    pub fn new(
        provider: &ProviderConfig,
        stream: &StreamConfig,
        push_authorization: Option<&str>,
    ) -> Self {
        Self {
            delivery: stream.delivery,
            endpoint_url: stream.endpoint_url.clone(),
            authorization_header: match stream.delivery {
                Delivery::Push => push_authorization.map(str::to_owned),
                Delivery::Poll => None,
            },
            events: provider.ssf_events(),
            description: stream
                .description
                .clone()
                .unwrap_or_else(|| format!("denylist-receiver {}", provider.name)),
        }
    }

    /// Whether `stream` delivers the way this receiver wants (method, and for push the
    /// endpoint URL). A stream without `delivery` is a poll stream (SSF 1.0 §8.1.1.1).
    pub fn matches(&self, stream: &Value) -> bool {
        let delivery = &stream["delivery"];
        let method = delivery["method"]
            .as_str()
            .unwrap_or(Delivery::Poll.method());
        if method != self.delivery.method() {
            return false;
        }
        match self.delivery {
            Delivery::Push => delivery["endpoint_url"].as_str() == self.endpoint_url.as_deref(),
            Delivery::Poll => true,
        }
    }

    pub(super) fn delivery(&self) -> Value {
        match self.delivery {
            Delivery::Push => {
                let mut d =
                    json!({"method": self.delivery.method(), "endpoint_url": self.endpoint_url});
                if let Some(auth) = &self.authorization_header {
                    d["authorization_header"] = json!(auth);
                }
                d
            }
            Delivery::Poll => json!({"method": self.delivery.method()}),
        }
    }

    /// The body that creates the stream (§8.1.1.1).
    pub fn create_body(&self) -> Value {
        json!({
            "delivery": self.delivery(),
            "events_requested": self.events,
            "description": self.description,
        })
    }

    /// The PATCH body that makes `stream` what is wanted, or `None` when it already is.
    pub fn update_for(&self, stream: &Value) -> Option<Value> {
        let mut requested: Vec<String> = stream["events_requested"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        requested.sort();
        requested.dedup();
        let echoed = stream["delivery"]["authorization_header"].as_str();
        let stale_auth = self.delivery == Delivery::Push
            && echoed.is_some()
            && echoed != self.authorization_header.as_deref();
        let stale_events = requested != self.events;
        (stale_events || stale_auth).then(|| self.patch_body(stream_id(stream).unwrap_or_default()))
    }

    pub(super) fn patch_body(&self, stream_id: &str) -> Value {
        let mut body = json!({"stream_id": stream_id, "events_requested": self.events});
        if self.delivery == Delivery::Push {
            body["delivery"] = self.delivery();
        }
        body
    }
}

/// A stream's `stream_id`.
pub fn stream_id(stream: &Value) -> Option<&str> {
    stream["stream_id"].as_str().filter(|id| !id.is_empty())
}

/// Decides what to do with the listed `streams` (see the module docs): deterministic, so
/// replicas that see the same list make the same choice.
pub fn plan(wanted: &Wanted, streams: &[Value]) -> Plan {
    let mut matching: Vec<&Value> = streams
        .iter()
        .filter(|s| stream_id(s).is_some() && wanted.matches(s))
        .collect();
    matching.sort_by(|a, b| stream_id(a).cmp(&stream_id(b)));
    let Some((keep, others)) = matching.split_first() else {
        return Plan::Create;
    };
    Plan::Use {
        keep: (*keep).clone(),
        delete: others
            .iter()
            .filter_map(|s| stream_id(s))
            .map(str::to_owned)
            .collect(),
        update: wanted.update_for(keep),
    }
}

/// By hand, so that the push `authorization_header` (a secret) is never printed.
impl std::fmt::Debug for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wanted")
            .field("delivery", &self.delivery)
            .field("endpoint_url", &self.endpoint_url)
            .field(
                "authorization_header",
                &self.authorization_header.as_ref().map(|_| "<redacted>"),
            )
            .field("events", &self.events)
            .field("description", &self.description)
            .finish()
    }
}
