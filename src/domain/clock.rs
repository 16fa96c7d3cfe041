//! Wall-clock time as the node reads and writes it: Unix milliseconds, and RFC 3339 UTC
//! with milliseconds (`2026-11-22T02:14:05.123Z`) wherever a time reaches a client, a frame
//! or PostgreSQL. Services read the clock once per decision and pass the value down; the
//! rules they apply (the session state machine, rate limits) take it as an argument.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The last millisecond RFC 3339 can write (9999-12-31T23:59:59.999Z).
const MAX_RFC3339_MS: u64 = 253_402_300_799_999;

/// Unix milliseconds as RFC 3339 UTC with milliseconds (`2026-11-22T02:14:05.123Z`).
/// Times past the year 9999 are written as its last millisecond.
pub fn rfc3339(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.min(MAX_RFC3339_MS));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Reads back what [`rfc3339`] writes — exactly that shape, `YYYY-MM-DDTHH:MM:SS.mmmZ` —
/// as Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 24 || b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let t = humantime::parse_rfc3339(s).ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_313_645_123), "2026-11-22T02:14:05.123Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn round_trips() {
        for ms in [
            0u64,
            1,
            951_782_400_123,
            1_795_000_000_999,
            4_102_444_800_000,
        ] {
            assert_eq!(parse_rfc3339_ms(&rfc3339(ms)), Some(ms), "{}", rfc3339(ms));
        }
        assert_eq!(parse_rfc3339_ms("2026-11-22T02:14:05Z"), None);
        assert_eq!(parse_rfc3339_ms("2026-13-22T02:14:05.000Z"), None);
        assert_eq!(parse_rfc3339_ms("2026-11-22T02:14:05.000+01:00"), None);
    }
}
