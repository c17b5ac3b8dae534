//! `run --input FILE --out DIR`: the whole job in one process on embedded defaults (no
//! Kafka, a local directory instead of S3, no search index). Does file I/O.
//!
//! Three threads share the work: the caller's thread parses and validates the CSV (and
//! writes rejected rows), an aggregator folds events into profiles and cuts them into
//! per-day batches, and an encoder turns batches into Parquet files. Bounded channels
//! between them give backpressure; memory is bounded by the number of users plus a fixed
//! number of buffered events, whatever the size of the file.
//!
//! The input is opened and its header checked before anything is written. The outputs go
//! to a new directory next to DIR (`.DIR.tmp-*`, same filesystem), which replaces DIR only
//! when the run succeeded: the old DIR is renamed aside, the new one renamed in, the old
//! one removed. A failed run leaves DIR as it was and removes its temporary directory.
//! Because DIR is replaced as a whole, `run` refuses a DIR holding anything but these
//! outputs (it would be deleted with them).
//!
//! Output under DIR:
//! - `events/dt=YYYY-MM-DD/part-NNNNN.parquet`: accepted events, at most
//!   [`crate::parquet::ROWS_PER_FILE`] rows per file, in input order within a day;
//! - `profiles/part-NNNNN.parquet`: one row per user, ordered by user_id;
//! - `rejected.jsonl`: one [`Rejected`] per line (source, line, field, kind, reason, raw);
//! - `summary.json`: counts ([`RunSummary`]) and the report.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Instant;

use serde::Serialize;

use crate::csv_input;
use crate::error::{Error, Result};
use crate::event::{Event, RejectKind, Rejected};
use crate::money::format_cents;
use crate::parquet as pq;
use crate::profile::{Profile, ProfileBook};
use crate::progress::{Progress, Unit};
use crate::report::{Report, ReportBuilder, RevenueTally};

/// Events handed from the parser to the aggregator at a time.
const PARSE_CHUNK: usize = 8 * 1024;
/// Profiles per profiles Parquet file, and per row group (chunk) within it.
const PROFILES_PER_FILE: usize = 1 << 20;
const PROFILES_PER_CHUNK: usize = 32 * 1024;
/// Most events held in per-day buffers before the largest is flushed early (bounds memory
/// when the input is not ordered by time; about 100 MiB of events).
const MAX_BUFFERED_EVENTS: usize = 4 * pq::ROWS_PER_FILE;
/// A day that got no event in this many events is taken as complete and flushed: input
/// in time order then streams to the encoder a day at a time, and out-of-order input
/// keeps its days buffered (up to [`MAX_BUFFERED_EVENTS`]) so they make fewer, larger
/// files.
const IDLE_DAY_AFTER_EVENTS: u64 = 32 * 1024;
/// How often (in events) the buffers are checked for idle days.
const IDLE_CHECK_EVERY_EVENTS: u64 = 8 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub input: PathBuf,
    pub out: PathBuf,
    /// Draw progress on stderr (shown only when stderr is a terminal, see [`Progress`]).
    pub progress: bool,
    /// Rows per events file (default [`crate::parquet::ROWS_PER_FILE`]).
    pub rows_per_file: usize,
}

impl RunOptions {
    pub fn new(input: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        RunOptions {
            input: input.into(),
            out: out.into(),
            progress: false,
            rows_per_file: pq::ROWS_PER_FILE,
        }
    }
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub input: String,
    pub events_accepted: u64,
    pub events_rejected: u64,
    /// Profiles written (= distinct users with an accepted event).
    pub profiles: u64,
    pub purchases: u64,
    /// Total purchase revenue, exact, as a decimal string.
    pub revenue: String,
    /// Rejected rows per [`RejectKind`] (every kind present, zeros included).
    pub rejected_by_kind: BTreeMap<String, u64>,
    pub event_files: u64,
    /// Distinct UTC days with events.
    pub days: u64,
    pub duration_ms: u64,
    pub events_per_second: f64,
    pub report: Report,
}

/// Everything the parser thread learned.
struct ParseOutcome {
    accepted: u64,
    rejected_by_kind: HashMap<RejectKind, u64>,
}

/// Everything the aggregator thread built.
struct Aggregate {
    profiles: u64,
    report: Report,
    days: u64,
}

/// Work for the encoder thread.
enum Job {
    /// One events file.
    Events {
        day: i32,
        part: u32,
        events: Vec<Event>,
    },
    /// The next profiles, in user_id order; appended to the current profiles file.
    Profiles(Vec<Profile>),
}

/// Runs the job and writes every output. Returns the summary (also in `summary.json`).
///
/// `options.out` is replaced only on success; on failure it is left untouched.
pub fn run(options: &RunOptions) -> Result<RunSummary> {
    let started = Instant::now();
    let input = File::open(&options.input).map_err(|e| Error::file(&options.input, e))?;
    let input_len = input.metadata().map(|m| m.len()).unwrap_or(0);
    let source = options.input.display().to_string();
    let reader = csv_input::open(source.clone(), input)?;
    let out = check_output(&options.out)?;
    let staging = Staging::create(&out)?;
    let summary = run_into(options, reader, input_len, source, started, staging.path())?;
    staging.replace_output()?;
    Ok(summary)
}

/// The job proper, writing every output under `out`.
fn run_into(
    options: &RunOptions,
    reader: csv_input::CsvEvents<File>,
    input_len: u64,
    source: String,
    started: Instant,
    out: &Path,
) -> Result<RunSummary> {
    let (events_tx, events_rx) = sync_channel::<Vec<Event>>(4);
    // Emptied chunks go back to the parser, so chunk buffers are allocated once.
    let (recycle_tx, recycle_rx) = sync_channel::<Vec<Event>>(6);
    // One file waiting while one is encoded: each holds up to ROWS_PER_FILE events.
    let (jobs_tx, jobs_rx) = sync_channel::<Job>(1);
    let rows_per_file = options.rows_per_file.max(1);

    let (parsed, aggregate, files) = std::thread::scope(|scope| {
        let encoder = scope.spawn(move || encode_files(out, jobs_rx));
        let aggregator =
            scope.spawn(move || aggregate(events_rx, recycle_tx, jobs_tx, rows_per_file));
        let mut progress = progress_bar(options.progress, input_len);
        let parsed = parse_all(reader, out, events_tx, recycle_rx, &mut progress);
        progress.finish();
        let aggregate = join(aggregator);
        let files = join(encoder);
        (parsed, aggregate, files)
    });
    let parsed = parsed?;
    let aggregate = aggregate?;
    let event_files = files?;

    let report = aggregate.report;
    let elapsed = started.elapsed();
    let summary = RunSummary {
        input: source,
        events_accepted: parsed.accepted,
        events_rejected: parsed.rejected_by_kind.values().sum(),
        profiles: aggregate.profiles,
        purchases: report.purchases,
        revenue: format_cents(report.revenue_cents),
        rejected_by_kind: RejectKind::ALL
            .iter()
            .map(|k| {
                (
                    k.as_str().to_owned(),
                    parsed.rejected_by_kind.get(k).copied().unwrap_or(0),
                )
            })
            .collect(),
        event_files,
        days: aggregate.days,
        duration_ms: elapsed.as_millis() as u64,
        events_per_second: parsed.accepted as f64 / elapsed.as_secs_f64().max(1e-9),
        report,
    };
    let path = out.join("summary.json");
    let json = serde_json::to_vec_pretty(&summary)?;
    std::fs::write(&path, json).map_err(|e| Error::file(&path, e))?;
    Ok(summary)
}

fn join<T>(handle: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err(Error::Worker("a worker thread panicked".into())))
}

/// The entries `run` writes under its output directory.
fn output_entries() -> [&'static str; 4] {
    [
        pipeline_config::layout::EVENTS_PREFIX,
        pipeline_config::layout::PROFILES_PREFIX,
        "rejected.jsonl",
        "summary.json",
    ]
}

fn config_error(out: &Path, reason: String) -> Error {
    Error::Config {
        name: format!("--out {}", out.display()),
        reason,
    }
}

/// Checks, before any work, that `out` can be replaced as a whole: it names a directory
/// (not `.`, `..` or `/`), and is absent, or a directory holding only `run` outputs.
/// Returns it as parent + name (`out/.` and `out/` become `out`).
fn check_output(given: &Path) -> Result<PathBuf> {
    let (Some(parent), Some(name)) = (given.parent(), given.file_name()) else {
        return Err(config_error(
            given,
            "must name a directory of its own (it is replaced as a whole)".into(),
        ));
    };
    let out = parent.join(name);
    let metadata = match std::fs::symlink_metadata(&out) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::file(&out, e)),
    };
    if !metadata.is_dir() {
        return Err(config_error(given, "exists and is not a directory".into()));
    }
    let mut foreign = Vec::new();
    for entry in std::fs::read_dir(&out).map_err(|e| Error::file(&out, e))? {
        let name = entry.map_err(|e| Error::file(&out, e))?.file_name();
        let name = name.to_string_lossy();
        if !output_entries().contains(&name.as_ref()) {
            foreign.push(name.into_owned());
        }
    }
    if foreign.is_empty() {
        return Ok(out);
    }
    foreign.sort();
    Err(config_error(
        given,
        format!(
            "holds entries run did not write ({}); the directory is replaced as a whole, so give a new or empty one",
            foreign.join(", ")
        ),
    ))
}

/// A sibling of `out` named `.NAME.KIND-PID-N` that does not exist yet.
fn sibling(out: &Path, kind: &str, attempt: u32) -> PathBuf {
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    let pid = std::process::id();
    out.with_file_name(format!(".{name}.{kind}-{pid}-{attempt}"))
}

/// The temporary output directory of one run, next to `out` (same filesystem, so the
/// final renames are atomic). Removed when dropped unless it replaced `out`.
struct Staging {
    out: PathBuf,
    dir: PathBuf,
    done: bool,
}

impl Staging {
    fn create(out: &Path) -> Result<Staging> {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::file(parent, e))?;
        }
        let mut attempt = 0;
        loop {
            let dir = sibling(out, "tmp", attempt);
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    return Ok(Staging {
                        out: out.to_path_buf(),
                        dir,
                        done: false,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 1000 => {
                    attempt += 1;
                }
                Err(e) => return Err(Error::file(&dir, e)),
            }
        }
    }

    fn path(&self) -> &Path {
        &self.dir
    }

    /// Puts the finished outputs in place of `out`: the old directory (if any) is renamed
    /// aside, the new one renamed in, then the old one removed. If the second rename
    /// fails, the old directory is put back.
    fn replace_output(mut self) -> Result<()> {
        let out = self.out.clone();
        let old = match std::fs::symlink_metadata(&out) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::file(&out, e)),
            Ok(_) => {
                let mut attempt = 0;
                let mut old = sibling(&out, "old", attempt);
                while old.exists() {
                    attempt += 1;
                    old = sibling(&out, "old", attempt);
                }
                std::fs::rename(&out, &old).map_err(|e| Error::file(&out, e))?;
                Some(old)
            }
        };
        if let Err(e) = std::fs::rename(&self.dir, &out) {
            if let Some(old) = &old {
                if let Err(back) = std::fs::rename(old, &out) {
                    tracing::error!(
                        old = %old.display(),
                        out = %out.display(),
                        error = %back,
                        "could not put the previous output back"
                    );
                }
            }
            return Err(Error::file(&out, e));
        }
        self.done = true;
        if let Some(old) = old {
            // The new output is in place; a leftover old copy is only wasted space.
            if let Err(e) = std::fs::remove_dir_all(&old) {
                tracing::warn!(old = %old.display(), error = %e, "could not remove the previous output");
            }
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove the temporary output");
            }
        }
    }
}

fn progress_bar(enabled: bool, total: u64) -> Progress {
    if enabled {
        Progress::stderr("run", Some(total), Unit::Bytes)
    } else {
        Progress::hidden()
    }
}

fn parse_all<R: std::io::Read>(
    mut reader: csv_input::CsvEvents<R>,
    out: &Path,
    events: SyncSender<Vec<Event>>,
    recycled: Receiver<Vec<Event>>,
    progress: &mut Progress,
) -> Result<ParseOutcome> {
    let rejected_path = out.join("rejected.jsonl");
    let file = File::create(&rejected_path).map_err(|e| Error::file(&rejected_path, e))?;
    let mut rejected_out = BufWriter::new(file);
    let mut outcome = ParseOutcome {
        accepted: 0,
        rejected_by_kind: HashMap::new(),
    };
    let mut chunk = Vec::with_capacity(PARSE_CHUNK);
    while let Some(row) = reader.next_row()? {
        match row.outcome {
            Ok(event) => {
                chunk.push(event);
                if chunk.len() == PARSE_CHUNK {
                    outcome.accepted += chunk.len() as u64;
                    let empty = recycled
                        .try_recv()
                        .unwrap_or_else(|_| Vec::with_capacity(PARSE_CHUNK));
                    let full = std::mem::replace(&mut chunk, empty);
                    if events.send(full).is_err() {
                        // The aggregator stopped; its error is reported by its join.
                        break;
                    }
                    progress.set(reader.bytes_read());
                }
            }
            Err(rejected) => {
                write_rejected(&mut rejected_out, &rejected)
                    .map_err(|e| Error::file(&rejected_path, e))?;
                *outcome.rejected_by_kind.entry(rejected.kind).or_default() += 1;
            }
        }
    }
    outcome.accepted += chunk.len() as u64;
    if !chunk.is_empty() {
        let _ = events.send(chunk);
    }
    rejected_out
        .flush()
        .map_err(|e| Error::file(&rejected_path, e))?;
    Ok(outcome)
}

fn write_rejected(out: &mut impl Write, rejected: &Rejected) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, rejected)?;
    out.write_all(b"\n")
}

fn aggregate(
    events: Receiver<Vec<Event>>,
    recycle: SyncSender<Vec<Event>>,
    jobs: SyncSender<Job>,
    rows_per_file: usize,
) -> Result<Aggregate> {
    let mut book = ProfileBook::new();
    let mut tally = RevenueTally::default();
    let mut buffers = DayBuffers::new(rows_per_file, MAX_BUFFERED_EVENTS);
    let mut parts: BTreeMap<i32, u32> = BTreeMap::new();
    let stopped = || Error::Worker("the Parquet encoder stopped".into());
    let mut send = |(day, events): (i32, Vec<Event>)| {
        let part = parts.entry(day).or_default();
        let job = Job::Events {
            day,
            part: *part,
            events,
        };
        *part += 1;
        jobs.send(job).map_err(|_| stopped())
    };
    for mut chunk in events {
        for event in chunk.drain(..) {
            // An overflowing profile fails the run, naming the user; the partial output is
            // discarded with the temporary directory.
            book.apply(&event)?;
            tally.add(&event);
            if let Some(full) = buffers.push(event.utc_day(), event) {
                send(full)?;
            }
        }
        for idle in buffers.take_idle() {
            send(idle)?;
        }
        // The parser may have finished; then nobody wants the buffer back.
        let _ = recycle.try_send(chunk);
    }
    for rest in buffers.take_all() {
        send(rest)?;
    }
    let days = parts.len() as u64;
    // Profiles leave in chunks so encoding overlaps building and at most two chunks of
    // profile rows exist at once, whatever the number of users.
    let mut sorted = book.into_sorted_profiles(PROFILES_PER_CHUNK);
    let count = sorted.len() as u64;
    let mut report = ReportBuilder::default();
    for profiles in &mut sorted {
        profiles.iter().for_each(|p| report.add(p));
        jobs.send(Job::Profiles(profiles)).map_err(|_| stopped())?;
    }
    // Freeing millions of small states takes a while; nobody needs to wait for it.
    std::thread::spawn(move || drop(sorted));
    let report = report.finish(Some(&tally));
    Ok(Aggregate {
        profiles: count,
        report,
        days,
    })
}

/// Accepted events waiting for their day's next events file, and when each day is
/// written: when it has a file's worth of rows, when it has been idle for
/// [`IDLE_DAY_AFTER_EVENTS`], or, when more than `max_buffered` events wait, the largest
/// day first. Pure: the caller writes what it hands out.
struct DayBuffers {
    rows_per_file: usize,
    max_buffered: usize,
    days: BTreeMap<i32, DayBuffer>,
    buffered: usize,
    /// Events pushed so far: the clock of the idle rule.
    pushed: u64,
    checked_at: u64,
}

struct DayBuffer {
    events: Vec<Event>,
    last_pushed: u64,
}

impl DayBuffers {
    fn new(rows_per_file: usize, max_buffered: usize) -> Self {
        DayBuffers {
            rows_per_file,
            max_buffered,
            days: BTreeMap::new(),
            buffered: 0,
            pushed: 0,
            checked_at: 0,
        }
    }

    /// Adds an event of `day`; returns a day's events to write now, if any.
    fn push(&mut self, day: i32, event: Event) -> Option<(i32, Vec<Event>)> {
        self.pushed += 1;
        // Buffers grow as their day fills: reserving a whole file's rows up front costs a
        // large allocation and its page faults for every day, most of which never fill.
        let buffer = self.days.entry(day).or_insert_with(|| DayBuffer {
            events: Vec::new(),
            last_pushed: 0,
        });
        buffer.events.push(event);
        buffer.last_pushed = self.pushed;
        self.buffered += 1;
        if buffer.events.len() >= self.rows_per_file {
            return self.take(day);
        }
        if self.buffered >= self.max_buffered {
            let largest = self
                .days
                .iter()
                .max_by_key(|(_, b)| b.events.len())
                .map(|(&d, _)| d)?;
            return self.take(largest);
        }
        None
    }

    /// The days that got no event for [`IDLE_DAY_AFTER_EVENTS`] (checked every
    /// [`IDLE_CHECK_EVERY_EVENTS`]).
    fn take_idle(&mut self) -> Vec<(i32, Vec<Event>)> {
        if self.pushed - self.checked_at < IDLE_CHECK_EVERY_EVENTS {
            return Vec::new();
        }
        self.checked_at = self.pushed;
        let idle: Vec<i32> = self
            .days
            .iter()
            .filter(|(_, b)| self.pushed - b.last_pushed >= IDLE_DAY_AFTER_EVENTS)
            .map(|(&d, _)| d)
            .collect();
        idle.into_iter().filter_map(|d| self.take(d)).collect()
    }

    /// Every day still buffered, in day order.
    fn take_all(&mut self) -> Vec<(i32, Vec<Event>)> {
        self.buffered = 0;
        std::mem::take(&mut self.days)
            .into_iter()
            .map(|(day, b)| (day, b.events))
            .collect()
    }

    fn take(&mut self, day: i32) -> Option<(i32, Vec<Event>)> {
        let buffer = self.days.remove(&day)?;
        self.buffered -= buffer.events.len();
        Some((day, buffer.events))
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::file(parent, e))?;
    }
    std::fs::write(path, bytes).map_err(|e| Error::file(path, e))
}

/// Encodes and writes files until the aggregator hangs up; returns the events file count.
fn encode_files(out: &Path, jobs: Receiver<Job>) -> Result<u64> {
    let mut event_files = 0;
    let mut profiles = ProfileFiles::new(out.join(pipeline_config::layout::PROFILES_PREFIX));
    for job in jobs {
        match job {
            Job::Events { day, part, events } => {
                let path = out
                    .join(pq::events_partition(day))
                    .join(format!("part-{part:05}.parquet"));
                write_file(&path, &pq::encode_events(&events)?)?;
                event_files += 1;
            }
            Job::Profiles(chunk) => profiles.append(&chunk)?,
        }
    }
    profiles.finish()?;
    Ok(event_files)
}

/// `profiles/part-NNNNN.parquet`, each holding up to [`PROFILES_PER_FILE`] rows written
/// as row groups of [`PROFILES_PER_CHUNK`].
struct ProfileFiles {
    dir: PathBuf,
    current: Option<(pq::ParquetFileWriter, usize)>,
    next_part: u32,
}

impl ProfileFiles {
    fn new(dir: PathBuf) -> Self {
        ProfileFiles {
            dir,
            current: None,
            next_part: 0,
        }
    }

    fn append(&mut self, profiles: &[Profile]) -> Result<()> {
        if self.current.is_none() {
            let path = self.dir.join(format!("part-{:05}.parquet", self.next_part));
            self.next_part += 1;
            self.current = Some((
                pq::ParquetFileWriter::create(&path, pq::profiles_schema())?,
                0,
            ));
        }
        if let Some((writer, rows)) = &mut self.current {
            writer.write(&pq::profiles_to_batch(profiles)?)?;
            *rows += profiles.len();
            if *rows >= PROFILES_PER_FILE {
                self.finish()?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if let Some((writer, _)) = self.current.take() {
            writer.close()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;
    use crate::profile::Segment;
    use crate::time::parse_event_time;

    /// An event whose product id tells the tests which one it is.
    fn numbered(n: u64) -> Event {
        Event {
            event_time: 0,
            event_type: EventType::View,
            product_id: n,
            category_id: None,
            category_code: None,
            brand: None,
            price_cents: 0,
            user_id: 1,
            user_session: None,
        }
    }

    fn ids(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.product_id).collect()
    }

    #[test]
    fn a_day_with_a_files_worth_of_rows_is_handed_out_at_once() {
        let mut buffers = DayBuffers::new(3, 100);
        assert!(buffers.push(7, numbered(1)).is_none());
        assert!(buffers.push(8, numbered(2)).is_none());
        assert!(buffers.push(7, numbered(3)).is_none());
        let (day, events) = buffers.push(7, numbered(4)).unwrap();
        assert_eq!((day, ids(&events)), (7, vec![1, 3, 4]));
        let rest: Vec<(i32, Vec<u64>)> = buffers
            .take_all()
            .into_iter()
            .map(|(d, e)| (d, ids(&e)))
            .collect();
        assert_eq!(rest, [(8, vec![2])]);
    }

    #[test]
    fn over_the_limit_the_largest_day_goes_first() {
        let mut buffers = DayBuffers::new(100, 5);
        for (day, n) in [(1, 1), (2, 2), (2, 3), (3, 4)] {
            assert!(buffers.push(day, numbered(n)).is_none());
        }
        let (day, events) = buffers.push(2, numbered(5)).unwrap();
        assert_eq!((day, ids(&events)), (2, vec![2, 3, 5]));
        // Two left buffered: the limit is not reached again until five more wait.
        assert!(buffers.push(1, numbered(6)).is_none());
        assert_eq!(buffers.buffered, 3);
    }

    #[test]
    fn days_left_behind_by_time_ordered_input_are_handed_out_when_idle() {
        let mut buffers = DayBuffers::new(usize::MAX, usize::MAX);
        let day_one = IDLE_DAY_AFTER_EVENTS;
        for n in 0..day_one {
            assert!(buffers.push(1, numbered(n)).is_none());
        }
        // Day 1 got its last event; day 2 follows. Until day 1 has been idle for the
        // whole window (and a check is due), nothing is handed out.
        let mut handed = Vec::new();
        let mut pushed_when_handed = None;
        for n in 0..2 * IDLE_DAY_AFTER_EVENTS {
            assert!(buffers.push(2, numbered(day_one + n)).is_none());
            let idle = buffers.take_idle();
            if !idle.is_empty() && pushed_when_handed.is_none() {
                pushed_when_handed = Some(n + 1);
            }
            handed.extend(idle);
        }
        assert_eq!(handed.len(), 1);
        assert_eq!(handed[0].0, 1);
        assert_eq!(handed[0].1.len() as u64, day_one);
        let after = pushed_when_handed.unwrap();
        assert!(
            (IDLE_DAY_AFTER_EVENTS..IDLE_DAY_AFTER_EVENTS + IDLE_CHECK_EVERY_EVENTS)
                .contains(&after),
            "handed out {after} events after its last one"
        );
        // Day 2 is still being written to: it stays.
        assert_eq!(buffers.days.keys().copied().collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn days_that_keep_getting_events_stay_buffered() {
        let mut buffers = DayBuffers::new(usize::MAX, usize::MAX);
        for n in 0..4 * IDLE_DAY_AFTER_EVENTS {
            assert!(buffers.push((n % 3) as i32, numbered(n)).is_none());
            assert!(buffers.take_idle().is_empty());
        }
        assert_eq!(buffers.buffered as u64, 4 * IDLE_DAY_AFTER_EVENTS);
    }

    const INPUT: &[u8] = b"event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n\
2019-10-01 10:00:00 UTC,view,1,11,a,x,10.00,1,s1\n\
2019-10-01 10:01:00 UTC,purchase,1,11,a,x,10.00,1,s1\n\
2019-10-01 10:02:00 UTC,view,1,11,a,x,10.00,1\n\
2019-10-01 10:03:00 UTC,view,1,11,a,x,10.00,,s1\n\
2019-10-01 25:00:00 UTC,view,1,11,a,x,10.00,1,s1\n\
2019-10-01 10:05:00 UTC,wishlist,1,11,a,x,10.00,1,s1\n\
2019-10-01 10:06:00 UTC,purchase,1,11,a,x,-10.00,1,s1\n\
2019-10-01 10:07:00 UTC,purchase,1,11,a,x,NaN,1,s1\n\
2019-10-01 10:08:00 UTC,purchase,1,11,a,x,inf,1,s1\n\
2019-10-01 10:09:00 UTC,view,1,11,a,\xFFx,10.00,1,s1\n\
\n\
2019-10-02T05:00:00Z,cart,2,,,,5.50,2,\n\
2019-10-02T05:00:00Z,cart,2,,,,5.50,2,\n\
2019-10-02 06:00:00 UTC,purchase,2,,,,1.005,2,\n\
2019-10-02 23:59:59 UTC,remove_from_cart,3,,,y,1.00,1,s2\n";

    fn at(text: &str) -> i64 {
        parse_event_time(text.as_bytes()).unwrap()
    }

    fn run_on(input: &[u8], rows_per_file: usize) -> (tempfile::TempDir, RunSummary) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, input).unwrap();
        let mut options = RunOptions::new(&path, dir.path().join("out"));
        options.rows_per_file = rows_per_file;
        let summary = run(&options).unwrap();
        (dir, summary)
    }

    #[test]
    fn every_kind_of_bad_row_is_counted_and_profiles_are_exact() {
        let (dir, summary) = run_on(INPUT, pq::ROWS_PER_FILE);
        let out = dir.path().join("out");
        assert_eq!(summary.events_accepted, 5);
        assert_eq!(summary.events_rejected, 9);
        assert_eq!(summary.profiles, 2);
        assert_eq!(summary.purchases, 1);
        assert_eq!(summary.revenue, "10.00");
        assert_eq!(summary.event_files, 2);
        assert_eq!(summary.days, 2);
        let expected_kinds: BTreeMap<String, u64> = [
            ("field_count", 1),
            ("missing_field", 1),
            ("malformed", 2),
            ("unknown_event_type", 1),
            ("negative_price", 1),
            ("price_not_a_number", 1),
            ("infinite_price", 1),
            ("invalid_utf8", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(summary.rejected_by_kind, expected_kinds);

        // rejected.jsonl: one record per bad row, with line and field.
        let rejected: Vec<Rejected> = std::fs::read_to_string(out.join("rejected.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let where_: Vec<(u64, Option<&str>)> = rejected
            .iter()
            .map(|r| (r.line, r.field.as_deref()))
            .collect();
        assert_eq!(
            where_,
            vec![
                (4, None),
                (5, Some("user_id")),
                (6, Some("event_time")),
                (7, Some("event_type")),
                (8, Some("price")),
                (9, Some("price")),
                (10, Some("price")),
                (11, Some("brand")),
                (15, Some("price")),
            ]
        );

        // summary.json on disk says the same.
        let on_disk: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(on_disk["events_accepted"], 5);
        assert_eq!(on_disk["events_rejected"], 9);
        assert_eq!(on_disk["profiles"], 2);

        // Profiles Parquet: independently computed values.
        let profiles = crate::report::read_profiles(&out).unwrap();
        let user1 = Profile {
            user_id: 1,
            total_events: 3,
            views: 1,
            carts: 0,
            removals: 1,
            purchases: 1,
            revenue_cents: 1000,
            avg_order_value_cents: 1000,
            max_purchase_price_cents: Some(1000),
            distinct_sessions: 2,
            distinct_products: 2,
            active_days: 2,
            first_seen: at("2019-10-01 10:00:00 UTC"),
            last_seen: at("2019-10-02 23:59:59 UTC"),
            favorite_category: Some("a".into()),
            favorite_brand: Some("x".into()),
            conversion_rate: 1.0 / 3.0,
            cart_to_purchase_rate: 0.0,
            segment: Segment::ConvertingCustomer,
        };
        let user2 = Profile {
            user_id: 2,
            total_events: 2,
            views: 0,
            carts: 2,
            removals: 0,
            purchases: 0,
            revenue_cents: 0,
            avg_order_value_cents: 0,
            max_purchase_price_cents: None,
            distinct_sessions: 0,
            distinct_products: 1,
            active_days: 1,
            first_seen: at("2019-10-02T05:00:00Z"),
            last_seen: at("2019-10-02T05:00:00Z"),
            favorite_category: None,
            favorite_brand: None,
            conversion_rate: 0.0,
            cart_to_purchase_rate: 0.0,
            segment: Segment::InterestedShopper,
        };
        assert_eq!(profiles, vec![user1, user2]);

        // Events Parquet: by day, in input order, duplicates kept.
        let day1 =
            pq::read_parquet_file(&out.join("events/dt=2019-10-01/part-00000.parquet")).unwrap();
        let day1 = pq::batch_to_events(&day1[0]).unwrap();
        assert_eq!(
            day1.iter().map(|e| e.event_type).collect::<Vec<_>>(),
            vec![EventType::View, EventType::Purchase]
        );
        let day2 =
            pq::read_parquet_file(&out.join("events/dt=2019-10-02/part-00000.parquet")).unwrap();
        let day2 = pq::batch_to_events(&day2[0]).unwrap();
        assert_eq!(day2.len(), 3);
        assert_eq!(day2[0], day2[1]);
        assert_eq!(day2[0].price_cents, 550);
        assert_eq!(day2[2].user_session.as_deref(), Some("s2"));

        // The report reads the lake back to the same numbers.
        let report = crate::report::report_from_lake(&out).unwrap();
        assert_eq!(report, summary.report);
        assert_eq!(report.customers, 2);
        assert_eq!(report.abandoned_carts, 1);
        assert_eq!(report.one_time_buyers, 1);
        let top = report.top_categories.unwrap();
        assert_eq!((top[0].name.as_str(), top[0].revenue_cents), ("a", 1000));
    }

    #[test]
    fn files_roll_over_and_a_rerun_leaves_no_stale_parts() {
        let (dir, summary) = run_on(INPUT, 2);
        let out = dir.path().join("out");
        assert_eq!(summary.event_files, 3);
        assert!(out.join("events/dt=2019-10-02/part-00001.parquet").exists());
        // Run again into the same directory with larger files: part-00001 must disappear.
        let mut options = RunOptions::new(dir.path().join("in.csv"), &out);
        options.rows_per_file = 100;
        let again = run(&options).unwrap();
        assert_eq!(again.event_files, 2);
        assert!(!out.join("events/dt=2019-10-02/part-00001.parquet").exists());
        let files = crate::report::parquet_files(&out.join("events")).unwrap();
        let total: usize = files
            .iter()
            .map(|f| {
                pq::read_parquet_file(f)
                    .unwrap()
                    .iter()
                    .map(|b| b.num_rows())
                    .sum::<usize>()
            })
            .sum();
        assert_eq!(total, 5);
    }

    #[test]
    fn generated_input_matches_a_direct_computation() {
        let mut csv = Vec::new();
        crate::generator::write_csv(crate::generator::GeneratorConfig::new(30_000, 11), &mut csv)
            .unwrap();
        let (dir, summary) = run_on(&csv, 4096);
        let mut book = ProfileBook::new();
        for row in csv_input::open("x", &csv[..]).unwrap() {
            book.apply(&row.unwrap().outcome.unwrap()).unwrap();
        }
        assert_eq!(summary.events_accepted, 30_000);
        assert_eq!(summary.events_rejected, 0);
        let profiles = crate::report::read_profiles(&dir.path().join("out")).unwrap();
        assert_eq!(profiles, book.profiles());
    }

    #[test]
    fn a_missing_input_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(&RunOptions::new(
            dir.path().join("nope.csv"),
            dir.path().join("o"),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("nope.csv"), "{err}");
    }

    #[test]
    fn cr_only_input_is_read_row_by_row() {
        let mac: Vec<u8> = INPUT
            .iter()
            .map(|&b| if b == b'\n' { b'\r' } else { b })
            .collect();
        for input in [mac, INPUT.to_vec()] {
            let (dir, summary) = run_on(&input, pq::ROWS_PER_FILE);
            assert_eq!(summary.events_accepted, 5);
            assert_eq!(summary.events_rejected, 9);
            assert_eq!(summary.profiles, 2);
            assert_eq!(summary.revenue, "10.00");
            let lines: Vec<u64> = std::fs::read_to_string(dir.path().join("out/rejected.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Rejected>(l).unwrap().line)
                .collect();
            assert_eq!(lines, vec![4, 5, 6, 7, 8, 9, 10, 11, 15]);
        }
    }

    /// Every file under `dir` with its bytes.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut files = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let bytes = std::fs::read(&path).unwrap();
                    files.insert(path.strip_prefix(dir).unwrap().to_path_buf(), bytes);
                }
            }
        }
        files
    }

    /// Names in `dir` (the parent of the output): no temporary or old copy may remain.
    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_failing_run_leaves_the_previous_output_untouched() {
        let (dir, _) = run_on(INPUT, pq::ROWS_PER_FILE);
        let out = dir.path().join("out");
        let before = snapshot(&out);
        assert_eq!(before.len(), 5, "{:?}", before.keys());

        // A mistyped input.
        let err = run(&RunOptions::new(dir.path().join("typo.csv"), &out)).unwrap_err();
        assert!(err.to_string().contains("typo.csv"), "{err}");
        assert_eq!(snapshot(&out), before);

        // An input whose header is unusable.
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, b"user_id,price\n1,2\n").unwrap();
        let err = run(&RunOptions::new(&bad, &out)).unwrap_err();
        assert!(matches!(err, Error::Header { .. }), "{err}");
        assert_eq!(snapshot(&out), before);

        // A run that fails half way (a profile overflows): its partial output goes.
        let mut huge = b"user_id,event_type,product_id,price,timestamp\n".to_vec();
        for _ in 0..10 {
            huge.extend_from_slice(b"77,purchase,1,9999999999999999.99,2019-10-05 12:00:00 UTC\n");
        }
        let overflow = dir.path().join("overflow.csv");
        std::fs::write(&overflow, huge).unwrap();
        let err = run(&RunOptions::new(&overflow, &out)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "profile of user_id 77: revenue would exceed 92233720368547758.07 (the largest sum of cents a 64-bit integer holds)"
        );
        assert_eq!(snapshot(&out), before);
        assert_eq!(
            names_in(dir.path()),
            vec!["bad.csv", "in.csv", "out", "overflow.csv"]
        );
    }

    #[test]
    fn a_successful_run_replaces_the_previous_output() {
        let (dir, _) = run_on(INPUT, 2);
        let out = dir.path().join("out");
        assert!(out.join("events/dt=2019-10-02/part-00001.parquet").exists());
        let one_row = dir.path().join("one.csv");
        std::fs::write(
            &one_row,
            b"user_id,event_type,product_id,price,timestamp\n9,view,1,1.00,2019-10-05 12:00:00 UTC\n",
        )
        .unwrap();
        let summary = run(&RunOptions::new(&one_row, &out)).unwrap();
        assert_eq!((summary.events_accepted, summary.profiles), (1, 1));
        let files: Vec<PathBuf> = snapshot(&out).into_keys().collect();
        assert_eq!(
            files,
            vec![
                PathBuf::from("events/dt=2019-10-05/part-00000.parquet"),
                PathBuf::from("profiles/part-00000.parquet"),
                PathBuf::from("rejected.jsonl"),
                PathBuf::from("summary.json"),
            ]
        );
        let on_disk: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(on_disk["events_accepted"], 1);
        assert_eq!(names_in(dir.path()), vec!["in.csv", "one.csv", "out"]);
    }

    #[test]
    fn an_output_directory_holding_other_files_is_refused_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        std::fs::write(&input, INPUT).unwrap();
        let out = dir.path().join("home");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("notes.txt"), b"mine").unwrap();
        std::fs::write(out.join("summary.json"), b"{}").unwrap();
        let err = run(&RunOptions::new(&input, &out)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "configuration: --out {}: holds entries run did not write (notes.txt); the directory is replaced as a whole, so give a new or empty one",
                out.display()
            )
        );
        assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
        assert_eq!(names_in(dir.path()), vec!["home", "in.csv"]);
        let err = run(&RunOptions::new(&input, dir.path().join("in.csv"))).unwrap_err();
        assert!(
            err.to_string().ends_with(": exists and is not a directory"),
            "{err}"
        );
    }
}
