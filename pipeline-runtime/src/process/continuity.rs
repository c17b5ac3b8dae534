//! Whether a partition's log is still the one its durable state was built from. Pure, no
//! I/O.
//!
//! A state in the lake says "every record below offset N is counted". If the topic was
//! deleted and created again (a lost single-broker volume, a switch between a managed and
//! an external Kafka, a mistyped topic name later corrected), offsets start again at 0 and
//! that sentence is about another log: resuming at N would drop every new event below N as
//! a replay, and the lake objects named by offset would be overwritten.
//!
//! So each state file also records the **mark** of the last record it counts (offset N-1
//! and a fingerprint of its key and value), and a new owner starts reading one record
//! early, at N-1. The first record it gets decides:
//! - at N-1 with the same fingerprint: the same log, go on (the record is not applied
//!   again);
//! - at N-1 with another fingerprint, or below N-1 (the consumer's offset was out of range
//!   and reset to the earliest record, i.e. the log now ends before N-1): another log;
//!   the member stops and says so, instead of skipping;
//! - above N-1: the marked record was deleted by retention, so nothing can be compared;
//!   records in `[N, first)` were deleted before anyone read them, which is logged.
//!
//! The same holds for the topic's partition count: events are routed to a partition by
//! their user id modulo the count, so after partitions were added a user's later events
//! land in another partition than the earlier ones, and the two halves would make two
//! partial profiles. The managed Kafka's CRD refuses a partition change; an external topic
//! can still be altered, so each state file also records the count it was built under,
//! and a new owner that finds another count stops ([`check_partition_count`]).
//!
//! The fingerprint is FNV-1a (64 bit) over the key's length, the key and the value: fixed
//! by this module, stable across builds and platforms, cheap enough for every record.

use serde::{Deserialize, Serialize};

/// The last record a state counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMark {
    pub offset: i64,
    /// [`fingerprint`] of the record, as 16 hex digits in the state file's JSON header.
    #[serde(with = "hex_u64")]
    pub fingerprint: u64,
}

/// FNV-1a over `key.len()` (8 bytes, little endian), the key and the value; a missing key
/// or value counts as empty.
pub fn fingerprint(key: Option<&[u8]>, value: Option<&[u8]>) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let key = key.unwrap_or_default();
    let value = value.unwrap_or_default();
    let mut hash = OFFSET_BASIS;
    for byte in (key.len() as u64)
        .to_le_bytes()
        .iter()
        .chain(key)
        .chain(value)
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

/// What the first record read after an assignment says about the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continuity {
    /// The marked record, unchanged: the same log.
    Same,
    /// The marked record is gone (retention); `lost` records after it were never read.
    Unverifiable { lost: i64 },
    /// Another log than the state's: the member must stop.
    Changed(LogChange),
}

/// How the log differs from the one the state was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogChange {
    /// The first record is below the mark: the log now ends before the state's offset.
    WentBack { mark: RecordMark, first_offset: i64 },
    /// The record at the mark's offset is another record.
    RecordDiffers { mark: RecordMark, found: u64 },
}

/// Compares the first record read after an assignment (that started at `mark.offset`)
/// with the state's mark.
pub fn check_first_record(mark: RecordMark, offset: i64, found: u64) -> Continuity {
    if offset < mark.offset {
        Continuity::Changed(LogChange::WentBack {
            mark,
            first_offset: offset,
        })
    } else if offset == mark.offset && found != mark.fingerprint {
        Continuity::Changed(LogChange::RecordDiffers { mark, found })
    } else if offset == mark.offset {
        Continuity::Same
    } else {
        Continuity::Unverifiable {
            lost: offset - mark.offset - 1,
        }
    }
}

/// Where a new owner starts reading a partition whose state is at `state_offset` with
/// `mark`: one record early when the mark is the state's last record, else at the state's
/// offset (a state written before marks existed, or none).
pub fn start_offset(state_offset: Option<i64>, mark: Option<RecordMark>) -> Option<i64> {
    match (state_offset, mark) {
        (Some(offset), Some(mark)) if mark.offset == offset - 1 => Some(mark.offset),
        _ => state_offset,
    }
}

impl LogChange {
    /// What happened and how to resume, for the error that stops the member (and, through
    /// the pod's termination message, the pipeline's condition).
    pub fn describe(&self, topic: &str, partition: i32) -> String {
        let (mark, what) = match self {
            LogChange::WentBack { mark, first_offset } => (
                mark,
                format!(
                    "its log now ends before offset {} (the first record found is at offset {first_offset})",
                    mark.offset + 1
                ),
            ),
            LogChange::RecordDiffers { mark, found } => (
                mark,
                format!(
                    "the record at offset {} is not the one the state counted (fingerprint {found:016x}, expected {:016x})",
                    mark.offset, mark.fingerprint
                ),
            ),
        };
        let next = mark.offset + 1;
        format!(
            "topic {topic} partition {partition} is not the log this pipeline's state was built from: {what}. \
             The topic was probably deleted and created again, or the pipeline now points at another Kafka. \
             Nothing was skipped or overwritten: the state in the object store counts offsets below {next} of the old log. \
             To resume, either restore the old topic, or start the profiles over from the new log by deleting the \
             pipeline's state and lake (the `_state/`, `events/` and `profiles/` prefixes of its bucket) and its search index"
        )
    }
}

/// Whether the topic still has the partition count a partition's state was built under
/// (`None` on either side: not known, nothing to compare). The error says what happened
/// and how to resume.
pub fn check_partition_count(
    topic: &str,
    partition: i32,
    recorded: Option<i32>,
    current: Option<i32>,
) -> Result<(), String> {
    match (recorded, current) {
        (Some(then), Some(now)) if then != now => Err(format!(
            "topic {topic} has {now} partitions, but the state of its partition {partition} was built when it had {then}. \
             Events are routed to a partition by user id modulo the partition count, so a user's events after the change \
             land in another partition than before and would make a second, partial profile. Nothing was written. \
             To resume, either give the topic {then} partitions again (a new topic of that size), or start the profiles over \
             with the new count by deleting the pipeline's state and lake (the `_state/`, `events/` and `profiles/` \
             prefixes of its bucket) and its search index, and re-ingesting the input"
        )),
        _ => Ok(()),
    }
}

mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{value:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = String::deserialize(deserializer)?;
        u64::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_fnv1a_over_key_length_key_and_value() {
        // FNV-1a of the empty input is the offset basis; here the input is 8 zero bytes.
        let mut expected: u64 = 0xcbf2_9ce4_8422_2325;
        for _ in 0..8 {
            expected = expected.wrapping_mul(0x0000_0100_0000_01b3);
        }
        assert_eq!(fingerprint(None, None), expected);
        assert_eq!(fingerprint(None, None), fingerprint(Some(b""), Some(b"")));
        // The key's length keeps "ab"+"c" apart from "a"+"bc".
        assert_ne!(
            fingerprint(Some(b"ab"), Some(b"c")),
            fingerprint(Some(b"a"), Some(b"bc"))
        );
        assert_ne!(
            fingerprint(Some(b"42"), Some(b"{\"price\":1}")),
            fingerprint(Some(b"42"), Some(b"{\"price\":2}"))
        );
    }

    #[test]
    fn the_first_record_says_whether_the_log_is_the_same() {
        let mark = RecordMark {
            offset: 99,
            fingerprint: 7,
        };
        assert_eq!(check_first_record(mark, 99, 7), Continuity::Same);
        assert_eq!(
            check_first_record(mark, 99, 8),
            Continuity::Changed(LogChange::RecordDiffers { mark, found: 8 })
        );
        assert_eq!(
            check_first_record(mark, 0, 7),
            Continuity::Changed(LogChange::WentBack {
                mark,
                first_offset: 0
            })
        );
        assert_eq!(
            check_first_record(mark, 100, 1),
            Continuity::Unverifiable { lost: 0 }
        );
        assert_eq!(
            check_first_record(mark, 150, 1),
            Continuity::Unverifiable { lost: 50 }
        );
    }

    #[test]
    fn reading_starts_one_record_early_only_under_a_matching_mark() {
        let mark = |offset| RecordMark {
            offset,
            fingerprint: 1,
        };
        assert_eq!(start_offset(Some(100), Some(mark(99))), Some(99));
        assert_eq!(start_offset(Some(100), None), Some(100));
        assert_eq!(start_offset(Some(100), Some(mark(50))), Some(100));
        assert_eq!(start_offset(None, None), None);
    }

    #[test]
    fn a_changed_partition_count_is_refused_an_unknown_one_is_not() {
        assert_eq!(check_partition_count("t", 0, Some(4), Some(4)), Ok(()));
        assert_eq!(check_partition_count("t", 0, None, Some(4)), Ok(()));
        assert_eq!(check_partition_count("t", 0, Some(4), None), Ok(()));
        let error = check_partition_count("shop-events", 3, Some(4), Some(6)).unwrap_err();
        assert!(
            error.starts_with("topic shop-events has 6 partitions, but the state of its partition 3 was built when it had 4."),
            "{error}"
        );
        assert!(
            error.contains("give the topic 4 partitions again"),
            "{error}"
        );
    }

    #[test]
    fn marks_are_stored_as_hex_in_json() {
        let mark = RecordMark {
            offset: 5,
            fingerprint: 0xfeed,
        };
        let json = serde_json::to_string(&mark).unwrap();
        assert_eq!(json, r#"{"offset":5,"fingerprint":"000000000000feed"}"#);
        assert_eq!(serde_json::from_str::<RecordMark>(&json).unwrap(), mark);
    }

    #[test]
    fn the_description_says_what_happened_and_how_to_resume() {
        let mark = RecordMark {
            offset: 4_999,
            fingerprint: 1,
        };
        let text = LogChange::WentBack {
            mark,
            first_offset: 0,
        }
        .describe("shop-events", 2);
        assert!(text.starts_with("topic shop-events partition 2 is not the log this pipeline's state was built from: its log now ends before offset 5000 (the first record found is at offset 0)."), "{text}");
        assert!(text.contains("restore the old topic"), "{text}");
    }
}
