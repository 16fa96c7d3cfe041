//! Issuing RTC tokens for a stream's channel: the stream's seller gets publisher
//! privileges (join, publish audio, video, data), everyone else join only. Optionally the
//! node's own media token for its WHIP/WHEP endpoints rides along.

use std::time::Duration;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde::Serialize;

use super::accesstoken2::{RtcRole, RtcTokenRequest, RtcUser, TokenError};
use crate::config::{Config, UidMode};
use crate::domain::clock::rfc3339;
use crate::streams::Stream;

/// Audience of the node's media tokens.
pub const MEDIA_AUDIENCE: &str = "streamedge-media";

/// The numeric RTC uid of a user: FNV-1a over the user id, never 0 (0 means "any uid" in
/// Agora). Stable across nodes and restarts. Distinct users collide with probability
/// 1 in 2³² per pair; `agora.uid_mode = "account"` avoids collisions altogether.
pub fn stable_uid(user_id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in user_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    if h == 0 {
        1
    } else {
        h
    }
}

/// The uid in a response: a number or an account string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum UidView {
    Numeric(u32),
    Account(String),
}

/// What `POST /v1/streams/{id}/rtc-token` returns.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedToken {
    pub token: String,
    pub app_id: String,
    pub channel: String,
    pub uid: UidView,
    /// `publisher` or `subscriber`.
    pub role: &'static str,
    pub expires_at: String,
    pub privilege_expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_token_expires_at: Option<String>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct MediaClaims {
    pub sub: String,
    pub stream: String,
    pub role: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

/// Builds tokens from the configuration's credentials.
pub struct RtcIssuer {
    app_id: String,
    certificate: String,
    token_ttl: u32,
    privilege_ttl: u32,
    uid_mode: UidMode,
    media: Option<(EncodingKey, Duration)>,
}

impl RtcIssuer {
    /// `None` when no Agora credentials are configured.
    pub fn from_config(config: &Config) -> Option<Self> {
        let a = &config.agora;
        if a.app_id.is_empty() {
            return None;
        }
        let media = config.media.enabled.then(|| {
            (
                EncodingKey::from_secret(config.media.node_key.expose().as_bytes()),
                config.media.token_ttl,
            )
        });
        Some(Self {
            app_id: a.app_id.clone(),
            certificate: a.app_certificate.expose().to_string(),
            token_ttl: a.token_ttl.as_secs() as u32,
            privilege_ttl: a.privilege_ttl.as_secs() as u32,
            uid_mode: a.uid_mode,
            media,
        })
    }

    /// Issues a token for `user_id` on `stream` at `now` (Unix seconds) with `salt`.
    pub fn issue(
        &self,
        stream: &Stream,
        user_id: &str,
        now: u32,
        salt: u32,
    ) -> Result<IssuedToken, TokenError> {
        let publisher = stream.owner_id == user_id;
        let role = if publisher {
            RtcRole::Publisher
        } else {
            RtcRole::Subscriber
        };
        let channel = stream.id.to_string();
        let (user, uid) = match self.uid_mode {
            UidMode::Numeric => {
                let n = stable_uid(user_id);
                (RtcUser::Uid(n), UidView::Numeric(n))
            }
            UidMode::Account => (RtcUser::Account(user_id), UidView::Account(user_id.into())),
        };
        let token = RtcTokenRequest {
            app_id: &self.app_id,
            channel_name: &channel,
            user,
            role,
            token_expire: self.token_ttl,
            privilege_expire: self.privilege_ttl,
            issue_ts: now,
            salt,
        }
        .build(&self.certificate)?;
        let secs = |rel: u32| rfc3339((u64::from(now) + u64::from(rel)) * 1000);
        let role_name = if publisher { "publisher" } else { "subscriber" };
        let (media_token, media_token_expires_at) = match &self.media {
            Some((key, ttl)) => {
                let claims = MediaClaims {
                    sub: user_id.to_string(),
                    stream: channel.clone(),
                    role: role_name.to_string(),
                    aud: MEDIA_AUDIENCE.to_string(),
                    iat: u64::from(now),
                    exp: u64::from(now) + ttl.as_secs(),
                };
                let t = encode(&Header::default(), &claims, key).expect("HS256 encoding");
                (Some(t), Some(rfc3339(claims.exp * 1000)))
            }
            None => (None, None),
        };
        Ok(IssuedToken {
            token,
            app_id: self.app_id.clone(),
            channel,
            uid,
            role: role_name,
            expires_at: secs(self.token_ttl),
            privilege_expires_at: secs(self.privilege_ttl),
            media_token,
            media_token_expires_at,
        })
    }
}

/// A salt like the reference builders draw (1 ..= 99 999 999).
pub fn random_salt() -> u32 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) % 99_999_999 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtc::accesstoken2::{verify, Service};
    use crate::streams::StreamState;

    fn stream(owner: &str) -> Stream {
        Stream {
            id: uuid::Uuid::parse_str("6f1c8e0e-62a8-4b6f-9f0e-2a4a1f7f1c11").unwrap(),
            owner_id: owner.into(),
            title: "t".into(),
            state: StreamState::Live,
            created_at_ms: 0,
            updated_at_ms: 0,
            session: None,
            version: 0,
        }
    }

    fn issuer(mode: UidMode) -> RtcIssuer {
        let mut c = Config::default();
        crate::auth::dev::apply_dev_mode(&mut c);
        c.agora.uid_mode = mode;
        c.media.enabled = true;
        RtcIssuer::from_config(&c).unwrap()
    }

    #[test]
    fn seller_publishes_buyer_subscribes() {
        let i = issuer(UidMode::Numeric);
        let now = 1_800_000_000;
        let seller = i.issue(&stream("s1"), "s1", now, 42).unwrap();
        let buyer = i.issue(&stream("s1"), "b1", now, 42).unwrap();
        assert_eq!(seller.role, "publisher");
        assert_eq!(buyer.role, "subscriber");
        let cert = crate::auth::dev::DEV_AGORA_APP_CERTIFICATE;
        for (t, want) in [(&seller, vec![1, 2, 3, 4]), (&buyer, vec![1])] {
            let tok = verify(&t.token, cert).unwrap();
            assert_eq!(tok.issue_ts, now);
            assert_eq!(tok.expire, 3600, "expire is relative to issue time");
            let Service::Rtc {
                channel_name,
                uid,
                privileges,
            } = &tok.services[0]
            else {
                panic!("not rtc")
            };
            assert_eq!(channel_name, &t.channel);
            assert_eq!(privileges.keys().copied().collect::<Vec<_>>(), want);
            assert!(privileges.values().all(|e| *e == 3600));
            let UidView::Numeric(n) = t.uid else { panic!() };
            assert_eq!(uid, &n.to_string());
        }
        assert_eq!(seller.expires_at, rfc3339((now as u64 + 3600) * 1000));
        assert!(seller.media_token.is_some());
    }

    #[test]
    fn account_mode_uses_the_user_id() {
        let t = issuer(UidMode::Account)
            .issue(&stream("s1"), "user-abc", 1_800_000_000, 7)
            .unwrap();
        assert_eq!(t.uid, UidView::Account("user-abc".into()));
    }

    #[test]
    fn stable_uids() {
        assert_eq!(stable_uid("alice"), stable_uid("alice"));
        assert_ne!(stable_uid("alice"), stable_uid("bob"));
        assert_ne!(stable_uid(""), 0);
    }

    #[test]
    fn salts_in_reference_range() {
        for _ in 0..1000 {
            let s = random_salt();
            assert!((1..=99_999_999).contains(&s));
        }
    }
}
