//! The apply step of a visit: server-side apply of the desired children (`patch`), the
//! generator Job created only once what it writes to is ready and recreated after a
//! failure (`generator_job`), the deletion of children the spec no longer wants
//! (`orphans`), and the readiness of what was applied (`readiness`). I/O, around pure
//! decisions in each module.

pub mod generator_job;
pub mod orphans;
pub mod patch;
pub mod readiness;

use kube::Client;

use self::patch::ApplyOutcome;
use crate::{
    controller::build::{names::Role, Child},
    error::Result,
};

/// Applies the children in order, the generator Job last and only once what it writes to
/// is ready (or it exists already).
pub async fn apply_in_order(
    client: &Client,
    namespace: &str,
    children: &[Child],
) -> Result<ApplyOutcome> {
    let (generator, others) = match children.split_last() {
        Some((job @ Child::Job(_, Role::Ingest), others)) => (Some(job), others),
        _ => (None, children),
    };
    let mut applied = patch::apply_children(client, namespace, others).await;
    if let Some(job) = generator {
        generator_job::apply(client, namespace, job, &mut applied).await?;
    }
    Ok(applied)
}
