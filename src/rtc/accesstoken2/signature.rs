//! The token signature: the two-step HMAC-SHA256 key derivation and the MAC over the
//! signing info (see "Signature" in the module docs).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// HMAC over the signing info, keyed as the format prescribes (see the module docs).
pub(super) fn signature_mac(
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
