//! The ingest role (`pipeline-runtime ingest`): for a landing prefix a one-replica
//! Deployment that keeps watching the prefix (Recreate, so two ingesters never overlap);
//! for the generator a Job, because generating N events is finite work that must not be
//! repeated when it ends. The Job's name carries a hash of its pod template, so a changed
//! generator spec starts a new run; pausing suspends it. When the Job is applied (once
//! Kafka and the object store are ready) and what happens when it fails is the
//! controller's `apply::generator_job` module. Pure.

use k8s_openapi::api::{
    apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy},
    batch::v1::{Job, JobSpec},
    core::v1::{EnvVar, PodTemplateSpec},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use pipeline_config::env as e;

use super::{
    child::Child,
    names::{selector_labels, ChildNames, Role},
    pieces::{env, meta, short_hash},
    runtime::{container, grace_seconds, pod_spec, template_metadata, volumes, KafkaUser, Needs},
};
use crate::{
    controller::validate::{SourcePlan, ValidatedPipeline},
    error::Result,
};

/// How often the ingest Deployment lists the landing prefix for new files.
pub const WATCH_INTERVAL_MS: u64 = 10_000;

const NEEDS: Needs = Needs {
    search: false,
    kafka_user: KafkaUser::Ingest,
};

pub fn ingest(p: &ValidatedPipeline, checksum: &str) -> Result<Child> {
    Ok(match &p.source {
        SourcePlan::Landing { prefix } => {
            Child::Deployment(deployment(p, prefix, checksum), Role::Ingest)
        }
        SourcePlan::Generator {
            events,
            seed,
            rate_per_second,
        } => {
            let mut vars = vec![
                env(e::GENERATOR_EVENTS, events.to_string()),
                env(e::GENERATOR_SEED, seed.to_string()),
            ];
            if let Some(rate) = rate_per_second {
                vars.push(env(e::GENERATOR_RATE_PER_SECOND, rate.to_string()));
            }
            Child::Job(generator_job(p, vars)?, Role::Ingest)
        }
    })
}

fn deployment(p: &ValidatedPipeline, prefix: &str, checksum: &str) -> Deployment {
    let (volumes, mounts) = volumes(p, NEEDS);
    let vars = vec![
        env(e::SOURCE_PREFIX, prefix),
        env(e::INGEST_WATCH_INTERVAL_MS, WATCH_INTERVAL_MS.to_string()),
    ];
    let container = container(p, "ingest", vars, NEEDS, mounts, true);
    Deployment {
        metadata: meta(p, ChildNames::new(&p.name).ingest(), Role::Ingest),
        spec: Some(DeploymentSpec {
            replicas: Some(if p.paused { 0 } else { 1 }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&p.name, Role::Ingest)),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            template: PodTemplateSpec {
                metadata: Some(template_metadata(p, Role::Ingest, Some(checksum))),
                spec: Some(pod_spec(container, volumes, grace_seconds(p))),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn generator_job(p: &ValidatedPipeline, vars: Vec<EnvVar>) -> Result<Job> {
    let (volumes, mounts) = volumes(p, NEEDS);
    // No probes: a Job's pod is judged by its exit code.
    let container = container(p, "ingest", vars, NEEDS, mounts, false);
    let mut pod = pod_spec(container, volumes, grace_seconds(p));
    pod.restart_policy = Some("OnFailure".into());
    let template = PodTemplateSpec {
        // No config checksum: tuning the runtime must not start a second generator run.
        metadata: Some(template_metadata(p, Role::Ingest, None)),
        spec: Some(pod),
    };
    let name = ChildNames::new(&p.name).generator_job(&short_hash(&template)?);
    Ok(Job {
        metadata: meta(p, name, Role::Ingest),
        spec: Some(JobSpec {
            backoff_limit: Some(6),
            suspend: Some(p.paused),
            template,
            ..JobSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{external_pipeline_plan, managed_plan};
    use serde_json::json;

    fn json_of(child: Child) -> serde_json::Value {
        match child {
            Child::Job(j, Role::Ingest) => serde_json::to_value(j),
            Child::Deployment(d, Role::Ingest) => serde_json::to_value(d),
            other => panic!("unexpected {other:?}"),
        }
        .expect("json")
    }

    #[test]
    fn generator_runs_as_a_job() {
        let p = managed_plan();
        let job = json_of(ingest(&p, "sum").expect("built"));
        assert_eq!(job["kind"], "Job");
        assert!(job["metadata"]["name"]
            .as_str()
            .expect("name")
            .starts_with("shop-generate-"));
        assert_eq!(job["spec"]["suspend"], false);
        assert_eq!(job["spec"]["backoffLimit"], 6);
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "OnFailure");
        assert!(job["spec"]["template"]["metadata"]
            .get("annotations")
            .is_none());
        let c = &pod["containers"][0];
        assert_eq!(c["args"], json!(["ingest"]));
        assert!(c.get("livenessProbe").is_none());
        assert_eq!(
            c["env"],
            json!([
                {"name": "DP_GENERATOR_EVENTS", "value": "1000"},
                {"name": "DP_GENERATOR_SEED", "value": "7"},
                {"name": "DP_S3_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "shop-minio-credentials", "key": "accessKeyId", "optional": false}}},
                {"name": "DP_S3_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "shop-minio-credentials", "key": "secretAccessKey", "optional": false}}}
            ])
        );
        // The ingest role's own Kafka user, not the process role's.
        let kafka = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == "kafka-tls")
            .expect("the Kafka client certificate");
        assert_eq!(kafka["secret"]["secretName"], "shop-kafka-ingest");
    }

    #[test]
    fn pausing_suspends_the_same_job_and_a_new_spec_makes_a_new_one() {
        let p = managed_plan();
        let running = json_of(ingest(&p, "sum").expect("built"));
        let mut paused = p.clone();
        paused.paused = true;
        let suspended = json_of(ingest(&paused, "sum").expect("built"));
        assert_eq!(suspended["spec"]["suspend"], true);
        assert_eq!(suspended["metadata"]["name"], running["metadata"]["name"]);
        // A configuration change elsewhere (checksum) does not start a second run.
        assert_eq!(
            json_of(ingest(&p, "other").expect("built"))["metadata"]["name"],
            running["metadata"]["name"]
        );

        let mut more = p.clone();
        more.source = SourcePlan::Generator {
            events: 5000,
            seed: 7,
            rate_per_second: Some(100),
        };
        let next = json_of(ingest(&more, "sum").expect("built"));
        assert_ne!(next["metadata"]["name"], running["metadata"]["name"]);
        assert_eq!(
            next["spec"]["template"]["spec"]["containers"][0]["env"][2],
            json!({"name": "DP_GENERATOR_RATE_PER_SECOND", "value": "100"})
        );
    }

    #[test]
    fn landing_prefix_runs_one_watching_ingester() {
        let mut p = external_pipeline_plan();
        let d = json_of(ingest(&p, "sum").expect("built"));
        assert_eq!(d["kind"], "Deployment");
        assert_eq!(d["metadata"]["name"], "shop-ingest");
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"],
            json!({"checksum/config": "sum"})
        );
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["env"][0],
            json!({"name": "DP_SOURCE_PREFIX", "value": "landing/"})
        );
        assert_eq!(
            c["env"][1],
            json!({"name": "DP_INGEST_WATCH_INTERVAL_MS", "value": "10000"})
        );
        // Ingest needs Kafka and the store, not the search credentials.
        let names: Vec<&str> = c["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|v| v["name"].as_str().expect("name"))
            .collect();
        assert_eq!(
            names,
            vec![
                "DP_SOURCE_PREFIX",
                "DP_INGEST_WATCH_INTERVAL_MS",
                "DP_KAFKA_USERNAME",
                "DP_KAFKA_PASSWORD",
                "DP_S3_ACCESS_KEY_ID",
                "DP_S3_SECRET_ACCESS_KEY"
            ]
        );
        p.paused = true;
        assert_eq!(
            json_of(ingest(&p, "sum").expect("built"))["spec"]["replicas"],
            0
        );
    }
}
