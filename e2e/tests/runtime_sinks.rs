//! The runtime's sinks against the real servers: the S3 object store (versitygw), the
//! search index (OpenSearch) and, for what the process role does when the index refuses,
//! Kafka. Start them with `e2e/services.sh up kafka opensearch s3`.
//!
//! What a refusing index does to the process role (see `pipeline_runtime::search`):
//! - a document refused for good (a mapping conflict: 400 `mapper_parsing_exception`) is
//!   dead-lettered to `<pipeline>-events-dlq` and counted, while the other profiles land
//!   and the checkpoint commits;
//! - an index refusing writes for a reason that can pass (a write block: 200 with every
//!   item 403 `cluster_block_exception`; a cluster read-only block: the whole request 403)
//!   keeps every checkpoint from committing and the process unready, naming the refusal in
//!   `/readyz`, for as long as it lasts; once lifted, the profiles land, everything
//!   commits and the process is ready again.
//!
//! 401 (this OpenSearch has no security plugin) and 413 (its body limit is a static 100 MB)
//! are covered by `pipeline_runtime::search`'s unit tests against a local HTTP server.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::runtime::{
    committed_offsets, end_offsets, expected_from_embedded_run, free_port, http_get, metric_value,
    open_bucket, read_topic, runtime_binary, unique_name, wait_for, wait_until_committed,
    write_fixture, Endpoints,
};
use pipeline_runtime::dead_letter::SearchDeadLetter;
use pipeline_runtime::event::{Event, EventType, Rejected};
use pipeline_runtime::metrics::{Metrics, Sink, SinkErrorKind, SinkErrorLabels};
use pipeline_runtime::profile::{Profile, ProfileBook};
use pipeline_runtime::search::{index_mapping, SearchIndex};
use pipeline_runtime::store::Bytes;

#[tokio::test]
async fn s3_store_put_get_list_delete_and_stream() -> anyhow::Result<()> {
    let endpoints = Endpoints::from_env()?;
    let bucket = unique_name("e2e-store");
    let store = open_bucket(&endpoints, &bucket).await?;
    // Opening twice is fine (the bucket exists now).
    let store_again = open_bucket(&endpoints, &bucket).await?;

    assert_eq!(store.get("a/missing").await?, None);
    store.put("a/2", Bytes::from_static(b"two")).await?;
    store.put("a/1", Bytes::from_static(b"one")).await?;
    store
        .put("b/1", Bytes::from(vec![7u8; 3 * 1024 * 1024]))
        .await?;
    store.put("a/1", Bytes::from_static(b"uno")).await?;
    assert_eq!(
        store_again.get("a/1").await?,
        Some(Bytes::from_static(b"uno"))
    );

    let listed: Vec<(String, u64)> = store
        .list("a/")
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    assert_eq!(listed, vec![("a/1".to_string(), 3), ("a/2".to_string(), 3)]);
    let all = store.list("").await?;
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|o| !o.version_tag.is_empty()));

    let mut reader = store.open_reader("b/1").await?;
    let streamed = tokio::task::spawn_blocking(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut buf).map(|_| buf)
    })
    .await??;
    assert_eq!(streamed.len(), 3 * 1024 * 1024);
    assert!(streamed.iter().all(|&b| b == 7));

    store.delete("a/1").await?;
    store.delete("a/1").await?;
    assert_eq!(store.get("a/1").await?, None);
    let keys: Vec<String> = store.list("a/").await?.into_iter().map(|o| o.key).collect();
    assert_eq!(keys, vec!["a/2".to_string()]);
    Ok(())
}

fn event(user_id: u64, event_type: EventType, price_cents: i64, brand: Option<&str>) -> Event {
    Event {
        event_time: 1_569_888_000_000_000 + (user_id % 100_000) as i64 * 1_000_000,
        event_type,
        product_id: 100 + user_id % 1000,
        category_id: None,
        category_code: Some("electronics.smartphone".into()),
        brand: brand.map(str::to_string),
        price_cents,
        user_id,
        user_session: Some(format!("s{user_id}")),
    }
}

fn profiles(users: u64) -> Vec<Profile> {
    let mut book = ProfileBook::new();
    for user in 1..=users {
        book.apply(&event(user, EventType::View, 1999, Some("apple")))
            .expect("small sums fit");
        if user % 3 == 0 {
            book.apply(&event(user, EventType::Purchase, 1999 + user as i64, None))
                .expect("small sums fit");
        }
    }
    // A user id above i64::MAX: the index maps user_id as unsigned_long.
    book.apply(&event(u64::MAX - 1, EventType::Cart, 5, None))
        .expect("small sums fit");
    book.profiles()
}

#[tokio::test]
async fn opensearch_index_bulk_get_count_and_read_all() -> anyhow::Result<()> {
    let endpoints = Endpoints::from_env()?;
    let index = unique_name("e2e-profiles");
    let search = SearchIndex::connect(&endpoints.search(&index), None)?;
    search.ensure_index().await?;
    search.ensure_index().await?;

    let expected = profiles(12_345);
    let report = search.index_profiles(&expected).await?;
    assert_eq!(report.indexed, expected.len());
    assert_eq!(report.dead_letters, vec![]);
    // Indexing again overwrites by _id: still one document per user.
    search.index_profiles(&expected[..100]).await?;
    search.refresh().await?;
    assert_eq!(search.count().await?, expected.len() as u64);

    let third = expected.iter().find(|p| p.user_id == 3).cloned();
    assert_eq!(search.get(3).await?, third);
    assert_eq!(search.get(999_999_999).await?, None);
    let big = expected.iter().find(|p| p.user_id == u64::MAX - 1).cloned();
    assert_eq!(search.get(u64::MAX - 1).await?, big);

    let mut all = search.read_all().await?;
    all.sort_by_key(|p| p.user_id);
    assert_eq!(all, expected);
    Ok(())
}

/// The profiles mapping with `favorite_brand` as a number: a profile with a brand is
/// refused (400 `mapper_parsing_exception`), one without is indexed. This is how an index
/// whose mapping was changed behind the pipeline's back (a template, a hand edit) answers.
fn conflicting_mapping() -> serde_json::Value {
    let mut mapping = index_mapping();
    mapping["mappings"]["properties"]["favorite_brand"] = serde_json::json!({"type": "long"});
    mapping
}

#[tokio::test]
async fn opensearch_refused_documents_are_dead_letters_and_the_others_land() -> anyhow::Result<()> {
    let endpoints = Endpoints::from_env()?;
    let index = unique_name("e2e-refused");
    let status = raw_request(
        &endpoints.opensearch_url,
        elasticsearch::http::Method::Put,
        &format!("/{index}"),
        Some(conflicting_mapping().to_string()),
    )
    .await?;
    assert_eq!(status, 200);
    let metrics = Metrics::new("process");
    let search = SearchIndex::connect(&endpoints.search(&index), Some(metrics.clone()))?;
    search.ensure_index().await?;

    // Users 1..=30 have the brand "apple"; u64::MAX - 1 has none.
    let all = profiles(30);
    assert_eq!(all.len(), 31);
    let report = search.index_profiles(&all).await?;
    assert_eq!(report.indexed, 1);
    let mut refused = report.dead_letters.clone();
    refused.sort_by_key(|d| d.user_id);
    assert_eq!(
        refused.iter().map(|d| d.user_id).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<u64>>()
    );
    for d in &refused {
        assert_eq!(d.refusal.status, 400, "{d:?}");
        assert_eq!(d.refusal.error_type, "mapper_parsing_exception", "{d:?}");
        let expected_start = format!(
            "failed to parse field [favorite_brand] of type [long] in document with id '{}'",
            d.user_id
        );
        assert!(d.refusal.reason.starts_with(&expected_start), "{d:?}");
    }
    let count = |kind| {
        metrics
            .sink_errors
            .get_or_create(&SinkErrorLabels {
                sink: Sink::Search,
                kind,
            })
            .get()
    };
    assert_eq!(count(SinkErrorKind::Rejected), 30);
    // Refused documents are never resent, and never counted as indexed.
    assert_eq!(count(SinkErrorKind::Retried), 0);
    assert_eq!(metrics.profiles_indexed.get(), 1);
    search.refresh().await?;
    assert_eq!(search.count().await?, 1);
    let unbranded = all.iter().find(|p| p.user_id == u64::MAX - 1).cloned();
    assert_eq!(search.get(u64::MAX - 1).await?, unbranded);
    Ok(())
}

#[tokio::test]
async fn opensearch_unreachable_is_a_retryable_error() -> anyhow::Result<()> {
    let mut settings = Endpoints::from_env()?.search("whatever");
    // Nothing listens on port 9 (discard) here.
    settings.url = "http://127.0.0.1:9".into();
    let search = SearchIndex::connect(&settings, None)?;
    let err = search.count().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    Ok(())
}

// ------------------------------------------------------------ the process role

const PARTITIONS: i32 = 2;

/// A `pipeline-runtime process` child, killed when the test ends, whatever happened.
struct Processor {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Drop for Processor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Processor {
    fn start(endpoints: &Endpoints, pipeline: &str) -> Result<Self> {
        let binary = runtime_binary()?;
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!("{pipeline}-process.log"));
        let child = Command::new(&binary)
            .args(["process", "--checkpoint-interval-ms", "200"])
            .envs(endpoints.runtime_env(pipeline, pipeline))
            .env(pipeline_config::env::HTTP_PORT, port.to_string())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting pipeline-runtime process")?;
        Ok(Self { child, port, log })
    }

    /// Waits until `/readyz` answers something `accept` takes (the status and body), failing
    /// at once if the processor exited.
    async fn wait_readyz(
        &mut self,
        what: &str,
        accept: impl Fn(u16, &str) -> bool,
    ) -> Result<String> {
        let port = self.port;
        let log = self.log.clone();
        let child = &mut self.child;
        wait_for(what, Duration::from_secs(240), || {
            let exited = child.try_wait();
            let accept = &accept;
            async move {
                if let Some(status) = exited? {
                    anyhow::bail!("the processor exited with {status}");
                }
                let Ok((status, body)) = http_get(port, "/readyz").await else {
                    return Ok(None); // not listening yet
                };
                Ok(accept(status, &body).then_some(body))
            }
        })
        .await
        .with_context(|| format!("process log: {}", log.display()))
    }

    async fn metric(&self, name: &str) -> Result<f64> {
        let (_, text) = http_get(self.port, "/metrics").await?;
        Ok(metric_value(&text, name).unwrap_or(0.0))
    }
}

const DEAD_LETTERS: &str = "datapipeline_process_dead_letters_total{stage=\"search\"}";
const SEARCH_REJECTED: &str =
    "datapipeline_process_sink_errors_total{sink=\"search\",kind=\"rejected\"}";
const SEARCH_FAILED: &str =
    "datapipeline_process_sink_errors_total{sink=\"search\",kind=\"failed\"}";
const CHECKPOINT_FAILURES: &str = "datapipeline_process_checkpoint_failures_total";

/// Publishes `csv` to the pipeline's topics with the ingest role; returns the events
/// topic's end offsets.
async fn ingest(
    endpoints: &Endpoints,
    pipeline: &str,
    csv: &std::path::Path,
) -> Result<BTreeMap<i32, i64>> {
    endpoints.ingest_file(pipeline, csv, PARTITIONS).await?;
    let kafka = endpoints.kafka(pipeline);
    end_offsets(&kafka.bootstrap, &kafka.events_topic, PARTITIONS)
}

/// Users 1..=8: users 2 and 5 have one event each, with the brand "acme"; the others
/// three events each (view, cart, purchase) without a brand.
fn branded_fixture(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let mut csv = String::from(
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n",
    );
    for user in 1..=8u64 {
        if user == 2 || user == 5 {
            csv.push_str(&format!(
                "2019-10-01 10:00:0{user} UTC,view,{},,electronics.audio,acme,5.00,{user},s{user}\n",
                100 + user
            ));
        } else {
            for (second, kind) in ["view", "cart", "purchase"].iter().enumerate() {
                csv.push_str(&format!(
                    "2019-10-01 11:0{user}:0{second} UTC,{kind},{},,,,12.34,{user},s{user}\n",
                    200 + user
                ));
            }
        }
    }
    let path = dir.join("branded.csv");
    std::fs::write(&path, csv)?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_profile_is_dead_lettered_and_counted_while_the_rest_lands_and_commits(
) -> Result<()> {
    e2e::k8s::init_logging();
    let endpoints = Endpoints::from_env()?;
    let dir = tempfile::tempdir()?;
    let csv = branded_fixture(dir.path())?;
    let expected = expected_from_embedded_run(&csv, &dir.path().join("embedded"))?;
    let branded: Vec<u64> = expected
        .profiles
        .iter()
        .filter(|p| p.favorite_brand.is_some())
        .map(|p| p.user_id)
        .collect();
    assert_eq!(branded, vec![2, 5]);
    assert_eq!(expected.profiles.len(), 8);

    let pipeline = unique_name("e2e-dead-letter");
    let ends = ingest(&endpoints, &pipeline, &csv).await?;
    let kafka = endpoints.kafka(&pipeline);
    assert_eq!(
        read_topic(&kafka.bootstrap, &kafka.events_topic)?.len(),
        2 + 6 * 3
    );
    let index = format!("{pipeline}-profiles");
    let status = raw_request(
        &endpoints.opensearch_url,
        elasticsearch::http::Method::Put,
        &format!("/{index}"),
        Some(conflicting_mapping().to_string()),
    )
    .await?;
    assert_eq!(status, 200);

    let mut processor = Processor::start(&endpoints, &pipeline)?;
    wait_until_committed(&kafka, PARTITIONS, &ends, Duration::from_secs(240))
        .await
        .with_context(|| format!("process log: {}", processor.log.display()))?;
    processor
        .wait_readyz("/readyz to answer 200", |status, _| status == 200)
        .await?;
    // Each branded user has one event, so one checkpoint indexes (and dead-letters) it.
    assert_eq!(processor.metric(DEAD_LETTERS).await?, 2.0);
    assert_eq!(processor.metric(SEARCH_REJECTED).await?, 2.0);
    assert_eq!(processor.metric(SEARCH_FAILED).await?, 0.0);
    assert_eq!(processor.metric(CHECKPOINT_FAILURES).await?, 0.0);

    // The dead letters: one record per refused profile, keyed by user id, naming the
    // partition and the checkpoint's range that holds the user's event.
    let (bootstrap, dlq, events_topic) = (
        kafka.bootstrap.clone(),
        kafka.dlq_topic.clone(),
        kafka.events_topic.clone(),
    );
    let (records, events) = tokio::task::spawn_blocking(move || -> Result<_> {
        Ok((
            read_topic(&bootstrap, &dlq)?,
            read_topic(&bootstrap, &events_topic)?,
        ))
    })
    .await??;
    let mut letters: Vec<(Option<Vec<u8>>, SearchDeadLetter)> = records
        .into_iter()
        .map(|(_, _, key, value)| Ok((key, serde_json::from_slice(&value)?)))
        .collect::<Result<_>>()?;
    letters.sort_by_key(|(_, l)| l.user_id);
    assert_eq!(letters.len(), 2, "{letters:?}");
    for (user_id, (key, letter)) in [2u64, 5].into_iter().zip(&letters) {
        let (partition, offset) = events
            .iter()
            .find(|(_, _, key, _)| key.as_deref() == Some(user_id.to_string().as_bytes()))
            .map(|(p, o, _, _)| (*p, *o))
            .context("the user's event is in the events topic")?;
        assert_eq!(key.as_deref(), Some(user_id.to_string().as_bytes()));
        assert_eq!(letter.user_id, user_id);
        assert_eq!(letter.stage, "search");
        assert_eq!(letter.kind, "search_refused");
        assert_eq!(letter.source, index);
        assert_eq!(letter.partition, partition);
        assert!(
            letter.batch_start <= offset && offset < letter.batch_end,
            "{letter:?} should cover offset {offset}"
        );
        assert_eq!(letter.status, 400);
        assert_eq!(letter.error_type, "mapper_parsing_exception");
        let reason_start = format!(
            "HTTP 400 mapper_parsing_exception: failed to parse field [favorite_brand] of type [long] in document with id '{user_id}'"
        );
        assert!(letter.reason.starts_with(&reason_start), "{letter:?}");
        let profile = expected.profiles.iter().find(|p| p.user_id == user_id);
        assert_eq!(letter.document.as_ref(), profile);
    }

    // The others landed in the index; the snapshot (and the lake) hold everyone.
    let search = SearchIndex::connect(&endpoints.search(&index), None)?;
    search.refresh().await?;
    let mut indexed = search.read_all().await?;
    indexed.sort_by_key(|p| p.user_id);
    let unbranded: Vec<Profile> = expected
        .profiles
        .iter()
        .filter(|p| p.favorite_brand.is_none())
        .cloned()
        .collect();
    assert_eq!(indexed, unbranded);
    let store = open_bucket(&endpoints, &pipeline).await?;
    let mut snapshot = Vec::new();
    for object in store.list("profiles/").await? {
        let bytes = store.get(&object.key).await?.context("listed object")?;
        snapshot.extend(pipeline_runtime::parquet::decode_profiles(bytes)?);
    }
    snapshot.sort_by_key(|p| p.user_id);
    assert_eq!(snapshot, expected.profiles);
    Ok(())
}

/// Sets (`Some`) or removes (`None`) a setting of an index (`/<index>/_settings`) or of the
/// cluster (`/_cluster/settings`, transient).
async fn put_setting(
    endpoints: &Endpoints,
    path: &str,
    setting: &str,
    value: Option<bool>,
) -> Result<()> {
    let value = value.map_or(serde_json::Value::Null, serde_json::Value::Bool);
    let body = if path == "/_cluster/settings" {
        serde_json::json!({"transient": {setting: value}})
    } else {
        serde_json::json!({ setting: value })
    };
    let status = raw_request(
        &endpoints.opensearch_url,
        elasticsearch::http::Method::Put,
        path,
        Some(body.to_string()),
    )
    .await?;
    anyhow::ensure!(status == 200, "PUT {path} {body}: HTTP {status}");
    Ok(())
}

/// Lifts the cluster read-only block when the test ends, whatever happened: it would
/// refuse every other test's writes.
struct ClusterBlock(String);

impl Drop for ClusterBlock {
    fn drop(&mut self) {
        let _ = Command::new("curl")
            .args(["-sS", "-X", "PUT", "-H", "Content-Type: application/json"])
            .arg(format!("{}/_cluster/settings", self.0))
            .args(["-d", r#"{"transient":{"cluster.blocks.read_only":null}}"#])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_index_keeps_checkpoints_uncommitted_and_the_process_unready_until_it_accepts(
) -> Result<()> {
    e2e::k8s::init_logging();
    let endpoints = Endpoints::from_env()?;
    let dir = tempfile::tempdir()?;
    let csv = write_fixture(dir.path(), 3_000, 57)?;
    let expected = expected_from_embedded_run(&csv, &dir.path().join("embedded"))?;
    let pipeline = unique_name("e2e-refusing");
    let ends = ingest(&endpoints, &pipeline, &csv).await?;
    assert!(ends.values().all(|&end| end > 0), "{ends:?}");
    let kafka = endpoints.kafka(&pipeline);
    let index = format!("{pipeline}-profiles");
    let search = SearchIndex::connect(&endpoints.search(&index), None)?;
    search.ensure_index().await?;
    let index_settings = format!("/{index}/_settings");
    // A write block: OpenSearch answers 200 with every item 403 cluster_block_exception.
    put_setting(
        &endpoints,
        &index_settings,
        "index.blocks.write",
        Some(true),
    )
    .await?;

    let mut processor = Processor::start(&endpoints, &pipeline)?;
    let body = processor
        .wait_readyz("/readyz to name the write block", |status, body| {
            status == 503 && body.contains("index write (api)")
        })
        .await?;
    println!("/readyz: {body}");
    assert!(
        body.starts_with("checkpoints failing, retried until they succeed: partition "),
        "{body}"
    );
    assert!(
        body.contains(": sink search: search: bulk: ")
            && body.contains("HTTP 403 cluster_block_exception: index [")
            && body.contains("] blocked by: [FORBIDDEN/8/index write (api)];"),
        "{body}"
    );
    // The checkpoints keep being retried (each try gives up its bulk request after a few
    // attempts) and the process stays alive, without committing anything: six failed
    // tries over two partitions are at least three of one checkpoint.
    let port = processor.port;
    wait_for(
        "six failed tries of the checkpoints",
        Duration::from_secs(240),
        || async move {
            let (_, text) = http_get(port, "/metrics").await?;
            Ok((metric_value(&text, CHECKPOINT_FAILURES).unwrap_or(0.0) >= 6.0).then_some(()))
        },
    )
    .await?;
    assert!(
        processor.child.try_wait()?.is_none(),
        "the processor keeps running"
    );
    let (status, _) = http_get(port, "/healthz").await?;
    assert_eq!(status, 200, "a process retrying its sinks is alive");
    let committed = committed_offsets(
        &kafka.bootstrap,
        &kafka.consumer_group,
        &kafka.events_topic,
        PARTITIONS,
    )?;
    assert_eq!(
        committed,
        BTreeMap::new(),
        "nothing is committed past the index"
    );

    // A refusal of the whole request: a cluster read-only block on top (HTTP 403 for the
    // request). Index settings cannot change under it, so the index block stays until it
    // is lifted; at no point can a write get through before both are.
    let _lift = ClusterBlock(endpoints.opensearch_url.clone());
    put_setting(
        &endpoints,
        "/_cluster/settings",
        "cluster.blocks.read_only",
        Some(true),
    )
    .await?;
    let body = processor
        .wait_readyz("/readyz to name the cluster block", |status, body| {
            status == 503 && body.contains("cluster read-only")
        })
        .await?;
    println!("/readyz: {body}");
    assert!(
        body.contains(": sink search: search: bulk: ")
            && body.contains(
                "HTTP 403 cluster_block_exception: blocked by: [FORBIDDEN/6/cluster read-only (api)];"
            ),
        "{body}"
    );
    let committed = committed_offsets(
        &kafka.bootstrap,
        &kafka.consumer_group,
        &kafka.events_topic,
        PARTITIONS,
    )?;
    assert_eq!(
        committed,
        BTreeMap::new(),
        "nothing is committed past the index"
    );
    search.refresh().await?;
    assert_eq!(search.count().await?, 0);

    // Lifted: the retried checkpoints go through, everything commits, ready again.
    put_setting(
        &endpoints,
        "/_cluster/settings",
        "cluster.blocks.read_only",
        None,
    )
    .await?;
    put_setting(&endpoints, &index_settings, "index.blocks.write", None).await?;
    processor
        .wait_readyz("/readyz to answer 200 again", |status, _| status == 200)
        .await?;
    wait_until_committed(&kafka, PARTITIONS, &ends, Duration::from_secs(240)).await?;
    search.refresh().await?;
    let mut indexed = search.read_all().await?;
    indexed.sort_by_key(|p| p.user_id);
    assert_eq!(indexed, expected.profiles);
    assert_eq!(processor.metric(DEAD_LETTERS).await?, 0.0);
    // The dead-letter topic holds the ingest's rejected rows and nothing else.
    let (bootstrap, dlq) = (kafka.bootstrap.clone(), kafka.dlq_topic.clone());
    let records = tokio::task::spawn_blocking(move || read_topic(&bootstrap, &dlq)).await??;
    let rows: Vec<Rejected> = records
        .iter()
        .map(|(_, _, _, v)| serde_json::from_slice(v))
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(rows.len(), expected.rejected.len());
    Ok(())
}

/// A raw request through the elasticsearch crate's transport; returns the status.
async fn raw_request(
    base: &str,
    method: elasticsearch::http::Method,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<u16> {
    use elasticsearch::http::headers::HeaderMap;
    use elasticsearch::http::transport::Transport;
    let transport = Transport::single_node(base)?;
    let response = transport
        .send::<String, ()>(method, path, HeaderMap::new(), None, body, None)
        .await?;
    Ok(response.status_code().as_u16())
}
