//! zlib: compressing token content into exactly the bytes C zlib produces (through the
//! port in [`crate::rtc::zlib_compat`]), and the strict decompression [`super::parse`]
//! uses.

use std::io::Write as _;

use flate2::{Decompress, FlushDecompress, Status};

use super::{TokenError, MAX_CONTENT_LEN};

/// zlib level the reference builders use (`Z_DEFAULT_COMPRESSION`).
const ZLIB_LEVEL: u32 = 6;

/// zlib-compresses token content exactly as C zlib's default level does (see
/// [`crate::rtc::zlib_compat`]); oversized content falls back to `flate2`.
pub(super) fn compress(content: &[u8]) -> Vec<u8> {
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
pub(super) fn inflate(compressed: &[u8]) -> Result<Vec<u8>, TokenError> {
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
