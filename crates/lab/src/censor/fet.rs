//! The Great Firewall's "fully encrypted traffic" detector, as inferred by
//! Wu, Zohaib, Durumeric, Houmansadr and Wustrow, *How the Great Firewall of
//! China Detects and Blocks Fully Encrypted Traffic*, USENIX Security 2023,
//! §4 (the five exemptions and their summary, Algorithm 1).
//!
//! The GFW looks at the first data-carrying packet a client sends on a TCP
//! connection and blocks the connection if *none* of five exemptions
//! applies. The rules are evaluated here in the paper's order Ex1…Ex5 and the
//! first that fires is reported; for the verdict the order does not matter.
//!
//! Not modelled: the paper's observation that only ~26% of matching
//! connections are actually blocked (a sampling decision the lab makes with
//! its own randomness), the 180-second residual block of the server's
//! (client IP, server IP, port) triple, and the IP-range targeting.
//!
//! Boundaries. The paper states the thresholds as "≤ 3.4 or ≥ 4.6" bits per
//! byte (Ex1), "the first six (or more) bytes" (Ex2), "more than 50%" (Ex3)
//! and "more than 20 contiguous" bytes (Ex4). The paper text could not be
//! re-read while writing this module; these are the forms quoted by the
//! independent reimplementations we checked, and we use them as written:
//! Ex1 non-strict (exactly 3.4 or exactly 4.6 is exempt), Ex2 on exactly the
//! first six bytes (shorter payloads cannot meet it), Ex3 and Ex4 strict
//! (exactly 50% or exactly 20 contiguous bytes is *not* exempt). Ex1 is
//! computed in integers (`10 × popcount` against `34 × len`), so "exactly
//! 3.4" has no floating-point slack. The subsection numbers in the comments
//! below (§4.1 entropy, §4.2 printable characters, §4.3 protocols) are from
//! memory of the paper's layout, not re-checked; the rules are §4 throughout.

use super::starts_with_http_method;

/// What the GFW does with a connection whose first payload this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FetVerdict {
    /// Let through: at least one exemption applies (the first is named).
    Exempt(Exemption),
    /// Treated as fully encrypted traffic.
    Block,
}

/// The five exemptions of Wu et al. §4 (Ex1 split by direction, Ex5 by
/// protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exemption {
    /// Ex1: average set bits per byte ≤ 3.4 (too few ones to look random).
    Ex1PopcountLow,
    /// Ex1: average set bits per byte ≥ 4.6 (too many ones to look random).
    Ex1PopcountHigh,
    /// Ex2: the first six bytes are all printable ASCII (0x20..=0x7e).
    Ex2FirstSixPrintable,
    /// Ex3: more than half of the bytes are printable ASCII.
    Ex3HalfPrintable,
    /// Ex4: more than 20 contiguous printable ASCII bytes somewhere.
    Ex4TwentyContiguousPrintable,
    /// Ex5: starts like a TLS record: `16`–`17`, `03`, `00`–`03`.
    Ex5Tls,
    /// Ex5: starts with an HTTP request method and a space.
    Ex5Http,
}

/// Ex1 lower bound, in tenths of a set bit per byte (3.4).
const POPCOUNT_LOW_TENTHS: usize = 34;
/// Ex1 upper bound, in tenths of a set bit per byte (4.6).
const POPCOUNT_HIGH_TENTHS: usize = 46;
/// Ex2: how many leading bytes must be printable.
const FIRST_PRINTABLE: usize = 6;
/// Ex4: a printable run must be *longer* than this.
const CONTIGUOUS_PRINTABLE: usize = 20;

fn printable(b: u8) -> bool {
    (0x20..=0x7e).contains(&b)
}

/// Applies Ex1–Ex5 to the first payload a client sent.
///
/// An empty payload has an average popcount of 0 by convention and is
/// exempt under Ex1 (the GFW only acts on packets that carry data).
pub fn classify_first_payload(payload: &[u8]) -> FetVerdict {
    match first_exemption(payload) {
        Some(e) => FetVerdict::Exempt(e),
        None => FetVerdict::Block,
    }
}

fn first_exemption(payload: &[u8]) -> Option<Exemption> {
    let len = payload.len();
    // Ex1 (§4.1): popcount / len ≤ 3.4 or ≥ 4.6.
    let ones: usize = payload.iter().map(|b| b.count_ones() as usize).sum();
    if ones * 10 <= POPCOUNT_LOW_TENTHS * len {
        return Some(Exemption::Ex1PopcountLow);
    }
    if ones * 10 >= POPCOUNT_HIGH_TENTHS * len {
        return Some(Exemption::Ex1PopcountHigh);
    }
    // Ex2 (§4.2): the first six bytes are printable.
    if len >= FIRST_PRINTABLE && payload[..FIRST_PRINTABLE].iter().all(|&b| printable(b)) {
        return Some(Exemption::Ex2FirstSixPrintable);
    }
    // Ex3 (§4.2): more than 50% printable.
    let count = payload.iter().filter(|&&b| printable(b)).count();
    if count * 2 > len {
        return Some(Exemption::Ex3HalfPrintable);
    }
    // Ex4 (§4.2): more than 20 contiguous printable bytes.
    if longest_printable_run(payload) > CONTIGUOUS_PRINTABLE {
        return Some(Exemption::Ex4TwentyContiguousPrintable);
    }
    // Ex5 (§4.3): TLS or HTTP by their first bytes.
    if let [0x16..=0x17, 0x03, 0x00..=0x03, ..] = payload {
        return Some(Exemption::Ex5Tls);
    }
    if starts_with_http_method(payload) {
        return Some(Exemption::Ex5Http);
    }
    None
}

fn longest_printable_run(payload: &[u8]) -> usize {
    let (mut best, mut run) = (0, 0);
    for &b in payload {
        run = if printable(b) { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}
