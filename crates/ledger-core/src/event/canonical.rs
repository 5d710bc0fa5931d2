//! The JSON [`Event::to_json`] writes, read without the general machinery.
//!
//! A replay decodes every event of the log, and nearly all of them are in the one
//! shape this crate writes: compact, fields in declaration order, optional fields left
//! out when empty, strings without escapes. [`read`] reads exactly that shape as a
//! template: a literal key, a value, the next literal key. At the first byte that
//! departs from it (whitespace, another field order, an unknown or a `null` optional
//! field, an escape, a number in another form, a value the types refuse) it gives up
//! and [`Event::from_json`] reads the event with the general reader, which accepts
//! every form it always did and reports the errors. So `read` never refuses an event:
//! it either returns exactly what the general reader returns, or `None`.
//!
//! Each value goes through the same conversion the general reader applies
//! (`Uuid::from_str`, [`Subject::parse`], [`Timestamp::parse_rfc3339`]); the claims
//! object is read by `serde_json` itself.

use std::str::FromStr;

use uuid::Uuid;

use super::{
    Event, EventKind, RevocationScope, RevokeReason, SessionIssued, SessionRefreshed,
    SessionRevokedAll, SessionWindow, TraceContext,
};
use crate::{EventId, Generation, SessionId, Subject, Timestamp};

/// Claims nested deeper than this (counted conservatively, as every `{` and `[` in
/// them) are left to the general reader, whose nesting limit counts the event's own
/// two levels above the claims.
const MAX_CLAIMS_NESTING: usize = 64;

/// The event in `text`, when `text` is in the canonical shape; `None` otherwise.
pub(super) fn read(text: &str) -> Option<Event> {
    let mut c = Cursor { text, pos: 0 };
    c.lit("{\"event_id\":")?;
    let event_id = EventId::from_uuid(c.uuid()?);
    c.lit(",\"schema_version\":")?;
    let schema_version = u32::try_from(c.u64()?).ok()?;
    c.lit(",\"session_id\":")?;
    let session_id = if c.try_lit("null") {
        None
    } else {
        Some(SessionId::from_uuid(c.uuid()?))
    };
    c.lit(",\"subject\":")?;
    let subject = Subject::parse(c.str()?).ok()?;
    c.lit(",\"generation\":")?;
    let generation = if c.try_lit("null") {
        None
    } else {
        Some(Generation::new(c.u64()?))
    };
    c.lit(",\"occurred_at\":")?;
    let occurred_at = c.timestamp()?;
    c.lit(",\"region\":")?;
    let region = c.str()?.to_owned();
    let trace_context = if c.try_lit(",\"trace_context\":{\"traceparent\":") {
        let traceparent = c.str()?.to_owned();
        let tracestate = if c.try_lit(",\"tracestate\":") {
            Some(c.str()?.to_owned())
        } else {
            None
        };
        c.lit("}")?;
        Some(TraceContext {
            traceparent,
            tracestate,
        })
    } else {
        None
    };
    c.lit(",\"type\":\"")?;
    let kind = if c.try_lit("SessionIssued\",\"data\":") {
        EventKind::SessionIssued(issued(&mut c)?)
    } else if c.try_lit("SessionRefreshed\",\"data\":") {
        EventKind::SessionRefreshed(refreshed(&mut c)?)
    } else if c.try_lit("SessionRevokedAll\",\"data\":") {
        EventKind::SessionRevokedAll(revoked_all(&mut c)?)
    } else {
        return None;
    };
    c.lit("}")?;
    c.end()?;
    Some(Event {
        event_id,
        schema_version,
        session_id,
        subject,
        generation,
        occurred_at,
        region,
        trace_context,
        kind,
    })
}

fn issued(c: &mut Cursor<'_>) -> Option<SessionIssued> {
    c.lit("{")?;
    let client_id = if c.try_lit("\"client_id\":") {
        let client_id = c.str()?.to_owned();
        c.lit(",")?;
        Some(client_id)
    } else {
        None
    };
    c.lit("\"claims\":")?;
    let claims = c.claims()?;
    c.lit(",\"session\":")?;
    let session = c.window()?;
    c.lit(",\"access_jti\":")?;
    let access_jti = c.str()?.to_owned();
    c.lit(",\"access_expires_at\":")?;
    let access_expires_at = c.timestamp()?;
    c.lit(",\"refresh_expires_at\":")?;
    let refresh_expires_at = c.timestamp()?;
    c.lit(",\"retain_until\":")?;
    let retain_until = c.timestamp()?;
    c.lit("}")?;
    Some(SessionIssued {
        client_id,
        claims,
        session,
        access_jti,
        access_expires_at,
        refresh_expires_at,
        retain_until,
    })
}

fn refreshed(c: &mut Cursor<'_>) -> Option<SessionRefreshed> {
    c.lit("{\"previous_generation\":")?;
    let previous_generation = Generation::new(c.u64()?);
    c.lit(",\"rotated_at\":")?;
    let rotated_at = c.timestamp()?;
    c.lit(",\"grace_retry\":")?;
    let grace_retry = if c.try_lit("true") {
        true
    } else {
        c.lit("false")?;
        false
    };
    let client_id = if c.try_lit(",\"client_id\":") {
        Some(c.str()?.to_owned())
    } else {
        None
    };
    c.lit(",\"session\":")?;
    let session = c.window()?;
    c.lit(",\"access_jti\":")?;
    let access_jti = c.str()?.to_owned();
    c.lit(",\"access_expires_at\":")?;
    let access_expires_at = c.timestamp()?;
    c.lit(",\"refresh_expires_at\":")?;
    let refresh_expires_at = c.timestamp()?;
    c.lit(",\"retain_until\":")?;
    let retain_until = c.timestamp()?;
    c.lit("}")?;
    Some(SessionRefreshed {
        previous_generation,
        rotated_at,
        grace_retry,
        client_id,
        session,
        access_jti,
        access_expires_at,
        refresh_expires_at,
        retain_until,
    })
}

fn revoked_all(c: &mut Cursor<'_>) -> Option<SessionRevokedAll> {
    c.lit("{\"scope\":\"")?;
    let scope = if c.try_lit("family\"") {
        RevocationScope::Family
    } else {
        c.lit("subject\"")?;
        RevocationScope::Subject
    };
    c.lit(",\"reason\":\"")?;
    let reason = if c.try_lit("logout\"") {
        RevokeReason::Logout
    } else if c.try_lit("reuse_detected\"") {
        RevokeReason::ReuseDetected
    } else {
        c.lit("admin\"")?;
        RevokeReason::Admin
    };
    c.lit(",\"revoked_at\":")?;
    let revoked_at = c.timestamp()?;
    c.lit(",\"keep_until\":")?;
    let keep_until = c.timestamp()?;
    let session = if c.try_lit(",\"session\":") {
        Some(c.window()?)
    } else {
        None
    };
    let replayed_generation = if c.try_lit(",\"replayed_generation\":") {
        Some(Generation::new(c.u64()?))
    } else {
        None
    };
    let replayed_rotated_at = if c.try_lit(",\"replayed_rotated_at\":") {
        Some(c.timestamp()?)
    } else {
        None
    };
    c.lit("}")?;
    Some(SessionRevokedAll {
        scope,
        reason,
        revoked_at,
        keep_until,
        session,
        replayed_generation,
        replayed_rotated_at,
    })
}

/// A position in the text; every method consumes what it read, or fails.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.text.as_bytes()[self.pos..]
    }

    /// Consumes `lit` if the text continues with it.
    fn try_lit(&mut self, lit: &str) -> bool {
        let found = self.rest().starts_with(lit.as_bytes());
        if found {
            self.pos += lit.len();
        }
        found
    }

    fn lit(&mut self, lit: &str) -> Option<()> {
        self.try_lit(lit).then_some(())
    }

    fn end(&self) -> Option<()> {
        (self.pos == self.text.len()).then_some(())
    }

    /// A string without escapes or control characters (which JSON forbids unescaped).
    fn str(&mut self) -> Option<&'a str> {
        self.lit("\"")?;
        let len = string_len(self.rest())?;
        if self.rest()[len] != b'"' {
            return None;
        }
        // Both ends are ASCII bytes of a `str`, so character boundaries.
        let s = self.text.get(self.pos..self.pos + len)?;
        self.pos += len + 1;
        Some(s)
    }

    /// A non-negative integer as JSON writes it: `0`, or digits without a leading zero.
    /// What follows is checked by the next literal (a `.` or an `e` there fails it).
    fn u64(&mut self) -> Option<u64> {
        let digits = self
            .rest()
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || (digits > 1 && self.rest()[0] == b'0') {
            return None;
        }
        let n = self.rest()[..digits].iter().try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        self.pos += digits;
        Some(n)
    }

    fn uuid(&mut self) -> Option<Uuid> {
        Uuid::from_str(self.str()?).ok()
    }

    fn timestamp(&mut self) -> Option<Timestamp> {
        Timestamp::parse_rfc3339(self.str()?).ok()
    }

    fn window(&mut self) -> Option<SessionWindow> {
        self.lit("{\"started_at\":")?;
        let started_at = self.timestamp()?;
        self.lit(",\"expires_at\":")?;
        let expires_at = self.timestamp()?;
        self.lit("}")?;
        Some(SessionWindow {
            started_at,
            expires_at,
        })
    }

    /// Any JSON object, read by `serde_json` from here to its end.
    fn claims(&mut self) -> Option<serde_json::Map<String, serde_json::Value>> {
        if self.rest().first() != Some(&b'{') {
            return None;
        }
        let rest = self.text.get(self.pos..)?;
        let mut values = serde_json::Deserializer::from_str(rest).into_iter();
        let claims = values.next()?.ok()?;
        let len = values.byte_offset();
        let nesting = rest.as_bytes()[..len]
            .iter()
            .filter(|&&b| b == b'{' || b == b'[')
            .count();
        if nesting > MAX_CLAIMS_NESTING {
            return None;
        }
        self.pos += len;
        Some(claims)
    }
}

/// Where the first `"`, `\` or control character of `b` is: eight bytes at a time.
fn string_len(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let special = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
    let mut chunks = b.chunks_exact(8);
    for (i, chunk) in chunks.by_ref().enumerate() {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        // The high bit of each byte that is zero, or below 0x20; bytes above the
        // first such byte may be flagged wrongly, so only the lowest flag counts.
        let flags = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let flags = flags & HIGH;
        if flags != 0 {
            return Some(i * 8 + (flags.trailing_zeros() / 8) as usize);
        }
    }
    let tail = chunks.remainder();
    let at = tail.iter().position(|&b| special(b))?;
    Some(b.len() - tail.len() + at)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn string_len_finds_the_first_special_byte(
            bytes in prop::collection::vec(
                prop_oneof![
                    Just(b'"'),
                    Just(b'\\'),
                    0u8..0x20,
                    0x20u8..=0xff,
                    0x20u8..=0xff,
                    0x20u8..=0xff,
                ],
                0..40,
            ),
        ) {
            let naive = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(super::string_len(&bytes), naive);
        }
    }
}
