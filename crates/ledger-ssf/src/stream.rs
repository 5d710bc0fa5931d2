//! A stream's configuration (SSF §8.1.1): what the receiver chose, what the
//! transmitter supplied, and the transmitter's own bookkeeping (status, subjects
//! removed, last verification), stored as one JSON document.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{POLL, PUSH, SESSION_REVOKED};

/// The event types a stream can carry.
pub const EVENTS_SUPPORTED: &[&str] = &[SESSION_REVOKED];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Events are delivered.
    Enabled,
    /// Events are queued, in order, and delivered once enabled again.
    Paused,
    /// Events are neither delivered nor kept.
    Disabled,
}

impl Status {
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "enabled" => Some(Status::Enabled),
            "paused" => Some(Status::Paused),
            "disabled" => Some(Status::Disabled),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Enabled => "enabled",
            Status::Paused => "paused",
            Status::Disabled => "disabled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// For push: the `Authorization` header value sent with each SET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_header: Option<String>,
}

/// The stored stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stream {
    pub stream_id: String,
    pub iss: String,
    pub aud: String,
    pub events_requested: Vec<String>,
    pub delivery: Delivery,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Subjects the receiver removed (`default_subjects` is `ALL`).
    #[serde(default)]
    pub removed_subjects: Vec<Value>,
    /// Unix seconds of the last verification request.
    #[serde(default)]
    pub last_verification: Option<i64>,
}

/// What a receiver may set on create, update (PATCH) and replace (PUT).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamRequest {
    #[serde(default)]
    pub stream_id: Option<String>,
    #[serde(default)]
    pub events_requested: Option<Vec<String>>,
    #[serde(default)]
    pub delivery: Option<Delivery>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    Invalid(String),
}

impl Stream {
    /// The events this stream delivers: requested and supported.
    pub fn events_delivered(&self) -> Vec<&str> {
        EVENTS_SUPPORTED
            .iter()
            .copied()
            .filter(|e| self.events_requested.iter().any(|r| r == e))
            .collect()
    }

    pub fn delivers(&self, event_type: &str) -> bool {
        self.events_delivered().contains(&event_type)
    }

    pub fn is_push(&self) -> bool {
        self.delivery.method == PUSH
    }

    /// The configuration as the receiver sees it (SSF §8.1.1); the push
    /// authorization header is write-only.
    pub fn public(&self) -> Value {
        let mut delivery = json!({"method": self.delivery.method});
        if let Some(url) = &self.delivery.endpoint_url {
            delivery["endpoint_url"] = json!(url);
        }
        let mut v = json!({
            "stream_id": self.stream_id,
            "iss": self.iss,
            "aud": self.aud,
            "events_supported": EVENTS_SUPPORTED,
            "events_requested": self.events_requested,
            "events_delivered": self.events_delivered(),
            "delivery": delivery,
            "min_verification_interval": crate::http::MIN_VERIFICATION_INTERVAL_SECS,
        });
        if let Some(d) = &self.description {
            v["description"] = json!(d);
        }
        v
    }

    /// Applies a receiver's update: every field given replaces the stored one
    /// (`replace`: fields left out are reset). `poll_url` is the transmitter-supplied
    /// endpoint of a poll stream.
    pub fn apply(
        &mut self,
        request: StreamRequest,
        replace: bool,
        poll_url: &str,
    ) -> Result<(), StreamError> {
        if replace || request.events_requested.is_some() {
            self.events_requested = request.events_requested.unwrap_or_default();
        }
        if replace || request.description.is_some() {
            self.description = request.description;
        }
        match request.delivery {
            Some(delivery) => self.delivery = checked_delivery(delivery, poll_url)?,
            None if replace => {
                return Err(StreamError::Invalid(
                    "delivery is required when replacing a stream".into(),
                ));
            }
            None => {}
        }
        Ok(())
    }
}

/// A receiver's delivery choice, checked: push needs an http(s) `endpoint_url`; a
/// poll stream is given the transmitter's endpoint.
pub fn checked_delivery(mut delivery: Delivery, poll_url: &str) -> Result<Delivery, StreamError> {
    match delivery.method.as_str() {
        PUSH => {
            let url = delivery.endpoint_url.as_deref().unwrap_or("");
            let parsed = reqwest::Url::parse(url).map_err(|e| {
                StreamError::Invalid(format!("push delivery needs an endpoint_url: {e}"))
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(StreamError::Invalid(
                    "push endpoint_url must be an http(s) URL".into(),
                ));
            }
            Ok(delivery)
        }
        POLL => {
            delivery.endpoint_url = Some(poll_url.to_owned());
            delivery.authorization_header = None;
            Ok(delivery)
        }
        other => Err(StreamError::Invalid(format!(
            "unsupported delivery method {other:?}: use {PUSH} or {POLL}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Stream {
        Stream {
            stream_id: "s1".into(),
            iss: "https://ledger".into(),
            aud: "partner".into(),
            events_requested: vec![SESSION_REVOKED.into(), "urn:other".into()],
            delivery: Delivery {
                method: POLL.into(),
                endpoint_url: Some("https://ledger/ssf/poll/s1".into()),
                authorization_header: None,
            },
            description: None,
            status: Status::Enabled,
            reason: None,
            removed_subjects: vec![],
            last_verification: None,
        }
    }

    #[test]
    fn delivers_only_what_was_requested_and_is_supported() {
        let s = stream();
        assert_eq!(s.events_delivered(), vec![SESSION_REVOKED]);
        assert_eq!(s.public()["events_delivered"], json!([SESSION_REVOKED]));
    }

    #[test]
    fn push_needs_a_url_and_poll_gets_ours() {
        let bad = Delivery {
            method: PUSH.into(),
            endpoint_url: Some("ftp://x".into()),
            authorization_header: None,
        };
        assert!(checked_delivery(bad, "p").is_err());
        let poll = Delivery {
            method: POLL.into(),
            endpoint_url: Some("https://elsewhere".into()),
            authorization_header: None,
        };
        let ok = checked_delivery(poll, "https://ledger/ssf/poll/s1").expect("poll");
        assert_eq!(
            ok.endpoint_url.as_deref(),
            Some("https://ledger/ssf/poll/s1")
        );
        let unknown = Delivery {
            method: "urn:x".into(),
            endpoint_url: None,
            authorization_header: None,
        };
        assert!(checked_delivery(unknown, "p").is_err());
    }

    #[test]
    fn replace_resets_what_it_leaves_out_and_update_keeps_it() {
        let mut s = stream();
        s.description = Some("d".into());
        s.apply(StreamRequest::default(), false, "p")
            .expect("update");
        assert_eq!(s.description.as_deref(), Some("d"));
        assert!(s.apply(StreamRequest::default(), true, "p").is_err());
    }
}
