//! One visit of a DataPipeline (kube-rs's reconcile function) and its retry policy. A
//! visit validates the pipeline once and measures it at most once, then is one of two:
//!
//! - an observation (`observe`), when [`visit::apply_reason`] finds nothing to apply and
//!   the autoscaler keeps the replicas: the children as the last apply saw them, the pods
//!   (only while something is not ready), the status;
//! - an apply (`apply`): dereference (I/O) -> the validated plan -> credentials -> build
//!   (pure) -> apply and orphan deletion (I/O) -> the generator Job's recovery -> pods ->
//!   the status.
//!
//! Both end in `write_status`: the pure status computation, one write when it changed, the
//! pipeline's gauges, and the Events. This module only sequences the steps, which live in
//! the other modules.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{runtime::controller::Action, Resource, ResourceExt};
use tracing::{info, warn};

use super::{
    apply,
    autoscale::evaluation::Evaluation,
    build,
    context::{key, Context},
    credentials, dereference,
    events::{self, Notice},
    measure::observer::Measurement,
    problem::Problem,
    status::{
        self,
        findings::{Observation, PipelineFacts},
    },
    validate::{self, ValidatedPipeline},
    visit::{self, Identity, LastApply},
};
use crate::{
    crd::{conditions, DataPipeline},
    error::{Error, Result},
    metrics::{Outcome, PipelineSample},
};

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

/// Who and when a visit is about.
struct Visit {
    namespace: String,
    name: String,
    /// `namespace/name`: the pipeline's key in the context's memory.
    key: String,
    identity: Identity,
    now: Time,
}

/// A measurement and what the autoscaler and the throughput window made of it.
type Measured = (Measurement, Evaluation);

async fn reconcile_pipeline(dp: &DataPipeline, ctx: &Context) -> Result<(Action, Outcome)> {
    let visit = Visit {
        namespace: dp
            .metadata
            .namespace
            .clone()
            .ok_or(Error::MissingMetadata("namespace"))?,
        name: dp
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingMetadata("name"))?,
        key: key(dp),
        identity: Identity::of(dp),
        now: (ctx.clock)(),
    };
    let last = ctx.last_apply(&visit.key);
    let apply_reason = visit::apply_reason(
        last.as_ref().map(|l| (&l.identity, l.at_s)),
        &visit.identity,
        ctx.take_dependent_changed(&visit.key),
        visit.now.0.as_second(),
        i64::try_from(ctx.resync.as_secs()).unwrap_or(i64::MAX),
    );
    // The visit's one validation: the observation measures with it, the apply builds
    // from it.
    let validation = validate::validate(dp, &ctx.settings);
    // The visit's one measurement: an observation that turns into an apply (the
    // autoscaler asked for other replicas) hands it on rather than sampling twice.
    let mut measured = None;
    if let (None, Some(last), Ok(plan)) = (apply_reason, last, &validation) {
        let (measurement, evaluation) = ctx
            .measure_and_evaluate(&visit.key, plan, dp, &visit.now)
            .await;
        if evaluation.replicas == last.replicas {
            return observe(dp, ctx, &visit, last, (measurement, evaluation)).await;
        }
        measured = Some((measurement, evaluation));
    }
    info!(pipeline = %visit.key, generation = dp.metadata.generation, reason = ?apply_reason, "reconciling");
    apply(dp, ctx, visit, validation, measured).await
}

/// An observation: nothing is applied; the children are as the last apply saw them.
async fn observe(
    dp: &DataPipeline,
    ctx: &Context,
    visit: &Visit,
    last: LastApply,
    (measurement, evaluation): Measured,
) -> Result<(Action, Outcome)> {
    tracing::debug!(pipeline = %visit.key, "observing");
    let notices = evaluation.notice.clone().into_iter().collect();
    let pods =
        status::pods::read_problems(&ctx.client, &visit.namespace, &visit.name, &last.children)
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
    write_status(dp, ctx, &observation, notices, action, Outcome::Observed).await
}

/// An apply: blocked by a problem with the referenced Secrets or the spec, or the whole
/// plan applied. The first child that could not be applied fails the visit (retried with
/// backoff) once the status has said which child it was and why.
async fn apply(
    dp: &DataPipeline,
    ctx: &Context,
    visit: Visit,
    validation: std::result::Result<ValidatedPipeline, Problem>,
    measured: Option<Measured>,
) -> Result<(Action, Outcome)> {
    let mut notices = Vec::new();
    let mut apply_error = None;
    let (observation, action, outcome) =
        match dereference::dereference(&ctx.client, &visit.namespace, &visit.name, &dp.spec).await?
        {
            Err(problem) => blocked(problem),
            Ok(existing) => match validation {
                Err(problem) => blocked(problem),
                Ok(plan) => {
                    let (observation, action, error) =
                        apply_plan(dp, ctx, &visit, existing, plan, measured, &mut notices).await?;
                    apply_error = error;
                    (observation, action, Outcome::Applied)
                }
            },
        };
    if matches!(outcome, Outcome::Blocked(_)) {
        ctx.remember_apply(&visit.key, None);
    }
    let written = write_status(dp, ctx, &observation, notices, action, outcome).await?;
    match apply_error {
        Some(error) => Err(error),
        None => Ok(written),
    }
}

/// Applies a validated plan: the measurement decides the runtime's replicas, the
/// credentials are completed, the children built, applied in order and the orphans
/// deleted; a failed generator Job is recovered; the apply is remembered. Returns what
/// the status is computed from, when to come back, and the first child's apply error.
async fn apply_plan(
    dp: &DataPipeline,
    ctx: &Context,
    visit: &Visit,
    existing: dereference::Existing,
    mut plan: ValidatedPipeline,
    measured: Option<Measured>,
    notices: &mut Vec<Notice>,
) -> Result<(Observation, Action, Option<Error>)> {
    let Visit {
        namespace,
        name,
        key,
        identity,
        now,
    } = visit;
    let (measurement, evaluation) = match measured {
        Some(measured) => measured,
        None => ctx.measure_and_evaluate(key, &plan, dp, now).await,
    };
    // The decision is the builder's input for the runtime Deployment.
    plan.runtime.replicas = evaluation.replicas;
    notices.extend(evaluation.notice.clone());
    let credentials = credentials::complete(
        existing.credentials,
        &plan,
        now.0.as_second(),
        ctx.credentials.as_ref(),
    )?;
    let mut children = build::desired_children(&plan, &credentials)?;
    apply::patch::stamp_read_uids(&mut children, &existing.read_uids);
    let applied = apply::apply_in_order(&ctx.client, namespace, &children).await?;
    let deleted =
        apply::orphans::delete_orphans(&ctx.client, namespace, name, &plan.uid, &children).await?;
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
            namespace,
            &mut children.ingest,
            &applied.applied,
            dp.status.as_ref().and_then(|s| s.ingest_job.as_ref()),
            now,
        )
        .await?,
    );
    let stale = !applied.stale.is_empty();
    let apply_error = applied.into_error();
    let pods = status::pods::read_problems(&ctx.client, namespace, name, &children).await;
    let facts = PipelineFacts::of(&plan);
    // A visit built on a stale read is not remembered: the next one applies again.
    ctx.remember_apply(
        key,
        (!stale).then(|| LastApply {
            identity: identity.clone(),
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
    let action = match stale {
        true => Action::requeue(STALE_READ_RETRY),
        false => ctx.requeue_after(&measurement),
    };
    Ok((observation, action, apply_error))
}

/// How soon a visit whose generated Secrets changed under it comes back (the watch on
/// Secrets usually brings it sooner).
const STALE_READ_RETRY: Duration = Duration::from_secs(1);

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
    let (namespace, name) = (dp.namespace().unwrap_or_default(), dp.name_any());
    if old != Some(&new_status)
        && status::write::write_status(&ctx.client, dp, &new_status).await?
            == status::write::StatusWrite::PipelineGone
    {
        // Its children go with it (owner references); the deletion wakes nobody.
        ctx.remember_apply(&key(dp), None);
        ctx.metrics.forget_pipeline(&namespace, &name);
        return Ok((Action::await_change(), outcome));
    }
    ctx.metrics
        .observe_pipeline(&namespace, &name, &PipelineSample::of(&new_status));
    notices.extend(events::transition_notices(old, &new_status));
    events::publish(&ctx.client, &ctx.reporter, &dp.object_ref(&()), notices).await;
    Ok((action, outcome))
}

/// A visit stopped by a problem the user must fix.
fn blocked(problem: Problem) -> (Observation, Action, Outcome) {
    let outcome = Outcome::Blocked(problem.category());
    // Nothing changes until the user edits the pipeline or creates the Secret; both wake
    // the controller.
    (
        Observation::Blocked(problem),
        Action::await_change(),
        outcome,
    )
}
