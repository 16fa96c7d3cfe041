//! Byte-level packing of token content: little-endian integers and `u16`-length-prefixed
//! strings, written by [`put_u16`], [`put_u32`] and [`put_string`] and read back by
//! [`Reader`], which names the field it was reading in every error.

use std::collections::BTreeMap;

use super::TokenError;

pub(super) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(super) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(super) fn put_string(
    out: &mut Vec<u8>,
    field: &'static str,
    bytes: &[u8],
) -> Result<(), TokenError> {
    let len = u16::try_from(bytes.len()).map_err(|_| TokenError::FieldTooLong {
        field,
        len: bytes.len(),
    })?;
    put_u16(out, len);
    out.extend_from_slice(bytes);
    Ok(())
}

/// Cursor over token content; every read names its field for error messages.
pub(super) struct Reader<'a> {
    pub(super) rest: &'a [u8],
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

    pub(super) fn u16(&mut self, field: &'static str) -> Result<u16, TokenError> {
        let b = self.take(2, field)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, TokenError> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], TokenError> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }

    pub(super) fn string(&mut self, field: &'static str) -> Result<String, TokenError> {
        let bytes = self.bytes(field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| TokenError::InvalidUtf8 { field })
    }

    pub(super) fn privileges(
        &mut self,
        service_type: u16,
    ) -> Result<BTreeMap<u16, u32>, TokenError> {
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

    pub(super) fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }
}
