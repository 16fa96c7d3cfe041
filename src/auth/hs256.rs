//! The HS256 fast path of [`super::jwt::Verifier`] (pure, no I/O): the HMAC key schedule is
//! computed once and cloned per token, the payload is decoded and parsed once, and the
//! registered claims are checked on that parse with exactly the rules `jsonwebtoken`
//! applies (a differential test below holds the two together).
//!
//! `jsonwebtoken::decode` re-parses the header, re-keys HMAC-SHA256 from the secret, and
//! deserializes the claims twice (once for the caller, once for validation) on every call;
//! on the RTC token endpoint that was the largest piece of request handling after the
//! token build itself.
//!
//! **Why it is kept** (measured 2026-11-30, `cargo bench --bench tokens`, group
//! `hs256_signature_and_claims`): on the same token this path (signature, payload and
//! claim checks) takes 1.2–1.7 µs against 2.5–3.8 µs for `jsonwebtoken::decode` with a
//! prebuilt key and validation, 2.1–2.4× faster; switching would add ~1.3–2.1 µs to a
//! whole verification of ~1.8–2.9 µs. See docs/benchmarks.md.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::error::AuthError;

/// An HS256 key with its HMAC state prepared (inner and outer pads already absorbed).
#[derive(Clone)]
pub struct Hs256Key(Hmac<Sha256>);

impl Hs256Key {
    pub fn new(secret: &[u8]) -> Self {
        Self(Hmac::new_from_slice(secret).expect("HMAC takes keys of any length"))
    }

    /// Whether `signature` is the MAC of `signing_input` (`header.payload`), compared in
    /// constant time.
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        let mut mac = self.0.clone();
        mac.update(signing_input);
        mac.verify_slice(signature).is_ok()
    }
}

/// What the registered claims must satisfy (the subset of `jsonwebtoken::Validation` the
/// verifier uses: `exp` required and checked, `nbf` checked, optional `aud` and `iss`).
#[derive(Debug, Clone)]
pub struct ClaimRules {
    pub audience: Option<String>,
    pub issuer: Option<String>,
    pub leeway_secs: u64,
}

/// A claim as `jsonwebtoken` reads it: parsed, present but of the wrong type, or absent.
enum TryParse<T> {
    Parsed(T),
    FailedToParse,
    NotPresent,
}

/// `exp`/`nbf`: a non-negative integer, or a finite float (rounded); `null` or anything
/// else does not parse.
fn numeric(claims: &Value, name: &str) -> TryParse<u64> {
    match claims.get(name) {
        None => TryParse::NotPresent,
        Some(v) => match (v.as_u64(), v.as_f64()) {
            (Some(n), _) => TryParse::Parsed(n),
            (None, Some(f)) if v.is_f64() && f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                TryParse::Parsed(f.round() as u64)
            }
            _ => TryParse::FailedToParse,
        },
    }
}

/// `aud`/`iss`: a string or an array of strings; `null` counts as absent.
fn string_or_set<'a>(claims: &'a Value, name: &str) -> TryParse<Vec<&'a str>> {
    match claims.get(name) {
        None | Some(Value::Null) => TryParse::NotPresent,
        Some(Value::String(s)) => TryParse::Parsed(vec![s.as_str()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<_>>>()
            .map_or(TryParse::FailedToParse, TryParse::Parsed),
        Some(_) => TryParse::FailedToParse,
    }
}

/// Checks the registered claims of a verified token at `now` (Unix seconds).
pub fn validate(claims: &Value, rules: &ClaimRules, now: u64) -> Result<(), AuthError> {
    if !claims.is_object() {
        return Err(AuthError::Malformed);
    }
    let exp = numeric(claims, "exp");
    let nbf = numeric(claims, "nbf");
    let TryParse::Parsed(exp) = exp else {
        return Err(AuthError::MissingClaim);
    };
    // A configured audience or issuer must be there (and readable): a token without one is
    // refused.
    for (want, name) in [(&rules.audience, "aud"), (&rules.issuer, "iss")] {
        if want.is_some() && !matches!(string_or_set(claims, name), TryParse::Parsed(_)) {
            return Err(AuthError::MissingClaim);
        }
    }
    if matches!(nbf, TryParse::FailedToParse) {
        return Err(AuthError::Malformed);
    }
    if exp < now.saturating_sub(rules.leeway_secs) {
        return Err(AuthError::Expired);
    }
    if matches!(nbf, TryParse::Parsed(nbf) if nbf > now.saturating_add(rules.leeway_secs)) {
        return Err(AuthError::NotYetValid);
    }
    if let Some(want) = &rules.issuer {
        if let TryParse::Parsed(iss) = string_or_set(claims, "iss") {
            if !iss.contains(&want.as_str()) {
                return Err(AuthError::WrongIssuer);
            }
        }
    }
    if let Some(want) = &rules.audience {
        if let TryParse::Parsed(aud) = string_or_set(claims, "aud") {
            if !aud.contains(&want.as_str()) {
                return Err(AuthError::WrongAudience);
            }
        }
    }
    Ok(())
}

/// The `jsonwebtoken` validation with the same rules as [`validate`] (ES256 and RS256
/// tokens go through `jsonwebtoken`; its HS256 result is the reference in the tests).
pub fn validation(alg: jsonwebtoken::Algorithm, rules: &ClaimRules) -> jsonwebtoken::Validation {
    let mut v = jsonwebtoken::Validation::new(alg);
    v.leeway = rules.leeway_secs;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.required_spec_claims = std::collections::HashSet::from(["exp".to_string()]);
    if rules.audience.is_some() {
        v.required_spec_claims.insert("aud".to_string());
    }
    if rules.issuer.is_some() {
        v.required_spec_claims.insert("iss".to_string());
    }
    match &rules.audience {
        Some(aud) => v.set_audience(&[aud]),
        None => v.validate_aud = false,
    }
    if let Some(iss) = &rules.issuer {
        v.set_issuer(&[iss]);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::errors::ErrorKind as JwtKind;
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"differential-test-secret";

    /// What `jsonwebtoken` decides for these claims, mapped like the verifier maps it.
    fn reference(claims: &Value, rules: &ClaimRules) -> Result<(), AuthError> {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let v = validation(Algorithm::HS256, rules);
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_secret(SECRET), &v)
            .map(|_| ())
            .map_err(|e| match e.kind() {
                JwtKind::ExpiredSignature => AuthError::Expired,
                JwtKind::ImmatureSignature => AuthError::NotYetValid,
                JwtKind::InvalidAudience => AuthError::WrongAudience,
                JwtKind::InvalidIssuer => AuthError::WrongIssuer,
                JwtKind::MissingRequiredClaim(_) => AuthError::MissingClaim,
                _ => AuthError::Malformed,
            })
    }

    #[test]
    fn claim_checks_match_jsonwebtoken() {
        let now = jsonwebtoken::get_current_timestamp();
        let exps = [
            json!(now + 3600),
            json!(now - 10),
            json!(now - 3600),
            json!((now + 100) as f64 + 0.4),
            json!(-5),
            json!("soon"),
            Value::Null,
        ];
        let nbfs = [
            None,
            Some(json!(now - 5)),
            Some(json!(now + 10)),
            Some(json!(now + 3600)),
            Some(json!("later")),
            Some(Value::Null),
        ];
        let auds = [
            None,
            Some(json!("authenticated")),
            Some(json!("other")),
            Some(json!(["x", "authenticated"])),
            Some(json!(["x"])),
            Some(json!([])),
            Some(json!(42)),
            Some(Value::Null),
        ];
        let isses = [
            None,
            Some(json!("https://p.supabase.co/auth/v1")),
            Some(json!("https://evil")),
            Some(json!(["https://p.supabase.co/auth/v1"])),
        ];
        let rule_sets = [
            ClaimRules {
                audience: Some("authenticated".into()),
                issuer: None,
                leeway_secs: 30,
            },
            ClaimRules {
                audience: None,
                issuer: Some("https://p.supabase.co/auth/v1".into()),
                leeway_secs: 0,
            },
        ];
        let mut cases = 0;
        for rules in &rule_sets {
            for exp in [None].into_iter().chain(exps.iter().cloned().map(Some)) {
                for nbf in &nbfs {
                    for aud in &auds {
                        for iss in &isses {
                            let mut c = json!({"sub": "u1"});
                            for (k, v) in [("exp", &exp), ("nbf", nbf), ("aud", aud), ("iss", iss)]
                            {
                                if let Some(v) = v {
                                    c[k] = v.clone();
                                }
                            }
                            assert_eq!(
                                validate(&c, rules, now),
                                reference(&c, rules),
                                "claims {c} rules {rules:?}"
                            );
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 2 * 8 * 6 * 8 * 4);
    }

    #[test]
    fn prepared_key_verifies_like_a_fresh_one() {
        let key = Hs256Key::new(SECRET);
        let mut fresh = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
        fresh.update(b"a.b");
        let sig = fresh.finalize().into_bytes();
        assert!(key.verify(b"a.b", &sig));
        assert!(
            key.verify(b"a.b", &sig),
            "the prepared state is not consumed"
        );
        assert!(!key.verify(b"a.c", &sig));
        assert!(!key.verify(b"a.b", &sig[..31]));
        assert!(!Hs256Key::new(b"other").verify(b"a.b", &sig));
    }
}
