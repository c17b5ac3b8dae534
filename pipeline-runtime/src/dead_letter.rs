//! Dead letters: what the pipeline cannot take is recorded, counted and skipped, never lost
//! without a trace. Record builders are pure; [`DeadLetterProducer`] does Kafka I/O.
//!
//! # Where they live
//!
//! Every dead letter is a JSON record on the pipeline's dead-letter topic
//! `<pipeline>-events-dlq`, whichever stage wrote it, so a user has one place to look and
//! the operator's `status.throughput.deadLetters` (the topic's high watermarks) counts them
//! all. Each record carries `source`, `kind` and `reason`, whatever its stage:
//!
//! | stage | written by | key | record |
//! |---|---|---|---|
//! | a CSV row | ingest | the source id | [`crate::event::Rejected`]: `source` (path or object key), `line`, `field`, `kind`, `reason`, `raw` |
//! | a landing object | ingest | the source id | [`crate::event::Rejected`] with `kind: "bad_file"`, `line: 1`, no field, empty `raw`: see [`bad_file`] |
//! | a profile document | process | the user_id | [`SearchDeadLetter`]: `stage: "search"`, `source` (the index), `kind: "search_refused"`, `reason`, `partition`, `batch_start`, `batch_end`, `user_id`, `status`, `error_type`, `document` (the profile) |
//!
//! They are counted in `datapipeline_<role>_dead_letters_total{stage="row"|"landing_file"|"search"}`
//! and logged at error level.
//!
//! A bad landing object goes through the same exactly-once path as the rows (see
//! [`crate::ingest`]): one record, then the object's progress record
//! `_state/ingest/<source id>.json` is marked complete with `dead_letter: <reason>`, so no
//! restart reads it again and the objects after it proceed. The object itself stays where
//! it is; uploading a corrected version (a new ETag) makes it a new source.
//!
//! The topic rather than the object store: the ingest's rows are already there (with
//! exactly-once delivery), the operator already counts it into the pipeline's status, and
//! records keyed and ordered per partition are what a replay tool reads. Objects under a
//! `dead-letters/` prefix would be a second place to look and a second count to report.
//!
//! # Delivery of search dead letters
//!
//! A profile the index refuses for good (see [`crate::search`]) is written to the topic,
//! acknowledged by all in-sync replicas, *before* the checkpoint's commit point (its state
//! file; see [`crate::process::checkpoint`]), so no committed checkpoint ever dropped a
//! profile silently. The write is at-least-once: if the process crashes (or the
//! checkpoint is retried after a failure in a later step) between the dead-letter write
//! and the commit point, the replay of the batch indexes the same profiles and the index
//! refuses the same ones again, so the topic gets the same record again. Such duplicates
//! carry the same `(partition, batch_start, user_id)`, which identifies a dead letter:
//! deduplicate on it. Within one run a checkpoint writes its dead letters once, even when
//! a later step of it is retried.
//!
//! The embedded `run` has no search index (nor Kafka): it never indexes, so it has no
//! search dead letters; its rejected rows go to `rejected.jsonl` as before.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};

use crate::config::KafkaSettings;
use crate::error::{Error, Result};
use crate::event::{RejectKind, Rejected};
use crate::metrics::{DeadLetterStage, Metrics};
use crate::profile::Profile;
use crate::search::DocumentRefusal;

/// `stage` of a search dead letter.
pub const SEARCH_STAGE: &str = "search";
/// `kind` of a search dead letter.
pub const SEARCH_REFUSED: &str = "search_refused";
/// Longest `reason` of a bad-file dead letter, in bytes (a binary "header" can be up to a
/// megabyte of garbage; the reason quotes it).
pub const MAX_FILE_REASON_BYTES: usize = 1024;
/// How long a dead letter may wait for the brokers before the checkpoint fails (and is
/// retried).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A profile the search index refused for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchDeadLetter {
    /// Always [`SEARCH_STAGE`].
    pub stage: String,
    /// The index that refused it.
    pub source: String,
    /// Always [`SEARCH_REFUSED`].
    pub kind: String,
    /// `HTTP <status> <error type>: <engine's reason>`.
    pub reason: String,
    /// The events partition and the checkpoint's range `[batch_start, batch_end)`.
    pub partition: i32,
    pub batch_start: i64,
    pub batch_end: i64,
    pub user_id: u64,
    pub status: u16,
    /// The engine's error type (`mapper_parsing_exception`, ...); empty if it gave none.
    pub error_type: String,
    /// The refused document as it was sent (to index it by hand once the cause is fixed).
    pub document: Option<Profile>,
}

/// The dead letters of a checkpoint of `partition` covering `[start, end)` whose profiles
/// `changed` (in user id order) were sent to `index`, which refused `refusals`. Ordered by
/// user id.
pub fn search_dead_letters(
    index: &str,
    partition: i32,
    start: i64,
    end: i64,
    refusals: &[DocumentRefusal],
    changed: &[Profile],
) -> Vec<SearchDeadLetter> {
    let mut letters: Vec<SearchDeadLetter> = refusals
        .iter()
        .map(|refused| SearchDeadLetter {
            stage: SEARCH_STAGE.to_string(),
            source: index.to_string(),
            kind: SEARCH_REFUSED.to_string(),
            reason: refused.refusal.to_string(),
            partition,
            batch_start: start,
            batch_end: end,
            user_id: refused.user_id,
            status: refused.refusal.status,
            error_type: refused.refusal.error_type.clone(),
            document: changed
                .binary_search_by_key(&refused.user_id, |p| p.user_id)
                .ok()
                .map(|i| changed[i].clone()),
        })
        .collect();
    letters.sort_by_key(|l| l.user_id);
    letters
}

/// `text` cut to at most `max` bytes on a character boundary, saying so.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{} (cut at {max} bytes)", &text[..cut])
}

/// The dead letter of a landing object that is not a CSV file the pipeline reads, when
/// `error` (from opening it) says so: its first line is not a usable header (empty, binary,
/// compressed, another format, or a header without the required columns). Those are
/// properties of the object's bytes, so every read gives the same record (the ingest's
/// exactly-once resume compares it). Failures to read it (network, auth, throttling) are
/// not: they are `None` and retried.
pub fn bad_file(source: &str, error: &Error) -> Option<Rejected> {
    match error {
        Error::Header { reason, .. } => Some(Rejected {
            source: source.to_string(),
            line: 1,
            field: None,
            kind: RejectKind::BadFile,
            reason: bounded(
                &format!("not a CSV file this pipeline reads: bad header: {reason}"),
                MAX_FILE_REASON_BYTES,
            ),
            raw: String::new(),
        }),
        _ => None,
    }
}

/// The process role's writer of dead letters: an idempotent producer to the dead-letter
/// topic, acknowledged by all in-sync replicas; each call waits for its records. Cheap to
/// clone (the client is shared).
#[derive(Clone)]
pub struct DeadLetterProducer {
    producer: FutureProducer,
    topic: String,
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for DeadLetterProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterProducer")
            .field("topic", &self.topic)
            .finish()
    }
}

impl DeadLetterProducer {
    /// Builds the producer (no request is made until the first record).
    pub fn new(settings: &KafkaSettings, metrics: Option<Metrics>) -> Result<Self> {
        let producer = crate::kafka::dead_letter_producer_config(settings)
            .create()
            .map_err(|e| crate::kafka::kafka_error("create dead-letter producer", e))?;
        Ok(Self {
            producer,
            topic: settings.dlq_topic.clone(),
            metrics,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes the search dead letters and waits until the brokers acknowledged every one;
    /// then counts and logs them. Fails (retryably when the brokers' error is transient)
    /// if any is not acknowledged: the caller must not commit past them.
    pub async fn record_search(&self, letters: &[SearchDeadLetter]) -> Result<()> {
        let encoded: Vec<(String, Vec<u8>)> = letters
            .iter()
            .map(|l| Ok((l.user_id.to_string(), serde_json::to_vec(l)?)))
            .collect::<Result<_>>()?;
        let deliveries = encoded.iter().map(|(key, value)| {
            self.producer.send(
                FutureRecord::to(&self.topic).key(key).payload(value),
                DELIVERY_TIMEOUT,
            )
        });
        for result in futures::future::join_all(deliveries).await {
            result.map_err(|(e, _)| crate::kafka::kafka_error("dead letter", e))?;
        }
        for l in letters {
            tracing::error!(
                topic = %self.topic,
                index = %l.source,
                partition = l.partition,
                batch_start = l.batch_start,
                user_id = l.user_id,
                reason = %l.reason,
                "profile refused by the search index; dead-lettered"
            );
        }
        if let Some(m) = &self.metrics {
            m.dead_letter(DeadLetterStage::Search, letters.len() as u64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::Refusal;

    fn profile(user_id: u64) -> Profile {
        let mut book = crate::profile::ProfileBook::new();
        book.apply(&crate::event::Event {
            brand: Some("acme".into()),
            ..crate::event::test_view(user_id)
        })
        .unwrap();
        book.profile(user_id).unwrap()
    }

    #[test]
    fn search_dead_letters_carry_the_batch_the_refusal_and_the_document() {
        let changed = vec![profile(3), profile(8), profile(11)];
        let refusal = |user_id, status: u16, error_type: &str, reason: &str| DocumentRefusal {
            user_id,
            refusal: Refusal {
                status,
                error_type: error_type.into(),
                reason: reason.into(),
            },
        };
        let letters = search_dead_letters(
            "shop-profiles",
            2,
            100,
            140,
            &[
                refusal(11, 413, "", ""),
                refusal(
                    3,
                    400,
                    "mapper_parsing_exception",
                    "failed to parse field [favorite_brand]",
                ),
            ],
            &changed,
        );
        assert_eq!(
            letters,
            vec![
                SearchDeadLetter {
                    stage: "search".into(),
                    source: "shop-profiles".into(),
                    kind: "search_refused".into(),
                    reason:
                        "HTTP 400 mapper_parsing_exception: failed to parse field [favorite_brand]"
                            .into(),
                    partition: 2,
                    batch_start: 100,
                    batch_end: 140,
                    user_id: 3,
                    status: 400,
                    error_type: "mapper_parsing_exception".into(),
                    document: Some(profile(3)),
                },
                SearchDeadLetter {
                    stage: "search".into(),
                    source: "shop-profiles".into(),
                    kind: "search_refused".into(),
                    reason: "HTTP 413".into(),
                    partition: 2,
                    batch_start: 100,
                    batch_end: 140,
                    user_id: 11,
                    status: 413,
                    error_type: String::new(),
                    document: Some(profile(11)),
                },
            ]
        );
        // The JSON names the stage, the batch and the user (what deduplication keys on).
        let json: serde_json::Value = serde_json::to_value(&letters[0]).unwrap();
        assert_eq!(json["stage"], "search");
        assert_eq!(json["partition"], 2);
        assert_eq!(json["batch_start"], 100);
        assert_eq!(json["user_id"], 3);
        assert_eq!(json["document"]["favorite_brand"], "acme");
    }

    #[test]
    fn a_bad_header_is_a_bad_file_and_a_read_failure_is_not() {
        let header = Error::Header {
            input: "landing/x.csv".into(),
            reason: "the input is empty (no header line)".into(),
        };
        assert_eq!(
            bad_file("landing/x.csv", &header),
            Some(Rejected {
                source: "landing/x.csv".into(),
                line: 1,
                field: None,
                kind: RejectKind::BadFile,
                reason: "not a CSV file this pipeline reads: bad header: the input is empty (no header line)"
                    .into(),
                raw: String::new(),
            })
        );
        let read = Error::Read {
            input: "landing/x.csv".into(),
            error: std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"),
        };
        assert_eq!(bad_file("landing/x.csv", &read), None);
        let store = Error::Store {
            op: "get",
            key: "landing/x.csv".into(),
            retryable: false,
            message: "AccessDenied".into(),
        };
        assert_eq!(bad_file("landing/x.csv", &store), None);
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        assert_eq!(bounded("short", 10), "short");
        // "aéé" is 5 bytes (a: 0, é: 1-2, é: 3-4); a cut inside an "é" backs off before it.
        assert_eq!(bounded("aéé", 4), "aé (cut at 4 bytes)");
        assert_eq!(bounded("aéé", 3), "aé (cut at 3 bytes)");
        assert_eq!(bounded("aéé", 2), "a (cut at 2 bytes)");
    }

    #[test]
    fn binary_and_foreign_csv_objects_are_bad_files_with_their_reason() {
        let open = |bytes: &'static [u8]| {
            let error = crate::csv_input::open("landing/b.csv", bytes)
                .err()
                .expect("no usable header");
            bad_file("landing/b.csv", &error).map(|r| r.reason)
        };
        // The start of a gzip stream: not UTF-8, no header.
        assert_eq!(
            open(b"\x1f\x8b\x08\x00\xff\x00"),
            Some(
                "not a CSV file this pipeline reads: bad header: required column(s) event_time, \
                 event_type, product_id, price, user_id not found in header \"\\u{1f}\u{fffd}\\u{8}\\0\u{fffd}\\0\""
                    .to_string()
            )
        );
        assert_eq!(
            open(b"id,name\n1,x\n"),
            Some(
                "not a CSV file this pipeline reads: bad header: required column(s) event_time, \
                 event_type, product_id, price, user_id not found in header \"id,name\""
                    .to_string()
            )
        );
        assert_eq!(
            open(b""),
            Some(
                "not a CSV file this pipeline reads: bad header: the input is empty (no header line)"
                    .to_string()
            )
        );
        // A megabyte-long first line is quoted only up to the bound.
        let long: &'static [u8] = Box::leak(vec![b'x'; 1 << 20].into_boxed_slice());
        let reason = open(long).unwrap();
        assert!(reason.ends_with(" (cut at 1024 bytes)"), "{reason}");
        assert_eq!(reason.len(), 1024 + " (cut at 1024 bytes)".len());
    }
}
