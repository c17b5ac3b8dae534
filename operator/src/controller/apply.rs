//! Makes the cluster match the desired children: server-side apply of each child in the
//! given order under the operator's field manager (forced: the operator owns these
//! objects), then deletion of children a changed spec no longer wants (found by label,
//! deleted only when this pipeline owns them). I/O; the decisions are the pure
//! `children_state` and `orphans`.

use std::{collections::BTreeSet, fmt::Debug};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::Job,
        core::v1::{ConfigMap, Secret, Service},
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    NamespaceResourceScope,
};
use kube::{
    api::{DeleteParams, ListParams, Patch, PatchParams},
    Api, Client, Resource,
};
use serde::{de::DeserializeOwned, Serialize};

use super::{
    build::{
        names::{children_selector, Role, MANAGER},
        Child,
    },
    observed::{ChildrenState, IngestState, JobState, WorkloadState},
};
use crate::error::{Error, Result};

/// An applied child as the API server returned it (with its current status).
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    StatefulSet(Box<StatefulSet>, Role),
    Job(Box<Job>, Role),
    Deployment(Box<Deployment>, Role),
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

/// Applies every child in order; stops at the first failure (the reconcile is retried).
pub async fn apply_children(
    client: &Client,
    namespace: &str,
    children: &[Child],
) -> Result<Vec<Applied>> {
    let mut applied = Vec::with_capacity(children.len());
    for child in children {
        let result = match child {
            Child::Secret(o) => apply_one(client, namespace, o)
                .await
                .map(|_| Applied::Other)?,
            Child::ConfigMap(o) => apply_one(client, namespace, o)
                .await
                .map(|_| Applied::Other)?,
            Child::Service(o) => apply_one(client, namespace, o)
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
        };
        applied.push(result);
    }
    Ok(applied)
}

/// The readiness of the applied workloads, by role.
pub fn children_state(applied: &[Applied]) -> Result<ChildrenState> {
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
                    Role::Ingest => ingest = Some(IngestState::Job(state)),
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
    })
}

/// Names of listed objects that this pipeline owns but no longer wants.
pub fn orphans(listed: &[ObjectMeta], wanted: &BTreeSet<String>, owner_uid: &str) -> Vec<String> {
    listed
        .iter()
        .filter(|meta| {
            meta.owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == owner_uid && o.controller == Some(true))
        })
        .filter_map(|meta| meta.name.clone())
        .filter(|name| !wanted.contains(name))
        .collect()
}

async fn delete_orphans_of<K>(
    client: &Client,
    namespace: &str,
    selector: &str,
    owner_uid: &str,
    children: &[Child],
) -> Result<Vec<String>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let listed = api
        .list_metadata(&ListParams::default().labels(selector))
        .await
        .map_err(|source| Error::ListOrphans {
            kind: <K as k8s_openapi::Resource>::KIND,
            namespace: namespace.to_string(),
            source: Box::new(source),
        })?;
    let metas: Vec<ObjectMeta> = listed.items.into_iter().map(|o| o.metadata).collect();
    let wanted: BTreeSet<String> = children
        .iter()
        .filter(|c| c.kind() == <K as k8s_openapi::Resource>::KIND)
        .map(|c| c.name().to_string())
        .collect();
    let mut deleted = Vec::new();
    for name in orphans(&metas, &wanted, owner_uid) {
        api.delete(&name, &DeleteParams::background())
            .await
            .map_err(|source| Error::DeleteOrphan {
                kind: <K as k8s_openapi::Resource>::KIND,
                namespace: namespace.to_string(),
                name: name.clone(),
                source: Box::new(source),
            })?;
        tracing::info!(kind = <K as k8s_openapi::Resource>::KIND, %namespace, %name, "deleted a child the spec no longer wants");
        deleted.push(format!("{}/{name}", <K as k8s_openapi::Resource>::KIND));
    }
    Ok(deleted)
}

/// Deletes the pipeline's children that are not in `children`, workloads first. Returns
/// `Kind/name` of each deleted object.
pub async fn delete_orphans(
    client: &Client,
    namespace: &str,
    pipeline: &str,
    owner_uid: &str,
    children: &[Child],
) -> Result<Vec<String>> {
    let selector = children_selector(pipeline);
    let s = selector.as_str();
    let mut deleted = Vec::new();
    deleted
        .extend(delete_orphans_of::<Deployment>(client, namespace, s, owner_uid, children).await?);
    deleted.extend(delete_orphans_of::<Job>(client, namespace, s, owner_uid, children).await?);
    deleted
        .extend(delete_orphans_of::<StatefulSet>(client, namespace, s, owner_uid, children).await?);
    deleted.extend(
        delete_orphans_of::<PodDisruptionBudget>(client, namespace, s, owner_uid, children).await?,
    );
    deleted.extend(delete_orphans_of::<Service>(client, namespace, s, owner_uid, children).await?);
    deleted
        .extend(delete_orphans_of::<ConfigMap>(client, namespace, s, owner_uid, children).await?);
    deleted.extend(delete_orphans_of::<Secret>(client, namespace, s, owner_uid, children).await?);
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn meta(name: &str, owner: Option<(&str, bool)>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            owner_references: owner.map(|(uid, controller)| {
                vec![OwnerReference {
                    api_version: "datapipeline.io/v1alpha1".into(),
                    kind: "DataPipeline".into(),
                    name: "shop".into(),
                    uid: uid.into(),
                    controller: Some(controller),
                    block_owner_deletion: Some(true),
                }]
            }),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_owned_unwanted_objects_are_orphans() {
        let listed = vec![
            meta("shop-es", Some(("uid-1", true))),
            meta("shop-runtime", Some(("uid-1", true))),
            meta("shop-kafka-topics-old", Some(("uid-1", true))),
            meta("someone-elses", Some(("uid-2", true))),
            meta("not-controlled", Some(("uid-1", false))),
            meta("unowned", None),
        ];
        let wanted = BTreeSet::from(["shop-runtime".to_string()]);
        assert_eq!(
            orphans(&listed, &wanted, "uid-1"),
            vec!["shop-es".to_string(), "shop-kafka-topics-old".to_string()]
        );
    }
}
