//! Human units on the command line: durations (`90s`, `15m`, `12h`, `30d`) and sizes (`64MiB`).

use std::time::Duration;

/// Splits `123unit` into the number and the unit.
fn split_number<'a>(s: &'a str, what: &str) -> Result<(u64, &'a str), String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n = num.parse().map_err(|_| format!("{s:?} is not {what}"))?;
    Ok((n, unit))
}

/// Parses `N` with a unit, `ms`, `s`, `m`, `h` or `d` (a bare number is refused:
/// `--ttl 30` could mean seconds or days), and not zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = split_number(s, "a duration like 90s, 15m, 12h or 30d")?;
    let millis: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(format!("{s:?} needs a unit: {s}s, {s}m, {s}h or {s}d")),
        _ => return Err(format!("unknown unit {unit:?}: use ms, s, m, h or d")),
    };
    if n == 0 {
        return Err(format!("{s:?} is zero: give a duration above zero"));
    }
    n.checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Parses `N[B|KiB|MiB|GiB|KB|MB|GB]` (plain `N` is bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (n, unit) = split_number(s, "a size like 4096, 64KiB, 100MiB or 2GiB")?;
    let mul: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "unknown size unit {unit:?}: use B, KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64KiB").unwrap(), 65_536);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1MB").unwrap(), 1_000_000);
        assert!(parse_size("1TiB").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("90").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert!(parse_duration("3w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
