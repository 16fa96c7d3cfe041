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
//! token reaches, falls back to `flate2`). Decompression uses `flate2`. Agora's Go builder
//! uses Go's own compressor, so its tokens differ in bytes (not in content) from these.
//!
//! # Unknown services
//!
//! Only RTC is decoded. The wire format carries no per-service length, so a decoder cannot
//! skip a service type it does not know. [`parse`] therefore stops at the first unknown
//! type and keeps everything from there on verbatim in [`Service::Unknown`] (as Agora's own
//! parsers do, which also stop there). Such tokens still verify, because the signature is
//! checked over the original bytes, and they re-encode to the same bytes.

use std::collections::BTreeMap;
use std::io::Write as _;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use flate2::{Decompress, FlushDecompress, Status};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The version prefix every AccessToken2 string starts with.
pub const VERSION: &str = "007";

/// Service type of Agora RTC (real-time audio and video channels).
pub const SERVICE_TYPE_RTC: u16 = 1;

/// Largest decompressed content [`parse`] accepts and [`AccessToken2::build`] produces, in
/// bytes. Real tokens are a few hundred bytes; the limit defuses zlib bombs.
pub const MAX_CONTENT_LEN: usize = 64 * 1024;

/// Length of an app id or app certificate, in hexadecimal characters.
const HEX_ID_LEN: usize = 32;

/// zlib level the reference builders use (`Z_DEFAULT_COMPRESSION`).
const ZLIB_LEVEL: u32 = 6;

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

    /// How many services this entry stands for in the header's service count.
    fn wire_count(&self) -> usize {
        match self {
            Service::Rtc { .. } => 1,
            Service::Unknown {
                following_services, ..
            } => 1 + usize::from(*following_services),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), TokenError> {
        put_u16(out, self.service_type());
        match self {
            Service::Rtc {
                channel_name,
                uid,
                privileges,
            } => encode_rtc_body(
                out,
                privileges.iter().map(|(&id, &expire)| (id, expire)),
                channel_name.as_bytes(),
                uid.as_bytes(),
            )?,
            Service::Unknown { payload, .. } => out.extend_from_slice(payload),
        }
        Ok(())
    }
}

/// Writes an RTC service after its type field: the privilege map (`privileges` in
/// ascending id order), the channel name and the uid.
fn encode_rtc_body(
    out: &mut Vec<u8>,
    privileges: impl ExactSizeIterator<Item = (u16, u32)>,
    channel_name: &[u8],
    uid: &[u8],
) -> Result<(), TokenError> {
    let count = u16::try_from(privileges.len()).map_err(|_| TokenError::FieldTooLong {
        field: "privilege map",
        len: privileges.len(),
    })?;
    put_u16(out, count);
    for (id, expire) in privileges {
        put_u16(out, id);
        put_u32(out, expire);
    }
    put_string(out, "channel name", channel_name)?;
    put_string(out, "uid", uid)
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

    /// Signs the token with `app_certificate` and encodes it as a `"007…"` string.
    ///
    /// Fails if the app id or the certificate is not 32 hexadecimal characters, if there
    /// are no services, if a string or count does not fit its `u16` length field, or if an
    /// [`Service::Unknown`] is not last in type order.
    pub fn build(&self, app_certificate: &str) -> Result<String, TokenError> {
        if !is_hex_id(&self.app_id) {
            return Err(TokenError::InvalidAppId);
        }
        if !is_hex_id(app_certificate) {
            return Err(TokenError::InvalidAppCertificate);
        }
        if self.services.is_empty() {
            return Err(TokenError::NoServices);
        }
        let mut content = content_with_signature_slot();
        self.write_signing_info(&mut content)?;
        sign_and_encode(content, app_certificate, self.issue_ts, self.salt)
    }

    /// Appends the bytes the signature covers: app id through the last service.
    fn write_signing_info(&self, out: &mut Vec<u8>) -> Result<(), TokenError> {
        // Services are written sorted by type, stably like the reference (equal types
        // keep their order). Already sorted lists, the usual case, need no copy.
        if self.services.is_sorted_by_key(Service::service_type) {
            self.write_services_in_order(out, self.services.iter())
        } else {
            let mut ordered: Vec<&Service> = self.services.iter().collect();
            ordered.sort_by_key(|s| s.service_type());
            self.write_services_in_order(out, ordered.into_iter())
        }
    }

    /// [`AccessToken2::write_signing_info`] with the services already in wire order.
    fn write_services_in_order<'a>(
        &self,
        out: &mut Vec<u8>,
        ordered: impl Iterator<Item = &'a Service> + Clone,
    ) -> Result<(), TokenError> {
        let unknown = ordered
            .clone()
            .enumerate()
            .find(|(_, s)| matches!(s, Service::Unknown { .. }));
        if let Some((pos, service)) = unknown {
            if pos + 1 != self.services.len() {
                return Err(TokenError::UnknownServiceNotLast {
                    service_type: service.service_type(),
                });
            }
        }
        let count: usize = ordered.clone().map(|s| s.wire_count()).sum();
        let count = u16::try_from(count).map_err(|_| TokenError::FieldTooLong {
            field: "service count",
            len: count,
        })?;

        write_header(
            out,
            &self.app_id,
            self.issue_ts,
            self.expire,
            self.salt,
            count,
        )?;
        for service in ordered {
            service.encode(out)?;
        }
        Ok(())
    }
}

/// Bytes of the signature field at the start of the content: `u16` length 32, then the
/// HMAC.
const SIGNATURE_FIELD_LEN: usize = 2 + 32;

/// A content buffer starting with the signature field, its HMAC still zero; the signing
/// info is appended to it and [`sign_and_encode`] fills the HMAC in. This spares copying
/// the signing info into a second buffer.
fn content_with_signature_slot() -> Vec<u8> {
    let mut content = Vec::with_capacity(256);
    put_u16(&mut content, 32);
    content.resize(SIGNATURE_FIELD_LEN, 0);
    content
}

/// Writes the signing info's fixed fields, up to and including the service count.
fn write_header(
    out: &mut Vec<u8>,
    app_id: &str,
    issue_ts: u32,
    expire: u32,
    salt: u32,
    service_count: u16,
) -> Result<(), TokenError> {
    put_string(out, "app id", app_id.as_bytes())?;
    put_u32(out, issue_ts);
    put_u32(out, expire);
    put_u32(out, salt);
    put_u16(out, service_count);
    Ok(())
}

/// Signs `content` (from [`content_with_signature_slot`], signing info appended), fills
/// in the signature, compresses and encodes it as a `"007…"` string.
fn sign_and_encode(
    mut content: Vec<u8>,
    app_certificate: &str,
    issue_ts: u32,
    salt: u32,
) -> Result<String, TokenError> {
    if content.len() > MAX_CONTENT_LEN {
        return Err(TokenError::ContentTooLarge {
            limit: MAX_CONTENT_LEN,
        });
    }
    let (signature_field, signing_info) = content.split_at_mut(SIGNATURE_FIELD_LEN);
    let signature = signature_mac(app_certificate, issue_ts, salt, signing_info)
        .finalize()
        .into_bytes();
    signature_field[2..].copy_from_slice(&signature);
    let compressed = compress(&content);
    let mut token = String::with_capacity(VERSION.len() + compressed.len().div_ceil(3) * 4);
    token.push_str(VERSION);
    BASE64.encode_string(&compressed, &mut token);
    Ok(token)
}

/// A decoded token: its fields plus the signature it carries (not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToken {
    /// The decoded fields.
    pub token: AccessToken2,
    /// The signature as carried by the token (32 bytes for well-formed tokens).
    pub signature: Vec<u8>,
    /// The original signed bytes, kept so verification does not depend on re-encoding.
    signing_info: Vec<u8>,
}

impl ParsedToken {
    /// Checks the signature against `app_certificate`, in constant time.
    pub fn verify_signature(&self, app_certificate: &str) -> Result<(), TokenError> {
        if !is_hex_id(app_certificate) {
            return Err(TokenError::InvalidAppCertificate);
        }
        signature_mac(
            app_certificate,
            self.token.issue_ts,
            self.token.salt,
            &self.signing_info,
        )
        .verify_slice(&self.signature)
        .map_err(|_| TokenError::SignatureMismatch)
    }
}

/// Decodes a `"007…"` token without checking its signature (for inspection). Use
/// [`verify`] to authenticate a token.
pub fn parse(token: &str) -> Result<ParsedToken, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    let body = token
        .strip_prefix(VERSION)
        .ok_or_else(|| TokenError::BadVersion {
            found: token.chars().take(VERSION.len()).collect(),
        })?;
    let compressed = BASE64.decode(body).map_err(TokenError::InvalidBase64)?;
    let content = inflate(&compressed)?;
    decode_content(&content)
}

/// Decodes `token` and checks its signature against `app_certificate`, returning the
/// authenticated fields. Expiry is not checked (that needs a clock): compare
/// [`AccessToken2::expires_at`] with the current time.
pub fn verify(token: &str, app_certificate: &str) -> Result<AccessToken2, TokenError> {
    if !is_hex_id(app_certificate) {
        return Err(TokenError::InvalidAppCertificate);
    }
    let parsed = parse(token)?;
    parsed.verify_signature(app_certificate)?;
    Ok(parsed.token)
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

    /// Builds and signs the token string; the same as
    /// `self.to_access_token().build(app_certificate)`, without building that
    /// intermediate token (this is the token endpoint's hot path).
    pub fn build(&self, app_certificate: &str) -> Result<String, TokenError> {
        if !is_hex_id(self.app_id) {
            return Err(TokenError::InvalidAppId);
        }
        if !is_hex_id(app_certificate) {
            return Err(TokenError::InvalidAppCertificate);
        }
        let mut content = content_with_signature_slot();
        write_header(
            &mut content,
            self.app_id,
            self.issue_ts,
            self.token_expire,
            self.salt,
            1,
        )?;
        put_u16(&mut content, SERVICE_TYPE_RTC);
        let mut digits = [0u8; 10];
        let uid = match self.user {
            RtcUser::Uid(0) => &[][..],
            RtcUser::Uid(uid) => decimal(uid, &mut digits),
            RtcUser::Account(account) => account.as_bytes(),
        };
        encode_rtc_body(
            &mut content,
            // `privileges()` is in ascending id order, as the map would be.
            self.role
                .privileges()
                .iter()
                .map(|p| (p.id(), self.privilege_expire)),
            self.channel_name.as_bytes(),
            uid,
        )?;
        sign_and_encode(content, app_certificate, self.issue_ts, self.salt)
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

/// The decimal digits of `n`, written into the end of `buf` (like `n.to_string()`, but
/// without allocating).
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

fn is_hex_id(s: &str) -> bool {
    s.len() == HEX_ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// HMAC over the signing info, keyed as the format prescribes (see the module docs).
fn signature_mac(
    app_certificate: &str,
    issue_ts: u32,
    salt: u32,
    signing_info: &[u8],
) -> HmacSha256 {
    let k1 = hmac_sha256(&issue_ts.to_le_bytes(), app_certificate.as_bytes());
    let k2 = hmac_sha256(&salt.to_le_bytes(), &k1);
    let mut mac = new_mac(&k2);
    mac.update(signing_info);
    mac
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = new_mac(key);
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length")
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_string(out: &mut Vec<u8>, field: &'static str, bytes: &[u8]) -> Result<(), TokenError> {
    let len = u16::try_from(bytes.len()).map_err(|_| TokenError::FieldTooLong {
        field,
        len: bytes.len(),
    })?;
    put_u16(out, len);
    out.extend_from_slice(bytes);
    Ok(())
}

/// Cursor over token content; every read names its field for error messages.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], TokenError> {
        if self.rest.len() < n {
            return Err(TokenError::Truncated { field });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, TokenError> {
        let b = self.take(2, field)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, TokenError> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], TokenError> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }

    fn string(&mut self, field: &'static str) -> Result<String, TokenError> {
        let bytes = self.bytes(field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| TokenError::InvalidUtf8 { field })
    }

    fn privileges(&mut self, service_type: u16) -> Result<BTreeMap<u16, u32>, TokenError> {
        let count = self.u16("privilege count")?;
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let privilege = self.u16("privilege id")?;
            let expire = self.u32("privilege expiry")?;
            if map.insert(privilege, expire).is_some() {
                return Err(TokenError::DuplicatePrivilege {
                    service_type,
                    privilege,
                });
            }
        }
        Ok(map)
    }

    fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }
}

/// Splits decompressed content into signature, fields and services.
fn decode_content(content: &[u8]) -> Result<ParsedToken, TokenError> {
    let mut reader = Reader { rest: content };
    let signature = reader.bytes("signature")?.to_vec();
    let signing_info = reader.rest;

    let app_id = reader.string("app id")?;
    let issue_ts = reader.u32("issue time")?;
    let expire = reader.u32("expire")?;
    let salt = reader.u32("salt")?;
    let count = reader.u16("service count")?;
    let mut services = Vec::new();
    for index in 0..count {
        let service_type = reader.u16("service type")?;
        if service_type == SERVICE_TYPE_RTC {
            let privileges = reader.privileges(service_type)?;
            let channel_name = reader.string("channel name")?;
            let uid = reader.string("uid")?;
            services.push(Service::Rtc {
                channel_name,
                uid,
                privileges,
            });
        } else {
            services.push(Service::Unknown {
                service_type,
                payload: reader.take_rest().to_vec(),
                following_services: count - index - 1,
            });
            break;
        }
    }
    if !reader.rest.is_empty() {
        return Err(TokenError::TrailingBytes {
            count: reader.rest.len(),
        });
    }
    Ok(ParsedToken {
        token: AccessToken2 {
            app_id,
            issue_ts,
            expire,
            salt,
            services,
        },
        signature,
        signing_info: signing_info.to_vec(),
    })
}

/// zlib-compresses token content exactly as C zlib's default level does (see
/// [`zlib_compat`]); oversized content falls back to `flate2`.
fn compress(content: &[u8]) -> Vec<u8> {
    if content.len() <= crate::rtc::zlib_compat::MAX_INPUT {
        return crate::rtc::zlib_compat::compress(content);
    }
    let mut encoder =
        flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(ZLIB_LEVEL));
    encoder
        .write_all(content)
        .expect("writing into a Vec cannot fail");
    encoder.finish().expect("writing into a Vec cannot fail")
}

/// Decompresses exactly one zlib stream, rejecting trailing bytes, bad checksums and
/// content over [`MAX_CONTENT_LEN`].
fn inflate(compressed: &[u8]) -> Result<Vec<u8>, TokenError> {
    let invalid = |reason: &str| TokenError::InvalidZlib {
        reason: reason.to_owned(),
    };
    let mut inflater = Decompress::new(true);
    let mut out = Vec::with_capacity((compressed.len() * 4).clamp(256, MAX_CONTENT_LEN + 1));
    loop {
        if out.len() == out.capacity() {
            let grow = out.len().min(MAX_CONTENT_LEN + 1 - out.len());
            out.reserve_exact(grow);
        }
        let consumed = usize::try_from(inflater.total_in()).map_err(|_| invalid("too long"))?;
        let produced = out.len();
        let status = inflater
            .decompress_vec(&compressed[consumed..], &mut out, FlushDecompress::None)
            .map_err(|e| TokenError::InvalidZlib {
                reason: e.to_string(),
            })?;
        if out.len() > MAX_CONTENT_LEN {
            return Err(TokenError::ContentTooLarge {
                limit: MAX_CONTENT_LEN,
            });
        }
        if status == Status::StreamEnd {
            break;
        }
        let progressed = inflater.total_in() != consumed as u64 || out.len() != produced;
        if !progressed && out.len() < out.capacity() {
            return Err(invalid("stream is truncated"));
        }
    }
    if inflater.total_in() != compressed.len() as u64 {
        return Err(invalid("unexpected bytes after the end of the stream"));
    }
    // Check the Adler-32 trailer here rather than trusting every backend to do it.
    let trailer = compressed
        .len()
        .checked_sub(4)
        .map(|at| &compressed[at..])
        .ok_or_else(|| invalid("stream is truncated"))?;
    if trailer != crate::rtc::zlib_compat::adler32(&out).to_be_bytes() {
        return Err(invalid("checksum mismatch"));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "accesstoken2_tests.rs"]
mod tests;
