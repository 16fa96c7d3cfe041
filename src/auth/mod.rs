//! Authentication: Supabase access tokens (HS256 secret or JWKS) verified into a
//! [`Principal`], and where a request carries the token (header, query, subprotocol).

pub mod dev;
pub mod error;
pub mod extract;
pub mod hs256;
pub mod jwks;
pub mod jwt;
pub mod principal;

pub use jwt::{AuthError, Verifier, VerifierSettings};
pub use principal::{Principal, Role};
