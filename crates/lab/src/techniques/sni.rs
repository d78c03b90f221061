//! Technique 2: SNI filtering, blocking or throttling by server name.

use crate::{Flow, Technique, Verdict};

/// One server-name rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniRule {
    /// The name (compared in ASCII lowercase).
    pub pattern: String,
    /// `true`: the name itself or a subdomain of it (`twitter.com` matches
    /// `api.twitter.com`, not `nottwitter.com`). `false`: any SNI that
    /// *contains* the pattern, the mistake of March 2021 (`t.co` matched
    /// `microsoft.com` and `reddit.com`).
    pub exact: bool,
}

impl SniRule {
    /// A domain rule (`exact: true`).
    pub fn domain(pattern: &str) -> SniRule {
        SniRule {
            pattern: pattern.to_ascii_lowercase(),
            exact: true,
        }
    }
    /// A substring rule (`exact: false`).
    pub fn substring(pattern: &str) -> SniRule {
        SniRule {
            pattern: pattern.to_ascii_lowercase(),
            exact: false,
        }
    }
    /// Whether `sni` matches.
    pub fn matches(&self, sni: &str) -> bool {
        let sni = sni.to_ascii_lowercase();
        let p = self.pattern.as_str();
        if self.exact {
            sni == p || sni.strip_suffix(p).is_some_and(|head| head.ends_with('.'))
        } else {
            sni.contains(p)
        }
    }
}

/// Lowest and highest rate measured for Twitter in Russia, March 2021,
/// in bits per second.
pub const TWITTER_2021_BPS: (u64, u64) = (130_000, 150_000);

/// Acts on TLS flows whose ClientHello names a matching server.
#[derive(Debug, Clone)]
pub struct SniFilter {
    /// The rules; any match acts.
    pub rules: Vec<SniRule>,
    /// What to do on a match: [`Verdict::Reset`], [`Verdict::Drop`] or
    /// [`Verdict::Throttle`].
    pub action: Verdict,
}

impl SniFilter {
    /// Blocks matching names with `action`.
    pub fn block(rules: Vec<SniRule>, action: Verdict) -> SniFilter {
        SniFilter { rules, action }
    }
    /// Throttles matching names to `bits_per_sec`.
    pub fn throttle(rules: Vec<SniRule>, bits_per_sec: u64) -> SniFilter {
        SniFilter {
            rules,
            action: Verdict::Throttle {
                bytes_per_sec: bits_per_sec / 8,
            },
        }
    }
    /// Russia, 10 March 2021: Twitter's names throttled to 130 kbit/s,
    /// with the substring rule `t.co` that also slowed every name
    /// containing it.
    pub fn twitter_2021() -> SniFilter {
        SniFilter::throttle(
            vec![
                SniRule::substring("t.co"),
                SniRule::domain("twitter.com"),
                SniRule::domain("twimg.com"),
            ],
            TWITTER_2021_BPS.0,
        )
    }
}

impl Technique for SniFilter {
    fn name(&self) -> &'static str {
        "sni"
    }
    fn on_first_payload(&self, flow: &Flow, _data: &[u8]) -> Verdict {
        match &flow.sni {
            Some(sni) if self.rules.iter().any(|r| r.matches(sni)) => self.action,
            _ => Verdict::Pass,
        }
    }
}
