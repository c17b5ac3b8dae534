//! The event model shared by every role: [`Event`] (an accepted row), [`Rejected`] (a
//! dead-lettered row) and the JSON form of an event used as the Kafka message value.
//! Pure data and codecs; no I/O.
//!
//! JSON form (field names as in the CSV header):
//! `{"event_time":"2019-10-01T00:00:05Z","event_type":"view","product_id":44600062,
//! "category_id":2103807459595387724,"category_code":null,"brand":"shiseido",
//! "price":"35.79","user_id":541312140,"user_session":"72d76fde-8bb3-4e00-8c23-a032dfb62e92"}`.
//! `price` is a decimal *string* with exactly two decimals so no JSON reader turns it into a
//! binary float; decoding also accepts a JSON number (converted exactly, or refused when it
//! is not whole cents). Ids are JSON integers (u64).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::money;
use crate::time;

/// librdkafka's `message.max.bytes` (its default), which the ingest producer sets
/// explicitly ([`crate::kafka::producer_config`]): a message whose key, value and record
/// framing exceed it fails at produce time with `MSG_SIZE_TOO_LARGE`.
pub const KAFKA_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// Longest JSON form of an event that fits in one Kafka message: the limit less the
/// longest key (a u64 user_id in decimal, 20 bytes) and librdkafka's worst-case record
/// framing (`RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`, 36 bytes). A row whose event would be
/// longer is rejected when parsed (see [`crate::csv_input`]), never at produce time.
pub const MAX_EVENT_JSON_BYTES: usize = KAFKA_MESSAGE_MAX_BYTES - 20 - 36;

/// The four kinds of e-commerce events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    View,
    Cart,
    RemoveFromCart,
    Purchase,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::View,
        EventType::Cart,
        EventType::RemoveFromCart,
        EventType::Purchase,
    ];

    /// The name used in CSV, JSON and Parquet.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::Cart => "cart",
            EventType::RemoveFromCart => "remove_from_cart",
            EventType::Purchase => "purchase",
        }
    }

    /// Exact, case-sensitive match of the four names.
    pub fn parse(text: &[u8]) -> Option<EventType> {
        match text {
            b"view" => Some(EventType::View),
            b"cart" => Some(EventType::Cart),
            b"remove_from_cart" => Some(EventType::RemoveFromCart),
            b"purchase" => Some(EventType::Purchase),
            _ => None,
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One accepted event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "EventJson", try_from = "EventJson")]
pub struct Event {
    /// UTC, microseconds since the Unix epoch.
    pub event_time: i64,
    pub event_type: EventType,
    pub product_id: u64,
    pub category_id: Option<u64>,
    pub category_code: Option<String>,
    pub brand: Option<String>,
    /// Exact price in cents, `0..=money::MAX_PRICE_CENTS`.
    pub price_cents: i64,
    pub user_id: u64,
    pub user_session: Option<String>,
}

impl Event {
    /// The UTC day (days since 1970-01-01) the event belongs to; the lake partition.
    pub fn utc_day(&self) -> i32 {
        time::utc_day(self.event_time)
    }

    /// Appends the JSON form to `out` without going through serde (the ingest hot path).
    /// Produces exactly the bytes `serde_json::to_vec(self)` produces.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut ints = itoa::Buffer::new();
        out.extend_from_slice(b"{\"event_time\":\"");
        time::format_rfc3339(self.event_time, out);
        out.extend_from_slice(b"\",\"event_type\":\"");
        out.extend_from_slice(self.event_type.as_str().as_bytes());
        out.extend_from_slice(b"\",\"product_id\":");
        out.extend_from_slice(ints.format(self.product_id).as_bytes());
        out.extend_from_slice(b",\"category_id\":");
        match self.category_id {
            Some(id) => out.extend_from_slice(ints.format(id).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"category_code\":");
        write_json_opt_str(self.category_code.as_deref(), out);
        out.extend_from_slice(b",\"brand\":");
        write_json_opt_str(self.brand.as_deref(), out);
        out.extend_from_slice(b",\"price\":\"");
        out.extend_from_slice(money::format_cents(i128::from(self.price_cents)).as_bytes());
        out.extend_from_slice(b"\",\"user_id\":");
        out.extend_from_slice(ints.format(self.user_id).as_bytes());
        out.extend_from_slice(b",\"user_session\":");
        write_json_opt_str(self.user_session.as_deref(), out);
        out.push(b'}');
    }

    /// The JSON form as a new buffer.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out);
        out
    }

    /// Decodes the JSON form (a Kafka message value). The form [`Event::write_json`]
    /// produces is read by hand; any other valid JSON (other field order, whitespace,
    /// escapes, a numeric price, missing optional fields) goes through serde, which also
    /// words the error of anything refused.
    pub fn from_json(bytes: &[u8]) -> Result<Event> {
        if let Some(event) = decode_canonical_json(bytes) {
            return Ok(event);
        }
        serde_json::from_slice(bytes).map_err(|e| Error::EventJson(e.to_string()))
    }
}

/// Reads exactly the bytes [`Event::write_json`] writes for an event without escapes in
/// its strings. `None` for anything else, valid or not: the caller then asks serde, so
/// this never accepts what serde would refuse nor decodes a value differently.
fn decode_canonical_json(bytes: &[u8]) -> Option<Event> {
    let mut r = CanonicalReader { rest: bytes };
    r.literal(b"{\"event_time\":\"")?;
    let event_time = time::parse_event_time(r.plain_string_body()?)?;
    r.literal(b",\"event_type\":\"")?;
    let event_type = EventType::parse(r.plain_string_body()?)?;
    r.literal(b",\"product_id\":")?;
    let product_id = r.unsigned()?;
    r.literal(b",\"category_id\":")?;
    let category_id = if r.null() { None } else { Some(r.unsigned()?) };
    r.literal(b",\"category_code\":")?;
    let category_code = r.optional_string()?;
    r.literal(b",\"brand\":")?;
    let brand = r.optional_string()?;
    r.literal(b",\"price\":\"")?;
    let price_cents = money::parse_price_cents(r.plain_string_body()?).ok()?;
    r.literal(b",\"user_id\":")?;
    let user_id = r.unsigned()?;
    r.literal(b",\"user_session\":")?;
    let user_session = r.optional_string()?;
    r.literal(b"}")?;
    if !r.rest.is_empty() || product_id == 0 || user_id == 0 {
        return None;
    }
    Some(Event {
        event_time,
        event_type,
        product_id,
        category_id,
        category_code,
        brand,
        price_cents,
        user_id,
        user_session,
    })
}

/// A cursor over the canonical JSON form; every method returns `None` (or `false`) at the
/// first byte outside that form.
struct CanonicalReader<'a> {
    rest: &'a [u8],
}

impl<'a> CanonicalReader<'a> {
    fn literal(&mut self, expected: &[u8]) -> Option<()> {
        self.rest = self.rest.strip_prefix(expected)?;
        Some(())
    }

    fn null(&mut self) -> bool {
        self.literal(b"null").is_some()
    }

    /// The bytes of a string up to its closing quote (consumed), when it needs no
    /// unescaping and holds no control character (which JSON forbids unescaped).
    fn plain_string_body(&mut self) -> Option<&'a [u8]> {
        let end = memchr::memchr2(b'"', b'\\', self.rest)?;
        if self.rest[end] != b'"' {
            return None;
        }
        let body = &self.rest[..end];
        if body.iter().any(|&b| b < 0x20) {
            return None;
        }
        self.rest = &self.rest[end + 1..];
        Some(body)
    }

    /// `null`, or a plain string that is valid UTF-8.
    fn optional_string(&mut self) -> Option<Option<String>> {
        if self.null() {
            return Some(None);
        }
        self.literal(b"\"")?;
        let body = self.plain_string_body()?;
        Some(Some(std::str::from_utf8(body).ok()?.to_owned()))
    }

    /// A JSON integer without sign, exponent or fraction that fits in a u64 (`0`, or no
    /// leading zero).
    fn unsigned(&mut self) -> Option<u64> {
        let digits = self.rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let (number, rest) = self.rest.split_at(digits);
        if number.is_empty() || (number.len() > 1 && number[0] == b'0') {
            return None;
        }
        let mut value: u64 = 0;
        for &digit in number {
            value = value
                .checked_mul(10)?
                .checked_add(u64::from(digit - b'0'))?;
        }
        self.rest = rest;
        Some(value)
    }
}

fn write_json_opt_str(value: Option<&str>, out: &mut Vec<u8>) {
    let Some(text) = value else {
        out.extend_from_slice(b"null");
        return;
    };
    let needs_escaping = text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
    if needs_escaping {
        // Rare: let serde_json produce its exact escaping.
        match serde_json::to_vec(text) {
            Ok(escaped) => out.extend_from_slice(&escaped),
            Err(_) => out.extend_from_slice(b"null"),
        }
    } else {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Price in JSON: a decimal string (what we write) or a number (accepted on input).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum JsonPrice {
    Text(String),
    Number(serde_json::Number),
}

/// The wire shape of [`Event`]; private so the public type stays typed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EventJson {
    event_time: String,
    event_type: EventType,
    product_id: u64,
    #[serde(default)]
    category_id: Option<u64>,
    #[serde(default)]
    category_code: Option<String>,
    #[serde(default)]
    brand: Option<String>,
    price: JsonPrice,
    user_id: u64,
    #[serde(default)]
    user_session: Option<String>,
}

impl From<Event> for EventJson {
    fn from(e: Event) -> Self {
        EventJson {
            event_time: time::rfc3339_string(e.event_time),
            event_type: e.event_type,
            product_id: e.product_id,
            category_id: e.category_id,
            category_code: e.category_code,
            brand: e.brand,
            price: JsonPrice::Text(money::format_cents(i128::from(e.price_cents))),
            user_id: e.user_id,
            user_session: e.user_session,
        }
    }
}

impl TryFrom<EventJson> for Event {
    type Error = String;

    fn try_from(j: EventJson) -> std::result::Result<Self, String> {
        let event_time = time::parse_event_time(j.event_time.as_bytes())
            .ok_or_else(|| format!("event_time {:?} is not a valid time", j.event_time))?;
        let price_text = match &j.price {
            JsonPrice::Text(t) => t.clone(),
            JsonPrice::Number(n) => n.to_string(),
        };
        let price_cents = money::parse_price_cents(price_text.as_bytes())
            .map_err(|e| format!("{}: {price_text:?}", e.describe()))?;
        if j.product_id == 0 || j.user_id == 0 {
            return Err("user_id and product_id must be positive".to_string());
        }
        Ok(Event {
            event_time,
            event_type: j.event_type,
            product_id: j.product_id,
            category_id: j.category_id,
            category_code: j.category_code,
            brand: j.brand,
            price_cents,
            user_id: j.user_id,
            user_session: j.user_session,
        })
    }
}

/// The fixed category of a rejection: summary keys and metric labels use these, never the
/// free-text reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectKind {
    /// The row has more or fewer fields than the header.
    FieldCount,
    /// A required field is empty.
    MissingField,
    /// A required field does not parse (time, id, price, ...), or the row or a field is
    /// longer than the pipeline can carry (search keyword, Kafka message, record limits).
    Malformed,
    /// `event_type` is not one of the four names.
    UnknownEventType,
    /// The price is below zero.
    NegativePrice,
    /// The price is `NaN`.
    PriceNotANumber,
    /// The price is infinite.
    InfinitePrice,
    /// A field is not valid UTF-8.
    InvalidUtf8,
    /// Not a row: a whole landing object is not a CSV file the pipeline reads (its first
    /// line is no usable header: empty, binary, compressed, another format). Only the
    /// ingest of the landing prefix writes it, once per object (see
    /// [`crate::dead_letter::bad_file`]).
    BadFile,
}

impl RejectKind {
    /// Every kind a *row* can be rejected for (what `run`'s summary counts), i.e. all but
    /// [`RejectKind::BadFile`].
    pub const ALL: [RejectKind; 8] = [
        RejectKind::FieldCount,
        RejectKind::MissingField,
        RejectKind::Malformed,
        RejectKind::UnknownEventType,
        RejectKind::NegativePrice,
        RejectKind::PriceNotANumber,
        RejectKind::InfinitePrice,
        RejectKind::InvalidUtf8,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::FieldCount => "field_count",
            RejectKind::MissingField => "missing_field",
            RejectKind::Malformed => "malformed",
            RejectKind::UnknownEventType => "unknown_event_type",
            RejectKind::NegativePrice => "negative_price",
            RejectKind::PriceNotANumber => "price_not_a_number",
            RejectKind::InfinitePrice => "infinite_price",
            RejectKind::InvalidUtf8 => "invalid_utf8",
            RejectKind::BadFile => "bad_file",
        }
    }
}

impl std::fmt::Display for RejectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row that was not accepted: where it came from, why, and the row itself. This is the
/// dead-letter record (its serde JSON form is the dead-letter message value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// The input's name (file path or object key).
    pub source: String,
    /// Physical line number in the input; the header is line 1.
    pub line: u64,
    /// The canonical name of the offending field (`price`, `event_time`, ...), or `None`
    /// when the whole row is at fault (wrong field count).
    pub field: Option<String>,
    pub kind: RejectKind,
    /// A sentence for people, e.g. `price is negative: "-1.00"`.
    pub reason: String,
    /// The row exactly as in the input, without its line terminator; bytes that are not
    /// UTF-8 appear as U+FFFD. A row longer than
    /// [`crate::csv_input::MAX_REJECTED_RAW_BYTES`] is cut to that many bytes, and the
    /// reason says so.
    pub raw: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: line {}", self.source, self.line)?;
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// A view (price 1.00) of product 1 at 2019-10-01T00:00:00Z by `user_id`: the event
/// unit tests elsewhere in the crate build profiles from.
#[cfg(test)]
pub(crate) fn test_view(user_id: u64) -> Event {
    Event {
        event_time: 1_569_888_000_000_000,
        event_type: EventType::View,
        product_id: 1,
        category_id: None,
        category_code: None,
        brand: None,
        price_cents: 100,
        user_id,
        user_session: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            event_time: 1_569_888_005_000_000,
            event_type: EventType::RemoveFromCart,
            product_id: 44_600_062,
            category_id: Some(2_103_807_459_595_387_724),
            category_code: None,
            brand: Some("shi\"seido".to_string()),
            price_cents: 3579,
            user_id: 541_312_140,
            user_session: Some("72d76fde-8bb3-4e00-8c23-a032dfb62e92".to_string()),
        }
    }

    #[test]
    fn json_form_is_stable() {
        let json = String::from_utf8(sample().to_json()).unwrap();
        assert_eq!(
            json,
            r#"{"event_time":"2019-10-01T00:00:05Z","event_type":"remove_from_cart","product_id":44600062,"category_id":2103807459595387724,"category_code":null,"brand":"shi\"seido","price":"35.79","user_id":541312140,"user_session":"72d76fde-8bb3-4e00-8c23-a032dfb62e92"}"#
        );
    }

    #[test]
    fn fast_encoder_matches_serde() {
        let mut event = sample();
        assert_eq!(event.to_json(), serde_json::to_vec(&event).unwrap());
        event.category_id = None;
        event.user_session = None;
        event.brand = Some("tab\there".into());
        event.event_time += 17;
        assert_eq!(event.to_json(), serde_json::to_vec(&event).unwrap());
    }

    #[test]
    fn json_round_trip() {
        let event = sample();
        assert_eq!(Event::from_json(&event.to_json()).unwrap(), event);
    }

    /// serde's answer, which the hand decoder must never contradict.
    fn serde_decode(bytes: &[u8]) -> Option<Event> {
        serde_json::from_slice(bytes).ok()
    }

    fn canonical_events() -> Vec<Event> {
        let plain = Event {
            brand: Some("shiseido".into()),
            ..sample()
        };
        vec![
            plain.clone(),
            Event {
                category_id: None,
                category_code: Some("électronique.téléphone".into()),
                brand: None,
                user_session: None,
                price_cents: 0,
                ..plain.clone()
            },
            Event {
                product_id: u64::MAX,
                user_id: u64::MAX,
                category_id: Some(0),
                event_time: plain.event_time + 123_456,
                price_cents: money::MAX_PRICE_CENTS,
                event_type: EventType::Purchase,
                brand: Some(String::new()),
                ..plain
            },
        ]
    }

    #[test]
    fn canonical_form_is_read_by_hand_with_serde_s_result() {
        for event in canonical_events() {
            let json = event.to_json();
            // Whole-second times go by hand; the fractional one through chrono.
            assert_eq!(decode_canonical_json(&json), Some(event.clone()));
            assert_eq!(serde_decode(&json), Some(event.clone()));
        }
    }

    #[test]
    fn other_valid_forms_are_left_to_serde() {
        let escaped = sample().to_json(); // brand "shi\"seido"
        let spaced = br#"{"event_time": "2019-10-01T00:00:05Z","event_type":"view","product_id":1,"category_id":null,"category_code":null,"brand":null,"price":"1.00","user_id":2,"user_session":null}"#;
        let reordered = br#"{"event_type":"view","event_time":"2019-10-01T00:00:05Z","product_id":1,"category_id":null,"category_code":null,"brand":null,"price":"1.00","user_id":2,"user_session":null}"#;
        let numeric_price = br#"{"event_time":"2019-10-01T00:00:05Z","event_type":"view","product_id":1,"category_id":null,"category_code":null,"brand":null,"price":1.5,"user_id":2,"user_session":null}"#;
        for json in [&escaped[..], spaced, reordered, numeric_price] {
            assert_eq!(
                decode_canonical_json(json),
                None,
                "{}",
                String::from_utf8_lossy(json)
            );
            assert!(Event::from_json(json).is_ok());
        }
    }

    #[test]
    fn the_hand_decoder_never_disagrees_with_serde() {
        // Every single-byte substitution, deletion and truncation of canonical messages:
        // the hand decoder either declines or returns exactly what serde returns.
        let substitutes = b"09\" \\.e-+}{,:nT Z\x01\x7f\xc3\xff";
        let mut by_hand = 0;
        let mut cases = 0;
        for event in canonical_events() {
            let json = event.to_json();
            let mut variants: Vec<Vec<u8>> = Vec::new();
            for i in 0..json.len() {
                for &b in substitutes {
                    let mut v = json.clone();
                    v[i] = b;
                    variants.push(v);
                }
                let mut deleted = json.clone();
                deleted.remove(i);
                variants.push(deleted);
                variants.push(json[..i].to_vec());
            }
            variants.push([json.as_slice(), b" "].concat());
            for v in variants {
                cases += 1;
                if let Some(decoded) = decode_canonical_json(&v) {
                    by_hand += 1;
                    assert_eq!(
                        Some(decoded),
                        serde_decode(&v),
                        "{}",
                        String::from_utf8_lossy(&v)
                    );
                }
            }
        }
        // Most mutants are refused or left to serde; digit and letter swaps inside values
        // still decode by hand, which is what makes the comparison worth something.
        assert!(cases > 10_000, "{cases}");
        assert!(by_hand > 500, "{by_hand} of {cases}");
    }

    #[test]
    fn numeric_json_price_is_exact() {
        let json = br#"{"event_time":"2019-10-01 00:00:05 UTC","event_type":"purchase","product_id":1,"price":0.29,"user_id":2}"#;
        let event = Event::from_json(json).unwrap();
        assert_eq!(event.price_cents, 29);
        assert_eq!(event.category_code, None);
    }

    #[test]
    fn bad_json_events() {
        for bad in [
            &br#"{"event_time":"x","event_type":"view","product_id":1,"price":"1","user_id":2}"#[..],
            br#"{"event_time":"2019-10-01T00:00:00Z","event_type":"look","product_id":1,"price":"1","user_id":2}"#,
            br#"{"event_time":"2019-10-01T00:00:00Z","event_type":"view","product_id":1,"price":"-1","user_id":2}"#,
            br#"{"event_time":"2019-10-01T00:00:00Z","event_type":"view","product_id":0,"price":"1","user_id":2}"#,
            b"not json",
        ] {
            assert!(matches!(Event::from_json(bad), Err(Error::EventJson(_))));
        }
    }
}
