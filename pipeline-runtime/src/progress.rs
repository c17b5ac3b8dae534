//! Progress of the long commands (`generate`, `run`, `ingest`, `report`) on a terminal.
//!
//! [`line`] formats one progress line from a [`Snapshot`] (pure). [`Progress`] is the thin
//! writer around it: it redraws that line on stderr with `\r`, at most once per
//! [`REDRAW_EVERY`], and clears it when the work is done. Off a terminal (tests, CI, pods,
//! a redirected stderr) it writes nothing at all, so logs and outputs stay as they were.
//! [`Ticker`] redraws from a counter another thread or task moves (for async roles).
//!
//! Written here rather than taken from a crate: one line with `\r` is all the commands
//! need, and it keeps the formatting a pure function that tests can pin down.

use std::io::{IsTerminal, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Redraw at most this often (a few times a second).
pub const REDRAW_EVERY: Duration = Duration::from_millis(250);

/// What is being counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Rows,
    Files,
    Profiles,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Rows => "rows",
            Unit::Files => "files",
            Unit::Profiles => "profiles",
        }
    }
}

/// The state one progress line shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot<'a> {
    /// What runs, e.g. `generate`.
    pub label: &'a str,
    pub done: u64,
    /// `None` when the total is not known in advance.
    pub total: Option<u64>,
    pub unit: Unit,
    pub elapsed: Duration,
}

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count of `unit`: `1,234 rows`, or `12.3 MiB` for bytes.
fn amount(n: f64, unit: Unit) -> String {
    if unit != Unit::Bytes {
        return format!("{} {}", thousands(n.round() as u64), unit.name());
    }
    const STEPS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n;
    let mut step = 0;
    while value >= 1024.0 && step + 1 < STEPS.len() {
        value /= 1024.0;
        step += 1;
    }
    if step == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", STEPS[step])
    }
}

/// `4s`, `1m05s`, `2h03m`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// One progress line, e.g.
/// `generate: 412,000/885,129 rows (46%), 206,000 rows/s, eta 3s` or, without a total,
/// `report: 120,000 profiles, 60,000 profiles/s, 2s`.
pub fn line(s: &Snapshot) -> String {
    let secs = s.elapsed.as_secs_f64();
    let rate = (secs > 0.0).then(|| s.done as f64 / secs);
    let mut out = format!("{}: ", s.label);
    match s.total {
        Some(total) => {
            let pct = if total == 0 {
                100
            } else {
                (s.done.min(total) as u128 * 100 / total as u128) as u64
            };
            if s.unit == Unit::Bytes {
                out += &format!(
                    "{}/{}",
                    amount(s.done as f64, s.unit),
                    amount(total as f64, s.unit)
                );
            } else {
                out += &format!("{}/{}", thousands(s.done), amount(total as f64, s.unit));
            }
            out += &format!(" ({pct}%)");
            if let Some(rate) = rate {
                out += &format!(", {}/s", amount(rate, s.unit));
                if rate > 0.0 && s.done < total {
                    let left = (total - s.done) as f64 / rate;
                    out += &format!(", eta {}", duration(Duration::from_secs_f64(left.ceil())));
                }
            }
        }
        None => {
            out += &amount(s.done as f64, s.unit);
            if let Some(rate) = rate {
                out += &format!(", {}/s", amount(rate, s.unit));
            }
            out += &format!(", {}", duration(s.elapsed));
        }
    }
    out
}

/// Clears the current terminal line and goes back to its start.
const CLEAR: &str = "\r\x1b[K";

/// A progress line redrawn in place; writes nothing when hidden (off a terminal).
pub struct Progress {
    out: Option<Box<dyn Write + Send>>,
    label: String,
    total: Option<u64>,
    unit: Unit,
    started: Instant,
    /// When the line was last drawn; nothing is drawn in the first [`REDRAW_EVERY`] either,
    /// so quick work shows no progress at all.
    last_draw: Option<Instant>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("visible", &self.out.is_some())
            .field("label", &self.label)
            .finish()
    }
}

impl Progress {
    /// On stderr when stderr is a terminal; hidden otherwise.
    pub fn stderr(label: &str, total: Option<u64>, unit: Unit) -> Progress {
        if std::io::stderr().is_terminal() {
            Progress::to_writer(
                Box::new(std::io::stderr()),
                label,
                total,
                unit,
                Instant::now(),
            )
        } else {
            Progress::hidden()
        }
    }

    /// Writes nothing.
    pub fn hidden() -> Progress {
        Progress {
            out: None,
            label: String::new(),
            total: None,
            unit: Unit::Rows,
            started: Instant::now(),
            last_draw: None,
        }
    }

    /// Draws on `out` (tests give a buffer); `started` is when the work began.
    pub fn to_writer(
        out: Box<dyn Write + Send>,
        label: &str,
        total: Option<u64>,
        unit: Unit,
        started: Instant,
    ) -> Progress {
        Progress {
            out: Some(out),
            label: label.to_owned(),
            total,
            unit,
            started,
            last_draw: None,
        }
    }

    /// Whether anything is drawn.
    pub fn is_visible(&self) -> bool {
        self.out.is_some()
    }

    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
    }

    /// `done` so far; redraws when [`REDRAW_EVERY`] has passed since the last drawing.
    pub fn set(&mut self, done: u64) {
        if self.out.is_some() {
            self.set_at(done, Instant::now());
        }
    }

    /// [`Progress::set`] at a given time.
    pub fn set_at(&mut self, done: u64, now: Instant) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        let last = self.last_draw.unwrap_or(self.started);
        if now.saturating_duration_since(last) < REDRAW_EVERY {
            return;
        }
        self.last_draw = Some(now);
        let text = line(&Snapshot {
            label: &self.label,
            done,
            total: self.total,
            unit: self.unit,
            elapsed: now.saturating_duration_since(self.started),
        });
        // A terminal that went away is no reason to fail the work.
        let _ = write!(out, "{CLEAR}{text}");
        let _ = out.flush();
    }

    /// Clears the line if one was drawn; later calls draw nothing.
    pub fn finish(&mut self) {
        if let Some(mut out) = self.out.take() {
            if self.last_draw.is_some() {
                let _ = write!(out, "{CLEAR}");
                let _ = out.flush();
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Redraws a [`Progress`] from a counter on a thread of its own until dropped (for work
/// that runs on async tasks or other threads).
#[derive(Debug)]
pub struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    /// Reads `done()` every [`REDRAW_EVERY`]; nothing is started when `progress` is hidden.
    pub fn spawn(mut progress: Progress, done: impl Fn() -> u64 + Send + 'static) -> Ticker {
        if !progress.is_visible() {
            return Ticker {
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(REDRAW_EVERY) {
                progress.set(done());
            }
            progress.finish();
        });
        Ticker {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn snapshot(done: u64, total: Option<u64>, unit: Unit, millis: u64) -> String {
        line(&Snapshot {
            label: "generate",
            done,
            total,
            unit,
            elapsed: Duration::from_millis(millis),
        })
    }

    #[test]
    fn lines_with_a_total() {
        // 412000 rows in 2 s: 206000 rows/s; 473129 left -> 2.29 s -> eta 3s.
        assert_eq!(
            snapshot(412_000, Some(885_129), Unit::Rows, 2_000),
            "generate: 412,000/885,129 rows (46%), 206,000 rows/s, eta 3s"
        );
        // 12.5 MiB of 50 MiB in 0.5 s: 25 MiB/s, 37.5 MiB left -> 1.5 s -> eta 2s.
        assert_eq!(
            snapshot(13_107_200, Some(52_428_800), Unit::Bytes, 500),
            "generate: 12.5 MiB/50.0 MiB (25%), 25.0 MiB/s, eta 2s"
        );
        // Done: no eta.
        assert_eq!(
            snapshot(10, Some(10), Unit::Files, 5_000),
            "generate: 10/10 files (100%), 2 files/s"
        );
    }

    #[test]
    fn lines_at_the_start_and_without_a_total() {
        assert_eq!(
            snapshot(0, Some(885_129), Unit::Rows, 0),
            "generate: 0/885,129 rows (0%)"
        );
        assert_eq!(
            snapshot(0, Some(0), Unit::Rows, 0),
            "generate: 0/0 rows (100%)"
        );
        assert_eq!(
            snapshot(120_000, None, Unit::Profiles, 65_000),
            "generate: 120,000 profiles, 1,846 profiles/s, 1m05s"
        );
        assert_eq!(snapshot(512, None, Unit::Bytes, 0), "generate: 512 B, 0s");
    }

    #[test]
    fn helpers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(885_129), "885,129");
        assert_eq!(thousands(10_000_000), "10,000,000");
        assert_eq!(duration(Duration::from_secs(7_380)), "2h03m");
    }

    /// A writer the test reads afterwards.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn redraws_at_most_every_quarter_second_and_clears_at_the_end() {
        let buffer = Shared::default();
        let start = Instant::now();
        let mut progress = Progress::to_writer(
            Box::new(buffer.clone()),
            "run",
            Some(100),
            Unit::Rows,
            start,
        );
        let at = |ms| start + Duration::from_millis(ms);
        progress.set_at(1, at(249)); // too soon after the start
        progress.set_at(10, at(1_000)); // drawn
        progress.set_at(20, at(1_100)); // too soon
        progress.set_at(30, at(1_249)); // too soon
        progress.set_at(40, at(1_250)); // drawn
        progress.finish();
        progress.set_at(50, at(9_000)); // finished: nothing
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "\r\x1b[Krun: 10/100 rows (10%), 10 rows/s, eta 9s\
             \r\x1b[Krun: 40/100 rows (40%), 32 rows/s, eta 2s\
             \r\x1b[K"
        );
    }

    #[test]
    fn hidden_progress_writes_nothing_and_a_line_never_drawn_is_not_cleared() {
        let mut hidden = Progress::hidden();
        hidden.set(5);
        hidden.finish();
        assert!(!hidden.is_visible());

        let buffer = Shared::default();
        let progress = Progress::to_writer(
            Box::new(buffer.clone()),
            "x",
            None,
            Unit::Rows,
            Instant::now(),
        );
        drop(progress);
        assert!(buffer.0.lock().unwrap().is_empty());
    }

    #[test]
    fn a_ticker_of_hidden_progress_starts_no_thread() {
        let ticker = Ticker::spawn(Progress::hidden(), || 1);
        assert!(ticker.thread.is_none());
    }
}
