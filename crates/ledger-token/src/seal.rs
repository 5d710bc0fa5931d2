//! The keys that sign the log's seals (tamper evidence): Ed25519, in `seal/*.pem` of
//! the key directory, the newest signing. They are distinct from the access-token keys:
//! the projector holds them, the API need not, and rotating one leaves the other alone.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use ledger_core::seal::{SealSigner, SealVerifier};
use rand::rngs::OsRng;

use crate::keys::{KeyError, invalid, read, thumbprint};
use crate::{KeyDir, VerificationKeys};

/// Seal keys, oldest first; the newest signs, all of them verify.
#[derive(Clone)]
pub struct SealKeys {
    entries: Vec<(String, SigningKey)>,
}

impl std::fmt::Debug for SealKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(kid, _)| kid))
            .finish()
    }
}

impl SealKeys {
    /// A fresh key held only in memory (tests).
    pub fn generate() -> SealKeys {
        let secret = SigningKey::generate(&mut OsRng);
        SealKeys {
            entries: vec![(thumbprint(&secret.verifying_key()), secret)],
        }
    }

    /// The public halves as a JWK Set: what auditors need to check seals, and
    /// nothing that could sign one.
    pub fn public_keys(&self) -> VerificationKeys {
        VerificationKeys::from_public(
            self.entries
                .iter()
                .map(|(kid, key)| (kid.clone(), key.verifying_key().to_bytes())),
        )
    }

    fn newest(&self) -> &(String, SigningKey) {
        self.entries
            .last()
            // Every constructor refuses an empty key set, and nothing removes keys.
            .expect("a seal key set is never empty")
    }
}

impl SealSigner for SealKeys {
    fn kid(&self) -> &str {
        &self.newest().0
    }

    fn sign(&self, bytes: &[u8]) -> String {
        B64.encode(self.newest().1.sign(bytes).to_bytes())
    }
}

impl SealVerifier for SealKeys {
    fn verify(&self, kid: &str, bytes: &[u8], signature: &str) -> bool {
        self.entries
            .iter()
            .find(|(k, _)| k == kid)
            .is_some_and(|(_, key)| verify(&key.verifying_key(), bytes, signature))
    }
}

/// Auditors check seals with the public keys alone (`keys export-seal-jwks`).
impl SealVerifier for VerificationKeys {
    fn verify(&self, kid: &str, bytes: &[u8], signature: &str) -> bool {
        self.public(kid)
            .and_then(|public| VerifyingKey::from_bytes(public).ok())
            .is_some_and(|key| verify(&key, bytes, signature))
    }
}

fn verify(key: &VerifyingKey, bytes: &[u8], signature: &str) -> bool {
    B64.decode(signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .is_some_and(|signature| {
            key.verify(bytes, &Signature::from_bytes(&signature))
                .is_ok()
        })
}

impl KeyDir {
    /// The seal keys in `seal/`, creating one when there is none.
    pub fn seal_keys_or_create(&self) -> Result<SealKeys, KeyError> {
        if self.files("seal", "pem")?.is_empty() {
            self.add_seal_key()?;
        }
        self.seal_keys()
    }

    /// The seal keys in `seal/` (auditors: never creates one).
    pub fn seal_keys(&self) -> Result<SealKeys, KeyError> {
        let mut entries = Vec::new();
        for path in self.files("seal", "pem")? {
            let pem = String::from_utf8(read(&path)?).map_err(|e| invalid(&path, e))?;
            let secret = SigningKey::from_pkcs8_pem(&pem).map_err(|e| invalid(&path, e))?;
            entries.push((thumbprint(&secret.verifying_key()), secret));
        }
        if entries.is_empty() {
            return Err(KeyError::NoSealKey(self.path().join("seal")));
        }
        Ok(SealKeys { entries })
    }

    /// Adds a new seal key, which signs from the next start on; older ones still verify.
    pub fn add_seal_key(&self) -> Result<String, KeyError> {
        let secret = SigningKey::generate(&mut OsRng);
        let pem = secret
            .to_pkcs8_pem(Default::default())
            .map_err(|e| KeyError::Jwks(e.to_string()))?;
        let kid = thumbprint(&secret.verifying_key());
        self.write_secret("seal", &format!("{kid}.pem"), pem.as_bytes())?;
        Ok(kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_signed_by_one_key_verifies_after_rotation_and_not_with_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        assert!(matches!(keys.seal_keys(), Err(KeyError::NoSealKey(_))));
        let first = keys.seal_keys_or_create().unwrap();
        let signature = first.sign(b"block 0");
        keys.add_seal_key().unwrap();
        let rotated = keys.seal_keys_or_create().unwrap();
        assert_ne!(rotated.kid(), first.kid());
        assert!(rotated.verify(first.kid(), b"block 0", &signature));
        assert!(!rotated.verify(first.kid(), b"block 1", &signature));
        assert!(!SealKeys::generate().verify(first.kid(), b"block 0", &signature));
        assert!(!rotated.verify(first.kid(), b"block 0", "not base64!"));

        // The public keys alone, through their JWK Set, verify the same way.
        let public = VerificationKeys::from_jwks(&rotated.public_keys().jwks()).unwrap();
        assert!(public.verify(first.kid(), b"block 0", &signature));
        assert!(!public.verify(first.kid(), b"block 1", &signature));
        assert!(!public.verify("unknown", b"block 0", &signature));
    }
}
