use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::EncodingKey;
use ledger_core::Timestamp;
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

use crate::RefreshTokens;

/// Why keys could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} is not a valid key: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no signing key in {0}")]
    NoSigningKey(PathBuf),
    #[error("no refresh-token key in {0}")]
    NoRefreshKey(PathBuf),
    #[error("no seal key in {0}")]
    NoSealKey(PathBuf),
    #[error("jwks: {0}")]
    Jwks(String),
}

/// One Ed25519 key pair with its `kid` (the RFC 7638 thumbprint of its public JWK).
#[derive(Clone)]
struct SigningEntry {
    kid: String,
    secret: SigningKey,
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningEntry")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The access-token signing keys, oldest first; the newest signs.
#[derive(Clone, Debug)]
pub struct SigningKeys {
    entries: Vec<SigningEntry>,
}

impl SigningKeys {
    fn from_secrets(secrets: Vec<SigningKey>) -> Result<Self, KeyError> {
        let entries = secrets
            .into_iter()
            .map(|secret| {
                let der = secret
                    .to_pkcs8_der()
                    .map_err(|e| KeyError::Jwks(e.to_string()))?;
                let encoding = EncodingKey::from_ed_der(der.as_bytes());
                Ok(SigningEntry {
                    kid: thumbprint(&secret.verifying_key()),
                    secret,
                    encoding,
                })
            })
            .collect::<Result<Vec<_>, KeyError>>()?;
        Ok(SigningKeys { entries })
    }

    /// A fresh key pair held only in memory (tests, benchmarks).
    pub fn generate() -> Self {
        // PKCS#8-encoding a freshly generated Ed25519 key cannot fail.
        Self::from_secrets(vec![SigningKey::generate(&mut OsRng)])
            .expect("a fresh Ed25519 key encodes")
    }

    pub(crate) fn current(&self) -> (&str, &EncodingKey) {
        let last = self
            .entries
            .last()
            // `generate` makes one key, `KeyDir::signing_keys` refuses a directory with
            // none, and nothing removes keys.
            .expect("a signing key set is never empty");
        (&last.kid, &last.encoding)
    }

    pub fn current_kid(&self) -> &str {
        self.current().0
    }

    /// The keys validators accept: the current one and the one before it (overlap).
    pub fn verification_keys(&self) -> VerificationKeys {
        let published = self.entries.iter().rev().take(2);
        VerificationKeys::from_public(
            published.map(|e| (e.kid.clone(), e.secret.verifying_key().to_bytes())),
        )
    }

    /// Every key of the set, retired ones included: for judging old tokens after the
    /// fact, never for serving.
    pub fn all_verification_keys(&self) -> VerificationKeys {
        VerificationKeys::from_public(
            self.entries
                .iter()
                .map(|e| (e.kid.clone(), e.secret.verifying_key().to_bytes())),
        )
    }

    /// The JWK Set (RFC 7517) of [`Self::verification_keys`].
    pub fn jwks(&self) -> serde_json::Value {
        self.verification_keys().jwks()
    }
}

/// Public keys by `kid`, each pinned to EdDSA, kept decompressed (a point
/// decompression per verification costs about a tenth of it).
#[derive(Clone)]
pub struct VerificationKeys {
    keys: BTreeMap<String, ([u8; 32], VerifyingKey)>,
}

impl std::fmt::Debug for VerificationKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.keys()).finish()
    }
}

/// Two key sets are equal when they hold the same key ids with the same public keys.
impl PartialEq for VerificationKeys {
    fn eq(&self, other: &Self) -> bool {
        self.keys.len() == other.keys.len()
            && self
                .keys
                .iter()
                .zip(&other.keys)
                .all(|((ka, (a, _)), (kb, (b, _)))| ka == kb && a == b)
    }
}

impl Eq for VerificationKeys {}

impl VerificationKeys {
    pub(crate) fn from_public(keys: impl Iterator<Item = (String, [u8; 32])>) -> Self {
        // A point that does not decompress verifies nothing: such a key is left out
        // (keys from `SigningKeys` always decompress; `from_jwks` refuses others).
        let keys = keys
            .filter_map(|(kid, public)| {
                let key = VerifyingKey::from_bytes(&public).ok()?;
                Some((kid, (public, key)))
            })
            .collect();
        VerificationKeys { keys }
    }

    /// Reads a JWK Set, keeping only `OKP`/`Ed25519` keys with a `kid`.
    pub fn from_jwks(jwks: &serde_json::Value) -> Result<Self, KeyError> {
        let keys = jwks["keys"]
            .as_array()
            .ok_or_else(|| KeyError::Jwks("no \"keys\" array".into()))?;
        let mut out = Vec::new();
        for key in keys {
            if key["kty"] != "OKP" || key["crv"] != "Ed25519" {
                continue;
            }
            let (Some(kid), Some(x)) = (key["kid"].as_str(), key["x"].as_str()) else {
                return Err(KeyError::Jwks("an Ed25519 key lacks kid or x".into()));
            };
            let public: [u8; 32] = B64
                .decode(x)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| KeyError::Jwks(format!("key {kid}: x is not 32 bytes")))?;
            VerifyingKey::from_bytes(&public)
                .map_err(|e| KeyError::Jwks(format!("key {kid}: {e}")))?;
            out.push((kid.to_owned(), public));
        }
        Ok(Self::from_public(out.into_iter()))
    }

    pub(crate) fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid).map(|(_, k)| k)
    }

    /// The raw Ed25519 public key named `kid`.
    pub(crate) fn public(&self, kid: &str) -> Option<&[u8; 32]> {
        self.keys.get(kid).map(|(public, _)| public)
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|(kid, (public, _))| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": B64.encode(public),
                    "kid": kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key.
pub(crate) fn thumbprint(key: &VerifyingKey) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        B64.encode(key.to_bytes())
    );
    B64.encode(Sha256::digest(canonical.as_bytes()))
}

/// A key's id and when it was created, which is when it became current.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTime {
    pub kid: String,
    pub created_at: Timestamp,
}

/// A directory of keys: `signing/*.pem` (PKCS#8 Ed25519) and `refresh/*.key` (HMAC
/// secrets, base64url). File names start with the creation time, so they sort oldest
/// first; the newest of each kind is current.
#[derive(Clone, Debug)]
pub struct KeyDir {
    root: PathBuf,
}

impl KeyDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        KeyDir { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Loads both kinds of keys, creating one of each on first start.
    pub fn load_or_create(&self) -> Result<(SigningKeys, RefreshTokens), KeyError> {
        if self.files("signing", "pem")?.is_empty() {
            self.add_signing_key()?;
        }
        if self.files("refresh", "key")?.is_empty() {
            self.add_refresh_key()?;
        }
        Ok((self.signing_keys()?, self.refresh_keys()?))
    }

    /// Adds a new signing key, which becomes current; the previous one stays published.
    pub fn add_signing_key(&self) -> Result<String, KeyError> {
        let secret = SigningKey::generate(&mut OsRng);
        let pem = secret
            .to_pkcs8_pem(Default::default())
            .map_err(|e| KeyError::Jwks(e.to_string()))?;
        let kid = thumbprint(&secret.verifying_key());
        self.write_secret("signing", &format!("{kid}.pem"), pem.as_bytes())?;
        Ok(kid)
    }

    /// Adds a new refresh-token MAC key, which becomes current.
    pub fn add_refresh_key(&self) -> Result<String, KeyError> {
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let mut id = [0u8; 6];
        OsRng.fill_bytes(&mut id);
        let kid = B64.encode(id);
        self.write_secret(
            "refresh",
            &format!("{kid}.key"),
            B64.encode(secret).as_bytes(),
        )?;
        Ok(kid)
    }

    pub fn signing_keys(&self) -> Result<SigningKeys, KeyError> {
        let mut secrets = Vec::new();
        for path in self.files("signing", "pem")? {
            let pem = read(&path)?;
            let pem = String::from_utf8(pem).map_err(|e| invalid(&path, e))?;
            secrets.push(SigningKey::from_pkcs8_pem(&pem).map_err(|e| invalid(&path, e))?);
        }
        if secrets.is_empty() {
            return Err(KeyError::NoSigningKey(self.root.join("signing")));
        }
        SigningKeys::from_secrets(secrets)
    }

    pub fn refresh_keys(&self) -> Result<RefreshTokens, KeyError> {
        let mut keys = Vec::new();
        for path in self.files("refresh", "key")? {
            let text = read(&path)?;
            let secret: [u8; 32] = B64
                .decode(text.trim_ascii())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| invalid(&path, "expected 32 base64url bytes"))?;
            let kid = file_kid(&path).ok_or_else(|| invalid(&path, "bad file name"))?;
            keys.push((kid, secret));
        }
        RefreshTokens::new(keys).ok_or_else(|| KeyError::NoRefreshKey(self.root.join("refresh")))
    }

    /// The signing keys' ids and creation times, oldest first.
    pub fn signing_key_times(&self) -> Result<Vec<KeyTime>, KeyError> {
        self.files("signing", "pem")?
            .iter()
            .map(|path| {
                let pem = String::from_utf8(read(path)?).map_err(|e| invalid(path, e))?;
                let secret = SigningKey::from_pkcs8_pem(&pem).map_err(|e| invalid(path, e))?;
                Ok(KeyTime {
                    kid: thumbprint(&secret.verifying_key()),
                    created_at: file_time(path)?,
                })
            })
            .collect()
    }

    /// The refresh-token keys' ids and creation times, oldest first.
    pub fn refresh_key_times(&self) -> Result<Vec<KeyTime>, KeyError> {
        self.files("refresh", "key")?
            .iter()
            .map(|path| {
                Ok(KeyTime {
                    kid: file_kid(path).ok_or_else(|| invalid(path, "bad file name"))?,
                    created_at: file_time(path)?,
                })
            })
            .collect()
    }

    pub(crate) fn files(&self, kind: &str, ext: &str) -> Result<Vec<PathBuf>, KeyError> {
        let dir = self.root.join(kind);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(KeyError::Io { path: dir, source }),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        files.sort();
        Ok(files)
    }

    pub(crate) fn write_secret(
        &self,
        kind: &str,
        name: &str,
        contents: &[u8],
    ) -> Result<(), KeyError> {
        let dir = self.root.join(kind);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| KeyError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let path = dir.join(format!("{micros:020}-{name}"));
        let tmp = dir.join(format!(".{micros:020}-{name}.tmp"));
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io(&tmp))?;
        file.write_all(contents).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(())
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    fs::read(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn invalid(path: &Path, message: impl std::fmt::Display) -> KeyError {
    KeyError::Invalid {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// `00000001700000000000000-<kid>.key` → 1700000000000000 µs after the epoch.
fn file_time(path: &Path) -> Result<Timestamp, KeyError> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.split_once('-'))
        .and_then(|(micros, _)| micros.parse::<i64>().ok())
        .map(Timestamp::from_unix_micros)
        .ok_or_else(|| invalid(path, "file name does not start with its creation time"))
}

/// `00000001700000000000000-<kid>.key` → `<kid>`.
fn file_kid(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    stem.split_once('-').map(|(_, kid)| kid.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_a_reload_and_rotate_with_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        let (first, refresh) = keys.load_or_create().unwrap();
        let (again, refresh_again) = keys.load_or_create().unwrap();
        assert_eq!(first.current_kid(), again.current_kid());
        let s = ledger_clock::new_session_id();
        let g = ledger_core::Generation::new(1);
        assert_eq!(refresh.mint(s, g), refresh_again.mint(s, g));

        let new_kid = keys.add_signing_key().unwrap();
        let rotated = keys.signing_keys().unwrap();
        assert_eq!(rotated.current_kid(), new_kid);
        let published: Vec<String> = rotated
            .verification_keys()
            .kids()
            .map(String::from)
            .collect();
        assert_eq!(published.len(), 2);
        assert!(published.iter().any(|k| k == first.current_kid()));

        keys.add_signing_key().unwrap();
        let thrice = keys.signing_keys().unwrap();
        let published: Vec<String> = thrice
            .verification_keys()
            .kids()
            .map(String::from)
            .collect();
        assert_eq!(published.len(), 2, "only the current and the previous key");
        assert!(!published.iter().any(|k| k == first.current_kid()));

        // Auditors still see every key, and when each became current.
        assert_eq!(thrice.all_verification_keys().kids().count(), 3);
        let times = keys.signing_key_times().unwrap();
        assert_eq!(times.len(), 3);
        assert_eq!(times[0].kid, first.current_kid());
        assert_eq!(times[1].kid, new_kid);
        assert!(times[0].created_at < times[1].created_at);
        assert!(times[2].created_at <= ledger_clock::now());
        let refresh_times = keys.refresh_key_times().unwrap();
        assert_eq!(refresh_times.len(), 1);
        assert!(
            refresh
                .mint(s, g)
                .contains(&format!(".{}.", refresh_times[0].kid))
        );
    }

    #[test]
    fn jwks_round_trips() {
        let keys = SigningKeys::generate();
        let jwks = keys.jwks();
        assert_eq!(jwks["keys"][0]["kid"], keys.current_kid());
        assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
        let back = VerificationKeys::from_jwks(&jwks).unwrap();
        assert_eq!(back.kids().collect::<Vec<_>>(), [keys.current_kid()]);
    }

    #[cfg(unix)]
    #[test]
    fn private_keys_are_not_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        keys.load_or_create().unwrap();
        for kind in ["signing", "refresh"] {
            for f in fs::read_dir(dir.path().join(kind)).unwrap() {
                let mode = f.unwrap().metadata().unwrap().permissions().mode();
                assert_eq!(mode & 0o077, 0, "{kind}: {mode:o}");
            }
        }
    }
}
