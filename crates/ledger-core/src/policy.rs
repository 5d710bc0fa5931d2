use std::time::Duration;

use crate::Timestamp;

/// The session rules an operator configures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Lifetime of an access token (never past the session deadline).
    pub access_ttl: Duration,
    /// How long the newest refresh token stays usable after it was minted.
    pub refresh_idle_ttl: Duration,
    /// The absolute deadline: no token of a family outlives login + this.
    pub session_max_ttl: Duration,
    /// How long after a rotation the previous refresh token still yields the same
    /// successor (concurrent tabs, a retry after a lost response).
    pub refresh_grace: Duration,
    /// Leeway validators allow on `exp`/`iat`.
    pub clock_leeway: Duration,
    /// Extra time revocation entries are kept, for clocks that disagree across hosts.
    pub skew_margin: Duration,
}

/// A policy whose parts contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("refresh grace ({grace:?}) must be shorter than the refresh idle ttl ({idle:?})")]
    GraceTooLong { grace: Duration, idle: Duration },
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            access_ttl: Duration::from_secs(15 * 60),
            refresh_idle_ttl: Duration::from_secs(24 * 3600),
            session_max_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_grace: Duration::from_secs(30),
            clock_leeway: Duration::from_secs(30),
            skew_margin: Duration::from_secs(30),
        }
    }
}

impl Policy {
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (name, d) in [
            ("access ttl", self.access_ttl),
            ("refresh idle ttl", self.refresh_idle_ttl),
            ("session max ttl", self.session_max_ttl),
        ] {
            if d.is_zero() {
                return Err(PolicyError::Zero(name));
            }
        }
        if self.refresh_grace >= self.refresh_idle_ttl {
            return Err(PolicyError::GraceTooLong {
                grace: self.refresh_grace,
                idle: self.refresh_idle_ttl,
            });
        }
        Ok(())
    }

    /// The absolute deadline of a session that started at `started_at`.
    pub fn deadline(&self, started_at: Timestamp) -> Timestamp {
        started_at.saturating_add(self.session_max_ttl)
    }

    /// Until when a refresh token minted at `minted` is usable: the idle ttl, never
    /// past the session's `deadline`.
    pub fn refresh_expiry(&self, minted: Timestamp, deadline: Timestamp) -> Timestamp {
        minted.saturating_add(self.refresh_idle_ttl).min(deadline)
    }

    /// How long past the last instant a token could be accepted its revocation entry is
    /// kept: validators' leeway plus the clock-skew margin (D5).
    pub fn retention_margin(&self) -> Duration {
        self.clock_leeway.saturating_add(self.skew_margin)
    }
}
