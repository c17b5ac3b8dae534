//! The runtime's sinks against the real servers: the S3 object store (versitygw) and the
//! search index (OpenSearch). Start them with `e2e/services.sh up s3 opensearch`.

use e2e::runtime::{open_bucket, unique_name, Endpoints};
use pipeline_runtime::event::{Event, EventType};
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
    assert_eq!(report.rejected, 0);
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

#[tokio::test]
async fn opensearch_refused_documents_are_counted_and_not_retried() -> anyhow::Result<()> {
    let endpoints = Endpoints::from_env()?;
    let index = unique_name("e2e-refused");
    // An index whose mapping disagrees with the profiles: favorite_brand as a number. Every
    // profile with a brand is refused with a 400 (mapper_parsing_exception); profiles
    // without one are indexed.
    let mut mapping = index_mapping();
    mapping["mappings"]["properties"]["favorite_brand"] = serde_json::json!({"type": "long"});
    let status = raw_request(
        &endpoints.opensearch_url,
        elasticsearch::http::Method::Put,
        &format!("/{index}"),
        Some(mapping.to_string()),
    )
    .await?;
    assert_eq!(status, 200);
    let metrics = Metrics::new("process");
    let search = SearchIndex::connect(&endpoints.search(&index), Some(metrics.clone()))?;
    search.ensure_index().await?;

    let all = profiles(30);
    let with_brand = all.iter().filter(|p| p.favorite_brand.is_some()).count();
    assert_eq!(with_brand, 30);
    let report = search.index_profiles(&all).await?;
    assert_eq!(report.rejected, with_brand);
    assert_eq!(report.indexed, all.len() - with_brand);
    let count = |kind| {
        metrics
            .sink_errors
            .get_or_create(&SinkErrorLabels {
                sink: Sink::Search,
                kind,
            })
            .get()
    };
    assert_eq!(count(SinkErrorKind::Rejected), with_brand as u64);
    // Refused documents are never retried.
    assert_eq!(count(SinkErrorKind::Retried), 0);
    search.refresh().await?;
    assert_eq!(search.count().await?, (all.len() - with_brand) as u64);
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
