//! Value parsers for flags: sizes, bounded durations and bounded counts. Every duration flag
//! has a bound, so no deadline computed from one can overflow an `Instant`.

use std::time::Duration;

pub(super) fn parse_size_or_zero(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        Ok(0)
    } else {
        parse_size(s)
    }
}

/// Parses `1048576`, `512K`, `8M`, `1G` (binary units; an optional `iB`/`B` suffix is allowed).
pub(super) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        _ => (t, 0),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a size in bytes like 8M, 512K or 1048576".to_string())?;
    let v = n
        .checked_mul(1 << shift)
        .filter(|v| (1024..=(1u64 << 32)).contains(v))
        .ok_or_else(|| "expected a size from 1K to 4G".to_string())?;
    Ok(v)
}

/// Lower bound of a duration flag that must be greater than zero.
pub(super) const NONZERO: Duration = Duration::from_nanos(1);
pub(super) const MINUTE: Duration = Duration::from_secs(60);
pub(super) const HOUR: Duration = Duration::from_secs(3600);
pub(super) const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
/// Shortest `--interval`: below this the sampler's own lateness distorts every rate.
pub(super) const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Shortest `--probe-interval`.
pub(super) const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(1);
/// Longest emulated one-way delay (`--link-delay`, `--direct-delay`).
pub(super) const MAX_LINK_DELAY: Duration = Duration::from_secs(10);

/// The parser of a duration flag accepting `min..=max` (`NONZERO` as `min`: anything above 0s).
/// Every duration flag has a bound, so no deadline computed from one can overflow an `Instant`.
pub(super) fn duration_in(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let d = humantime::parse_duration(s)
            .map_err(|e| format!("expected a duration like 10s, 500ms or 1m ({e})"))?;
        if (min..=max).contains(&d) {
            return Ok(d);
        }
        let fmt = |d| humantime::format_duration(d).to_string();
        Err(if min == NONZERO {
            format!("expected a duration above 0s and at most {}", fmt(max))
        } else {
            format!("expected a duration from {} to {}", fmt(min), fmt(max))
        })
    }
}

/// Most relays `lab --relays` and `sweep --lab-relays` start: each is a node with its own
/// socket; 1024 of them carry `--routes 1024 --min-hops 2` (docs/PERFORMANCE.md).
pub(super) const MAX_LAB_RELAYS: usize = 1024;

/// The parser of a count flag accepting `0..=max` (a zero that makes no sense is refused with
/// its own message later, e.g. by `client::plan::plan`).
pub(super) fn count_at_most(
    max: usize,
    what: &'static str,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let n: usize = s
            .trim()
            .parse()
            .map_err(|_| format!("expected a number of {what} up to {max}"))?;
        if n > max {
            return Err(format!(
                "{n} {what} is above the limit of {max} (measured, see docs/PERFORMANCE.md)"
            ));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units_within_bounds() {
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        for bad in ["", "M", "8X", "-1", "1", "5G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
