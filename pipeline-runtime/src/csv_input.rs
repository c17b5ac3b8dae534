//! Streaming CSV reader of design brief §3: header matched by name, every rejection rule,
//! each row either an [`Event`] or a [`Rejected`] with line, field and reason. Reads from
//! any `Read` (a file, an object body); memory stays constant whatever the input's size.
//!
//! Line numbers are physical lines of the input (the header is line 1, blank lines count as
//! lines but yield nothing). Only the columns we use are validated: an extra column may
//! hold anything, including bytes that are not UTF-8.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};

use crate::error::{Error, Result};
use crate::event::{Event, EventType, RejectKind, Rejected};
use crate::money::{self, PriceError};
use crate::time;

const BOM: &[u8] = b"\xEF\xBB\xBF";
const READ_BUFFER: usize = 256 * 1024;

/// Column positions of the fields we read, found by header name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub event_time: usize,
    pub event_type: usize,
    pub product_id: usize,
    pub price: usize,
    pub user_id: usize,
    pub category_id: Option<usize>,
    pub category_code: Option<usize>,
    pub brand: Option<usize>,
    pub user_session: Option<usize>,
    /// Number of fields every row must have.
    pub width: usize,
}

impl Columns {
    /// Matches header names (trimmed, case-insensitive; `timestamp` is an alias of
    /// `event_time` used when `event_time` itself is absent). Unknown names are ignored.
    pub fn from_header(names: &[&[u8]]) -> std::result::Result<Columns, String> {
        let normalized: Vec<String> = names
            .iter()
            .map(|n| String::from_utf8_lossy(n.trim_ascii()).to_ascii_lowercase())
            .collect();
        let find = |name: &str| -> std::result::Result<Option<usize>, String> {
            let mut hits = normalized.iter().enumerate().filter(|(_, n)| *n == name);
            let first = hits.next().map(|(i, _)| i);
            match hits.next() {
                Some(_) => Err(format!("column {name:?} appears more than once")),
                None => Ok(first),
            }
        };
        let event_time = match find("event_time")? {
            Some(i) => Some(i),
            None => find("timestamp")?,
        };
        let required = [
            ("event_time", event_time),
            ("event_type", find("event_type")?),
            ("product_id", find("product_id")?),
            ("price", find("price")?),
            ("user_id", find("user_id")?),
        ];
        let missing: Vec<&str> = required
            .iter()
            .filter(|(_, i)| i.is_none())
            .map(|(n, _)| *n)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "required column(s) {} not found in header {:?}",
                missing.join(", "),
                normalized.join(",")
            ));
        }
        let at = |k: usize| required[k].1.unwrap_or_default();
        Ok(Columns {
            event_time: at(0),
            event_type: at(1),
            product_id: at(2),
            price: at(3),
            user_id: at(4),
            category_id: find("category_id")?,
            category_code: find("category_code")?,
            brand: find("brand")?,
            user_session: find("user_session")?,
            width: names.len(),
        })
    }
}

/// One data row's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRow {
    /// Physical line number where the row starts (header = 1).
    pub line: u64,
    /// Byte offset of the row's start in the input.
    pub byte_offset: u64,
    pub outcome: std::result::Result<Event, Rejected>,
}

/// One CSV record: its raw bytes (without the line terminator) and its fields.
#[derive(Debug, Default, Clone)]
pub struct Record {
    raw: Vec<u8>,
    /// Unescaped field bytes; used only when the record has quotes.
    unescaped: Vec<u8>,
    quoted: bool,
    spans: Vec<(usize, usize)>,
    /// The row was longer than [`MAX_RECORD_BYTES`]; `raw` holds only its beginning.
    oversized: bool,
    /// A quoted field opened on this line is not closed (see [`Records`]).
    unterminated: bool,
}

impl Record {
    /// Splits `text` (one record, terminator removed) into fields.
    pub fn from_bytes(text: &[u8]) -> Record {
        let mut record = Record::default();
        record.raw.extend_from_slice(text);
        record.split();
        record
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The record as it appeared in the input.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| &self[i])
    }

    fn split(&mut self) {
        self.spans.clear();
        self.unescaped.clear();
        self.quoted = memchr::memchr(b'"', &self.raw).is_some();
        if !self.quoted {
            let mut start = 0;
            for comma in memchr::memchr_iter(b',', &self.raw) {
                self.spans.push((start, comma));
                start = comma + 1;
            }
            self.spans.push((start, self.raw.len()));
            return;
        }
        // RFC 4180 with leniency: `""` inside quotes is a quote; text after a closing quote
        // and before the next comma is kept; a quote inside an unquoted field is literal.
        let raw = &self.raw;
        let out = &mut self.unescaped;
        let mut i = 0;
        loop {
            let start = out.len();
            if raw.get(i) == Some(&b'"') {
                i += 1;
                while i < raw.len() {
                    if raw[i] == b'"' {
                        if raw.get(i + 1) == Some(&b'"') {
                            out.push(b'"');
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    } else {
                        out.push(raw[i]);
                        i += 1;
                    }
                }
            }
            while i < raw.len() && raw[i] != b',' {
                out.push(raw[i]);
                i += 1;
            }
            self.spans.push((start, out.len()));
            if i >= raw.len() {
                break;
            }
            i += 1; // the comma
        }
    }
}

impl std::ops::Index<usize> for Record {
    type Output = [u8];

    fn index(&self, i: usize) -> &[u8] {
        let (start, end) = self.spans[i];
        if self.quoted {
            &self.unescaped[start..end]
        } else {
            &self.raw[start..end]
        }
    }
}

/// A record longer than this is rejected and the rest of its line skipped unread, so
/// a file without line breaks cannot make memory grow.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// A quoted field may span at most this many further lines...
const MAX_CONTINUATION_LINES: usize = 16;
/// ...and this many bytes in all.
const MAX_CONTINUATION_BYTES: usize = 64 * 1024;

/// Splits a byte stream into CSV records, counting physical lines.
///
/// A quote left open at the end of a line continues the record on the next lines (RFC
/// 4180) only if the quote closes within a few lines and the joined record has the header's
/// field count; otherwise the line stands alone, is rejected as an unterminated quote, and
/// the lines after it are read again as rows of their own. One stray quote costs one row.
struct Records<R: Read> {
    input: BufReader<R>,
    /// Lines read ahead and given back, each with its terminator.
    pushback: VecDeque<Vec<u8>>,
    next_line: u64,
    offset: u64,
    /// Fields per row, once the header is known.
    width: Option<usize>,
}

/// Whether a line ended, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineEnd {
    Newline,
    EndOfInput,
    /// Longer than [`MAX_RECORD_BYTES`]; the rest of the line was skipped.
    Oversized,
}

fn odd_quotes(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'"', bytes).count() % 2 == 1
}

impl<R: Read> Records<R> {
    fn new(input: R) -> Self {
        Records {
            input: BufReader::with_capacity(READ_BUFFER, input),
            pushback: VecDeque::new(),
            next_line: 1,
            offset: 0,
            width: None,
        }
    }

    /// Appends one physical line (with its terminator) to `out`; returns the bytes
    /// appended, 0 at the end of the input.
    fn read_line(&mut self, out: &mut Vec<u8>) -> std::io::Result<(usize, LineEnd)> {
        let start = out.len();
        if let Some(line) = self.pushback.pop_front() {
            self.offset += line.len() as u64;
            out.extend_from_slice(&line);
            return Ok((line.len(), LineEnd::Newline));
        }
        let n = (&mut self.input)
            .take(MAX_RECORD_BYTES as u64)
            .read_until(b'\n', out)?;
        self.offset += n as u64;
        if out[start..].last() == Some(&b'\n') {
            Ok((n, LineEnd::Newline))
        } else if n >= MAX_RECORD_BYTES {
            self.skip_line()?;
            Ok((n, LineEnd::Oversized))
        } else {
            Ok((n, LineEnd::EndOfInput))
        }
    }

    /// Reads the next non-blank record into `record`; returns its (first line, byte offset).
    fn next(&mut self, record: &mut Record) -> std::io::Result<Option<(u64, u64)>> {
        loop {
            record.raw.clear();
            record.oversized = false;
            record.unterminated = false;
            let (line, offset) = (self.next_line, self.offset);
            let (n, end) = self.read_line(&mut record.raw)?;
            if n == 0 {
                return Ok(None);
            }
            self.next_line += 1;
            if end == LineEnd::Oversized {
                record.oversized = true;
            } else if end == LineEnd::Newline && odd_quotes(&record.raw) {
                self.continue_quoted(record)?;
            }
            if line == 1 && record.raw.starts_with(BOM) {
                record.raw.drain(..BOM.len());
            }
            trim_terminator(&mut record.raw);
            if record.raw.iter().all(|b| *b == b' ' || *b == b'\t') && !record.oversized {
                continue;
            }
            record.split();
            return Ok(Some((line, offset)));
        }
    }

    /// `record.raw` is one line ending inside a quoted field: joins following lines if
    /// that yields a well-formed record, else gives them back and marks the line.
    fn continue_quoted(&mut self, record: &mut Record) -> std::io::Result<()> {
        let first_len = record.raw.len();
        let mut extra: Vec<Vec<u8>> = Vec::new();
        let mut open = true;
        while open
            && extra.len() < MAX_CONTINUATION_LINES
            && record.raw.len() - first_len < MAX_CONTINUATION_BYTES
        {
            let mut line = Vec::new();
            let (n, end) = self.read_line(&mut line)?;
            if n == 0 {
                break;
            }
            open ^= odd_quotes(&line);
            let stop = end != LineEnd::Newline;
            extra.push(line);
            if stop {
                break;
            }
        }
        if !open {
            let mut joined = Record::default();
            joined.raw.extend_from_slice(&record.raw);
            extra.iter().for_each(|l| joined.raw.extend_from_slice(l));
            trim_terminator(&mut joined.raw);
            joined.split();
            if self.width.is_none_or(|w| joined.len() == w) {
                record.raw.clear();
                record.raw.extend_from_slice(&joined.raw);
                record.raw.push(b'\n');
                self.next_line += extra.len() as u64;
                return Ok(());
            }
        }
        for line in extra.into_iter().rev() {
            self.offset -= line.len() as u64;
            self.pushback.push_front(line);
        }
        record.raw.truncate(first_len);
        record.unterminated = true;
        Ok(())
    }

    /// Consumes input up to and including the next line feed.
    fn skip_line(&mut self) -> std::io::Result<()> {
        loop {
            let buffer = self.input.fill_buf()?;
            if buffer.is_empty() {
                return Ok(());
            }
            match memchr::memchr(b'\n', buffer) {
                Some(at) => {
                    self.input.consume(at + 1);
                    self.offset += at as u64 + 1;
                    return Ok(());
                }
                None => {
                    let n = buffer.len();
                    self.input.consume(n);
                    self.offset += n as u64;
                }
            }
        }
    }
}

fn trim_terminator(raw: &mut Vec<u8>) {
    if raw.last() == Some(&b'\n') {
        raw.pop();
        if raw.last() == Some(&b'\r') {
            raw.pop();
        }
    }
}

/// Reads events from any `Read`: the type returned by [`open`].
pub type CsvReader<R> = CsvEvents<R>;

/// The reader. Iterate it, or call [`CsvEvents::next_row`].
pub struct CsvEvents<R: Read> {
    source: String,
    records: Records<R>,
    columns: Columns,
    record: Record,
}

/// Opens a CSV input: strips a BOM, reads and matches the header. `source` names the input
/// in errors and rejections (a path or an object key).
pub fn open<R: Read>(source: impl Into<String>, input: R) -> Result<CsvReader<R>> {
    let source = source.into();
    let mut records = Records::new(input);
    let mut header = Record::default();
    let found = records.next(&mut header).map_err(|error| Error::Read {
        input: source.clone(),
        error,
    })?;
    if found.is_none() {
        return Err(Error::Header {
            input: source,
            reason: "the input is empty (no header line)".into(),
        });
    }
    let names: Vec<&[u8]> = header.iter().collect();
    let columns = Columns::from_header(&names).map_err(|reason| Error::Header {
        input: source.clone(),
        reason,
    })?;
    records.width = Some(columns.width);
    Ok(CsvEvents {
        source,
        records,
        columns,
        record: Record::default(),
    })
}

impl<R: Read> CsvEvents<R> {
    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Bytes consumed so far (for progress reporting).
    pub fn bytes_read(&self) -> u64 {
        self.records.offset
    }

    /// The next data row, `Ok(None)` at the end. Only I/O failures are errors.
    pub fn next_row(&mut self) -> Result<Option<ParsedRow>> {
        let Some((line, byte_offset)) =
            self.records
                .next(&mut self.record)
                .map_err(|error| Error::Read {
                    input: self.source.clone(),
                    error,
                })?
        else {
            return Ok(None);
        };
        let outcome = if self.record.oversized {
            Err(Problem {
                field: None,
                kind: RejectKind::Malformed,
                reason: format!("row is longer than {MAX_RECORD_BYTES} bytes"),
            })
        } else if self.record.unterminated {
            Err(Problem {
                field: None,
                kind: RejectKind::Malformed,
                reason: "a quoted field is not closed".to_string(),
            })
        } else {
            parse_record(&self.record, &self.columns)
        };
        let outcome = outcome.map_err(|problem| Rejected {
            source: self.source.clone(),
            line,
            field: problem.field.map(str::to_owned),
            kind: problem.kind,
            reason: problem.reason,
            raw: String::from_utf8_lossy(shown_raw(self.record.raw())).into_owned(),
        });
        Ok(Some(ParsedRow {
            line,
            byte_offset,
            outcome,
        }))
    }
}

/// The raw row in a rejection, cut at 4 KiB for oversized rows.
fn shown_raw(raw: &[u8]) -> &[u8] {
    &raw[..raw.len().min(if raw.len() >= MAX_RECORD_BYTES {
        4096
    } else {
        raw.len()
    })]
}

impl<R: Read> Iterator for CsvEvents<R> {
    type Item = Result<ParsedRow>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_row().transpose()
    }
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
    let category_code = optional_text("category_code", record, columns.category_code)?;
    let brand = optional_text("brand", record, columns.brand)?;
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
    Ok(Event {
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

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n";
    const GOOD: &str = "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde-8bb3-4e00-8c23-a032dfb62e92\n";

    /// (line, event) for accepted rows and the rejections, in input order.
    fn parse(text: &[u8]) -> (Vec<(u64, Event)>, Vec<Rejected>) {
        let reader = open("test.csv", text).expect("header");
        let mut accepted = Vec::new();
        let mut rejected = Vec::new();
        for row in reader {
            let row = row.expect("no I/O error");
            match row.outcome {
                Ok(event) => accepted.push((row.line, event)),
                Err(r) => {
                    assert_eq!(r.line, row.line);
                    rejected.push(r)
                }
            }
        }
        (accepted, rejected)
    }

    /// The single rejection of `HEADER + row`, which must be on line 2.
    fn reject(row: &str) -> Rejected {
        let (accepted, rejected) = parse(format!("{HEADER}{row}\n").as_bytes());
        assert!(accepted.is_empty(), "accepted {row:?}");
        assert_eq!(rejected.len(), 1);
        let r = rejected.into_iter().next().unwrap();
        assert_eq!(r.line, 2);
        assert_eq!(r.source, "test.csv");
        r
    }

    fn assert_rejected(row: &str, field: Option<&str>, kind: RejectKind) {
        let r = reject(row);
        assert_eq!(r.field.as_deref(), field, "{row:?}: {}", r.reason);
        assert_eq!(r.kind, kind, "{row:?}: {}", r.reason);
        assert_eq!(r.raw, row);
    }

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
    fn short_header_with_timestamp_alias() {
        let text = "user_id,event_type,product_id,price,timestamp\n7,purchase,9,1.5,2019-11-02T10:00:00Z\n";
        let (accepted, rejected) = parse(text.as_bytes());
        assert!(rejected.is_empty());
        let (line, event) = &accepted[0];
        assert_eq!(*line, 2);
        assert_eq!(event.user_id, 7);
        assert_eq!(event.product_id, 9);
        assert_eq!(event.price_cents, 150);
        assert_eq!(event.event_type, EventType::Purchase);
        assert_eq!(event.event_time, 1_572_688_800_000_000);
        assert_eq!(
            (
                &event.category_id,
                &event.category_code,
                &event.brand,
                &event.user_session
            ),
            (&None, &None, &None, &None)
        );
    }

    #[test]
    fn header_names_are_matched_by_name_and_extra_columns_ignored() {
        let text = "Note, USER_ID ,price,event_type,timestamp,product_id,brand\n\
                    \"any, thing\",5,2.00,cart,2019-10-05 12:00:00 UTC,77,acme\n\
                    x\u{FF},6,3.00,view,2019-10-05 12:00:01 UTC,78,\n";
        let (accepted, rejected) = parse(text.as_bytes());
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(accepted.len(), 2);
        assert_eq!(accepted[0].1.user_id, 5);
        assert_eq!(accepted[0].1.brand.as_deref(), Some("acme"));
        assert_eq!(accepted[1].1.brand, None);
        assert_eq!(accepted[1].1.product_id, 78);
    }

    #[test]
    fn invalid_utf8_in_an_ignored_column_is_not_a_rejection() {
        let mut text = b"user_id,event_type,product_id,price,timestamp,comment\n".to_vec();
        text.extend_from_slice(b"1,view,2,3.00,2019-10-05 12:00:00 UTC,\xFF\xFE\n");
        let (accepted, rejected) = parse(&text);
        assert_eq!((accepted.len(), rejected.len()), (1, 0));
    }

    #[test]
    fn bom_crlf_and_blank_lines() {
        let text = format!(
            "\u{FEFF}{}\r\n\r\n{}\r\n   \r\n\r\n{}\r\n",
            HEADER.trim_end(),
            GOOD.trim_end(),
            GOOD.trim_end().replace("view", "cart")
        );
        let (accepted, rejected) = parse(text.as_bytes());
        assert!(rejected.is_empty(), "{rejected:?}");
        let lines: Vec<u64> = accepted.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![3, 6]);
        assert_eq!(
            accepted[0].1.user_session.as_deref(),
            Some("72d76fde-8bb3-4e00-8c23-a032dfb62e92")
        );
        assert_eq!(accepted[1].1.event_type, EventType::Cart);
    }

    #[test]
    fn exact_duplicates_are_kept() {
        let text = format!("{HEADER}{GOOD}{GOOD}");
        let (accepted, _) = parse(text.as_bytes());
        assert_eq!(accepted.len(), 2);
        assert_eq!(accepted[0].1, accepted[1].1);
        assert_eq!((accepted[0].0, accepted[1].0), (2, 3));
    }

    #[test]
    fn line_numbers_count_physical_lines_of_multiline_fields() {
        let text = format!(
            "{HEADER}2019-10-01 00:00:00 UTC,view,1,,,\"two\nlines\",1.00,5,s\n{}",
            GOOD.replace("view", "sell")
        );
        let (accepted, rejected) = parse(text.as_bytes());
        assert_eq!(accepted[0].0, 2);
        assert_eq!(accepted[0].1.brand.as_deref(), Some("two\nlines"));
        assert_eq!(rejected[0].line, 4);
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
    fn rejections_never_stop_the_stream() {
        let text =
            format!("{HEADER}{GOOD}bad\n{GOOD}2019-10-01 00:00:00 UTC,view,1,2,,b,NaN,5,s\n{GOOD}");
        let (accepted, rejected) = parse(text.as_bytes());
        let lines: Vec<u64> = accepted.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![2, 4, 6]);
        let lines: Vec<u64> = rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![3, 5]);
    }

    #[test]
    fn raw_is_the_row_as_written() {
        let text = format!("{HEADER}2019-10-01 00:00:00 UTC,view,1,2,,\"a,b\",\"1.0x\",5,\"s\"\n");
        let (_, rejected) = parse(text.as_bytes());
        assert_eq!(
            rejected[0].raw,
            "2019-10-01 00:00:00 UTC,view,1,2,,\"a,b\",\"1.0x\",5,\"s\""
        );
    }

    #[test]
    fn header_errors_are_fatal_and_name_the_input() {
        let err = open("in.csv", &b""[..]).err().expect("empty input");
        assert_eq!(
            err.to_string(),
            "in.csv: line 1: bad header: the input is empty (no header line)"
        );
        let err = open("in.csv", &b"user_id,price\n1,2\n"[..])
            .err()
            .expect("missing");
        assert_eq!(
            err.to_string(),
            "in.csv: line 1: bad header: required column(s) event_time, event_type, product_id not found in header \"user_id,price\""
        );
        let err = open(
            "in.csv",
            &b"user_id,user_id,event_type,product_id,price,timestamp\n"[..],
        )
        .err()
        .expect("duplicate");
        assert!(err
            .to_string()
            .contains("column \"user_id\" appears more than once"));
    }

    #[test]
    fn oversized_rows_are_rejected_without_buffering_them() {
        let long = "x".repeat(MAX_RECORD_BYTES + 10);
        let unterminated = format!("2019-10-01 00:00:00 UTC,view,1,2,,\"{long}");
        for row in [long.clone(), unterminated] {
            let text = format!("{HEADER}{row}\n{GOOD}");
            let (accepted, rejected) = parse(text.as_bytes());
            assert_eq!(rejected.len(), 1);
            assert_eq!(rejected[0].line, 2);
            assert_eq!(rejected[0].kind, RejectKind::Malformed);
            assert_eq!(rejected[0].field, None);
            assert_eq!(rejected[0].raw.len(), 4096);
            assert_eq!(accepted.len(), 1);
            assert_eq!(accepted[0].0, 3);
        }
    }

    #[test]
    fn a_stray_quote_costs_one_row() {
        let text =
            format!("{HEADER}2019-10-01 00:00:00 UTC,view,1,2,,\"acme,1.00,5,s\n{GOOD}{GOOD}");
        let (accepted, rejected) = parse(text.as_bytes());
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].line, 2);
        assert_eq!(rejected[0].reason, "a quoted field is not closed");
        assert_eq!(
            rejected[0].raw,
            "2019-10-01 00:00:00 UTC,view,1,2,,\"acme,1.00,5,s"
        );
        let lines: Vec<u64> = accepted.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![3, 4]);
        let offsets: Vec<u64> = open("t", text.as_bytes())
            .unwrap()
            .map(|r| r.unwrap().byte_offset)
            .collect();
        let second = HEADER.len() as u64 + 49;
        assert_eq!(
            offsets,
            vec![HEADER.len() as u64, second, second + GOOD.len() as u64]
        );
    }

    #[test]
    fn one_field_rows_count_as_field_count_mismatch() {
        assert_rejected("bad", None, RejectKind::FieldCount);
        assert_eq!(reject("bad").reason, "row has 1 fields, the header has 9");
    }

    #[test]
    fn only_a_header_gives_no_rows() {
        let (accepted, rejected) = parse(HEADER.as_bytes());
        assert!(accepted.is_empty() && rejected.is_empty());
    }

    #[test]
    fn reads_in_small_pieces() {
        // A reader that returns one byte at a time, as a slow network body might.
        struct OneByte<'a>(&'a [u8]);
        impl Read for OneByte<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                match (self.0.split_first(), buf.first_mut()) {
                    (Some((b, rest)), Some(slot)) => {
                        *slot = *b;
                        self.0 = rest;
                        Ok(1)
                    }
                    _ => Ok(0),
                }
            }
        }
        let text = format!("\u{FEFF}{HEADER}{GOOD}");
        let rows: Vec<_> = open("slow", OneByte(text.as_bytes()))
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].outcome.is_ok());
    }
}
