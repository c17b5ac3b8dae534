//! Managed object store: a single-node MinIO StatefulSet with generated root credentials,
//! serving S3 over TLS only with a certificate from the pipeline CA, its Service, and the
//! Job that creates the bucket with `mc`. Pure.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetSpec},
        batch::v1::Job,
        core::v1::{
            Container, ContainerPort, KeyToPath, PodSpec, PodTemplateSpec, Service, ServicePort,
            ServiceSpec, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};

use super::{
    names::{keys, labels, selector_labels, ChildNames, Role},
    pieces::{
        claim_retention, container_security, data_claim, env, env_from_secret, https_probe, meta,
        pod_security, secret_files, secret_volume, tmp_volume, TLS_CHECKSUM_ANNOTATION,
    },
    setup_job::{setup_job, SetupJob},
};
use crate::{controller::validate::ValidatedPipeline, crd::ManagedObjectStore, error::Result};

pub const API_PORT: i32 = 9000;
pub const CONSOLE_PORT: i32 = 9001;
const MINIO_UID: i64 = 1000;
/// MinIO serves one region; clients must sign for it.
pub const REGION: &str = "us-east-1";
/// MinIO's `--certs-dir`: `public.crt`, `private.key` and `CAs/` (from `<pipeline>-minio-tls`).
const CERTS_DIR: &str = "/etc/minio/certs";
/// `mc`'s configuration directory (writable); it trusts the CAs in `certs/CAs` below it.
const MC_CONFIG_DIR: &str = "/tmp/.mc";
/// The trust bundle, mounted read-only; the script copies it into `mc`'s directory (a
/// mount inside that directory would leave its parents root-owned, and `mc` writes there).
const CA_DIR: &str = "/etc/datapipeline/minio-ca";

/// URL of the S3 API inside the cluster (TLS only, the certificate names this host).
pub fn endpoint(p: &ValidatedPipeline) -> String {
    format!(
        "https://{}.{}.svc:{API_PORT}",
        ChildNames::new(&p.name).minio(),
        p.namespace
    )
}

pub fn service(p: &ValidatedPipeline) -> Service {
    Service {
        metadata: meta(p, ChildNames::new(&p.name).minio(), Role::ObjectStore),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&p.name, Role::ObjectStore)),
            ports: Some(vec![
                ServicePort {
                    name: Some("s3".into()),
                    port: API_PORT,
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("console".into()),
                    port: CONSOLE_PORT,
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The trust bundle alone, for clients (no key).
pub fn trust_volume(p: &ValidatedPipeline, volume: &str, dir: &str) -> (Volume, VolumeMount) {
    secret_files(
        volume,
        &ChildNames::new(&p.name).minio_tls(),
        &[keys::CA_CRT],
        dir,
    )
}

/// The certificate and key under MinIO's names, and the trust bundle in `CAs/` (MinIO
/// creates that directory when it is missing, which a read-only volume would not allow).
fn certs_volume(p: &ValidatedPipeline) -> (Volume, VolumeMount) {
    let item = |key: &str, path: &str| KeyToPath {
        key: key.into(),
        path: path.into(),
        mode: None,
    };
    secret_volume(
        "certs",
        &ChildNames::new(&p.name).minio_tls(),
        vec![
            item(keys::TLS_CRT, "public.crt"),
            item(keys::TLS_KEY, "private.key"),
            item(keys::CA_CRT, "CAs/ca.crt"),
        ],
        Some(0o440),
        CERTS_DIR,
    )
}

/// `tls_checksum` is `pieces::tls_checksum` of the `<pipeline>-minio-tls` bundle.
pub fn statefulset(
    p: &ValidatedPipeline,
    store: &ManagedObjectStore,
    tls_checksum: &str,
) -> StatefulSet {
    let names = ChildNames::new(&p.name);
    let credentials = names.minio_credentials();
    let (tmp, tmp_mount) = tmp_volume();
    let (certs, certs_mount) = certs_volume(p);
    let container = Container {
        name: "minio".into(),
        image: Some(store.image.clone()),
        args: Some(
            [
                "server",
                "/data",
                "--address",
                ":9000",
                "--console-address",
                ":9001",
                "--certs-dir",
                CERTS_DIR,
            ]
            .map(String::from)
            .to_vec(),
        ),
        env: Some(vec![
            env_from_secret("MINIO_ROOT_USER", &credentials, keys::ACCESS_KEY_ID),
            env_from_secret("MINIO_ROOT_PASSWORD", &credentials, keys::SECRET_ACCESS_KEY),
            env("MINIO_REGION", REGION),
            env("HOME", "/tmp"),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("s3".into()),
                container_port: API_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("console".into()),
                container_port: CONSOLE_PORT,
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(https_probe("/minio/health/ready", "s3", 10, 3)),
        liveness_probe: Some(https_probe("/minio/health/live", "s3", 20, 6)),
        resources: store.resources.clone(),
        security_context: Some(container_security(true)),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                ..VolumeMount::default()
            },
            tmp_mount,
            certs_mount,
        ]),
        ..Container::default()
    };
    StatefulSet {
        metadata: meta(p, names.minio(), Role::ObjectStore),
        spec: Some(StatefulSetSpec {
            service_name: Some(names.minio()),
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&p.name, Role::ObjectStore)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&p.name, Role::ObjectStore)),
                    annotations: Some(BTreeMap::from([(
                        TLS_CHECKSUM_ANNOTATION.to_string(),
                        tls_checksum.to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![tmp, certs]),
                    security_context: Some(pod_security(MINIO_UID, Some(MINIO_UID))),
                    enable_service_links: Some(false),
                    automount_service_account_token: Some(false),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![data_claim(&store.storage)]),
            persistent_volume_claim_retention_policy: Some(claim_retention(&store.storage)),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// Creates the bucket once MinIO answers. Idempotent. The keys reach `mc` through its
/// `MC_HOST_<alias>` environment variable (a URL with the keys as user information), set
/// by the shell itself: no command line carries them (a command line is readable by every
/// process of the node in `/proc/<pid>/cmdline`; an environment only by the same user).
/// The generated keys are URL-safe (the pipeline's name and alphanumerics). `mc` trusts
/// the pipeline CA from `$MC_CONFIG_DIR/certs/CAs`.
pub const BUCKET_SCRIPT: &str = r#"set -eu
mkdir -p "$MC_CONFIG_DIR/certs/CAs"
cp "$CA_FILE" "$MC_CONFIG_DIR/certs/CAs/ca.crt"
MC_HOST_store="${S3_ENDPOINT%%://*}://$ACCESS_KEY_ID:$SECRET_ACCESS_KEY@${S3_ENDPOINT#*://}"
export MC_HOST_store
until mc mb --ignore-existing "store/$BUCKET"; do
  echo "waiting for MinIO at $S3_ENDPOINT"
  sleep 5
done
echo "bucket $BUCKET ready"
"#;

pub fn bucket_job(p: &ValidatedPipeline, store: &ManagedObjectStore) -> Result<Job> {
    let credentials = ChildNames::new(&p.name).minio_credentials();
    setup_job(
        p,
        SetupJob {
            role: Role::Bucket,
            container: "create-bucket",
            image: store.client_image.clone(),
            shell: "/bin/sh",
            script: BUCKET_SCRIPT,
            env: vec![
                env("S3_ENDPOINT", endpoint(p)),
                env("BUCKET", p.object_store.bucket.clone()),
                env_from_secret("ACCESS_KEY_ID", &credentials, keys::ACCESS_KEY_ID),
                env_from_secret("SECRET_ACCESS_KEY", &credentials, keys::SECRET_ACCESS_KEY),
                env("MC_CONFIG_DIR", MC_CONFIG_DIR),
                env("CA_FILE", format!("{CA_DIR}/{}", keys::CA_CRT)),
            ],
            volumes: vec![trust_volume(p, "minio-ca", CA_DIR)],
            uid: MINIO_UID,
            name: ChildNames::bucket_job,
        },
    )
}

/// Environment of the runtime for a managed MinIO (keys come from the Secret; the trust
/// bundle is mounted as `ca_file`).
pub fn runtime_config(p: &ValidatedPipeline, ca_file: &str) -> BTreeMap<String, String> {
    use pipeline_config::env as e;
    BTreeMap::from([
        (e::S3_ENDPOINT.to_string(), endpoint(p)),
        (e::S3_REGION.to_string(), REGION.to_string()),
        (e::S3_PATH_STYLE.to_string(), "true".to_string()),
        (e::S3_CA_FILE.to_string(), ca_file.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::managed_plan;
    use crate::controller::validate::ObjectStoreMode;
    use serde_json::json;

    fn plan() -> (ValidatedPipeline, ManagedObjectStore) {
        let p = managed_plan();
        let ObjectStoreMode::Managed(store) = &p.object_store.mode else {
            unreachable!("managed fixture")
        };
        let store = store.clone();
        (p, store)
    }

    #[test]
    fn statefulset_reads_generated_credentials() {
        let (p, store) = plan();
        let sts = serde_json::to_value(statefulset(&p, &store, "tls-sum")).expect("json");
        assert_eq!(sts["metadata"]["name"], "shop-minio");
        assert_eq!(sts["spec"]["replicas"], 1);
        let container = &sts["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], crate::crd::DEFAULT_MINIO_IMAGE);
        assert_eq!(
            container["args"],
            json!([
                "server",
                "/data",
                "--address",
                ":9000",
                "--console-address",
                ":9001",
                "--certs-dir",
                "/etc/minio/certs"
            ])
        );
        assert_eq!(
            container["env"],
            json!([
                {"name": "MINIO_ROOT_USER", "valueFrom": {"secretKeyRef": {"name": "shop-minio-credentials", "key": "accessKeyId", "optional": false}}},
                {"name": "MINIO_ROOT_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "shop-minio-credentials", "key": "secretAccessKey", "optional": false}}},
                {"name": "MINIO_REGION", "value": "us-east-1"},
                {"name": "HOME", "value": "/tmp"}
            ])
        );
        assert_eq!(
            container["readinessProbe"],
            json!({"httpGet": {"path": "/minio/health/ready", "port": "s3", "scheme": "HTTPS"}, "periodSeconds": 10, "failureThreshold": 3})
        );
        assert_eq!(
            container["livenessProbe"]["httpGet"],
            json!({"path": "/minio/health/live", "port": "s3", "scheme": "HTTPS"})
        );
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            container["volumeMounts"],
            json!([{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"},
                   {"name": "certs", "mountPath": "/etc/minio/certs", "readOnly": true}])
        );
        // MinIO's file names, its CAs directory present (it would create it), no other key.
        let pod = &sts["spec"]["template"];
        assert_eq!(
            pod["spec"]["volumes"][1],
            json!({"name": "certs", "secret": {"secretName": "shop-minio-tls", "defaultMode": 0o440,
                   "items": [{"key": "tls.crt", "path": "public.crt"},
                             {"key": "tls.key", "path": "private.key"},
                             {"key": "ca.crt", "path": "CAs/ca.crt"}]}})
        );
        assert_eq!(
            pod["metadata"]["annotations"],
            json!({"checksum/tls": "tls-sum"})
        );
    }

    /// Runs the bucket script with a stand-in `mc` on PATH that records its arguments and
    /// its `MC_HOST_store`: the keys are in the latter only.
    #[test]
    fn bucket_script_keeps_the_keys_off_the_command_line() {
        let dir = std::env::temp_dir().join(format!("bucket-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mc = dir.join("mc");
        std::fs::write(
            &mc,
            "#!/bin/sh\nprintf 'args=%s\\nhost=%s\\n' \"$*\" \"$MC_HOST_store\" >>\"$RECORD\"\n",
        )
        .expect("stub");
        std::fs::set_permissions(&mc, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let record = dir.join("record");
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, "pipeline CA\n").expect("CA file");
        let path = format!(
            "{}:{}",
            dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", BUCKET_SCRIPT])
            .env("PATH", path)
            .env("RECORD", &record)
            .env("S3_ENDPOINT", "http://shop-minio.shops.svc:9000")
            .env("BUCKET", "shop-lake")
            .env("ACCESS_KEY_ID", "shop-admin")
            .env("SECRET_ACCESS_KEY", "Secr3tKey")
            .env("MC_CONFIG_DIR", dir.join(".mc"))
            .env("CA_FILE", &ca)
            .output()
            .expect("sh runs");
        let recorded = std::fs::read_to_string(&record).expect("mc ran");
        // mc finds the CA where it looks for CAs to trust.
        let copied = std::fs::read_to_string(dir.join(".mc/certs/CAs/ca.crt"));
        std::fs::remove_dir_all(&dir).ok();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(copied.expect("CA copied"), "pipeline CA\n");
        assert_eq!(
            recorded,
            "args=mb --ignore-existing store/shop-lake\n\
             host=http://shop-admin:Secr3tKey@shop-minio.shops.svc:9000\n"
        );
        assert!(!BUCKET_SCRIPT.contains("alias set"));
    }

    #[test]
    fn bucket_job_creates_the_spec_bucket() {
        let (p, store) = plan();
        let job = serde_json::to_value(bucket_job(&p, &store).expect("job")).expect("json");
        assert!(job["metadata"]["name"]
            .as_str()
            .expect("name")
            .starts_with("shop-minio-bucket-"));
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], crate::crd::DEFAULT_MC_IMAGE);
        assert_eq!(
            container["command"],
            json!(["/bin/sh", "-c", BUCKET_SCRIPT])
        );
        assert_eq!(
            container["env"][0],
            json!({"name": "S3_ENDPOINT", "value": "https://shop-minio.shops.svc:9000"})
        );
        // mc trusts the pipeline CA from its configuration directory; no key is mounted.
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(
            container["volumeMounts"][1],
            json!({"name": "minio-ca", "mountPath": "/etc/datapipeline/minio-ca", "readOnly": true})
        );
        assert_eq!(
            pod["volumes"][1],
            json!({"name": "minio-ca", "secret": {"secretName": "shop-minio-tls", "defaultMode": 0o440,
                   "items": [{"key": "ca.crt", "path": "ca.crt"}]}})
        );
        assert_eq!(
            container["env"][1],
            json!({"name": "BUCKET", "value": "shop-lake"})
        );
        assert_eq!(
            container["env"][3],
            json!({"name": "SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "shop-minio-credentials", "key": "secretAccessKey", "optional": false}}})
        );
    }

    #[test]
    fn service_exposes_s3_and_console() {
        let (p, _) = plan();
        let svc = serde_json::to_value(service(&p)).expect("json");
        assert_eq!(
            svc["spec"]["ports"],
            json!([{"name": "s3", "port": 9000}, {"name": "console", "port": 9001}])
        );
        assert_eq!(
            runtime_config(&p, "/ca/ca.crt"),
            BTreeMap::from([
                (
                    "DP_S3_ENDPOINT".to_string(),
                    "https://shop-minio.shops.svc:9000".to_string()
                ),
                ("DP_S3_REGION".to_string(), "us-east-1".to_string()),
                ("DP_S3_PATH_STYLE".to_string(), "true".to_string()),
                ("DP_S3_CA_FILE".to_string(), "/ca/ca.crt".to_string()),
            ])
        );
    }
}
