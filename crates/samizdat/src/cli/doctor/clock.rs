//! The clock check: this machine's time against the cover site's `Date:`
//! header. Fake-TLS clients put their time in the hello (spec §4.2), and a
//! hello outside `--max-clock-behind`/`--max-clock-ahead` of our clock goes
//! to the cover site, so a wrong clock here locks every user out.

use super::{Check, Finding, Level};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Skew above which doctor warns: the Date header has one-second
/// resolution and the answer took some time, so a few seconds are noise.
const WARN_SKEW: u64 = 5;

/// A `Date:` header and when it arrived here.
#[derive(Debug, Clone)]
pub(crate) struct DateSample {
    /// Who sent it, e.g. `cover 127.0.0.1:8443`.
    pub(crate) source: String,
    /// The header's time, Unix seconds.
    pub(crate) date: u64,
    /// Our clock when it arrived.
    pub(crate) local: SystemTime,
}

/// Judges the skew against the window clients' timestamps must fall in.
pub(crate) fn judge(sample: Option<&DateSample>, max_past: u64, max_future: u64) -> Finding {
    let Some(s) = sample else {
        return Finding::new(
            Level::Warn,
            Check::Clock,
            "clock",
            "not checked: it needs an HTTPS answer with a Date header from the cover site",
        )
        .fix("fix the cover site (see its finding), or check that NTP is on (timedatectl)");
    };
    let local = s
        .local
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    // Positive: our clock is ahead, so honest clients look that far in the past.
    let skew = local as i64 - s.date as i64;
    let off = skew.unsigned_abs();
    let (way, limit, option, clients_look) = if skew > 0 {
        ("ahead of", max_past, "--max-clock-behind", "old")
    } else {
        ("behind", max_future, "--max-clock-ahead", "in the future")
    };
    let ntp = "set the clock right and keep it so: timedatectl set-ntp true (or install chrony)";
    if off <= WARN_SKEW {
        Finding::ok(
            Check::Clock,
            "clock",
            format!(
                "within {WARN_SKEW}s of the Date header of {} (off by {off}s)",
                s.source
            ),
        )
    } else if off > limit {
        Finding::new(
            Level::Fail,
            Check::Clock,
            "clock",
            format!(
                "{off}s {way} the Date header of {}: clients' fake-TLS timestamps look {off}s {clients_look}, \
                 beyond {option} {limit}s, so they are sent to the cover site",
                s.source
            ),
        )
        .fix(ntp)
    } else {
        Finding::new(
            Level::Warn,
            Check::Clock,
            "clock",
            format!(
                "{off}s {way} the Date header of {}: still inside {option} {limit}s",
                s.source
            ),
        )
        .fix(ntp)
    }
}

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
pub fn parse_http_date(text: &str) -> Option<u64> {
    let mut it = text.split_whitespace();
    let _weekday = it.next()?;
    let day: u32 = it.next()?.parse().ok()?;
    let month = it.next()?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as u32 + 1;
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if it.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

/// Formats Unix seconds as an IMF-fixdate HTTP date.
pub fn format_http_date(unix: u64) -> String {
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

    #[test]
    fn http_dates_round_trip() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t, 784_111_777);
        assert_eq!(format_http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(format_http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        for unix in [951_782_400, 1_709_164_800, 4_102_444_799, 1_790_000_123] {
            assert_eq!(parse_http_date(&format_http_date(unix)), Some(unix));
        }
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date(""), None);
    }

    fn sample(skew: i64) -> DateSample {
        let local = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        DateSample {
            source: "cover".into(),
            date: (1_800_000_000 - skew) as u64,
            local,
        }
    }

    #[test]
    fn skew_is_judged_against_the_window_it_eats_into() {
        assert_eq!(judge(Some(&sample(2)), 600, 60).level, Level::Ok);
        assert_eq!(judge(Some(&sample(-30)), 600, 60).level, Level::Warn);
        // Our clock behind: clients look in the future; the window there is small.
        assert_eq!(judge(Some(&sample(-90)), 600, 60).level, Level::Fail);
        assert_eq!(judge(Some(&sample(90)), 600, 60).level, Level::Warn);
        let f = judge(Some(&sample(3600)), 600, 60);
        assert_eq!(f.level, Level::Fail);
        assert!(f.found.contains("3600s ahead"), "{f}");
        assert_eq!(judge(None, 600, 60).level, Level::Warn);
    }
}
