//! Lag-driven autoscaling and the status's throughput against a real control plane and a
//! real Kafka (`e2e/services.sh up k8s kafka`): a pipeline on external Kafka at the
//! harness's broker, a backlog produced into its events topic -> the in-process controller
//! raises the runtime Deployment's replicas (capped at the partitions); the consumer
//! group's offsets committed to the end (what the runtime does after a checkpoint) -> the
//! replicas fall back after the stabilization window; the status's totals equal what the
//! test produced and committed. Fails when either server is down.
//! Run: `cargo test -p e2e --test operator_autoscaling -- --test-threads=1`.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use datapipeline_operator::{
    controller::{self, validate::OperatorSettings, RunConfig},
    crd::DataPipeline,
    metrics::Metrics,
};
use e2e::k8s::{self, TestNamespace};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    api::{Api, PostParams},
    runtime::events::Reporter,
};
use pipeline_config::PipelineNames;
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer},
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
    ClientConfig, Offset, TopicPartitionList,
};

const PARTITIONS: i32 = 3;
const EVENTS_PER_PARTITION: i64 = 400;
const LAG_PER_REPLICA: i64 = 100;

fn bootstrap() -> String {
    std::env::var("DP_E2E_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

async fn create_topics(names: &PipelineNames) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .context("Kafka admin client")?;
    let events = names.events_topic();
    let dlq = names.dead_letter_topic();
    let topics = [
        NewTopic::new(&events, PARTITIONS, TopicReplication::Fixed(1)),
        NewTopic::new(&dlq, 1, TopicReplication::Fixed(1)),
    ];
    let results = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .with_context(|| format!("creating topics at {} (is Kafka up?)", bootstrap()))?;
    for result in results {
        result.map_err(|(topic, e)| anyhow::anyhow!("creating topic {topic}: {e}"))?;
    }
    Ok(())
}

/// Produces `per_partition` events into each partition of `topic` and `dead` into `dlq`.
fn produce(topic: &str, per_partition: i64, dlq: &str, dead: i64) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("acks", "all")
        .create()?;
    let payload = br#"{"event_type":"view"}"#;
    for partition in 0..PARTITIONS {
        for i in 0..per_partition {
            let key = format!("user-{i}");
            let record = BaseRecord::to(topic)
                .partition(partition)
                .key(&key)
                .payload(&payload[..]);
            producer.send(record).map_err(|(e, _)| e)?;
        }
    }
    for i in 0..dead {
        let key = format!("bad-{i}");
        producer
            .send(BaseRecord::to(dlq).key(&key).payload(&b"rejected"[..]))
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

/// Commits the group's offsets at the end of every partition, as the runtime does after a
/// checkpoint. Assign-and-commit: the test's consumer never joins the group.
fn commit_to_end(group: &str, topic: &str, end: i64) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut list = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        list.add_partition_offset(topic, partition, Offset::Offset(end))?;
    }
    consumer.commit(&list, CommitMode::Sync)?;
    Ok(())
}

fn pipeline(name: &str) -> anyhow::Result<DataPipeline> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "datapipeline.io/v1alpha1",
        "kind": "DataPipeline",
        "metadata": {"name": name},
        "spec": {
            "source": {"landingPrefix": "landing/"},
            "kafka": {"external": {"bootstrapServers": bootstrap()}, "partitions": PARTITIONS},
            "objectStore": {"external": {"endpoint": "http://127.0.0.1:19000", "region": "us-east-1"},
                            "bucket": "autoscaling-lake"},
            "search": {"external": {"url": "http://127.0.0.1:19200", "engine": "opensearch"}},
            "runtime": {
                "autoscaling": {
                    "minReplicas": 1,
                    "maxReplicas": 5,
                    "lagPerReplica": LAG_PER_REPLICA,
                    "scaleDownStabilizationSeconds": 4
                },
                "checkpointIntervalSeconds": 1
            }
        }
    }))?)
}

async fn runtime_replicas(
    deployments: &Api<Deployment>,
    name: &str,
) -> anyhow::Result<Option<i32>> {
    Ok(deployments
        .get_opt(&format!("{name}-runtime"))
        .await?
        .and_then(|d| d.spec.and_then(|s| s.replicas)))
}

#[tokio::test]
async fn backlog_raises_replicas_capped_at_partitions_and_draining_lowers_them(
) -> anyhow::Result<()> {
    k8s::init_logging();
    let client = k8s::client().await?;
    k8s::install_crd(&client).await?;
    let namespace = TestNamespace::create(&client, "dp-autoscale").await?;
    let name = k8s::unique_name("scale");
    let names = PipelineNames::new(name.clone());
    create_topics(&names).await?;
    let (events, dlq, group) = (
        names.events_topic(),
        names.dead_letter_topic(),
        names.consumer_group(),
    );
    let produced = {
        let (events, dlq) = (events.clone(), dlq.clone());
        tokio::task::spawn_blocking(move || produce(&events, EVENTS_PER_PARTITION, &dlq, 7))
            .await??;
        EVENTS_PER_PARTITION * i64::from(PARTITIONS)
    };

    let config = RunConfig {
        settings: OperatorSettings {
            runtime_image: k8s::TEST_RUNTIME_IMAGE.into(),
        },
        namespace: Some(namespace.name.clone()),
        resync: Duration::from_secs(3600),
        reporter: Reporter {
            controller: "datapipeline-operator".into(),
            instance: Some("e2e-autoscaling".into()),
        },
        observe_interval: Duration::from_secs(1),
    };
    let controller_task = tokio::spawn(controller::run(
        client.clone(),
        config,
        std::sync::Arc::new(Metrics::new()),
    ));
    let _stop = AbortOnDrop(controller_task);

    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &namespace.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace.name);
    pipelines
        .create(&PostParams::default(), &pipeline(&name)?)
        .await?;

    // Backlog: 1200 events / 100 per replica = 12 replicas, capped at 3 partitions.
    let status = k8s::poll_until(
        "replicas to rise to the partition count",
        Duration::from_secs(90),
        || async {
            let dp = pipelines.get(&name).await?;
            let replicas = runtime_replicas(&deployments, &name).await?;
            let status = dp.status.unwrap_or_default();
            let desired = status.autoscaler.as_ref().map(|a| a.desired_replicas);
            Ok((desired == Some(PARTITIONS) && replicas == Some(PARTITIONS)).then_some(status))
        },
    )
    .await?;
    let autoscaler = status.autoscaler.clone().context("autoscaler block")?;
    ensure!(
        autoscaler.inputs.total_lag == produced,
        "lag {:?}",
        autoscaler.inputs
    );
    ensure!(
        autoscaler.inputs.partitions == PARTITIONS
            && autoscaler.inputs.partitions_with_lag == PARTITIONS
    );
    ensure!(
        autoscaler.reason
            == "lag 1200 at 100 per replica asks for 12, capped at 3 partitions: scale up at 3",
        "reason {:?}",
        autoscaler.reason
    );
    let throughput = status.throughput.clone().context("throughput block")?;
    ensure!(
        (
            throughput.events_ingested,
            throughput.events_processed,
            throughput.consumer_lag,
            throughput.dead_letters
        ) == (produced, 0, produced, 7),
        "throughput {throughput:?}"
    );

    // The runtime drains the backlog: its commits reach the end of every partition.
    {
        let (group, events) = (group.clone(), events.clone());
        tokio::task::spawn_blocking(move || commit_to_end(&group, &events, EVENTS_PER_PARTITION))
            .await??;
    }
    let status = k8s::poll_until(
        "replicas to fall after the stabilization window",
        Duration::from_secs(90),
        || async {
            let dp = pipelines.get(&name).await?;
            let replicas = runtime_replicas(&deployments, &name).await?;
            let status = dp.status.unwrap_or_default();
            let desired = status.autoscaler.as_ref().map(|a| a.desired_replicas);
            Ok((desired == Some(1) && replicas == Some(1)).then_some(status))
        },
    )
    .await?;
    let throughput = status.throughput.clone().context("throughput block")?;
    ensure!(
        (
            throughput.events_ingested,
            throughput.events_processed,
            throughput.consumer_lag
        ) == (produced, produced, 0),
        "throughput {throughput:?}"
    );
    ensure!(
        throughput.last_checkpoint_time.is_some(),
        "no checkpoint time: {throughput:?}"
    );
    let measured = status
        .conditions
        .iter()
        .find(|c| c.type_ == "ThroughputMeasured")
        .context("ThroughputMeasured condition")?;
    ensure!(measured.status == "True", "{measured:?}");

    let table = k8s::kubectl(&["get", "dp", "-n", &namespace.name, &name]).await?;
    println!("{}", table.stdout);
    Ok(())
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
