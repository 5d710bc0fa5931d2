//! Configuration from the environment. A bad value stops start-up with a message that
//! names the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ledger_core::Policy;

/// Longest clock leeway accepted: more would make expired tokens linger (RFC 8725).
const MAX_LEEWAY: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var}: {message} (got {value:?})")]
    Invalid {
        var: &'static str,
        value: String,
        message: String,
    },
    #[error("{var} is required for this command")]
    Missing { var: &'static str },
    #[error("session policy: {0}")]
    Policy(String),
}

/// Everything the subcommands read from the environment.
#[derive(Clone, Debug)]
pub struct Settings {
    pub api_addr: SocketAddr,
    pub validator_addr: SocketAddr,
    /// Status and metrics of a projector-only process.
    pub projector_addr: SocketAddr,
    pub data_dir: PathBuf,
    /// The login service's credential (`POST /v1/sessions`, subject revoke, session read).
    pub login_token: Option<String>,
    /// Resource servers' credentials (introspection and revocation lookups only).
    pub introspect_tokens: Vec<String>,
    /// Deprecated: one credential granting both of the above.
    pub service_token: Option<String>,
    pub issuer: String,
    pub audience: String,
    pub region: String,
    pub policy: Policy,
    pub validator_max_staleness: Duration,
    /// How long the API trusts its own recent writes over a lagging projection.
    pub read_your_writes: Duration,
    /// How long a refresh waits for the API to hold every event the log acknowledged
    /// before it arrived (`None`: it does not wait; see [`ApiView`]).
    pub api_fence: Option<Duration>,
    /// Where a refresh behind the fence reads the family from.
    pub api_view: ApiView,
    pub backend: Backend,
    /// Where validators fetch verification keys (instead of the local key directory).
    pub jwks_url: Option<String>,
    /// OTLP/gRPC collector for traces; nothing is exported when unset.
    pub otlp_endpoint: Option<String>,
    /// Fault injection for crash tests (`LEDGER_FAILPOINT=abort-after-append`).
    pub abort_after_append: bool,
    /// Fault injection for crash tests (`LEDGER_FAILPOINT=abort-before-commit`): the
    /// projector aborts after the store acknowledged a batch, before committing its
    /// positions; the validator after applying a batch to its view, before recording
    /// its positions.
    pub abort_before_commit: bool,
    /// Test only (`LEDGER_TEST_CLOCK_OFFSET`): microseconds this process's clock runs
    /// ahead of the system clock (behind when negative). Refused by release builds.
    pub test_clock_offset_micros: i64,
    /// Whether the projector role also seals the log (tamper evidence).
    pub sealer: bool,
    /// Receivers of the Shared Signals transmitter; it is off when none is given.
    pub ssf_receivers: Option<ledger_ssf::http::ReceiverCredentials>,
}

/// Which log and store the roles use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite under the data directory: one process, nothing installed.
    Embedded,
    /// Apache Kafka as the log, ScyllaDB (or any CQL database) as the projection.
    Kafka(Box<KafkaSettings>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    /// Topics replicated from other regions, read after `topic` (never appended to).
    pub remote_topics: Vec<String>,
    pub partitions: i32,
    pub replication_factor: i32,
    pub delivery_timeout: Duration,
    pub scylla_nodes: Vec<String>,
    pub keyspace: String,
    pub replication: String,
    /// The compacted public revocation topic.
    pub revocations_topic: String,
    /// This instance's stable name: the projector's consumer-group identity
    /// (`group.instance.id`), so a restarted projector takes its partitions back at once.
    pub instance_id: Option<String>,
}

/// Where an API instance behind the fence (`LEDGER_API_FENCE`) reads a family's state
/// when it refreshes (`LEDGER_API_VIEW`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiView {
    /// Its own view of the log, in memory: it waits until its reader has read the log
    /// to the end the brokers report after the request arrived.
    Log,
    /// The projection store, once the projector has committed past the end of the
    /// family's partition.
    Store,
}

/// Every variable, with its default, for `--help` and the README.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    ("LEDGER_API_ADDR", "127.0.0.1:8080", "API listener"),
    (
        "LEDGER_VALIDATOR_ADDR",
        "127.0.0.1:8081",
        "validator listener",
    ),
    (
        "LEDGER_DATA_DIR",
        "./data",
        "embedded log, projection and keys",
    ),
    (
        "LEDGER_LOGIN_TOKEN",
        "(dev: generated)",
        "the login service's credential: open sessions, revoke a subject, read a session",
    ),
    (
        "LEDGER_INTROSPECT_TOKENS",
        "(dev: generated)",
        "resource servers' credentials, comma-separated: introspection and revocation lookups",
    ),
    (
        "LEDGER_SERVICE_TOKEN",
        "(unset)",
        "deprecated: one credential for both login and introspection",
    ),
    ("LEDGER_ISSUER", "session-ledger", "iss of access tokens"),
    ("LEDGER_AUDIENCE", "session-ledger", "aud of access tokens"),
    ("LEDGER_REGION", "local", "region recorded in events"),
    ("LEDGER_ACCESS_TTL", "15m", "access token lifetime"),
    (
        "LEDGER_REFRESH_IDLE_TTL",
        "24h",
        "refresh token lifetime since its rotation",
    ),
    (
        "LEDGER_SESSION_MAX_TTL",
        "30d",
        "absolute session deadline after login",
    ),
    (
        "LEDGER_REFRESH_GRACE",
        "10s",
        "window in which the previous refresh token gets the same successor",
    ),
    (
        "LEDGER_CLOCK_LEEWAY",
        "10s",
        "leeway on exp/iat when validating (at most 5m)",
    ),
    (
        "LEDGER_CLOCK_SKEW_MARGIN",
        "30s",
        "extra time revocation entries are kept",
    ),
    (
        "LEDGER_VALIDATOR_MAX_STALENESS",
        "30s",
        "older views fail closed",
    ),
    (
        "LEDGER_READ_YOUR_WRITES",
        "60s",
        "how long the API trusts its own writes over the projection",
    ),
    (
        "LEDGER_FAILPOINT",
        "(off)",
        "test only, fault injection: abort-after-append (api), abort-before-commit (projector, validator)",
    ),
    (
        "LEDGER_TEST_CLOCK_OFFSET",
        "(off)",
        "test only, debug builds only: run this process's clock ahead (+7s) or behind (-7s)",
    ),
    ("LEDGER_LOG", "info", "log filter (tracing syntax)"),
    (
        "LEDGER_PROJECTOR_ADDR",
        "127.0.0.1:8082",
        "status and metrics of `session-ledger projector`",
    ),
    (
        "LEDGER_BACKEND",
        "embedded",
        "embedded (SQLite) or kafka (Kafka + CQL)",
    ),
    (
        "LEDGER_KAFKA_BROKERS",
        "127.0.0.1:9092",
        "Kafka bootstrap servers",
    ),
    (
        "LEDGER_KAFKA_TOPIC",
        "session-events",
        "the session-events topic",
    ),
    (
        "LEDGER_KAFKA_REVOCATIONS_TOPIC",
        "session-revocations",
        "the compacted public revocation topic (default <topic>-revocations for another LEDGER_KAFKA_TOPIC)",
    ),
    (
        "LEDGER_KAFKA_REMOTE_TOPICS",
        "",
        "topics replicated from other regions, read after the own topic (comma-separated, e.g. west.session-events; add new ones at the end)",
    ),
    (
        "LEDGER_API_FENCE",
        "3s",
        "how long a refresh waits to hold every event the log acknowledged before it arrived, from any instance or region (503 after it); off = trust the projection as it is (one API instance)",
    ),
    (
        "LEDGER_API_VIEW",
        "log",
        "behind the fence, where a refresh reads the family: log = the API's own view of the log in memory (waits for its reader to reach the end of the log), store = the projection (on Kafka it waits for the projector's checkpoint)",
    ),
    (
        "LEDGER_KAFKA_PARTITIONS",
        "12",
        "partitions when the topic is created",
    ),
    (
        "LEDGER_KAFKA_REPLICATION_FACTOR",
        "1",
        "replication factor when the topic is created",
    ),
    (
        "LEDGER_KAFKA_DELIVERY_TIMEOUT",
        "10s",
        "longest wait for acks=all before answering 503",
    ),
    (
        "LEDGER_SCYLLA_NODES",
        "127.0.0.1:9042",
        "CQL contact points, comma-separated",
    ),
    (
        "LEDGER_SCYLLA_KEYSPACE",
        "session_ledger",
        "keyspace of the projection",
    ),
    (
        "LEDGER_SCYLLA_REPLICATION",
        "{'class': 'SimpleStrategy', 'replication_factor': 1}",
        "replication map of the keyspace when created",
    ),
    (
        "LEDGER_INSTANCE_ID",
        "(none)",
        "stable name of this instance (e.g. a StatefulSet pod): the projector rejoins its consumer group under it at once after a restart",
    ),
    (
        "LEDGER_JWKS_URL",
        "(local keys)",
        "validators fetch verification keys from this JWKS",
    ),
    (
        "LEDGER_JWKS_ALLOW_HTTP",
        "0",
        "1 lets LEDGER_JWKS_URL be plain http on a non-loopback address",
    ),
    (
        "LEDGER_OTLP_ENDPOINT",
        "(off)",
        "OTLP/gRPC endpoint for traces",
    ),
    (
        "LEDGER_SEALER",
        "on",
        "the projector role seals the log with keys/seal (on|off)",
    ),
    (
        "LEDGER_SSF_RECEIVER_TOKENS",
        "(off)",
        "SSF receivers as name=token,... (turns the SSF transmitter on)",
    ),
];

impl Settings {
    pub fn from_env() -> Result<Settings, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let value = |var: &'static str| -> (String, &'static str) {
            let default = VARIABLES
                .iter()
                .find(|(name, _, _)| *name == var)
                .map_or("", |(_, d, _)| d);
            (get(var).unwrap_or_else(|| default.to_owned()), var)
        };
        let addr = |var| {
            let (v, var) = value(var);
            v.parse::<SocketAddr>().map_err(|e| invalid(var, &v, e))
        };
        let duration = |var| {
            let (v, var) = value(var);
            humantime::parse_duration(&v).map_err(|e| invalid(var, &v, e))
        };
        let text = |var| {
            let (v, var) = value(var);
            if v.trim().is_empty() {
                Err(invalid(var, &v, "must not be empty"))
            } else {
                Ok(v)
            }
        };
        let secret = |var: &'static str, t: String| {
            if t.len() < 16 {
                Err(invalid(var, "<redacted>", "must be at least 16 characters"))
            } else {
                Ok(t)
            }
        };
        let service_token = get("LEDGER_SERVICE_TOKEN")
            .map(|t| secret("LEDGER_SERVICE_TOKEN", t))
            .transpose()?;
        let login_token = get("LEDGER_LOGIN_TOKEN")
            .map(|t| secret("LEDGER_LOGIN_TOKEN", t))
            .transpose()?;
        let introspect_tokens = get("LEDGER_INTROSPECT_TOKENS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| secret("LEDGER_INTROSPECT_TOKENS", t.to_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(login) = &login_token
            && introspect_tokens.contains(login)
        {
            return Err(invalid(
                "LEDGER_INTROSPECT_TOKENS",
                "<redacted>",
                "must not contain LEDGER_LOGIN_TOKEN: a resource server's credential must not open sessions",
            ));
        }
        let policy = Policy {
            access_ttl: duration("LEDGER_ACCESS_TTL")?,
            refresh_idle_ttl: duration("LEDGER_REFRESH_IDLE_TTL")?,
            session_max_ttl: duration("LEDGER_SESSION_MAX_TTL")?,
            refresh_grace: duration("LEDGER_REFRESH_GRACE")?,
            clock_leeway: duration("LEDGER_CLOCK_LEEWAY")?,
            skew_margin: duration("LEDGER_CLOCK_SKEW_MARGIN")?,
        };
        if policy.clock_leeway > MAX_LEEWAY {
            let (v, var) = value("LEDGER_CLOCK_LEEWAY");
            return Err(invalid(var, &v, "must be at most 5m"));
        }
        policy
            .validate()
            .map_err(|e| ConfigError::Policy(e.to_string()))?;
        let number = |var| {
            let (v, var) = value(var);
            v.parse::<i32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid(var, &v, "must be a positive integer"))
        };
        let api_fence = match value("LEDGER_API_FENCE") {
            (v, _) if v == "off" => None,
            (v, var) => Some(humantime::parse_duration(&v).map_err(|e| invalid(var, &v, e))?),
        };
        let api_view = match value("LEDGER_API_VIEW") {
            (v, _) if v == "log" => ApiView::Log,
            (v, _) if v == "store" => ApiView::Store,
            (v, var) => return Err(invalid(var, &v, "must be log or store")),
        };
        let backend = match value("LEDGER_BACKEND").0.as_str() {
            "embedded" => Backend::Embedded,
            "kafka" => Backend::Kafka(Box::new(KafkaSettings {
                brokers: text("LEDGER_KAFKA_BROKERS")?,
                topic: text("LEDGER_KAFKA_TOPIC")?,
                remote_topics: value("LEDGER_KAFKA_REMOTE_TOPICS")
                    .0
                    .split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect(),
                partitions: number("LEDGER_KAFKA_PARTITIONS")?,
                replication_factor: number("LEDGER_KAFKA_REPLICATION_FACTOR")?,
                delivery_timeout: duration("LEDGER_KAFKA_DELIVERY_TIMEOUT")?,
                scylla_nodes: text("LEDGER_SCYLLA_NODES")?
                    .split(',')
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .collect(),
                keyspace: {
                    let (v, var) = value("LEDGER_SCYLLA_KEYSPACE");
                    let ok = !v.is_empty()
                        && v.len() <= 48
                        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && v.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
                    if !ok {
                        return Err(invalid(
                            var,
                            &v,
                            "must be a CQL identifier: a letter, then letters, digits or _, at most 48",
                        ));
                    }
                    v
                },
                replication: text("LEDGER_SCYLLA_REPLICATION")?,
                revocations_topic: match get("LEDGER_KAFKA_REVOCATIONS_TOPIC") {
                    Some(t) if !t.trim().is_empty() => t,
                    _ => match text("LEDGER_KAFKA_TOPIC")?.as_str() {
                        "session-events" => "session-revocations".to_owned(),
                        other => format!("{other}-revocations"),
                    },
                },
                instance_id: match get("LEDGER_INSTANCE_ID") {
                    None => None,
                    Some(v)
                        if !v.is_empty()
                            && v.len() <= 200
                            && v.chars().all(|c| c.is_ascii_graphic()) =>
                    {
                        Some(v)
                    }
                    Some(v) => {
                        return Err(invalid(
                            "LEDGER_INSTANCE_ID",
                            &v,
                            "must be 1 to 200 printable characters without spaces",
                        ));
                    }
                },
            })),
            other => {
                return Err(invalid(
                    "LEDGER_BACKEND",
                    other,
                    "must be embedded or kafka",
                ));
            }
        };
        let optional = |var: &'static str| get(var).filter(|v| !v.trim().is_empty());
        let (abort_after_append, abort_before_commit) =
            match optional("LEDGER_FAILPOINT").as_deref() {
                None => (false, false),
                Some("abort-after-append") => (true, false),
                Some("abort-before-commit") => (false, true),
                Some(other) => {
                    return Err(invalid(
                        "LEDGER_FAILPOINT",
                        other,
                        "the failpoints are abort-after-append and abort-before-commit",
                    ));
                }
            };
        let test_clock_offset_micros = match optional("LEDGER_TEST_CLOCK_OFFSET") {
            None => 0,
            Some(v) => test_clock_offset(&v, cfg!(debug_assertions))?,
        };
        let sealer = match value("LEDGER_SEALER") {
            (v, _) if v == "on" => true,
            (v, _) if v == "off" => false,
            (v, var) => return Err(invalid(var, &v, "must be on or off")),
        };
        let ssf_receivers = match optional("LEDGER_SSF_RECEIVER_TOKENS") {
            None => None,
            Some(spec) => Some(
                ledger_ssf::http::ReceiverCredentials::parse(&spec)
                    .map_err(|e| invalid("LEDGER_SSF_RECEIVER_TOKENS", "<redacted>", e))?,
            ),
        };
        Ok(Settings {
            ssf_receivers,
            abort_after_append,
            abort_before_commit,
            test_clock_offset_micros,
            sealer,
            backend,
            jwks_url: optional("LEDGER_JWKS_URL")
                .map(|url| jwks_url(url, value("LEDGER_JWKS_ALLOW_HTTP").0))
                .transpose()?,
            otlp_endpoint: optional("LEDGER_OTLP_ENDPOINT"),
            api_addr: addr("LEDGER_API_ADDR")?,
            validator_addr: addr("LEDGER_VALIDATOR_ADDR")?,
            projector_addr: addr("LEDGER_PROJECTOR_ADDR")?,
            data_dir: PathBuf::from(text("LEDGER_DATA_DIR")?),
            login_token,
            introspect_tokens,
            service_token,
            issuer: text("LEDGER_ISSUER")?,
            audience: text("LEDGER_AUDIENCE")?,
            region: text("LEDGER_REGION")?,
            policy,
            validator_max_staleness: duration("LEDGER_VALIDATOR_MAX_STALENESS")?,
            read_your_writes: duration("LEDGER_READ_YOUR_WRITES")?,
            api_fence,
            api_view,
        })
    }
}

/// `LEDGER_TEST_CLOCK_OFFSET`: `+7s` or `-7s` (a sign, then a duration of at most an
/// hour). A skewed clock weakens expiry checks, so only test (debug) builds accept it.
fn test_clock_offset(v: &str, test_build: bool) -> Result<i64, ConfigError> {
    const VAR: &str = "LEDGER_TEST_CLOCK_OFFSET";
    if !test_build {
        return Err(invalid(
            VAR,
            v,
            "is a test-only setting, refused by release builds",
        ));
    }
    let (sign, magnitude) = match v.trim().split_at_checked(1) {
        Some(("+", m)) => (1, m),
        Some(("-", m)) => (-1, m),
        _ => return Err(invalid(VAR, v, "must start with + or -, e.g. +15s")),
    };
    let offset = humantime::parse_duration(magnitude).map_err(|e| invalid(VAR, v, e))?;
    if offset > Duration::from_secs(3600) {
        return Err(invalid(VAR, v, "must be at most 1h"));
    }
    let micros = i64::try_from(offset.as_micros()).unwrap_or(i64::MAX);
    Ok(sign * micros)
}

/// `LEDGER_JWKS_URL`: https, or http on a loopback address or with
/// `LEDGER_JWKS_ALLOW_HTTP=1` (the keys decide which tokens are genuine).
fn jwks_url(url: String, allow_http: String) -> Result<String, ConfigError> {
    let allow_http = match allow_http.as_str() {
        "1" => true,
        "0" | "" => false,
        other => return Err(invalid("LEDGER_JWKS_ALLOW_HTTP", other, "must be 0 or 1")),
    };
    let parsed = reqwest::Url::parse(&url).map_err(|e| invalid("LEDGER_JWKS_URL", &url, e))?;
    let loopback = match parsed.host_str() {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(url),
        "http" if loopback || allow_http => Ok(url),
        "http" => Err(invalid(
            "LEDGER_JWKS_URL",
            &url,
            "must be https (plain http only for a loopback address, or with LEDGER_JWKS_ALLOW_HTTP=1)",
        )),
        _ => Err(invalid("LEDGER_JWKS_URL", &url, "must be an https URL")),
    }
}

fn invalid(var: &'static str, value: &str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        var,
        value: value.to_owned(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_lookup(|k| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn every_variable_read_has_a_documented_default() {
        let source = include_str!("config.rs");
        let documented: Vec<&str> = VARIABLES.iter().map(|(name, _, _)| *name).collect();
        let names = source.split('"').filter(|s| {
            s.len() > 7
                && s.starts_with("LEDGER_")
                && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        });
        for quoted in names {
            assert!(documented.contains(&quoted), "{quoted} is not in VARIABLES");
        }
    }

    #[test]
    fn defaults_are_valid() {
        let s = with(&[]).unwrap();
        assert_eq!(s.policy.access_ttl, Duration::from_secs(900));
        assert_eq!(s.api_addr.port(), 8080);
        assert_eq!(s.service_token, None);
    }

    #[test]
    fn refreshes_behind_the_fence_read_the_apis_own_view_unless_told_otherwise() {
        for backend in ["embedded", "kafka"] {
            let s = with(&[("LEDGER_BACKEND", backend)]).unwrap();
            assert_eq!(s.api_view, ApiView::Log);
            assert_eq!(s.api_fence, Some(Duration::from_secs(3)));
            let s = with(&[("LEDGER_BACKEND", backend), ("LEDGER_API_VIEW", "store")]).unwrap();
            assert_eq!(s.api_view, ApiView::Store);
            let s = with(&[("LEDGER_BACKEND", backend), ("LEDGER_API_FENCE", "off")]).unwrap();
            assert_eq!(s.api_fence, None);
        }
        let err = with(&[("LEDGER_API_VIEW", "memory")]).unwrap_err();
        assert!(err.to_string().starts_with("LEDGER_API_VIEW: "), "{err}");
        let err = with(&[("LEDGER_API_FENCE", "soon")]).unwrap_err();
        assert!(err.to_string().starts_with("LEDGER_API_FENCE: "), "{err}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = with(&[("LEDGER_ACCESS_TTL", "soon")]).unwrap_err();
        assert!(err.to_string().starts_with("LEDGER_ACCESS_TTL: "), "{err}");
        let err = with(&[("LEDGER_API_ADDR", "localhost")]).unwrap_err();
        assert!(err.to_string().starts_with("LEDGER_API_ADDR: "), "{err}");
        let err = with(&[("LEDGER_CLOCK_LEEWAY", "1h")]).unwrap_err();
        assert!(
            err.to_string().starts_with("LEDGER_CLOCK_LEEWAY: "),
            "{err}"
        );
        let err = with(&[("LEDGER_SERVICE_TOKEN", "short")]).unwrap_err();
        assert!(
            err.to_string().starts_with("LEDGER_SERVICE_TOKEN: "),
            "{err}"
        );
        assert!(
            !err.to_string().contains("short"),
            "the secret is not echoed"
        );
    }

    #[test]
    fn credentials_are_split_and_each_checked() {
        let s = with(&[
            ("LEDGER_LOGIN_TOKEN", "login-token-0123456789"),
            (
                "LEDGER_INTROSPECT_TOKENS",
                "rs-one-0123456789abcdef, rs-two-0123456789abcdef,",
            ),
        ])
        .unwrap();
        assert_eq!(s.login_token.as_deref(), Some("login-token-0123456789"));
        assert_eq!(
            s.introspect_tokens,
            ["rs-one-0123456789abcdef", "rs-two-0123456789abcdef"]
        );
        let err =
            with(&[("LEDGER_INTROSPECT_TOKENS", "long-enough-0123456789,short")]).unwrap_err();
        assert!(
            err.to_string().starts_with("LEDGER_INTROSPECT_TOKENS: "),
            "{err}"
        );
        assert!(
            !err.to_string().contains("short"),
            "the secret is not echoed"
        );
        let err = with(&[
            ("LEDGER_LOGIN_TOKEN", "same-token-0123456789"),
            ("LEDGER_INTROSPECT_TOKENS", "same-token-0123456789"),
        ])
        .unwrap_err();
        assert!(
            err.to_string().starts_with("LEDGER_INTROSPECT_TOKENS: "),
            "{err}"
        );
    }

    #[test]
    fn the_jwks_is_fetched_over_https_unless_on_this_host_or_allowed() {
        let url = |u: &str| with(&[("LEDGER_JWKS_URL", u)]).map(|s| s.jwks_url);
        for ok in [
            "https://issuer.example/.well-known/jwks.json",
            "http://127.0.0.1:8080/.well-known/jwks.json",
            "http://localhost:8080/.well-known/jwks.json",
            "http://[::1]:8080/.well-known/jwks.json",
        ] {
            assert_eq!(url(ok), Ok(Some(ok.to_owned())));
        }
        for refused in [
            "http://api.internal:8080/.well-known/jwks.json",
            "http://10.0.0.7/.well-known/jwks.json",
            "http://127.0.0.1.evil.example/jwks.json",
            "ftp://issuer.example/jwks.json",
            "file:///etc/jwks.json",
            "not a url",
        ] {
            let err = url(refused).unwrap_err();
            assert!(err.to_string().starts_with("LEDGER_JWKS_URL: "), "{err}");
        }
        let allowed = with(&[
            ("LEDGER_JWKS_URL", "http://api.internal:8080/jwks.json"),
            ("LEDGER_JWKS_ALLOW_HTTP", "1"),
        ])
        .unwrap();
        assert_eq!(
            allowed.jwks_url.as_deref(),
            Some("http://api.internal:8080/jwks.json")
        );
        let err = with(&[
            ("LEDGER_JWKS_URL", "https://issuer.example/jwks.json"),
            ("LEDGER_JWKS_ALLOW_HTTP", "yes"),
        ])
        .unwrap_err();
        assert!(
            err.to_string().starts_with("LEDGER_JWKS_ALLOW_HTTP: "),
            "{err}"
        );
    }

    #[test]
    fn kafka_backend_reads_its_variables() {
        let s = with(&[
            ("LEDGER_BACKEND", "kafka"),
            ("LEDGER_SCYLLA_NODES", "a:9042, b:9042"),
            ("LEDGER_KAFKA_PARTITIONS", "12"),
        ])
        .unwrap();
        let Backend::Kafka(k) = s.backend else {
            panic!("expected kafka")
        };
        assert_eq!(k.scylla_nodes, ["a:9042", "b:9042"]);
        assert_eq!(k.partitions, 12);
        assert_eq!(k.topic, "session-events");
        let err = with(&[("LEDGER_BACKEND", "redis")]).unwrap_err();
        assert!(err.to_string().starts_with("LEDGER_BACKEND: "), "{err}");
        let err = with(&[
            ("LEDGER_BACKEND", "kafka"),
            ("LEDGER_SCYLLA_KEYSPACE", "x; DROP"),
        ])
        .unwrap_err();
        assert!(
            err.to_string().starts_with("LEDGER_SCYLLA_KEYSPACE: "),
            "{err}"
        );
        let err = with(&[
            ("LEDGER_BACKEND", "kafka"),
            ("LEDGER_KAFKA_PARTITIONS", "0"),
        ])
        .unwrap_err();
        assert!(
            err.to_string().starts_with("LEDGER_KAFKA_PARTITIONS: "),
            "{err}"
        );
    }

    #[test]
    fn failpoints_and_the_test_clock_offset_are_checked() {
        let s = with(&[("LEDGER_FAILPOINT", "abort-before-commit")]).unwrap();
        assert!(s.abort_before_commit && !s.abort_after_append);
        let err = with(&[("LEDGER_FAILPOINT", "abort-sometime")]).unwrap_err();
        assert!(err.to_string().starts_with("LEDGER_FAILPOINT: "), "{err}");
        assert_eq!(with(&[]).unwrap().test_clock_offset_micros, 0);
        assert_eq!(test_clock_offset("+7s", true), Ok(7_000_000));
        assert_eq!(test_clock_offset("-1m", true), Ok(-60_000_000));
        for bad in ["7s", "+2h", "-soon", ""] {
            let err = test_clock_offset(bad, true).unwrap_err();
            assert!(
                err.to_string().starts_with("LEDGER_TEST_CLOCK_OFFSET: "),
                "{err}"
            );
        }
        let err = test_clock_offset("+7s", false).unwrap_err();
        assert!(err.to_string().contains("test-only"), "{err}");
    }

    #[test]
    fn zero_leeway_is_allowed_and_contradictions_are_not() {
        assert!(with(&[("LEDGER_CLOCK_LEEWAY", "0s")]).is_ok());
        let err = with(&[("LEDGER_REFRESH_GRACE", "2d")]).unwrap_err();
        assert!(matches!(err, ConfigError::Policy(_)), "{err}");
    }
}
