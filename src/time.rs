//! Wall-clock helpers and the wire's timestamp format.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 UTC with milliseconds, as the contract writes timestamps: `2026-11-22T10:30:00.123Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_with_millis() {
        assert_eq!(
            super::rfc3339_ms(1_795_343_400_123),
            "2026-11-22T10:30:00.123Z"
        );
    }
}
