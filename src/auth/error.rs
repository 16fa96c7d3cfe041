//! Every way a token can be refused, each with its stable problem+json code.

/// Why a token was refused. [`AuthError::code`] is the stable problem+json code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no access token was sent")]
    Missing,
    #[error("the access token is not a well-formed JWT")]
    Malformed,
    #[error("the access token's signature is truncated or has the wrong length")]
    Truncated,
    #[error("the access token's algorithm is not accepted")]
    AlgNotAllowed,
    #[error("the access token's algorithm does not match its key")]
    AlgMismatch,
    #[error("the access token names an unknown signing key")]
    UnknownKid,
    #[error("the access token's signature is invalid")]
    BadSignature,
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid yet")]
    NotYetValid,
    #[error("the access token is for another audience")]
    WrongAudience,
    #[error("the access token was issued by another issuer")]
    WrongIssuer,
    #[error("the access token lacks a required claim")]
    MissingClaim,
    #[error("the access token has a claim of the wrong type or out of its range")]
    InvalidClaim,
    #[error("the access token's role claim is not `seller` or `buyer`")]
    InvalidRole,
    #[error("anonymous viewers are not allowed")]
    AnonymousNotAllowed,
    /// The JWKS could not be loaded (and nothing is cached): not the client's fault.
    #[error("signing keys are unavailable")]
    KeysUnavailable,
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Malformed => "token_malformed",
            AuthError::Truncated => "token_truncated",
            AuthError::AlgNotAllowed => "token_alg_not_allowed",
            AuthError::AlgMismatch => "token_alg_mismatch",
            AuthError::UnknownKid => "token_unknown_kid",
            AuthError::BadSignature => "token_bad_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::WrongAudience => "token_wrong_audience",
            AuthError::WrongIssuer => "token_wrong_issuer",
            AuthError::MissingClaim => "token_missing_claim",
            AuthError::InvalidClaim => "token_invalid_claim",
            AuthError::InvalidRole => "token_invalid_role",
            AuthError::AnonymousNotAllowed => "token_anonymous_not_allowed",
            AuthError::KeysUnavailable => "auth_keys_unavailable",
        }
    }
}
