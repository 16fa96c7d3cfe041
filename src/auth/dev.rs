//! Development mode (`streamedge serve --dev`) and development tokens.
//!
//! Development mode fills in well-known, public credentials so a newcomer can create a
//! stream and get tokens in a minute. They are published in this file: a node using them
//! is not secure, which is why it is only ever enabled by the `--dev` flag and logs a loud
//! warning.

use std::time::Duration;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Map, Value};

use super::principal::Role;
use crate::config::{Config, Secret};

/// The development JWT secret (HS256). Public: never use it in production.
pub const DEV_JWT_SECRET: &str = "streamedge-dev-jwt-secret-not-for-production-use";
/// Placeholder Agora credentials for development (tokens build and verify locally; Agora's
/// servers will not accept them).
pub const DEV_AGORA_APP_ID: &str = "0123456789abcdef0123456789abcdef";
pub const DEV_AGORA_APP_CERTIFICATE: &str = "fedcba9876543210fedcba9876543210";
/// The development media-token key.
pub const DEV_MEDIA_NODE_KEY: &str = "streamedge-dev-media-key-not-for-production-use";

/// Switches a configuration to development mode: the embedded backend unless Redis was
/// explicitly configured, and the development secrets wherever none is configured.
/// Returns what it changed, for the warning.
pub fn apply_dev_mode(config: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if config.auth.jwt_secret.is_empty() {
        config.auth.jwt_secret = Secret::new(DEV_JWT_SECRET);
        changed.push("auth.jwt_secret = the public development secret");
    }
    if config.agora.app_id.is_empty() {
        config.agora.app_id = DEV_AGORA_APP_ID.into();
        config.agora.app_certificate = Secret::new(DEV_AGORA_APP_CERTIFICATE);
        changed.push("agora.app_id / app_certificate = placeholder credentials");
    }
    config.dev_mode = true;
    if !config.auth.dev_login {
        config.auth.dev_login = true;
        changed.push("auth.dev_login = true: POST /v1/dev/login mints tokens for anyone");
    }
    if !config.console.enabled {
        config.console.enabled = true;
        changed.push("console.enabled = true: the web console is served at /");
    }
    if config.server.cors_origins.is_empty() {
        config.server.cors_origins = vec!["*".into()];
        changed.push("server.cors_origins = [\"*\"]: pages on any origin may call the API");
    }
    if !config.media.enabled {
        config.media.enabled = true;
        changed.push(
            "media.enabled = true: WHIP/WHEP on this node (the console goes live through it)",
        );
    }
    if config.media.node_key.is_empty() {
        config.media.node_key = Secret::new(DEV_MEDIA_NODE_KEY);
        changed.push("media.node_key = the public development key");
    }
    changed
}

/// A Supabase-style access token to mint.
#[derive(Debug, Clone)]
pub struct MintRequest<'a> {
    pub user_id: &'a str,
    pub role: Role,
    pub ttl: Duration,
    pub audience: &'a str,
    pub issuer: &'a str,
    /// Dotted path where the role goes (`app_metadata.role`).
    pub role_claim: &'a str,
    pub anonymous: bool,
}

/// Mints an HS256 access token shaped like Supabase's, signed with `secret`. `now` is Unix
/// seconds.
pub fn mint(secret: &[u8], req: &MintRequest<'_>, now: u64) -> String {
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(req.user_id));
    claims.insert("role".into(), json!("authenticated"));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + req.ttl.as_secs()));
    if !req.audience.is_empty() {
        claims.insert("aud".into(), json!(req.audience));
    }
    if !req.issuer.is_empty() {
        claims.insert("iss".into(), json!(req.issuer));
    }
    if req.anonymous {
        claims.insert("is_anonymous".into(), json!(true));
    }
    let role = match req.role {
        Role::Seller => "seller",
        Role::Buyer => "buyer",
    };
    set_path(&mut claims, req.role_claim, json!(role));
    encode(
        &Header::default(),
        &Value::Object(claims),
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 encoding cannot fail")
}

fn set_path(obj: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap_or("role");
    let mut cur = obj;
    for p in parts {
        let entry = cur.entry(p.to_string()).or_insert_with(|| json!({}));
        if !entry.is_object() {
            *entry = json!({});
        }
        cur = entry.as_object_mut().expect("object");
    }
    cur.insert(last.to_string(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_mode_fills_only_what_is_missing() {
        let mut c = Config::default();
        c.auth.jwt_secret = Secret::new("x".repeat(40));
        let changed = apply_dev_mode(&mut c);
        assert_eq!(c.auth.jwt_secret.expose(), "x".repeat(40));
        assert_eq!(c.agora.app_id, DEV_AGORA_APP_ID);
        assert_eq!(changed.len(), 6);
        assert!(c.auth.dev_login && c.console.enabled);
        assert_eq!(c.server.cors_origins, ["*"]);
        c.validate().unwrap();
    }

    #[tokio::test]
    async fn minted_tokens_verify() {
        let secret = DEV_JWT_SECRET.as_bytes();
        let token = mint(
            secret,
            &MintRequest {
                user_id: "alice",
                role: Role::Seller,
                ttl: Duration::from_secs(600),
                audience: "authenticated",
                issuer: "",
                role_claim: "app_metadata.role",
                anonymous: false,
            },
            jsonwebtoken::get_current_timestamp(),
        );
        let v = super::super::Verifier::new(
            Some(secret),
            None,
            super::super::VerifierSettings {
                audience: Some("authenticated".into()),
                issuer: None,
                leeway: Duration::from_secs(5),
                role_claim: "app_metadata.role".into(),
                allow_anonymous: false,
            },
        );
        let p = v.verify(&token).await.unwrap();
        assert_eq!(p.user_id, "alice");
        assert!(p.is_seller());
    }
}
