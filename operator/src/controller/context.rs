//! `Context`: everything a visit needs besides the pipeline (the client, the settings, the
//! credential generator, the throughput observer, the clock), and what the controller
//! remembers per pipeline between visits, in memory only: consecutive failures (for the
//! backoff), the throughput window and the autoscaler's history, the last apply, and
//! whether a child or a referenced Secret changed. Measuring goes through it
//! (`measure_and_evaluate`): the observer does the I/O, the evaluation is pure.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    runtime::{controller::Action, events::Reporter},
    Client, ResourceExt,
};

use super::{
    autoscale::evaluation::{self, Evaluation, PipelineMemory},
    build::names::namespaced_name,
    credentials::CredentialGenerator,
    measure::observer::{Measurement, ThroughputObserver},
    validate::{OperatorSettings, ValidatedPipeline},
    visit::LastApply,
};
use crate::{
    crd::{conditions, DataPipeline, DataPipelineStatus},
    metrics::Metrics,
};

/// Everything a reconcile needs besides the object.
pub struct Context {
    pub client: Client,
    /// Identity of the operator in the Events it publishes.
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    pub settings: OperatorSettings,
    pub credentials: Arc<dyn CredentialGenerator>,
    pub observer: Arc<dyn ThroughputObserver>,
    /// Current time, whole seconds (what a status timestamp can hold).
    pub clock: Arc<dyn Fn() -> Time + Send + Sync>,
    /// How often a healthy pipeline is reconciled again (repairs drift).
    pub resync: Duration,
    /// How often the pipelines' offsets are read (and healthy pipelines reconciled).
    pub observe_interval: Duration,
    /// Consecutive failures per pipeline, for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Per pipeline (`namespace/name`): the throughput window and the autoscaler's
    /// recommendation history. In memory only: rebuilt within one window after a restart.
    memory: Mutex<HashMap<String, PipelineMemory>>,
    /// Per pipeline: what its last applying reconcile saw (cleared by a failure).
    last_applies: Mutex<HashMap<String, LastApply>>,
    /// Pipelines whose children or referenced Secrets changed since their last visit
    /// (set by the watches).
    dependents_changed: Mutex<HashSet<String>>,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        settings: OperatorSettings,
        credentials: Arc<dyn CredentialGenerator>,
        observer: Arc<dyn ThroughputObserver>,
        clock: Arc<dyn Fn() -> Time + Send + Sync>,
        resync: Duration,
    ) -> Self {
        Self {
            client,
            reporter,
            metrics,
            settings,
            credentials,
            observer,
            clock,
            resync,
            observe_interval: DEFAULT_OBSERVE_INTERVAL,
            failures: Mutex::new(HashMap::new()),
            memory: Mutex::new(HashMap::new()),
            last_applies: Mutex::new(HashMap::new()),
            dependents_changed: Mutex::new(HashSet::new()),
        }
    }

    /// Notes that a child or a referenced Secret of the pipeline `key` changed: its next
    /// visit applies.
    pub fn dependent_changed(&self, key: String) {
        self.dependents_changed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key);
    }

    pub(super) fn take_dependent_changed(&self, key: &str) -> bool {
        self.dependents_changed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)
    }

    pub(super) fn last_apply(&self, key: &str) -> Option<LastApply> {
        self.last_applies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    pub(super) fn remember_apply(&self, key: &str, last: Option<LastApply>) {
        let mut applies = self.last_applies.lock().unwrap_or_else(|e| e.into_inner());
        match last {
            Some(last) => applies.insert(key.to_string(), last),
            None => applies.remove(key),
        };
    }

    /// Reads the offsets (once Kafka has been seen ready) and runs the autoscaler and
    /// throughput window on them.
    pub(super) async fn measure_and_evaluate(
        &self,
        key: &str,
        plan: &ValidatedPipeline,
        dp: &DataPipeline,
        now: &Time,
    ) -> (Measurement, Evaluation) {
        // Offsets are read once Kafka has been seen ready (external Kafka always is): a
        // cluster still starting would only time out.
        let (measurement, fresh) = if kafka_was_ready(dp) {
            self.measure(key, plan, now.0.as_second()).await
        } else {
            (Measurement::Skipped, false)
        };
        let evaluation = self.evaluate(key, &measurement, fresh, plan, dp.status.as_ref(), now);
        (measurement, evaluation)
    }

    /// Measured pipelines come back every observation interval; the rest only to repair
    /// drift.
    pub(super) fn requeue_after(&self, measurement: &Measurement) -> Action {
        Action::requeue(if *measurement == Measurement::Skipped {
            self.resync
        } else {
            self.resync.min(self.observe_interval)
        })
    }

    /// Sets how often offsets are read.
    pub fn with_observe_interval(mut self, interval: Duration) -> Self {
        self.observe_interval = interval.max(Duration::from_secs(1));
        self
    }

    /// The throughput window: four observation intervals, so rates average over several
    /// checkpoints and lag growth needs a sustained trend.
    fn window_ms(&self) -> i64 {
        i64::try_from(self.observe_interval.as_millis() * 4).unwrap_or(i64::MAX)
    }

    /// Reads the pipeline's offsets, or reuses the last reading when reconciles come
    /// faster than half the observation interval.
    /// Returns the measurement and whether it was read now (a reused one adds no sample).
    async fn measure(
        &self,
        key: &str,
        plan: &ValidatedPipeline,
        now_s: i64,
    ) -> (Measurement, bool) {
        let half_interval = i64::try_from(self.observe_interval.as_secs() / 2).unwrap_or(0);
        let recent = self
            .memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .and_then(|m| m.last_measurement.clone())
            .filter(|(at, _)| now_s - at < half_interval.max(1) && now_s >= *at);
        if let Some((_, measurement)) = recent {
            return (measurement, false);
        }
        let measurement = self.observer.observe(plan).await;
        if let Measurement::Measured(_) = measurement {
            let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            memory
                .entry(key.to_string())
                .or_insert_with(|| PipelineMemory::new(self.window_ms()))
                .last_measurement = Some((now_s, measurement.clone()));
        }
        (measurement, true)
    }

    fn evaluate(
        &self,
        key: &str,
        measurement: &Measurement,
        fresh: bool,
        plan: &ValidatedPipeline,
        old: Option<&DataPipelineStatus>,
        now: &Time,
    ) -> Evaluation {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let entry = memory
            .entry(key.to_string())
            .or_insert_with(|| PipelineMemory::new(self.window_ms()));
        evaluation::evaluate(entry, measurement, fresh, plan, old, now)
    }

    pub(super) fn record_failure(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key.to_string()).or_insert(0);
        *count += 1;
        *count
    }

    pub(super) fn clear_failures(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Default of `--observe-interval`.
pub const DEFAULT_OBSERVE_INTERVAL: Duration = Duration::from_secs(15);

/// The wall clock, truncated to whole seconds.
pub fn system_clock() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// The pipeline's key in the context's memory: `namespace/name`.
pub(super) fn key(dp: &DataPipeline) -> String {
    namespaced_name(&dp.namespace().unwrap_or_default(), &dp.name_any())
}

/// Whether Kafka was ready at the last status (external Kafka always is).
fn kafka_was_ready(dp: &DataPipeline) -> bool {
    dp.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == conditions::types::KAFKA_READY && c.status == "True")
    })
}
