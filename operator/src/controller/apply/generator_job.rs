//! The generator Job (the ingest role of a generator source): created only once Kafka and
//! the object store are ready, and recreated after it failed, a bounded number of times.
//!
//! A generator Job that starts before its services are up crash-loops into its
//! `backoffLimit`, and since it is named after its spec it would never be created again:
//! the pipeline would get no events. So the Job is not created while a component it writes
//! to is not ready (a Job that already exists is still applied: pausing suspends it), and a
//! failed Job is deleted (foreground: its pods go first, so two runs never overlap) for the
//! next apply to create it again, at most [`MAX_RECREATIONS`] times per generator spec,
//! each recorded in `status.ingestJob`, the RuntimeReady condition and an Event. The Job's
//! own `backoffLimit` (pod restarts with exponential backoff) spaces the attempts.
//!
//! A re-run publishes no event twice: `pipeline-runtime ingest` keeps a progress record
//! per source in the object store (`_state/ingest/<source id>.json`; a generator's id is
//! derived from its event count and seed, so the recreated Job finds the same record). It
//! is written before the first row is sent and at every flush barrier; a complete source
//! is skipped, and a partly published one resumes: per partition it skips the rows up to
//! the recorded line, matches the messages found after the last barrier against the next
//! rows, and sends only the rest (see `pipeline-runtime/src/ingest/mod.rs`).
//!
//! `waiting_for` and `decide` are pure; `apply`, `recover` and `recreate` do the I/O.

use k8s_openapi::{api::batch::v1::Job, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    api::{DeleteParams, Preconditions, PropagationPolicy},
    Api, Client,
};

use super::{
    patch::{apply_children, Applied, ApplyOutcome},
    readiness::{IngestState, JobOutcome, JobState, Recovery, WorkloadState},
};
use crate::{
    controller::{
        build::{names::Role, Child},
        events::Notice,
        problem::Component,
    },
    crd::{conditions::events, IngestJobStatus},
    error::{Error, Result},
};

/// Recreations of one failed generator Job before the operator leaves it to the user.
pub const MAX_RECREATIONS: i32 = 3;

/// The components the generator Job writes to that are not ready in `applied` (a managed
/// Kafka: its StatefulSet and the topics Job; a managed object store: its StatefulSet and
/// the bucket Job; external ones count as ready), by display name. Empty: create it.
pub fn waiting_for(applied: &[Applied], failed: &[Component]) -> Vec<&'static str> {
    let mut kafka_ready = true;
    let mut store_ready = true;
    for child in applied {
        let (component, ready) = match child {
            Applied::StatefulSet(sts, role @ (Role::Kafka | Role::ObjectStore)) => (
                Component::of_role(*role),
                WorkloadState::from_statefulset(sts).is_ready(),
            ),
            Applied::Job(job, role @ (Role::KafkaTopics | Role::Bucket)) => (
                Component::of_role(*role),
                JobState::from_job(job).outcome == JobOutcome::Succeeded,
            ),
            _ => continue,
        };
        match component {
            Component::Kafka => kafka_ready &= ready,
            _ => store_ready &= ready,
        }
    }
    kafka_ready &= !failed.contains(&Component::Kafka);
    store_ready &= !failed.contains(&Component::ObjectStore);
    [(kafka_ready, "Kafka"), (store_ready, "the object store")]
        .into_iter()
        .filter(|(ready, _)| !ready)
        .map(|(_, name)| name)
        .collect()
}

/// Applies the generator Job when nothing it needs is missing, or when it exists already;
/// otherwise records that it waits. `exists` is asked only in the second case.
pub async fn apply(
    client: &Client,
    namespace: &str,
    job: &Child,
    outcome: &mut ApplyOutcome,
) -> Result<()> {
    let failed: Vec<Component> = outcome.failed.iter().map(|(f, _)| f.component).collect();
    let waiting = waiting_for(&outcome.applied, &failed);
    if !waiting.is_empty() && !exists(client, namespace, job.name()).await? {
        outcome.applied.push(Applied::IngestWaiting {
            job: job.name().to_string(),
            waiting_for: waiting,
        });
        return Ok(());
    }
    let applied = apply_children(client, namespace, std::slice::from_ref(job)).await;
    outcome.applied.extend(applied.applied);
    outcome.failed.extend(applied.failed);
    Ok(())
}

async fn exists(client: &Client, namespace: &str, name: &str) -> Result<bool> {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    api.get_metadata_opt(name)
        .await
        .map(|job| job.is_some())
        .map_err(|source| Error::ReadJob {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source: Box::new(source),
        })
}

/// What to do about the generator Job, given the record of earlier recreations (of this
/// Job only: a record about another Job, from an older generator spec, does not count).
pub fn decide(job: &JobState, record: Option<&IngestJobStatus>, now: &Time) -> Recovery {
    if job.outcome != JobOutcome::Failed {
        return Recovery::NotNeeded;
    }
    if job.deleting {
        return Recovery::Deleting;
    }
    let done = record
        .filter(|r| r.name == job.name)
        .map_or(0, |r| r.recreations);
    if done >= MAX_RECREATIONS {
        Recovery::GivenUp { recreations: done }
    } else {
        Recovery::Recreated {
            attempt: done + 1,
            at: now.clone(),
        }
    }
}

/// The Event announcing a recreation.
pub fn recreation_notice(job: &JobState, attempt: i32) -> Notice {
    Notice {
        warning: true,
        reason: events::INGEST_JOB_RECREATED.into(),
        note: format!(
            "generator Job {} failed ({}); deleted it to run it again (recreation {attempt} of {MAX_RECREATIONS}): the new run resumes from its progress record and publishes no event twice",
            job.name,
            job.failure.as_deref().unwrap_or("no reason given")
        ),
    }
}

/// Decides about the applied generator Job (`ingest` gets the decision) and carries out
/// a recreation. Returns the Event announcing it.
pub async fn recover(
    client: &Client,
    namespace: &str,
    ingest: &mut IngestState,
    applied: &[Applied],
    record: Option<&IngestJobStatus>,
    now: &Time,
) -> Result<Option<Notice>> {
    let IngestState::Job { job, recovery } = ingest else {
        return Ok(None);
    };
    *recovery = decide(job, record, now);
    let Recovery::Recreated { attempt, .. } = recovery else {
        return Ok(None);
    };
    let uid = applied.iter().find_map(|child| match child {
        Applied::Job(applied_job, Role::Ingest) => applied_job.metadata.uid.clone(),
        _ => None,
    });
    recreate(client, namespace, &job.name, uid.as_deref()).await?;
    Ok(Some(recreation_notice(job, *attempt)))
}

/// Deletes the failed Job (only the one with `uid`, when known, not a newer one of the
/// same name), its pods first. A Job already gone is fine: the next apply creates it.
pub async fn recreate(
    client: &Client,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
) -> Result<()> {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {
            tracing::info!(%namespace, %name, "deleted the failed generator Job to run it again");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() || status.is_conflict() => Ok(()),
        Err(source) => Err(Error::RecreateJob {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source: Box::new(source),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{
        build::desired_children,
        fixtures::{at, fixed_credentials, job, managed_plan},
    };
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    /// The managed fixture's children as applied, with the given readiness of Kafka's
    /// StatefulSet, the topics Job, MinIO's StatefulSet and the bucket Job.
    fn applied(kafka: bool, topics: bool, minio: bool, bucket: bool) -> Vec<Applied> {
        desired_children(&managed_plan(), &fixed_credentials())
            .expect("built")
            .into_iter()
            .filter_map(|child| match child {
                Child::StatefulSet(mut sts, role) => {
                    let ready = match role {
                        Role::Kafka => kafka,
                        Role::ObjectStore => minio,
                        _ => true,
                    };
                    sts.status = Some(StatefulSetStatus {
                        replicas: 1,
                        ready_replicas: Some(i32::from(ready)),
                        ..StatefulSetStatus::default()
                    });
                    Some(Applied::StatefulSet(Box::new(sts), role))
                }
                Child::Job(mut j, role) if role != Role::Ingest => {
                    let done = match role {
                        Role::KafkaTopics => topics,
                        _ => bucket,
                    };
                    j.status = Some(JobStatus {
                        succeeded: Some(i32::from(done)),
                        ..JobStatus::default()
                    });
                    Some(Applied::Job(Box::new(j), role))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_job_waits_for_kafka_and_the_store_and_their_setup_jobs() {
        assert_eq!(
            waiting_for(&applied(true, true, true, true), &[]),
            Vec::<&str>::new()
        );
        assert_eq!(
            waiting_for(&applied(false, false, false, false), &[]),
            vec!["Kafka", "the object store"]
        );
        assert_eq!(
            waiting_for(&applied(true, false, true, true), &[]),
            vec!["Kafka"]
        );
        assert_eq!(
            waiting_for(&applied(true, true, true, false), &[]),
            vec!["the object store"]
        );
        // A refused child of the store's makes it unready, whatever its workload says.
        assert_eq!(
            waiting_for(&applied(true, true, true, true), &[Component::ObjectStore]),
            vec!["the object store"]
        );
        // External services (nothing applied for them) are ready.
        assert_eq!(waiting_for(&[], &[]), Vec::<&str>::new());
    }

    fn failed(name: &str) -> JobState {
        JobState {
            failure: Some(
                "BackoffLimitExceeded: Job has reached the specified backoff limit".into(),
            ),
            ..job(name, JobOutcome::Failed)
        }
    }

    fn record(name: &str, recreations: i32) -> IngestJobStatus {
        IngestJobStatus {
            name: name.into(),
            recreations,
            last_failure: "DeadlineExceeded: Job was active longer than specified deadline".into(),
            last_recreation_time: Some(at(10)),
        }
    }

    #[test]
    fn a_failed_job_is_recreated_at_most_three_times() {
        let name = "shop-generate-abcd1234";
        let now = at(100);
        assert_eq!(
            decide(&job(name, JobOutcome::Running), None, &now),
            Recovery::NotNeeded
        );
        assert_eq!(
            decide(
                &job(name, JobOutcome::Succeeded),
                Some(&record(name, 3)),
                &now
            ),
            Recovery::NotNeeded
        );
        assert_eq!(
            decide(&failed(name), None, &now),
            Recovery::Recreated {
                attempt: 1,
                at: now.clone()
            }
        );
        assert_eq!(
            decide(&failed(name), Some(&record(name, 2)), &now),
            Recovery::Recreated {
                attempt: 3,
                at: now.clone()
            }
        );
        assert_eq!(
            decide(&failed(name), Some(&record(name, 3)), &now),
            Recovery::GivenUp { recreations: 3 }
        );
        // The record of an older generator spec's Job does not count.
        assert_eq!(
            decide(
                &failed(name),
                Some(&record("shop-generate-00000000", 3)),
                &now
            ),
            Recovery::Recreated {
                attempt: 1,
                at: now.clone()
            }
        );
        // Already being deleted: a recreation is under way, nothing more to do.
        let deleting = JobState {
            deleting: true,
            ..failed(name)
        };
        assert_eq!(
            decide(&deleting, Some(&record(name, 1)), &now),
            Recovery::Deleting
        );
    }

    #[test]
    fn the_failure_reason_comes_from_the_jobs_failed_condition() {
        let mut k8s_job = Job::default();
        k8s_job.metadata.name = Some("shop-generate-abcd1234".into());
        k8s_job.status = Some(JobStatus {
            failed: Some(1),
            conditions: Some(vec![
                JobCondition {
                    type_: "FailureTarget".into(),
                    status: "True".into(),
                    reason: Some("DeadlineExceeded".into()),
                    message: Some("Job was active longer than specified deadline".into()),
                    ..JobCondition::default()
                },
                JobCondition {
                    type_: "Failed".into(),
                    status: "True".into(),
                    reason: Some("DeadlineExceeded".into()),
                    message: Some("Job was active longer than specified deadline".into()),
                    ..JobCondition::default()
                },
            ]),
            ..JobStatus::default()
        });
        let state = JobState::from_job(&k8s_job);
        assert_eq!(
            state,
            JobState {
                failure: Some(
                    "DeadlineExceeded: Job was active longer than specified deadline".into()
                ),
                ..job("shop-generate-abcd1234", JobOutcome::Failed)
            }
        );
        assert_eq!(
            recreation_notice(&state, 2),
            Notice {
                warning: true,
                reason: "IngestJobRecreated".into(),
                note: "generator Job shop-generate-abcd1234 failed (DeadlineExceeded: Job was active longer than specified deadline); deleted it to run it again (recreation 2 of 3): the new run resumes from its progress record and publishes no event twice".into(),
            }
        );
    }
}
