//! HTTP dates (RFC 9110 §5.6.7): `doctor` reads the cover site's `Date:`
//! header to check this machine's clock, and its tests write one.

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses an HTTP date in the IMF-fixdate form every current server
/// sends (`Sun, 06 Nov 1994 08:49:37 GMT`) into Unix seconds.
pub fn parse(text: &str) -> Option<u64> {
    let mut it = text.split_whitespace();
    let _weekday = it.next()?;
    let day: u32 = it.next()?.parse().ok()?;
    let month = it.next()?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as u32 + 1;
    let year: i64 = it.next()?.parse().ok()?;
    // Four digits (RFC 9110 §5.6.7); also keeps the day arithmetic small.
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut hms = it.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if it.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

/// Formats Unix seconds as an IMF-fixdate HTTP date.
pub fn format(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[m as usize - 1],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn http_dates_round_trip() {
        let t = parse("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t, 784_111_777);
        assert_eq!(format(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(format(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        for unix in [951_782_400, 1_709_164_800, 4_102_444_799, 1_790_000_123] {
            assert_eq!(parse(&format(unix)), Some(unix));
        }
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn out_of_range_dates_are_refused_not_overflowed() {
        assert_eq!(parse("Sun, 06 Nov 1969 08:49:37 GMT"), None);
        assert_eq!(parse("Sun, 06 Nov 99999999999999999 08:49:37 GMT"), None);
        assert_eq!(parse("Sun, 06 Nov -9223372036854775808 08:49:37 GMT"), None);
        assert_eq!(parse("Sun, 32 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(parse("Sun, 06 Nov 1994 24:00:00 GMT"), None);
        assert_eq!(parse("Sun, 06 Nov 1994 08:49 GMT"), None);
        assert_eq!(parse("Sun, 06 Foo 1994 08:49:37 GMT"), None);
    }

    proptest! {
        #[test]
        fn any_time_before_10000_round_trips(unix in 0u64..253_402_300_800) {
            prop_assert_eq!(parse(&format(unix)), Some(unix));
        }
    }
}
