//! Durations as Kubernetes and Go write them (`time.ParseDuration`), within Go's range, and
//! instants past them that never overflow the clock. Every duration the product reads (flags,
//! the policy, a credential provider's answer) goes through here.

use std::time::{Duration, Instant};

/// Go's longest duration: `1<<63 - 1` nanoseconds, about 292 years.
pub const MAX: Duration = Duration::from_nanos(i64::MAX as u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}` is not a duration (500ms, 1s, 2m, 1h30m)")]
    Invalid(String),
    #[error("`{0}` is negative")]
    Negative(String),
    #[error("`{0}` is longer than the longest duration, 2562047h47m16s (about 292 years)")]
    OutOfRange(String),
}

/// A duration as Go's `time.ParseDuration` reads it: `0`, or numbers with units (`ns`, `us`,
/// `µs`, `ms`, `s`, `m`, `h`), fractions allowed (`1.5h`), several joined (`1h30m`). Negative
/// ones are refused: nothing here can wait less than no time.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(s.to_owned());
    let out_of_range = || DurationError::OutOfRange(s.to_owned());
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let whole_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, after) = rest.split_at(whole_len);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                f.split_at(n)
            }
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(invalid()),
        };
        // Digits past what fits are out of range anyway; u128 holds 38 of them.
        if whole.len() > 30 {
            return Err(out_of_range());
        }
        let whole: u128 = match whole {
            "" => 0,
            w => w.parse().map_err(|_| invalid())?,
        };
        let mut part = whole.checked_mul(nanos_per).ok_or_else(out_of_range)?;
        // The fraction as Go adds it: its digits while they fit, scaled in floating point.
        let (mut f, mut scale) = (0u64, 1f64);
        for digit in fraction.bytes() {
            if f > (i64::MAX as u64) / 10 {
                break;
            }
            f = f * 10 + u64::from(digit - b'0');
            scale *= 10.0;
        }
        if f > 0 {
            part += (f as f64 * (nanos_per as f64 / scale)) as u128;
        }
        total = total.checked_add(part).ok_or_else(out_of_range)?;
        if total > MAX.as_nanos() {
            return Err(out_of_range());
        }
        rest = after;
    }
    if negative && total > 0 {
        return Err(DurationError::Negative(s.to_owned()));
    }
    let nanos = u64::try_from(total).map_err(|_| out_of_range())?;
    Ok(Duration::from_nanos(nanos))
}

/// `now + d`, or as far as the clock goes when that is past it: a duration in range never
/// makes a deadline panic.
pub fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(MAX))
        .or_else(|| now.checked_add(Duration::from_secs(86_400 * 365)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_go_parses_them() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        for (text, want) in [
            ("0", Ok(Duration::ZERO)),
            ("+0", Ok(Duration::ZERO)),
            ("-0", Ok(Duration::ZERO)),
            ("0s", Ok(Duration::ZERO)),
            ("5s", Ok(s(5))),
            ("30s", Ok(s(30))),
            ("1478s", Ok(s(1478))),
            ("+5s", Ok(s(5))),
            ("5.0s", Ok(s(5))),
            ("5.6s", Ok(ms(5600))),
            ("5.s", Ok(s(5))),
            (".5s", Ok(ms(500))),
            ("1.004s", Ok(ms(1004))),
            ("100.00100s", Ok(ms(100_001))),
            ("10ns", Ok(Duration::from_nanos(10))),
            ("11us", Ok(Duration::from_micros(11))),
            ("12µs", Ok(Duration::from_micros(12))),
            ("12μs", Ok(Duration::from_micros(12))),
            ("13ms", Ok(ms(13))),
            ("14s", Ok(s(14))),
            ("15m", Ok(s(900))),
            ("16h", Ok(s(16 * 3600))),
            ("3h30m", Ok(s(3 * 3600 + 1800))),
            ("10.5s4m", Ok(s(250) + ms(500))),
            (
                "1h1m1s1ms1us1ns",
                Ok(s(3661) + Duration::from_nanos(1_001_001)),
            ),
            ("39h9m14.425s", Ok(s(39 * 3600 + 9 * 60 + 14) + ms(425))),
            ("52763797000ns", Ok(Duration::from_nanos(52_763_797_000))),
            ("0.3333333333333333333h", Ok(s(20 * 60))),
            (
                "9007199254740993ns",
                Ok(Duration::from_nanos(9_007_199_254_740_993)),
            ),
            ("9223372036854775807ns", Ok(MAX)),
            ("2562047h47m16.854775807s", Ok(MAX)),
        ] {
            assert_eq!(parse(text), want, "{text}");
        }
        for bad in [
            "", "3", "-", "s", ".", "-.", ".s", "+.s", "1d", "1.5x", "1h-1m",
        ] {
            assert_eq!(parse(bad), Err(DurationError::Invalid(bad.into())), "{bad}");
        }
        for far in [
            "9223372036854775808ns",
            "2562047h47m16.854775808s",
            "15000000000000000000s",
            "99999999999999999999999999999999999999999999h",
            "9223372036854775807ns1ns",
        ] {
            assert_eq!(
                parse(far),
                Err(DurationError::OutOfRange(far.into())),
                "{far}"
            );
        }
        assert_eq!(parse("-5s"), Err(DurationError::Negative("-5s".into())));
    }

    #[test]
    fn instants_past_any_duration_do_not_overflow() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert!(after(now, MAX) > now);
        assert!(after(now, Duration::MAX) > now);
    }
}
