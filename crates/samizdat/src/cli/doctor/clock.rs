//! The clock check: this machine's time against the cover site's `Date:`
//! header. Fake-TLS clients put their time in the hello (spec §4.2), and a
//! hello outside `--max-clock-behind`/`--max-clock-ahead` of our clock goes
//! to the cover site, so a wrong clock here locks every user out.

use super::{Check, Finding, Level};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// HTTP dates live in `wire::http1::date`; these names stay for `doctor`
/// and its tests.
pub use wire::http1::date::{format as format_http_date, parse as parse_http_date};

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

#[cfg(test)]
mod tests {
    use super::*;

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
