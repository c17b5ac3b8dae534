//! Fixtures of the CSV reader's unit tests: a REES46 header and row, and helpers that
//! parse a text and sort its rows into accepted and rejected. Test-only; reads from memory.

use super::open;
use crate::event::{Event, RejectKind, Rejected};

pub(super) const HEADER: &str =
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n";
pub(super) const GOOD: &str = "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde-8bb3-4e00-8c23-a032dfb62e92\n";

/// (line, event) for accepted rows and the rejections, in input order.
pub(super) fn parse(text: &[u8]) -> (Vec<(u64, Event)>, Vec<Rejected>) {
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
pub(super) fn reject(row: &str) -> Rejected {
    let (accepted, rejected) = parse(format!("{HEADER}{row}\n").as_bytes());
    assert!(accepted.is_empty(), "accepted {row:?}");
    assert_eq!(rejected.len(), 1);
    let r = rejected.into_iter().next().unwrap();
    assert_eq!(r.line, 2);
    assert_eq!(r.source, "test.csv");
    r
}

pub(super) fn assert_rejected(row: &str, field: Option<&str>, kind: RejectKind) {
    let r = reject(row);
    assert_eq!(r.field.as_deref(), field, "{row:?}: {}", r.reason);
    assert_eq!(r.kind, kind, "{row:?}: {}", r.reason);
    assert_eq!(r.raw, row);
}
