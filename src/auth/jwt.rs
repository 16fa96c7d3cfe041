//! Verifying Supabase access tokens: HS256 with the project's JWT secret, ES256/RS256 with
//! keys from the project's JWKS. Every way a token can be wrong has its own error code.
//!
//! The header is inspected before any cryptography so that the algorithm decides the key
//! *family*: HS256 is only ever checked against the shared secret and ES256/RS256 only
//! against a JWKS key whose own algorithm matches — an HS256 token that names a JWKS key
//! (the classic public-key-as-HMAC-secret attack) is refused as `token_alg_mismatch`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind as JwtKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

pub use super::error::AuthError;
use super::hs256::{self, ClaimRules, Hs256Key};
use super::jwks::{JwksCache, JwksError};
use super::principal::{principal_from_claims, ClaimsError, Principal};

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// What the verifier checks besides the signature.
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    /// Required `aud` (Supabase: `authenticated`); `None` skips the check.
    pub audience: Option<String>,
    /// Required `iss`; `None` skips the check.
    pub issuer: Option<String>,
    pub leeway: Duration,
    pub role_claim: String,
    pub allow_anonymous: bool,
}

/// Verifies access tokens and maps them to principals.
pub struct Verifier {
    /// The shared secret, HMAC state prepared (HS256 is checked by [`hs256`]).
    secret: Option<Hs256Key>,
    jwks: Option<Arc<JwksCache>>,
    settings: VerifierSettings,
    rules: ClaimRules,
    /// `jsonwebtoken` validations for the JWKS algorithms, built once.
    es256: Validation,
    rs256: Validation,
}

#[derive(serde::Deserialize)]
struct RawHeader {
    alg: Option<serde_json::Value>,
    kid: Option<String>,
    /// Critical extensions (RFC 7515 §4.1.11): this verifier understands none, so a token
    /// that lists any is refused.
    crit: Option<serde_json::Value>,
}

fn b64(segment: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment)
}

impl Verifier {
    pub fn new(
        secret: Option<&[u8]>,
        jwks: Option<Arc<JwksCache>>,
        settings: VerifierSettings,
    ) -> Self {
        let rules = ClaimRules {
            audience: settings.audience.clone(),
            issuer: settings.issuer.clone(),
            leeway_secs: settings.leeway.as_secs(),
        };
        let validation = |alg| super::hs256::validation(alg, &rules);
        Self {
            secret: secret.map(Hs256Key::new),
            jwks,
            es256: validation(Algorithm::ES256),
            rs256: validation(Algorithm::RS256),
            settings,
            rules,
        }
    }

    pub fn jwks(&self) -> Option<&Arc<JwksCache>> {
        self.jwks.as_ref()
    }

    /// Verifies `token` and returns who it belongs to.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        let mut parts = token.splitn(3, '.');
        let (Some(head), Some(payload), Some(sig)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        if head.is_empty() || payload.is_empty() || sig.contains('.') {
            return Err(AuthError::Malformed);
        }
        let header_json = b64(head).map_err(|_| AuthError::Malformed)?;
        let header: RawHeader =
            serde_json::from_slice(&header_json).map_err(|_| AuthError::Malformed)?;
        if header.crit.is_some() {
            return Err(AuthError::Malformed);
        }
        let payload_json = b64(payload).map_err(|_| AuthError::Malformed)?;
        let alg = match header.alg.as_ref().and_then(|a| a.as_str()) {
            Some("HS256") => Algorithm::HS256,
            Some("ES256") => Algorithm::ES256,
            Some("RS256") => Algorithm::RS256,
            _ => return Err(AuthError::AlgNotAllowed),
        };
        let signature = b64(sig).map_err(|_| AuthError::Truncated)?;

        let claims: serde_json::Value = match alg {
            Algorithm::HS256 => {
                // An HS256 token naming a key of the JWKS is the public-key-as-HMAC-secret
                // attack. (A kid the JWKS does not know may be a symmetric key's id.)
                if let (Some(kid), Some(jwks)) = (&header.kid, &self.jwks) {
                    if kid.len() > 256 {
                        return Err(AuthError::UnknownKid);
                    }
                    if let Ok(Some(_)) = jwks.key(kid).await {
                        return Err(AuthError::AlgMismatch);
                    }
                }
                if signature.len() != 32 {
                    return Err(AuthError::Truncated);
                }
                let key = self.secret.as_ref().ok_or(AuthError::AlgNotAllowed)?;
                let signing_input = &token[..head.len() + 1 + payload.len()];
                if !key.verify(signing_input.as_bytes(), &signature) {
                    return Err(AuthError::BadSignature);
                }
                let claims =
                    serde_json::from_slice(&payload_json).map_err(|_| AuthError::Malformed)?;
                hs256::validate(&claims, &self.rules, jsonwebtoken::get_current_timestamp())?;
                claims
            }
            _ => {
                let jwks = self.jwks.as_ref().ok_or(AuthError::AlgNotAllowed)?;
                let kid = header.kid.as_deref().ok_or(AuthError::UnknownKid)?;
                if kid.len() > 256 {
                    return Err(AuthError::UnknownKid);
                }
                let k = jwks
                    .key(kid)
                    .await
                    .map_err(|JwksError::Unavailable(_)| AuthError::KeysUnavailable)?
                    .ok_or(AuthError::UnknownKid)?;
                if k.alg != alg {
                    return Err(AuthError::AlgMismatch);
                }
                let expected_len = match alg {
                    Algorithm::ES256 => Some(64),
                    _ => None,
                };
                if expected_len.is_some_and(|n| signature.len() != n) || signature.len() < 64 {
                    return Err(AuthError::Truncated);
                }
                let v = match alg {
                    Algorithm::ES256 => &self.es256,
                    _ => &self.rs256,
                };
                decode_checked(token, &k.key, v)?
            }
        };
        principal_from_claims(
            &claims,
            &self.settings.role_claim,
            self.settings.allow_anonymous,
        )
        .map_err(|e| match e {
            ClaimsError::MissingSubject => AuthError::MissingClaim,
            ClaimsError::AnonymousNotAllowed => AuthError::AnonymousNotAllowed,
            ClaimsError::InvalidRole(_) => AuthError::InvalidRole,
            ClaimsError::InvalidClaim(_) => AuthError::InvalidClaim,
        })
    }
}

/// `jsonwebtoken`'s verification (the JWKS algorithms), its errors mapped to ours.
fn decode_checked(
    token: &str,
    key: &DecodingKey,
    v: &Validation,
) -> Result<serde_json::Value, AuthError> {
    jsonwebtoken::decode::<serde_json::Value>(token, key, v)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            JwtKind::ExpiredSignature => AuthError::Expired,
            JwtKind::ImmatureSignature => AuthError::NotYetValid,
            JwtKind::InvalidAudience => AuthError::WrongAudience,
            JwtKind::InvalidIssuer => AuthError::WrongIssuer,
            JwtKind::InvalidSignature => AuthError::BadSignature,
            JwtKind::InvalidAlgorithm => AuthError::AlgMismatch,
            JwtKind::MissingRequiredClaim(_) => AuthError::MissingClaim,
            _ => AuthError::Malformed,
        })
}
