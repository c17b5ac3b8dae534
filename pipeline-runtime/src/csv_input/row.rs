//! The row rules of design brief §3: one record -> an [`Event`], or a [`Rejected`] with the
//! first failing field in REES46 order, its kind and the reason. Pure, no I/O.

use super::header::Columns;
use super::tokenizer::{Record, MAX_RECORD_BYTES};
use crate::event::{
    Event, EventType, RejectKind, Rejected, KAFKA_MESSAGE_MAX_BYTES, MAX_EVENT_JSON_BYTES,
};
use crate::money::{self, PriceError};
use crate::time;

/// Longest `category_code` or `brand`, in UTF-8 bytes. They become the `keyword` fields
/// `favorite_category` and `favorite_brand` of the search index
/// ([`crate::search::index_mapping`]), and Lucene refuses a term longer than 32,766 bytes
/// (`IndexWriter.MAX_TERM_LENGTH`): Elasticsearch and OpenSearch would reject the whole
/// profile document ("immense term") at checkpoint time. A longer value is rejected here,
/// with its row, instead. (`user_session` is not indexed, only counted by hash; the event
/// size limit, [`crate::event::MAX_EVENT_JSON_BYTES`], bounds it.)
pub const MAX_KEYWORD_BYTES: usize = 32_766;

/// Longest raw row a rejection carries (a longer one is cut and its reason says so), so a
/// dead-letter message always fits in a Kafka message: the JSON escaping of these bytes
/// takes at most 6 times as many, 384 KiB, far below
/// [`crate::event::KAFKA_MESSAGE_MAX_BYTES`].
pub const MAX_REJECTED_RAW_BYTES: usize = 64 * 1024;

/// The outcome of the record that starts at `line` of `source`: its [`Event`], or its
/// [`Rejected`] (the raw row cut to [`MAX_REJECTED_RAW_BYTES`]).
pub(super) fn outcome(
    source: &str,
    line: u64,
    record: &Record,
    columns: &Columns,
) -> std::result::Result<Event, Rejected> {
    let outcome = if record.oversized {
        Err(Problem {
            field: None,
            kind: RejectKind::Malformed,
            reason: format!("row is longer than {MAX_RECORD_BYTES} bytes"),
        })
    } else if record.unterminated {
        Err(Problem {
            field: None,
            kind: RejectKind::Malformed,
            reason: "a quoted field is not closed".to_string(),
        })
    } else {
        parse_record(record, columns)
    };
    outcome.map_err(|problem| {
        let raw = record.raw();
        let (raw, reason) = if raw.len() > MAX_REJECTED_RAW_BYTES {
            (
                &raw[..MAX_REJECTED_RAW_BYTES],
                format!(
                    "{} (raw row cut to its first {MAX_REJECTED_RAW_BYTES} bytes)",
                    problem.reason
                ),
            )
        } else {
            (raw, problem.reason)
        };
        Rejected {
            source: source.to_owned(),
            line,
            field: problem.field.map(str::to_owned),
            kind: problem.kind,
            reason,
            raw: String::from_utf8_lossy(raw).into_owned(),
        }
    })
}

/// Why a row is rejected, before the row context is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: Option<&'static str>,
    pub kind: RejectKind,
    pub reason: String,
}

fn problem(field: &'static str, kind: RejectKind, reason: String) -> Problem {
    Problem {
        field: Some(field),
        kind,
        reason,
    }
}

/// The value as shown in a reason: lossy UTF-8, at most 60 characters.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut shown: String = text.chars().take(60).collect();
    if text.chars().count() > 60 {
        shown.push('…');
    }
    format!("{shown:?}")
}

fn utf8<'a>(field: &'static str, bytes: &'a [u8]) -> std::result::Result<&'a str, Problem> {
    std::str::from_utf8(bytes).map_err(|e| {
        problem(
            field,
            RejectKind::InvalidUtf8,
            format!(
                "{field} is not valid UTF-8 (invalid byte at offset {}): {}",
                e.valid_up_to(),
                shown(bytes)
            ),
        )
    })
}

fn required<'a>(field: &'static str, bytes: &'a [u8]) -> std::result::Result<&'a [u8], Problem> {
    if bytes.trim_ascii().is_empty() {
        return Err(problem(
            field,
            RejectKind::MissingField,
            format!("{field} is empty"),
        ));
    }
    Ok(bytes)
}

/// Malformed, unless the real problem is that the bytes are not UTF-8.
fn malformed(field: &'static str, bytes: &[u8], what: &str) -> Problem {
    if let Err(p) = utf8(field, bytes) {
        return p;
    }
    problem(
        field,
        RejectKind::Malformed,
        format!("{field} {what}: {}", shown(bytes)),
    )
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    let digits = bytes.trim_ascii();
    let digits = digits.strip_prefix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

fn positive_id(field: &'static str, bytes: &[u8]) -> std::result::Result<u64, Problem> {
    match parse_u64(required(field, bytes)?) {
        Some(id) if id > 0 => Ok(id),
        _ => Err(malformed(
            field,
            bytes,
            "is not a positive integer below 2^64",
        )),
    }
}

fn optional_text(
    field: &'static str,
    record: &Record,
    column: Option<usize>,
) -> std::result::Result<Option<String>, Problem> {
    match column.map(|c| &record[c]) {
        None | Some(b"") => Ok(None),
        Some(bytes) => Ok(Some(utf8(field, bytes)?.to_owned())),
    }
}

/// An optional text that becomes a search `keyword`: at most [`MAX_KEYWORD_BYTES`].
fn optional_keyword(
    field: &'static str,
    record: &Record,
    column: Option<usize>,
) -> std::result::Result<Option<String>, Problem> {
    let text = optional_text(field, record, column)?;
    match text {
        Some(text) if text.len() > MAX_KEYWORD_BYTES => Err(problem(
            field,
            RejectKind::Malformed,
            format!(
                "{field} is {} bytes long, more than the {MAX_KEYWORD_BYTES} bytes a search keyword can hold (Lucene's term limit): {}",
                text.len(),
                shown(text.as_bytes())
            ),
        )),
        text => Ok(text),
    }
}

/// Bytes of an event's JSON form outside its three free texts, with room to spare (the
/// largest possible is under 300: field names, ids of 20 digits, time, price).
const EVENT_JSON_FIXED_BOUND: usize = 1024;

/// Refuses an event whose JSON form would not fit in a Kafka message
/// ([`crate::event::MAX_EVENT_JSON_BYTES`]). The exact size is computed only when the
/// texts are long enough for the bound to matter (escaping at most sextuples a byte).
fn check_event_size(event: &Event) -> std::result::Result<(), Problem> {
    let text_bytes = [&event.category_code, &event.brand, &event.user_session]
        .iter()
        .map(|t| t.as_ref().map_or(0, String::len))
        .sum::<usize>();
    if text_bytes * 6 + EVENT_JSON_FIXED_BOUND <= MAX_EVENT_JSON_BYTES {
        return Ok(());
    }
    let size = event.to_json().len();
    if size <= MAX_EVENT_JSON_BYTES {
        return Ok(());
    }
    Err(Problem {
        field: None,
        kind: RejectKind::Malformed,
        reason: format!(
            "the event's JSON form would be {size} bytes, more than the {MAX_EVENT_JSON_BYTES} a Kafka message can carry (librdkafka message.max.bytes {KAFKA_MESSAGE_MAX_BYTES}, less key and framing)"
        ),
    })
}

/// Validates one data row against the §3 rules. The first failing field, in the order of
/// the REES46 header, is reported.
pub fn parse_record(record: &Record, columns: &Columns) -> std::result::Result<Event, Problem> {
    if record.len() != columns.width {
        return Err(Problem {
            field: None,
            kind: RejectKind::FieldCount,
            reason: format!(
                "row has {} fields, the header has {}",
                record.len(),
                columns.width
            ),
        });
    }
    let time_bytes = required("event_time", &record[columns.event_time])?;
    let event_time = time::parse_event_time(time_bytes).ok_or_else(|| {
        malformed(
            "event_time",
            time_bytes,
            "is neither `YYYY-MM-DD HH:MM:SS UTC` nor RFC 3339",
        )
    })?;
    let type_bytes = required("event_type", &record[columns.event_type])?;
    let event_type = EventType::parse(type_bytes).ok_or_else(|| {
        let kind_problem = utf8("event_type", type_bytes).err();
        kind_problem.unwrap_or_else(|| {
            problem(
                "event_type",
                RejectKind::UnknownEventType,
                format!(
                    "event_type {} is not view, cart, remove_from_cart or purchase",
                    shown(type_bytes)
                ),
            )
        })
    })?;
    let product_id = positive_id("product_id", &record[columns.product_id])?;
    let category_id = match columns.category_id.map(|c| &record[c]) {
        None | Some(b"") => None,
        Some(bytes) => Some(
            parse_u64(bytes)
                .ok_or_else(|| malformed("category_id", bytes, "is not an integer below 2^64"))?,
        ),
    };
    let category_code = optional_keyword("category_code", record, columns.category_code)?;
    let brand = optional_keyword("brand", record, columns.brand)?;
    let price_bytes = required("price", &record[columns.price])?;
    let price_cents = money::parse_price_cents(price_bytes).map_err(|e| {
        let kind = match e {
            PriceError::Negative => RejectKind::NegativePrice,
            PriceError::NotANumber => RejectKind::PriceNotANumber,
            PriceError::Infinite => RejectKind::InfinitePrice,
            PriceError::TooPrecise | PriceError::OutOfRange | PriceError::Malformed => {
                RejectKind::Malformed
            }
        };
        if kind == RejectKind::Malformed {
            if let Err(p) = utf8("price", price_bytes) {
                return p;
            }
        }
        problem(
            "price",
            kind,
            format!("{}: {}", e.describe(), shown(price_bytes)),
        )
    })?;
    let user_id = positive_id("user_id", &record[columns.user_id])?;
    let user_session = optional_text("user_session", record, columns.user_session)?;
    let event = Event {
        event_time,
        event_type,
        product_id,
        category_id,
        category_code,
        brand,
        price_cents,
        user_id,
        user_session,
    };
    check_event_size(&event)?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csv_input::test_support::*;

    #[test]
    fn good_rees46_row() {
        let (accepted, rejected) = parse(format!("{HEADER}{GOOD}").as_bytes());
        assert!(rejected.is_empty());
        assert_eq!(
            accepted,
            vec![(
                2,
                Event {
                    event_time: 1_569_888_000_000_000,
                    event_type: EventType::View,
                    product_id: 44_600_062,
                    category_id: Some(2_103_807_459_595_387_724),
                    category_code: None,
                    brand: Some("shiseido".into()),
                    price_cents: 3579,
                    user_id: 541_312_140,
                    user_session: Some("72d76fde-8bb3-4e00-8c23-a032dfb62e92".into()),
                }
            )]
        );
    }

    #[test]
    fn invalid_utf8_in_an_ignored_column_is_not_a_rejection() {
        let mut text = b"user_id,event_type,product_id,price,timestamp,comment\n".to_vec();
        text.extend_from_slice(b"1,view,2,3.00,2019-10-05 12:00:00 UTC,\xFF\xFE\n");
        let (accepted, rejected) = parse(&text);
        assert_eq!((accepted.len(), rejected.len()), (1, 0));
    }

    #[test]
    fn field_count_differs_from_header() {
        assert_rejected(
            "2019-10-01 00:00:00 UTC,view,1,2,,b,1.00,5",
            None,
            RejectKind::FieldCount,
        );
        assert_rejected(
            "2019-10-01 00:00:00 UTC,view,1,2,,b,1.00,5,s,extra",
            None,
            RejectKind::FieldCount,
        );
    }

    #[test]
    fn required_fields_empty() {
        let cases = [
            (",view,1,2,,b,1.00,5,s", "event_time"),
            ("2019-10-01 00:00:00 UTC,,1,2,,b,1.00,5,s", "event_type"),
            ("2019-10-01 00:00:00 UTC,view,,2,,b,1.00,5,s", "product_id"),
            ("2019-10-01 00:00:00 UTC,view,1,2,,b,,5,s", "price"),
            ("2019-10-01 00:00:00 UTC,view,1,2,,b,1.00, ,s", "user_id"),
        ];
        for (row, field) in cases {
            assert_rejected(row, Some(field), RejectKind::MissingField);
            assert_eq!(reject(row).reason, format!("{field} is empty"));
        }
    }

    #[test]
    fn malformed_fields() {
        let cases = [
            ("2019-10-01,view,1,2,,b,1.00,5,s", "event_time"),
            ("2019-02-30 00:00:00 UTC,view,1,2,,b,1.00,5,s", "event_time"),
            (
                "2019-10-01 00:00:00 UTC,view,P1,2,,b,1.00,5,s",
                "product_id",
            ),
            ("2019-10-01 00:00:00 UTC,view,0,2,,b,1.00,5,s", "product_id"),
            (
                "2019-10-01 00:00:00 UTC,view,-3,2,,b,1.00,5,s",
                "product_id",
            ),
            (
                "2019-10-01 00:00:00 UTC,view,1,x2,,b,1.00,5,s",
                "category_id",
            ),
            ("2019-10-01 00:00:00 UTC,view,1,2,,b,abc,5,s", "price"),
            ("2019-10-01 00:00:00 UTC,view,1,2,,b,1.005,5,s", "price"),
            (
                "2019-10-01 00:00:00 UTC,view,1,2,,b,1.00,18446744073709551616,s",
                "user_id",
            ),
            ("2019-10-01 00:00:00 UTC,view,1,2,,b,1.00,1.5,s", "user_id"),
        ];
        for (row, field) in cases {
            assert_rejected(row, Some(field), RejectKind::Malformed);
        }
        assert_eq!(
            reject("2019-10-01 00:00:00 UTC,view,1,2,,b,1.005,5,s").reason,
            "price has more than 2 decimal places (not exact cents): \"1.005\""
        );
    }

    #[test]
    fn largest_ids_are_accepted() {
        let row = "2019-10-01 00:00:00 UTC,view,18446744073709551615,18446744073709551615,,b,1.00,18446744073709551615,s";
        let (accepted, rejected) = parse(format!("{HEADER}{row}\n").as_bytes());
        assert!(rejected.is_empty());
        assert_eq!(accepted[0].1.user_id, u64::MAX);
        assert_eq!(accepted[0].1.product_id, u64::MAX);
    }

    #[test]
    fn unknown_event_type() {
        for kind in ["wishlist", "View", "purchase "] {
            let row = format!("2019-10-01 00:00:00 UTC,{kind},1,2,,b,1.00,5,s");
            assert_rejected(&row, Some("event_type"), RejectKind::UnknownEventType);
        }
    }

    #[test]
    fn price_rules() {
        let row = |price: &str| format!("2019-10-01 00:00:00 UTC,purchase,1,2,,b,{price},5,s");
        assert_rejected(&row("-0.01"), Some("price"), RejectKind::NegativePrice);
        assert_rejected(&row("NaN"), Some("price"), RejectKind::PriceNotANumber);
        assert_rejected(&row("inf"), Some("price"), RejectKind::InfinitePrice);
        assert_rejected(&row("-Infinity"), Some("price"), RejectKind::NegativePrice);
        let (accepted, _) = parse(format!("{HEADER}{}\n", row("0")).as_bytes());
        assert_eq!(accepted[0].1.price_cents, 0);
    }

    #[test]
    fn invalid_utf8_in_used_fields() {
        let cases: [(&[u8], &str); 4] = [
            (
                b"2019-10-01 00:00:00 UTC,view,1,2,elec\xFFtronics,b,1.00,5,s",
                "category_code",
            ),
            (
                b"2019-10-01 00:00:00 UTC,view,1,2,,br\xC3,1.00,5,s",
                "brand",
            ),
            (
                b"2019-10-01 00:00:00 UTC,view,1,2,,b,1.00,5,s\xFF",
                "user_session",
            ),
            (
                b"2019-10-01 00:00:00 UTC,vi\xFFew,1,2,,b,1.00,5,s",
                "event_type",
            ),
        ];
        for (row, field) in cases {
            let mut text = HEADER.as_bytes().to_vec();
            text.extend_from_slice(row);
            text.push(b'\n');
            let (accepted, rejected) = parse(&text);
            assert!(accepted.is_empty());
            assert_eq!(rejected[0].field.as_deref(), Some(field));
            assert_eq!(rejected[0].kind, RejectKind::InvalidUtf8);
            assert!(rejected[0].raw.contains('\u{FFFD}'));
        }
    }

    #[test]
    fn first_failing_field_in_rees46_order_is_reported() {
        let r = reject("bad,wishlist,0,2,,b,-1,5,s");
        assert_eq!(r.field.as_deref(), Some("event_time"));
    }

    #[test]
    fn one_field_rows_count_as_field_count_mismatch() {
        assert_rejected("bad", None, RejectKind::FieldCount);
        assert_eq!(reject("bad").reason, "row has 1 fields, the header has 9");
    }

    /// A REES46 row whose brand, category_code and user_session are the given texts.
    fn row_with(category_code: &str, brand: &str, session: &str) -> String {
        format!("2019-10-01 00:00:00 UTC,view,1,2,{category_code},{brand},1.00,5,{session}")
    }

    #[test]
    fn keyword_fields_longer_than_lucenes_term_limit_are_rejected() {
        let fits = "b".repeat(32_766);
        let too_long = "b".repeat(32_767);
        let (accepted, rejected) =
            parse(format!("{HEADER}{}\n", row_with(&fits, &fits, "s")).as_bytes());
        assert_eq!((accepted.len(), rejected.len()), (1, 0));
        assert_eq!(accepted[0].1.brand.as_ref().map(String::len), Some(32_766));
        // user_session is not indexed: the keyword limit does not apply to it.
        let (accepted, _) = parse(format!("{HEADER}{}\n", row_with("", "", &too_long)).as_bytes());
        assert_eq!(accepted.len(), 1);

        for (field, row) in [
            ("category_code", row_with(&too_long, "acme", "s")),
            ("brand", row_with("", &too_long, "s")),
        ] {
            let r = reject(&row);
            assert_eq!(r.field.as_deref(), Some(field));
            assert_eq!(r.kind, RejectKind::Malformed);
            assert_eq!(
                r.reason,
                format!(
                    "{field} is 32767 bytes long, more than the 32766 bytes a search keyword can hold (Lucene's term limit): \"{}…\"",
                    "b".repeat(60)
                )
            );
            assert_eq!(r.raw, row);
        }
        // Multi-byte characters count in bytes: 10,923 × 3 = 32,769 bytes.
        let r = reject(&row_with("", &"€".repeat(10_923), "s"));
        assert_eq!(r.field.as_deref(), Some("brand"));
        assert!(
            r.reason.starts_with("brand is 32769 bytes long"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn an_event_too_large_for_a_kafka_message_is_rejected_when_parsed() {
        assert_eq!(MAX_EVENT_JSON_BYTES, 999_944);
        // The JSON form of this row without its session's characters.
        let (accepted, _) = parse(format!("{HEADER}{}\n", row_with("", "", "s")).as_bytes());
        let base = accepted[0].1.to_json().len() - 1;
        let fits = "s".repeat(MAX_EVENT_JSON_BYTES - base);
        let (accepted, rejected) =
            parse(format!("{HEADER}{}\n", row_with("", "", &fits)).as_bytes());
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(accepted[0].1.to_json().len(), 999_944);

        let too_long = format!("{fits}s");
        let r = reject(&row_with("", "", &too_long));
        assert_eq!(r.field, None);
        assert_eq!(r.kind, RejectKind::Malformed);
        assert_eq!(
            r.reason,
            "the event's JSON form would be 999945 bytes, more than the 999944 a Kafka message can carry (librdkafka message.max.bytes 1000000, less key and framing) (raw row cut to its first 65536 bytes)"
        );
        assert_eq!(r.raw.len(), 65_536);
        assert_eq!(r.raw, row_with("", "", &too_long)[..65_536]);
        // The dead letter itself fits in a Kafka message.
        assert!(serde_json::to_vec(&r).unwrap().len() < 100_000);

        // Escaping counts: 170,000 control bytes become 1,020,000 bytes of JSON.
        let controls = "\u{1}".repeat(170_000);
        let r = reject(&row_with("", "", &controls));
        assert_eq!(r.field, None);
        assert!(
            r.reason.starts_with("the event's JSON form would be 1020"),
            "{}",
            r.reason
        );
    }
}
