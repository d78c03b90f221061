//! The pure detectors the techniques use, from [`crate::censor`] (sans-io,
//! deterministic). Gathered here so the techniques name one place.

pub use crate::censor::fet::{classify_first_payload, FetVerdict};
pub use crate::censor::ja::{ja3, ja4};
pub use crate::censor::protocol::{looks_like, Looks};
