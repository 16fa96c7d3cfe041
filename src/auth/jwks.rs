//! A cached JSON Web Key Set (Supabase serves one at `/auth/v1/.well-known/jwks.json`).
//!
//! Keys are fetched on first use and kept. A token naming an unknown `kid` triggers a
//! refresh (one at a time, and not more often than the backoff allows, so a flood of
//! forged `kid`s cannot hammer the JWKS host). While the host is unreachable the cached
//! keys keep serving.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// A verification key from the set.
#[derive(Clone)]
pub struct JwksKey {
    pub key: DecodingKey,
    pub alg: Algorithm,
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS unavailable: {0}")]
    Unavailable(String),
}

#[derive(Default)]
struct State {
    keys: HashMap<String, JwksKey>,
    loaded: bool,
    last_attempt: Option<Instant>,
    failures: u32,
}

pub struct JwksCache {
    url: String,
    client: reqwest::Client,
    state: RwLock<State>,
    refresh: tokio::sync::Mutex<()>,
    min_refresh: Duration,
}

const MAX_BACKOFF: Duration = Duration::from_secs(300);
const MAX_JWKS_BYTES: usize = 256 * 1024;

impl JwksCache {
    /// `min_refresh`: least time between two fetches (doubled after each failure, up to
    /// five minutes).
    pub fn new(url: String, timeout: Duration, min_refresh: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("streamedge/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("http client");
        Self {
            url,
            client,
            state: RwLock::new(State::default()),
            refresh: tokio::sync::Mutex::new(()),
            min_refresh,
        }
    }

    /// Whether a key with this `kid` is cached (no fetch).
    pub fn cached(&self, kid: &str) -> Option<JwksKey> {
        self.state.read().expect("jwks lock").keys.get(kid).cloned()
    }

    /// The key for `kid`, refreshing the set when it is unknown. `Ok(None)`: the set (fresh
    /// or, while the host is unreachable, cached) has no such key.
    pub async fn key(&self, kid: &str) -> Result<Option<JwksKey>, JwksError> {
        if let Some(k) = self.cached(kid) {
            return Ok(Some(k));
        }
        let _guard = self.refresh.lock().await;
        // Another caller may have refreshed while we waited.
        if let Some(k) = self.cached(kid) {
            return Ok(Some(k));
        }
        if self.may_refresh() {
            self.refresh_now().await;
        }
        let st = self.state.read().expect("jwks lock");
        match st.keys.get(kid) {
            Some(k) => Ok(Some(k.clone())),
            None if !st.loaded => Err(JwksError::Unavailable(format!(
                "no key set loaded from {} yet",
                self.url
            ))),
            None => Ok(None),
        }
    }

    fn may_refresh(&self) -> bool {
        let st = self.state.read().expect("jwks lock");
        match st.last_attempt {
            None => true,
            Some(t) => {
                let wait = (self.min_refresh * 2u32.saturating_pow(st.failures.min(16)))
                    .min(MAX_BACKOFF.max(self.min_refresh));
                t.elapsed() >= wait
            }
        }
    }

    /// Fetches the set now; on failure the cached keys stay.
    pub async fn refresh_now(&self) {
        let result = self.fetch().await;
        let mut st = self.state.write().expect("jwks lock");
        st.last_attempt = Some(Instant::now());
        match result {
            Ok(keys) => {
                tracing::info!(url = %self.url, keys = keys.len(), "JWKS loaded");
                st.keys = keys;
                st.loaded = true;
                st.failures = 0;
                metrics::counter!("streamedge_jwks_refreshes_total", "result" => "ok").increment(1);
            }
            Err(e) => {
                st.failures += 1;
                tracing::warn!(url = %self.url, error = %e, cached = st.keys.len(), "JWKS fetch failed");
                metrics::counter!("streamedge_jwks_refreshes_total", "result" => "error")
                    .increment(1);
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, JwksKey>, String> {
        let resp = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_JWKS_BYTES {
            return Err("key set too large".into());
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok(parse_set(&set))
    }
}

/// Signing keys of a set, by `kid`; keys without `kid`, for encryption, or of unsupported
/// types are skipped.
pub fn parse_set(set: &JwkSet) -> HashMap<String, JwksKey> {
    let mut out = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(KeyAlgorithm::ES256), _) => Algorithm::ES256,
            (Some(KeyAlgorithm::RS256), _) => Algorithm::RS256,
            (Some(_), _) => continue,
            (None, AlgorithmParameters::EllipticCurve(p))
                if p.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            _ => continue,
        };
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            out.insert(kid, JwksKey { key, alg });
        }
    }
    out
}
