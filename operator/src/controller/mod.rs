//! The DataPipeline controller: `reconcile` runs dereference (I/O) -> validate (pure) ->
//! build (pure) -> apply (I/O) -> pods (I/O, only while something is not ready) -> status
//! (pure computation, one write), `error_policy` retries transient failures with backoff,
//! and `run` wires the watches. A visit that [`visit`] finds nothing to apply for is an
//! observation: validate -> measure -> pods -> status, with the children as the last apply
//! saw them. The steps live in the submodules; this module only sequences them.

pub mod apply;
pub mod autoscale;
pub mod build;
pub mod credentials;
pub mod dereference;
pub mod events;
pub mod measure;
pub mod problem;
pub mod status;
pub mod validate;
pub mod visit;

#[cfg(test)]
pub(crate) mod fixtures;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::Job,
        core::v1::{Pod, Secret},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    api::ListParams,
    runtime::{
        controller::{Action, Controller},
        events::Reporter,
        reflector::ObjectRef,
        watcher,
    },
    Api, Client, Resource, ResourceExt,
};
use tracing::{info, warn};

use self::{
    autoscale::evaluation::{self, Evaluation, PipelineMemory},
    build::names::{LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGER},
    credentials::CredentialGenerator,
    events::Notice,
    measure::{
        observer::{Measurement, ThroughputObserver},
        offset_reader::KafkaOffsets,
    },
    status::findings::{Observation, PipelineFacts},
    validate::{OperatorSettings, ValidatedPipeline},
    visit::{Identity, LastApply},
};
use crate::{
    crd::{conditions, DataPipeline},
    error::{Error, Result},
    metrics::{Metrics, Outcome},
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

    fn take_dependent_changed(&self, key: &str) -> bool {
        self.dependents_changed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)
    }

    fn last_apply(&self, key: &str) -> Option<LastApply> {
        self.last_applies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn remember_apply(&self, key: &str, last: Option<LastApply>) {
        let mut applies = self.last_applies.lock().unwrap_or_else(|e| e.into_inner());
        match last {
            Some(last) => applies.insert(key.to_string(), last),
            None => applies.remove(key),
        };
    }

    /// Reads the offsets (once Kafka has been seen ready) and runs the autoscaler and
    /// throughput window on them.
    async fn measure_and_evaluate(
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
    fn requeue_after(&self, measurement: &Measurement) -> Action {
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
        old: Option<&crate::crd::DataPipelineStatus>,
        now: &Time,
    ) -> Evaluation {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let entry = memory
            .entry(key.to_string())
            .or_insert_with(|| PipelineMemory::new(self.window_ms()));
        evaluation::evaluate(entry, measurement, fresh, plan, old, now)
    }

    fn record_failure(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key.to_string()).or_insert(0);
        *count += 1;
        *count
    }

    fn clear_failures(&self, key: &str) {
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

fn key(dp: &DataPipeline) -> String {
    format!("{}/{}", dp.namespace().unwrap_or_default(), dp.name_any())
}

fn identity(dp: &DataPipeline) -> Identity {
    Identity {
        uid: dp.metadata.uid.clone(),
        generation: dp.metadata.generation,
        labels: dp.labels().clone(),
        annotations: dp.annotations().clone(),
    }
}

/// Reconciles one DataPipeline and records the outcome in the metrics.
pub async fn reconcile(dp: Arc<DataPipeline>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_pipeline(&dp, &ctx).await;
    let elapsed = started.elapsed().as_secs_f64();
    match result {
        Ok((action, outcome)) => {
            ctx.clear_failures(&key(&dp));
            ctx.metrics.record(outcome, elapsed);
            Ok(action)
        }
        Err(error) => {
            // Whatever the failed visit left half done, the next one applies again.
            ctx.remember_apply(&key(&dp), None);
            ctx.metrics
                .record(Outcome::Failed(error.category()), elapsed);
            Err(error)
        }
    }
}

/// Backoff before retrying after the `attempt`-th consecutive failure: 5 s doubling to 5 min.
pub fn backoff(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(6);
    Duration::from_secs((5u64 << exponent).min(300))
}

/// Transient failures (API errors) are retried with backoff.
pub fn error_policy(dp: Arc<DataPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempt = ctx.record_failure(&key(&dp));
    let delay = backoff(attempt);
    warn!(pipeline = %key(&dp), category = error.category(), %error, attempt, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_pipeline(dp: &DataPipeline, ctx: &Context) -> Result<(Action, Outcome)> {
    let namespace = dp
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = dp
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    let pipeline_key = key(dp);
    let identity = identity(dp);
    let now = (ctx.clock)();
    let last = ctx.last_apply(&pipeline_key);
    let apply_reason = visit::apply_reason(
        last.as_ref().map(|l| (&l.identity, l.at_s)),
        &identity,
        ctx.take_dependent_changed(&pipeline_key),
        now.0.as_second(),
        i64::try_from(ctx.resync.as_secs()).unwrap_or(i64::MAX),
    );

    let mut notices = Vec::new();
    // An evaluation made by an observation that turned into an apply (the autoscaler
    // asked for other replicas): the apply uses it rather than sampling twice.
    let mut evaluated = None;
    if let (None, Some(last)) = (apply_reason, last) {
        if let Ok(plan) = validate::validate(dp, &ctx.settings) {
            let (measurement, evaluation) = ctx
                .measure_and_evaluate(&pipeline_key, &plan, dp, &now)
                .await;
            if evaluation.replicas == last.replicas {
                tracing::debug!(pipeline = %pipeline_key, "observing");
                notices.extend(evaluation.notice.clone());
                let pods =
                    status::pods::read_problems(&ctx.client, &namespace, &name, &last.children)
                        .await;
                let observation = Observation::Applied {
                    children: last.children,
                    pods,
                    facts: last.facts,
                    throughput: evaluation.throughput,
                    autoscaler: evaluation.autoscaler,
                    flow: evaluation.health,
                };
                let action = ctx.requeue_after(&measurement);
                return write_status(dp, ctx, &observation, notices, action, Outcome::Observed)
                    .await;
            }
            evaluated = Some((measurement, evaluation));
        }
    }
    info!(pipeline = %pipeline_key, generation = dp.metadata.generation, reason = ?apply_reason, "reconciling");

    // The first child that could not be applied: the reconcile fails (and is retried with
    // backoff) once the status has said which child it was and why.
    let mut apply_error = None;
    let (observation, action, outcome) =
        match dereference::dereference(&ctx.client, &namespace, &name, &dp.spec).await? {
            Err(problem) => blocked(problem),
            Ok(existing) => match validate::validate(dp, &ctx.settings) {
                Err(problem) => blocked(problem),
                Ok(mut plan) => {
                    let (measurement, evaluation) = match evaluated.take() {
                        Some(evaluated) => evaluated,
                        None => {
                            ctx.measure_and_evaluate(&pipeline_key, &plan, dp, &now)
                                .await
                        }
                    };
                    // The decision is the builder's input for the runtime Deployment.
                    plan.runtime.replicas = evaluation.replicas;
                    notices.extend(evaluation.notice.clone());
                    let credentials =
                        credentials::complete(existing, &plan, ctx.credentials.as_ref())?;
                    let children = build::desired_children(&plan, &credentials)?;
                    let applied = apply::apply_in_order(&ctx.client, &namespace, &children).await?;
                    let deleted = apply::orphans::delete_orphans(
                        &ctx.client,
                        &namespace,
                        &name,
                        &plan.uid,
                        &children,
                    )
                    .await?;
                    if !deleted.is_empty() {
                        notices.push(Notice {
                            warning: false,
                            reason: conditions::events::ORPHAN_DELETED.into(),
                            note: format!(
                                "deleted {}: the spec no longer asks for them",
                                deleted.join(", ")
                            ),
                        });
                    }
                    let mut children = Box::new(apply::patch::children_state(
                        &applied.applied,
                        applied.failures(),
                    )?);
                    notices.extend(
                        apply::generator_job::recover(
                            &ctx.client,
                            &namespace,
                            &mut children.ingest,
                            &applied.applied,
                            dp.status.as_ref().and_then(|s| s.ingest_job.as_ref()),
                            &now,
                        )
                        .await?,
                    );
                    apply_error = applied.into_error();
                    let pods =
                        status::pods::read_problems(&ctx.client, &namespace, &name, &children)
                            .await;
                    let facts = PipelineFacts::of(&plan);
                    ctx.remember_apply(
                        &pipeline_key,
                        Some(LastApply {
                            identity,
                            at_s: now.0.as_second(),
                            replicas: evaluation.replicas,
                            children: children.clone(),
                            facts: facts.clone(),
                        }),
                    );
                    let observation = Observation::Applied {
                        children,
                        pods,
                        facts,
                        throughput: evaluation.throughput,
                        autoscaler: evaluation.autoscaler,
                        flow: evaluation.health,
                    };
                    (
                        observation,
                        ctx.requeue_after(&measurement),
                        Outcome::Applied,
                    )
                }
            },
        };
    if matches!(outcome, Outcome::Blocked(_)) {
        ctx.remember_apply(&pipeline_key, None);
    }
    let written = write_status(dp, ctx, &observation, notices, action, outcome).await?;
    match apply_error {
        Some(error) => Err(error),
        None => Ok(written),
    }
}

/// Computes the status from the observation, writes it if it changed, publishes the
/// notices and the transitions' Events.
async fn write_status(
    dp: &DataPipeline,
    ctx: &Context,
    observation: &Observation,
    mut notices: Vec<Notice>,
    action: Action,
    outcome: Outcome,
) -> Result<(Action, Outcome)> {
    let old = dp.status.as_ref();
    let new_status =
        status::compute::compute_status(old, dp.metadata.generation, observation, &(ctx.clock)());
    if old != Some(&new_status)
        && status::write::write_status(&ctx.client, dp, &new_status).await?
            == status::write::StatusWrite::PipelineGone
    {
        // Its children go with it (owner references); the deletion wakes nobody.
        ctx.remember_apply(&key(dp), None);
        return Ok((Action::await_change(), outcome));
    }
    notices.extend(events::transition_notices(old, &new_status));
    events::publish(&ctx.client, &ctx.reporter, &dp.object_ref(&()), notices).await;
    Ok((action, outcome))
}

fn kafka_was_ready(dp: &DataPipeline) -> bool {
    dp.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == conditions::types::KAFKA_READY && c.status == "True")
    })
}

fn blocked(problem: problem::Problem) -> (Observation, Action, Outcome) {
    let outcome = Outcome::Blocked(problem.category());
    // Nothing changes until the user edits the pipeline or creates the Secret; both wake
    // the controller.
    (
        Observation::Blocked(problem),
        Action::await_change(),
        outcome,
    )
}

/// Settings of the running controller.
pub struct RunConfig {
    pub settings: OperatorSettings,
    /// Watch only this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    pub resync: Duration,
    pub reporter: Reporter,
    /// How often offsets are read from Kafka (throughput, autoscaling).
    pub observe_interval: Duration,
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The pipelines owning a child, each noted as having a changed dependent.
fn owners_changed(ctx: &Context, child: &ObjectMeta) -> Vec<ObjectRef<DataPipeline>> {
    let namespace = child.namespace.clone().unwrap_or_default();
    child
        .owner_references
        .iter()
        .flatten()
        .filter(|owner| {
            owner.kind == DataPipeline::kind(&())
                && owner.api_version == DataPipeline::api_version(&())
        })
        .map(|owner| {
            ctx.dependent_changed(format!("{namespace}/{}", owner.name));
            ObjectRef::new(&owner.name).within(&namespace)
        })
        .collect()
}

/// The pipeline a pod belongs to, by its instance label.
fn pipeline_of_pod(pod: &ObjectMeta) -> Option<ObjectRef<DataPipeline>> {
    let pipeline = pod.labels.as_ref()?.get(LABEL_INSTANCE)?;
    Some(ObjectRef::new(pipeline).within(pod.namespace.as_deref()?))
}

/// Runs the controller until SIGTERM/SIGINT.
pub async fn run(
    client: Client,
    config: RunConfig,
    metrics: Arc<Metrics>,
) -> Result<(), kube::Error> {
    let namespace = config.namespace.as_deref();
    let pipelines: Api<DataPipeline> = api(&client, namespace);
    // Fail fast with a clear log line when the CRD is missing.
    if let Err(error) = pipelines.list(&ListParams::default().limit(1)).await {
        warn!(%error, "cannot list DataPipelines: is the CRD installed? (`datapipeline-operator crd | kubectl apply -f -`)");
        return Err(error);
    }
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            config.reporter,
            metrics,
            config.settings,
            Arc::new(credentials::RandomCredentials),
            Arc::new(KafkaOffsets {
                client: client.clone(),
            }),
            Arc::new(system_clock),
            config.resync,
        )
        .with_observe_interval(config.observe_interval),
    );
    let controller = Controller::new(pipelines, watcher::Config::default().any_semantic());
    let store = controller.store();
    let ours = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    // Secrets a pipeline refers to wake it when they appear or change. Service-account
    // tokens and Helm releases are never referenced: leave them out of the stream.
    let referable = watcher::Config::default()
        .fields("type!=kubernetes.io/service-account-token,type!=helm.sh/release.v1");
    // Like `owns`, and the owner's next visit applies (the children's state is read
    // from the apply).
    let (sts_ctx, deployment_ctx, job_ctx, secret_ctx) =
        (ctx.clone(), ctx.clone(), ctx.clone(), ctx.clone());
    controller
        .watches(
            api::<StatefulSet>(&client, namespace),
            ours.clone(),
            move |child| owners_changed(&sts_ctx, child.meta()),
        )
        .watches(
            api::<Deployment>(&client, namespace),
            ours.clone(),
            move |child| owners_changed(&deployment_ctx, child.meta()),
        )
        .watches(api::<Job>(&client, namespace), ours.clone(), move |child| {
            owners_changed(&job_ctx, child.meta())
        })
        // A pod that cannot start changes no workload's status: its pipeline is visited
        // (an observation, nothing applied) so its condition says why.
        .watches(api::<Pod>(&client, namespace), ours, |pod| {
            pipeline_of_pod(pod.meta())
        })
        .watches(
            api::<Secret>(&client, namespace),
            referable,
            move |secret| {
                let secret_namespace = secret.namespace();
                let secret_name = secret.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|dp| {
                        dp.namespace() == secret_namespace
                            && dereference::refers_to_secret(&dp.spec, &secret_name)
                    })
                    .map(|dp| {
                        secret_ctx.dependent_changed(key(&dp));
                        ObjectRef::from_obj(dp.as_ref())
                    })
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok(_) => {}
                // A child changed after its pipeline was deleted: nothing to do.
                Err(kube::runtime::controller::Error::ObjectNotFound(object)) => {
                    tracing::debug!(%object, "pipeline already deleted");
                }
                Err(error) => warn!(%error, "controller event"),
            }
        })
        .await;
    info!("controller stopped");
    Ok(())
}

#[cfg(test)]
mod tests;
