//! Throughput of a pipeline from Kafka offsets, pure: per-partition offsets -> lag and
//! autoscaler inputs; a sliding window of samples -> ingested and processed events/s over
//! the window and whether the lag keeps growing. A snapshot also carries the search
//! index's document count when it could be read. No I/O (the Kafka reader lives in
//! `offset_reader`, the count reader in `index_count`).

use std::collections::VecDeque;

/// Offsets of one partition of the events topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub partition: i32,
    /// Low watermark: the oldest offset still in the log.
    pub low: i64,
    /// High watermark: the offset the next event will get (log-end offset).
    pub log_end: i64,
    /// The runtime's consumer group's committed offset; `None` before its first commit.
    pub committed: Option<i64>,
}

impl PartitionOffsets {
    /// Where the group resumes: its commit, or the log start (the runtime reads from the
    /// earliest offset), never before the log start (retention may have deleted events).
    pub fn position(&self) -> i64 {
        self.committed.unwrap_or(self.low).max(self.low)
    }

    pub fn lag(&self) -> i64 {
        (self.log_end - self.position()).max(0)
    }
}

/// The lag measurement an autoscaling decision is based on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LagInputs {
    /// Consumer lag summed over the events topic's partitions.
    pub total_lag: i64,
    /// Partitions of the events topic.
    pub partitions: i32,
    /// Partitions whose lag is above zero.
    pub partitions_with_lag: i32,
}

/// One measurement of a pipeline's topics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetsSnapshot {
    pub events: Vec<PartitionOffsets>,
    /// Events in the dead-letter topic (high minus low watermarks).
    pub dead_letters: i64,
    /// Documents in the search index (profiles), read at the same time; `None` when the
    /// search engine could not be asked (the status keeps its previous count).
    pub profiles: Option<i64>,
}

impl OffsetsSnapshot {
    pub fn lag_inputs(&self) -> LagInputs {
        LagInputs {
            total_lag: self.events.iter().map(PartitionOffsets::lag).sum(),
            partitions: i32::try_from(self.events.len()).unwrap_or(i32::MAX),
            partitions_with_lag: i32::try_from(self.events.iter().filter(|p| p.lag() > 0).count())
                .unwrap_or(i32::MAX),
        }
    }

    /// Events ever published to the events topic.
    pub fn log_end_total(&self) -> i64 {
        self.events.iter().map(|p| p.log_end).sum()
    }

    /// Events the group has processed (committed), counting events deleted by retention
    /// before the group reached them as neither ingested-and-pending nor lost.
    pub fn committed_total(&self) -> i64 {
        self.events.iter().map(PartitionOffsets::position).sum()
    }
}

/// Sums of one snapshot at a time in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: i64,
    pub log_end: i64,
    pub committed: i64,
    pub lag: i64,
}

impl Sample {
    pub fn of(snapshot: &OffsetsSnapshot, at_ms: i64) -> Self {
        Self {
            at_ms,
            log_end: snapshot.log_end_total(),
            committed: snapshot.committed_total(),
            lag: snapshot.lag_inputs().total_lag,
        }
    }
}

/// Rates over a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    pub ingested_per_second: f64,
    pub processed_per_second: f64,
}

/// How the lag grew over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LagGrowth {
    pub from: i64,
    pub to: i64,
    pub seconds: i64,
}

/// The samples of the last `span_ms`, plus the latest one before it (so the window is
/// covered end to end once enough time has passed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    span_ms: i64,
    samples: VecDeque<Sample>,
}

impl Window {
    pub fn new(span_ms: i64) -> Self {
        Self {
            span_ms: span_ms.max(1),
            samples: VecDeque::new(),
        }
    }

    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    pub fn latest(&self) -> Option<&Sample> {
        self.samples.back()
    }

    /// Adds a sample. A sample older than the newest one (clock step back) or an offset
    /// sum that went backwards (topic recreated) restarts the window.
    pub fn push(&mut self, sample: Sample) {
        if let Some(last) = self.samples.back() {
            if sample.at_ms <= last.at_ms
                || sample.log_end < last.log_end
                || sample.committed < last.committed
            {
                self.samples.clear();
            }
        }
        self.samples.push_back(sample);
        let start = sample.at_ms - self.span_ms;
        while self.samples.len() >= 2 && self.samples[1].at_ms <= start {
            self.samples.pop_front();
        }
    }

    /// Whether the samples span the whole window.
    pub fn is_full(&self) -> bool {
        match (self.samples.front(), self.samples.back()) {
            (Some(first), Some(last)) => last.at_ms - first.at_ms >= self.span_ms,
            _ => false,
        }
    }

    /// Events/s ingested and processed between the window's first and last samples,
    /// rounded to 0.1 so measurement jitter does not rewrite the status; `None` with
    /// fewer than two samples.
    pub fn rates(&self) -> Option<Rates> {
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        let elapsed_ms = last.at_ms - first.at_ms;
        if elapsed_ms <= 0 {
            return None;
        }
        let per_second = |delta: i64| round_tenth(delta as f64 * 1000.0 / elapsed_ms as f64);
        Some(Rates {
            ingested_per_second: per_second(last.log_end - first.log_end),
            processed_per_second: per_second(last.committed - first.committed),
        })
    }

    /// `Some` when the lag kept growing over a full window: every lag of its later half
    /// is above every lag of its earlier half. A healthy runtime's lag is a sawtooth
    /// (events arrive, a checkpoint commits them), whose troughs come back down; a
    /// growing backlog's troughs rise above its earlier peaks.
    pub fn lag_growth(&self) -> Option<LagGrowth> {
        if !self.is_full() || self.samples.len() < 4 {
            return None;
        }
        let half = self.samples.len() / 2;
        let earlier_peak = self.samples.iter().take(half).map(|s| s.lag).max()?;
        let later_trough = self.samples.iter().skip(half).map(|s| s.lag).min()?;
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        (later_trough > earlier_peak).then_some(LagGrowth {
            from: first.lag,
            to: last.lag,
            seconds: (last.at_ms - first.at_ms) / 1000,
        })
    }
}

fn round_tenth(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_s: i64, log_end: i64, committed: i64) -> Sample {
        Sample {
            at_ms: at_s * 1000,
            log_end,
            committed,
            lag: log_end - committed,
        }
    }

    fn window_of(span_s: i64, samples: &[Sample]) -> Window {
        let mut window = Window::new(span_s * 1000);
        for s in samples {
            window.push(*s);
        }
        window
    }

    #[test]
    fn lag_per_partition_uses_the_commit_or_the_log_start() {
        let snapshot = OffsetsSnapshot {
            events: vec![
                PartitionOffsets {
                    partition: 0,
                    low: 0,
                    log_end: 100,
                    committed: Some(40),
                },
                // Never committed: everything from the log start is pending.
                PartitionOffsets {
                    partition: 1,
                    low: 10,
                    log_end: 50,
                    committed: None,
                },
                // Retention deleted past the commit: lag counts only what is left.
                PartitionOffsets {
                    partition: 2,
                    low: 30,
                    log_end: 35,
                    committed: Some(20),
                },
                // Caught up.
                PartitionOffsets {
                    partition: 3,
                    low: 0,
                    log_end: 7,
                    committed: Some(7),
                },
            ],
            dead_letters: 3,
            profiles: None,
        };
        assert_eq!(
            snapshot.lag_inputs(),
            LagInputs {
                total_lag: 60 + 40 + 5,
                partitions: 4,
                partitions_with_lag: 3
            }
        );
        assert_eq!(snapshot.log_end_total(), 192);
        assert_eq!(snapshot.committed_total(), 40 + 10 + 30 + 7);
        assert_eq!(Sample::of(&snapshot, 5).lag, 105);
    }

    #[test]
    fn rates_span_the_window_not_the_last_two_samples() {
        // 15 s apart; ingest 100/s steady; commits arrive in bursts.
        let window = window_of(
            60,
            &[
                sample(0, 0, 0),
                sample(15, 1500, 0),
                sample(30, 3000, 3000),
                sample(45, 4500, 3000),
                sample(60, 6000, 4800),
            ],
        );
        assert_eq!(
            window.rates(),
            Some(Rates {
                ingested_per_second: 100.0,
                processed_per_second: 80.0
            })
        );
    }

    #[test]
    fn old_samples_leave_the_window() {
        let window = window_of(
            30,
            &[
                sample(0, 0, 0),
                sample(10, 100, 0),
                sample(20, 400, 0),
                sample(45, 1150, 700),
            ],
        );
        // Window [15, 45] keeps the sample at 10 (it held at 15) onwards.
        let times: Vec<i64> = window.samples().map(|s| s.at_ms / 1000).collect();
        assert_eq!(times, vec![10, 20, 45]);
        assert!(window.is_full());
        assert_eq!(
            window.rates(),
            Some(Rates {
                ingested_per_second: 30.0, // (1150 - 100) / 35 s
                processed_per_second: 20.0
            })
        );
    }

    #[test]
    fn rates_are_rounded_to_a_tenth() {
        let window = window_of(60, &[sample(0, 0, 0), sample(30, 1001, 1)]);
        assert_eq!(
            window.rates(),
            Some(Rates {
                ingested_per_second: 33.4,
                processed_per_second: 0.0
            })
        );
    }

    #[test]
    fn no_rate_from_one_sample_and_a_reset_restarts() {
        let window = window_of(60, &[sample(0, 10, 0)]);
        assert_eq!(window.rates(), None);
        let window = window_of(60, &[sample(0, 1000, 500), sample(15, 20, 0)]);
        assert_eq!(window.samples().count(), 1);
        assert_eq!(window.rates(), None);
    }

    #[test]
    fn growing_lag_is_detected_only_over_a_full_window() {
        // Ingest 100/s, processing 50/s: the lag grows 750 every 15 s.
        let growing: Vec<Sample> = (0..5).map(|i| sample(i * 15, i * 1500, i * 750)).collect();
        assert_eq!(
            window_of(60, &growing).lag_growth(),
            Some(LagGrowth {
                from: 0,
                to: 3000,
                seconds: 60
            })
        );
        // Same trend, window not yet covered.
        assert_eq!(window_of(60, &growing[..4]).lag_growth(), None);
    }

    #[test]
    fn a_sawtooth_lag_is_not_growth() {
        // Checkpoints commit everything every other sample: lag 0, 1500, 0, 1500, 0...
        let sawtooth: Vec<Sample> = (0..5)
            .map(|i| sample(i * 15, i * 1500, (i - i % 2) * 1500))
            .collect();
        assert_eq!(window_of(60, &sawtooth).lag_growth(), None);
        // A lag that rises then stays flat is not "keeps growing" either.
        let flat = [
            sample(0, 0, 0),
            sample(15, 1000, 0),
            sample(30, 2000, 1000),
            sample(45, 3000, 2000),
            sample(60, 4000, 3000),
        ];
        assert_eq!(window_of(60, &flat).lag_growth(), None);
    }
}
