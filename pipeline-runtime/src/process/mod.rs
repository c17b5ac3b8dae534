//! `pipeline-runtime process`: one member of the consumer group that turns the events
//! topic into profiles, the Parquet lake and the search index, with effectively-once
//! results (see [`checkpoint`] for the protocol and its recovery). Does Kafka, object-store
//! and search I/O.
//!
//! Threads: the consumer runs on a thread of its own (librdkafka calls the rebalance
//! callback from `poll`, and the callback must finish a checkpoint before it returns);
//! checkpoint I/O runs as tasks on the Tokio runtime, so the next batch accumulates while
//! the previous one is written. At most one checkpoint per partition is in flight; a
//! partition whose pending events exceed its share of `max_pending_events` while its
//! checkpoint is still being written is paused (backpressure from the sinks).
//!
//! Most checkpoints are deltas (the changed users only); [`partition::FULL_CHECKPOINTS`]
//! decides when a partition writes a full one (snapshot and base). Kafka offsets are
//! committed after full checkpoints only, so a committed offset means the snapshot holds
//! it too; the durable state (base plus deltas), not the commit, is where processing
//! resumes.
//!
//! A checkpoint that fails (a sink refuses or cannot be reached, whatever the error) is
//! retried with backoff (0.5 s doubling to 30 s) for as long as it fails; its partition
//! neither commits nor writes a later checkpoint meanwhile, and is paused once its pending
//! events reach their share. While any checkpoint is failing, `/readyz` answers 503 naming
//! the partition, the sink and the error (for the search index: the HTTP status and the
//! engine's error type and reason), so the operator reports the pipeline Degraded; it turns
//! ready again once they succeed. Only a checkpoint whose encoded batch is gone (encoding
//! failed after consuming it) ends the member, so the partition is replayed from its
//! durable state. On revoke and shutdown the checkpoint gets [`FINAL_ATTEMPTS`] more tries;
//! if they fail it is abandoned without a commit and the next owner replays it.
//!
//! Two checks stop the member instead of letting it write what would be wrong: a partition
//! whose log is not the one its state was built from (the topic was recreated; see
//! [`continuity`]), and a partition another member has claimed since (its checkpoint meets
//! the other member's conditional writes; see [`checkpoint`]). Either error ends the run,
//! and its message is the pod's termination message.

pub mod checkpoint;
pub mod continuity;
pub mod partition;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::TopicPartitionList;
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::config::{CheckpointSettings, KafkaSettings, Lookup, ProcessArgs, ProcessEnv};
use crate::dead_letter::DeadLetterProducer;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::kafka::consumer::{commit_offsets, PartitionHandler, RebalanceContext};
use crate::kafka::kafka_error;
use crate::metrics::{Metrics, PartitionLabels, Sink, SinkErrorKind};
use crate::retry::{wait_for, Backoff};
use crate::search::SearchIndex;
use crate::store::ObjectStore;
use checkpoint::{CheckpointJob, Fence};
use continuity::{check_first_record, Continuity, RecordMark};
use partition::{Applied, FullCheckpointPolicy, LastFull, PartitionState, FULL_CHECKPOINTS};

/// Attempts of a checkpoint that must finish now (revoke, shutdown) before giving up.
/// Each attempt already retries its sink writes for about a minute; two attempts keep a
/// revoke well inside `max.poll.interval.ms` (5 minutes), after which the group would
/// evict this member anyway.
const FINAL_ATTEMPTS: u32 = 2;
/// How long loading a newly assigned partition's state waits out an object-store outage:
/// inside the rebalance callback, well under `max.poll.interval.ms` (5 minutes).
const RECOVERY_PATIENCE: Duration = Duration::from_secs(180);
/// Smallest per-partition share of `max_pending_events`.
const MIN_PARTITION_PENDING: usize = 10_000;
/// A partition read to its end that got no message for this long checkpoints its pending
/// events at once instead of at the next interval: the end of a burst is durable (and,
/// with a full checkpoint, committed) without waiting for the timer.
const QUIET_AFTER: Duration = Duration::from_millis(250);

/// Totals of one process run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProcessSummary {
    pub events_applied: u64,
    pub events_replayed: u64,
    /// Messages not applied, each logged at error level with partition and offset: not an
    /// event (undecodable, no value), or an event its user's profile cannot take (a count
    /// or the revenue would overflow; the log names the user_id).
    pub events_skipped: u64,
    pub checkpoints: u64,
}

/// Runs the process role until SIGTERM/SIGINT (or, with `--exit-when-idle`, until caught
/// up), then checkpoints, commits and leaves the group.
pub async fn run(args: ProcessArgs) -> Result<ProcessSummary> {
    let shutdown = Arc::new(AtomicBool::new(false));
    spawn_signal_listener(shutdown.clone());
    run_with(args, &ProcessEnv, shutdown).await
}

/// [`run`] with credentials from `lookup`, stopping when `shutdown` becomes true.
pub async fn run_with(
    args: ProcessArgs,
    lookup: &dyn Lookup,
    shutdown: Arc<AtomicBool>,
) -> Result<ProcessSummary> {
    let names = pipeline_config::PipelineNames::new(&args.common.pipeline);
    let kafka = args.kafka.resolve(&names, lookup)?;
    let search_settings = args.search.resolve(&names, lookup)?;
    let settings = args.checkpoint_settings()?;
    let metrics = Metrics::new("process");
    if args.common.http_port != 0 {
        crate::http::serve(args.common.http_port, metrics.clone()).await?;
    }
    let store_settings = args.store.resolve(lookup)?;
    let store = wait_for("the object store", &shutdown, || {
        ObjectStore::open(&store_settings)
    })
    .await?;
    let search = SearchIndex::connect(&search_settings, Some(metrics.clone()))?;
    let dead_letters = DeadLetterProducer::new(&kafka, Some(metrics.clone()))?;
    wait_for("the search index", &shutdown, || search.ensure_index()).await?;
    tracing::info!(
        topic = %kafka.events_topic,
        group = %kafka.consumer_group,
        store = %store.describe(),
        index = %search.index_name(),
        dead_letters = %dead_letters.topic(),
        "process started"
    );
    let topic = kafka.events_topic.clone();
    let worker = Worker {
        kafka,
        settings,
        shared: Arc::new(Shared {
            store,
            search,
            dead_letters,
            metrics,
            handle: Handle::current(),
            slots: Mutex::new(BTreeMap::new()),
            owner: checkpoint::owner_id(),
            topic,
            stopping: shutdown.clone(),
        }),
        shutdown,
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("process-consumer".into())
        .spawn(move || {
            let _ = done_tx.send(worker.run());
        })
        .map_err(|e| Error::Worker(format!("cannot start the consumer thread: {e}")))?;
    done_rx
        .await
        .map_err(|_| Error::Worker("the consumer thread stopped without a result".into()))?
}

fn spawn_signal_listener(shutdown: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = terminate => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("shutdown requested: final checkpoint, commit, leave the group");
        shutdown.store(true, Ordering::SeqCst);
    });
}

/// State shared by the consumer loop and the rebalance callback (both on the consumer
/// thread, so the mutex is never contended; it exists because the callback only gets
/// `&self`).
struct Shared {
    store: ObjectStore,
    search: SearchIndex,
    dead_letters: DeadLetterProducer,
    metrics: Metrics,
    handle: Handle,
    slots: Mutex<BTreeMap<i32, Slot>>,
    /// This member's name in the intents it writes (see [`checkpoint::Fence`]).
    owner: String,
    /// The events topic.
    topic: String,
    /// Shutdown was requested (ends waits).
    stopping: Arc<AtomicBool>,
}

struct Slot {
    state: PartitionState,
    in_flight: Option<InFlight>,
    paused: bool,
    last_full: LastFull,
    /// Read up to the log end (the consumer reported the partition's end, and no message
    /// came since).
    at_end: bool,
    /// When the last message of the partition arrived (or it was assigned).
    last_message: Instant,
    /// The state's last record, which the first record read must match (reading started
    /// at its offset; see [`continuity`]).
    verify: Option<RecordMark>,
    /// This member's claim on the partition.
    fence: Arc<Fence>,
    /// Where the consumer stood when it last reported the partition's end.
    end_seen: Option<EndSeen>,
}

/// The consumer reported a partition's end: its position then, and how far the state had
/// counted. The two differ by records the consumer never hands out: transaction markers
/// (the ingest commits a transaction about once a second) and aborted messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EndSeen {
    next_offset: i64,
    position: i64,
}

/// The offset to commit for a partition whose durable state ends at `durable_end`: past
/// the records after it that hold no event, when every event before the consumer's
/// position is in that state. Otherwise a caught-up partition would show a lag of one
/// marker forever.
fn commit_point(durable_end: i64, end_seen: Option<EndSeen>) -> i64 {
    match end_seen {
        Some(seen) if durable_end >= seen.next_offset => durable_end.max(seen.position),
        _ => durable_end,
    }
}

impl Slot {
    /// Users whose profiles and states the in-flight checkpoint holds, if it is full.
    fn full_users_in_flight(&self) -> usize {
        self.in_flight
            .as_ref()
            .filter(|f| f.job.full)
            .map_or(0, |f| f.job.users)
    }
}

/// A checkpoint being written (or waiting to be retried).
struct InFlight {
    job: Arc<CheckpointJob>,
    task: Option<JoinHandle<Result<()>>>,
    started: Instant,
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// The last failure of this checkpoint (`None`: it has not failed), for `/readyz`.
    last_error: Option<String>,
}

/// The sink a checkpoint failure happened in.
fn sink_of(error: &Error) -> Sink {
    match error {
        Error::Search { .. } => Sink::Search,
        Error::Kafka { .. } => Sink::Kafka,
        _ => Sink::ObjectStore,
    }
}

/// What `/readyz` says about a failing checkpoint.
fn failure_reason(partition: i32, error: &Error) -> String {
    format!(
        "partition {partition}: sink {}: {error}",
        sink_of(error).as_str()
    )
}

impl Shared {
    fn slots(&self) -> MutexGuard<'_, BTreeMap<i32, Slot>> {
        match self.slots.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn spawn_checkpoint(
        &self,
        job: Arc<CheckpointJob>,
        fence: Arc<Fence>,
    ) -> JoinHandle<Result<()>> {
        let store = self.store.clone();
        let search = self.search.clone();
        let dead_letters = self.dead_letters.clone();
        self.handle
            .spawn(async move { job.write(&store, &search, &dead_letters, &fence).await })
    }

    /// Writes a checkpoint now, retrying a few times (revoke and shutdown).
    fn checkpoint_now(&self, job: Arc<CheckpointJob>, fence: &Fence) -> Result<()> {
        let started = Instant::now();
        let result = self.handle.block_on(crate::retry::retry(
            "final checkpoint",
            FINAL_ATTEMPTS,
            || job.write(&self.store, &self.search, &self.dead_letters, fence),
        ));
        match &result {
            Ok(()) => self.checkpoint_done(&job, started),
            Err(e) => self
                .metrics
                .sink_error(sink_of(e), SinkErrorKind::Failed, 1),
        }
        result
    }

    /// Waits for an in-flight checkpoint, retrying it if it failed (revoke and shutdown).
    fn finish_in_flight(&self, in_flight: InFlight, fence: &Fence) -> Result<()> {
        if let Some(task) = in_flight.task {
            match self.handle.block_on(task) {
                Ok(Ok(())) => {
                    self.checkpoint_done(&in_flight.job, in_flight.started);
                    return Ok(());
                }
                Ok(Err(e)) => {
                    tracing::warn!(partition = in_flight.job.partition, error = %e, "checkpoint failed; retrying")
                }
                Err(e) => {
                    tracing::warn!(partition = in_flight.job.partition, error = %e, "checkpoint task died; retrying")
                }
            }
        }
        self.checkpoint_now(in_flight.job, fence)
    }

    /// Finishes the in-flight checkpoint and writes a full one if anything is not in a
    /// base yet (revoke and shutdown). Returns the offset to commit, if any.
    fn final_checkpoint(&self, slot: &mut Slot) -> Result<Option<i64>> {
        let mut commit = None;
        if let Some(in_flight) = slot.in_flight.take() {
            let job = in_flight.job.clone();
            self.finish_in_flight(in_flight, &slot.fence)?;
            if job.full {
                commit = Some(job.end);
            }
        }
        if slot.state.behind_full() {
            let job = Arc::new(CheckpointJob::new(slot.state.take_batch(true)));
            let end = job.end;
            self.checkpoint_now(job, &slot.fence)?;
            commit = Some(end);
        }
        Ok(commit)
    }

    fn checkpoint_done(&self, job: &CheckpointJob, started: Instant) {
        let m = &self.metrics;
        m.checkpoint_duration
            .observe(started.elapsed().as_secs_f64());
        m.checkpoints.inc();
        if job.full {
            m.full_checkpoints.inc();
        }
        m.events_out.inc_by(job.events as u64);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        m.last_checkpoint.set(now);
        tracing::debug!(
            partition = job.partition,
            start = job.start,
            end = job.end,
            events = job.events,
            profiles = job.changed_profiles(),
            full = job.full,
            ms = started.elapsed().as_millis() as u64,
            "checkpoint written"
        );
    }
}

/// The rebalance side, called by librdkafka from inside `poll`.
struct Handler(Arc<Shared>);

impl PartitionHandler for Handler {
    fn on_assign(
        &self,
        partitions: &[i32],
        topic_partitions: Option<i32>,
    ) -> std::result::Result<Vec<(i32, Option<i64>)>, String> {
        let shared = &self.0;
        let mut starts = Vec::new();
        for &partition in partitions {
            // An object-store outage is waited out, up to a limit that keeps the member
            // in the group (it does not poll meanwhile); past it the member exits and its
            // restart waits for the store before joining again.
            let deadline = tokio::time::Instant::now() + RECOVERY_PATIENCE;
            let recovered = shared.handle.block_on(crate::retry::wait_until(
                &format!("the object store, to load the state of partition {partition}"),
                &shared.stopping,
                Some(deadline),
                || checkpoint::recover(&shared.store, partition, &shared.owner),
            ));
            let recovered = recovered
                .map_err(|e| format!("partition {partition}: cannot load its state: {e}"))?;
            continuity::check_partition_count(
                &shared.topic,
                partition,
                recovered.topic_partitions,
                topic_partitions,
            )?;
            let offset = recovered.offset;
            let start = continuity::start_offset(offset, recovered.last_record);
            let verify = recovered.last_record.filter(|_| start != offset);
            tracing::info!(partition, offset = ?offset, users = recovered.book.len(), deltas = recovered.deltas, verify_from = ?verify.map(|m| m.offset), "partition assigned");
            shared.slots().insert(
                partition,
                Slot {
                    state: PartitionState::restored(
                        partition,
                        recovered.book,
                        offset.unwrap_or(0),
                        recovered.deltas,
                    )
                    .with_last_record(recovered.last_record)
                    .with_topic_partitions(topic_partitions),
                    in_flight: None,
                    paused: false,
                    last_full: LastFull::default(),
                    at_end: false,
                    last_message: Instant::now(),
                    verify,
                    fence: Arc::new(recovered.fence),
                    end_seen: None,
                },
            );
            starts.push((partition, start));
        }
        shared
            .metrics
            .assigned_partitions
            .set(shared.slots().len() as i64);
        Ok(starts)
    }

    fn on_revoke(&self, partitions: &[i32], lost: bool) -> Vec<(i32, i64)> {
        let shared = &self.0;
        let mut commits = Vec::new();
        for &partition in partitions {
            let slot = shared.slots().remove(&partition);
            shared.metrics.lag.remove(&PartitionLabels {
                partition: i64::from(partition),
            });
            let Some(mut slot) = slot else { continue };
            if lost {
                // Someone else may own it already: write nothing more.
                if let Some(task) = slot.in_flight.and_then(|f| f.task) {
                    task.abort();
                }
                tracing::warn!(
                    partition,
                    "partition lost; its unfinished checkpoint is abandoned"
                );
                continue;
            }
            match shared.final_checkpoint(&mut slot) {
                Ok(Some(end)) => commits.push((partition, commit_point(end, slot.end_seen))),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(partition, error = %e, "checkpoint abandoned on revoke; the next owner replays");
                    continue;
                }
            }
            tracing::info!(partition, "partition revoked after its final checkpoint");
        }
        shared
            .metrics
            .assigned_partitions
            .set(shared.slots().len() as i64);
        commits
    }

    fn on_lag(&self, lag: &[(i32, i64)]) {
        let shared = &self.0;
        let slots = shared.slots();
        for &(partition, value) in lag {
            if slots.contains_key(&partition) {
                shared
                    .metrics
                    .lag
                    .get_or_create(&PartitionLabels {
                        partition: i64::from(partition),
                    })
                    .set(value);
            }
        }
    }
}

type ProcessConsumer = BaseConsumer<RebalanceContext<Handler>>;

/// The consumer's position in `partition` (the next offset it hands out), if it has one.
fn consumer_position(consumer: &ProcessConsumer, topic: &str, partition: i32) -> Option<i64> {
    let positions = consumer.position().ok()?;
    let element = positions.find_partition(topic, partition)?;
    match element.offset() {
        rdkafka::topic_partition_list::Offset::Offset(offset) => Some(offset),
        _ => None,
    }
}

struct Worker {
    kafka: KafkaSettings,
    settings: CheckpointSettings,
    shared: Arc<Shared>,
    shutdown: Arc<AtomicBool>,
}

impl Worker {
    fn run(self) -> Result<ProcessSummary> {
        let topic = self.kafka.events_topic.clone();
        let context = RebalanceContext::new(topic.clone(), Handler(self.shared.clone()));
        let consumer: ProcessConsumer =
            crate::kafka::consumer_config(&self.kafka, &self.kafka.consumer_group)
                .create_with_context(context)
                .map_err(|e| kafka_error("create consumer", e))?;
        // The topic (and, on a managed Kafka, the ACLs set before it) may come after this
        // pod; a subscription to a topic the client may not see yet would only be retried
        // at the next metadata refresh.
        self.shared.handle.block_on(crate::retry::wait_for(
            "the events topic",
            &self.shutdown,
            || async {
                crate::kafka::partition_count(consumer.client(), &topic, Duration::from_secs(30))
            },
        ))?;
        consumer
            .subscribe(&[&topic])
            .map_err(|e| kafka_error("subscribe", e))?;
        self.shared.metrics.set_ready(true);

        let result = self.consume(&consumer, &topic);
        self.shared.metrics.set_ready(false);
        let final_result = match result {
            Ok(summary) => self.finish(&consumer, &topic).map(|()| ProcessSummary {
                checkpoints: self.shared.metrics.checkpoints.get(),
                ..summary
            }),
            Err(e) => Err(e),
        };
        // Dropping the consumer closes it: the group is left at once instead of after the
        // session timeout. The slots are empty, so the revoke callback writes nothing.
        consumer.unsubscribe();
        drop(consumer);
        final_result
    }

    fn consume(&self, consumer: &ProcessConsumer, topic: &str) -> Result<ProcessSummary> {
        let shared = &self.shared;
        let metrics = &shared.metrics;
        let mut summary = ProcessSummary::default();
        let mut last_checkpoint = Instant::now();
        let mut last_message = Instant::now();
        let mut seen_assignment = false;
        let mut housekeeping_at = Instant::now();
        loop {
            if self.shutdown.load(Ordering::SeqCst) {
                return Ok(summary);
            }
            let polled = consumer.poll(Duration::from_millis(100));
            let got_message = polled.is_some();
            // One clock read per message: it cost more than a hash lookup on this VM.
            let now = Instant::now();
            if let Some(reason) = consumer.context().take_fatal() {
                return Err(Error::Kafka {
                    step: "rebalance",
                    retryable: true,
                    message: reason,
                });
            }
            match polled {
                Some(Ok(message)) => {
                    last_message = now;
                    metrics.events_in.inc();
                    let partition = message.partition();
                    let offset = message.offset();
                    let mut slots = shared.slots();
                    let Some(slot) = slots.get_mut(&partition) else {
                        continue;
                    };
                    slot.at_end = false;
                    slot.last_message = last_message;
                    if let Some(expected) = slot.verify.take() {
                        let fingerprint = continuity::fingerprint(message.key(), message.payload());
                        match check_first_record(expected, offset, fingerprint) {
                            // The state's own last record: counted already.
                            Continuity::Same => continue,
                            Continuity::Unverifiable { lost } => {
                                if lost > 0 {
                                    tracing::error!(partition, first_offset = offset, lost, "records after the state's offset were deleted by retention before they were read");
                                    metrics.events_lost_to_retention.inc_by(lost as u64);
                                } else {
                                    tracing::info!(partition, offset, "the state's last record was deleted by retention; continuity not checked");
                                }
                            }
                            Continuity::Changed(change) => {
                                return Err(Error::LogChanged(change.describe(topic, partition)));
                            }
                        }
                    }
                    let event = message.payload().map(Event::from_json);
                    match event {
                        Some(Ok(event)) => match slot.state.apply(offset, event) {
                            Ok(Applied::Applied) => summary.events_applied += 1,
                            Ok(Applied::Replayed) => {
                                summary.events_replayed += 1;
                                metrics.events_replayed.inc();
                            }
                            // The state is unchanged and the offset consumed (see
                            // `PartitionState::apply`): reported like an undecodable event.
                            Err(e) => {
                                tracing::error!(partition, offset, error = %e, "event its profile cannot take skipped");
                                metrics.events_rejected.inc();
                                summary.events_skipped += 1;
                            }
                        },
                        Some(Err(e)) => {
                            tracing::error!(partition, offset, error = %e, "undecodable event skipped");
                            metrics.events_rejected.inc();
                            summary.events_skipped += 1;
                            slot.state.skip(offset);
                        }
                        None => {
                            tracing::error!(partition, offset, "event without a value skipped");
                            metrics.events_rejected.inc();
                            summary.events_skipped += 1;
                            slot.state.skip(offset);
                        }
                    }
                    slot.state
                        .note_record(offset, message.key(), message.payload());
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    let position = consumer_position(consumer, topic, partition);
                    let mut slots = shared.slots();
                    if let Some(slot) = slots.get_mut(&partition) {
                        slot.at_end = true;
                        slot.end_seen = position.map(|position| EndSeen {
                            next_offset: slot.state.next_offset(),
                            position,
                        });
                        // Nothing left to write: the end can be committed now.
                        let durable = slot.verify.is_none()
                            && !slot.state.has_pending()
                            && slot.in_flight.is_none();
                        let point = commit_point(slot.state.next_offset(), slot.end_seen);
                        if durable && point > slot.state.next_offset() {
                            drop(slots);
                            if let Err(e) = commit_offsets(
                                consumer,
                                topic,
                                &[(partition, point)],
                                CommitMode::Async,
                            ) {
                                tracing::warn!(error = %e, "offset commit failed");
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    metrics.sink_error(Sink::Kafka, SinkErrorKind::Retried, 1);
                }
                None => {}
            }
            // Housekeeping at most every 10 ms: it takes the lock and walks the partitions.
            if now.duration_since(housekeeping_at) < Duration::from_millis(10) && got_message {
                continue;
            }
            housekeeping_at = now;
            metrics.beat();
            self.collect_finished(consumer, topic)?;
            let due = now.duration_since(last_checkpoint) >= self.settings.interval;
            if due {
                last_checkpoint = now;
            }
            self.start_checkpoints(consumer, topic, due);

            let slots_len = shared.slots().len();
            seen_assignment |= slots_len > 0;
            if self.settings.exit_when_idle
                && seen_assignment
                && now.duration_since(last_message) >= self.settings.interval
                && self.idle_and_caught_up(consumer, topic)
            {
                tracing::info!("caught up and idle; exiting");
                return Ok(summary);
            }
        }
    }

    /// Commits finished checkpoints, schedules retries of failed ones. Returns how many
    /// finished; fails when a checkpoint can never be retried (the member must exit, and
    /// whoever gets the partition replays it from the durable state).
    fn collect_finished(&self, consumer: &ProcessConsumer, topic: &str) -> Result<u64> {
        let shared = &self.shared;
        let mut commits = Vec::new();
        let mut slots = shared.slots();
        for (&partition, slot) in slots.iter_mut() {
            let Some(in_flight) = slot.in_flight.as_mut() else {
                continue;
            };
            if let Some(retry_at) = in_flight.retry_at {
                if Instant::now() >= retry_at {
                    in_flight.retry_at = None;
                    in_flight.task =
                        Some(shared.spawn_checkpoint(in_flight.job.clone(), slot.fence.clone()));
                }
                continue;
            }
            let finished = in_flight.task.as_ref().is_some_and(|t| t.is_finished());
            if !finished {
                continue;
            }
            let Some(task) = in_flight.task.take() else {
                continue;
            };
            let outcome = match shared.handle.block_on(task) {
                Ok(result) => result,
                Err(e) => Err(Error::Worker(format!("checkpoint task: {e}"))),
            };
            match outcome {
                Ok(()) => {
                    shared.checkpoint_done(&in_flight.job, in_flight.started);
                    if in_flight.job.full {
                        slot.last_full = LastFull {
                            finished: Some(Instant::now()),
                            cost: in_flight.job.state_cost(),
                        };
                        commits.push((partition, commit_point(in_flight.job.end, slot.end_seen)));
                    }
                    slot.in_flight = None;
                }
                Err(e @ Error::Conflict { .. }) => {
                    return Err(Error::Worker(format!(
                        "partition {partition}: {e}: another member owns it now; exiting without writing more, so that the owner's state stands"
                    )));
                }
                Err(e) if in_flight.job.is_spent() => {
                    return Err(Error::Worker(format!(
                        "checkpoint of partition {partition} cannot be written again ({e}); exiting so the partition is replayed from its durable state"
                    )));
                }
                Err(e) => {
                    let delay = in_flight.backoff.next_delay();
                    let sink = sink_of(&e);
                    tracing::warn!(partition, sink = sink.as_str(), error = %e, retry_in_ms = delay.as_millis() as u64, "checkpoint failed; will retry");
                    shared.metrics.sink_error(sink, SinkErrorKind::Retried, 1);
                    shared.metrics.checkpoint_failures.inc();
                    in_flight.retry_at = Some(Instant::now() + delay);
                    in_flight.last_error = Some(failure_reason(partition, &e));
                }
            }
        }
        let failing = slots
            .values()
            .filter_map(|s| s.in_flight.as_ref())
            .find_map(|f| f.last_error.clone());
        shared.metrics.set_sinks_failing(failing);
        drop(slots);
        let finished = commits.len() as u64;
        if !commits.is_empty() {
            if let Err(e) = commit_offsets(consumer, topic, &commits, CommitMode::Async) {
                // The state files hold the offsets; the commit feeds lag metrics and says
                // what the snapshot holds.
                tracing::warn!(error = %e, "offset commit failed");
                shared
                    .metrics
                    .sink_error(Sink::Kafka, SinkErrorKind::Retried, 1);
            }
        }
        Ok(finished)
    }

    /// Starts checkpoints of partitions with pending events (all of them when `due`, else
    /// those over their pending share or quiet at their end), and full checkpoints of
    /// partitions without pending events whose deltas are not in a base yet (when `due`
    /// and the policy allows, or at once after a whole interval idle at their end);
    /// pauses or resumes partitions for backpressure.
    fn start_checkpoints(&self, consumer: &ProcessConsumer, topic: &str, due: bool) {
        let shared = &self.shared;
        let mut slots = shared.slots();
        let share =
            (self.settings.max_pending_events / slots.len().max(1)).max(MIN_PARTITION_PENDING);
        let total_pending: usize = slots.values().map(|s| s.state.pending_events()).sum();
        let over_total = total_pending >= self.settings.max_pending_events;
        let mut full_users_in_flight: usize = slots.values().map(Slot::full_users_in_flight).sum();
        let policy = FullCheckpointPolicy {
            cost_factor: self.settings.full_checkpoint_cost_factor,
            ..FULL_CHECKPOINTS
        };
        let now = Instant::now();
        let mut pause = TopicPartitionList::new();
        let mut resume = TopicPartitionList::new();
        for (&partition, slot) in slots.iter_mut() {
            let over_share = slot.state.pending_events() >= share;
            let silent_for = now.saturating_duration_since(slot.last_message);
            let at_end = slot.at_end && !slot.paused;
            let quiet = at_end && silent_for >= QUIET_AFTER;
            let idle = at_end && silent_for >= self.settings.interval;
            let pending = slot.state.has_pending();
            let start = if pending {
                due || over_share || over_total || quiet
            } else {
                slot.state.behind_full() && (due || idle)
            };
            let full = slot.in_flight.is_none()
                && start
                && policy.wants_full(&slot.state, slot.last_full, now, idle)
                && policy.fits(full_users_in_flight, slot.state.users());
            // Without pending events only a full has anything to write; it waits for room.
            if slot.in_flight.is_none() && start && (full || pending) {
                if full {
                    full_users_in_flight += slot.state.users();
                }
                let job = Arc::new(CheckpointJob::new(slot.state.take_batch(full)));
                slot.in_flight = Some(InFlight {
                    task: Some(shared.spawn_checkpoint(job.clone(), slot.fence.clone())),
                    job,
                    started: Instant::now(),
                    retry_at: None,
                    backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
                    last_error: None,
                });
            }
            let should_pause = slot.in_flight.is_some() && slot.state.pending_events() >= share;
            if should_pause && !slot.paused {
                pause.add_partition(topic, partition);
                slot.paused = true;
            } else if !should_pause && slot.paused {
                resume.add_partition(topic, partition);
                slot.paused = false;
            }
        }
        drop(slots);
        if pause.count() > 0 {
            if let Err(e) = consumer.pause(&pause) {
                tracing::warn!(error = %e, "pause failed");
            }
        }
        if resume.count() > 0 {
            if let Err(e) = consumer.resume(&resume) {
                tracing::warn!(error = %e, "resume failed");
            }
        }
    }

    /// No pending events, no checkpoint in flight, and every assigned partition read up to
    /// its end.
    fn idle_and_caught_up(&self, consumer: &ProcessConsumer, topic: &str) -> bool {
        let positions: Vec<(i32, i64)> = {
            let slots = self.shared.slots();
            if slots
                .values()
                .any(|s| s.state.has_pending() || s.in_flight.is_some())
            {
                return false;
            }
            slots
                .iter()
                .map(|(&p, s)| (p, commit_point(s.state.next_offset(), s.end_seen)))
                .collect()
        };
        positions.iter().all(|&(partition, next)| {
            consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .map(|(_, high)| next >= high)
                .unwrap_or(false)
        })
    }

    /// Final checkpoint of every partition and a synchronous commit.
    fn finish(&self, consumer: &ProcessConsumer, topic: &str) -> Result<()> {
        let shared = &self.shared;
        let slots: Vec<(i32, Slot)> = std::mem::take(&mut *shared.slots()).into_iter().collect();
        let mut commits = Vec::new();
        let mut failure = None;
        for (partition, mut slot) in slots {
            match shared.final_checkpoint(&mut slot) {
                Ok(Some(end)) => commits.push((partition, commit_point(end, slot.end_seen))),
                Ok(None) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if !commits.is_empty() {
            commit_offsets(consumer, topic, &commits, CommitMode::Sync)
                .map_err(|e| kafka_error("final commit", e))?;
        }
        shared.metrics.assigned_partitions.set(0);
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The rebalance bookkeeping, with the local object store (a temp directory) and a
    //! search index nothing reaches: these batches change no profile, so no search
    //! request is made.
    use super::*;
    use crate::config::SearchSettings;
    use crate::profile::{ProfileBook, StateRecord};
    use crate::store::{Bytes, LocalStore};

    #[test]
    fn commit_point_steps_over_the_markers_after_a_durable_end() {
        // Events up to offset 9 counted, then a commit marker at 10: position 11.
        let seen = Some(EndSeen {
            next_offset: 10,
            position: 11,
        });
        assert_eq!(commit_point(10, seen), 11);
        // The durable state ends before what was read when the end was seen.
        assert_eq!(commit_point(8, seen), 8);
        // Events read after the end was seen are durable too: their end stands.
        assert_eq!(commit_point(15, seen), 15);
        assert_eq!(commit_point(10, None), 10);
    }

    fn shared(dir: &std::path::Path, runtime: &tokio::runtime::Runtime) -> Arc<Shared> {
        let search = SearchIndex::connect(
            &SearchSettings {
                url: "http://127.0.0.1:9".into(),
                index: "unused".into(),
                credentials: None,
                ca_file: None,
            },
            None,
        )
        .unwrap();
        // Nothing listens there either; no dead letter is written by these tests.
        let kafka = KafkaSettings {
            bootstrap: "127.0.0.1:9".into(),
            security_protocol: crate::config::SecurityProtocol::Plaintext,
            sasl: None,
            ca_file: None,
            client_certificate: None,
            events_topic: "unused-events".into(),
            dlq_topic: "unused-events-dlq".into(),
            consumer_group: "unused".into(),
            group_instance_id: None,
        };
        Arc::new(Shared {
            store: ObjectStore::Local(LocalStore::new(dir.to_path_buf()).unwrap()),
            search,
            dead_letters: DeadLetterProducer::new(&kafka, None).unwrap(),
            metrics: Metrics::new("process"),
            handle: runtime.handle().clone(),
            slots: Mutex::new(BTreeMap::new()),
            owner: "test-member".into(),
            topic: "shop-events".into(),
            stopping: Arc::new(AtomicBool::new(false)),
        })
    }

    fn record(user_id: u64) -> StateRecord {
        let mut book = ProfileBook::new();
        book.apply(&crate::event::test_view(user_id)).unwrap();
        book.record(user_id).unwrap()
    }

    #[test]
    fn assign_restores_state_and_cleans_an_unfinished_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let shared = shared(dir.path(), &runtime);
        let store = shared.store.clone();
        // Partition 1: state at offset 42, and an intent of a checkpoint starting there
        // whose lake object was written before the crash.
        let stale = checkpoint::events_key(18_170, 1, 42);
        runtime.block_on(async {
            let state = checkpoint::encode_state(1, None, 42, &[record(7)]).unwrap();
            store
                .put(&checkpoint::state_key(1), Bytes::from(state))
                .await
                .unwrap();
            let intent = checkpoint::Intent {
                partition: 1,
                start: 42,
                end: 50,
                keys: vec![stale.clone()],
                owner: "a member that crashed".into(),
            };
            store
                .put(
                    &checkpoint::intent_key(1),
                    Bytes::from(serde_json::to_vec(&intent).unwrap()),
                )
                .await
                .unwrap();
            store
                .put(&stale, Bytes::from_static(b"half a checkpoint"))
                .await
                .unwrap();
        });

        let handler = Handler(shared.clone());
        let starts = handler.on_assign(&[0, 1], Some(4)).unwrap();
        assert_eq!(starts, vec![(0, None), (1, Some(42))]);
        assert_eq!(runtime.block_on(store.get(&stale)).unwrap(), None);
        let slots = shared.slots();
        assert_eq!(slots[&0].state.next_offset(), 0);
        assert_eq!(slots[&1].state.next_offset(), 42);
        assert_eq!(slots[&1].state.users(), 1);
        assert_eq!(shared.metrics.assigned_partitions.get(), 2);
    }

    #[test]
    fn assign_applies_the_delta_chain_and_removes_deltas_off_it() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let shared = shared(dir.path(), &runtime);
        let store = shared.store.clone();
        let mut first_purchase = record(7);
        first_purchase.purchases = 1;
        let mut second_purchase = record(7);
        second_purchase.purchases = 2;
        let put = |key: String, bytes: Vec<u8>| {
            let store = store.clone();
            runtime.block_on(async move { store.put(&key, Bytes::from(bytes)).await.unwrap() })
        };
        // Base at 10 with users 7 and 8; deltas [10,20) and [20,25) change user 7 and add
        // user 9; [4,10) is a leftover the base supersedes; [30,40) is off the chain.
        put(
            checkpoint::state_key(2),
            checkpoint::encode_state(2, None, 10, &[record(7), record(8)]).unwrap(),
        );
        put(
            checkpoint::delta_key(2, 10),
            checkpoint::encode_state(2, Some(10), 20, &[first_purchase, record(9)]).unwrap(),
        );
        put(
            checkpoint::delta_key(2, 20),
            checkpoint::encode_state(2, Some(20), 25, &[second_purchase.clone()]).unwrap(),
        );
        put(
            checkpoint::delta_key(2, 4),
            checkpoint::encode_state(2, Some(4), 10, &[record(1)]).unwrap(),
        );
        put(
            checkpoint::delta_key(2, 30),
            checkpoint::encode_state(2, Some(30), 40, &[record(2)]).unwrap(),
        );

        let handler = Handler(shared.clone());
        assert_eq!(
            handler.on_assign(&[2], Some(4)).unwrap(),
            vec![(2, Some(25))]
        );
        {
            let slots = shared.slots();
            let state = &slots[&2].state;
            assert_eq!(state.next_offset(), 25);
            assert_eq!(state.users(), 3);
            assert_eq!(state.deltas_since_base(), 2);
        }
        let left: Vec<String> = runtime
            .block_on(store.list(&checkpoint::deltas_prefix(2)))
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(
            left,
            vec![checkpoint::delta_key(2, 10), checkpoint::delta_key(2, 20)]
        );

        // The revoke folds both deltas into a base at 25 and removes them.
        assert_eq!(handler.on_revoke(&[2], false), vec![(2, 25)]);
        let base = runtime
            .block_on(store.get(&checkpoint::state_key(2)))
            .unwrap()
            .unwrap();
        let base = checkpoint::decode_state("k", 2, &base).unwrap();
        assert_eq!(base.offset, 25);
        assert_eq!(
            base.records.iter().map(|r| r.user_id).collect::<Vec<_>>(),
            vec![7, 8, 9]
        );
        assert_eq!(base.records[0], second_purchase);
        assert_eq!(
            runtime
                .block_on(store.list(&checkpoint::deltas_prefix(2)))
                .unwrap(),
            vec![]
        );
    }

    #[test]
    fn revoke_checkpoints_and_returns_the_offset_to_commit() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let shared = shared(dir.path(), &runtime);
        let handler = Handler(shared.clone());
        handler.on_assign(&[0, 3], Some(4)).unwrap();
        {
            let mut slots = shared.slots();
            let slot = slots.get_mut(&0).unwrap();
            for offset in 0..3 {
                slot.state.skip(offset);
            }
        }
        let commits = handler.on_revoke(&[0], false);
        assert_eq!(commits, vec![(0, 3)]);
        assert!(!shared.slots().contains_key(&0));
        let state = runtime
            .block_on(shared.store.get(&checkpoint::state_key(0)))
            .unwrap()
            .unwrap();
        let state = checkpoint::decode_state("k", 0, &state).unwrap();
        assert_eq!(
            (state.start, state.offset, state.records.len()),
            (None, 3, 0)
        );
        // Nothing pending: revoking writes nothing and commits nothing.
        assert_eq!(handler.on_revoke(&[3], false), vec![]);
        assert_eq!(
            runtime
                .block_on(shared.store.get(&checkpoint::state_key(3)))
                .unwrap(),
            None
        );
        assert_eq!(shared.metrics.assigned_partitions.get(), 0);
    }

    #[test]
    fn a_failing_checkpoint_is_reported_with_its_partition_and_sink() {
        let search = Error::Search {
            step: "bulk",
            retryable: true,
            message: "3 documents not indexed after 5 attempts; last answer: HTTP 403 cluster_block_exception: blocked".into(),
        };
        assert_eq!(
            failure_reason(4, &search),
            "partition 4: sink search: search: bulk: 3 documents not indexed after 5 attempts; \
             last answer: HTTP 403 cluster_block_exception: blocked"
        );
        let kafka = Error::Kafka {
            step: "dead letter",
            retryable: true,
            message: "Message production error: MessageTimedOut".into(),
        };
        assert_eq!(sink_of(&kafka), Sink::Kafka);
        let store = Error::Store {
            op: "put",
            key: "k".into(),
            retryable: true,
            message: "503".into(),
        };
        assert_eq!(sink_of(&store), Sink::ObjectStore);
        assert_eq!(
            failure_reason(0, &store),
            "partition 0: sink object_store: object store: put k: 503"
        );
    }

    #[test]
    fn a_partition_whose_topic_changed_its_partition_count_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let shared = shared(dir.path(), &runtime);
        let handler = Handler(shared.clone());
        handler.on_assign(&[1], Some(4)).unwrap();
        shared.slots().get_mut(&1).unwrap().state.skip(0);
        assert_eq!(handler.on_revoke(&[1], false), vec![(1, 1)]);
        let error = handler.on_assign(&[1], Some(6)).unwrap_err();
        assert!(
            error.starts_with("topic shop-events has 6 partitions, but the state of its partition 1 was built when it had 4."),
            "{error}"
        );
        assert!(shared.slots().is_empty());
        // The same count, or an unknown one, goes on.
        assert_eq!(
            handler.on_assign(&[1], Some(4)).unwrap(),
            vec![(1, Some(1))]
        );
        handler.on_revoke(&[1], false);
        assert_eq!(handler.on_assign(&[1], None).unwrap(), vec![(1, Some(1))]);
    }

    #[test]
    fn a_lost_partition_is_dropped_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let shared = shared(dir.path(), &runtime);
        let handler = Handler(shared.clone());
        handler.on_assign(&[2], Some(4)).unwrap();
        shared.slots().get_mut(&2).unwrap().state.skip(0);
        assert_eq!(handler.on_revoke(&[2], true), vec![]);
        assert!(shared.slots().is_empty());
        assert_eq!(
            runtime
                .block_on(shared.store.get(&checkpoint::state_key(2)))
                .unwrap(),
            None
        );
        // Only the claim the assignment wrote (see `checkpoint::Fence`): nothing on revoke.
        let keys: Vec<String> = runtime
            .block_on(shared.store.list("_state/"))
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec![checkpoint::intent_key(2)]);
        let claim = runtime
            .block_on(shared.store.get(&checkpoint::intent_key(2)))
            .unwrap()
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<checkpoint::Intent>(&claim).unwrap(),
            checkpoint::Intent {
                partition: 2,
                start: 0,
                end: 0,
                keys: vec![],
                owner: "test-member".into(),
            }
        );
    }
}
