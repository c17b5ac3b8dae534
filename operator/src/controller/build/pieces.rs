//! The pieces every builder shares: child metadata (namespaced, labelled, owned), pod and
//! container security, environment variables, `/tmp`, scratch, seeded and data volumes,
//! probes, memory quantities, and the spec hash that names Jobs. Pure.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::StatefulSetPersistentVolumeClaimRetentionPolicy,
        core::v1::{
            Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
            KeyToPath, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
            PodSecurityContext, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
            SecretVolumeSource, SecurityContext, TCPSocketAction, Volume, VolumeMount,
            VolumeResourceRequirements,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity, apis::meta::v1::ObjectMeta, util::intstr::IntOrString,
    },
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::names::{labels, Role};
use crate::{
    controller::{credentials::TlsBundle, validate::ValidatedPipeline},
    crd::StorageSpec,
    error::{Error, Result},
};

/// Pod-template annotation of a service serving TLS from the pipeline CA: hash of its
/// certificate and trust bundle, so a renewal rolls the pods (they read them at start).
pub const TLS_CHECKSUM_ANNOTATION: &str = "checksum/tls";

/// Hash of what the pods of a TLS service load at start.
pub fn tls_checksum(tls: &TlsBundle) -> String {
    sha256_hex(format!("{}\n{}", tls.ca_crt, tls.tls_crt).as_bytes())
}

/// Metadata of a child: namespaced, labelled and owned (controller=true) by the pipeline.
pub fn meta(p: &ValidatedPipeline, name: impl Into<String>, role: Role) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(p.namespace.clone()),
        labels: Some(labels(&p.name, role)),
        owner_references: Some(vec![p.owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// Pod-level security: non-root user, the runtime's default seccomp profile.
pub fn pod_security(uid: i64, fs_group: Option<i64>) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group,
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// Container security: no privilege escalation, every capability dropped, and a read-only
/// root filesystem when the image allows it.
pub fn container_security(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            add: None,
            drop: Some(vec!["ALL".into()]),
        }),
        read_only_root_filesystem: Some(read_only_root),
        run_as_non_root: Some(true),
        ..SecurityContext::default()
    }
}

pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

pub fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

pub fn env_from_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: field_path.into(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// A writable `/tmp` for containers with a read-only root filesystem.
pub fn tmp_volume() -> (Volume, VolumeMount) {
    scratch_volume("tmp", "/tmp")
}

/// Keys of a Secret as read-only files in `dir` (owner and group may read: pods run with
/// an `fsGroup`), as a volume and its mount.
pub fn secret_files(volume: &str, secret: &str, keys: &[&str], dir: &str) -> (Volume, VolumeMount) {
    let items = keys
        .iter()
        .map(|key| KeyToPath {
            key: (*key).into(),
            path: (*key).into(),
            mode: None,
        })
        .collect();
    secret_volume(volume, secret, items, Some(0o440), dir)
}

/// The `items` of a Secret as read-only files in `dir`, as a volume and its mount.
pub fn secret_volume(
    volume: &str,
    secret: &str,
    items: Vec<KeyToPath>,
    default_mode: Option<i32>,
    dir: &str,
) -> (Volume, VolumeMount) {
    (
        Volume {
            name: volume.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.into()),
                items: Some(items),
                default_mode,
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        VolumeMount {
            name: volume.into(),
            mount_path: dir.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    )
}

/// An empty writable directory (an emptyDir, gone with the pod) mounted at `path`: where a
/// container with a read-only root filesystem writes logs or scratch files.
pub fn scratch_volume(name: &str, path: &str) -> (Volume, VolumeMount) {
    (
        Volume {
            name: name.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            ..VolumeMount::default()
        },
    )
}

/// A writable copy of one of the image's directories, for an image that writes next to the
/// files it ships (generated configuration, a keystore) while its root filesystem is
/// read-only: an emptyDir that an init container of the same image fills with the
/// directory's files, mounted at the same path in the main container.
#[derive(Clone, Debug, PartialEq)]
pub struct SeededDir {
    pub volume: Volume,
    /// Copies the image's `path` into the volume (read-only root, like the main container).
    pub init_container: Container,
    /// The volume at `path`, for the main container.
    pub mount: VolumeMount,
}

/// Where the init container of a `SeededDir` mounts the volume it fills.
const SEED_MOUNT: &str = "/seed";

pub fn seeded_dir(
    name: &str,
    image: &str,
    path: &str,
    resources: Option<ResourceRequirements>,
) -> SeededDir {
    let (volume, mount) = scratch_volume(name, path);
    SeededDir {
        init_container: Container {
            name: format!("seed-{name}"),
            image: Some(image.into()),
            // No shell: `cp` of the image (GNU or busybox), the directory's content with
            // its subdirectories.
            command: Some(vec![
                "cp".into(),
                "-R".into(),
                format!("{path}/."),
                format!("{SEED_MOUNT}/"),
            ]),
            resources,
            security_context: Some(container_security(true)),
            volume_mounts: Some(vec![VolumeMount {
                mount_path: SEED_MOUNT.into(),
                ..mount.clone()
            }]),
            ..Container::default()
        },
        volume,
        mount,
    }
}

/// The `data` volume claim template of a StatefulSet.
pub fn data_claim(storage: &StorageSpec) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(storage.size.clone()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// What happens to a StatefulSet's volumes: deleted with the StatefulSet (so with the
/// pipeline, whose child it is) unless `retainOnDelete`; never deleted by a scale-down.
pub fn claim_retention(storage: &StorageSpec) -> StatefulSetPersistentVolumeClaimRetentionPolicy {
    StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_deleted: Some(
            if storage.retain_on_delete {
                "Retain"
            } else {
                "Delete"
            }
            .into(),
        ),
        when_scaled: Some("Retain".into()),
    }
}

pub fn tcp_probe(port: i32, initial_delay: i32, period: i32, failures: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(port),
            host: None,
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

pub fn http_probe(path: &str, port: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// `http_probe` over HTTPS (the kubelet does not verify the certificate).
pub fn https_probe(path: &str, port: &str, period: i32, failures: i32) -> Probe {
    let mut probe = http_probe(path, port, period, failures);
    if let Some(get) = probe.http_get.as_mut() {
        get.scheme = Some("HTTPS".into());
    }
    probe
}

/// Bytes of a memory quantity (`1Gi`, `1536Mi`, `2G`, `1e9`, `1073741824`); `None` if it
/// is not one.
pub fn memory_bytes(quantity: &Quantity) -> Option<f64> {
    let text = quantity.0.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let binary = |power: i32| 1024f64.powi(power);
    let factor = match suffix {
        "" => 1.0,
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exponent => {
            let digits = exponent.strip_prefix(['e', 'E'])?;
            10f64.powi(digits.parse().ok()?)
        }
    };
    Some(number * factor).filter(|bytes| bytes.is_finite() && *bytes >= 0.0)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// First 8 hex characters of the sha256 of a value's JSON: names Jobs after their spec,
/// so a changed spec gets a new Job instead of an (impossible) update of a running one.
pub fn short_hash(value: &impl Serialize) -> Result<String> {
    let json = serde_json::to_vec(value).map_err(|e| Error::Build {
        what: "a Job spec hash".into(),
        reason: e.to_string(),
    })?;
    Ok(sha256_hex(&json)[..8].to_string())
}

/// `replicas` as a Kafka/Elasticsearch replication setting: never more than the nodes.
pub fn at_most(value: i32, limit: i32) -> i32 {
    value.min(limit).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities_in_bytes() {
        let bytes = |q: &str| memory_bytes(&Quantity(q.into()));
        assert_eq!(bytes("1Gi"), Some(1_073_741_824.0));
        assert_eq!(bytes("1536Mi"), Some(1_610_612_736.0));
        assert_eq!(bytes("512Ki"), Some(524_288.0));
        assert_eq!(bytes("2G"), Some(2e9));
        assert_eq!(bytes("500M"), Some(5e8));
        assert_eq!(bytes("1e9"), Some(1e9));
        assert_eq!(bytes("1.5Gi"), Some(1_610_612_736.0));
        assert_eq!(bytes("1073741824"), Some(1_073_741_824.0));
        assert_eq!(bytes("1Gb"), None);
        assert_eq!(bytes("Gi"), None);
        assert_eq!(bytes("-1Gi"), None);
    }

    #[test]
    fn short_hash_is_stable() {
        assert_eq!(
            short_hash(&serde_json::json!({"a": 1})).expect("hash"),
            "015abd7f"
        );
    }
}
