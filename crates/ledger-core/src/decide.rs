use crate::{
    EVENT_SCHEMA_VERSION, Event, EventId, EventKind, FamilyState, Generation, Policy,
    RevocationScope, RevokeReason, SessionId, SessionIssued, SessionRefreshed, SessionRevokedAll,
    SessionWindow, Subject, SubjectRevocation, Timestamp, TraceContext,
};

/// What the caller asks of a family.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// A login: the login service authenticated `subject`.
    Open {
        session_id: SessionId,
        subject: Subject,
        client_id: Option<String>,
        claims: serde_json::Map<String, serde_json::Value>,
        access_jti: String,
    },
    /// A refresh token of generation `presented` (its MAC already checked).
    Refresh {
        session_id: SessionId,
        presented: Generation,
        access_jti: String,
    },
    /// Signout, or an operator's revocation of one family.
    Revoke {
        session_id: SessionId,
        reason: RevokeReason,
    },
}

/// Everything a decision needs besides the state: the clock and the one id that
/// nothing in the command determines are passed in, so `decide` is a pure function.
#[derive(Clone, Debug)]
pub struct DecideContext<'a> {
    pub now: Timestamp,
    pub policy: &'a Policy,
    pub region: &'a str,
    pub trace_context: Option<TraceContext>,
    /// The id of an event the command does not determine: a grace retry (each one
    /// a distinct event with its own access token), a subject-wide revocation, a
    /// revocation of a family not known yet. Events that record a fact every
    /// instance must agree on (a rotation, a reuse detection, a signout) get ids
    /// derived from the family instead. Callers draw a fresh one per decision
    /// (`ledger_clock::new_event_id`).
    pub event_id: EventId,
}

/// Why a command was refused. None of these produce events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("session already exists")]
    SessionExists,
    #[error("unknown session")]
    UnknownSession,
    #[error("session was revoked ({})", reason.as_str())]
    Revoked { reason: RevokeReason },
    #[error("session reached its absolute deadline")]
    SessionExpired,
    #[error("refresh token expired")]
    RefreshExpired,
    /// The presented generation is newer than the state read: the reader lags behind
    /// another instance's write. Retrying later succeeds.
    #[error("session state is behind the presented refresh token")]
    StateBehind,
}

/// All business rules of a family: given its state (and a subject-wide revocation that
/// may cover it), what events does `command` produce?
///
/// A refresh of a rotated-away generation outside the grace window is *not* an error:
/// it produces `SessionRevokedAll{reason: reuse_detected}`, which the caller appends and
/// then reports as `invalid_grant`.
pub fn decide(
    state: Option<&FamilyState>,
    subject_revocation: Option<&SubjectRevocation>,
    command: Command,
    ctx: &DecideContext<'_>,
) -> Result<Vec<Event>, DomainError> {
    match command {
        Command::Open {
            session_id,
            subject,
            client_id,
            claims,
            access_jti,
        } => {
            if state.is_some() {
                return Err(DomainError::SessionExists);
            }
            // A session opened right after a subject-wide revocation must not fall
            // under it, even when both land in the same microsecond.
            let started_at = match subject_revocation {
                Some(r) if r.subject == subject && r.revoked_at >= ctx.now => {
                    Timestamp::from_unix_micros(r.revoked_at.unix_micros() + 1)
                }
                _ => ctx.now,
            };
            let session = SessionWindow {
                started_at,
                expires_at: ctx.policy.deadline(started_at),
            };
            let access_expires_at = access_expiry(ctx, session);
            let refresh_expires_at = ctx.policy.refresh_expiry(ctx.now, session.expires_at);
            let kind = EventKind::SessionIssued(SessionIssued {
                client_id,
                claims,
                session,
                access_jti,
                access_expires_at,
                refresh_expires_at,
                retain_until: retain_until(ctx, access_expires_at, refresh_expires_at),
            });
            let id = EventId::derived(session_id, "issued", Generation::INITIAL);
            Ok(vec![event(
                ctx,
                id,
                Some(session_id),
                subject,
                Some(Generation::INITIAL),
                kind,
            )])
        }
        Command::Refresh {
            session_id,
            presented,
            access_jti,
        } => {
            let state = state.ok_or(DomainError::UnknownSession)?;
            if let Some(reason) = revocation_reason(state, subject_revocation) {
                return Err(DomainError::Revoked { reason });
            }
            let head = state.head.ok_or(DomainError::UnknownSession)?;
            if ctx.now >= state.window.expires_at {
                return Err(DomainError::SessionExpired);
            }
            let refreshed = |generation, rotated_at, grace_retry, refresh_expires_at, id| {
                let access_expires_at = access_expiry(ctx, state.window);
                let kind = EventKind::SessionRefreshed(SessionRefreshed {
                    previous_generation: presented,
                    rotated_at,
                    grace_retry,
                    client_id: state.client_id.clone(),
                    session: state.window,
                    access_jti,
                    access_expires_at,
                    refresh_expires_at,
                    retain_until: retain_until(ctx, access_expires_at, refresh_expires_at),
                });
                let subject = state.subject.clone();
                event(ctx, id, Some(session_id), subject, Some(generation), kind)
            };
            if presented == head.generation {
                if ctx.now >= head.refresh_expires_at {
                    return Err(DomainError::RefreshExpired);
                }
                let next = head.generation.next();
                let refresh_expires_at =
                    ctx.policy.refresh_expiry(ctx.now, state.window.expires_at);
                let id = EventId::derived(session_id, "refreshed", next);
                return Ok(vec![refreshed(
                    next,
                    ctx.now,
                    false,
                    refresh_expires_at,
                    id,
                )]);
            }
            if presented > head.generation {
                return Err(DomainError::StateBehind);
            }
            let grace_ends = head.rotated_at.saturating_add(ctx.policy.refresh_grace);
            if presented.next() == head.generation && ctx.now < grace_ends {
                // Same successor again, a fresh access token; the head does not move.
                return Ok(vec![refreshed(
                    head.generation,
                    head.rotated_at,
                    true,
                    head.refresh_expires_at,
                    ctx.event_id,
                )]);
            }
            let replayed_rotated_at =
                (presented.next() == head.generation).then_some(head.rotated_at);
            let kind = EventKind::SessionRevokedAll(SessionRevokedAll {
                scope: RevocationScope::Family,
                reason: RevokeReason::ReuseDetected,
                revoked_at: ctx.now,
                keep_until: family_keep_until(state, ctx),
                session: Some(state.window),
                replayed_generation: Some(presented),
                replayed_rotated_at,
            });
            let id = EventId::derived(session_id, "revoked", head.generation);
            let subject = state.subject.clone();
            Ok(vec![event(
                ctx,
                id,
                Some(session_id),
                subject,
                Some(head.generation),
                kind,
            )])
        }
        Command::Revoke { session_id, reason } => {
            let Some(state) = state else {
                return Ok(Vec::new());
            };
            if revocation_reason(state, subject_revocation).is_some()
                || state.retain_until <= ctx.now
            {
                // Already revoked, or nothing of it can be accepted any more.
                return Ok(Vec::new());
            }
            let generation = state.head.map(|h| h.generation);
            let kind = EventKind::SessionRevokedAll(SessionRevokedAll {
                scope: RevocationScope::Family,
                reason,
                revoked_at: ctx.now,
                keep_until: family_keep_until(state, ctx),
                session: Some(state.window),
                replayed_generation: None,
                replayed_rotated_at: None,
            });
            let id = EventId::derived(session_id, "revoked", generation.unwrap_or_default());
            let subject = state.subject.clone();
            Ok(vec![event(
                ctx,
                id,
                Some(session_id),
                subject,
                generation,
                kind,
            )])
        }
    }
}

/// Revokes every family `subject` has opened up to now; later logins are unaffected.
pub fn decide_subject_revoke(
    subject: Subject,
    reason: RevokeReason,
    ctx: &DecideContext<'_>,
) -> Event {
    let kind = EventKind::SessionRevokedAll(SessionRevokedAll {
        scope: RevocationScope::Subject,
        reason,
        revoked_at: ctx.now,
        keep_until: keep_past_every_token(ctx),
        session: None,
        replayed_generation: None,
        replayed_rotated_at: None,
    });
    event(ctx, ctx.event_id, None, subject, None, kind)
}

/// Revokes a family the caller's state does not know (its login not projected yet,
/// or long expired), named by a token whose MAC or signature verified. The state is a
/// join, so the revocation is always safe to append: merged with the family's other
/// events it revokes the family; alone it is an entry that expires like any other.
///
/// The window is taken from the id's time (when the family was opened, to the
/// millisecond) and `subject` is the token's `sub` when known, else
/// [`Subject::unknown`]. The entry is kept as long as any token minted before now
/// could be acceptable.
pub fn decide_revoke_unseen(
    session_id: SessionId,
    subject: Option<Subject>,
    reason: RevokeReason,
    ctx: &DecideContext<'_>,
) -> Event {
    let started_at = session_id.created_at().unwrap_or(ctx.now).min(ctx.now);
    let session = SessionWindow {
        started_at,
        expires_at: ctx.policy.deadline(started_at),
    };
    let kind = EventKind::SessionRevokedAll(SessionRevokedAll {
        scope: RevocationScope::Family,
        reason,
        revoked_at: ctx.now,
        keep_until: keep_past_every_token(ctx),
        session: Some(session),
        replayed_generation: None,
        replayed_rotated_at: None,
    });
    let subject = subject.unwrap_or_else(Subject::unknown);
    event(ctx, ctx.event_id, Some(session_id), subject, None, kind)
}

/// Until when a revocation of tokens whose families are not known must be kept: past
/// the longest any token minted before now can stay acceptable (D5).
fn keep_past_every_token(ctx: &DecideContext<'_>) -> Timestamp {
    let policy = ctx.policy;
    let longest = policy
        .access_ttl
        .max(policy.refresh_idle_ttl)
        .min(policy.session_max_ttl);
    ctx.now
        .saturating_add(longest)
        .saturating_add(policy.retention_margin())
}

/// Why the family is revoked, by itself or by a subject-wide revocation covering it.
pub(crate) fn revocation_reason(
    state: &FamilyState,
    subject_revocation: Option<&SubjectRevocation>,
) -> Option<RevokeReason> {
    if let Some(r) = &state.revoked {
        return Some(r.reason);
    }
    subject_revocation
        .filter(|r| state.is_covered_by(r))
        .map(|r| r.reason)
}

/// An access token lives `access_ttl`, never past the deadline, in whole seconds (the
/// JWT `exp` is exactly the value the event records).
fn access_expiry(ctx: &DecideContext<'_>, session: SessionWindow) -> Timestamp {
    let exp = ctx
        .now
        .saturating_add(ctx.policy.access_ttl)
        .min(session.expires_at);
    Timestamp::from_unix_seconds(exp.unix_seconds())
}

fn retain_until(ctx: &DecideContext<'_>, access: Timestamp, refresh: Timestamp) -> Timestamp {
    access
        .max(refresh)
        .saturating_add(ctx.policy.retention_margin())
}

fn family_keep_until(state: &FamilyState, ctx: &DecideContext<'_>) -> Timestamp {
    let refresh = state
        .head
        .map_or(Timestamp::UNIX_EPOCH, |h| h.refresh_expires_at);
    retain_until(ctx, state.access_expires_at, refresh).max(state.retain_until)
}

fn event(
    ctx: &DecideContext<'_>,
    event_id: EventId,
    session_id: Option<SessionId>,
    subject: Subject,
    generation: Option<Generation>,
    kind: EventKind,
) -> Event {
    Event {
        event_id,
        schema_version: EVENT_SCHEMA_VERSION,
        session_id,
        subject,
        generation,
        occurred_at: ctx.now,
        region: ctx.region.to_owned(),
        trace_context: ctx.trace_context.clone(),
        kind,
    }
}

#[cfg(test)]
mod tests;
