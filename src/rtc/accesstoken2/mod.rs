//! Agora AccessToken2 ("007") tokens: building, decoding and verifying them so that the
//! result is byte-for-byte what Agora's reference token builders produce.
//!
//! The module is pure: no I/O, no clock and no randomness. Callers pass the issue time and
//! the salt, which makes every token reproducible (and testable).
//!
//! # Token string
//!
//! A token is the three characters `"007"` (the format version) followed by standard
//! base64 (RFC 4648 alphabet, with `=` padding) of a zlib stream (RFC 1950) whose
//! decompressed bytes are the token *content*.
//!
//! # Content layout
//!
//! Integers are little-endian. A *string* is a `u16` byte count followed by that many bytes
//! (no terminator, not necessarily UTF-8 on the wire; this module requires UTF-8).
//!
//! | field            | encoding                                                        |
//! |------------------|-----------------------------------------------------------------|
//! | signature        | string: 32 bytes of HMAC-SHA256                                 |
//! | app id           | string: 32 hexadecimal characters                               |
//! | issue_ts         | `u32`: seconds since the Unix epoch                             |
//! | expire           | `u32`: token lifetime in seconds **counted from issue_ts**      |
//! | salt             | `u32`: random per token                                         |
//! | service count    | `u16`                                                           |
//! | services         | one after another, ascending by service type                    |
//!
//! Every service starts with its `u16` type and its privilege map: a `u16` entry count,
//! then `(u16 privilege id, u32 expire)` pairs in ascending id order. What follows depends
//! on the type. For RTC (type 1) it is the channel name (string) and the uid (string):
//! the decimal text of a numeric uid, the **empty string for uid 0** (which lets any uid
//! join), or a user account as is. A numeric uid and the account spelling the same digits
//! therefore produce identical tokens.
//!
//! The bytes after the signature — app id through the last service — are the *signing
//! info*, the exact bytes the signature covers.
//!
//! # Signature
//!
//! The signing key is derived in two HMAC-SHA256 steps, and then signs the signing info:
//!
//! ```text
//! k1        = HMAC-SHA256(key = issue_ts as 4 LE bytes, message = certificate text)
//! k2        = HMAC-SHA256(key = salt as 4 LE bytes,     message = k1)
//! signature = HMAC-SHA256(key = k2,                     message = signing info)
//! ```
//!
//! The certificate enters as its 32-character text, not as the 16 bytes it spells, so its
//! letter case matters. Note also that the "key" and "message" roles look swapped compared
//! with the usual convention (the timestamp and salt are the HMAC keys).
//!
//! # Expiry values are relative
//!
//! `expire` and every privilege value are durations in seconds after `issue_ts` (e.g.
//! 3600), **not** absolute Unix timestamps; writing absolute times is a classic token server
//! bug that yields tokens valid for decades. See [`AccessToken2::expires_at`].
//!
//! # Compression
//!
//! Different zlib implementations produce different (equally valid) compressed bytes.
//! Agora's Python, Java, Node.js and PHP builders all use C zlib at its default level, and
//! neither of `flate2`'s pure-Rust backends (miniz_oxide, zlib-rs) reproduces its output,
//! so this module carries a small bit-exact re-implementation of C zlib's level-6 deflate
//! for token-sized inputs (up to 16 000 bytes of content; larger content, which no real
//! token reaches, falls back to `flate2`). C zlib itself (through `flate2`) was measured
//! 1.7–1.9× slower per token (docs/benchmarks.md). Decompression uses `flate2`. Agora's Go
//! builder uses Go's own compressor, so its tokens differ in bytes (not in content) from
//! these.
//!
//! # Unknown services
//!
//! Only RTC is decoded. The wire format carries no per-service length, so a decoder cannot
//! skip a service type it does not know. [`parse`] therefore stops at the first unknown
//! type and keeps everything from there on verbatim in [`Service::Unknown`] (as Agora's own
//! parsers do, which also stop there). Such tokens still verify, because the signature is
//! checked over the original bytes, and they re-encode to the same bytes.
//!
//! # Files
//!
//! This file holds the public types, the errors and the format description; `build.rs`
//! lays out, signs and encodes tokens; `parse.rs` decodes and verifies them; `wire.rs`
//! writes and reads the byte-level fields; `signature.rs` derives the signing key and MACs
//! the signing info; `compress.rs` compresses and strictly decompresses the content.

use std::collections::BTreeMap;

mod build;
mod compress;
mod parse;
mod signature;
mod wire;

pub use parse::{parse, verify, ParsedToken};

/// The version prefix every AccessToken2 string starts with.
pub const VERSION: &str = "007";

/// Service type of Agora RTC (real-time audio and video channels).
pub const SERVICE_TYPE_RTC: u16 = 1;

/// Largest decompressed content [`parse`] accepts and [`AccessToken2::build`] produces, in
/// bytes. Real tokens are a few hundred bytes; the limit defuses zlib bombs.
pub const MAX_CONTENT_LEN: usize = 64 * 1024;

/// Length of an app id or app certificate, in hexadecimal characters.
const HEX_ID_LEN: usize = 32;

/// Privileges of the RTC service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RtcPrivilege {
    /// Join the channel (id 1).
    JoinChannel,
    /// Publish an audio stream (id 2).
    PublishAudioStream,
    /// Publish a video stream (id 3).
    PublishVideoStream,
    /// Publish a data stream (id 4).
    PublishDataStream,
}

impl RtcPrivilege {
    /// All RTC privileges, in id order.
    pub const ALL: [RtcPrivilege; 4] = [
        RtcPrivilege::JoinChannel,
        RtcPrivilege::PublishAudioStream,
        RtcPrivilege::PublishVideoStream,
        RtcPrivilege::PublishDataStream,
    ];

    /// The id this privilege has on the wire.
    pub const fn id(self) -> u16 {
        match self {
            RtcPrivilege::JoinChannel => 1,
            RtcPrivilege::PublishAudioStream => 2,
            RtcPrivilege::PublishVideoStream => 3,
            RtcPrivilege::PublishDataStream => 4,
        }
    }

    /// The privilege with wire id `id`, if RTC defines one.
    pub const fn from_id(id: u16) -> Option<Self> {
        match id {
            1 => Some(RtcPrivilege::JoinChannel),
            2 => Some(RtcPrivilege::PublishAudioStream),
            3 => Some(RtcPrivilege::PublishVideoStream),
            4 => Some(RtcPrivilege::PublishDataStream),
            _ => None,
        }
    }
}

/// Role of an RTC user, deciding which privileges the convenience builder grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RtcRole {
    /// May join and publish audio, video and data streams (privileges 1–4); for sellers
    /// and hosts.
    Publisher,
    /// May only join (privilege 1); for buyers and audience. Agora enforces the difference
    /// only when co-host authentication is enabled for the project.
    Subscriber,
}

impl RtcRole {
    /// The privileges this role is granted, in id order.
    pub fn privileges(self) -> &'static [RtcPrivilege] {
        match self {
            RtcRole::Publisher => &RtcPrivilege::ALL,
            RtcRole::Subscriber => &RtcPrivilege::ALL[..1],
        }
    }
}

/// One service inside a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// Agora RTC (service type 1).
    Rtc {
        /// Channel the token is for.
        channel_name: String,
        /// The user: a numeric uid as decimal text, `""` for uid 0 (any uid), or a user
        /// account. See [`uid_to_account`].
        uid: String,
        /// Privilege id (see [`RtcPrivilege::id`]) → expiry in seconds after the token's
        /// issue time (relative, like [`AccessToken2::expire`]).
        privileges: BTreeMap<u16, u32>,
    },
    /// A service type this module does not decode, kept verbatim so the token still
    /// verifies and re-encodes identically. Because services carry no length, it holds
    /// the rest of the signing info after its type field: its own body followed by any
    /// later services. An unknown service must therefore be the last one (in type order)
    /// when building.
    Unknown {
        /// The service type found on the wire.
        service_type: u16,
        /// Raw bytes from after the type field to the end of the content.
        payload: Vec<u8>,
        /// How many further services the header counts inside `payload`.
        following_services: u16,
    },
}

impl Service {
    /// An RTC service with no privileges yet.
    pub fn rtc(channel_name: impl Into<String>, uid: impl Into<String>) -> Self {
        Service::Rtc {
            channel_name: channel_name.into(),
            uid: uid.into(),
            privileges: BTreeMap::new(),
        }
    }

    /// An RTC service granting `role`'s privileges, each expiring `privilege_expire`
    /// seconds after the token's issue time.
    pub fn rtc_for_role(
        channel_name: impl Into<String>,
        uid: impl Into<String>,
        role: RtcRole,
        privilege_expire: u32,
    ) -> Self {
        Service::Rtc {
            channel_name: channel_name.into(),
            uid: uid.into(),
            privileges: role
                .privileges()
                .iter()
                .map(|p| (p.id(), privilege_expire))
                .collect(),
        }
    }

    /// The service type written on the wire.
    pub fn service_type(&self) -> u16 {
        match self {
            Service::Rtc { .. } => SERVICE_TYPE_RTC,
            Service::Unknown { service_type, .. } => *service_type,
        }
    }
}

/// The uid string the reference builders put in a token for numeric `uid`: its decimal
/// text, or the empty string for 0 (which admits any uid).
pub fn uid_to_account(uid: u32) -> String {
    if uid == 0 {
        String::new()
    } else {
        uid.to_string()
    }
}

/// The fields of an AccessToken2, everything but the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken2 {
    /// Agora app id: 32 hexadecimal characters.
    pub app_id: String,
    /// Issue time, seconds since the Unix epoch.
    pub issue_ts: u32,
    /// Lifetime in seconds after `issue_ts` (relative, e.g. 3600 — not a timestamp).
    pub expire: u32,
    /// Random salt; the reference builders draw it from 1..=99 999 999.
    pub salt: u32,
    /// Services, in any order; they are written sorted by type.
    pub services: Vec<Service>,
}

impl AccessToken2 {
    /// A token with no services yet.
    pub fn new(app_id: impl Into<String>, issue_ts: u32, expire: u32, salt: u32) -> Self {
        AccessToken2 {
            app_id: app_id.into(),
            issue_ts,
            expire,
            salt,
            services: Vec::new(),
        }
    }

    /// Adds a service (builder style).
    pub fn with_service(mut self, service: Service) -> Self {
        self.services.push(service);
        self
    }

    /// When the token itself stops being valid, in seconds since the Unix epoch
    /// (`issue_ts + expire`, without overflow).
    pub fn expires_at(&self) -> u64 {
        u64::from(self.issue_ts) + u64::from(self.expire)
    }
}

/// Who an RTC token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RtcUser<'a> {
    /// A numeric uid; 0 means "any uid" and is encoded as the empty string.
    Uid(u32),
    /// A user account string, encoded as is.
    Account(&'a str),
}

impl RtcUser<'_> {
    /// The uid string written into the token.
    pub fn to_account(&self) -> String {
        match self {
            RtcUser::Uid(uid) => uid_to_account(*uid),
            RtcUser::Account(account) => (*account).to_owned(),
        }
    }
}

/// Everything needed for an RTC token, mirroring the reference builders'
/// `build_token_with_uid` / `build_token_with_user_account`, with the issue time and the
/// salt made explicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcTokenRequest<'a> {
    /// Agora app id (32 hexadecimal characters).
    pub app_id: &'a str,
    /// Channel the token admits to.
    pub channel_name: &'a str,
    /// Numeric uid or user account.
    pub user: RtcUser<'a>,
    /// Publisher: privileges 1–4; subscriber: join only.
    pub role: RtcRole,
    /// Token lifetime in seconds after `issue_ts` (relative, e.g. 3600).
    pub token_expire: u32,
    /// Lifetime of every granted privilege in seconds after `issue_ts` (relative).
    pub privilege_expire: u32,
    /// Issue time, seconds since the Unix epoch (the caller's "now").
    pub issue_ts: u32,
    /// Random salt (the reference draws it from 1..=99 999 999).
    pub salt: u32,
}

impl RtcTokenRequest<'_> {
    /// The unsigned token this request describes.
    pub fn to_access_token(&self) -> AccessToken2 {
        AccessToken2::new(self.app_id, self.issue_ts, self.token_expire, self.salt).with_service(
            Service::rtc_for_role(
                self.channel_name,
                self.user.to_account(),
                self.role,
                self.privilege_expire,
            ),
        )
    }
}

/// Why a token could not be built, decoded or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token string is empty.
    #[error("token is empty")]
    Empty,
    /// The token does not start with the `007` version prefix.
    #[error("token does not start with version prefix \"007\" (found {found:?})")]
    BadVersion {
        /// The first characters of the token.
        found: String,
    },
    /// The part after the prefix is not canonical padded standard base64.
    #[error("token body is not valid base64: {0}")]
    InvalidBase64(#[source] base64::DecodeError),
    /// The decoded bytes are not exactly one valid zlib stream.
    #[error("token body is not a valid zlib stream: {reason}")]
    InvalidZlib {
        /// What is wrong with the stream.
        reason: String,
    },
    /// The content exceeds [`MAX_CONTENT_LEN`].
    #[error("token content exceeds {limit} bytes")]
    ContentTooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The content ends in the middle of a field.
    #[error("token content is truncated (while reading the {field})")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// Bytes are left over after the last declared service.
    #[error("token content has {count} unexpected byte(s) after the last service")]
    TrailingBytes {
        /// How many bytes are left over.
        count: usize,
    },
    /// A text field is not UTF-8.
    #[error("the {field} in the token is not valid UTF-8")]
    InvalidUtf8 {
        /// The offending field.
        field: &'static str,
    },
    /// A privilege id appears twice in one service.
    #[error("privilege {privilege} appears twice in service {service_type}")]
    DuplicatePrivilege {
        /// The service holding the privilege map.
        service_type: u16,
        /// The repeated privilege id.
        privilege: u16,
    },
    /// The app id is not 32 hexadecimal characters.
    #[error("app id must be 32 hexadecimal characters")]
    InvalidAppId,
    /// The app certificate is not 32 hexadecimal characters.
    #[error("app certificate must be 32 hexadecimal characters")]
    InvalidAppCertificate,
    /// A token needs at least one service.
    #[error("a token needs at least one service")]
    NoServices,
    /// A string, map or count does not fit its 16-bit length field.
    #[error("{field} is too long for the token format ({len}; at most 65535)")]
    FieldTooLong {
        /// The offending field.
        field: &'static str,
        /// Its length or entry count.
        len: usize,
    },
    /// An [`Service::Unknown`] would not be the last service, so its opaque bytes would
    /// swallow the services after it.
    #[error("unknown service type {service_type} must be the last service")]
    UnknownServiceNotLast {
        /// Its service type.
        service_type: u16,
    },
    /// The signature does not match: wrong certificate or altered token.
    #[error("token signature does not match")]
    SignatureMismatch,
}

fn is_hex_id(s: &str) -> bool {
    s.len() == HEX_ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod codec_tests;
