//! Helpers for the runtime's integration tests: endpoints of the real Kafka, OpenSearch
//! and S3 servers from the variables `e2e/services.sh env` prints, unique names per test
//! run, and readers for what the runtime wrote (topics, lake, index).
//!
//! A server that is not configured or not reachable makes the test fail, never skip.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pipeline_runtime::config::{
    KafkaSettings, S3Credentials, S3Settings, SearchSettings, Secret, SecurityProtocol,
    StoreSettings,
};
use pipeline_runtime::store::ObjectStore;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;

/// Endpoints of the servers, from the environment.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub kafka_bootstrap: String,
    pub opensearch_url: String,
    pub s3_endpoint: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
    pub s3_region: String,
}

fn var(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: start the servers with `e2e/services.sh up kafka opensearch s3` and `eval \"$(e2e/services.sh env)\"`")
    })
}

impl Endpoints {
    /// The flags both roles take for `pipeline` on these servers: its name, HTTP off, the
    /// brokers and the pipeline's own bucket.
    fn common_flags<'a>(&'a self, pipeline: &'a str) -> [&'a str; 12] {
        [
            "--pipeline",
            pipeline,
            "--http-port",
            "0",
            "--kafka-bootstrap",
            &self.kafka_bootstrap,
            "--s3-bucket",
            pipeline,
            "--s3-endpoint",
            &self.s3_endpoint,
            "--s3-region",
            &self.s3_region,
        ]
    }

    /// The ingest role's arguments for `pipeline` on these servers (the pipeline's own
    /// bucket, HTTP off), then `extra` flags, parsed as the binary parses them.
    pub fn ingest_args(
        &self,
        pipeline: &str,
        extra: &[&str],
    ) -> pipeline_runtime::config::IngestArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: pipeline_runtime::config::IngestArgs,
        }
        let mut argv = vec!["ingest"];
        argv.extend(self.common_flags(pipeline));
        argv.extend_from_slice(extra);
        <Cli as clap::Parser>::parse_from(argv).args
    }

    /// Publishes `csv` to `pipeline`'s topics (created with `partitions` partitions) with
    /// the ingest role, in process.
    pub async fn ingest_file(
        &self,
        pipeline: &str,
        csv: &std::path::Path,
        partitions: i32,
    ) -> Result<pipeline_runtime::ingest::IngestSummary> {
        let args = self.ingest_args(
            pipeline,
            &[
                "--input",
                &csv.display().to_string(),
                "--partitions",
                &partitions.to_string(),
            ],
        );
        Ok(pipeline_runtime::ingest::run_with(args, self.s3_credentials()).await?)
    }

    /// The process role's arguments for `pipeline` on these servers (its own bucket, the
    /// OpenSearch index, HTTP off), then `extra` flags, parsed as the binary parses them.
    pub fn process_args(
        &self,
        pipeline: &str,
        extra: &[&str],
    ) -> pipeline_runtime::config::ProcessArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: pipeline_runtime::config::ProcessArgs,
        }
        let mut argv = vec!["process"];
        argv.extend(self.common_flags(pipeline));
        argv.extend(["--search-url", self.opensearch_url.as_str()]);
        argv.extend_from_slice(extra);
        <Cli as clap::Parser>::parse_from(argv).args
    }

    /// Reads the endpoints and checks every server accepts TCP connections.
    pub fn from_env() -> Result<Self> {
        let e = Endpoints {
            kafka_bootstrap: var("KAFKA_BOOTSTRAP")?,
            opensearch_url: var("OPENSEARCH_URL")?,
            s3_endpoint: var("S3_ENDPOINT")?,
            s3_access_key: var("S3_ACCESS_KEY")?,
            s3_secret_key: var("S3_SECRET_KEY")?,
            s3_region: std::env::var("S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
        };
        require_reachable("Kafka", &e.kafka_bootstrap)?;
        require_reachable("OpenSearch", host_port(&e.opensearch_url))?;
        require_reachable("S3", host_port(&e.s3_endpoint))?;
        Ok(e)
    }

    pub fn kafka(&self, pipeline: &str) -> KafkaSettings {
        kafka_settings(&self.kafka_bootstrap, pipeline)
    }

    pub fn s3(&self, bucket: &str) -> StoreSettings {
        StoreSettings::S3(S3Settings {
            bucket: bucket.to_string(),
            endpoint: Some(self.s3_endpoint.clone()),
            region: self.s3_region.clone(),
            path_style: true,
            credentials: Some(S3Credentials {
                access_key_id: self.s3_access_key.clone(),
                secret_access_key: Secret::new(self.s3_secret_key.clone()),
            }),
            ca_file: None,
        })
    }

    pub fn search(&self, index: &str) -> SearchSettings {
        SearchSettings {
            url: self.opensearch_url.clone(),
            index: index.to_string(),
            credentials: None,
            ca_file: None,
        }
    }

    /// The S3 credentials as the runtime's in-process entry points look them up (by env
    /// variable name). Leaked: those entry points want `'static`, and a test runs once.
    pub fn s3_credentials(&self) -> &'static HashMap<String, String> {
        use pipeline_config::env;
        Box::leak(Box::new(HashMap::from([
            (
                env::S3_ACCESS_KEY_ID.to_string(),
                self.s3_access_key.clone(),
            ),
            (
                env::S3_SECRET_ACCESS_KEY.to_string(),
                self.s3_secret_key.clone(),
            ),
        ])))
    }

    /// The environment a `pipeline-runtime` child process needs for these servers.
    pub fn runtime_env(&self, pipeline: &str, bucket: &str) -> Vec<(String, String)> {
        use pipeline_config::env;
        [
            (env::PIPELINE, pipeline),
            (env::KAFKA_BOOTSTRAP, &self.kafka_bootstrap),
            (env::S3_ENDPOINT, &self.s3_endpoint),
            (env::S3_REGION, &self.s3_region),
            (env::S3_BUCKET, bucket),
            (env::S3_ACCESS_KEY_ID, &self.s3_access_key),
            (env::S3_SECRET_ACCESS_KEY, &self.s3_secret_key),
            (env::S3_PATH_STYLE, "true"),
            (env::SEARCH_URL, &self.opensearch_url),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

fn host_port(url: &str) -> &str {
    let rest = url.split("://").nth(1).unwrap_or(url);
    rest.split('/').next().unwrap_or(rest)
}

fn require_reachable(what: &str, address: &str) -> Result<()> {
    let first = address.split(',').next().unwrap_or(address);
    let addrs: Vec<SocketAddr> = first
        .to_socket_addrs()
        .with_context(|| format!("{what}: cannot resolve {first}"))?
        .collect();
    for addr in &addrs {
        if TcpStream::connect_timeout(addr, Duration::from_secs(3)).is_ok() {
            return Ok(());
        }
    }
    bail!("{what} is not reachable at {first}: start it with `e2e/services.sh up`")
}

/// A name no other test run uses: lowercase, valid for topics, buckets and indices.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:09}", std::process::id())
}

/// Opens (and creates) a bucket on the S3 server.
pub async fn open_bucket(endpoints: &Endpoints, bucket: &str) -> Result<ObjectStore> {
    Ok(ObjectStore::open(&endpoints.s3(bucket)).await?)
}

/// One Kafka message as read back by a test: (partition, offset, key, value).
pub type TopicMessage = (i32, i64, Option<Vec<u8>>, Vec<u8>);

/// Every message of a topic from the beginning to its current end, per partition in
/// offset order.
pub fn read_topic(bootstrap: &str, topic: &str) -> Result<Vec<TopicMessage>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "e2e-reader")
        .set("enable.auto.commit", "false")
        // The ingest's transaction markers take offsets no message has: a partition
        // whose last offsets are markers ends at its EOF, not at a message.
        .set("enable.partition.eof", "true")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len() as i32)
        .context("topic not found")?;
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(30))?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ends.is_empty() {
        if Instant::now() > deadline {
            bail!("reading {topic} did not reach the end; left: {ends:?}");
        }
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            Err(KafkaError::PartitionEOF(partition)) => {
                let reached = consumer
                    .position()?
                    .find_partition(topic, partition)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(offset) => Some(offset),
                        _ => None,
                    });
                if let (Some(&end), Some(reached)) = (ends.get(&partition), reached) {
                    if reached >= end {
                        ends.remove(&partition);
                    }
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        out.push((
            message.partition(),
            message.offset(),
            message.key().map(<[u8]>::to_vec),
            message.payload().unwrap_or_default().to_vec(),
        ));
        if let Some(&end) = ends.get(&message.partition()) {
            if message.offset() + 1 >= end {
                ends.remove(&message.partition());
            }
        }
    }
    Ok(out)
}

/// Committed offset per partition of a consumer group (partitions without one left out).
pub fn committed_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(30))?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// End offset per partition.
/// Waits until the consumer group of `kafka` has committed every partition of its events
/// topic up to `ends` (the end offsets).
pub async fn wait_until_committed(
    kafka: &KafkaSettings,
    partitions: i32,
    ends: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> Result<()> {
    wait_for("every partition committed to its end", timeout, || {
        let (bootstrap, group, topic) = (
            kafka.bootstrap.clone(),
            kafka.consumer_group.clone(),
            kafka.events_topic.clone(),
        );
        async move {
            let committed = tokio::task::spawn_blocking(move || {
                committed_offsets(&bootstrap, &group, &topic, partitions)
            })
            .await??;
            Ok((&committed == ends).then_some(()))
        }
    })
    .await
}

/// The sum of every partition's end offset of `topic` (0 for a topic that does not exist).
pub fn topic_end_total(bootstrap: &str, topic: &str) -> Result<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "e2e-watermarks")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len() as i32);
    let mut total = 0;
    for p in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(30))?;
        total += high;
    }
    Ok(total)
}

pub fn end_offsets(bootstrap: &str, topic: &str, partitions: i32) -> Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "e2e-watermarks")
        .create()?;
    let mut out = BTreeMap::new();
    for p in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(30))?;
        out.insert(p, high);
    }
    Ok(out)
}

/// Polls `check` until it returns `Some`, failing after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > deadline {
            match last_error {
                Some(e) => bail!("timed out waiting for {what}; last error: {e:#}"),
                None => bail!("timed out waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ------------------------------------------------------------------ fixture and verification

use pipeline_runtime::event::Rejected;
use pipeline_runtime::profile::Profile;
use pipeline_runtime::search::SearchIndex;

/// Rows that break §3 in ways the generator's broken rows may not cover, appended to the
/// generated file: a non-UTF-8 brand, an infinite price, NaN, a short row, a CRLF row that
/// is fine, and blank lines (skipped, counted nowhere).
const EXTRA_ROWS: &[&[u8]] = &[
    b"2019-11-30 10:00:00 UTC,view,1001,,,br\xffnd,1.00,777000001,sx\n",
    b"2019-11-30 10:00:01 UTC,purchase,1002,,,,inf,777000002,sx\n",
    b"2019-11-30 10:00:02 UTC,purchase,1003,,,,NaN,777000003,sx\n",
    b"2019-11-30 10:00:03 UTC,cart,1004,,,,2.50\n",
    b"\n",
    b"2019-11-30 10:00:04 UTC,purchase,1005,,electronics.audio,sony,12.34,777000004,sy\r\n",
    b"2019-11-30T10:00:05Z,view,1006,,,,0,777000004,\n",
    b"2019-11-30 10:00:06 UTC,purchase,1007,,,,-0.01,777000005,sz\n",
];

/// A generated REES46 file with broken rows of every kind; returns its path.
pub fn write_fixture(dir: &std::path::Path, events: u64, seed: u64) -> Result<std::path::PathBuf> {
    use std::io::Write;
    let path = dir.join(format!("events-{events}-{seed}.csv"));
    let config = pipeline_runtime::generator::GeneratorConfig {
        events,
        seed,
        bad_rows_per_million: 2_000,
        shape: pipeline_runtime::generator::Shape::Tidy,
    };
    pipeline_runtime::generator::generate_file(config, &path)?;
    let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
    for row in EXTRA_ROWS {
        file.write_all(row)?;
    }
    Ok(path)
}

/// What the embedded `run` makes of a file: the reference the distributed roles must match.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Sorted by user_id.
    pub profiles: Vec<Profile>,
    /// Accepted events as JSON, sorted (a multiset: duplicate rows are real events).
    pub events: Vec<String>,
    /// Sorted by line.
    pub rejected: Vec<Rejected>,
}

/// Runs the embedded job on `csv` into `out` and reads back what it wrote.
pub fn expected_from_embedded_run(
    csv: &std::path::Path,
    out: &std::path::Path,
) -> Result<Expected> {
    let summary =
        pipeline_runtime::embedded::run(&pipeline_runtime::embedded::RunOptions::new(csv, out))?;
    let mut profiles = pipeline_runtime::report::read_profiles(out)?;
    profiles.sort_by_key(|p| p.user_id);
    let mut events = Vec::new();
    for file in pipeline_runtime::report::parquet_files(&out.join("events"))? {
        for batch in pipeline_runtime::parquet::read_parquet_file(&file)? {
            events.extend(
                pipeline_runtime::parquet::batch_to_events(&batch)?
                    .iter()
                    .map(json),
            );
        }
    }
    events.sort();
    let mut rejected: Vec<Rejected> = std::fs::read_to_string(out.join("rejected.jsonl"))?
        .lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?;
    rejected.sort_by_key(|r| r.line);
    anyhow::ensure!(
        events.len() as u64 == summary.events_accepted,
        "embedded run: events files disagree with its summary"
    );
    anyhow::ensure!(
        rejected.len() as u64 == summary.events_rejected,
        "embedded run: rejected.jsonl disagrees with its summary"
    );
    anyhow::ensure!(
        profiles.len() as u64 == summary.profiles,
        "embedded run: profiles disagree with its summary"
    );
    Ok(Expected {
        profiles,
        events,
        rejected,
    })
}

fn json(event: &pipeline_runtime::event::Event) -> String {
    String::from_utf8_lossy(&event.to_json()).into_owned()
}

/// First difference of two sorted lists, for readable failures.
fn first_difference<T: std::fmt::Debug + PartialEq>(
    what: &str,
    actual: &[T],
    expected: &[T],
) -> Result<()> {
    if actual == expected {
        return Ok(());
    }
    let at = actual.iter().zip(expected).position(|(a, e)| a != e);
    match at {
        Some(i) => bail!(
            "{what}: {} actual vs {} expected; first difference at #{i}:\n  actual:   {:?}\n  expected: {:?}",
            actual.len(),
            expected.len(),
            actual[i],
            expected[i]
        ),
        None => bail!("{what}: {} actual vs {} expected (one is a prefix of the other)", actual.len(), expected.len()),
    }
}

/// Checks everything the distributed roles wrote against the embedded run's result:
/// [`verify_sinks`], the dead letters equal to the rejected rows, and the events topic
/// holding each accepted event exactly once.
pub async fn verify_distributed(
    kafka: &KafkaSettings,
    store: &ObjectStore,
    search: &SearchIndex,
    expected: &Expected,
) -> Result<()> {
    verify_sinks(store, search, expected).await?;
    verify_topics(kafka, expected).await
}

/// Every profile in the index and in the profile snapshots equal to the embedded run's,
/// and each accepted event exactly once in the lake, in the object of its UTC day.
pub async fn verify_sinks(
    store: &ObjectStore,
    search: &SearchIndex,
    expected: &Expected,
) -> Result<()> {
    search.refresh().await?;
    let mut indexed = search.read_all().await?;
    indexed.sort_by_key(|p| p.user_id);
    first_difference("profiles in the search index", &indexed, &expected.profiles)?;

    let mut snapshot = Vec::new();
    for object in store.list("profiles/").await? {
        let bytes = store
            .get(&object.key)
            .await?
            .context("listed object vanished")?;
        snapshot.extend(pipeline_runtime::parquet::decode_profiles(bytes)?);
    }
    snapshot.sort_by_key(|p| p.user_id);
    first_difference(
        "profiles in the Parquet snapshot",
        &snapshot,
        &expected.profiles,
    )?;

    let mut lake = Vec::new();
    for object in store.list("events/").await? {
        let bytes = store
            .get(&object.key)
            .await?
            .context("listed object vanished")?;
        let events = pipeline_runtime::parquet::decode_events(bytes)?;
        // Each object holds one UTC day, the one its key names.
        for event in &events {
            let day = pipeline_runtime::parquet::events_partition(event.utc_day());
            anyhow::ensure!(
                object.key.starts_with(&format!("{day}/")),
                "{} holds an event of {day}",
                object.key
            );
        }
        lake.extend(events.iter().map(json));
    }
    lake.sort();
    first_difference(
        "events in the lake (each exactly once)",
        &lake,
        &expected.events,
    )
}

/// Checks the events topic holds each accepted event exactly once and the dead-letter
/// topic exactly the rejected rows.
pub async fn verify_topics(kafka: &KafkaSettings, expected: &Expected) -> Result<()> {
    let bootstrap = kafka.bootstrap.clone();
    let events_topic = kafka.events_topic.clone();
    let dlq_topic = kafka.dlq_topic.clone();
    let (topic_events, dead_letters) = tokio::task::spawn_blocking(move || -> Result<_> {
        Ok((
            read_topic(&bootstrap, &events_topic)?,
            read_topic(&bootstrap, &dlq_topic)?,
        ))
    })
    .await??;
    let mut published: Vec<String> = topic_events
        .into_iter()
        .map(|(_, _, _, v)| String::from_utf8_lossy(&v).into_owned())
        .collect();
    published.sort();
    first_difference(
        "events in the events topic (each exactly once)",
        &published,
        &expected.events,
    )?;
    let mut rejected: Vec<Rejected> = dead_letters
        .iter()
        .map(|(_, _, _, v)| serde_json::from_slice(v))
        .collect::<std::result::Result<_, _>>()?;
    // By line, then source: several sources may have rows on the same line.
    let order = |a: &Rejected, b: &Rejected| (a.line, &a.source).cmp(&(b.line, &b.source));
    rejected.sort_by(order);
    let mut expected_rejected = expected.rejected.clone();
    expected_rejected.sort_by(order);
    first_difference("dead letters", &rejected, &expected_rejected)?;
    Ok(())
}

// ------------------------------------------------------------------ child processes

/// `pipeline-runtime ingest --input CSV --partitions N` as a child process with `env` (see
/// [`Endpoints::runtime_env`]), its HTTP server off and its stderr into `log`.
pub fn spawn_ingest(
    binary: &std::path::Path,
    env: &[(String, String)],
    csv: &std::path::Path,
    partitions: i32,
    log: std::fs::File,
) -> Result<std::process::Child> {
    std::process::Command::new(binary)
        .args([
            "ingest",
            "--input",
            &csv.display().to_string(),
            "--partitions",
            &partitions.to_string(),
        ])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env(pipeline_config::env::HTTP_PORT, "0")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting pipeline-runtime ingest")
}

/// The `pipeline-runtime` binary of this workspace, built (or brought up to date) first, so
/// a test never runs a stale binary. The outer `cargo test` holds no build lock while tests
/// run, so this nested build does not wait on it.
pub fn runtime_binary() -> Result<std::path::PathBuf> {
    workspace_binary("pipeline-runtime", "pipeline-runtime")
}

/// The binary `bin` of the workspace package in directory `package` (e.g. `operator`,
/// `datapipeline-operator`), built or brought up to date first, like [`runtime_binary`].
pub fn workspace_binary(package: &str, bin: &str) -> Result<std::path::PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = crate::k8s::repo_root().join(package).join("Cargo.toml");
    let mut command = std::process::Command::new(cargo);
    // `cargo test` gives the test the e2e package's variables (CARGO_MANIFEST_DIR,
    // CARGO_PKG_*...). Build scripts that watch them (ring's) would see them change
    // against a build from a shell and rebuild ring and everything above it.
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("CARGO_PKG_")
            || key_text.starts_with("CARGO_MANIFEST_")
            || key_text == "CARGO_CRATE_NAME"
            || key_text == "CARGO_PRIMARY_PACKAGE"
        {
            command.env_remove(&key);
        }
    }
    let output = command
        .args(["build", "--manifest-path"])
        .arg(&manifest)
        .args(["--bin", bin, "--message-format=json-render-diagnostics"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running cargo build for {bin}"))?;
    anyhow::ensure!(output.status.success(), "building {bin} failed");
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact" && message["target"]["name"] == bin {
            if let Some(exe) = message["executable"].as_str() {
                return Ok(exe.into());
            }
        }
    }
    bail!("cargo did not report the {bin} executable")
}

/// Validity of the certificates a test issues with the operator's generator: from an
/// hour ago (clocks slightly behind) to a day from now.
pub fn test_validity() -> Result<datapipeline_operator::controller::pipeline_ca::Validity> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    Ok(datapipeline_operator::controller::pipeline_ca::Validity {
        not_before: now - 3600,
        not_after: now + 86_400,
    })
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// GET `http://127.0.0.1:<port><path>`: (status, body).
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP response")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of an unlabelled sample `name` in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// PLAINTEXT client settings of `pipeline`'s topics and group on the harness's Kafka.
pub fn kafka_settings(bootstrap: &str, pipeline: &str) -> KafkaSettings {
    let names = pipeline_config::PipelineNames::new(pipeline);
    KafkaSettings {
        bootstrap: bootstrap.to_string(),
        security_protocol: SecurityProtocol::Plaintext,
        sasl: None,
        ca_file: None,
        client_certificate: None,
        events_topic: names.events_topic(),
        dlq_topic: names.dead_letter_topic(),
        consumer_group: names.consumer_group(),
        group_instance_id: None,
    }
}
