//! Makes the cluster match the desired children: server-side apply of each child in the
//! given order under the operator's field manager (forced: the operator owns these
//! objects). A child that cannot be applied does not stop the others: it is reported with
//! its component (`ApplyFailure`) and the reconcile fails after the status says so. A
//! generated Secret is applied only onto the object it was read from (`stamp_read_uids`);
//! one deleted or replaced since is left alone (`ApplyOutcome::stale`). I/O; the decisions
//! are the pure `children_state`, `failure_of`, `stamp_read_uids` and `changed_since_read`.

use std::{collections::BTreeMap, fmt::Debug};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::Job,
    },
    NamespaceResourceScope,
};
use kube::{
    api::{Patch, PatchParams},
    Api, Client, Resource,
};
use serde::{de::DeserializeOwned, Serialize};

use super::readiness::{
    ApplyFailure, ChildrenState, IngestState, JobState, Recovery, WorkloadState,
};
use crate::{
    controller::{
        build::{
            names::{Role, MANAGER},
            Child,
        },
        problem::Component,
    },
    error::{Error, Result},
};

/// An applied child as the API server returned it (with its current status).
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    StatefulSet(Box<StatefulSet>, Role),
    Job(Box<Job>, Role),
    Deployment(Box<Deployment>, Role),
    /// The generator Job, not created: it waits for these components.
    IngestWaiting {
        job: String,
        waiting_for: Vec<&'static str>,
    },
    Other,
}

async fn apply_one<K>(client: &Client, namespace: &str, object: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: <K as k8s_openapi::Resource>::KIND,
        namespace: namespace.to_string(),
        name,
        source: Box::new(source),
    })
}

/// What applying the children gave: each applied child as the API server returned it
/// (a workload that could not be applied as built, without status), and the failures.
#[derive(Debug, Default)]
pub struct ApplyOutcome {
    pub applied: Vec<Applied>,
    /// The children that could not be applied, each with its error.
    pub failed: Vec<(ApplyFailure, Error)>,
    /// Generated Secrets deleted or replaced since this visit read them, left as they are:
    /// the visit was built on a stale read and the next one must apply again.
    pub stale: Vec<String>,
}

/// Stamps each Secret built from a Secret this visit read with that Secret's UID, so the
/// API server applies it onto that very object or refuses (409, "uid mismatch"). Without
/// it, a Secret deleted while a visit is in flight (a user deleting `<name>-es-tls` to have
/// it renewed) would be created again from the stale read, old key and all, and the
/// renewal silently lost.
pub fn stamp_read_uids(children: &mut [Child], read_uids: &BTreeMap<String, String>) {
    for child in children {
        if let Child::Secret(secret) = child {
            let read = secret.metadata.name.as_ref().and_then(|n| read_uids.get(n));
            if let Some(uid) = read {
                secret.metadata.uid = Some(uid.clone());
            }
        }
    }
}

/// Whether a failed apply is the API server refusing a stamped Secret because the object
/// it was read from is gone (409, "uid mismatch") or replaced by another of the same name
/// (422 on `metadata.uid`, "field is immutable").
pub fn changed_since_read(child: &Child, error: &Error) -> bool {
    let stamped = matches!(child, Child::Secret(s) if s.metadata.uid.is_some());
    let Error::Apply { source, .. } = error else {
        return false;
    };
    let kube::Error::Api(status) = source.as_ref() else {
        return false;
    };
    let on_uid = status
        .details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.field == "metadata.uid"));
    stamped && (status.code == 409 || (status.code == 422 && on_uid))
}

impl ApplyOutcome {
    /// What the status reports of the failures.
    pub fn failures(&self) -> Vec<ApplyFailure> {
        self.failed.iter().map(|(f, _)| f.clone()).collect()
    }

    /// The error the reconcile ends with: the first failure's.
    pub fn into_error(self) -> Option<Error> {
        self.failed.into_iter().next().map(|(_, e)| e)
    }
}

/// The status's account of a child that could not be applied: the API server's own
/// message where it gave one (a 422 names the refused field).
pub fn failure_of(child: &Child, namespace: &str, error: &Error) -> ApplyFailure {
    let message = match error {
        Error::Apply { source, .. } => match source.as_ref() {
            kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
            other => other.to_string(),
        },
        other => other.to_string(),
    };
    ApplyFailure {
        component: child.role().map_or(Component::Runtime, Component::of_role),
        kind: child.kind(),
        namespace: namespace.to_string(),
        name: child.name().to_string(),
        message,
    }
}

/// The applied form of a child, or for a workload that failed, the child as built (no
/// status: nothing of it is known to be ready).
async fn apply_child(client: &Client, namespace: &str, child: &Child) -> Result<Applied> {
    Ok(match child {
        Child::Secret(o) => apply_one(client, namespace, o)
            .await
            .map(|_| Applied::Other)?,
        Child::ConfigMap(o) => apply_one(client, namespace, o)
            .await
            .map(|_| Applied::Other)?,
        Child::Service(o) => apply_one(client, namespace, o)
            .await
            .map(|_| Applied::Other)?,
        Child::NetworkPolicy(o) => apply_one(client, namespace, o)
            .await
            .map(|_| Applied::Other)?,
        Child::PodDisruptionBudget(o) => apply_one(client, namespace, o)
            .await
            .map(|_| Applied::Other)?,
        Child::StatefulSet(o, role) => {
            Applied::StatefulSet(Box::new(apply_one(client, namespace, o).await?), *role)
        }
        Child::Job(o, role) => {
            Applied::Job(Box::new(apply_one(client, namespace, o).await?), *role)
        }
        Child::Deployment(o, role) => {
            Applied::Deployment(Box::new(apply_one(client, namespace, o).await?), *role)
        }
    })
}

/// A child as built, standing in for one that could not be applied.
fn unapplied(child: &Child) -> Applied {
    match child {
        Child::StatefulSet(o, role) => Applied::StatefulSet(Box::new(o.clone()), *role),
        Child::Job(o, role) => Applied::Job(Box::new(o.clone()), *role),
        Child::Deployment(o, role) => Applied::Deployment(Box::new(o.clone()), *role),
        _ => Applied::Other,
    }
}

/// Applies every child in order. A failure does not stop the others (one refused
/// StatefulSet must not freeze the runtime's updates): it is collected and the next child
/// is applied.
pub async fn apply_children(client: &Client, namespace: &str, children: &[Child]) -> ApplyOutcome {
    let mut outcome = ApplyOutcome::default();
    for child in children {
        match apply_child(client, namespace, child).await {
            Ok(applied) => outcome.applied.push(applied),
            Err(error) if changed_since_read(child, &error) => {
                tracing::info!(%namespace, name = child.name(), "the Secret was deleted or replaced since it was read: not written back; the next visit applies again");
                outcome.applied.push(Applied::Other);
                outcome.stale.push(child.name().to_string());
            }
            Err(error) => {
                tracing::warn!(kind = child.kind(), %namespace, name = child.name(), %error, "cannot apply a child; applying the others");
                outcome.applied.push(unapplied(child));
                outcome
                    .failed
                    .push((failure_of(child, namespace, &error), error));
            }
        }
    }
    outcome
}

/// The readiness of the applied workloads, by role, and the children that failed.
pub fn children_state(
    applied: &[Applied],
    apply_failures: Vec<ApplyFailure>,
) -> Result<ChildrenState> {
    let mut kafka = None;
    let mut kafka_topics = None;
    let mut object_store = None;
    let mut bucket = None;
    let mut search = None;
    let mut runtime = None;
    let mut ingest = None;
    for child in applied {
        match child {
            Applied::StatefulSet(sts, role) => {
                let state = Some(WorkloadState::from_statefulset(sts));
                match role {
                    Role::Kafka => kafka = state,
                    Role::ObjectStore => object_store = state,
                    Role::Search => search = state,
                    _ => {}
                }
            }
            Applied::Job(job, role) => {
                let state = JobState::from_job(job);
                match role {
                    Role::KafkaTopics => kafka_topics = Some(state),
                    Role::Bucket => bucket = Some(state),
                    Role::Ingest => {
                        ingest = Some(IngestState::Job {
                            job: state,
                            recovery: Recovery::NotNeeded,
                        })
                    }
                    _ => {}
                }
            }
            Applied::Deployment(deployment, role) => {
                let state = WorkloadState::from_deployment(deployment);
                match role {
                    Role::Runtime => runtime = Some(state),
                    Role::Ingest => ingest = Some(IngestState::Deployment(state)),
                    _ => {}
                }
            }
            Applied::IngestWaiting { job, waiting_for } => {
                ingest = Some(IngestState::Waiting {
                    job: job.clone(),
                    waiting_for: waiting_for.clone(),
                });
            }
            Applied::Other => {}
        }
    }
    let missing = |what: &str| Error::Build {
        what: what.to_string(),
        reason: "not among the applied children".to_string(),
    };
    Ok(ChildrenState {
        kafka,
        kafka_topics,
        object_store,
        bucket,
        search,
        runtime: runtime.ok_or_else(|| missing("the runtime Deployment"))?,
        ingest: ingest.ok_or_else(|| missing("the ingest workload"))?,
        apply_failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka_statefulset() -> Child {
        let plan = crate::controller::fixtures::managed_plan();
        let crate::controller::validate::KafkaMode::Managed(kafka) = &plan.kafka.mode else {
            unreachable!("managed fixture")
        };
        Child::StatefulSet(
            crate::controller::build::kafka::statefulset(&plan, kafka, "tls-sum"),
            Role::Kafka,
        )
    }

    fn apply_error(source: kube::Error) -> Error {
        Error::Apply {
            kind: "StatefulSet",
            namespace: "shops".into(),
            name: "shop-kafka".into(),
            source: Box::new(source),
        }
    }

    fn secret(name: &str) -> Child {
        Child::Secret(crate::controller::fixtures::secret_with(
            name,
            &[("k", "v")],
        ))
    }

    fn conflict() -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("uid mismatch", "Conflict")
                .with_code(409)
                .boxed(),
        )
    }

    #[test]
    fn only_the_secrets_that_were_read_carry_their_uid() {
        let mut children = vec![
            secret("shop-es-tls"),
            secret("shop-ca"),
            kafka_statefulset(),
        ];
        let read = BTreeMap::from([
            ("shop-ca".to_string(), "uid-ca".to_string()),
            ("shop-kafka".to_string(), "uid-not-a-secret".to_string()),
        ]);
        stamp_read_uids(&mut children, &read);
        let uids: Vec<(&str, Option<&str>)> = children
            .iter()
            .map(|c| {
                let uid = match c {
                    Child::Secret(s) => s.metadata.uid.as_deref(),
                    Child::StatefulSet(s, _) => s.metadata.uid.as_deref(),
                    _ => unreachable!(),
                };
                (c.name(), uid)
            })
            .collect();
        assert_eq!(
            uids,
            [
                ("shop-es-tls", None),
                ("shop-ca", Some("uid-ca")),
                ("shop-kafka", None)
            ]
        );
    }

    #[test]
    fn a_conflict_on_a_stamped_secret_is_a_stale_read_and_nothing_else_is() {
        let mut stamped = secret("shop-es-tls");
        stamp_read_uids(
            std::slice::from_mut(&mut stamped),
            &BTreeMap::from([("shop-es-tls".to_string(), "u1".to_string())]),
        );
        let unstamped = secret("shop-es-tls");
        // The API server's answer to a UID that is not the stored object's.
        let invalid = |field: &str| {
            let status: kube::core::Status = serde_json::from_value(serde_json::json!({
                "status": "Failure",
                "message": "Secret \"shop-es-tls\" is invalid: metadata.uid: field is immutable",
                "reason": "Invalid",
                "details": {"name": "shop-es-tls", "kind": "Secret", "causes": [
                    {"reason": "FieldValueInvalid", "message": "field is immutable", "field": field}
                ]},
                "code": 422,
            }))
            .expect("a Status");
            kube::Error::Api(status.boxed())
        };
        // Gone: 409; replaced by another object of the same name: 422 on the UID.
        assert!(changed_since_read(&stamped, &apply_error(conflict())));
        assert!(changed_since_read(
            &stamped,
            &apply_error(invalid("metadata.uid"))
        ));
        assert!(!changed_since_read(&stamped, &apply_error(invalid("data"))));
        assert!(!changed_since_read(&unstamped, &apply_error(conflict())));
        assert!(!changed_since_read(
            &kafka_statefulset(),
            &apply_error(conflict())
        ));
    }

    #[test]
    fn a_failure_is_told_in_the_api_servers_words_for_its_component() {
        let refused = kube::Error::Api(
            kube::core::Status::failure("spec: Forbidden: no", "Invalid")
                .with_code(422)
                .boxed(),
        );
        let child = kafka_statefulset();
        assert_eq!(
            failure_of(&child, "shops", &apply_error(refused)),
            ApplyFailure {
                component: Component::Kafka,
                kind: "StatefulSet",
                namespace: "shops".into(),
                name: "shop-kafka".into(),
                message: "spec: Forbidden: no".into(),
            }
        );
        // Not an API answer: the error's own text.
        let other = failure_of(
            &child,
            "shops",
            &apply_error(kube::Error::LinesCodecMaxLineLengthExceeded),
        );
        assert_eq!(
            other.message,
            kube::Error::LinesCodecMaxLineLengthExceeded.to_string()
        );
        // A refused child stands in as built, with no status: nothing of it is ready.
        let Applied::StatefulSet(sts, Role::Kafka) = unapplied(&child) else {
            panic!("a StatefulSet stands in for itself")
        };
        assert_eq!(sts.status, None);
    }
}
