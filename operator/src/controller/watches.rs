//! Runs the controller (kube-rs's `Controller`): watches the DataPipelines, and the
//! children, pods and referenced Secrets that wake them, and calls `reconcile` and
//! `error_policy` until SIGTERM/SIGINT. A changed child or Secret marks its pipeline so
//! that its next visit applies; a deleted pipeline's gauges are removed.
//!
//! Scope: all namespaces, or a list of namespaces (`--watch-namespaces`), each watched by
//! a `Controller` of its own over `Api::namespaced` (so that namespaced Roles suffice),
//! all sharing one `Context` and merged into one stream (`scopes` decides, pure).
//! Secrets are watched only when they opt in (label `datapipeline.io/use=true`): other
//! Secrets are neither cached nor wake anything, and labelling one later wakes the
//! pipelines naming it, since it then enters the watch. I/O: the wiring only.

use std::{sync::Arc, time::Duration};

use futures::{stream, StreamExt};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::Job,
        core::v1::{Pod, Secret},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    api::ListParams,
    runtime::{
        controller::Controller,
        events::Reporter,
        reflector::{ObjectRef, Store},
        watcher,
    },
    Api, Client, Resource, ResourceExt,
};
use tracing::{info, warn};

use super::{
    build::names::{namespaced_name, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGER},
    context::{key, system_clock, Context},
    credentials::RandomCredentials,
    dereference,
    measure::offset_reader::KafkaOffsets,
    reconcile::{error_policy, reconcile},
    validate::OperatorSettings,
};
use crate::{crd::DataPipeline, metrics::Metrics};

/// Settings of the running controller.
pub struct RunConfig {
    pub settings: OperatorSettings,
    /// Watch only these namespaces (all namespaces when empty).
    pub namespaces: Vec<String>,
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

/// The namespaces to run a controller for: `None` (all namespaces, one controller) when
/// the list names none, else each named namespace once, in order (blank entries, as a
/// trailing comma gives, are ignored).
pub fn scopes(namespaces: &[String]) -> Vec<Option<String>> {
    let mut named: Vec<Option<String>> = Vec::new();
    for namespace in namespaces
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
    {
        let namespace = Some(namespace.to_string());
        if !named.contains(&namespace) {
            named.push(namespace);
        }
    }
    if named.is_empty() {
        vec![None]
    } else {
        named
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
            ctx.dependent_changed(namespaced_name(&namespace, &owner.name));
            ObjectRef::new(&owner.name).within(&namespace)
        })
        .collect()
}

/// The pipeline a pod belongs to, by its instance label.
fn pipeline_of_pod(pod: &ObjectMeta) -> Option<ObjectRef<DataPipeline>> {
    let pipeline = pod.labels.as_ref()?.get(LABEL_INSTANCE)?;
    Some(ObjectRef::new(pipeline).within(pod.namespace.as_deref()?))
}

/// Runs the controllers (one per scope) until SIGTERM/SIGINT.
pub async fn run(
    client: Client,
    config: RunConfig,
    metrics: Arc<Metrics>,
) -> Result<(), kube::Error> {
    let scopes = scopes(&config.namespaces);
    for scope in &scopes {
        let pipelines: Api<DataPipeline> = api(&client, scope.as_deref());
        // Fail fast with a clear log line when the CRD is missing (or not readable here).
        if let Err(error) = pipelines.list(&ListParams::default().limit(1)).await {
            let namespace = scope.as_deref().unwrap_or("(all namespaces)");
            warn!(%error, namespace, "cannot list DataPipelines: is the CRD installed (`datapipeline-operator crd | kubectl apply -f -`) and may the operator list them there?");
            return Err(error);
        }
    }
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            config.reporter,
            metrics,
            config.settings,
            Arc::new(RandomCredentials),
            Arc::new(KafkaOffsets {
                client: client.clone(),
            }),
            Arc::new(system_clock),
            config.resync,
        )
        .with_observe_interval(config.observe_interval),
    );
    let mut stores = Vec::new();
    let mut runs = Vec::new();
    for scope in &scopes {
        let controller = controller(&client, scope.as_deref(), &ctx);
        stores.push(controller.store());
        runs.push(
            controller
                .shutdown_on_signal()
                .run(reconcile, error_policy, ctx.clone())
                .boxed(),
        );
    }
    info!(namespaces = ?scopes, "watching DataPipelines");
    // A deleted pipeline is never visited again: its gauges go once it left the cache.
    let pruner = tokio::spawn(prune_deleted_pipelines(
        stores,
        ctx.metrics.clone(),
        ctx.observe_interval,
    ));
    stream::select_all(runs)
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
    pruner.abort();
    info!("controller stopped");
    Ok(())
}

/// The controller of one scope (a namespace, or all): DataPipelines, the children and
/// pods the operator made, and the opted-in Secrets.
fn controller(
    client: &Client,
    namespace: Option<&str>,
    ctx: &Arc<Context>,
) -> Controller<DataPipeline> {
    let controller = Controller::new(
        api::<DataPipeline>(client, namespace),
        watcher::Config::default().any_semantic(),
    );
    let store = controller.store();
    let ours = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    // Secrets a pipeline refers to wake it when they appear, change or get the opt-in
    // label. Only opted-in Secrets are watched (and cached): others are refused anyway.
    let opted_in = watcher::Config::default().labels(&dereference::opted_in_selector());
    // Like `owns`, and the owner's next visit applies (the children's state is read
    // from the apply).
    let (sts_ctx, deployment_ctx, job_ctx, secret_ctx) =
        (ctx.clone(), ctx.clone(), ctx.clone(), ctx.clone());
    controller
        .watches(
            api::<StatefulSet>(client, namespace),
            ours.clone(),
            move |child| owners_changed(&sts_ctx, child.meta()),
        )
        .watches(
            api::<Deployment>(client, namespace),
            ours.clone(),
            move |child| owners_changed(&deployment_ctx, child.meta()),
        )
        .watches(api::<Job>(client, namespace), ours.clone(), move |child| {
            owners_changed(&job_ctx, child.meta())
        })
        // A pod that cannot start changes no workload's status: its pipeline is visited
        // (an observation, nothing applied) so its condition says why.
        .watches(api::<Pod>(client, namespace), ours, |pod| {
            pipeline_of_pod(pod.meta())
        })
        .watches(api::<Secret>(client, namespace), opted_in, move |secret| {
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
        })
}

/// Every `interval`, removes the gauges of pipelines that are in none of the caches.
async fn prune_deleted_pipelines(
    stores: Vec<Store<DataPipeline>>,
    metrics: Arc<Metrics>,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        for store in &stores {
            if store.wait_until_ready().await.is_err() {
                return;
            }
        }
        metrics.retain_pipelines(|namespace, name| {
            let pipeline = ObjectRef::new(name).within(namespace);
            stores.iter().any(|store| store.get(&pipeline).is_some())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn no_namespace_means_one_cluster_wide_controller() {
        assert_eq!(scopes(&[]), vec![None]);
        assert_eq!(scopes(&names(&["", " "])), vec![None]);
    }

    #[test]
    fn each_named_namespace_gets_one_controller() {
        assert_eq!(
            scopes(&names(&["shops", " billing", "", "shops"])),
            vec![Some("shops".to_string()), Some("billing".to_string())]
        );
    }
}
