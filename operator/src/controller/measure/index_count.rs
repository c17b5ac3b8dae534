//! Reads the number of profiles of a pipeline's search index (I/O): one
//! `GET <search url>/<index>/_count`, authenticated and trusted as the runtime is, from the
//! same `build::search::endpoint` (managed Elasticsearch: its `http://` Service with the
//! `elastic` user's generated password; managed OpenSearch: its `https://` Service, the
//! pipeline CA and the runtime's generated user; external: `spec.search.external`'s URL, basic credentials and CA from
//! the referenced Secrets). The request is bounded by `TIMEOUT` so a search engine that is down cannot
//! stall a reconcile; failures say whether the engine did not answer (`Unreachable`,
//! e.g. still starting) or answered wrongly / refused the setup (`Failed`: credentials,
//! Secrets, TLS trust). The answer's body is read up to `MAX_BODY_BYTES` only: the URL of
//! an external engine is the user's, and a larger answer is a `Failed` count, not memory
//! the operator gives away. Building the URL and reading the answer are pure (`count_url`,
//! `parse_count`); the HTTP client is the hyper/rustls stack kube already links (ring
//! provider, no new crates).

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_rustls::ConfigBuilderExt as _;
use hyper_util::{client::legacy::Client as HttpClient, rt::TokioExecutor};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use rustls::{
    pki_types::{pem::PemObject, CertificateDer},
    ClientConfig, RootCertStore,
};

use crate::controller::{
    build::{engine::Username, search},
    dereference::{read_secret, secret_text},
    validate::ValidatedPipeline,
};

/// How long the count request (connect, TLS, answer) may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// The most of an answer's body that is read: a `_count` answer is well under 1 KiB, an
/// error a few KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Where and how to ask for the count.
#[derive(Clone, PartialEq, Eq)]
pub struct SearchConnection {
    /// Base URL of the HTTP API, e.g. `http://shop-es.shops.svc:9200`.
    pub url: String,
    /// Basic-authentication username and password.
    pub credentials: Option<(String, String)>,
    /// PEM CA certificate(s) to trust instead of the system CAs (`https://` only).
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for SearchConnection {
    // Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchConnection")
            .field("url", &self.url)
            .field("username", &self.credentials.as_ref().map(|(u, _)| u))
            .field("ca_pem", &self.ca_pem.is_some())
            .finish()
    }
}

/// Why the count could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CountError {
    /// The search engine did not answer (not running yet, down, timed out).
    Unreachable(String),
    /// It answered, but not with a count (credentials, a Secret, an error status).
    Failed(String),
}

impl std::fmt::Display for CountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(m) | Self::Failed(m) => f.write_str(m),
        }
    }
}

/// `<url>/<index>/_count`, with exactly one `/` between the parts.
pub fn count_url(base: &str, index: &str) -> String {
    format!("{}/{index}/_count", base.trim_end_matches('/'))
}

/// The document count from the answer to `_count`: `{"count": N}` on 200; a missing
/// index (404 `index_not_found_exception`: the runtime has not written yet) counts 0.
pub fn parse_count(status: u16, body: &[u8]) -> Result<i64, String> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    match status {
        200 => json
            .as_ref()
            .and_then(|v| v.get("count"))
            .and_then(serde_json::Value::as_i64)
            .ok_or_else(|| format!("answer without a count: {}", excerpt(body))),
        404 if json
            .as_ref()
            .and_then(|v| v.pointer("/error/type"))
            .and_then(serde_json::Value::as_str)
            == Some("index_not_found_exception") =>
        {
            Ok(0)
        }
        _ => Err(format!("HTTP {status}: {}", excerpt(body))),
    }
}

/// The start of a body, for messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut cut: String = text.chars().take(200).collect();
    if cut.len() < text.len() {
        cut.push_str("...");
    }
    cut
}

/// Where the runtime writes, authenticated as the runtime is: `build::search::endpoint`'s
/// URL, with the username and password of its basic-authentication Secret (if any) and the
/// CA of its CA Secret (if any).
pub async fn connection(
    client: &Client,
    p: &ValidatedPipeline,
) -> Result<SearchConnection, CountError> {
    let endpoint = search::endpoint(p);
    let mut credentials = None;
    if let Some(auth) = &endpoint.auth {
        let secret = read_secret(client, &p.namespace, &p.name, &auth.secret)
            .await
            .map_err(CountError::Failed)?;
        let username = match &auth.username {
            Username::Fixed(username) => username.clone(),
            Username::SecretKey(key) => secret_value(p, &auth.secret, &secret, key)?,
        };
        let password = secret_value(p, &auth.secret, &secret, &auth.password_key)?;
        credentials = Some((username, password));
    }
    let mut ca_pem = None;
    if let Some(reference) = &endpoint.ca {
        let secret = read_secret(client, &p.namespace, &p.name, &reference.name)
            .await
            .map_err(CountError::Failed)?;
        ca_pem = Some(secret_value(p, &reference.name, &secret, &reference.key)?);
    }
    Ok(SearchConnection {
        url: endpoint.url,
        credentials,
        ca_pem,
    })
}

fn secret_value(
    p: &ValidatedPipeline,
    name: &str,
    secret: &Secret,
    key: &str,
) -> Result<String, CountError> {
    secret_text(secret, key).ok_or_else(|| {
        CountError::Failed(format!("Secret {}/{name} has no key {key:?}", p.namespace))
    })
}

/// `Authorization` value of basic authentication.
pub fn basic_auth(username: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {token}")
}

/// TLS settings: the given CA only, or the system CAs; ring, as everywhere in the operator.
fn tls_config(ca_pem: Option<&str>) -> Result<ClientConfig, String> {
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("CA certificate is not PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("CA certificate rejected: {e}"))?;
            }
            if roots.is_empty() {
                return Err("CA Secret holds no PEM certificate".into());
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .with_native_roots()
            .map_err(|e| format!("cannot load the system CAs: {e}"))?,
    };
    Ok(builder.with_no_client_auth())
}

/// A failed request with its causes; a TLS failure (untrusted certificate, wrong host
/// name) is a setting to fix, not an engine still starting.
fn request_error(url: &str, error: &(dyn std::error::Error + 'static)) -> CountError {
    let mut message = format!("GET {url}: {error}");
    let mut tls = false;
    let mut cause = error.source();
    while let Some(e) = cause {
        tls |= e.is::<rustls::Error>();
        let text = e.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        // An io::Error's source skips the error it wraps (hyper-rustls wraps rustls's
        // error in two): descend into it instead.
        cause = match e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    if tls {
        CountError::Failed(message)
    } else {
        CountError::Unreachable(message)
    }
}

/// Asks for the number of documents of `index`, within `TIMEOUT`.
pub async fn read_count(connection: &SearchConnection, index: &str) -> Result<i64, CountError> {
    read_count_within(connection, index, TIMEOUT).await
}

async fn read_count_within(
    connection: &SearchConnection,
    index: &str,
    timeout: Duration,
) -> Result<i64, CountError> {
    read_count_limited(connection, index, timeout, MAX_BODY_BYTES).await
}

async fn read_count_limited(
    connection: &SearchConnection,
    index: &str,
    timeout: Duration,
    max_body: usize,
) -> Result<i64, CountError> {
    let url = count_url(&connection.url, index);
    let uri: Uri = url
        .parse()
        .map_err(|e| CountError::Failed(format!("invalid search URL {url}: {e}")))?;
    let tls = tls_config(connection.ca_pem.as_deref()).map_err(CountError::Failed)?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let http: HttpClient<_, Empty<Bytes>> = HttpClient::builder(TokioExecutor::new()).build(https);
    let mut request = Request::get(uri).header(header::ACCEPT, "application/json");
    if let Some((username, password)) = &connection.credentials {
        request = request.header(header::AUTHORIZATION, basic_auth(username, password));
    }
    let request = request
        .body(Empty::new())
        .map_err(|e| CountError::Failed(format!("GET {url}: {e}")))?;
    let exchange = async {
        let response = http
            .request(request)
            .await
            .map_err(|e| request_error(&url, &e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    CountError::Failed(format!(
                        "GET {url}: the answer is larger than {max_body} bytes, more than a count can be; is this the search engine's URL?"
                    ))
                } else {
                    CountError::Unreachable(format!("GET {url}: {e}"))
                }
            })?
            .to_bytes();
        Ok::<_, CountError>((status, body))
    };
    let (status, body): (StatusCode, Bytes) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            CountError::Unreachable(format!("GET {url}: no answer within {timeout:?}"))
        })??;
    parse_count(status.as_u16(), &body).map_err(|e| CountError::Failed(format!("GET {url}: {e}")))
}

/// Connection and count: the number of profiles of the pipeline's index.
pub async fn profiles(client: &Client, p: &ValidatedPipeline) -> Result<i64, CountError> {
    let connection = connection(client, p).await?;
    read_count(&connection, &p.search.index).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_url_joins_base_and_index() {
        assert_eq!(
            count_url("http://shop-es.shops.svc:9200", "shop-profiles"),
            "http://shop-es.shops.svc:9200/shop-profiles/_count"
        );
        assert_eq!(
            count_url("https://search.example.com/es/", "profiles"),
            "https://search.example.com/es/profiles/_count"
        );
    }

    #[test]
    fn count_is_read_from_a_200() {
        let body = br#"{"count":1234,"_shards":{"total":1,"successful":1,"skipped":0,"failed":0}}"#;
        assert_eq!(parse_count(200, body), Ok(1234));
        assert_eq!(parse_count(200, br#"{"count":0}"#), Ok(0));
    }

    #[test]
    fn a_missing_index_counts_zero() {
        let body = br#"{"error":{"root_cause":[{"type":"index_not_found_exception","reason":"no such index [shop-profiles]"}],"type":"index_not_found_exception","reason":"no such index [shop-profiles]","index":"shop-profiles"},"status":404}"#;
        assert_eq!(parse_count(404, body), Ok(0));
    }

    #[test]
    fn other_answers_are_errors() {
        assert_eq!(
            parse_count(404, b"404 page not found"),
            Err("HTTP 404: 404 page not found".to_string())
        );
        let unauthorized = br#"{"error":{"type":"security_exception"},"status":401}"#;
        assert_eq!(
            parse_count(401, unauthorized),
            Err(format!(
                "HTTP 401: {}",
                String::from_utf8_lossy(unauthorized)
            ))
        );
        assert_eq!(
            parse_count(200, br#"{"hits":1}"#),
            Err(r#"answer without a count: {"hits":1}"#.to_string())
        );
        let long = "x".repeat(300);
        assert_eq!(
            parse_count(500, long.as_bytes()),
            Err(format!("HTTP 500: {}...", "x".repeat(200)))
        );
    }

    #[test]
    fn basic_auth_header() {
        // base64("elastic:changeme")
        assert_eq!(
            basic_auth("elastic", "changeme"),
            "Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="
        );
    }

    #[test]
    fn a_ca_secret_without_a_certificate_is_refused() {
        assert_eq!(
            tls_config(Some("not a certificate")).err(),
            Some("CA Secret holds no PEM certificate".to_string())
        );
    }

    #[test]
    fn the_debug_form_hides_the_password() {
        let connection = SearchConnection {
            url: "http://es:9200".into(),
            credentials: Some(("elastic".into(), "s3cret".into())),
            ca_pem: None,
        };
        let shown = format!("{connection:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("elastic"), "{shown}");
    }

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    /// A one-request HTTP server on the loopback address: returns its URL and a task
    /// yielding the request head it received. `answer` = None never answers.
    async fn serve_once(answer: Option<&'static str>) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            match answer {
                Some(body) => {
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    socket.write_all(response.as_bytes()).await.expect("write");
                }
                None => tokio::time::sleep(Duration::from_secs(5)).await,
            }
            String::from_utf8_lossy(&head).into_owned()
        });
        (url, task)
    }

    #[tokio::test]
    async fn the_count_is_asked_with_basic_authentication() {
        let (url, server) = serve_once(Some(r#"{"count":42,"_shards":{"total":1}}"#)).await;
        let connection = SearchConnection {
            url: format!("{url}/"),
            credentials: Some(("elastic".into(), "changeme".into())),
            ca_pem: None,
        };
        assert_eq!(read_count(&connection, "shop-profiles").await, Ok(42));
        let head = server.await.expect("server").to_lowercase();
        assert!(
            head.starts_with("get /shop-profiles/_count http/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains("authorization: basic zwxhc3rpyzpjagfuz2vtzq==\r\n"),
            "{head}"
        );
    }

    /// A one-request HTTPS server for `localhost` with a certificate of a private CA:
    /// returns its URL and the CA's PEM.
    async fn serve_once_tls(body: &'static str) -> (String, String) {
        use crate::controller::credentials::{CredentialGenerator, RandomCredentials};
        let bundle = RandomCredentials
            .tls_bundle("localhost", vec!["localhost".into()])
            .expect("certificates");
        let certs = CertificateDer::pem_slice_iter(bundle.tls_crt.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(bundle.tls_key.as_bytes())
            .expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.expect("accept");
            // A client that does not trust the CA aborts the handshake.
            let Ok(mut tls) = acceptor.accept(socket).await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = tls.read(&mut buf).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(response.as_bytes()).await;
            let _ = tls.shutdown().await;
        });
        (format!("https://localhost:{port}"), bundle.ca_crt)
    }

    #[tokio::test]
    async fn https_trusts_the_given_ca() {
        let (url, ca) = serve_once_tls(r#"{"count":5}"#).await;
        let connection = SearchConnection {
            url,
            credentials: None,
            ca_pem: Some(ca),
        };
        assert_eq!(read_count(&connection, "profiles").await, Ok(5));
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_a_failure_not_an_outage() {
        let (url, _) = serve_once_tls(r#"{"count":5}"#).await;
        let (_, other_ca) = serve_once_tls("").await;
        let connection = SearchConnection {
            url,
            credentials: None,
            ca_pem: Some(other_ca),
        };
        let result = read_count(&connection, "profiles").await;
        assert!(
            matches!(&result, Err(CountError::Failed(m)) if m.ends_with("/profiles/_count: client error (Connect): invalid peer certificate: BadSignature")),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_an_outage() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let connection = SearchConnection {
            url,
            credentials: None,
            ca_pem: None,
        };
        let result = read_count(&connection, "profiles").await;
        assert!(
            matches!(&result, Err(CountError::Unreachable(m)) if m.contains("client error (Connect)")),
            "{result:?}"
        );
    }

    /// A server answering one request with `size` bytes of body (chunked: no length
    /// announced, so only counting can stop the read).
    async fn serve_huge(size: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b' '; 16 * 1024];
            let mut sent = 0;
            while sent < size {
                let frame = [
                    format!("{:x}\r\n", chunk.len()).as_bytes(),
                    &chunk[..],
                    b"\r\n",
                ]
                .concat();
                // The client hangs up once it has read enough.
                if socket.write_all(&frame).await.is_err() {
                    return;
                }
                sent += chunk.len();
            }
            let _ = socket.write_all(b"0\r\n\r\n").await;
        });
        url
    }

    #[tokio::test]
    async fn a_huge_answer_is_cut_off_with_a_clear_error() {
        let url = serve_huge(64 * 1024 * 1024).await;
        let connection = SearchConnection {
            url: url.clone(),
            credentials: None,
            ca_pem: None,
        };
        let result = read_count(&connection, "profiles").await;
        assert_eq!(
            result,
            Err(CountError::Failed(format!(
                "GET {url}/profiles/_count: the answer is larger than 65536 bytes, more than a count can be; is this the search engine's URL?"
            )))
        );
        // Just under the limit is read (and is not a count).
        let url = serve_huge(48 * 1024).await;
        let connection = SearchConnection {
            url,
            credentials: None,
            ca_pem: None,
        };
        let result = read_count_limited(&connection, "profiles", TIMEOUT, MAX_BODY_BYTES).await;
        assert!(
            matches!(&result, Err(CountError::Failed(m)) if m.contains("answer without a count")),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_silent_engine_times_out() {
        let (url, server) = serve_once(None).await;
        let connection = SearchConnection {
            url,
            credentials: None,
            ca_pem: None,
        };
        let result =
            read_count_within(&connection, "shop-profiles", Duration::from_millis(200)).await;
        assert!(
            matches!(&result, Err(CountError::Unreachable(m)) if m.ends_with("no answer within 200ms")),
            "{result:?}"
        );
        server.abort();
    }
}
