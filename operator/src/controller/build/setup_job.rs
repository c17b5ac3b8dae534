//! The Jobs that set a managed service up once it answers (Kafka's topics, MinIO's bucket):
//! one shell script in a container of the service's images, restarted on failure, named
//! after a hash of its pod template so that a changed spec gets a new Job instead of an
//! (impossible) update of a running one. Pure.

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec, Volume, VolumeMount},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::{
    names::{labels, ChildNames, Role},
    pieces::{container_security, meta, pod_security, short_hash, tmp_volume},
};
use crate::{controller::validate::ValidatedPipeline, error::Result};

/// What one setup Job runs.
pub struct SetupJob {
    pub role: Role,
    /// The container's name, e.g. `create-topics`.
    pub container: &'static str,
    pub image: String,
    /// The shell that runs `script`, e.g. `/bin/sh`.
    pub shell: &'static str,
    pub script: &'static str,
    pub env: Vec<EnvVar>,
    /// Read-only volumes besides `/tmp` (a CA to trust), with their mounts.
    pub volumes: Vec<(Volume, VolumeMount)>,
    /// uid of the image's user.
    pub uid: i64,
    /// The Job's name from the hash of its pod template.
    pub name: fn(&ChildNames, &str) -> String,
}

/// The Job: the script under `shell -c` with a writable `/tmp` and a read-only root, up to
/// 10 retries.
pub fn setup_job(p: &ValidatedPipeline, job: SetupJob) -> Result<Job> {
    let (tmp, tmp_mount) = tmp_volume();
    let (mut volumes, mut mounts): (Vec<_>, Vec<_>) = job.volumes.into_iter().unzip();
    volumes.insert(0, tmp);
    mounts.insert(0, tmp_mount);
    let container = Container {
        name: job.container.into(),
        image: Some(job.image),
        command: Some(vec![job.shell.into(), "-c".into(), job.script.into()]),
        env: Some(job.env),
        security_context: Some(container_security(true)),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let spec = JobSpec {
        backoff_limit: Some(10),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels(&p.name, job.role)),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![container],
                volumes: Some(volumes),
                restart_policy: Some("OnFailure".into()),
                security_context: Some(pod_security(job.uid, Some(job.uid))),
                enable_service_links: Some(false),
                automount_service_account_token: Some(false),
                ..PodSpec::default()
            }),
        },
        ..JobSpec::default()
    };
    let name = (job.name)(&ChildNames::new(&p.name), &short_hash(&spec.template)?);
    Ok(Job {
        metadata: meta(p, name, job.role),
        spec: Some(spec),
        status: None,
    })
}
