//! When to try a delivery again: the Standard Webhooks schedule (5 s, 5 min, 30 min, 2 h, 5 h,
//! 10 h, 14 h, 20 h, 24 h after each failed attempt; ten attempts in all, about three days),
//! each delay spread by ±10 % so retries of many deliveries do not arrive together, and a
//! receiver's `Retry-After` honoured when it asks for longer (up to a day).

use std::time::Duration;

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;

/// The delay after the 1st, 2nd, … failed attempt.
pub const SCHEDULE: [Duration; 9] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * MINUTE),
    Duration::from_secs(30 * MINUTE),
    Duration::from_secs(2 * HOUR),
    Duration::from_secs(5 * HOUR),
    Duration::from_secs(10 * HOUR),
    Duration::from_secs(14 * HOUR),
    Duration::from_secs(20 * HOUR),
    Duration::from_secs(24 * HOUR),
];

/// Attempts in all before a delivery is given up (`failed`).
pub const MAX_ATTEMPTS: u32 = SCHEDULE.len() as u32 + 1;

/// The longest `Retry-After` honoured; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * HOUR);

/// After `attempts` failed attempts: how long to wait before the next one, or `None` when
/// the delivery has failed for good. `jitter` in [-1, 1] spreads the delay by up to ±10 %.
pub fn next_delay(attempts: u32, retry_after: Option<Duration>, jitter: f64) -> Option<Duration> {
    let index = usize::try_from(attempts.checked_sub(1)?).ok()?;
    let base = *SCHEDULE.get(index)?;
    let spread = base.mul_f64(1.0 + jitter.clamp(-1.0, 1.0) * 0.1);
    Some(match retry_after {
        Some(asked) => spread.max(asked.min(MAX_RETRY_AFTER)),
        None => spread,
    })
}

/// A random jitter in [-1, 1].
pub fn random_jitter() -> f64 {
    rand::random_range(-1.0..=1.0)
}

/// Reads a `Retry-After` header: delay-seconds, or an HTTP date (IMF-fixdate) from `now`.
pub fn parse_retry_after(value: &str, now: time::OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_the_specifications_and_ends_after_ten_attempts() {
        let s = Duration::from_secs;
        assert_eq!(next_delay(1, None, 0.0), Some(s(5)));
        assert_eq!(next_delay(2, None, 0.0), Some(s(300)));
        assert_eq!(next_delay(4, None, 0.0), Some(s(7200)));
        assert_eq!(next_delay(9, None, 0.0), Some(s(86_400)));
        assert_eq!(next_delay(10, None, 0.0), None);
        assert_eq!(next_delay(0, None, 0.0), None);
        assert_eq!(MAX_ATTEMPTS, 10);
    }

    #[test]
    fn jitter_spreads_by_ten_percent_at_most() {
        let s = Duration::from_secs;
        assert_eq!(next_delay(2, None, 1.0), Some(s(330)));
        assert_eq!(next_delay(2, None, -1.0), Some(s(270)));
        assert_eq!(next_delay(2, None, 7.0), Some(s(330)));
    }

    #[test]
    fn a_longer_retry_after_wins_and_is_bounded() {
        let s = Duration::from_secs;
        assert_eq!(next_delay(1, Some(s(120)), 0.0), Some(s(120)));
        assert_eq!(next_delay(2, Some(s(10)), 0.0), Some(s(300)));
        assert_eq!(
            next_delay(1, Some(s(10 * 86_400)), 0.0),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = time::macros::datetime!(2026-12-01 10:00:00 UTC);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 10:02:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
