//! Deletes the children a changed spec no longer wants: each kind is listed by the
//! pipeline's label selector, and an object is deleted only when this pipeline owns it
//! (controller=true) and the desired children do not name it. I/O; the decision is the
//! pure `orphans`.

use std::{collections::BTreeSet, fmt::Debug};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::Job,
        core::v1::{ConfigMap, Secret, Service},
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    NamespaceResourceScope,
};
use kube::{
    api::{DeleteParams, ListParams},
    Api, Client, Resource,
};
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    controller::build::{names::children_selector, Child},
    error::{Error, Result},
};

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
    deleted.extend(
        delete_orphans_of::<NetworkPolicy>(client, namespace, s, owner_uid, children).await?,
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
