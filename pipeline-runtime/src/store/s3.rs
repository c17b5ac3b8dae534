//! The object store as an S3 bucket through aws-sdk-s3: AWS itself or any S3 server
//! (MinIO, versitygw) with a custom endpoint, path-style addressing and static keys.
//! Checksums are only computed and validated when an operation requires them: several
//! non-AWS servers refuse the SDK's default checksum trailers. Does network I/O.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::{ObjectInfo, Precondition};
use crate::config::S3Settings;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    region: String,
}

impl S3Store {
    /// Builds the client (no request is made). Fails only on an unusable CA file.
    pub async fn connect(settings: &S3Settings) -> Result<Self> {
        Ok(Self::from_config(Self::config(settings).await?, settings))
    }

    /// The client over a configuration from [`S3Store::config`], adjusted by the caller
    /// (e.g. another HTTP client).
    pub fn from_config(config: aws_sdk_s3::config::Builder, settings: &S3Settings) -> Self {
        Self {
            client: Client::from_conf(config.build()),
            bucket: settings.bucket.clone(),
            region: settings.region.clone(),
        }
    }

    /// The SDK configuration [`S3Store::connect`] uses.
    pub async fn config(settings: &S3Settings) -> Result<aws_sdk_s3::config::Builder> {
        let region = Region::new(settings.region.clone());
        let mut builder = match &settings.credentials {
            Some(c) => aws_sdk_s3::config::Builder::new()
                .behavior_version(BehaviorVersion::latest())
                .region(region)
                .credentials_provider(Credentials::new(
                    c.access_key_id.clone(),
                    c.secret_access_key.expose().to_string(),
                    None,
                    None,
                    "pipeline-runtime",
                )),
            None => {
                // Web identity, instance profile, ...: what AWS users expect.
                let shared = aws_config::defaults(BehaviorVersion::latest())
                    .region(region)
                    .load()
                    .await;
                aws_sdk_s3::config::Builder::from(&shared)
            }
        };
        builder = builder
            .force_path_style(settings.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        if let Some(ca_file) = &settings.ca_file {
            builder = builder.http_client(http_client_trusting(&read_ca_file(ca_file)?)?);
        }
        Ok(builder)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket when it does not exist.
    pub async fn ensure_bucket(&self) -> Result<()> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(SdkError::ServiceError(e))
                if e.err().is_not_found() || e.raw().status().as_u16() == 404 => {}
            Err(e) => return Err(s3_error("head-bucket", &self.bucket, e)),
        }
        let mut create = self.client.create_bucket().bucket(&self.bucket);
        if self.region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        match create.send().await {
            Ok(_) => Ok(()),
            // Another member created it meanwhile.
            Err(SdkError::ServiceError(e))
                if e.err().is_bucket_already_owned_by_you()
                    || e.err().is_bucket_already_exists() =>
            {
                Ok(())
            }
            Err(e) => Err(s3_error("create-bucket", &self.bucket, e)),
        }
    }

    pub async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s3_error("put", key, e))?;
        Ok(())
    }

    /// `If-None-Match: *` or `If-Match: <ETag>`. 412 (and 409, which S3 answers to a
    /// conditional write racing another) is a conflict; so is 404 under `If-Match` (the
    /// object the writer last saw is gone).
    pub async fn put_if(&self, key: &str, body: Bytes, condition: &Precondition) -> Result<String> {
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body));
        let request = match condition {
            Precondition::Absent => request.if_none_match("*"),
            Precondition::Matches(tag) => request.if_match(tag),
        };
        match request.send().await {
            Ok(output) => Ok(etag(output.e_tag())),
            Err(SdkError::ServiceError(e))
                if matches!(e.raw().status().as_u16(), 412 | 409)
                    || (e.raw().status().as_u16() == 404
                        && matches!(condition, Precondition::Matches(_))) =>
            {
                Err(Error::Conflict {
                    key: key.to_string(),
                    detail: format!(
                        "{condition:?}: HTTP {}{}",
                        e.raw().status().as_u16(),
                        e.err().code().map(|c| format!(" {c}")).unwrap_or_default()
                    ),
                })
            }
            Err(e) => Err(s3_error("put", key, e)),
        }
    }

    pub async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, String)>> {
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(SdkError::ServiceError(e))
                if e.err().is_no_such_key() || e.raw().status().as_u16() == 404 =>
            {
                return Ok(None)
            }
            Err(e) => return Err(s3_error("get", key, e)),
        };
        let tag = etag(output.e_tag());
        let body = output.body.collect().await.map_err(|e| Error::Store {
            op: "get",
            key: key.to_string(),
            retryable: true,
            message: format!("reading the body: {e}"),
        })?;
        Ok(Some((body.into_bytes(), tag)))
    }

    pub async fn version(&self, key: &str) -> Result<Option<String>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => Ok(Some(etag(output.e_tag()))),
            Err(SdkError::ServiceError(e))
                if e.err().is_not_found() || e.raw().status().as_u16() == 404 =>
            {
                Ok(None)
            }
            Err(e) => Err(s3_error("head", key, e)),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.get_versioned(key).await?.map(|(bytes, _)| bytes))
    }

    pub async fn open_reader(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("get", key, e))?;
        let reader = Box::pin(output.body.into_async_read());
        Ok(Box::new(tokio_util::io::SyncIoBridge::new_with_handle(
            reader,
            tokio::runtime::Handle::current(),
        )))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error("list", prefix, e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                out.push(ObjectInfo {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    version_tag: object
                        .e_tag()
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_string(),
                });
            }
        }
        Ok(out)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 404 => Ok(()),
            Err(e) => Err(s3_error("delete", key, e)),
        }
    }
}

/// An ETag without its quotes (servers differ in whether `If-Match` may carry them).
fn etag(tag: Option<&str>) -> String {
    tag.unwrap_or_default().trim_matches('"').to_string()
}

/// Classifies an SDK error: transport failures, timeouts, throttling and 5xx can be
/// retried; 4xx (auth, missing bucket, bad request) cannot.
fn s3_error<E, R>(op: &'static str, key: &str, e: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HasStatus,
{
    let retryable = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status_code();
            retryable_status(status, se.err().code())
        }
        _ => false,
    };
    Error::Store {
        op,
        key: key.to_string(),
        retryable,
        message: DisplayErrorContext(&e).to_string(),
    }
}

/// The PEM certificates of `path`, checked the way the TLS client will load them (the
/// SDK's HTTP client would panic on a file it cannot parse).
fn read_ca_file(path: &Path) -> Result<Vec<u8>> {
    let invalid = |reason: String| Error::Config {
        name: pipeline_config::env::S3_CA_FILE.into(),
        reason: format!("{}: {reason}", path.display()),
    };
    let pem = std::fs::read(path).map_err(|e| invalid(format!("cannot read it: {e}")))?;
    check_ca_pem(&pem).map_err(invalid)?;
    Ok(pem)
}

/// At least one PEM certificate, each usable as a trust anchor.
fn check_ca_pem(pem: &[u8]) -> std::result::Result<usize, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    for (n, certificate) in certificates.iter().enumerate() {
        roots
            .add(certificate.clone())
            .map_err(|e| format!("certificate {} is not a usable CA: {e}", n + 1))?;
    }
    Ok(certificates.len())
}

/// The SDK's own HTTPS client (rustls with aws-lc, as by default), trusting only `pem`.
fn http_client_trusting(pem: &[u8]) -> Result<aws_sdk_s3::config::SharedHttpClient> {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
    let trust = TrustStore::empty().with_pem_certificate(pem.to_vec());
    let context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| Error::Config {
            name: pipeline_config::env::S3_CA_FILE.into(),
            reason: e.to_string(),
        })?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https())
}

/// The HTTP status of a raw response (a seam so [`s3_error`] stays generic).
trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

fn retryable_status(status: u16, code: Option<&str>) -> bool {
    status == 429
        || status >= 500
        || matches!(
            code,
            Some("SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable")
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classification() {
        assert!(retryable_status(503, None));
        assert!(retryable_status(500, Some("InternalError")));
        assert!(retryable_status(429, None));
        assert!(retryable_status(400, Some("RequestTimeout")));
        assert!(!retryable_status(403, Some("AccessDenied")));
        assert!(!retryable_status(404, Some("NoSuchBucket")));
    }

    /// A self-signed P-256 CA made with `openssl req -x509` (valid until 2126).
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBezCCASGgAwIBAgIUP2RQG6n4cEYdcbFDFRcq6tGPskwwCgYIKoZIzj0EAwIw\nEjEQMA4GA1UEAwwHdGVzdC1jYTAgFw0yNjEyMDQxNzQwMzNaGA8yMTI2MTExMDE3\nNDAzM1owEjEQMA4GA1UEAwwHdGVzdC1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEH\nA0IABK9zRj2QDAJBjJ+FpEZFmepWiRmBk/Tv5J3LOMOigszSwXm/ygn1hX7yFFz+\n7RqfT6nCPDD6Xo88Ll9hH9IBqfSjUzBRMB0GA1UdDgQWBBRM8yL0OGufNgE+dIV8\nCw6mhYd9jzAfBgNVHSMEGDAWgBRM8yL0OGufNgE+dIV8Cw6mhYd9jzAPBgNVHRMB\nAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCICIEiChCoV+y6z4r9lgAFZqs3LRm\nYJCtaWgnROC3Lwu5AiEAuWsIK68/3pprrzf9nrlusMMvyounOftUV/QTODjjqLg=\n-----END CERTIFICATE-----\n";

    #[test]
    fn a_ca_file_holds_usable_pem_certificates() {
        assert_eq!(check_ca_pem(CA_PEM.as_bytes()), Ok(1));
        // A bundle (current and next CA) is several certificates, all trusted.
        assert_eq!(check_ca_pem(format!("{CA_PEM}{CA_PEM}").as_bytes()), Ok(2));
        assert_eq!(
            check_ca_pem(b"no pem here\n"),
            Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into())
        );
        // Valid PEM armour around bytes that are no certificate.
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let refused = check_ca_pem(garbage.as_bytes()).expect_err("not a certificate");
        assert!(
            refused.starts_with("certificate 1 is not a usable CA: "),
            "{refused}"
        );
    }

    #[test]
    fn an_unreadable_ca_file_is_a_configuration_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("ca.crt");
        let Err(Error::Config { name, reason }) = read_ca_file(&missing) else {
            panic!("a missing CA file must be refused");
        };
        assert_eq!(name, "DP_S3_CA_FILE");
        assert!(
            reason.starts_with(&format!("{}: cannot read it: ", missing.display())),
            "{reason}"
        );
        std::fs::write(&missing, CA_PEM).expect("write");
        assert_eq!(read_ca_file(&missing).expect("a CA"), CA_PEM.as_bytes());
    }
}
