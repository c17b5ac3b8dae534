//! UTC timestamps as epoch microseconds: parsing the two input forms and formatting.
//! Pure functions, no I/O, no time zone database.
//!
//! The hot path (`YYYY-MM-DD HH:MM:SS UTC`, the REES46 form) is parsed by hand; RFC 3339
//! with an offset goes through chrono. Sub-microsecond digits are truncated.

/// Microseconds in one day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;
const MICROS_PER_SECOND: i64 = 1_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day number since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The UTC day number (days since 1970-01-01) of a timestamp.
pub fn utc_day(micros: i64) -> i32 {
    // Event times are bounded to years 1..=9999 by the parser, so this always fits.
    micros.div_euclid(MICROS_PER_DAY) as i32
}

/// `YYYY-MM-DD` of a day number.
pub fn format_day(day: i32) -> String {
    let (y, m, d) = civil_from_days(i64::from(day));
    format!("{y:04}-{m:02}-{d:02}")
}

fn digits<const N: usize>(bytes: &[u8]) -> Option<u32> {
    if bytes.len() != N {
        return None;
    }
    let mut value = 0u32;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(b - b'0');
    }
    Some(value)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Micros of a validated civil date-time, or `None` when a component is out of range.
fn micros_of(year: u32, month: u32, day: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    let year = i64::from(year);
    if year == 0 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s);
    Some(secs * MICROS_PER_SECOND)
}

/// `YYYY-MM-DD HH:MM:SS UTC` (exactly; the REES46 form).
fn parse_rees46(b: &[u8]) -> Option<i64> {
    parse_date_and_clock(b.strip_suffix(b" UTC")?, b' ')
}

/// `YYYY-MM-DD<separator>HH:MM:SS` (exactly), the first 19 bytes both hand-parsed forms
/// share.
fn parse_date_and_clock(b: &[u8], separator: u8) -> Option<i64> {
    if b.len() != 19 {
        return None;
    }
    if b[4] != b'-' || b[7] != b'-' || b[10] != separator || b[13] != b':' || b[16] != b':' {
        return None;
    }
    micros_of(
        digits::<4>(&b[0..4])?,
        digits::<2>(&b[5..7])?,
        digits::<2>(&b[8..10])?,
        digits::<2>(&b[11..13])?,
        digits::<2>(&b[14..16])?,
        digits::<2>(&b[17..19])?,
    )
}

/// Parses an event time: `YYYY-MM-DD HH:MM:SS UTC` or RFC 3339 (any offset, converted to
/// UTC). Returns epoch microseconds, or `None` when the text is neither form.
pub fn parse_event_time(text: &[u8]) -> Option<i64> {
    if let Some(micros) = parse_rees46(text).or_else(|| parse_rfc3339_whole_utc(text)) {
        return Some(micros);
    }
    let text = std::str::from_utf8(text).ok()?;
    let parsed = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    let utc = parsed.with_timezone(&chrono::Utc);
    use chrono::Datelike;
    if !(1..=9999).contains(&utc.year()) {
        return None;
    }
    Some(utc.timestamp_micros())
}

/// `YYYY-MM-DDTHH:MM:SSZ` (exactly): the RFC 3339 form the runtime writes into Kafka
/// messages, parsed by hand on the process role's hot path. Anything else, including a
/// leap second, is left to chrono.
fn parse_rfc3339_whole_utc(b: &[u8]) -> Option<i64> {
    parse_date_and_clock(b.strip_suffix(b"Z")?, b'T')
}

/// `YYYY-MM-DD HH:MM:SS UTC`, the REES46 form (sub-second part dropped: the generator
/// only produces whole seconds).
pub fn format_rees46(micros: i64, out: &mut Vec<u8>) {
    let (date, secs) = split(micros);
    push_date(date, out);
    out.push(b' ');
    push_clock(secs, out);
    out.extend_from_slice(b" UTC");
}

/// RFC 3339 in UTC with a `Z`: `2019-10-01T00:00:00Z`, or with six fractional digits when
/// the time is not a whole second.
pub fn format_rfc3339(micros: i64, out: &mut Vec<u8>) {
    let (date, secs) = split(micros);
    push_date(date, out);
    out.push(b'T');
    push_clock(secs, out);
    let frac = micros.rem_euclid(MICROS_PER_SECOND);
    if frac != 0 {
        out.push(b'.');
        push_padded(frac as u32, 6, out);
    }
    out.push(b'Z');
}

/// RFC 3339 text of a timestamp.
pub fn rfc3339_string(micros: i64) -> String {
    let mut out = Vec::with_capacity(27);
    format_rfc3339(micros, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

fn split(micros: i64) -> (i64, i64) {
    let secs = micros.div_euclid(MICROS_PER_SECOND);
    (secs.div_euclid(86_400), secs.rem_euclid(86_400))
}

fn push_date(days: i64, out: &mut Vec<u8>) {
    let (y, m, d) = civil_from_days(days);
    push_padded(y.clamp(0, 9999) as u32, 4, out);
    out.push(b'-');
    push_padded(m, 2, out);
    out.push(b'-');
    push_padded(d, 2, out);
}

fn push_clock(secs_of_day: i64, out: &mut Vec<u8>) {
    let s = secs_of_day as u32;
    push_padded(s / 3600, 2, out);
    out.push(b':');
    push_padded(s / 60 % 60, 2, out);
    out.push(b':');
    push_padded(s % 60, 2, out);
}

fn push_padded(value: u32, width: usize, out: &mut Vec<u8>) {
    let mut buf = [b'0'; 10];
    let mut v = value;
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCT1_2019: i64 = 1_569_888_000_000_000;

    #[test]
    fn rees46_form() {
        assert_eq!(
            parse_event_time(b"2019-10-01 00:00:00 UTC"),
            Some(OCT1_2019)
        );
        assert_eq!(
            parse_event_time(b"2019-10-01 01:02:03 UTC"),
            Some(OCT1_2019 + 3_723_000_000)
        );
    }

    #[test]
    fn whole_second_utc_form_agrees_with_chrono() {
        // Every day of years 1, 1969-1972 (a leap year and the epoch) and 9999, at a few
        // clock times, plus out-of-range fields the hand parser must leave to chrono.
        let mut checked = 0;
        for year in [1, 1969, 1970, 1971, 1972, 2000, 2100, 9999] {
            for day in 0..366 {
                for clock in ["00:00:00", "12:34:56", "23:59:59"] {
                    let date = chrono::NaiveDate::from_yo_opt(year, day + 1);
                    let Some(date) = date else { continue };
                    let text = format!("{}T{clock}Z", date.format("%Y-%m-%d"));
                    let expected = chrono::DateTime::parse_from_rfc3339(&text)
                        .map(|t| t.timestamp_micros())
                        .ok();
                    assert_eq!(parse_rfc3339_whole_utc(text.as_bytes()), expected, "{text}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 3 * (366 * 2 + 365 * 6));
        for declined in [
            &b"2019-02-29T00:00:00Z"[..],
            b"2019-10-01T24:00:00Z",
            b"2019-10-01T23:59:60Z",
            b"0000-10-01T00:00:00Z",
            b"2019-10-01t00:00:00Z",
            b"2019-10-01T00:00:00z",
            b"2019-10-01T00:00:00+00:00",
        ] {
            assert_eq!(parse_rfc3339_whole_utc(declined), None);
        }
    }

    #[test]
    fn rfc3339_forms_convert_to_utc() {
        assert_eq!(parse_event_time(b"2019-10-01T00:00:00Z"), Some(OCT1_2019));
        assert_eq!(
            parse_event_time(b"2019-10-01T02:00:00+02:00"),
            Some(OCT1_2019)
        );
        assert_eq!(
            parse_event_time(b"2019-10-01T00:00:00.5Z"),
            Some(OCT1_2019 + 500_000)
        );
    }

    #[test]
    fn malformed_times() {
        for bad in [
            &b""[..],
            b"2019-10-01",
            b"2019-13-01 00:00:00 UTC",
            b"2019-02-30 00:00:00 UTC",
            b"2019-10-01 24:00:00 UTC",
            b"2019-10-01 00:00:00 CET",
            b"yesterday",
        ] {
            assert_eq!(
                parse_event_time(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn leap_day() {
        assert_eq!(
            parse_event_time(b"2020-02-29 00:00:00 UTC"),
            Some(1_582_934_400_000_000)
        );
    }

    #[test]
    fn formatting_round_trips() {
        let mut out = Vec::new();
        format_rees46(OCT1_2019 + 3_723_000_000, &mut out);
        assert_eq!(out, b"2019-10-01 01:02:03 UTC");
        assert_eq!(rfc3339_string(OCT1_2019), "2019-10-01T00:00:00Z");
        assert_eq!(rfc3339_string(OCT1_2019 + 7), "2019-10-01T00:00:00.000007Z");
        assert_eq!(format_day(utc_day(OCT1_2019 - 1)), "2019-09-30");
    }

    #[test]
    fn civil_conversion_is_inverse() {
        for day in -800_000..800_000i64 {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }
}
