//! What a byte quota is: `quota = "100 GiB/month"` on a tier, read and checked, and the
//! calendar periods (UTC days and months) it is counted over.
//!
//! Periods are calendar days or months in UTC, so every node of a fleet agrees where one
//! starts whatever its time zone, and the period's tag (`2026-12-01`, `2026-12`) names its
//! counter. Counting and checking are `quota_usage`'s; this module is the vocabulary both
//! the config file and the pacing tiers use, and imports nothing of the relay but `units`.

use crate::units;

/// Bytes of the keyed hashes that name quota accounts (hex in Redis keys: 32 characters).
pub(crate) const ACCOUNT_ID_LEN: usize = 16;

/// A calendar period in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Period {
    /// From midnight to midnight, UTC.
    Day,
    /// From the first of a month, 00:00 UTC, to the first of the next.
    Month,
}

/// What happens to a running session once its account is over quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverQuota {
    /// It is ended at the next check (the default).
    End,
    /// It is paced down to this many bits per second each way.
    Pace {
        /// The rate, bits per second.
        rate_bits_per_sec: u64,
    },
}

/// A tier's byte quota: `quota = "2 MiB/day"` and `over_quota_rate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Most bytes (both directions together) an account may have carried in one period.
    pub bytes: u64,
    /// The period the bytes are counted over.
    pub period: Period,
    /// What a running session gets once the quota is spent.
    pub over: OverQuota,
}

/// Parses `"100 GiB/month"` or `"2 MiB/day"`: a size in the units of `buffer_budget`, a
/// slash, and `day` or `month`.
pub fn parse_quota(text: &str) -> Result<(u64, Period), String> {
    const EXPECTED: &str = "write a size and a period, such as \"100 GiB/month\" or \"2 MiB/day\"";
    let Some((size, period)) = text.rsplit_once('/') else {
        return Err(format!("`{text}` has no period; {EXPECTED}"));
    };
    let period = match period.trim().to_ascii_lowercase().as_str() {
        "day" => Period::Day,
        "month" => Period::Month,
        other => return Err(format!("`{text}`: unknown period `{other}` (use day or month); {EXPECTED}")),
    };
    let bytes =
        units::parse_bytes(size).map_err(|_| format!("`{text}`: `{}` is not a size; {EXPECTED}", size.trim()))?;
    if bytes == 0 {
        return Err(format!("`{text}`: a quota of zero refuses every session; leave `quota` out for no quota"));
    }
    Ok((bytes, period))
}

/// One period: its bounds (Unix seconds, UTC) and its name in keys and reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeriodSpan {
    /// When it starts.
    pub start: i64,
    /// When the next one starts.
    pub end: i64,
    /// `2026-12-01` for a day, `2026-12` for a month.
    pub tag: String,
}

impl Period {
    /// The period of this kind that `unix_secs` falls in.
    pub fn span_at(self, unix_secs: i64) -> PeriodSpan {
        let at = time::OffsetDateTime::from_unix_timestamp(unix_secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let date = at.date();
        let midnight = |d: time::Date| d.midnight().assume_utc().unix_timestamp();
        match self {
            Period::Day => {
                let start = midnight(date);
                let tag = format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day());
                PeriodSpan { start, end: start + 86_400, tag }
            }
            Period::Month => {
                let first = date.replace_day(1).unwrap_or(date);
                let next = match date.month() {
                    time::Month::December => time::Date::from_calendar_date(date.year() + 1, time::Month::January, 1),
                    month => time::Date::from_calendar_date(date.year(), month.next(), 1),
                }
                .unwrap_or(first);
                let tag = format!("{:04}-{:02}", date.year(), u8::from(date.month()));
                PeriodSpan { start: midnight(first), end: midnight(next), tag }
            }
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", human(self.bytes), self.period.name())
    }
}

/// `1.2 MiB` for a byte count.
pub fn human(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `2026-12-01T10:00:00Z` and friends, as Unix seconds (`"2026-12-01T10:00:00Z"`).
    pub(crate) fn at(text: &str) -> i64 {
        let n = |range: std::ops::Range<usize>| text[range].parse::<i32>().unwrap();
        let month = time::Month::try_from(n(5..7) as u8).unwrap();
        let date = time::Date::from_calendar_date(n(0..4), month, n(8..10) as u8).unwrap();
        let utc =
            date.with_hms(n(11..13) as u8, n(14..16) as u8, n(17..19) as u8).unwrap().assume_utc().unix_timestamp();
        // `+02:00`: that much later in UTC is the same wall clock.
        match text.get(19..20) {
            Some("+") => utc - i64::from(n(20..22)) * 3600,
            _ => utc,
        }
    }

    #[test]
    fn periods_are_calendar_days_and_months_in_utc() {
        let day = Period::Day.span_at(at("2026-12-01T23:59:59Z"));
        assert_eq!(
            (day.start, day.end, day.tag.as_str()),
            (at("2026-12-01T00:00:00Z"), at("2026-12-02T00:00:00Z"), "2026-12-01")
        );
        let next = Period::Day.span_at(at("2026-12-02T00:00:00Z"));
        assert_eq!(next.start, day.end, "a day ends where the next begins");
        let december = Period::Month.span_at(at("2026-12-31T23:59:59Z"));
        assert_eq!((december.start, december.end), (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z")));
        assert_eq!(december.tag, "2026-12");
        let february = Period::Month.span_at(at("2028-02-29T12:00:00Z"));
        assert_eq!((february.start, february.end), (at("2028-02-01T00:00:00Z"), at("2028-03-01T00:00:00Z")));
        // A time with an offset is the same instant: the period is UTC's.
        assert_eq!(Period::Day.span_at(at("2026-12-02T01:00:00+02:00")).tag, "2026-12-01");
    }

    #[test]
    fn quotas_parse_with_units_and_periods() {
        assert_eq!(parse_quota("100 GiB/month"), Ok((100 << 30, Period::Month)));
        assert_eq!(parse_quota("2 MiB/day"), Ok((2 << 20, Period::Day)));
        assert_eq!(parse_quota(" 2MiB / Day "), Ok((2 << 20, Period::Day)));
        assert_eq!(parse_quota("1000000/day"), Ok((1_000_000, Period::Day)));
        for (text, want) in [
            ("2 MiB", "no period"),
            ("2 MiB/week", "unknown period `week`"),
            ("lots/day", "`lots` is not a size"),
            ("0 MiB/day", "zero"),
        ] {
            let error = parse_quota(text).unwrap_err();
            assert!(error.contains(want) && error.contains("\"2 MiB/day\"") || want == "zero", "{text}: {error}");
        }
    }
}
