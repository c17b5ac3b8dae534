//! Customer profiles in Elasticsearch or OpenSearch: index creation with an explicit
//! mapping (the §4 field names), bulk indexing with `_id = user_id` (idempotent, so a
//! replayed checkpoint overwrites instead of duplicating), and reading profiles back (by
//! id, count, all with `search_after`). Only APIs both Elasticsearch 8 and OpenSearch 2
//! serve. The body builders and response classification are pure; [`SearchIndex`] does
//! network I/O.
//!
//! # What a bulk answer means
//!
//! Nothing the index does not hold is ever counted as indexed. A bulk request ends in one
//! of three ways per document:
//! - **indexed**: its item answered 2xx;
//! - **refused for good** ([`ItemDisposition::DeadLetter`]): its item answered 400 with an
//!   error about the document itself (`mapper_parsing_exception`,
//!   `document_parsing_exception`, `strict_dynamic_mapping_exception`,
//!   `illegal_argument_exception`, e.g. a keyword over Lucene's 32766-byte term limit, or
//!   a JSON parse error), or the document alone is too large (413). The document is
//!   returned in [`IndexReport::dead_letters`] with its status and the engine's error type
//!   and reason; the caller records it durably before it commits (the process role writes
//!   it to the dead-letter topic, see [`crate::dead_letter`]);
//! - **not yet**: everything else is retried with backoff, resending only those documents:
//!   a whole request answered anything but 2xx or 413 (401, 403, 404, 408, 409, 429, 5xx,
//!   a 400 about the request rather than one document, a broken connection), and items
//!   answered 401/403 (`cluster_block_exception`: a write block or a read-only index),
//!   404, 409, 429, 5xx or a 400 that is not about the document (`index_closed_exception`).
//!   When the attempts run out the call fails with a retryable [`Error::Search`] naming the
//!   HTTP status and the engine's error, so the caller's checkpoint does not reach its
//!   commit point and is tried again (see [`crate::process`]).
//!
//! A whole request answered 413 (the body is over the engine's `http.max_content_length`
//! or a proxy's limit) is split in halves and each half sent again, down to single
//! documents; a single document still answered 413 is refused for good.

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
/// Attempts per bulk request before the call fails (about 3 s of backoff), so a refusing
/// index turns the process unready quickly; the checkpoint then retries the call with its
/// own, longer backoff, indefinitely.
const BULK_ATTEMPTS: u32 = 5;
/// What a bulk response needs to carry (`filter_path`): each item's status and error, by
/// position. The engine then neither writes nor we parse the ids, versions, shard counts
/// and sequence numbers of every item (about 200 bytes an item).
const BULK_RESPONSE_FIELDS: &str = "errors,items.*.status,items.*.error";
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

/// What to do with the status of a request other than a bulk (index creation, reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Done,
    /// Throttled or a server-side failure: the same request can succeed later.
    Retry,
    /// Refused; repeating the same request will not help.
    Reject,
}

pub fn disposition(status: u16) -> Disposition {
    match status {
        200..=299 => Disposition::Done,
        429 | 500..=599 => Disposition::Retry,
        _ => Disposition::Reject,
    }
}

/// What to do with the status of a whole bulk request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestDisposition {
    /// The request was taken: each item says what happened to its document.
    Items,
    /// Too large (413): send each half on its own.
    Split,
    /// Nothing was indexed; the request is refused for a reason that is not one document
    /// (auth, a missing index, a cluster block, throttling, a server failure): retry.
    Retry,
}

pub fn request_disposition(status: u16) -> RequestDisposition {
    match status {
        200..=299 => RequestDisposition::Items,
        413 => RequestDisposition::Split,
        _ => RequestDisposition::Retry,
    }
}

/// What to do with one item of a bulk response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemDisposition {
    Done,
    /// Not indexed for a reason that can pass (a block, throttling, a closed or missing
    /// index, a server failure): resend it.
    Retry,
    /// The document itself is refused; resending it will not help.
    DeadLetter,
}

/// Error types of a 400 item that are about the document, not the index or the cluster.
pub const DOCUMENT_ERRORS: &[&str] = &[
    "mapper_parsing_exception",
    "document_parsing_exception",
    "strict_dynamic_mapping_exception",
    "illegal_argument_exception",
    "x_content_parse_exception",
    "json_parse_exception",
    "parse_exception",
];

/// Classifies one bulk item by its status and the engine's error type. A 400 whose type is
/// not about the document (e.g. `index_closed_exception`) and every status that is not
/// 2xx, 400 or 413 are retried: resending is safe (indexing by `_id` is idempotent), and a
/// cause that does not pass shows as a failing checkpoint rather than a lost document.
pub fn item_disposition(status: u16, error_type: Option<&str>) -> ItemDisposition {
    match status {
        200..=299 => ItemDisposition::Done,
        413 => ItemDisposition::DeadLetter,
        400 if error_type.is_some_and(|t| DOCUMENT_ERRORS.contains(&t)) => {
            ItemDisposition::DeadLetter
        }
        _ => ItemDisposition::Retry,
    }
}

/// Splits the positions of a request answered 413 into two halves (the first one the
/// larger when the count is odd). Only called with two or more positions.
pub fn split_in_halves(positions: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let middle = positions.len().div_ceil(2);
    (positions[..middle].to_vec(), positions[middle..].to_vec())
}

/// Why the engine did not index a document (or a request): its status and error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// The engine's error type (`mapper_parsing_exception`, `cluster_block_exception`...);
    /// empty when the answer carried none.
    pub error_type: String,
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if !self.error_type.is_empty() {
            write!(f, " {}", self.error_type)?;
        }
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        Ok(())
    }
}

/// The refusal an error object (`{"type":..,"reason":..}`) describes.
fn refusal_of(status: u16, error: Option<&Value>) -> Refusal {
    let text = |key: &str| {
        error
            .and_then(|e| e.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Refusal {
        status,
        error_type: text("type"),
        reason: text("reason"),
    }
}

/// The refusal a whole non-2xx response describes: the `error` object of an
/// Elasticsearch/OpenSearch error body, else the start of the body (a proxy's page).
pub fn request_refusal(status: u16, body: &[u8]) -> Refusal {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    match parsed.as_ref().and_then(|v| v.get("error")) {
        Some(error) if error.is_object() => refusal_of(status, Some(error)),
        Some(Value::String(reason)) => Refusal {
            status,
            error_type: String::new(),
            reason: reason.clone(),
        },
        _ => {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
            Refusal {
                status,
                error_type: String::new(),
                reason: text.trim().to_string(),
            }
        }
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
    /// Why the first position to resend was not indexed (for logs and `/readyz`).
    pub retry_reason: Option<Refusal>,
    /// Positions refused for good, with the refusal.
    pub dead: Vec<(usize, Refusal)>,
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

/// Classifies a 2xx bulk response of `sent` items. A response that does not list exactly
/// one item per document cannot be trusted item by item: everything is resent (indexing
/// by `_id` is idempotent).
pub fn classify_bulk_response(body: &[u8], sent: usize) -> BulkOutcome {
    let parsed: Option<BulkResponse> = serde_json::from_slice(body).ok();
    let Some(response) = parsed.filter(|r| r.items.len() == sent) else {
        return BulkOutcome {
            retry: (0..sent).collect(),
            retry_reason: Some(Refusal {
                status: 200,
                error_type: String::new(),
                reason: format!("a bulk response that does not list {sent} items"),
            }),
            ..BulkOutcome::default()
        };
    };
    let mut outcome = BulkOutcome::default();
    for (position, item) in response.items.iter().enumerate() {
        let Some(result) = item.values().next() else {
            outcome.retry.push(position);
            continue;
        };
        let refusal = || refusal_of(result.status, result.error.as_ref());
        let error_type = result
            .error
            .as_ref()
            .and_then(|e| e.get("type"))
            .and_then(Value::as_str);
        match item_disposition(result.status, error_type) {
            ItemDisposition::Done => outcome.done += 1,
            ItemDisposition::Retry => {
                outcome.retry.push(position);
                if outcome.retry_reason.is_none() {
                    outcome.retry_reason = Some(refusal());
                }
            }
            ItemDisposition::DeadLetter => outcome.dead.push((position, refusal())),
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

/// A document the index refused for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRefusal {
    pub user_id: u64,
    pub refusal: Refusal,
}

/// How often and how patiently a bulk request is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkRetry {
    /// Attempts before the call fails (retryably).
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for BulkRetry {
    fn default() -> Self {
        Self {
            attempts: BULK_ATTEMPTS,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// What one [`SearchIndex::index_profiles`] call did: every document is either indexed or
/// a dead letter (the call fails if any is neither).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexReport {
    pub indexed: usize,
    /// Documents refused for good, in no particular order.
    pub dead_letters: Vec<DocumentRefusal>,
}

/// The profiles index of one pipeline.
#[derive(Clone)]
pub struct SearchIndex {
    client: Elasticsearch,
    index: String,
    metrics: Option<Metrics>,
    /// Shared by clones: bounds the bulk requests of all concurrent checkpoints.
    bulk_permits: std::sync::Arc<tokio::sync::Semaphore>,
    retry: BulkRetry,
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
            retry: BulkRetry::default(),
        })
    }

    /// The same index with another bulk retry policy (tests use short ones).
    pub fn with_bulk_retry(mut self, retry: BulkRetry) -> Self {
        self.retry = retry;
        self
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

    /// Indexes the profiles with `_id = user_id`. Returns when every document is indexed
    /// or refused for good (see the module doc); fails, retryably, when some are still
    /// neither after the attempts of the [`BulkRetry`] policy.
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
        let mut failure = None;
        for report in reports {
            match report {
                Ok(report) => {
                    total.indexed += report.indexed;
                    total.dead_letters.extend(report.dead_letters);
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(m) = &self.metrics {
            m.profiles_indexed.inc_by(total.indexed as u64);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    /// One bulk request, holding a permit of [`BULK_CONCURRENCY`] while it is in flight.
    async fn send_bulk(&self, path: &str, body: Vec<u8>) -> Result<(u16, bytes::Bytes)> {
        // Closed only if the semaphore is dropped, which cannot happen while `self` lives.
        let _permit = self.bulk_permits.acquire().await.ok();
        self.request("bulk", Method::Post, path, Some(body), true)
            .await
    }

    async fn bulk_with_retries(&self, profiles: &[Profile]) -> Result<IndexReport> {
        let mut docs: Vec<(u64, Vec<u8>)> = Vec::with_capacity(profiles.len());
        for profile in profiles {
            docs.push((profile.user_id, serde_json::to_vec(profile)?));
        }
        let path = format!("/{}/_bulk?filter_path={BULK_RESPONSE_FIELDS}", self.index);
        let mut pending: Vec<usize> = (0..docs.len()).collect();
        let mut report = IndexReport::default();
        let mut backoff = Backoff::new(self.retry.initial_backoff, self.retry.max_backoff);
        let mut attempt = 1;
        loop {
            let mut retry: Vec<usize> = Vec::new();
            let mut last_failure: Option<String> = None;
            let dead_before = report.dead_letters.len();
            // Requests of this attempt: the pending documents, or the halves of a request
            // answered 413 (split at once, without using up an attempt).
            let mut requests = vec![pending];
            while let Some(positions) = requests.pop() {
                let body = bulk_body(positions.iter().map(|&i| (docs[i].0, docs[i].1.as_slice())));
                let (status, answer) = match self.send_bulk(&path, body).await {
                    Ok(response) => response,
                    Err(e) => {
                        last_failure = Some(e.to_string());
                        retry.extend(positions);
                        continue;
                    }
                };
                match request_disposition(status) {
                    RequestDisposition::Items => {
                        let outcome = classify_bulk_response(&answer, positions.len());
                        report.indexed += outcome.done;
                        for (position, refusal) in outcome.dead {
                            report.dead_letters.push(DocumentRefusal {
                                user_id: docs[positions[position]].0,
                                refusal,
                            });
                        }
                        if let Some(reason) = outcome.retry_reason {
                            last_failure = Some(reason.to_string());
                        }
                        retry.extend(outcome.retry.iter().map(|&p| positions[p]));
                    }
                    RequestDisposition::Split if positions.len() > 1 => {
                        let (first, second) = split_in_halves(&positions);
                        tracing::info!(index = %self.index, documents = positions.len(), "bulk request too large (413); sending it in halves");
                        requests.push(second);
                        requests.push(first);
                    }
                    RequestDisposition::Split => {
                        report.dead_letters.push(DocumentRefusal {
                            user_id: docs[positions[0]].0,
                            refusal: request_refusal(status, &answer),
                        });
                    }
                    RequestDisposition::Retry => {
                        last_failure = Some(request_refusal(status, &answer).to_string());
                        retry.extend(positions);
                    }
                }
            }
            self.count_errors(
                SinkErrorKind::Rejected,
                report.dead_letters.len() - dead_before,
            );
            if retry.is_empty() {
                return Ok(report);
            }
            let last_failure = last_failure.unwrap_or_default();
            if attempt >= self.retry.attempts {
                self.count_errors(SinkErrorKind::Failed, retry.len());
                return Err(Error::Search {
                    step: "bulk",
                    retryable: true,
                    message: format!(
                        "{} documents not indexed after {attempt} attempts; last answer: {last_failure}",
                        retry.len()
                    ),
                });
            }
            self.count_errors(SinkErrorKind::Retried, retry.len());
            let delay = backoff.next_delay();
            tracing::warn!(index = %self.index, documents = retry.len(), attempt, last_answer = %last_failure, retry_in_ms = delay.as_millis() as u64, "bulk indexing not done; retrying");
            pending = retry;
            attempt += 1;
            tokio::time::sleep(delay).await;
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
        self.read_all_with(&mut |_| {}).await
    }

    /// [`SearchIndex::read_all`], telling `read` how many profiles it has read after each
    /// page (for progress).
    pub async fn read_all_with(&self, read: &mut (dyn FnMut(u64) + Send)) -> Result<Vec<Profile>> {
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
            read(profiles.len() as u64);
            match (full, page.last_sort) {
                (true, Some(last)) => after = Some(last),
                _ => return Ok(profiles),
            }
        }
    }
}

/// Every profile of the index the settings name (for `report --from-search`).
pub async fn profiles_from_search(settings: &SearchSettings) -> Result<Vec<Profile>> {
    profiles_from_search_with(settings, &mut crate::progress::Progress::hidden()).await
}

/// [`profiles_from_search`], counting the profiles read on `progress`.
pub async fn profiles_from_search_with(
    settings: &SearchSettings,
    progress: &mut crate::progress::Progress,
) -> Result<Vec<Profile>> {
    let profiles = SearchIndex::connect(settings, None)?
        .read_all_with(&mut |n| progress.set(n))
        .await;
    progress.finish();
    profiles
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
    use std::sync::{Arc, Mutex};

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

    #[test]
    fn whole_request_statuses() {
        for status in [200, 201] {
            assert_eq!(request_disposition(status), RequestDisposition::Items);
        }
        assert_eq!(request_disposition(413), RequestDisposition::Split);
        // Not about one document: nothing was indexed, and nothing is given up.
        for status in [400, 401, 403, 404, 408, 409, 429, 500, 502, 503] {
            assert_eq!(
                request_disposition(status),
                RequestDisposition::Retry,
                "{status}"
            );
        }
    }

    #[test]
    fn item_statuses_and_error_types() {
        assert_eq!(item_disposition(201, None), ItemDisposition::Done);
        for document_error in [
            "mapper_parsing_exception",
            "document_parsing_exception",
            "strict_dynamic_mapping_exception",
            "illegal_argument_exception",
        ] {
            assert_eq!(
                item_disposition(400, Some(document_error)),
                ItemDisposition::DeadLetter,
                "{document_error}"
            );
        }
        assert_eq!(item_disposition(413, None), ItemDisposition::DeadLetter);
        // A 400 about the index, not the document (OpenSearch answers a closed index so).
        assert_eq!(
            item_disposition(400, Some("index_closed_exception")),
            ItemDisposition::Retry
        );
        assert_eq!(item_disposition(400, None), ItemDisposition::Retry);
        // A write block (403), a read-only index (429), auth, a missing index, conflicts
        // and server failures pass: retried.
        for status in [401, 403, 404, 409, 429, 500, 503] {
            assert_eq!(
                item_disposition(status, Some("cluster_block_exception")),
                ItemDisposition::Retry,
                "{status}"
            );
        }
    }

    #[test]
    fn halves() {
        assert_eq!(split_in_halves(&[4, 5]), (vec![4], vec![5]));
        assert_eq!(
            split_in_halves(&[1, 2, 3, 4, 5]),
            (vec![1, 2, 3], vec![4, 5])
        );
        assert_eq!(split_in_halves(&[0, 1, 2, 3]), (vec![0, 1], vec![2, 3]));
    }

    #[test]
    fn refusal_of_a_whole_request() {
        let body = br#"{"error":{"root_cause":[{"type":"cluster_block_exception","reason":"blocked by: [FORBIDDEN/6/cluster read-only (api)];"}],"type":"cluster_block_exception","reason":"blocked by: [FORBIDDEN/6/cluster read-only (api)];"},"status":403}"#;
        let refusal = request_refusal(403, body);
        assert_eq!(
            refusal,
            Refusal {
                status: 403,
                error_type: "cluster_block_exception".into(),
                reason: "blocked by: [FORBIDDEN/6/cluster read-only (api)];".into(),
            }
        );
        assert_eq!(
            refusal.to_string(),
            "HTTP 403 cluster_block_exception: blocked by: [FORBIDDEN/6/cluster read-only (api)];"
        );
        // A proxy's page: its start is the reason.
        assert_eq!(
            request_refusal(413, b"<html>413 Request Entity Too Large</html>\n").to_string(),
            "HTTP 413: <html>413 Request Entity Too Large</html>"
        );
        assert_eq!(request_refusal(502, b"").to_string(), "HTTP 502");
    }

    /// A bulk response as OpenSearch 2.19 answers it (items copied from real answers): one
    /// created, one throttled, a strict-mapping refusal, a shard failure, an update, a
    /// write block, a closed index, a keyword over Lucene's term limit, a parse failure.
    const MIXED: &str = r#"{"took":3,"errors":true,"items":[
        {"index":{"_index":"p","_id":"1","_version":1,"result":"created","status":201}},
        {"index":{"_index":"p","_id":"2","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution"}}},
        {"index":{"_index":"p","_id":"3","status":400,"error":{"type":"strict_dynamic_mapping_exception","reason":"mapping set to strict"}}},
        {"index":{"_index":"p","_id":"4","status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}},
        {"index":{"_index":"p","_id":"5","_version":2,"result":"updated","status":200}},
        {"index":{"_index":"p","_id":"6","status":403,"error":{"type":"cluster_block_exception","reason":"index [p] blocked by: [FORBIDDEN/8/index write (api)];"}}},
        {"index":{"_index":"p","_id":"7","status":400,"error":{"type":"index_closed_exception","reason":"closed","index":"p"}}},
        {"index":{"_index":"p","_id":"8","status":400,"error":{"type":"illegal_argument_exception","reason":"Document contains at least one immense term in field=\"segment\"","caused_by":{"type":"max_bytes_length_exceeded_exception","reason":"bytes can be at most 32766 in length; got 40000"}}}},
        {"index":{"_index":"p","_id":"9","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [user_id] of type [unsigned_long]"}}}
    ]}"#;

    #[test]
    fn mixed_bulk_response_dead_letters_only_document_refusals() {
        let outcome = classify_bulk_response(MIXED.as_bytes(), 9);
        let refusal = |status, error_type: &str, reason: &str| Refusal {
            status,
            error_type: error_type.into(),
            reason: reason.into(),
        };
        assert_eq!(
            outcome,
            BulkOutcome {
                done: 2,
                retry: vec![1, 3, 5, 6],
                retry_reason: Some(refusal(
                    429,
                    "es_rejected_execution_exception",
                    "rejected execution"
                )),
                dead: vec![
                    (
                        2,
                        refusal(
                            400,
                            "strict_dynamic_mapping_exception",
                            "mapping set to strict"
                        )
                    ),
                    (
                        7,
                        refusal(
                            400,
                            "illegal_argument_exception",
                            "Document contains at least one immense term in field=\"segment\""
                        )
                    ),
                    (
                        8,
                        refusal(
                            400,
                            "mapper_parsing_exception",
                            "failed to parse field [user_id] of type [unsigned_long]"
                        )
                    ),
                ],
            }
        );
    }

    #[test]
    fn a_response_with_the_wrong_item_count_resends_everything() {
        let outcome = classify_bulk_response(MIXED.as_bytes(), 10);
        assert_eq!(outcome.retry, (0..10).collect::<Vec<_>>());
        assert_eq!(outcome.dead, vec![]);
        let garbage = classify_bulk_response(b"<html>", 2);
        assert_eq!(garbage.retry, vec![0, 1]);
        assert_eq!(garbage.done, 0);
        assert_eq!(
            garbage.retry_reason.map(|r| r.to_string()),
            Some("HTTP 200: a bulk response that does not list 2 items".to_string())
        );
    }

    #[test]
    fn all_ok_bulk_response() {
        let body = r#"{"took":1,"errors":false,"items":[{"index":{"_id":"1","status":201}},{"create":{"_id":"2","status":200}}]}"#;
        let outcome = classify_bulk_response(body.as_bytes(), 2);
        assert_eq!(
            outcome,
            BulkOutcome {
                done: 2,
                ..BulkOutcome::default()
            }
        );
    }

    // ------------------------------------------------ against a small local HTTP server

    /// What the fake engine answers to one bulk request (its documents' ids, in order, and
    /// how many requests came before it).
    type Answer = fn(&[u64], usize) -> (u16, String);
    /// The ids of every request a fake engine got, in order.
    type Seen = Arc<Mutex<Vec<Vec<u64>>>>;

    /// A local HTTP server answering `POST /<index>/_bulk` with `answer`; returns its URL
    /// and the ids of every request it got, in order. The OpenSearch of the integration
    /// tests has no security plugin (no 401) and a fixed 100 MB body limit (no 413 short of
    /// a huge request), so those answers are covered here.
    async fn fake_engine(answer: Answer) -> (String, Seen) {
        use axum::extract::State;
        use axum::routing::post;
        let seen: Seen = Arc::default();
        let handler = |State((seen, answer)): State<(Seen, Answer)>, body: bytes::Bytes| async move {
            let ids: Vec<u64> = String::from_utf8_lossy(&body)
                .lines()
                .filter_map(|line| {
                    let action: Value = serde_json::from_str(line).ok()?;
                    action.pointer("/index/_id")?.as_str()?.parse().ok()
                })
                .collect();
            let before = {
                let mut seen = seen.lock().unwrap();
                seen.push(ids.clone());
                seen.len() - 1
            };
            let (status, body) = answer(&ids, before);
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
        };
        let app = axum::Router::new()
            .route("/{index}/_bulk", post(handler))
            .with_state((seen.clone(), answer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    fn items(ids: &[u64], item: impl Fn(u64) -> String) -> String {
        let items: Vec<String> = ids.iter().map(|&id| item(id)).collect();
        format!(
            r#"{{"took":1,"errors":true,"items":[{}]}}"#,
            items.join(",")
        )
    }

    fn created(id: u64) -> String {
        format!(r#"{{"index":{{"_index":"idx","_id":"{id}","status":201}}}}"#)
    }

    fn fast_retry(attempts: u32) -> BulkRetry {
        BulkRetry {
            attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        }
    }

    fn profiles(ids: &[u64]) -> Vec<Profile> {
        let mut book = crate::profile::ProfileBook::new();
        for &user_id in ids {
            book.apply(&crate::event::test_view(user_id)).unwrap();
        }
        book.profiles()
    }

    fn index_at(url: &str, metrics: &Metrics, retry: BulkRetry) -> SearchIndex {
        let settings = SearchSettings {
            url: url.to_string(),
            index: "idx".into(),
            credentials: None,
            ca_file: None,
        };
        SearchIndex::connect(&settings, Some(metrics.clone()))
            .unwrap()
            .with_bulk_retry(retry)
    }

    fn sink_errors(metrics: &Metrics, kind: SinkErrorKind) -> u64 {
        metrics
            .sink_errors
            .get_or_create(&crate::metrics::SinkErrorLabels {
                sink: Sink::Search,
                kind,
            })
            .get()
    }

    #[tokio::test]
    async fn a_401_is_retried_and_never_counted_as_indexed() {
        let (url, seen) = fake_engine(|_, _| {
            (
                401,
                r#"{"error":{"type":"security_exception","reason":"missing authentication credentials for REST request [/idx/_bulk]"},"status":401}"#.into(),
            )
        })
        .await;
        let metrics = Metrics::new("process");
        let index = index_at(&url, &metrics, fast_retry(3));
        let error = index.index_profiles(&profiles(&[1, 2])).await.unwrap_err();
        assert!(error.is_retryable());
        assert_eq!(
            error.to_string(),
            "search: bulk: 2 documents not indexed after 3 attempts; last answer: HTTP 401 \
             security_exception: missing authentication credentials for REST request [/idx/_bulk]"
        );
        assert_eq!(*seen.lock().unwrap(), vec![vec![1, 2]; 3]);
        assert_eq!(metrics.profiles_indexed.get(), 0);
        assert_eq!(sink_errors(&metrics, SinkErrorKind::Retried), 4);
        assert_eq!(sink_errors(&metrics, SinkErrorKind::Failed), 2);
        assert_eq!(sink_errors(&metrics, SinkErrorKind::Rejected), 0);
    }

    #[tokio::test]
    async fn a_write_block_on_items_is_retried_until_it_lifts() {
        // The first two answers are OpenSearch's to a write-blocked index: 200 with every
        // item 403 cluster_block_exception; then the block is lifted.
        let (url, seen) = fake_engine(|ids, before| {
            if before < 2 {
                (200, items(ids, |id| format!(r#"{{"index":{{"_index":"idx","_id":"{id}","status":403,"error":{{"type":"cluster_block_exception","reason":"index [idx] blocked by: [FORBIDDEN/8/index write (api)];"}}}}}}"#)))
            } else {
                (200, items(ids, created))
            }
        })
        .await;
        let metrics = Metrics::new("process");
        let index = index_at(&url, &metrics, fast_retry(5));
        let report = index.index_profiles(&profiles(&[4, 5, 6])).await.unwrap();
        assert_eq!(
            report,
            IndexReport {
                indexed: 3,
                dead_letters: vec![]
            }
        );
        assert_eq!(*seen.lock().unwrap(), vec![vec![4, 5, 6]; 3]);
        assert_eq!(sink_errors(&metrics, SinkErrorKind::Retried), 6);
        assert_eq!(metrics.profiles_indexed.get(), 3);
    }

    #[tokio::test]
    async fn a_413_splits_the_request_and_a_single_document_still_too_large_is_a_dead_letter() {
        // The engine takes at most two documents per request, and never document 13.
        let (url, seen) = fake_engine(|ids, _| {
            if ids.len() > 2 || ids.contains(&13) {
                (
                    413,
                    r#"{"error":{"type":"content_too_long_exception","reason":"request body is too large"},"status":413}"#.into(),
                )
            } else {
                (200, items(ids, created))
            }
        })
        .await;
        let metrics = Metrics::new("process");
        let index = index_at(&url, &metrics, fast_retry(2));
        let report = index
            .index_profiles(&profiles(&[1, 2, 3, 4, 5, 6, 13]))
            .await
            .unwrap();
        assert_eq!(
            report,
            IndexReport {
                indexed: 6,
                dead_letters: vec![DocumentRefusal {
                    user_id: 13,
                    refusal: Refusal {
                        status: 413,
                        error_type: "content_too_long_exception".into(),
                        reason: "request body is too large".into(),
                    },
                }],
            }
        );
        // Halves, first half first, down to what passes: 7 -> 4 (-> 2, 2) and 3 (-> 2, 1).
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                vec![1, 2, 3, 4, 5, 6, 13],
                vec![1, 2, 3, 4],
                vec![1, 2],
                vec![3, 4],
                vec![5, 6, 13],
                vec![5, 6],
                vec![13],
            ]
        );
        assert_eq!(sink_errors(&metrics, SinkErrorKind::Rejected), 1);
        assert_eq!(sink_errors(&metrics, SinkErrorKind::Retried), 0);
        assert_eq!(metrics.profiles_indexed.get(), 6);
    }

    #[tokio::test]
    async fn refused_items_are_dead_letters_and_the_others_land() {
        let (url, seen) = fake_engine(|ids, _| {
            (
                200,
                items(ids, |id| {
                    if id % 2 == 0 {
                        format!(r#"{{"index":{{"_index":"idx","_id":"{id}","status":400,"error":{{"type":"mapper_parsing_exception","reason":"failed to parse field [favorite_brand] of type [long] in document with id '{id}'"}}}}}}"#)
                    } else {
                        created(id)
                    }
                }),
            )
        })
        .await;
        let metrics = Metrics::new("process");
        let index = index_at(&url, &metrics, fast_retry(2));
        let report = index
            .index_profiles(&profiles(&[1, 2, 3, 4]))
            .await
            .unwrap();
        let refused = |id: u64| {
            DocumentRefusal {
            user_id: id,
            refusal: Refusal {
                status: 400,
                error_type: "mapper_parsing_exception".into(),
                reason: format!(
                    "failed to parse field [favorite_brand] of type [long] in document with id '{id}'"
                ),
            },
        }
        };
        assert_eq!(
            report,
            IndexReport {
                indexed: 2,
                dead_letters: vec![refused(2), refused(4)],
            }
        );
        // Refused documents are not resent.
        assert_eq!(*seen.lock().unwrap(), vec![vec![1, 2, 3, 4]]);
        assert_eq!(sink_errors(&metrics, SinkErrorKind::Rejected), 2);
        assert_eq!(sink_errors(&metrics, SinkErrorKind::Retried), 0);
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
