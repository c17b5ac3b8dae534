//! The tokenizer: bytes -> CSV records of fields, with physical line numbers and byte
//! offsets. Owns line ends (LF, CRLF, a lone CR), the BOM, blank lines, quoted fields that
//! span lines and oversized rows. Reads the given `Read`, no other I/O.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};

const BOM: &[u8] = b"\xEF\xBB\xBF";
const READ_BUFFER: usize = 256 * 1024;

/// One CSV record: its raw bytes (without the line terminator) and its fields.
#[derive(Debug, Default, Clone)]
pub struct Record {
    raw: Vec<u8>,
    /// Unescaped field bytes; used only when the record has quotes.
    unescaped: Vec<u8>,
    quoted: bool,
    spans: Vec<(usize, usize)>,
    /// The row was longer than [`MAX_RECORD_BYTES`]; `raw` holds only its beginning.
    pub(super) oversized: bool,
    /// A quoted field opened on this line is not closed (see [`Records`]).
    pub(super) unterminated: bool,
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
        // Runs between quotes and commas are found with memchr and copied whole.
        let raw = &self.raw;
        let out = &mut self.unescaped;
        let mut i = 0;
        loop {
            let start = out.len();
            if raw.get(i) == Some(&b'"') {
                i += 1;
                loop {
                    let Some(quote) = memchr::memchr(b'"', &raw[i..]) else {
                        // Never closed: the rest of the record is the field.
                        out.extend_from_slice(&raw[i..]);
                        i = raw.len();
                        break;
                    };
                    out.extend_from_slice(&raw[i..i + quote]);
                    i += quote;
                    if raw.get(i + 1) == Some(&b'"') {
                        out.push(b'"');
                        i += 2;
                    } else {
                        i += 1;
                        break;
                    }
                }
            }
            let end = memchr::memchr(b',', &raw[i..]).map_or(raw.len(), |comma| i + comma);
            out.extend_from_slice(&raw[i..end]);
            i = end;
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
pub(super) struct Records<R: Read> {
    input: BufReader<R>,
    /// Lines read ahead and given back, each with its terminator.
    pushback: VecDeque<Vec<u8>>,
    next_line: u64,
    pub(super) offset: u64,
    /// Fields per row, once the header is known.
    pub(super) width: Option<usize>,
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
    pub(super) fn new(input: R) -> Self {
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
    pub(super) fn next(&mut self, record: &mut Record) -> std::io::Result<Option<(u64, u64)>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csv_input::test_support::*;
    use crate::csv_input::{open, MAX_REJECTED_RAW_BYTES};
    use crate::error::Result;
    use crate::event::{EventType, RejectKind};

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
    fn raw_is_the_row_as_written() {
        let text = format!("{HEADER}2019-10-01 00:00:00 UTC,view,1,2,,\"a,b\",\"1.0x\",5,\"s\"\n");
        let (_, rejected) = parse(text.as_bytes());
        assert_eq!(
            rejected[0].raw,
            "2019-10-01 00:00:00 UTC,view,1,2,,\"a,b\",\"1.0x\",5,\"s\""
        );
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

    /// The quoted-field rules one byte at a time, as the tokenizer first had them: the
    /// reference the memchr version must equal.
    fn split_byte_by_byte(raw: &[u8]) -> Vec<Vec<u8>> {
        let mut fields = Vec::new();
        let mut i = 0;
        loop {
            let mut field = Vec::new();
            if raw.get(i) == Some(&b'"') {
                i += 1;
                while i < raw.len() {
                    if raw[i] == b'"' {
                        if raw.get(i + 1) == Some(&b'"') {
                            field.push(b'"');
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    } else {
                        field.push(raw[i]);
                        i += 1;
                    }
                }
            }
            while i < raw.len() && raw[i] != b',' {
                field.push(raw[i]);
                i += 1;
            }
            fields.push(field);
            if i >= raw.len() {
                return fields;
            }
            i += 1;
        }
    }

    #[test]
    fn quoted_fields_split_as_the_byte_by_byte_rules_say() {
        let fixed: [&[u8]; 9] = [
            br#"a,"b, ""c""",,d"#,
            br#""unclosed, still one field"#,
            br#""a"b,c"#,
            br#"x"y,"z""#,
            br#""""#,
            br#""""""#,
            br#","","#,
            br#""a""",b"#,
            b"\"",
        ];
        for raw in fixed {
            let record = Record::from_bytes(raw);
            let fields: Vec<Vec<u8>> = record.iter().map(<[u8]>::to_vec).collect();
            assert_eq!(
                fields,
                split_byte_by_byte(raw),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        // Every record of up to 7 bytes over the alphabet that matters (a, comma, quote),
        // with at least one quote (records without one take the plain comma path).
        let alphabet = [b'a', b',', b'"'];
        for len in 1..=7u32 {
            for n in 0..3usize.pow(len) {
                let raw: Vec<u8> = (0..len).map(|k| alphabet[n / 3usize.pow(k) % 3]).collect();
                if !raw.contains(&b'"') {
                    continue;
                }
                let record = Record::from_bytes(&raw);
                let fields: Vec<Vec<u8>> = record.iter().map(<[u8]>::to_vec).collect();
                assert_eq!(
                    fields,
                    split_byte_by_byte(&raw),
                    "{}",
                    String::from_utf8_lossy(&raw)
                );
            }
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
}
