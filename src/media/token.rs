//! The internal media token one node presents to another to pull a stream (HS256 with the
//! fleet's shared `media.node_key`).

use uuid::Uuid;

use crate::rtc::service::{MediaClaims, MEDIA_AUDIENCE};

use super::*;

impl MediaService {
    /// A media token this node presents to another node (nodes share `media.node_key`).
    pub(super) fn internal_token(&self, stream: &Uuid) -> String {
        let now = crate::domain::clock::now_ms() / 1000;
        let claims = MediaClaims {
            sub: format!("node:{}", self.node_id),
            stream: stream.to_string(),
            role: "relay".into(),
            aud: MEDIA_AUDIENCE.into(),
            iat: now,
            exp: now + 300,
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.cfg.node_key.expose().as_bytes()),
        )
        .expect("HS256 encoding")
    }
}
