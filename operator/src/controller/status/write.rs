//! The one status write of a visit: server-side apply of `.status` under the operator's
//! field manager (the caller skips it when nothing changed). I/O.

use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};
use serde_json::json;

use crate::{
    controller::build::names::MANAGER,
    crd::{DataPipeline, DataPipelineStatus},
    error::{Error, Result},
};

/// What became of a status write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWrite {
    Written,
    /// The pipeline was deleted while the reconcile ran: there is nothing to write to.
    PipelineGone,
}

/// Writes `.status` with server-side apply under the operator's field manager.
pub async fn write_status(
    client: &Client,
    dp: &DataPipeline,
    status: &DataPipelineStatus,
) -> Result<StatusWrite> {
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
    let api: Api<DataPipeline> = Api::namespaced(client.clone(), &namespace);
    let patch = json!({
        "apiVersion": "datapipeline.io/v1alpha1",
        "kind": "DataPipeline",
        "status": status,
    });
    match api
        .patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(StatusWrite::Written),
        // Deleted while this reconcile ran: not a failure of the operator.
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            tracing::debug!(%namespace, %name, "pipeline deleted during the reconcile; status not written");
            Ok(StatusWrite::PipelineGone)
        }
        Err(source) => Err(Error::WriteStatus {
            namespace,
            name,
            source: Box::new(source),
        }),
    }
}
