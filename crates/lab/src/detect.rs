//! The pure detectors the techniques use, from `wire::censor` (sans-io,
//! deterministic). Gathered here so the techniques name one place.

pub use wire::censor::fet::{classify_first_payload, FetVerdict};
pub use wire::censor::ja::{ja3, ja4};
pub use wire::censor::protocol::{looks_like, Looks};
