//! `POST /v1/dev/login` (only with `auth.dev_login`, which `--dev` turns on): an access
//! token for any user, signed with `auth.jwt_secret` exactly as `streamedge token mint`
//! does, so the console and local apps can sign in without a Supabase project.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::dev::{mint, MintRequest};
use crate::auth::principal::Role;
use crate::domain::text::valid_user_id;
use crate::http::{ApiError, ApiJson, AppState, ErrorKind};

/// Lifetime of a development token.
const TTL: Duration = Duration::from_secs(3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    user_id: String,
    #[serde(default)]
    role: Option<String>,
}

pub async fn login(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<Login>,
) -> Result<Json<Value>, ApiError> {
    if !valid_user_id(&body.user_id) {
        return Err(ApiError::new(
            ErrorKind::Invalid,
            "invalid_user_id",
            "user_id must be 1-128 bytes with at least one visible character (docs/api.md, \"Text rules\")",
        ));
    }
    let role = match body.role.as_deref().unwrap_or("buyer") {
        "seller" => Role::Seller,
        "buyer" => Role::Buyer,
        _ => {
            return Err(ApiError::new(
                ErrorKind::Invalid,
                "invalid_role",
                "role must be \"seller\" or \"buyer\"",
            ))
        }
    };
    let auth = &app.config.auth;
    let token = mint(
        auth.jwt_secret.expose().as_bytes(),
        &MintRequest {
            user_id: &body.user_id,
            role,
            ttl: TTL,
            audience: &auth.audience,
            issuer: &auth.issuer,
            role_claim: &auth.role_claim,
            anonymous: false,
        },
        jsonwebtoken::get_current_timestamp(),
    );
    tracing::info!(user = %body.user_id, ?role, "development login");
    Ok(Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": TTL.as_secs(),
        "user_id": body.user_id,
        "role": if role == Role::Seller { "seller" } else { "buyer" },
    })))
}
