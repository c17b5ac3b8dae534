//! Exact money: decimal text <-> integer cents. Pure functions, no I/O.
//!
//! Prices are kept in integer cents end to end so totals never depend on order,
//! partitioning or replay. A price that cannot be written in whole cents (`1.005`) is
//! rejected rather than rounded: silently changing money is worse than dead-lettering one
//! row, and the REES46 data never has more than two decimals. Extra zeros (`1.500`) and
//! exponents (`1.5e2`) are fine because the value is still exact cents.

/// Largest accepted price in cents: what a Decimal(18,2) column can hold.
pub const MAX_PRICE_CENTS: i64 = 999_999_999_999_999_999;

/// Why a price text is not an acceptable price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceError {
    Negative,
    NotANumber,
    Infinite,
    /// More than two significant decimal places.
    TooPrecise,
    /// Above [`MAX_PRICE_CENTS`].
    OutOfRange,
    /// Not a decimal number at all.
    Malformed,
}

impl PriceError {
    pub fn describe(self) -> &'static str {
        match self {
            PriceError::Negative => "price is negative",
            PriceError::NotANumber => "price is not a number",
            PriceError::Infinite => "price is infinite",
            PriceError::TooPrecise => "price has more than 2 decimal places (not exact cents)",
            PriceError::OutOfRange => "price is larger than 9999999999999999.99",
            PriceError::Malformed => "price is not a decimal number",
        }
    }
}

/// Parses a non-negative decimal price (`35.79`, `7`, `.5`, `1.500`, `1.5e2`) into cents.
/// Leading and trailing ASCII spaces are ignored.
pub fn parse_price_cents(text: &[u8]) -> Result<i64, PriceError> {
    let text = text.trim_ascii();
    let (negative, body) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if body.eq_ignore_ascii_case(b"nan") {
        return Err(PriceError::NotANumber);
    }
    if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
        return Err(if negative {
            PriceError::Negative
        } else {
            PriceError::Infinite
        });
    }
    let cents = parse_unsigned_cents(body)?;
    if negative && cents != 0 {
        return Err(PriceError::Negative);
    }
    Ok(cents)
}

fn parse_unsigned_cents(body: &[u8]) -> Result<i64, PriceError> {
    let (mantissa, exponent) = match body.iter().position(|&b| b == b'e' || b == b'E') {
        Some(at) => (&body[..at], parse_exponent(&body[at + 1..])?),
        None => (body, 0i64),
    };
    let (int_part, frac_part) = match mantissa.iter().position(|&b| b == b'.') {
        Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
        None => (mantissa, &[][..]),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(PriceError::Malformed);
    }
    if !int_part.iter().chain(frac_part).all(u8::is_ascii_digit) {
        return Err(PriceError::Malformed);
    }
    // Digit i of int_part ++ frac_part is worth 10^(weight(i)) cents.
    let digit_at = |i: usize| {
        if i < int_part.len() {
            int_part[i]
        } else {
            frac_part[i - int_part.len()]
        }
    };
    let total = int_part.len() + frac_part.len();
    let weight = |i: usize| int_part.len() as i64 - 1 - i as i64 + exponent + 2;
    let Some(first) = (0..total).find(|&i| digit_at(i) != b'0') else {
        return Ok(0);
    };
    let last = (0..total)
        .rev()
        .find(|&i| digit_at(i) != b'0')
        .unwrap_or(first);
    if weight(last) < 0 {
        return Err(PriceError::TooPrecise);
    }
    if weight(first) > 17 {
        return Err(PriceError::OutOfRange);
    }
    let mut cents: i64 = 0;
    for i in first..=last {
        cents = cents * 10 + i64::from(digit_at(i) - b'0');
    }
    for _ in 0..weight(last) {
        cents *= 10;
    }
    Ok(cents)
}

fn parse_exponent(text: &[u8]) -> Result<i64, PriceError> {
    let (negative, digits) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 4 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(PriceError::Malformed);
    }
    let value = digits
        .iter()
        .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'));
    Ok(if negative { -value } else { value })
}

/// `123.45` for 12345 cents; `-0.05` for -5.
pub fn format_cents(cents: i128) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// `numerator / denominator` in cents, rounded half away from zero (the usual commercial
/// rounding, and DuckDB's `ROUND`); 0 when the denominator is 0.
pub fn divide_cents_rounded(numerator: i128, denominator: u64) -> i128 {
    if denominator == 0 {
        return 0;
    }
    let d = i128::from(denominator);
    let q = numerator / d;
    let r = numerator % d;
    if 2 * r.abs() >= d {
        q + numerator.signum()
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_prices() {
        assert_eq!(parse_price_cents(b"35.79"), Ok(3579));
        assert_eq!(parse_price_cents(b"7"), Ok(700));
        assert_eq!(parse_price_cents(b"7."), Ok(700));
        assert_eq!(parse_price_cents(b".5"), Ok(50));
        assert_eq!(parse_price_cents(b"0"), Ok(0));
        assert_eq!(parse_price_cents(b"0.00"), Ok(0));
        assert_eq!(parse_price_cents(b"-0.00"), Ok(0));
        assert_eq!(parse_price_cents(b"+1.01"), Ok(101));
        assert_eq!(parse_price_cents(b" 2.10 "), Ok(210));
        assert_eq!(parse_price_cents(b"000123.40"), Ok(12340));
    }

    #[test]
    fn extra_zero_decimals_and_exponents_are_exact() {
        assert_eq!(parse_price_cents(b"1.500"), Ok(150));
        assert_eq!(parse_price_cents(b"1.5e2"), Ok(15000));
        assert_eq!(parse_price_cents(b"125E-2"), Ok(125));
        assert_eq!(parse_price_cents(b"1.23e1"), Ok(1230));
    }

    #[test]
    fn rejections() {
        assert_eq!(parse_price_cents(b"-1.00"), Err(PriceError::Negative));
        assert_eq!(parse_price_cents(b"-inf"), Err(PriceError::Negative));
        assert_eq!(parse_price_cents(b"NaN"), Err(PriceError::NotANumber));
        assert_eq!(parse_price_cents(b"inf"), Err(PriceError::Infinite));
        assert_eq!(parse_price_cents(b"Infinity"), Err(PriceError::Infinite));
        assert_eq!(parse_price_cents(b"1.005"), Err(PriceError::TooPrecise));
        assert_eq!(parse_price_cents(b"1e-3"), Err(PriceError::TooPrecise));
        assert_eq!(
            parse_price_cents(b"10000000000000000.00"),
            Err(PriceError::OutOfRange)
        );
        assert_eq!(
            parse_price_cents(b"9999999999999999.99"),
            Ok(MAX_PRICE_CENTS)
        );
        for bad in [
            &b"abc"[..],
            b"1.2.3",
            b"",
            b".",
            b"1e",
            b"1,5",
            b"$3",
            b"1e99999",
        ] {
            assert_eq!(
                parse_price_cents(bad),
                Err(PriceError::Malformed),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(format_cents(3579), "35.79");
        assert_eq!(format_cents(5), "0.05");
        assert_eq!(format_cents(-5), "-0.05");
        assert_eq!(format_cents(0), "0.00");
    }

    #[test]
    fn rounded_division() {
        assert_eq!(divide_cents_rounded(1000, 3), 333);
        assert_eq!(divide_cents_rounded(2000, 3), 667);
        assert_eq!(divide_cents_rounded(5, 2), 3);
        assert_eq!(divide_cents_rounded(3, 2), 2);
        assert_eq!(divide_cents_rounded(7, 0), 0);
    }
}
