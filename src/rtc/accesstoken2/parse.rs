//! Reading tokens: a `"007…"` string decoded into its fields and services, and its
//! signature checked against the app certificate.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::Mac as _;

use super::compress::inflate;
use super::signature::signature_mac;
use super::wire::Reader;
use super::{is_hex_id, AccessToken2, Service, TokenError, SERVICE_TYPE_RTC, VERSION};

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
