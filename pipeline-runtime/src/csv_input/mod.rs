//! Streaming CSV reader of design brief §3: header matched by name, every rejection rule,
//! each row either an [`Event`] or a [`Rejected`] with line, field and reason. Reads from
//! any `Read` (a file, an object body); memory stays constant whatever the input's size.
//!
//! Line numbers are physical lines of the input (the header is line 1, blank lines count as
//! lines but yield nothing). A line ends at LF, CRLF or a CR not followed by LF (old Mac
//! files), so the three styles give the same rows and line numbers; inside a quoted field
//! any of them is data. Only the columns we use are validated: an extra column may
//! hold anything, including bytes that are not UTF-8.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};

use crate::error::{Error, Result};
use crate::event::{
    Event, EventType, RejectKind, Rejected, KAFKA_MESSAGE_MAX_BYTES, MAX_EVENT_JSON_BYTES,
};
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

    /// Appends one physical line (with its terminator: LF, CRLF, or a CR not followed by
    /// LF) to `out`; returns the bytes appended, 0 at the end of the input.
    fn read_line(&mut self, out: &mut Vec<u8>) -> std::io::Result<(usize, LineEnd)> {
        if let Some(line) = self.pushback.pop_front() {
            self.offset += line.len() as u64;
            out.extend_from_slice(&line);
            return Ok((line.len(), LineEnd::Newline));
        }
        let start = out.len();
        loop {
            let room = MAX_RECORD_BYTES - (out.len() - start);
            if room == 0 {
                self.offset += (out.len() - start) as u64;
                self.skip_line()?;
                return Ok((out.len() - start, LineEnd::Oversized));
            }
            let buffer = self.input.fill_buf()?;
            if buffer.is_empty() {
                let n = out.len() - start;
                self.offset += n as u64;
                return Ok((n, LineEnd::EndOfInput));
            }
            let window = &buffer[..buffer.len().min(room)];
            match memchr::memchr2(b'\n', b'\r', window) {
                Some(at) => {
                    let cr = window[at] == b'\r';
                    out.extend_from_slice(&window[..=at]);
                    self.input.consume(at + 1);
                    if cr && self.next_is_line_feed()? {
                        out.push(b'\n');
                        self.input.consume(1);
                    }
                    let n = out.len() - start;
                    self.offset += n as u64;
                    return Ok((n, LineEnd::Newline));
                }
                None => {
                    let n = window.len();
                    out.extend_from_slice(window);
                    self.input.consume(n);
                }
            }
        }
    }

    /// Whether the next input byte is a line feed (reads more input when the buffer is
    /// empty, so a CRLF split across two reads is still one line end).
    fn next_is_line_feed(&mut self) -> std::io::Result<bool> {
        Ok(self.input.fill_buf()?.first() == Some(&b'\n'))
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

    /// Consumes input up to and including the next line end (LF, CRLF or CR).
    fn skip_line(&mut self) -> std::io::Result<()> {
        loop {
            let buffer = self.input.fill_buf()?;
            if buffer.is_empty() {
                return Ok(());
            }
            match memchr::memchr2(b'\n', b'\r', buffer) {
                Some(at) => {
                    let cr = buffer[at] == b'\r';
                    self.input.consume(at + 1);
                    self.offset += at as u64 + 1;
                    if cr && self.next_is_line_feed()? {
                        self.input.consume(1);
                        self.offset += 1;
                    }
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

/// Removes one line end (LF, CRLF or CR) from the end of `raw`.
fn trim_terminator(raw: &mut Vec<u8>) {
    if raw.last() == Some(&b'\n') {
        raw.pop();
        if raw.last() == Some(&b'\r') {
            raw.pop();
        }
    } else if raw.last() == Some(&b'\r') {
        raw.pop();
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
        let outcome = outcome.map_err(|problem| {
            let raw = self.record.raw();
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
                source: self.source.clone(),
                line,
                field: problem.field.map(str::to_owned),
                kind: problem.kind,
                reason,
                raw: String::from_utf8_lossy(raw).into_owned(),
            }
        });
        Ok(Some(ParsedRow {
            line,
            byte_offset,
            outcome,
        }))
    }
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
            assert_eq!(rejected[0].raw.len(), MAX_REJECTED_RAW_BYTES);
            assert_eq!(
                rejected[0].reason,
                "row is longer than 1048576 bytes (raw row cut to its first 65536 bytes)"
            );
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

    /// The same rows in each line-end style: a good row, a blank line, a bad row, a row
    /// with a quoted field spanning two lines, a good row.
    fn rows_with_line_ends(eol: &str) -> String {
        format!(
            "{h}{eol}{g}{eol}{eol}bad{eol}2019-10-01 00:00:00 UTC,view,1,,,\"two{eol}lines\",1.00,5,s{eol}{c}{eol}",
            h = HEADER.trim_end(),
            g = GOOD.trim_end(),
            c = GOOD.trim_end().replace("view", "cart"),
        )
    }

    #[test]
    fn cr_lf_and_crlf_line_ends_give_the_same_rows_and_line_numbers() {
        for eol in ["\n", "\r\n", "\r"] {
            let (accepted, rejected) = parse(rows_with_line_ends(eol).as_bytes());
            let lines: Vec<u64> = accepted.iter().map(|(l, _)| *l).collect();
            assert_eq!(lines, vec![2, 5, 7], "{eol:?}");
            assert_eq!(accepted[0].1.user_id, 541_312_140, "{eol:?}");
            assert_eq!(
                accepted[1].1.brand.as_deref(),
                Some(format!("two{eol}lines").as_str()),
                "{eol:?}: inside a quoted field the line end is data"
            );
            assert_eq!(accepted[2].1.event_type, EventType::Cart, "{eol:?}");
            assert_eq!(rejected.len(), 1, "{eol:?}");
            assert_eq!(rejected[0].line, 4, "{eol:?}");
            assert_eq!(rejected[0].raw, "bad", "{eol:?}");
            assert_eq!(rejected[0].kind, RejectKind::FieldCount, "{eol:?}");
        }
    }

    #[test]
    fn mixed_line_ends_and_a_final_cr() {
        let text = format!(
            "{}\r{}\n\r\nbad\r\r\n{}\r",
            HEADER.trim_end(),
            GOOD.trim_end(),
            GOOD.trim_end()
        );
        let (accepted, rejected) = parse(text.as_bytes());
        let lines: Vec<u64> = accepted.iter().map(|(l, _)| *l).collect();
        // header 1, GOOD 2, blank 3, bad 4, blank 5, GOOD 6.
        assert_eq!(lines, vec![2, 6]);
        let lines: Vec<u64> = rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![4]);
        let offsets: Vec<u64> = open("t", text.as_bytes())
            .unwrap()
            .map(|r| r.unwrap().byte_offset)
            .collect();
        let header = HEADER.len() as u64;
        let good = GOOD.len() as u64;
        assert_eq!(
            offsets,
            vec![header, header + good + 2, header + good + 2 + 6]
        );
    }

    #[test]
    fn a_crlf_split_between_two_reads_is_one_line_end() {
        // One byte per read: every CR is at the end of what was read so far.
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
        for eol in ["\r\n", "\r"] {
            let text = rows_with_line_ends(eol);
            let rows: Vec<(u64, bool)> = open("slow", OneByte(text.as_bytes()))
                .unwrap()
                .map(|r| r.unwrap())
                .map(|r| (r.line, r.outcome.is_ok()))
                .collect();
            assert_eq!(
                rows,
                vec![(2, true), (4, false), (5, true), (7, true)],
                "{eol:?}"
            );
        }
    }

    #[test]
    fn an_oversized_row_ended_by_a_cr_costs_one_row() {
        let long = "x".repeat(MAX_RECORD_BYTES + 10);
        for eol in ["\r", "\r\n"] {
            let text = format!(
                "{}{eol}{long}{eol}{}{eol}",
                HEADER.trim_end(),
                GOOD.trim_end()
            );
            let (accepted, rejected) = parse(text.as_bytes());
            assert_eq!(rejected.len(), 1, "{eol:?}");
            assert_eq!(rejected[0].line, 2, "{eol:?}");
            assert_eq!(accepted.len(), 1, "{eol:?}");
            assert_eq!(accepted[0].0, 3, "{eol:?}");
        }
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
