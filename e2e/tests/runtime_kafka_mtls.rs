//! A managed Kafka's client authentication and ACLs, against a real Kafka (the harness's
//! jars) started here the way the operator configures its nodes: TLS listeners that want a
//! client certificate, the StandardAuthorizer and the superusers, as the StatefulSet's
//! environment gives them; certificates made by the operator's own CA generator for the
//! operator's user names; and the ACLs granted by the topic Job's own script, run with the
//! Job's environment (its tools mapped onto the Kafka jars). Then:
//! - the ingest role's user ingests (topics, transactions), the process role's user
//!   consumes in its group, and the operator, as the admin user with its PEMs in memory,
//!   reads the group's lag;
//! - each role's user may do only its own part: the process user cannot add events (it
//!   may write dead letters), the ingest user cannot read the group's offsets;
//! - another user of the same CA is refused by the ACLs: the ingest's wait says so;
//! - a client with no certificate, or one from another CA, fails its handshake, and the
//!   error says the certificate was refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use datapipeline_operator::controller::build::kafka::{self as managed_kafka, TOPICS_SCRIPT};
use datapipeline_operator::controller::build::names::ChildNames;
use datapipeline_operator::controller::credentials::{CredentialGenerator, RandomCredentials};
use datapipeline_operator::controller::measure::offset_reader::{read_offsets, Connection};
use datapipeline_operator::controller::pipeline_ca::{join_pem, CaKeyPair};
use datapipeline_operator::controller::validate::{
    validate, KafkaMode, OperatorSettings, ValidatedPipeline,
};
use datapipeline_operator::crd::DataPipeline;
use e2e::k8s::{repo_root, service_setting};
use e2e::runtime::{free_port, test_validity, wait_for};
use pipeline_runtime::config::{ClientCertificate, KafkaSettings, SecurityProtocol};
use pipeline_runtime::kafka::{broker_error, ensure_topics};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

const EVENTS: u64 = 500;

/// A Kafka node killed on drop.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// The all-managed example as the operator plans it.
fn plan() -> Result<ValidatedPipeline> {
    let text = std::fs::read_to_string(repo_root().join("examples/shop-events.yaml"))?;
    let mut dp: DataPipeline = serde_yaml::from_str(&text)?;
    dp.metadata.namespace = Some("shops".into());
    dp.metadata.uid = Some("0b5e1d1c-58b8-4bde-9c8e-2f5a1f5e7a11".into());
    validate(
        &dp,
        &OperatorSettings {
            runtime_image: "pipeline-runtime:e2e".into(),
            operator_pods: None,
        },
    )
    .map_err(|problem| anyhow::anyhow!("{problem:?}"))
}

/// The `name=value` environment of a pod template's first container.
fn container_env(template: &serde_json::Value) -> BTreeMap<String, String> {
    template["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
        .collect()
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

fn java() -> Result<String> {
    service_setting("KAFKA_JAVA")
}

/// Starts one broker+controller with the operator's security settings on local ports.
fn start_broker(
    files: &Files,
    node_env: &BTreeMap<String, String>,
    keystore: &Path,
    trust: &Path,
) -> Result<(Broker, String)> {
    let (client, controller) = (free_port()?, free_port()?);
    let data = files.dir.path().join("data");
    // What the image's start script makes of the operator's variables, for those that
    // decide who may connect and act.
    let mut properties = String::new();
    for name in [
        "KAFKA_SSL_CLIENT_AUTH",
        "KAFKA_AUTHORIZER_CLASS_NAME",
        "KAFKA_SUPER_USERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_INTER_BROKER_LISTENER_NAME",
        "KAFKA_SSL_KEYSTORE_TYPE",
        "KAFKA_SSL_TRUSTSTORE_TYPE",
    ] {
        let value = node_env
            .get(name)
            .with_context(|| format!("the Kafka StatefulSet sets no {name}"))?;
        let key = name["KAFKA_".len()..].to_lowercase().replace('_', ".");
        properties.push_str(&format!("{key}={value}\n"));
    }
    properties.push_str(&format!(
        "process.roles=broker,controller\nnode.id=0\n\
         controller.quorum.voters=0@localhost:{controller}\n\
         listeners=CLIENT://localhost:{client},CONTROLLER://localhost:{controller}\n\
         advertised.listeners=CLIENT://localhost:{client}\n\
         ssl.keystore.location={}\nssl.truststore.location={}\nlog.dirs={}\n\
         offsets.topic.replication.factor=1\ntransaction.state.log.replication.factor=1\n\
         transaction.state.log.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n",
        keystore.display(),
        trust.display(),
        data.display()
    ));
    let config = files.write("server.properties", &properties)?;
    let lib = format!("{}/*", service_setting("KAFKA_LIB")?);
    let java = java()?;
    let format = Command::new(&java)
        .args(["-Xmx256m", "-cp", &lib, "kafka.tools.StorageTool", "format"])
        .args(["-t", "q1Sh-9_ISia_zwGINzRvyQ", "-c"])
        .arg(&config)
        .output()?;
    if !format.status.success() {
        bail!(
            "formatting the storage failed: {}",
            String::from_utf8_lossy(&format.stderr)
        );
    }
    let log = std::fs::File::create(files.dir.path().join("kafka.log"))?;
    let child = Command::new(&java)
        .args(["-Xmx512m", "-cp", &lib, "kafka.Kafka"])
        .arg(&config)
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()?;
    Ok((Broker(child), format!("localhost:{client}")))
}

/// The topic Job's script with the Job's environment, its Kafka tools mapped onto the
/// harness's jars, the bundle and admin keystore at local paths.
fn run_topics_job(
    files: &Files,
    job_env: &BTreeMap<String, String>,
    local: &[(&str, String)],
) -> Result<String> {
    let bin = files.dir.path().join("bin");
    std::fs::create_dir_all(&bin)?;
    for (tool, class) in [
        (
            "kafka-broker-api-versions",
            "org.apache.kafka.tools.BrokerApiVersionsCommand",
        ),
        ("kafka-topics", "org.apache.kafka.tools.TopicCommand"),
        ("kafka-configs", "kafka.admin.ConfigCommand"),
        ("kafka-acls", "org.apache.kafka.tools.AclCommand"),
    ] {
        let path = bin.join(format!("{tool}.sh"));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nexec \"$JAVA\" -Xmx256m -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
                 -cp \"$KAFKA_LIB/*\" {class} \"$@\"\n"
            ),
        )?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let output = Command::new("/bin/bash")
        .args(["-c", TOPICS_SCRIPT])
        .envs(job_env)
        .envs(local.iter().map(|(k, v)| (*k, v.as_str())))
        .env("KAFKA_BIN", &bin)
        .env("JAVA", java()?)
        .env("KAFKA_LIB", service_setting("KAFKA_LIB")?)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!("the topic Job's script failed: {text}");
    }
    Ok(text)
}

fn settings(
    p: &ValidatedPipeline,
    bootstrap: &str,
    ca: &Path,
    client: Option<(PathBuf, PathBuf)>,
) -> KafkaSettings {
    KafkaSettings {
        bootstrap: bootstrap.into(),
        security_protocol: SecurityProtocol::Ssl,
        sasl: None,
        ca_file: Some(ca.into()),
        client_certificate: client.map(|(cert_file, key_file)| ClientCertificate {
            cert_file,
            key_file,
        }),
        events_topic: p.names.events_topic(),
        dlq_topic: p.names.dead_letter_topic(),
        consumer_group: p.names.consumer_group(),
        group_instance_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_pipeline_users_act_on_a_managed_kafka() -> Result<()> {
    e2e::k8s::init_logging();
    let p = plan()?;
    let KafkaMode::Managed(kafka) = &p.kafka.mode else {
        bail!("the example's Kafka is managed")
    };
    let names = ChildNames::new(&p.name);
    let node_env = container_env(
        &serde_json::to_value(managed_kafka::statefulset(&p, kafka, "-"))?["spec"]["template"],
    );
    let job_env = container_env(
        &serde_json::to_value(managed_kafka::topics_job(&p, kafka)?)?["spec"]["template"],
    );

    let files = Files {
        dir: tempfile::tempdir()?,
    };
    let validity = test_validity()?;
    let generator = RandomCredentials;
    let ca: CaKeyPair = generator.certificate_authority("e2e pipeline CA", validity)?;
    let other_ca = generator.certificate_authority("e2e other CA", validity)?;
    let issue = |issuer: &CaKeyPair, name: &str, dns: &[String]| -> Result<(String, String)> {
        Ok(generator.server_certificate(issuer, name, dns, validity)?)
    };
    let trust = files.write("ca.crt", &ca.crt)?;
    let (node_crt, node_key) = issue(&ca, &names.kafka(), &["localhost".to_string()])?;
    let node_keystore = files.write("node.pem", &join_pem([node_key.as_str(), &node_crt]))?;
    let (admin_crt, admin_key) = issue(&ca, &names.kafka_admin(), &[])?;
    let admin_keystore = files.write("admin.pem", &join_pem([admin_key.as_str(), &admin_crt]))?;
    let mut client_files = BTreeMap::new();
    for (label, issuer, name) in [
        ("ingest", &ca, names.kafka_ingest()),
        ("process", &ca, names.kafka_runtime()),
        ("intruder", &ca, format!("{}-intruder", p.name)),
        ("foreign", &other_ca, names.kafka_runtime()),
    ] {
        let (crt, key) = issue(issuer, &name, &[])?;
        client_files.insert(
            label,
            (
                files.write(&format!("{label}.crt"), &crt)?,
                files.write(&format!("{label}.key"), &key)?,
            ),
        );
    }

    let (_broker, bootstrap) = start_broker(&files, &node_env, &node_keystore, &trust)?;
    wait_for("the broker's TLS listener", Duration::from_secs(90), || {
        let bootstrap = bootstrap.clone();
        async move {
            Ok(
                std::net::TcpStream::connect(bootstrap.replace("localhost", "127.0.0.1"))
                    .ok()
                    .map(|_| ()),
            )
        }
    })
    .await?;

    let log = run_topics_job(
        &files,
        &job_env,
        &[
            ("BOOTSTRAP", bootstrap.clone()),
            ("TRUST_BUNDLE", trust.display().to_string()),
            ("KEYSTORE", admin_keystore.display().to_string()),
            // One node here.
            ("REPLICATION_FACTOR", "1".into()),
        ],
    )?;
    assert!(
        log.contains("ACLs of User:CN=shop-kafka-ingest ready")
            && log.contains("ACLs of User:CN=shop-kafka-runtime ready")
            && log.contains("topic shop-events ready")
            && log.contains("topic shop-events-dlq ready"),
        "{log}"
    );

    // The ingest user ingests (topics exist, transactions); the process user consumes in
    // the group.
    let process = settings(&p, &bootstrap, &trust, client_files.get("process").cloned());
    let ingest = settings(&p, &bootstrap, &trust, client_files.get("ingest").cloned());
    let store = files.dir.path().join("store");
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: pipeline_runtime::config::IngestArgs,
    }
    let (ingest_crt, ingest_key) = client_files.get("ingest").cloned().context("files")?;
    let argv = [
        "ingest".to_string(),
        "--pipeline".into(),
        p.name.clone(),
        "--http-port".into(),
        "0".into(),
        "--kafka-bootstrap".into(),
        bootstrap.clone(),
        "--kafka-security-protocol".into(),
        "SSL".into(),
        "--kafka-ca-file".into(),
        trust.display().to_string(),
        "--kafka-cert-file".into(),
        ingest_crt.display().to_string(),
        "--kafka-key-file".into(),
        ingest_key.display().to_string(),
        "--store-dir".into(),
        store.display().to_string(),
        "--generate".into(),
        EVENTS.to_string(),
        "--partitions".into(),
        p.kafka.partitions.to_string(),
        "--replication-factor".into(),
        "1".into(),
    ];
    let args = <Cli as clap::Parser>::parse_from(argv).args;
    let summary =
        pipeline_runtime::ingest::run_with(args, &std::collections::HashMap::new()).await?;
    assert_eq!(summary.rows_accepted + summary.rows_rejected, EVENTS);

    let consumed = {
        let process = process.clone();
        tokio::task::spawn_blocking(move || consume_all(&process, summary.rows_accepted)).await??
    };
    assert_eq!(consumed, summary.rows_accepted);

    // The operator, as the admin user, reads the group's progress: nothing left.
    let connection = Connection {
        bootstrap: bootstrap.clone(),
        properties: vec![
            ("security.protocol".into(), "ssl".into()),
            ("ssl.ca.pem".into(), ca.crt.clone()),
            ("ssl.certificate.pem".into(), admin_crt.clone()),
            ("ssl.key.pem".into(), admin_key.clone()),
        ],
    };
    let (group, events, dlq) = (
        p.names.consumer_group(),
        p.names.events_topic(),
        p.names.dead_letter_topic(),
    );
    let snapshot =
        tokio::task::spawn_blocking(move || read_offsets(&connection, &group, &events, &dlq))
            .await?
            .map_err(anyhow::Error::msg)?;
    assert_eq!(snapshot.events.len(), p.kafka.partitions as usize);
    // Every event was consumed; what may follow a partition's commit is the ingest's last
    // transaction marker.
    let mut committed_total = 0;
    for partition in &snapshot.events {
        let committed = partition.committed.context("a committed offset")?;
        assert!(
            (0..=1).contains(&(partition.log_end - committed)),
            "{snapshot:?}"
        );
        committed_total += committed - partition.low;
    }
    assert!(
        committed_total >= summary.rows_accepted as i64,
        "{snapshot:?}"
    );

    // Each role's user only does its part. The process user writes dead letters but cannot
    // add events.
    let producer: FutureProducer = pipeline_runtime::kafka::producer_config(&process).create()?;
    let send = |topic: String| {
        let producer = producer.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(&topic).key("e2e").payload("e2e"),
                    Duration::from_secs(30),
                )
                .await
                .map(|_| ())
                .map_err(|(error, _)| error.rdkafka_error_code())
        }
    };
    assert_eq!(send(p.names.dead_letter_topic()).await, Ok(()));
    assert_eq!(
        send(p.names.events_topic()).await,
        Err(Some(RDKafkaErrorCode::TopicAuthorizationFailed))
    );
    // The ingest user cannot consume in the group (nor read or move its offsets): the
    // consumer's first error says so.
    let refused = {
        let ingest = ingest.clone();
        tokio::task::spawn_blocking(move || -> Result<Option<RDKafkaErrorCode>> {
            let consumer: BaseConsumer =
                pipeline_runtime::kafka::consumer_config(&ingest, &ingest.consumer_group)
                    .create()?;
            consumer.subscribe(&[&ingest.events_topic])?;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while std::time::Instant::now() < deadline {
                match consumer.poll(Duration::from_millis(500)) {
                    Some(Err(e)) => return Ok(e.rdkafka_error_code()),
                    Some(Ok(_)) => bail!("the ingest user consumed in the group"),
                    None => {}
                }
            }
            bail!("no error in 60 s")
        })
        .await??
    };
    assert_eq!(refused, Some(RDKafkaErrorCode::GroupAuthorizationFailed));

    // Another user of the same CA: authenticated, but no ACL lets it near the topics.
    let intruder = settings(
        &p,
        &bootstrap,
        &trust,
        client_files.get("intruder").cloned(),
    );
    let refused = ensure_topics(&intruder, &[intruder.events_topic.as_str()], 1, 1)
        .await
        .expect_err("no ACL for this user");
    assert!(
        refused.is_retryable(),
        "the ingest waits for ACLs: {refused}"
    );
    assert_eq!(
        refused.to_string(),
        "kafka: create topics: shop-events: TopicAuthorizationFailed (Broker: Topic authorization failed) (the brokers' ACLs do not let this client create or describe it)"
    );

    // No certificate, or one of another CA with the runtime's very name: the handshake fails.
    for (what, client) in [
        ("no certificate", None),
        ("another CA", client_files.get("foreign").cloned()),
    ] {
        let probe = settings(&p, &bootstrap, &trust, client);
        let reason =
            tokio::task::spawn_blocking(move || broker_error(&probe, Duration::from_secs(10)))
                .await?
                .with_context(|| format!("{what}: the brokers must refuse the connection"))?;
        assert!(
            reason.contains("SSL alert number") && reason.contains(&bootstrap),
            "{what}: {reason}"
        );
    }
    Ok(())
}

/// Consumes the events topic in the pipeline's group as `settings`' user until `expected`
/// messages arrived, committing them.
fn consume_all(settings: &KafkaSettings, expected: u64) -> Result<u64> {
    let consumer: BaseConsumer =
        pipeline_runtime::kafka::consumer_config(settings, &settings.consumer_group).create()?;
    consumer.subscribe(&[&settings.events_topic])?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while seen < expected {
        if std::time::Instant::now() > deadline {
            bail!("{seen} of {expected} events consumed in 60 s");
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) if message.payload().is_some() => seen += 1,
            Some(Ok(_)) | None => {}
            // The runtime's consumer reports reaching a partition's end.
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => bail!("consuming as the runtime's user: {e}"),
        }
    }
    // The runtime stores offsets itself (no auto-store): commit where it stands.
    consumer.commit(&consumer.position()?, CommitMode::Sync)?;
    Ok(seen)
}
