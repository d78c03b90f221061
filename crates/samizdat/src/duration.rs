//! Human durations on the command line: `250ms`, `10s`, `5m`, `2h`, `1d`.

use std::time::Duration;

/// Parses a duration with a unit suffix; a bare number means seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; write e.g. 250ms, 10s, 5m, 2h"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use ms, s, m, h or d"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn units() {
        assert_eq!(super::parse("250ms").unwrap().as_millis(), 250);
        assert_eq!(super::parse("10").unwrap().as_secs(), 10);
        assert_eq!(super::parse("5m").unwrap().as_secs(), 300);
        assert!(super::parse("5 parsecs").is_err());
        assert!(super::parse("").is_err());
    }
}
