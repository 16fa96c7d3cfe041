//! Building tokens: the signing info laid out field by field, signed, compressed and
//! base64-encoded into a `"007…"` string.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::Mac as _;

use super::compress::compress;
use super::signature::signature_mac;
use super::wire::{put_string, put_u16, put_u32};
use super::{
    is_hex_id, AccessToken2, RtcTokenRequest, RtcUser, Service, TokenError, MAX_CONTENT_LEN,
    SERVICE_TYPE_RTC, VERSION,
};

impl Service {
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

impl AccessToken2 {
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

impl RtcTokenRequest<'_> {
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
