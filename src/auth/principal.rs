//! Who is calling: the [`Principal`] a verified access token maps to (pure rules, no I/O).

use serde::Serialize;

/// What a signed-in user may do on streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May create streams and publish on their own.
    Seller,
    /// May watch and chat.
    Buyer,
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The token's `sub` (a Supabase user id).
    pub user_id: String,
    pub role: Role,
    /// A Supabase anonymous sign-in (or anon-key) viewer: may watch, not chat or sell.
    pub anonymous: bool,
}

impl Principal {
    pub fn is_seller(&self) -> bool {
        self.role == Role::Seller && !self.anonymous
    }
}

/// Why claims do not make a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimsError {
    MissingSubject,
    AnonymousNotAllowed,
    InvalidRole(String),
    /// A claim of the wrong type, or out of its range (the name says which).
    InvalidClaim(&'static str),
}

/// Latest time a token's `exp`, `nbf` or `iat` may name: 3000-01-01T00:00:00Z. Later
/// values are not a token that never expires but a broken one.
pub const MAX_CLAIM_TIME: f64 = 32_503_680_000.0;

/// `exp`, `nbf` and `iat`, when present, are numbers of seconds between 1970 and
/// [`MAX_CLAIM_TIME`]; `is_anonymous`, when present, is a boolean.
fn check_claim_types(claims: &serde_json::Value) -> Result<(), ClaimsError> {
    for name in ["exp", "nbf", "iat"] {
        match claims.get(name) {
            None => {}
            Some(v) => {
                let ok = v
                    .as_f64()
                    .is_some_and(|t| (0.0..=MAX_CLAIM_TIME).contains(&t));
                if !ok {
                    return Err(ClaimsError::InvalidClaim(name));
                }
            }
        }
    }
    match claims.get("is_anonymous") {
        None | Some(serde_json::Value::Bool(_)) => Ok(()),
        Some(_) => Err(ClaimsError::InvalidClaim("is_anonymous")),
    }
}

/// Reads a dotted claim path (`app_metadata.role`) from the claims object.
pub fn claim_at<'a>(claims: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.')
        .try_fold(claims, |v, part| v.as_object()?.get(part))
}

/// Maps verified claims to a principal.
///
/// - `sub` is the user id (required, except for anon-key tokens, which get a per-token
///   anonymous id when anonymous viewers are allowed);
/// - the role is read at `role_claim` (`"seller"` or `"buyer"`; absent means buyer);
/// - `is_anonymous: true` or the Postgres role `anon` marks an anonymous viewer.
pub fn principal_from_claims(
    claims: &serde_json::Value,
    role_claim: &str,
    allow_anonymous: bool,
) -> Result<Principal, ClaimsError> {
    check_claim_types(claims)?;
    let anonymous = claims.get("is_anonymous").and_then(|v| v.as_bool()) == Some(true)
        || claims.get("role").and_then(|v| v.as_str()) == Some("anon");
    if anonymous && !allow_anonymous {
        return Err(ClaimsError::AnonymousNotAllowed);
    }
    let sub = match claims.get("sub") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if s.is_empty() => None,
        Some(serde_json::Value::String(s)) if crate::domain::text::valid_user_id(s) => Some(s),
        Some(_) => return Err(ClaimsError::InvalidClaim("sub")),
    };
    let user_id = match (sub, anonymous) {
        (Some(s), _) => s.to_string(),
        (None, true) => "anonymous".to_string(),
        (None, false) => return Err(ClaimsError::MissingSubject),
    };
    let role = match claim_at(claims, role_claim) {
        None | Some(serde_json::Value::Null) => Role::Buyer,
        Some(serde_json::Value::String(s)) if s == "seller" => Role::Seller,
        Some(serde_json::Value::String(s)) if s == "buyer" => Role::Buyer,
        Some(other) => return Err(ClaimsError::InvalidRole(truncate(&other.to_string()))),
    };
    Ok(Principal {
        user_id,
        role: if anonymous { Role::Buyer } else { role },
        anonymous,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PATH: &str = "app_metadata.role";

    #[test]
    fn seller_buyer_and_default() {
        let p = principal_from_claims(
            &json!({"sub":"u1","app_metadata":{"role":"seller"}}),
            PATH,
            false,
        )
        .unwrap();
        assert_eq!(p.role, Role::Seller);
        assert!(p.is_seller());
        let p = principal_from_claims(&json!({"sub":"u2"}), PATH, false).unwrap();
        assert_eq!(p.role, Role::Buyer);
        let p = principal_from_claims(&json!({"sub":"u3","app_metadata":{}}), PATH, false).unwrap();
        assert_eq!(p.role, Role::Buyer);
    }

    #[test]
    fn custom_claim_path() {
        let p = principal_from_claims(
            &json!({"sub":"u1","shop":{"kind":"seller"}}),
            "shop.kind",
            false,
        )
        .unwrap();
        assert_eq!(p.role, Role::Seller);
    }

    #[test]
    fn invalid_role_and_missing_sub() {
        assert!(matches!(
            principal_from_claims(
                &json!({"sub":"u","app_metadata":{"role":"admin"}}),
                PATH,
                false
            ),
            Err(ClaimsError::InvalidRole(_))
        ));
        assert!(matches!(
            principal_from_claims(&json!({"sub":"u","app_metadata":{"role":7}}), PATH, false),
            Err(ClaimsError::InvalidRole(_))
        ));
        assert_eq!(
            principal_from_claims(&json!({"aud":"authenticated"}), PATH, false),
            Err(ClaimsError::MissingSubject)
        );
        assert_eq!(
            principal_from_claims(&json!({"sub":""}), PATH, false),
            Err(ClaimsError::MissingSubject)
        );
    }

    #[test]
    fn anonymous_only_when_allowed_and_never_a_seller() {
        let anon = json!({"sub":"a1","is_anonymous":true,"app_metadata":{"role":"seller"}});
        assert_eq!(
            principal_from_claims(&anon, PATH, false),
            Err(ClaimsError::AnonymousNotAllowed)
        );
        let p = principal_from_claims(&anon, PATH, true).unwrap();
        assert!(p.anonymous);
        assert!(!p.is_seller());
        assert_eq!(p.role, Role::Buyer);
        let key = json!({"role":"anon","iss":"supabase"});
        let p = principal_from_claims(&key, PATH, true).unwrap();
        assert!(p.anonymous);
    }
}
