use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use ledger_core::{Generation, SessionId};
use sha2::Sha256;
use uuid::Uuid;

const PREFIX: &str = "rt1";
/// `rt1.<kid>.<payload>.<mac>` is never near this; longer input is refused unread.
const MAX_LEN: usize = 256;

/// Why a presented refresh token was refused. None of these revoke anything: a
/// forged token proves nothing about the family it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshTokenError {
    #[error("malformed refresh token")]
    Malformed,
    #[error("refresh token signed with an unknown key")]
    UnknownKey,
    #[error("refresh token failed verification")]
    BadMac,
}

/// Mints and checks refresh tokens: `rt1.<kid>.<base64url(session ‖ generation)>.<mac>`
/// with an HMAC-SHA256 over everything before the last dot.
///
/// **Invariant** (D3): the token for (family, generation) is a pure function of them and
/// the current key, so concurrent refreshes and retries converge on one successor.
/// Nothing secret is stored per session.
#[derive(Clone)]
pub struct RefreshTokens {
    /// Oldest first; the last mints.
    keys: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for RefreshTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("RefreshTokens")
            .field("kids", &kids)
            .finish()
    }
}

impl RefreshTokens {
    /// `keys` oldest first; `None` when empty or a key id contains a dot.
    pub fn new(keys: Vec<(String, [u8; 32])>) -> Option<Self> {
        if keys.is_empty()
            || keys
                .iter()
                .any(|(kid, _)| kid.is_empty() || kid.contains('.'))
        {
            return None;
        }
        Some(RefreshTokens { keys })
    }

    pub fn mint(&self, session: SessionId, generation: Generation) -> String {
        let (kid, key) = self
            .keys
            .last()
            // `new` refuses an empty key list, and nothing removes keys.
            .expect("a refresh key set is never empty");
        let mut payload = [0u8; 24];
        payload[..16].copy_from_slice(session.as_bytes());
        payload[16..].copy_from_slice(&generation.get().to_be_bytes());
        let signed = format!("{PREFIX}.{kid}.{}", B64.encode(payload));
        let tag = mac(key, &signed).finalize().into_bytes();
        format!("{signed}.{}", B64.encode(tag))
    }

    /// The key id a refresh token names, unverified; `None` when it is not one.
    pub fn key_id(token: &str) -> Option<&str> {
        if token.len() > MAX_LEN {
            return None;
        }
        let mut parts = token.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(PREFIX), Some(kid), Some(_), Some(_)) if parts.next().is_none() => Some(kid),
            _ => None,
        }
    }

    pub fn parse(&self, token: &str) -> Result<(SessionId, Generation), RefreshTokenError> {
        if token.len() > MAX_LEN {
            return Err(RefreshTokenError::Malformed);
        }
        let (signed, tag) = token.rsplit_once('.').ok_or(RefreshTokenError::Malformed)?;
        let mut parts = signed.split('.');
        let (Some(PREFIX), Some(kid), Some(payload), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(RefreshTokenError::Malformed);
        };
        let tag = B64.decode(tag).map_err(|_| RefreshTokenError::Malformed)?;
        let (_, key) = self
            .keys
            .iter()
            .find(|(k, _)| k == kid)
            .ok_or(RefreshTokenError::UnknownKey)?;
        mac(key, signed)
            .verify_slice(&tag)
            .map_err(|_| RefreshTokenError::BadMac)?;
        let payload: [u8; 24] = B64
            .decode(payload)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(RefreshTokenError::Malformed)?;
        let (id, generation) = payload.split_at(16);
        let id = Uuid::from_slice(id).map_err(|_| RefreshTokenError::Malformed)?;
        let generation: [u8; 8] = generation
            .try_into()
            .map_err(|_| RefreshTokenError::Malformed)?;
        Ok((
            SessionId::from_uuid(id),
            Generation::new(u64::from_be_bytes(generation)),
        ))
    }
}

fn mac(key: &[u8; 32], data: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length (RFC 2104 pads or hashes them); only
    // fixed-length MACs refuse a slice.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(keys: &[(&str, u8)]) -> RefreshTokens {
        RefreshTokens::new(
            keys.iter()
                .map(|(k, b)| ((*k).to_owned(), [*b; 32]))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn successor_is_deterministic_and_parses_back() {
        let t = tokens(&[("k1", 1)]);
        let s = ledger_clock::new_session_id();
        let a = t.mint(s, Generation::new(7));
        assert_eq!(a, t.mint(s, Generation::new(7)));
        assert_ne!(a, t.mint(s, Generation::new(8)));
        assert_eq!(t.parse(&a).unwrap(), (s, Generation::new(7)));
    }

    #[test]
    fn forged_and_garbled_tokens_are_refused() {
        let t = tokens(&[("k1", 1)]);
        let token = t.mint(ledger_clock::new_session_id(), Generation::new(1));
        let mut bytes = token.clone().into_bytes();
        let i = token.find('.').unwrap() + 5;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(matches!(
            t.parse(&tampered),
            Err(RefreshTokenError::BadMac
                | RefreshTokenError::Malformed
                | RefreshTokenError::UnknownKey)
        ));
        assert_eq!(t.parse("rt1.k1.AAAA.AAAA"), Err(RefreshTokenError::BadMac));
        assert_eq!(t.parse("nonsense"), Err(RefreshTokenError::Malformed));
        assert_eq!(t.parse(""), Err(RefreshTokenError::Malformed));
        assert_eq!(
            t.parse(&"x".repeat(1 << 20)),
            Err(RefreshTokenError::Malformed)
        );
        let other = tokens(&[("k1", 2)]);
        assert_eq!(other.parse(&token), Err(RefreshTokenError::BadMac));
        assert_eq!(RefreshTokens::key_id(&token), Some("k1"));
        assert_eq!(RefreshTokens::key_id("nonsense"), None);
    }

    #[test]
    fn old_keys_still_verify_after_rotation() {
        let old = tokens(&[("k1", 1)]);
        let rotated = tokens(&[("k1", 1), ("k2", 2)]);
        let s = ledger_clock::new_session_id();
        let token = old.mint(s, Generation::new(3));
        assert_eq!(rotated.parse(&token).unwrap(), (s, Generation::new(3)));
        assert!(rotated.mint(s, Generation::new(4)).starts_with("rt1.k2."));
        let retired = tokens(&[("k2", 2)]);
        assert_eq!(retired.parse(&token), Err(RefreshTokenError::UnknownKey));
    }
}
