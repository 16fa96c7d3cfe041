//! Access tokens for tests: Supabase-style HS256 tokens signed with the secret test nodes
//! verify with.

use std::time::Duration;

use streamedge::auth::Role;

/// The HS256 secret test nodes verify access tokens with.
pub const TEST_JWT_SECRET: &str = "streamedge-test-secret-0123456789abcdef";

/// A Supabase-style access token for `user` signed with [`TEST_JWT_SECRET`].
pub fn token(user: &str, role: Role) -> String {
    token_with(user, role, Duration::from_secs(3600), false)
}

/// Like [`token`], with a lifetime and the anonymous-sign-in flag.
pub fn token_with(user: &str, role: Role, ttl: Duration, anonymous: bool) -> String {
    streamedge::auth::dev::mint(
        TEST_JWT_SECRET.as_bytes(),
        &streamedge::auth::dev::MintRequest {
            user_id: user,
            role,
            ttl,
            audience: "authenticated",
            issuer: "",
            role_claim: "app_metadata.role",
            anonymous,
        },
        jsonwebtoken::get_current_timestamp(),
    )
}

/// A seller's token for `user`.
pub fn seller(user: &str) -> String {
    token(user, Role::Seller)
}

/// A buyer's token for `user`.
pub fn buyer(user: &str) -> String {
    token(user, Role::Buyer)
}
