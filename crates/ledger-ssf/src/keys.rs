//! The RS256 key that signs SETs. The CAEP interoperability profile asks for RS256
//! with keys of at least 2048 bits; access tokens keep their Ed25519 keys.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};

/// The file, in the key directory, holding the SET signing key (PKCS#1 PEM).
pub const KEY_FILE: &str = "ssf-set-rs256.pem";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("ssf key {path}: {message}")]
    File { path: String, message: String },
    #[error("ssf key: {0}")]
    Key(String),
}

/// Signs SETs; its public half is the transmitter's JWKS.
pub struct SetSigner {
    kid: String,
    key: EncodingKey,
    public: RsaPublicKey,
}

impl std::fmt::Debug for SetSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SetSigner {
    /// Loads `<dir>/ssf-set-rs256.pem`, creating a 2048-bit key the first time.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join(KEY_FILE);
        let file_error = |e: std::io::Error| KeyError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let pem = match std::fs::read_to_string(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(file_error)?;
                let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                    .map_err(|e| KeyError::Key(e.to_string()))?;
                let pem = key
                    .to_pkcs1_pem(LineEnding::LF)
                    .map_err(|e| KeyError::Key(e.to_string()))?;
                // Written beside, then renamed: two processes starting together keep one key.
                let tmp = dir.join(format!("{KEY_FILE}.{}", std::process::id()));
                std::fs::write(&tmp, pem.as_bytes()).map_err(file_error)?;
                restrict(&tmp).map_err(file_error)?;
                match std::fs::hard_link(&tmp, &path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(file_error(e)),
                }
                let _ = std::fs::remove_file(&tmp);
                std::fs::read_to_string(&path).map_err(file_error)?
            }
            Err(e) => return Err(file_error(e)),
        };
        Self::from_pem(&pem)
    }

    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let private =
            RsaPrivateKey::from_pkcs1_pem(pem).map_err(|e| KeyError::Key(e.to_string()))?;
        let public = private.to_public_key();
        let der = private
            .to_pkcs1_der()
            .map_err(|e| KeyError::Key(e.to_string()))?;
        let key = EncodingKey::from_rsa_der(der.as_bytes());
        let digest = Sha256::digest(public.n().to_bytes_be());
        let kid = URL_SAFE_NO_PAD.encode(&digest[..12]);
        Ok(SetSigner { kid, key, public })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A compact JWS of `claims` with `typ: secevent+jwt` (RFC 8417 §2.3).
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("secevent+jwt".into());
        header.kid = Some(self.kid.clone());
        // Signing plain JSON with a valid RSA key cannot fail.
        jsonwebtoken::encode(&header, claims, &self.key).unwrap_or_default()
    }

    /// The JWKS served at `jwks_uri` (RFC 7517).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "RSA",
                "use": "sig",
                "alg": "RS256",
                "kid": self.kid,
                "n": URL_SAFE_NO_PAD.encode(self.public.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(self.public.e().to_bytes_be()),
            }]
        })
    }
}

#[cfg(unix)]
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict(_: &Path) -> std::io::Result<()> {
    Ok(())
}
