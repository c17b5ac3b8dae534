//! The resume protocol's state (see [`crate::ingest`]): source ids, the progress
//! record of a source and its barriers, and the decision to send a row or skip it as
//! already delivered. Pure, no I/O.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sources::Source;
use crate::kafka::producer::TopicKind;

/// The first 16 hex digits of sha256(name NUL version_tag).
pub fn source_id(name: &str, version_tag: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([0u8]);
    hasher.update(version_tag.as_bytes());
    let digest = hasher.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Key of a source's progress record.
pub fn progress_key(source_id: &str) -> String {
    format!(
        "{}/{source_id}.json",
        pipeline_config::layout::INGEST_STATE_PREFIX
    )
}

/// The durable progress of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestProgress {
    pub source: String,
    pub source_id: String,
    pub complete: bool,
    pub partitions: Vec<PartitionProgress>,
    /// Rows accepted and rejected (set when complete).
    #[serde(default)]
    pub accepted: u64,
    #[serde(default)]
    pub rejected: u64,
    /// Why the source was dead-lettered as a whole instead of read (a landing object that
    /// is not a CSV file the pipeline reads); set with `complete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
}

/// One partition of one topic in a progress record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionProgress {
    pub topic: TopicKind,
    pub partition: i32,
    /// Messages of this source delivered after the record was written are at or after
    /// this offset.
    pub scan_from: i64,
    /// Every row of this source routed to this partition with a line <= this is in Kafka
    /// (0: none).
    pub max_line: u64,
}

impl IngestProgress {
    /// A record for a source about to be published for the first time: scanning starts at
    /// the current end of each partition.
    pub fn fresh(source: &Source, ends: &[(TopicKind, i32, i64)]) -> Self {
        Self {
            source: source.name(),
            source_id: source.id(),
            complete: false,
            partitions: ends
                .iter()
                .map(|&(topic, partition, end)| PartitionProgress {
                    topic,
                    partition,
                    scan_from: end,
                    max_line: 0,
                })
                .collect(),
            accepted: 0,
            rejected: 0,
            dead_letter: None,
        }
    }

    /// The largest delivered line per partition.
    pub fn delivered_lines(&self) -> BTreeMap<(TopicKind, i32), u64> {
        self.partitions
            .iter()
            .map(|p| ((p.topic, p.partition), p.max_line))
            .collect()
    }

    /// Records a barrier: everything sent so far is acknowledged; `sent` holds the largest
    /// line sent (or found delivered) per partition, `ends` the partitions' end offsets
    /// right after the flush. Partitions for which `held` is true are left as they are:
    /// a resumed run has not yet matched every message an earlier run delivered there, and
    /// moving their scan start past those messages would lose track of them.
    pub fn barrier(
        &mut self,
        sent: &BTreeMap<(TopicKind, i32), u64>,
        ends: &[(TopicKind, i32, i64)],
        held: impl Fn(TopicKind, i32) -> bool,
    ) {
        for &(topic, partition, end) in ends {
            if held(topic, partition) {
                continue;
            }
            let line = sent.get(&(topic, partition)).copied().unwrap_or(0);
            match self
                .partitions
                .iter_mut()
                .find(|p| p.topic == topic && p.partition == partition)
            {
                Some(p) => {
                    p.max_line = p.max_line.max(line);
                    p.scan_from = p.scan_from.max(end);
                }
                None => self.partitions.push(PartitionProgress {
                    topic,
                    partition,
                    scan_from: end,
                    max_line: line,
                }),
            }
        }
        self.partitions.sort_by_key(|p| (p.topic, p.partition));
    }

    /// Partitions the topics have now that the record does not know (the topic grew):
    /// their whole content must be scanned.
    pub fn add_missing_partitions(&mut self, counts: &[(TopicKind, i32)]) {
        for &(topic, count) in counts {
            for partition in 0..count {
                if !self
                    .partitions
                    .iter()
                    .any(|p| p.topic == topic && p.partition == partition)
                {
                    self.partitions.push(PartitionProgress {
                        topic,
                        partition,
                        scan_from: 0,
                        max_line: 0,
                    });
                }
            }
        }
        self.partitions.sort_by_key(|p| (p.topic, p.partition));
    }
}

/// A fingerprint of a message (key and value), to recognise an already delivered row.
/// Only compared within one process, so the std hasher's stability across Rust versions
/// does not matter.
pub fn fingerprint(key: &[u8], value: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    value.hash(&mut hasher);
    hasher.finish()
}

/// What to do with one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Send,
    /// An earlier run delivered it.
    AlreadyDelivered,
}

/// What an earlier run of a source delivered: per partition, the largest line known
/// delivered at its last barrier and the fingerprints of the messages found after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    delivered_lines: BTreeMap<(TopicKind, i32), u64>,
    found_after: BTreeMap<(TopicKind, i32), VecDeque<u64>>,
}

impl Resume {
    pub fn new(
        delivered_lines: BTreeMap<(TopicKind, i32), u64>,
        found_after: BTreeMap<(TopicKind, i32), VecDeque<u64>>,
    ) -> Self {
        Self {
            delivered_lines,
            found_after,
        }
    }

    /// Decides for the row at `line` going to `partition` (rows arrive in line order).
    /// `fingerprint` is only computed when the row may be one found after the barrier.
    pub fn decide(
        &mut self,
        topic: TopicKind,
        partition: i32,
        line: u64,
        fingerprint: impl FnOnce() -> u64,
    ) -> std::result::Result<Decision, String> {
        if self
            .delivered_lines
            .get(&(topic, partition))
            .is_some_and(|&max| line <= max)
        {
            return Ok(Decision::AlreadyDelivered);
        }
        let Some(found) = self.found_after.get_mut(&(topic, partition)) else {
            return Ok(Decision::Send);
        };
        match found.front() {
            None => Ok(Decision::Send),
            Some(&expected) if expected == fingerprint() => {
                found.pop_front();
                Ok(Decision::AlreadyDelivered)
            }
            Some(_) => Err(format!(
                "{topic:?} partition {partition} holds a message that is not line {line} of this source: \
                 another producer wrote to the topic while the source was half published"
            )),
        }
    }

    /// Whether messages found in this partition still wait for their rows.
    pub fn has_unmatched(&self, topic: TopicKind, partition: i32) -> bool {
        self.found_after
            .get(&(topic, partition))
            .is_some_and(|found| !found.is_empty())
    }

    /// Messages found after the barrier that no row matched (must be none at the end).
    pub fn unmatched(&self) -> usize {
        self.found_after.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectInfo;

    fn source() -> Source {
        Source::Object(ObjectInfo {
            key: "landing/a.csv".into(),
            size: 10,
            version_tag: "etag1".into(),
        })
    }

    #[test]
    fn source_id_depends_on_name_and_version() {
        let a = source_id("landing/a.csv", "etag1");
        assert_eq!(a.len(), 16);
        assert_eq!(a, source().id());
        assert_ne!(a, source_id("landing/a.csv", "etag2"));
        assert_ne!(a, source_id("landing/b.csv", "etag1"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(source_id("ab", "c"), source_id("a", "bc"));
        assert_eq!(progress_key("0123"), "_state/ingest/0123.json");
    }

    #[test]
    fn fresh_progress_scans_from_the_current_ends() {
        let p = IngestProgress::fresh(
            &source(),
            &[
                (TopicKind::Events, 0, 10),
                (TopicKind::Events, 1, 0),
                (TopicKind::DeadLetters, 0, 3),
            ],
        );
        assert!(!p.complete);
        assert_eq!(
            p.partitions,
            vec![
                PartitionProgress {
                    topic: TopicKind::Events,
                    partition: 0,
                    scan_from: 10,
                    max_line: 0
                },
                PartitionProgress {
                    topic: TopicKind::Events,
                    partition: 1,
                    scan_from: 0,
                    max_line: 0
                },
                PartitionProgress {
                    topic: TopicKind::DeadLetters,
                    partition: 0,
                    scan_from: 3,
                    max_line: 0
                },
            ]
        );
    }

    #[test]
    fn a_barrier_moves_lines_and_scan_offsets_forward_only() {
        let mut p = IngestProgress::fresh(
            &source(),
            &[(TopicKind::Events, 0, 10), (TopicKind::Events, 1, 5)],
        );
        let mut sent = BTreeMap::new();
        sent.insert((TopicKind::Events, 0), 40u64);
        p.barrier(
            &sent,
            &[
                (TopicKind::Events, 0, 20),
                (TopicKind::Events, 1, 5),
                (TopicKind::DeadLetters, 2, 1),
            ],
            |_, _| false,
        );
        // A later barrier that saw less (nothing sent to partition 0 since) keeps the line.
        p.barrier(&BTreeMap::new(), &[(TopicKind::Events, 0, 20)], |_, _| {
            false
        });
        assert_eq!(
            p.partitions,
            vec![
                PartitionProgress {
                    topic: TopicKind::Events,
                    partition: 0,
                    scan_from: 20,
                    max_line: 40
                },
                PartitionProgress {
                    topic: TopicKind::Events,
                    partition: 1,
                    scan_from: 5,
                    max_line: 0
                },
                PartitionProgress {
                    topic: TopicKind::DeadLetters,
                    partition: 2,
                    scan_from: 1,
                    max_line: 0
                },
            ]
        );
    }

    #[test]
    fn a_barrier_leaves_partitions_with_unmatched_found_messages_alone() {
        let mut p = IngestProgress::fresh(
            &source(),
            &[(TopicKind::Events, 0, 10), (TopicKind::Events, 1, 10)],
        );
        let mut sent = BTreeMap::new();
        sent.insert((TopicKind::Events, 0), 50u64);
        sent.insert((TopicKind::Events, 1), 60u64);
        // Partition 1 still has messages of the earlier run to match: its record stays.
        p.barrier(
            &sent,
            &[(TopicKind::Events, 0, 30), (TopicKind::Events, 1, 40)],
            |_, partition| partition == 1,
        );
        assert_eq!(
            p.partitions,
            vec![
                PartitionProgress {
                    topic: TopicKind::Events,
                    partition: 0,
                    scan_from: 30,
                    max_line: 50
                },
                PartitionProgress {
                    topic: TopicKind::Events,
                    partition: 1,
                    scan_from: 10,
                    max_line: 0
                },
            ]
        );
        let mut r = resume();
        assert!(r.has_unmatched(TopicKind::Events, 0));
        r.decide(TopicKind::Events, 0, 101, || fingerprint(b"7", b"a"))
            .unwrap();
        r.decide(TopicKind::Events, 0, 102, || fingerprint(b"8", b"b"))
            .unwrap();
        assert!(!r.has_unmatched(TopicKind::Events, 0));
        assert!(!r.has_unmatched(TopicKind::DeadLetters, 0));
    }

    #[test]
    fn new_partitions_are_scanned_from_the_start() {
        let mut p = IngestProgress::fresh(&source(), &[(TopicKind::Events, 0, 10)]);
        p.add_missing_partitions(&[(TopicKind::Events, 2), (TopicKind::DeadLetters, 1)]);
        let keys: Vec<(TopicKind, i32, i64)> = p
            .partitions
            .iter()
            .map(|x| (x.topic, x.partition, x.scan_from))
            .collect();
        assert_eq!(
            keys,
            vec![
                (TopicKind::Events, 0, 10),
                (TopicKind::Events, 1, 0),
                (TopicKind::DeadLetters, 0, 0)
            ]
        );
    }

    fn resume() -> Resume {
        let mut lines = BTreeMap::new();
        lines.insert((TopicKind::Events, 0), 100u64);
        let mut found = BTreeMap::new();
        // Partition 0 received two more rows after the barrier, partition 1 one.
        found.insert(
            (TopicKind::Events, 0),
            VecDeque::from(vec![fingerprint(b"7", b"a"), fingerprint(b"8", b"b")]),
        );
        found.insert(
            (TopicKind::Events, 1),
            VecDeque::from(vec![fingerprint(b"9", b"c")]),
        );
        Resume::new(lines, found)
    }

    #[test]
    fn rows_up_to_the_barrier_and_then_the_found_ones_are_not_resent() {
        let mut r = resume();
        let unused = || panic!("no fingerprint needed below the barrier line");
        assert_eq!(
            r.decide(TopicKind::Events, 0, 3, unused),
            Ok(Decision::AlreadyDelivered)
        );
        assert_eq!(
            r.decide(TopicKind::Events, 0, 100, unused),
            Ok(Decision::AlreadyDelivered)
        );
        // After the barrier line: the next rows of partition 0 are the two found messages.
        assert_eq!(
            r.decide(TopicKind::Events, 0, 101, || fingerprint(b"7", b"a")),
            Ok(Decision::AlreadyDelivered)
        );
        assert_eq!(
            r.decide(TopicKind::Events, 1, 102, || fingerprint(b"9", b"c")),
            Ok(Decision::AlreadyDelivered)
        );
        assert_eq!(
            r.decide(TopicKind::Events, 0, 105, || fingerprint(b"8", b"b")),
            Ok(Decision::AlreadyDelivered)
        );
        assert_eq!(r.unmatched(), 0);
        // Then everything is new.
        assert_eq!(
            r.decide(TopicKind::Events, 0, 106, || 0),
            Ok(Decision::Send)
        );
        assert_eq!(
            r.decide(TopicKind::Events, 1, 107, || 0),
            Ok(Decision::Send)
        );
        assert_eq!(
            r.decide(TopicKind::DeadLetters, 0, 108, || 0),
            Ok(Decision::Send)
        );
        assert_eq!(
            r.decide(TopicKind::Events, 5, 109, || 0),
            Ok(Decision::Send)
        );
    }

    #[test]
    fn a_foreign_message_after_the_barrier_stops_the_resume() {
        let mut r = resume();
        let err = r
            .decide(TopicKind::Events, 0, 101, || fingerprint(b"7", b"other"))
            .unwrap_err();
        assert!(
            err.contains("partition 0") && err.contains("line 101"),
            "{err}"
        );
        // Unmatched leftovers are visible at the end.
        assert_eq!(resume().unmatched(), 3);
    }

    #[test]
    fn a_fresh_source_sends_everything() {
        let mut r = Resume::default();
        assert_eq!(r.decide(TopicKind::Events, 0, 2, || 0), Ok(Decision::Send));
    }

    #[test]
    fn progress_record_round_trips_as_json() {
        let mut p = IngestProgress::fresh(&source(), &[(TopicKind::DeadLetters, 0, 3)]);
        p.complete = true;
        p.accepted = 5;
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"topic\":\"dead_letters\""), "{json}");
        assert_eq!(serde_json::from_str::<IngestProgress>(&json).unwrap(), p);
    }

    #[test]
    fn a_dead_lettered_source_keeps_its_reason_and_older_records_have_none() {
        let mut p = IngestProgress::fresh(&source(), &[(TopicKind::DeadLetters, 0, 3)]);
        let json = serde_json::to_string(&p).unwrap();
        assert!(!json.contains("\"dead_letter\""), "{json}");
        p.complete = true;
        p.dead_letter = Some("not a CSV file this pipeline reads: bad header: x".into());
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            json.contains("\"dead_letter\":\"not a CSV file this pipeline reads: bad header: x\""),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<IngestProgress>(&json).unwrap(), p);
        // A record written before dead-lettered files existed.
        let old = r#"{"source":"landing/a.csv","source_id":"0123","complete":true,"partitions":[],"accepted":5,"rejected":0}"#;
        let old: IngestProgress = serde_json::from_str(old).unwrap();
        assert_eq!((old.complete, old.dead_letter), (true, None));
    }
}
