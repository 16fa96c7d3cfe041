//! Authentication: Supabase access tokens (HS256 secret or JWKS) verified into a
//! [`Principal`], and the extractors that find the token on HTTP requests and WebSocket
//! upgrades.

pub mod dev;
pub mod extract;
pub mod hs256;
pub mod jwks;
pub mod jwt;
pub mod principal;

pub use extract::{Authenticated, WsAuthenticated};
pub use jwt::{AuthError, Verifier, VerifierSettings};
pub use principal::{Principal, Role};
