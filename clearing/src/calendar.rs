//! Business time: the business day and minute of an instant (business-local, `utc_offset_seconds`
//! east of UTC), weekends and holidays, dates as text, and the clock as an input (`Clock`), so
//! that routing windows, daily caps, timeouts and the settlement schedule can be tested at any
//! hour without waiting for it.

use std::collections::BTreeSet;
use std::time::Instant;

/// Microseconds in a day.
const DAY_MICROS: i64 = 86_400_000_000;

/// Where time comes from: wall-clock microseconds since the epoch (business dates) and a
/// monotonic instant (timeouts, cooldowns).
pub trait Clock: Send + Sync + 'static {
    /// Microseconds since 1970-01-01 UTC.
    fn now_micros(&self) -> u64;
    /// A monotonic instant.
    fn instant(&self) -> Instant;
}

/// The system's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// The business calendar: the time zone of business days, and the holidays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Calendar {
    pub utc_offset_seconds: i32,
    /// Business days (days since 1970-01-01, business-local) that are holidays.
    pub holidays: BTreeSet<u32>,
}

impl Calendar {
    /// The business day (days since 1970-01-01) and the minute of that day of `micros`.
    pub fn local(&self, micros: u64) -> (u32, u32) {
        let local = i64::try_from(micros).unwrap_or(i64::MAX).saturating_add(self.utc_offset_seconds as i64 * 1_000_000);
        let day = u32::try_from(local.div_euclid(DAY_MICROS)).unwrap_or(0);
        (day, (local.rem_euclid(DAY_MICROS) / 60_000_000) as u32)
    }

    /// The business day of `micros`.
    pub fn day(&self, micros: u64) -> u32 {
        self.local(micros).0
    }

    /// The first microsecond of business day `day` (0 before the epoch).
    pub fn day_start_micros(&self, day: i64) -> u64 {
        let start = day.saturating_mul(DAY_MICROS).saturating_sub(self.utc_offset_seconds as i64 * 1_000_000);
        u64::try_from(start).unwrap_or(0)
    }

    /// Monday to Friday and not a holiday.
    pub fn is_business_day(&self, day: u32) -> bool {
        // 1970-01-01 was a Thursday: day 0 is weekday 3 (Monday = 0).
        let weekday = (day % 7 + 3) % 7;
        weekday < 5 && !self.holidays.contains(&day)
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (from 1970 on).
pub fn parse_date(text: &str) -> Option<u32> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, &format).ok()?;
    let epoch = time::Date::from_calendar_date(1970, time::Month::January, 1).expect("a valid date");
    u32::try_from((date - epoch).whole_days()).ok()
}

/// `YYYY-MM-DD` of day `day` since 1970-01-01.
pub fn date_text(day: u32) -> String {
    let epoch = time::Date::from_calendar_date(1970, time::Month::January, 1).expect("a valid date");
    match epoch.checked_add(time::Duration::days(day as i64)) {
        Some(date) => format!("{:04}-{:02}-{:02}", date.year(), date.month() as u8, date.day()),
        None => format!("day-{day}"),
    }
}

/// An instant (microseconds since the epoch) as RFC 3339 in UTC (`2026-12-01T08:00:00.5Z`).
pub fn rfc3339(micros: u64) -> String {
    let nanos = micros as i128 * 1_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok().and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()).unwrap_or_default()
}

/// `HH:MM` as minutes after midnight (`24:00` is 1440).
pub fn parse_minute(text: &str) -> Option<u32> {
    let (hours, minutes) = text.split_once(':')?;
    let (hours, minutes): (u32, u32) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours <= 24 && minutes < 60 && hours * 60 + minutes <= 1440).then_some(hours * 60 + minutes)
}

/// `HH:MM-HH:MM` as a window of minutes (start before or at its end).
pub fn parse_window(text: &str) -> Option<(u32, u32)> {
    let (start, end) = text.split_once('-')?;
    let window = (parse_minute(start)?, parse_minute(end)?);
    (window.0 <= window.1).then_some(window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_table() {
        let china = Calendar { utc_offset_seconds: 8 * 3600, holidays: BTreeSet::from([20_000]) };
        // (UTC micros, business day, minute)
        let cases = [(0u64, 0u32, 480u32), (16 * 3_600_000_000 - 1, 0, 1439), (16 * 3_600_000_000, 1, 0)];
        for (micros, day, minute) in cases {
            assert_eq!(china.local(micros), (day, minute), "{micros}");
        }
        assert_eq!(china.day_start_micros(1), 16 * 3_600_000_000);
        assert_eq!(china.day_start_micros(0), 0, "before the epoch is clamped, never an underflow");
        assert!(!china.is_business_day(2), "1970-01-03 was a Saturday");
        assert!(china.is_business_day(4), "1970-01-05 was a Monday");
        assert!(!china.is_business_day(20_000), "a holiday");
        assert_eq!(china.local(u64::MAX).0, china.local(i64::MAX as u64).0, "far future saturates");
    }

    #[test]
    fn dates_and_windows_table() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2026-12-01"), Some(20_788));
        assert_eq!(date_text(20_788), "2026-12-01");
        assert_eq!(rfc3339(1_500_000), "1970-01-01T00:00:01.5Z");
        for bad in ["", "1969-12-31", "2026-13-01", "2026-1-1x", "garbage"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        assert_eq!(parse_window("00:00-24:00"), Some((0, 1440)));
        assert_eq!(parse_window("09:00-17:30"), Some((540, 1050)));
        for bad in ["17:00-09:00", "24:01-24:02", "9-17", "09:60-10:00", "-"] {
            assert_eq!(parse_window(bad), None, "{bad}");
        }
    }
}
