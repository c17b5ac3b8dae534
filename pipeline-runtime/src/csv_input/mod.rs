//! Streaming CSV reader of design brief §3: header matched by name, every rejection rule,
//! each row either an [`Event`] or a [`Rejected`] with line, field and reason. Reads from
//! any `Read` (a file, an object body); memory stays constant whatever the input's size.
//!
//! Line numbers are physical lines of the input (the header is line 1, blank lines count as
//! lines but yield nothing). A line ends at LF, CRLF or a CR not followed by LF (old Mac
//! files), so the three styles give the same rows and line numbers; inside a quoted field
//! any of them is data. Only the columns we use are validated: an extra column may
//! hold anything, including bytes that are not UTF-8.
//!
//! One job a file: `tokenizer` (bytes -> records, line ends, line numbers), `header`
//! (which column holds which field), `row` (the row rules: a record -> an [`Event`] or a
//! [`Rejected`]); this file opens an input and yields its [`ParsedRow`]s.

mod header;
mod row;
#[cfg(test)]
mod test_support;
mod tokenizer;

use std::io::Read;

use crate::error::{Error, Result};
use crate::event::{Event, Rejected};
use tokenizer::Records;

pub use header::Columns;
pub use row::{parse_record, Problem, MAX_KEYWORD_BYTES, MAX_REJECTED_RAW_BYTES};
pub use tokenizer::{Record, MAX_RECORD_BYTES};

/// One data row's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRow {
    /// Physical line number where the row starts (header = 1).
    pub line: u64,
    /// Byte offset of the row's start in the input.
    pub byte_offset: u64,
    pub outcome: std::result::Result<Event, Rejected>,
}

/// The reader of one input, returned by [`open`]. Iterate it, or call
/// [`CsvEvents::next_row`].
pub struct CsvEvents<R: Read> {
    source: String,
    records: Records<R>,
    columns: Columns,
    record: Record,
}

/// Opens a CSV input: strips a BOM, reads and matches the header. `source` names the input
/// in errors and rejections (a path or an object key).
pub fn open<R: Read>(source: impl Into<String>, input: R) -> Result<CsvEvents<R>> {
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
        let outcome = row::outcome(&self.source, line, &self.record, &self.columns);
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

#[cfg(test)]
mod tests {
    use super::test_support::*;

    #[test]
    fn exact_duplicates_are_kept() {
        let text = format!("{HEADER}{GOOD}{GOOD}");
        let (accepted, _) = parse(text.as_bytes());
        assert_eq!(accepted.len(), 2);
        assert_eq!(accepted[0].1, accepted[1].1);
        assert_eq!((accepted[0].0, accepted[1].0), (2, 3));
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
    fn only_a_header_gives_no_rows() {
        let (accepted, rejected) = parse(HEADER.as_bytes());
        assert!(accepted.is_empty() && rejected.is_empty());
    }
}
