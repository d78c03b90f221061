//! Technique 4: TLS fingerprinting, JA3/JA4 of the ClientHello against a
//! blocklist.

use crate::detect::{ja3, ja4};
use crate::{Flow, Technique, Verdict};
use wire::faketls::client_hello::{self, Probe};

/// JA4 of the official Telegram apps' ClientHello. TDLib copies Chrome's
/// hello, so this is also Chrome 143's JA4 (`wire`'s tests rebuild that
/// hello): a censor that blocks it blocks Chrome too. samizdat's own
/// `PostQuantum` hello differs (`t13d1515h2_…`, one extension fewer).
pub const TELEGRAM_APPS_JA4: &str = "t13d1516h2_8daaf6152771_d8a2da3f94cd";

/// Acts on TLS flows whose ClientHello's JA3 or JA4 is listed.
#[derive(Debug, Clone)]
pub struct Fingerprint {
    /// Blocked JA3 hashes (32 hex digits).
    pub ja3: Vec<String>,
    /// Blocked JA4 fingerprints.
    pub ja4: Vec<String>,
    /// What to do on a match.
    pub action: Verdict,
}

impl Fingerprint {
    /// Blocks these fingerprints with `action`.
    pub fn new(ja3: Vec<String>, ja4: Vec<String>, action: Verdict) -> Fingerprint {
        Fingerprint { ja3, ja4, action }
    }
    /// The shipped rule: the Telegram apps' JA4 ([`TELEGRAM_APPS_JA4`]).
    pub fn telegram_apps(action: Verdict) -> Fingerprint {
        Fingerprint::new(Vec::new(), vec![TELEGRAM_APPS_JA4.to_string()], action)
    }
}

impl Technique for Fingerprint {
    fn name(&self) -> &'static str {
        "fingerprint"
    }
    fn on_first_payload(&self, _flow: &Flow, data: &[u8]) -> Verdict {
        let Probe::Record { len } = client_hello::probe(data) else {
            return Verdict::Pass;
        };
        let Some(record) = data.get(..len) else {
            return Verdict::Pass;
        };
        let hit = (!self.ja4.is_empty() && ja4(record).is_some_and(|f| self.ja4.contains(&f)))
            || (!self.ja3.is_empty() && ja3(record).is_some_and(|f| self.ja3.contains(&f)));
        if hit {
            self.action
        } else {
            Verdict::Pass
        }
    }
}
