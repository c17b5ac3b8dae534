//! Customer profiles in Elasticsearch or OpenSearch: index creation with an explicit
//! mapping (the §4 field names), bulk indexing with `_id = user_id` (idempotent, so a
//! replayed checkpoint overwrites instead of duplicating), and reading profiles back (by
//! id, count, all with `search_after`). Only APIs both Elasticsearch 8 and OpenSearch 2
//! serve. Retry policy as in Vector's elasticsearch sink: 429 and 5xx are retried with
//! backoff and only the failed items are resent; other 4xx are never retried and are
//! counted as sink errors. The body builders and response classification are pure;
//! [`SearchIndex`] does network I/O.

use std::time::Duration;

use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{Method, Url};
use elasticsearch::Elasticsearch;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::SearchSettings;
use crate::error::{Error, Result};
use crate::metrics::{Metrics, Sink, SinkErrorKind};
use crate::profile::Profile;
use crate::retry::Backoff;

/// Documents per bulk request (about 2-3 MB of profiles).
const BULK_DOCS: usize = 5_000;
/// Bulk requests in flight at once, across every partition's checkpoint: a search node
/// indexes with one thread per core, so more concurrent requests only queue there (and
/// cost it CPU in contention) while holding more documents in memory here.
const BULK_CONCURRENCY: usize = 2;
/// Attempts per bulk request before the checkpoint gives up (about a minute of backoff).
const BULK_ATTEMPTS: u32 = 10;
/// Hits per page when reading every profile back.
const PAGE_SIZE: usize = 5_000;

/// The index mapping: every §4 field with an explicit type, unknown fields refused.
/// Money is `scaled_float` with factor 100, i.e. stored as exact cents.
pub fn index_mapping() -> Value {
    let count = json!({"type": "long"});
    let cents = json!({"type": "scaled_float", "scaling_factor": 100});
    let ratio = json!({"type": "double"});
    let time = json!({"type": "date", "format": "strict_date_optional_time||epoch_millis"});
    let keyword = json!({"type": "keyword"});
    json!({
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "user_id": {"type": "unsigned_long"},
                "total_events": count,
                "views": count,
                "carts": count,
                "removals": count,
                "purchases": count,
                "revenue": cents,
                "avg_order_value": cents,
                "max_purchase_price": cents,
                "distinct_sessions": count,
                "distinct_products": count,
                "active_days": count,
                "first_seen": time,
                "last_seen": time,
                "favorite_category": keyword,
                "favorite_brand": keyword,
                "conversion_rate": ratio,
                "cart_to_purchase_rate": ratio,
                "segment": keyword,
            }
        }
    })
}

/// What to do with a response status (of a whole request or of one bulk item).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Done,
    /// Throttled or a server-side failure: the same request can succeed later.
    Retry,
    /// The server refused this document; resending it will not help.
    Reject,
}

pub fn disposition(status: u16) -> Disposition {
    match status {
        200..=299 => Disposition::Done,
        429 | 500..=599 => Disposition::Retry,
        _ => Disposition::Reject,
    }
}

/// The NDJSON body of a bulk request indexing `docs` (`(user_id, JSON document)`).
pub fn bulk_body<'a>(docs: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut body = Vec::new();
    let mut ids = itoa::Buffer::new();
    for (user_id, doc) in docs {
        body.extend_from_slice(b"{\"index\":{\"_id\":\"");
        body.extend_from_slice(ids.format(user_id).as_bytes());
        body.extend_from_slice(b"\"}}\n");
        body.extend_from_slice(doc);
        body.push(b'\n');
    }
    body
}

/// The per-item result of a bulk response, by position in the request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BulkOutcome {
    pub done: usize,
    /// Positions to resend.
    pub retry: Vec<usize>,
    /// Positions refused for good, with status and reason.
    pub rejected: Vec<(usize, u16, String)>,
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

/// Classifies a 200 bulk response of `sent` items. A response that does not list exactly
/// one item per document cannot be trusted item by item: everything is resent (indexing
/// by `_id` is idempotent).
pub fn classify_bulk_response(body: &[u8], sent: usize) -> BulkOutcome {
    let parsed: Option<BulkResponse> = serde_json::from_slice(body).ok();
    let Some(response) = parsed.filter(|r| r.items.len() == sent) else {
        return BulkOutcome {
            retry: (0..sent).collect(),
            ..BulkOutcome::default()
        };
    };
    let mut outcome = BulkOutcome::default();
    for (position, item) in response.items.iter().enumerate() {
        let Some(result) = item.values().next() else {
            outcome.retry.push(position);
            continue;
        };
        match disposition(result.status) {
            Disposition::Done => outcome.done += 1,
            Disposition::Retry => outcome.retry.push(position),
            Disposition::Reject => {
                let reason = result
                    .error
                    .as_ref()
                    .map(error_summary)
                    .unwrap_or_else(|| "refused".to_string());
                outcome.rejected.push((position, result.status, reason));
            }
        }
    }
    outcome
}

/// `type: reason` of an Elasticsearch error object.
fn error_summary(error: &Value) -> String {
    let kind = error.get("type").and_then(Value::as_str).unwrap_or("error");
    let reason = error.get("reason").and_then(Value::as_str).unwrap_or("");
    format!("{kind}: {reason}")
}

/// Totals of one [`SearchIndex::index_profiles`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexReport {
    pub indexed: usize,
    pub rejected: usize,
}

/// The profiles index of one pipeline.
#[derive(Clone)]
pub struct SearchIndex {
    client: Elasticsearch,
    index: String,
    metrics: Option<Metrics>,
    /// Shared by clones: bounds the bulk requests of all concurrent checkpoints.
    bulk_permits: std::sync::Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex")
            .field("index", &self.index)
            .finish()
    }
}

impl SearchIndex {
    /// Builds the client (no request is made).
    pub fn connect(settings: &SearchSettings, metrics: Option<Metrics>) -> Result<Self> {
        let url = Url::parse(&settings.url).map_err(|e| Error::Config {
            name: pipeline_config::env::SEARCH_URL.into(),
            reason: format!("{}: {e}", settings.url),
        })?;
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .disable_proxy()
            .timeout(Duration::from_secs(60));
        if let Some((user, password)) = &settings.credentials {
            builder = builder.auth(Credentials::Basic(
                user.clone(),
                password.expose().to_string(),
            ));
        }
        if let Some(ca) = &settings.ca_file {
            let pem = std::fs::read(ca).map_err(|e| Error::Config {
                name: pipeline_config::env::SEARCH_CA_FILE.into(),
                reason: format!("cannot read {}: {e}", ca.display()),
            })?;
            let cert = Certificate::from_pem(&pem).map_err(|e| Error::Config {
                name: pipeline_config::env::SEARCH_CA_FILE.into(),
                reason: format!("{} is not a PEM certificate: {e}", ca.display()),
            })?;
            builder = builder.cert_validation(CertificateValidation::Full(cert));
        }
        let transport = builder.build().map_err(|e| Error::Config {
            name: pipeline_config::env::SEARCH_URL.into(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            client: Elasticsearch::new(transport),
            index: settings.index.clone(),
            metrics,
            bulk_permits: std::sync::Arc::new(tokio::sync::Semaphore::new(BULK_CONCURRENCY)),
        })
    }

    pub fn index_name(&self) -> &str {
        &self.index
    }

    async fn request(
        &self,
        step: &'static str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        ndjson: bool,
    ) -> Result<(u16, bytes::Bytes)> {
        let mut headers = HeaderMap::new();
        if ndjson {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
        }
        let response = self
            .client
            .send::<Vec<u8>, ()>(method, path, headers, None, body, None)
            .await
            .map_err(|e| Error::Search {
                step,
                retryable: true,
                message: e.to_string(),
            })?;
        let status = response.status_code().as_u16();
        let bytes = response.bytes().await.map_err(|e| Error::Search {
            step,
            retryable: true,
            message: format!("reading the response: {e}"),
        })?;
        Ok((status, bytes))
    }

    /// A non-2xx response as an error.
    fn status_error(step: &'static str, status: u16, body: &[u8]) -> Error {
        let reason = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").map(error_summary))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
        Error::Search {
            step,
            retryable: disposition(status) == Disposition::Retry,
            message: format!("HTTP {status}: {reason}"),
        }
    }

    /// Creates the index with [`index_mapping`] unless it exists. Safe to race: another
    /// member creating it first is fine.
    pub async fn ensure_index(&self) -> Result<()> {
        let path = format!("/{}", self.index);
        let (status, body) = self
            .request("index exists", Method::Head, &path, None, false)
            .await?;
        match status {
            200 => return Ok(()),
            404 => {}
            _ => return Err(Self::status_error("index exists", status, &body)),
        }
        let mapping = serde_json::to_vec(&index_mapping())?;
        let (status, body) = self
            .request("create index", Method::Put, &path, Some(mapping), false)
            .await?;
        if disposition(status) == Disposition::Done {
            tracing::info!(index = %self.index, "created search index");
            return Ok(());
        }
        let already = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/type")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .is_some_and(|t| t == "resource_already_exists_exception");
        if already {
            Ok(())
        } else {
            Err(Self::status_error("create index", status, &body))
        }
    }

    /// Indexes the profiles with `_id = user_id`. Items refused with a 4xx are counted
    /// (and logged) but not retried; 429/5xx items are retried with backoff, resending only
    /// those. Fails, retryably, when retries run out.
    pub async fn index_profiles(&self, profiles: &[Profile]) -> Result<IndexReport> {
        // Chunk starts rather than slices: a closure over borrowed chunks would not be
        // `Send` for every lifetime, which spawned checkpoint tasks need. Documents are
        // serialized per chunk, so only the chunks in flight are held as JSON.
        let reports: Vec<Result<IndexReport>> =
            futures::stream::iter((0..profiles.len()).step_by(BULK_DOCS))
                .map(|start| {
                    self.bulk_with_retries(
                        &profiles[start..(start + BULK_DOCS).min(profiles.len())],
                    )
                })
                .buffer_unordered(BULK_CONCURRENCY)
                .collect()
                .await;
        let mut total = IndexReport::default();
        for report in reports {
            let report = report?;
            total.indexed += report.indexed;
            total.rejected += report.rejected;
        }
        if let Some(m) = &self.metrics {
            m.profiles_indexed.inc_by(total.indexed as u64);
        }
        Ok(total)
    }

    async fn bulk_with_retries(&self, profiles: &[Profile]) -> Result<IndexReport> {
        let mut docs: Vec<(u64, Vec<u8>)> = Vec::with_capacity(profiles.len());
        for profile in profiles {
            docs.push((profile.user_id, serde_json::to_vec(profile)?));
        }
        let path = format!("/{}/_bulk", self.index);
        let mut pending: Vec<usize> = (0..docs.len()).collect();
        let mut report = IndexReport::default();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut attempt = 1;
        loop {
            let body = bulk_body(pending.iter().map(|&i| (docs[i].0, docs[i].1.as_slice())));
            // Closed only if the semaphore is dropped, which cannot happen while `self` lives.
            let permit = self.bulk_permits.acquire().await.ok();
            let response = self
                .request("bulk", Method::Post, &path, Some(body), true)
                .await;
            drop(permit);
            let retry: Vec<usize> = match response {
                Ok((status, body)) => match disposition(status) {
                    Disposition::Done => {
                        let outcome = classify_bulk_response(&body, pending.len());
                        report.indexed += outcome.done;
                        for (position, status, reason) in &outcome.rejected {
                            let user_id = docs[pending[*position]].0;
                            tracing::error!(index = %self.index, user_id, status, reason = %reason, "profile refused by the search index");
                        }
                        report.rejected += outcome.rejected.len();
                        self.count_errors(SinkErrorKind::Rejected, outcome.rejected.len());
                        outcome.retry.iter().map(|&p| pending[p]).collect()
                    }
                    Disposition::Retry => pending.clone(),
                    Disposition::Reject => {
                        let error = Self::status_error("bulk", status, &body);
                        tracing::error!(index = %self.index, documents = pending.len(), error = %error, "bulk request refused");
                        report.rejected += pending.len();
                        self.count_errors(SinkErrorKind::Rejected, pending.len());
                        Vec::new()
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "bulk request failed");
                    pending.clone()
                }
            };
            if retry.is_empty() {
                return Ok(report);
            }
            self.count_errors(SinkErrorKind::Retried, retry.len());
            if attempt >= BULK_ATTEMPTS {
                self.count_errors(SinkErrorKind::Failed, retry.len());
                return Err(Error::Search {
                    step: "bulk",
                    retryable: true,
                    message: format!(
                        "{} documents still failing after {attempt} attempts",
                        retry.len()
                    ),
                });
            }
            pending = retry;
            attempt += 1;
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    fn count_errors(&self, kind: SinkErrorKind, n: usize) {
        if let (Some(m), true) = (&self.metrics, n > 0) {
            m.sink_error(Sink::Search, kind, n as u64);
        }
    }

    /// One profile by user id.
    pub async fn get(&self, user_id: u64) -> Result<Option<Profile>> {
        let path = format!("/{}/_doc/{user_id}", self.index);
        let (status, body) = self.request("get", Method::Get, &path, None, false).await?;
        if status == 404 {
            return Ok(None);
        }
        if disposition(status) != Disposition::Done {
            return Err(Self::status_error("get", status, &body));
        }
        let doc: Value = serde_json::from_slice(&body)?;
        match doc.get("_source") {
            Some(source) => Ok(Some(serde_json::from_value(source.clone())?)),
            None => Ok(None),
        }
    }

    /// Number of documents (as of the last refresh).
    pub async fn count(&self) -> Result<u64> {
        let path = format!("/{}/_count", self.index);
        let (status, body) = self
            .request("count", Method::Get, &path, None, false)
            .await?;
        if disposition(status) != Disposition::Done {
            return Err(Self::status_error("count", status, &body));
        }
        let v: Value = serde_json::from_slice(&body)?;
        v.get("count")
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::Search {
                step: "count",
                retryable: false,
                message: "response without a count".into(),
            })
    }

    /// Makes everything indexed so far visible to searches.
    pub async fn refresh(&self) -> Result<()> {
        let path = format!("/{}/_refresh", self.index);
        let (status, body) = self
            .request("refresh", Method::Post, &path, None, false)
            .await?;
        if disposition(status) != Disposition::Done {
            return Err(Self::status_error("refresh", status, &body));
        }
        Ok(())
    }

    /// Every profile in the index, ordered by user_id (paged with `search_after`, which
    /// both engines serve without a scroll context to clean up).
    pub async fn read_all(&self) -> Result<Vec<Profile>> {
        let path = format!("/{}/_search", self.index);
        let mut profiles = Vec::new();
        let mut after: Option<Value> = None;
        loop {
            let mut query = json!({
                "size": PAGE_SIZE,
                "query": {"match_all": {}},
                "sort": [{"user_id": "asc"}],
                "track_total_hits": false,
            });
            if let Some(after) = &after {
                query["search_after"] = json!([after]);
            }
            let body = serde_json::to_vec(&query)?;
            let (status, response) = self
                .request("search", Method::Post, &path, Some(body), false)
                .await?;
            if disposition(status) != Disposition::Done {
                return Err(Self::status_error("search", status, &response));
            }
            let page = parse_search_page(&response)?;
            let full = page.profiles.len() == PAGE_SIZE;
            profiles.extend(page.profiles);
            match (full, page.last_sort) {
                (true, Some(last)) => after = Some(last),
                _ => return Ok(profiles),
            }
        }
    }
}

/// Every profile of the index the settings name (for `report --from-search`).
pub async fn profiles_from_search(settings: &SearchSettings) -> Result<Vec<Profile>> {
    SearchIndex::connect(settings, None)?.read_all().await
}

/// One page of search hits: the profiles and the sort value of the last hit.
#[derive(Debug)]
pub struct SearchPage {
    pub profiles: Vec<Profile>,
    pub last_sort: Option<Value>,
}

pub fn parse_search_page(body: &[u8]) -> Result<SearchPage> {
    #[derive(Deserialize)]
    struct Response {
        hits: Hits,
    }
    #[derive(Deserialize)]
    struct Hits {
        hits: Vec<Hit>,
    }
    #[derive(Deserialize)]
    struct Hit {
        #[serde(rename = "_source")]
        source: Profile,
        #[serde(default)]
        sort: Vec<Value>,
    }
    let response: Response = serde_json::from_slice(body)?;
    let last_sort = response
        .hits
        .hits
        .last()
        .and_then(|h| h.sort.first().cloned());
    Ok(SearchPage {
        profiles: response.hits.hits.into_iter().map(|h| h.source).collect(),
        last_sort,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_names_every_profile_column() {
        let mapping = index_mapping();
        let props = mapping["mappings"]["properties"].as_object().unwrap();
        let mut names: Vec<&str> = props.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut expected: Vec<&str> = crate::profile::PROFILE_COLUMNS.to_vec();
        expected.sort_unstable();
        assert_eq!(names, expected);
        assert_eq!(mapping["mappings"]["dynamic"], "strict");
    }

    /// The benchmark's search-floor stage creates its index from a copy of the mapping.
    #[test]
    fn benchmark_copy_of_the_mapping_is_current() {
        let dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        );
        let path = dir.join("../e2e/bench/profiles-index.json");
        let copy: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            copy,
            index_mapping(),
            "{} is stale: write index_mapping() into it",
            path.display()
        );
    }

    #[test]
    fn bulk_body_is_ndjson_with_user_id_as_id() {
        let body = bulk_body([(7u64, &b"{\"a\":1}"[..]), (12, b"{}")]);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "{\"index\":{\"_id\":\"7\"}}\n{\"a\":1}\n{\"index\":{\"_id\":\"12\"}}\n{}\n"
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(disposition(200), Disposition::Done);
        assert_eq!(disposition(201), Disposition::Done);
        assert_eq!(disposition(429), Disposition::Retry);
        assert_eq!(disposition(503), Disposition::Retry);
        assert_eq!(disposition(400), Disposition::Reject);
        assert_eq!(disposition(404), Disposition::Reject);
        assert_eq!(disposition(409), Disposition::Reject);
    }

    /// A bulk response as Elasticsearch 8 / OpenSearch 2 return it: one created, one
    /// throttled, one mapping error, one shard failure.
    const MIXED: &str = r#"{"took":3,"errors":true,"items":[
        {"index":{"_index":"p","_id":"1","_version":1,"result":"created","status":201}},
        {"index":{"_index":"p","_id":"2","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution"}}},
        {"index":{"_index":"p","_id":"3","status":400,"error":{"type":"strict_dynamic_mapping_exception","reason":"mapping set to strict"}}},
        {"index":{"_index":"p","_id":"4","status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}},
        {"index":{"_index":"p","_id":"5","_version":2,"result":"updated","status":200}}
    ]}"#;

    #[test]
    fn mixed_bulk_response_retries_only_429_and_5xx_items() {
        let outcome = classify_bulk_response(MIXED.as_bytes(), 5);
        assert_eq!(
            outcome,
            BulkOutcome {
                done: 2,
                retry: vec![1, 3],
                rejected: vec![(
                    2,
                    400,
                    "strict_dynamic_mapping_exception: mapping set to strict".to_string()
                )],
            }
        );
    }

    #[test]
    fn a_response_with_the_wrong_item_count_resends_everything() {
        let outcome = classify_bulk_response(MIXED.as_bytes(), 6);
        assert_eq!(outcome.retry, vec![0, 1, 2, 3, 4, 5]);
        let garbage = classify_bulk_response(b"<html>", 2);
        assert_eq!(garbage.retry, vec![0, 1]);
        assert_eq!(garbage.done, 0);
    }

    #[test]
    fn all_ok_bulk_response() {
        let body = r#"{"took":1,"errors":false,"items":[{"index":{"_id":"1","status":201}},{"create":{"_id":"2","status":200}}]}"#;
        let outcome = classify_bulk_response(body.as_bytes(), 2);
        assert_eq!(
            outcome,
            BulkOutcome {
                done: 2,
                retry: vec![],
                rejected: vec![]
            }
        );
    }

    #[test]
    fn search_page_parses_sources_and_the_last_sort_value() {
        let body = r#"{"hits":{"hits":[
            {"_id":"5","_source":{"user_id":5,"total_events":1,"views":1,"carts":0,"removals":0,"purchases":0,"revenue":0.0,"avg_order_value":0.0,"max_purchase_price":null,"distinct_sessions":1,"distinct_products":1,"active_days":1,"first_seen":"2019-10-01T00:00:00Z","last_seen":"2019-10-01T00:00:00Z","favorite_category":null,"favorite_brand":"x","conversion_rate":0.0,"cart_to_purchase_rate":0.0,"segment":"Casual Visitor"},"sort":[5]}
        ]}}"#;
        let page = parse_search_page(body.as_bytes()).unwrap();
        assert_eq!(page.profiles.len(), 1);
        assert_eq!(page.profiles[0].user_id, 5);
        assert_eq!(page.profiles[0].favorite_brand.as_deref(), Some("x"));
        assert_eq!(page.last_sort, Some(json!(5)));
    }
}
