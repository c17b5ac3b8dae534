//! The runtime's S3 client over TLS, against a real versitygw (the harness's S3 server)
//! started here with a server certificate from a pipeline CA made by the operator's own
//! generator, as a managed MinIO gets one: with that CA in `DP_S3_CA_FILE` it creates the
//! bucket and writes and reads objects; with another CA, or with the system's roots only,
//! it refuses the server and says that the certificate is the reason.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use datapipeline_operator::controller::credentials::{CredentialGenerator, RandomCredentials};
use datapipeline_operator::controller::pipeline_ca::CaKeyPair;
use e2e::k8s::service_setting;
use e2e::runtime::{free_port, test_validity, unique_name, wait_for};
use pipeline_runtime::config::{S3Credentials, S3Settings, Secret, StoreSettings};
use pipeline_runtime::store::{Bytes, ObjectStore};

const ACCESS_KEY: &str = "e2e-tls-admin";
const SECRET_KEY: &str = "e2e-tls-secret-key";

/// A versitygw serving TLS on a free local port; killed on drop.
struct TlsServer {
    child: Child,
    endpoint: String,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn start_versitygw(dir: &Path, certificate: &Path, key: &Path) -> Result<TlsServer> {
    let binary = service_setting("S3_VERSITYGW")?;
    let (data, meta) = (dir.join("data"), dir.join("meta"));
    std::fs::create_dir_all(&data)?;
    std::fs::create_dir_all(&meta)?;
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("versitygw.log"))?;
    let child = Command::new(&binary)
        .env("ROOT_ACCESS_KEY", ACCESS_KEY)
        .env("ROOT_SECRET_KEY", SECRET_KEY)
        .arg("--port")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--region", "us-east-1", "--keep-alive", "--cert"])
        .arg(certificate)
        .arg("--key")
        .arg(key)
        .arg("posix")
        .arg("--sidecar")
        .arg(&meta)
        .arg(&data)
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("starting {binary}"))?;
    // "localhost": the name the certificate is for.
    Ok(TlsServer {
        child,
        endpoint: format!("https://localhost:{port}"),
    })
}

fn settings(endpoint: &str, bucket: &str, ca_file: Option<PathBuf>) -> StoreSettings {
    StoreSettings::S3(S3Settings {
        bucket: bucket.into(),
        endpoint: Some(endpoint.into()),
        region: "us-east-1".into(),
        path_style: true,
        credentials: Some(S3Credentials {
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: Secret::new(SECRET_KEY),
        }),
        ca_file,
    })
}

fn write(dir: &Path, name: &str, pem: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, pem)?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_trusts_the_pipeline_ca_and_only_it() -> Result<()> {
    e2e::k8s::init_logging();
    let dir = tempfile::tempdir()?;
    let validity = test_validity()?;
    let generator = RandomCredentials;
    let ca: CaKeyPair = generator.certificate_authority("e2e pipeline CA", validity)?;
    let (certificate, key) =
        generator.server_certificate(&ca, "localhost", &["localhost".to_string()], validity)?;
    let other_ca = generator.certificate_authority("e2e other CA", validity)?;
    let certificate = write(dir.path(), "public.crt", &certificate)?;
    let key = write(dir.path(), "private.key", &key)?;
    let ca_file = write(dir.path(), "ca.crt", &ca.crt)?;
    let other_ca_file = write(dir.path(), "other-ca.crt", &other_ca.crt)?;
    // The bundle during a CA rotation: the old CA and its successor.
    let bundle_file = write(
        dir.path(),
        "bundle.crt",
        &format!("{}{}", other_ca.crt, ca.crt),
    )?;

    let server = start_versitygw(dir.path(), &certificate, &key)?;
    let bucket = unique_name("e2e-tls");
    let right = settings(&server.endpoint, &bucket, Some(ca_file));
    let store = wait_for("versitygw over TLS", Duration::from_secs(30), || async {
        Ok(ObjectStore::open(&right).await.ok())
    })
    .await?;
    store
        .put("tls/hello.txt", Bytes::from_static(b"over TLS"))
        .await?;
    assert_eq!(
        store.get("tls/hello.txt").await?,
        Some(Bytes::from_static(b"over TLS"))
    );

    let rotating = settings(&server.endpoint, &bucket, Some(bundle_file));
    let store = ObjectStore::open(&rotating).await?;
    assert_eq!(
        store.get("tls/hello.txt").await?,
        Some(Bytes::from_static(b"over TLS"))
    );

    for (what, ca_file) in [
        ("another CA", Some(other_ca_file)),
        ("the system's roots", None),
    ] {
        let error = ObjectStore::open(&settings(&server.endpoint, &bucket, ca_file))
            .await
            .map(|_| ())
            .expect_err(what);
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("object store: head-bucket {bucket}: "))
                && message.contains("invalid peer certificate: UnknownIssuer"),
            "{what}: {message}"
        );
    }
    Ok(())
}
