use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time with microsecond precision, serialised as RFC 3339 (UTC).
///
/// The core never reads the clock: callers pass `now` in (read through
/// `ledger_clock::now`), so decisions are reproducible and testable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX)),
        }
    }

    pub const fn from_unix_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    pub const fn from_unix_seconds(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(1_000_000))
    }

    pub const fn unix_micros(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch, rounded down (JWT `NumericDate`).
    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// Whole seconds since the epoch, rounded up.
    pub const fn unix_seconds_ceil(self) -> i64 {
        -((-self.0).div_euclid(1_000_000))
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_micros(d)))
    }

    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_micros(d)))
    }

    /// The time from `earlier` to `self`, zero when `earlier` is later.
    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        let micros = self.0.saturating_sub(earlier.0).max(0);
        Duration::from_micros(micros.unsigned_abs())
    }

    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| self.0.to_string())
    }

    pub fn parse_rfc3339(s: &str) -> Result<Self, time::error::Parse> {
        if let Some(t) = parse_canonical(s.as_bytes()) {
            return Ok(t);
        }
        let t = OffsetDateTime::parse(s, &Rfc3339)?;
        let micros = t.unix_timestamp_nanos() / 1_000;
        Ok(Timestamp(i64::try_from(micros).unwrap_or(i64::MAX)))
    }
}

/// The form this type writes, `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, parsed without the
/// general RFC 3339 machinery (replays decode millions of these). `None` sends every
/// other form, and anything out of range, to the full parser.
fn parse_canonical(b: &[u8]) -> Option<Timestamp> {
    /// What a fraction of `n` digits is multiplied by to make nanoseconds.
    const SCALE_TO_NANOS: [i64; 10] = [
        1_000_000_000,
        100_000_000,
        10_000_000,
        1_000_000,
        100_000,
        10_000,
        1_000,
        100,
        10,
        1,
    ];
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let digit = |i: usize| -> Option<i64> {
        let d = b[i].wrapping_sub(b'0');
        (d < 10).then_some(i64::from(d))
    };
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    let (year, month, day) = (two(0)? * 100 + two(2)?, two(5)?, two(8)?);
    let (hour, minute, second) = (two(11)?, two(14)?, two(17)?);
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', frac @ ..] if (1..=9).contains(&frac.len()) => {
            let digits = frac.iter().try_fold(0i64, |n, &c| {
                let d = c.wrapping_sub(b'0');
                (d < 10).then(|| n * 10 + i64::from(d))
            })?;
            // Scale to exactly nine digits (nanoseconds).
            digits * SCALE_TO_NANOS[frac.len()]
        }
        _ => return None,
    };
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second;
    // As the full parser does: nanoseconds since the epoch divided by 1 000 towards
    // zero, so before 1970 sub-microsecond digits round up (towards the epoch).
    let round_up = i64::from(secs < 0 && nanos % 1_000 != 0);
    Some(Timestamp(secs * 1_000_000 + nanos / 1_000 + round_up))
}

fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TimestampVisitor)
    }
}

/// Parses the string where the deserializer has it (borrowed from the input, or its
/// scratch buffer when the string has escapes), without copying it into a `String`.
struct TimestampVisitor;

impl serde::de::Visitor<'_> for TimestampVisitor {
    type Value = Timestamp;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Timestamp, E> {
        Timestamp::parse_rfc3339(s).map_err(E::custom)
    }

    fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Timestamp, E> {
        match std::str::from_utf8(b) {
            Ok(s) => self.visit_str(s),
            Err(_) => Err(E::invalid_value(serde::de::Unexpected::Bytes(b), &self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_with_microseconds() {
        let t = Timestamp::from_unix_micros(1_700_000_000_123_456);
        let s = t.to_rfc3339();
        assert_eq!(s, "2023-11-14T22:13:20.123456Z");
        assert_eq!(Timestamp::parse_rfc3339(&s).unwrap(), t);
    }

    #[test]
    fn the_fast_parser_agrees_with_the_full_one() {
        let full = |s: &str| {
            let t = OffsetDateTime::parse(s, &Rfc3339).unwrap();
            Timestamp((t.unix_timestamp_nanos() / 1_000) as i64)
        };
        for s in [
            "1970-01-01T00:00:00Z",
            "2023-11-14T22:13:20.123456Z",
            "2024-02-29T23:59:59.9Z",
            "2000-03-01T00:00:00.000000001Z",
            "1969-12-31T23:59:59.5Z",
            "2100-12-31T12:00:00Z",
        ] {
            assert_eq!(parse_canonical(s.as_bytes()), Some(full(s)), "{s}");
        }
        // Not canonical: left to the full parser, which still accepts it.
        for s in ["2023-11-14T22:13:20+01:00", "2023-11-14t22:13:20z"] {
            assert_eq!(parse_canonical(s.as_bytes()), None, "{s}");
            assert!(Timestamp::parse_rfc3339(s).is_ok(), "{s}");
        }
        for s in [
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "yesterday",
        ] {
            assert_eq!(parse_canonical(s.as_bytes()), None, "{s}");
            assert!(Timestamp::parse_rfc3339(s).is_err(), "{s}");
        }
        // Every microsecond timestamp this type writes reads back exactly.
        for micros in [
            0,
            1,
            999_999,
            1_700_000_000_123_456,
            -1,
            4_102_444_800_000_000,
        ] {
            let t = Timestamp(micros);
            assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()).unwrap(), t);
        }
    }

    /// The full parser's reading, as `parse_rfc3339` made it before the fast path.
    fn full(s: &str) -> Result<Timestamp, time::error::Parse> {
        let t = OffsetDateTime::parse(s, &Rfc3339)?;
        Ok(Timestamp(
            i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX),
        ))
    }

    /// The fast path either agrees with the full parser or leaves the string to it.
    fn agrees(s: &str) -> Result<(), proptest::test_runner::TestCaseError> {
        use proptest::prelude::*;
        if let Some(fast) = parse_canonical(s.as_bytes()) {
            prop_assert_eq!(Ok(fast), full(s).map_err(|e| e.to_string()), "{}", s);
        }
        prop_assert_eq!(
            Timestamp::parse_rfc3339(s).map_err(|e| e.to_string()),
            full(s).map_err(|e| e.to_string()),
            "{}",
            s
        );
        Ok(())
    }

    #[test]
    fn the_fast_parser_handles_the_edges_as_the_full_one() {
        // Taken by the fast path, and read as the full parser reads them.
        for s in [
            "0000-01-01T00:00:00Z",
            "0999-12-31T23:59:59.999999Z",
            "1000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "1600-02-29T12:00:00Z",
            "1969-12-31T23:59:59.9999995Z",
            "1969-12-31T23:59:59.000000001Z",
            "1900-01-01T00:00:00.0000009Z",
            "2023-11-14T22:13:20.1Z",
            "2023-11-14T22:13:20.12345678Z",
        ] {
            assert!(parse_canonical(s.as_bytes()).is_some(), "{s}");
            agrees(s).unwrap();
        }
        // Left to the full parser: a leap second, an offset other than Z, a dot without
        // digits, more than nine digits, a lower-case or missing separator, a year
        // that is not four digits, February 29th of a common year (1900).
        for s in [
            "2016-12-31T23:59:60Z",
            "2016-12-31T23:59:60.5Z",
            "2023-11-14T22:13:20+00:00",
            "2023-11-14T22:13:20.5-05:30",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20.1234567891Z",
            "2023-11-14t22:13:20Z",
            "2023-11-14 22:13:20Z",
            "2023-11-14T22:13:20",
            "999-11-14T22:13:20Z",
            "10000-11-14T22:13:20Z",
            "+2023-11-14T22:13:20Z",
            "1900-02-29T00:00:00Z",
            "2023-11-14T22:13:2xZ",
            "2023-1１-14T22:13:20Z",
        ] {
            assert_eq!(parse_canonical(s.as_bytes()), None, "{s}");
            agrees(s).unwrap();
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 4096,
            failure_persistence: None,
            ..Default::default()
        })]

        /// Strings close to the canonical form, with every field allowed out of range.
        #[test]
        fn the_fast_parser_agrees_with_the_full_one_near_its_shape(
            year in proptest::prop_oneof![0u32..10_000, 0u32..100_000],
            month in 0u32..14,
            day in 0u32..33,
            hour in 0u32..25,
            minute in 0u32..61,
            second in 0u32..62,
            fraction in proptest::option::of("[0-9]{0,12}"),
            separator in proptest::sample::select(vec!["T", "t", " "]),
            zone in proptest::sample::select(
                vec!["Z", "z", "+00:00", "-00:00", "+01:30", "-05:00", ""],
            ),
        ) {
            let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
            let s = format!(
                "{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}\
                 {fraction}{zone}"
            );
            agrees(&s)?;
        }

        /// Every instant of years 0000 to 9999, written with 0 to 9 fraction digits:
        /// taken by the fast path, and read as the full parser reads it.
        #[test]
        fn the_fast_parser_reads_every_canonical_instant(
            nanos in -62_167_219_200_000_000_000i128..253_402_300_800_000_000_000,
            digits in 0usize..10,
        ) {
            let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            let fraction = format!("{:09}", t.nanosecond());
            let fraction = match digits {
                0 => String::new(),
                n => format!(".{}", &fraction[..n]),
            };
            let s = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            proptest::prop_assert!(parse_canonical(s.as_bytes()).is_some(), "{}", s);
            agrees(&s)?;
        }

        /// Whatever this type writes reads back exactly, through the fast path.
        #[test]
        fn written_timestamps_read_back(
            micros in -62_167_219_200_000_000i64..253_402_300_800_000_000,
        ) {
            let t = Timestamp(micros);
            let s = t.to_rfc3339();
            proptest::prop_assert_eq!(parse_canonical(s.as_bytes()), Some(t), "{}", s);
        }

        #[test]
        fn any_string_is_read_as_the_full_parser_reads_it(s in ".{0,40}") {
            agrees(&s)?;
        }
    }

    #[test]
    fn seconds_round_down_and_up() {
        let t = Timestamp::from_unix_micros(10_500_000);
        assert_eq!(t.unix_seconds(), 10);
        assert_eq!(t.unix_seconds_ceil(), 11);
        assert_eq!(Timestamp::from_unix_seconds(7).unix_seconds_ceil(), 7);
    }
}
