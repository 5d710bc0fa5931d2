use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, LazyLock};

use ledger_telemetry::metrics::register;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
use std::time::{Duration, Instant};

use crate::recent::RecentWrites;
use crate::view::FamilyView;
use ledger_core::ports::{BackendError, EventLog, HistorySource, ProjectionFence, ProjectionStore};
use ledger_core::{
    Command, DecideContext, DomainError, Event, EventKind, FamilyState, FamilyStatus, Generation,
    Policy, RevokeReason, SessionId, Subject, SubjectRevocation, Timestamp, TraceContext, decide,
    decide_revoke_unseen, decide_subject_revoke,
};
use ledger_token::{
    AccessTokenIssuer, AccessTokenValidator, MintAccess, RESERVED_CLAIMS, RefreshTokens,
};

/// Largest serialised `claims` object accepted at login.
const MAX_CLAIMS_BYTES: usize = 4096;
const MAX_CLIENT_ID_LEN: usize = 255;
/// Per-family serialisation: requests for one family in one instance queue up here.
const LOCK_STRIPES: usize = 1024;

static APPENDED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(IntCounterVec::new(
        Opts::new(
            "ledger_events_appended_total",
            "events acknowledged by the log, by type",
        ),
        &["type"],
    ))
});
static APPEND_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "ledger_log_append_errors_total",
        "appends the log did not acknowledge (answered 503, no token issued)",
    ))
});
static REVOCATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(IntCounterVec::new(
        Opts::new(
            "ledger_revocations_total",
            "revocations appended, by scope and reason",
        ),
        &["scope", "reason"],
    ))
});

static REFRESH_STAGES: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(HistogramVec::new(
        HistogramOpts::new(
            "ledger_api_refresh_stage_seconds",
            "time a successful refresh spent in each stage: lock (the family's), end \
             (the api's view: asking where the log ends), fence (proving the state \
             current: the projector's checkpoint, or the view's reader reaching the end), \
             read (the family and subject state), decide, append (until the log \
             acknowledged), mint (signing the tokens)",
        )
        .buckets(vec![
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064,
            0.128, 0.256, 0.512, 1.0, 2.0, 4.0,
        ]),
        &["stage"],
    ))
});

/// The stages of a refresh, timed one after the other ([`REFRESH_STAGES`]).
#[derive(Clone, Copy, Debug)]
enum Stage {
    Lock,
    End,
    Fence,
    Read,
    Decide,
    Append,
    Mint,
}

impl Stage {
    const ALL: [Stage; 7] = [
        Stage::Lock,
        Stage::End,
        Stage::Fence,
        Stage::Read,
        Stage::Decide,
        Stage::Append,
        Stage::Mint,
    ];

    fn name(self) -> &'static str {
        match self {
            Stage::Lock => "lock",
            Stage::End => "end",
            Stage::Fence => "fence",
            Stage::Read => "read",
            Stage::Decide => "decide",
            Stage::Append => "append",
            Stage::Mint => "mint",
        }
    }
}

static STAGE_HISTOGRAMS: LazyLock<[Histogram; 7]> =
    LazyLock::new(|| Stage::ALL.map(|s| REFRESH_STAGES.with_label_values(&[s.name()])));

/// Time spent per stage of one refresh, recorded once it succeeded.
#[derive(Debug)]
struct Stages {
    last: Instant,
    spent: [Duration; 7],
}

impl Stages {
    fn start() -> Self {
        Stages {
            last: Instant::now(),
            spent: [Duration::ZERO; 7],
        }
    }

    /// Charges the time since the previous lap to `stage`.
    fn lap(&mut self, stage: Stage) {
        let now = Instant::now();
        self.spent[stage as usize] += now - self.last;
        self.last = now;
    }

    fn record(&self) {
        for (histogram, spent) in STAGE_HISTOGRAMS.iter().zip(self.spent) {
            histogram.observe(spent.as_secs_f64());
        }
    }
}

/// Why a request could not be served. Each variant maps to one HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidGrant(String),
    #[error("unknown session")]
    NotFound,
    /// The log or store did not acknowledge; nothing was issued, retrying is safe.
    #[error("{0}")]
    Unavailable(String),
    /// The log or store failed in a way a retry cannot fix (corrupt data, a refused
    /// request); nothing was issued.
    #[error("{0}")]
    Internal(String),
}

impl From<BackendError> for SessionError {
    fn from(e: BackendError) -> Self {
        if e.retryable() {
            tracing::warn!(error = %e, "backend call failed");
            SessionError::Unavailable("the session log is unavailable, retry shortly".into())
        } else {
            tracing::error!(error = %e, "backend call failed; a retry cannot help");
            SessionError::Internal("the session log cannot serve this request".into())
        }
    }
}

impl From<DomainError> for SessionError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::StateBehind => {
                SessionError::Unavailable("session state is catching up, retry shortly".into())
            }
            DomainError::Revoked { .. } => SessionError::InvalidGrant("session was revoked".into()),
            other => SessionError::InvalidGrant(other.to_string()),
        }
    }
}

/// A login, as the login service asks for it.
#[derive(Clone, Debug, Default)]
pub struct OpenSession {
    pub subject: String,
    pub client_id: Option<String>,
    pub claims: Option<serde_json::Value>,
}

/// Tokens handed out by a login or a refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub session_id: SessionId,
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: String,
    pub refresh_expires_in: u64,
    pub session_expires_at: Timestamp,
}

/// A family's state and history, for the status endpoint.
#[derive(Clone, Debug)]
pub struct SessionView {
    pub state: FamilyState,
    pub status: FamilyStatus,
    pub history: Vec<Event>,
}

/// Settings of a [`SessionService`].
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub policy: Policy,
    pub region: String,
    /// How long this instance trusts its own writes over a lagging projection.
    pub read_your_writes: Duration,
    /// Fault injection for crash tests: abort the process right after the log
    /// acknowledged a refresh, before answering (`LEDGER_FAILPOINT=abort-after-append`).
    pub abort_after_append: bool,
}

/// The session use cases over the ports.
///
/// **Invariant** (I1): no token is returned before `EventLog::append` acknowledged the
/// event that records it.
#[derive(Debug)]
pub struct SessionService {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    history: Arc<dyn HistorySource>,
    issuer: AccessTokenIssuer,
    access_validator: AccessTokenValidator,
    refresh_tokens: RefreshTokens,
    config: ServiceConfig,
    locks: Box<[tokio::sync::Mutex<()>]>,
    hasher: RandomState,
    recent_families: RecentWrites<SessionId, FamilyState>,
    recent_subjects: RecentWrites<Subject, SubjectRevocation>,
    /// Read-after-write across instances (several API instances on one log).
    fence: Option<Arc<dyn ProjectionFence>>,
    /// Read-after-write across instances from this process's own view of the log:
    /// refreshes decide from it instead of the store (and `fence` is not used).
    view: Option<Arc<FamilyView>>,
}

impl SessionService {
    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        history: Arc<dyn HistorySource>,
        issuer: AccessTokenIssuer,
        access_validator: AccessTokenValidator,
        refresh_tokens: RefreshTokens,
        config: ServiceConfig,
    ) -> Self {
        let window = config.read_your_writes;
        SessionService {
            log,
            store,
            history,
            issuer,
            access_validator,
            refresh_tokens,
            config,
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: RandomState::new(),
            recent_families: RecentWrites::new(window),
            recent_subjects: RecentWrites::new(window),
            fence: None,
            view: None,
        }
    }

    /// Before a refresh decides on a family, waits until the projection holds what
    /// every instance appended for it (and for its subject) before the request: with
    /// several API instances behind no sticky routing, a signout on one is then refused
    /// by a refresh on another.
    #[must_use]
    pub fn with_fence(mut self, fence: Arc<dyn ProjectionFence>) -> Self {
        self.fence = Some(fence);
        self
    }

    /// Refreshes decide from `view`, this process's own view of the log, once it has
    /// read everything the log acknowledged before the request: the guarantee of
    /// [`SessionService::with_fence`] without waiting for the projector or reading the
    /// store.
    #[must_use]
    pub fn with_view(mut self, view: Arc<FamilyView>) -> Self {
        self.view = Some(view);
        self
    }

    pub fn jwks(&self) -> serde_json::Value {
        self.issuer.keys().jwks()
    }

    pub fn policy(&self) -> &Policy {
        &self.config.policy
    }

    /// A login: opens a family and returns its first tokens.
    pub async fn open(
        &self,
        request: OpenSession,
        trace: Option<TraceContext>,
    ) -> Result<Grant, SessionError> {
        let subject = Subject::parse(request.subject)
            .map_err(|e| SessionError::InvalidRequest(e.to_string()))?;
        if subject.is_unknown() {
            return Err(SessionError::InvalidRequest(format!(
                "subject {} is reserved",
                Subject::UNKNOWN
            )));
        }
        let client_id = request.client_id.map(validate_client_id).transpose()?;
        let claims = validate_claims(request.claims)?;
        let session_id = ledger_clock::new_session_id();
        let subject_revocation = self.subject_revocation(&subject).await?;
        let now = ledger_clock::now();
        let jti = new_jti();
        let command = Command::Open {
            session_id,
            subject: subject.clone(),
            client_id,
            claims,
            access_jti: jti.clone(),
        };
        let events = decide(
            None,
            subject_revocation.as_ref(),
            command,
            &self.ctx(now, trace),
        )?;
        self.append(&events).await?;
        let state = self.remembered(session_id).ok_or(SessionError::NotFound)?;
        tracing::info!(%session_id, %subject, "session opened");
        Ok(self.grant(&state, &events, now))
    }

    /// `grant_type=refresh_token` (RFC 6749 §6) with the rotation rules of D3.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        trace: Option<TraceContext>,
    ) -> Result<Grant, SessionError> {
        let (session_id, presented) = self.refresh_tokens.parse(refresh_token).map_err(|e| {
            tracing::info!(error = %e, "refresh token refused");
            SessionError::InvalidGrant("refresh token is invalid".into())
        })?;
        let mut stages = Stages::start();
        let _guard = self.lock(session_id).await;
        stages.lap(Stage::Lock);
        let Some(state) = self.fenced_family(session_id, &mut stages).await? else {
            return Err(self.unknown_family(session_id, || {
                SessionError::InvalidGrant("refresh token is invalid".into())
            }));
        };
        let subject_revocation = self
            .fenced_subject_revocation(&state.subject, &mut stages)
            .await?;
        let now = ledger_clock::now();
        let command = Command::Refresh {
            session_id,
            presented,
            access_jti: new_jti(),
        };
        let events = decide(
            Some(&state),
            subject_revocation.as_ref(),
            command,
            &self.ctx(now, trace),
        )
        .inspect_err(|e| tracing::info!(%session_id, %presented, error = %e, "refresh refused"))?;
        stages.lap(Stage::Decide);
        self.append(&events).await?;
        stages.lap(Stage::Append);
        if self.config.abort_after_append {
            tracing::error!(%session_id, "failpoint abort-after-append: aborting before the answer");
            std::process::abort();
        }
        let Some(Event {
            kind: EventKind::SessionRefreshed(refreshed),
            ..
        }) = events.first()
        else {
            tracing::warn!(
                %session_id,
                %presented,
                "refresh token reuse detected, session revoked"
            );
            return Err(SessionError::InvalidGrant(
                "refresh token was already used; the session is revoked".into(),
            ));
        };
        if refreshed.grace_retry {
            tracing::info!(%session_id, %presented, "refresh retried within grace");
        }
        let state = self.remembered(session_id).unwrap_or(state);
        let grant = self.grant(&state, &events, now);
        stages.lap(Stage::Mint);
        stages.record();
        Ok(grant)
    }

    /// RFC 7009: revoke the family the token belongs to. Unknown, invalid or already
    /// revoked tokens are not an error.
    pub async fn revoke_token(
        &self,
        token: &str,
        hint: Option<&str>,
        trace: Option<TraceContext>,
    ) -> Result<(), SessionError> {
        // A refresh token names the family only; an access token also its subject.
        let as_refresh = || {
            self.refresh_tokens
                .parse(token)
                .ok()
                .map(|(id, _)| (id, None))
        };
        let as_access = || {
            let claims = self
                .access_validator
                .validate(token, ledger_clock::now())
                .ok()?;
            let id = claims.session_id().ok()?;
            Some((id, Subject::parse(claims.sub.as_str()).ok()))
        };
        let named = if hint == Some("access_token") {
            as_access().or_else(as_refresh)
        } else {
            as_refresh().or_else(as_access)
        };
        let Some((session_id, subject)) = named else {
            return Ok(());
        };
        self.revoke_session(session_id, subject, RevokeReason::Logout, trace)
            .await
    }

    /// Revokes one family (signout, or an operator), named by a verified token.
    /// `subject` is the token's `sub` when the token carries one.
    pub async fn revoke_session(
        &self,
        session_id: SessionId,
        subject: Option<Subject>,
        reason: RevokeReason,
        trace: Option<TraceContext>,
    ) -> Result<(), SessionError> {
        let _guard = self.lock(session_id).await;
        let Some(state) = self.family(session_id).await? else {
            // The projection does not know the family (it lags, or the family is long
            // gone): the revocation is appended all the same. The state is a join, so
            // it revokes the family once its other events are merged, and is harmless
            // otherwise. Answering 200 without it would drop the signout.
            let event = decide_revoke_unseen(
                session_id,
                subject,
                reason,
                &self.ctx(ledger_clock::now(), trace),
            );
            self.append(std::slice::from_ref(&event)).await?;
            tracing::info!(%session_id, reason = reason.as_str(), "session revoked before its state was seen");
            return Ok(());
        };
        let subject_revocation = self.subject_revocation(&state.subject).await?;
        let command = Command::Revoke { session_id, reason };
        let events = decide(
            Some(&state),
            subject_revocation.as_ref(),
            command,
            &self.ctx(ledger_clock::now(), trace),
        )?;
        self.append(&events).await?;
        if !events.is_empty() {
            tracing::info!(%session_id, reason = reason.as_str(), "session revoked");
        }
        Ok(())
    }

    /// Signs a subject out everywhere: every family opened up to now is revoked.
    pub async fn revoke_subject(
        &self,
        subject: &str,
        trace: Option<TraceContext>,
    ) -> Result<SubjectRevocation, SessionError> {
        let subject =
            Subject::parse(subject).map_err(|e| SessionError::InvalidRequest(e.to_string()))?;
        let event = decide_subject_revoke(
            subject.clone(),
            RevokeReason::Admin,
            &self.ctx(ledger_clock::now(), trace),
        );
        self.append(std::slice::from_ref(&event)).await?;
        tracing::info!(%subject, "subject revoked everywhere");
        SubjectRevocation::from_event(&event).ok_or(SessionError::NotFound)
    }

    /// Status and history of one family.
    pub async fn session(&self, session_id: SessionId) -> Result<SessionView, SessionError> {
        let state = self
            .family(session_id)
            .await?
            .ok_or(SessionError::NotFound)?;
        let subject_revocation = self.subject_revocation(&state.subject).await?;
        let status = FamilyStatus::of(&state, subject_revocation.as_ref(), ledger_clock::now());
        let history = self.history.history(session_id).await?;
        Ok(SessionView {
            state,
            status,
            history,
        })
    }

    /// What to answer for a family with a valid MAC that the projection does not know:
    /// one opened within the read-your-writes window (perhaps by another instance) is
    /// still being projected, so "retry shortly"; an older one has expired.
    fn unknown_family(&self, id: SessionId, gone: impl FnOnce() -> SessionError) -> SessionError {
        let recent = id.created_at().is_some_and(|created| {
            ledger_clock::now().duration_since(created) < self.config.read_your_writes
        });
        if recent {
            tracing::info!(session_id = %id, "family not projected yet; asking to retry");
            SessionError::Unavailable("session state is catching up, retry shortly".into())
        } else {
            gone()
        }
    }

    /// Whether the backend answers (readiness).
    pub async fn ready(&self) -> bool {
        self.store
            .family(SessionId::from_uuid(uuid::Uuid::nil()))
            .await
            .is_ok()
    }

    fn ctx(&self, now: Timestamp, trace_context: Option<TraceContext>) -> DecideContext<'_> {
        DecideContext {
            now,
            policy: &self.config.policy,
            region: &self.config.region,
            trace_context,
            event_id: ledger_clock::new_event_id(),
        }
    }

    async fn lock(&self, id: SessionId) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe =
            usize::try_from(self.hasher.hash_one(id) % LOCK_STRIPES as u64).unwrap_or_default();
        self.locks[stripe].lock().await
    }

    /// Appends, then remembers what was appended (read your own writes).
    async fn append(&self, events: &[Event]) -> Result<(), SessionError> {
        if events.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.log.append(events).await {
            APPEND_ERRORS.inc();
            return Err(e.into());
        }
        for event in events {
            APPENDED.with_label_values(&[event.event_type()]).inc();
            if let EventKind::SessionRevokedAll(r) = &event.kind {
                let scope = match r.scope {
                    ledger_core::RevocationScope::Family => "family",
                    ledger_core::RevocationScope::Subject => "subject",
                };
                REVOCATIONS
                    .with_label_values(&[scope, r.reason.as_str()])
                    .inc();
            }
        }
        for event in events {
            if let Some(f) = FamilyState::from_event(event) {
                self.recent_families.remember(f.session_id, f);
            } else if let Some(r) = SubjectRevocation::from_event(event) {
                self.recent_subjects.remember(r.subject.clone(), r);
            }
        }
        Ok(())
    }

    fn remembered(&self, id: SessionId) -> Option<FamilyState> {
        self.recent_families.get(&id)
    }

    /// [`Self::family`] once the fence (if any) says the store holds every
    /// acknowledged event of it. Refreshes decide on this; a signout does not need it
    /// (a revocation appended on older state is the same revocation, and a family not
    /// projected yet is answered by `unknown_family`).
    ///
    /// With a [`FamilyView`], the state comes from it once it has read everything the
    /// log acknowledged before this call (the store is not read).
    async fn fenced_family(
        &self,
        id: SessionId,
        stages: &mut Stages,
    ) -> Result<Option<FamilyState>, SessionError> {
        if let Some(view) = &self.view {
            let deadline = tokio::time::Instant::now() + view.wait();
            let end = view.end_after_now(deadline).await?;
            stages.lap(Stage::End);
            view.await_read(&end, deadline).await?;
            stages.lap(Stage::Fence);
            let state = self.recent_families.over(&id, view.family(id));
            stages.lap(Stage::Read);
            return Ok(state);
        }
        if let Some(fence) = &self.fence {
            fence.await_projected(&Event::family_key(id)).await?;
        }
        stages.lap(Stage::Fence);
        let state = self.family(id).await;
        stages.lap(Stage::Read);
        state
    }

    /// The store's view of a family joined with this instance's recent writes.
    async fn family(&self, id: SessionId) -> Result<Option<FamilyState>, SessionError> {
        let stored = self.store.family(id).await?;
        Ok(self.recent_families.over(&id, stored))
    }

    /// [`Self::subject_revocation`] behind the fence. Logins do without: a subject
    /// revocation covers the families opened up to it, so one racing with a login need
    /// not cover that login.
    ///
    /// With a [`FamilyView`], [`Self::fenced_family`] has already proven it current
    /// for every partition, the subject's included.
    async fn fenced_subject_revocation(
        &self,
        subject: &Subject,
        stages: &mut Stages,
    ) -> Result<Option<SubjectRevocation>, SessionError> {
        if let Some(view) = &self.view {
            let revocation = self
                .recent_subjects
                .over(subject, view.subject_revocation(subject));
            stages.lap(Stage::Read);
            return Ok(revocation);
        }
        if let Some(fence) = &self.fence {
            fence.await_projected(&Event::subject_key(subject)).await?;
        }
        stages.lap(Stage::Fence);
        let revocation = self.subject_revocation(subject).await;
        stages.lap(Stage::Read);
        revocation
    }

    async fn subject_revocation(
        &self,
        subject: &Subject,
    ) -> Result<Option<SubjectRevocation>, SessionError> {
        let stored = self.store.subject_revocation(subject).await?;
        Ok(self.recent_subjects.over(subject, stored))
    }

    /// Mints the tokens the (acknowledged) issue/refresh event describes.
    fn grant(&self, state: &FamilyState, events: &[Event], now: Timestamp) -> Grant {
        let (jti, access_expires_at, refresh_expires_at, generation) = match events.first() {
            Some(Event {
                kind: EventKind::SessionIssued(e),
                ..
            }) => (
                e.access_jti.as_str(),
                e.access_expires_at,
                e.refresh_expires_at,
                Generation::INITIAL,
            ),
            Some(
                event @ Event {
                    kind: EventKind::SessionRefreshed(e),
                    ..
                },
            ) => (
                e.access_jti.as_str(),
                e.access_expires_at,
                e.refresh_expires_at,
                event.generation.unwrap_or_default(),
            ),
            _ => unreachable!("grant is only called with an issue or refresh event"),
        };
        let no_claims = serde_json::Map::new();
        let access_token = self.issuer.mint(&MintAccess {
            subject: &state.subject,
            session_id: state.session_id,
            jti,
            issued_at: now,
            expires_at: access_expires_at,
            client_id: state.client_id.as_deref(),
            extra: state.claims.as_ref().unwrap_or(&no_claims),
        });
        Grant {
            session_id: state.session_id,
            access_token,
            expires_in: access_expires_at.duration_since(now).as_secs(),
            refresh_token: self.refresh_tokens.mint(state.session_id, generation),
            refresh_expires_in: refresh_expires_at.duration_since(now).as_secs(),
            session_expires_at: state.window.expires_at,
        }
    }
}

fn new_jti() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn validate_client_id(client_id: String) -> Result<String, SessionError> {
    if client_id.is_empty()
        || client_id.len() > MAX_CLIENT_ID_LEN
        || client_id.chars().any(char::is_control)
    {
        return Err(SessionError::InvalidRequest(format!(
            "client_id must be 1 to {MAX_CLIENT_ID_LEN} printable characters"
        )));
    }
    Ok(client_id)
}

fn validate_claims(
    claims: Option<serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, SessionError> {
    let claims = match claims {
        None | Some(serde_json::Value::Null) => return Ok(serde_json::Map::new()),
        Some(serde_json::Value::Object(map)) => map,
        Some(_) => {
            return Err(SessionError::InvalidRequest(
                "claims must be a JSON object".into(),
            ));
        }
    };
    if let Some(reserved) = claims
        .keys()
        .find(|k| RESERVED_CLAIMS.contains(&k.as_str()))
    {
        return Err(SessionError::InvalidRequest(format!(
            "claim {reserved} is set by the service and cannot be given"
        )));
    }
    let size = serde_json::to_vec(&claims).map_or(usize::MAX, |v| v.len());
    if size > MAX_CLAIMS_BYTES {
        return Err(SessionError::InvalidRequest(format!(
            "claims must serialise to at most {MAX_CLAIMS_BYTES} bytes"
        )));
    }
    Ok(claims)
}
