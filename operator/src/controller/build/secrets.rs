//! The Secrets holding generated credentials (values come from `credentials`, which
//! reuses what already exists). Pure.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::Secret, ByteString};

use super::{
    names::{keys, ChildNames, Role},
    opensearch,
    pieces::meta,
};
use crate::controller::{
    credentials::{HashedPassword, S3Keys, TlsBundle},
    pipeline_ca::{join_pem, PipelineCa},
    validate::ValidatedPipeline,
};

fn secret(
    p: &ValidatedPipeline,
    name: String,
    role: Role,
    type_: &str,
    data: &[(&str, &str)],
) -> Secret {
    Secret {
        metadata: meta(p, name, role),
        type_: Some(type_.into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}

/// A `kubernetes.io/tls` Secret: the trust bundle (`ca.crt`), a certificate and its key.
fn tls_secret(p: &ValidatedPipeline, name: String, role: Role, tls: &TlsBundle) -> Secret {
    secret(
        p,
        name,
        role,
        "kubernetes.io/tls",
        &[
            (keys::CA_CRT, &tls.ca_crt),
            (keys::TLS_CRT, &tls.tls_crt),
            (keys::TLS_KEY, &tls.tls_key),
        ],
    )
}

/// Root user of the managed MinIO, also the runtime's S3 access key.
pub fn minio_credentials(p: &ValidatedPipeline, keys: &S3Keys) -> Secret {
    secret(
        p,
        ChildNames::new(&p.name).minio_credentials(),
        Role::ObjectStore,
        "Opaque",
        &[
            (self::keys::ACCESS_KEY_ID, &keys.access_key_id),
            (self::keys::SECRET_ACCESS_KEY, &keys.secret_access_key),
        ],
    )
}

/// Password of Elasticsearch's `elastic` user.
pub fn elastic_user(p: &ValidatedPipeline, password: &str) -> Secret {
    secret(
        p,
        ChildNames::new(&p.name).elastic_user(),
        Role::Search,
        "Opaque",
        &[(keys::ELASTIC, password)],
    )
}

/// CA, certificate and key of Elasticsearch's transport layer.
pub fn search_transport_tls(p: &ValidatedPipeline, tls: &TlsBundle) -> Secret {
    tls_secret(
        p,
        ChildNames::new(&p.name).search_transport_tls(),
        Role::Search,
        tls,
    )
}

/// The pipeline CA: the current CA's certificate and key, and the staged and retired ones
/// while they exist. Mounted by no pod. Labelled with the first managed `role` it serves.
pub fn pipeline_ca(p: &ValidatedPipeline, ca: &PipelineCa, role: Role) -> Secret {
    let mut data = vec![
        (keys::CA_CRT, ca.current.crt.as_str()),
        (keys::CA_KEY, &ca.current.key),
    ];
    if let Some(next) = &ca.next {
        data.push((keys::NEXT_CA_CRT, &next.crt));
        data.push((keys::NEXT_CA_KEY, &next.key));
    }
    if let Some(previous) = &ca.previous {
        data.push((keys::PREVIOUS_CA_CRT, previous));
    }
    secret(
        p,
        ChildNames::new(&p.name).pipeline_ca(),
        role,
        "Opaque",
        &data,
    )
}

/// The Kafka nodes' certificate and key (also joined in `keystore.pem`, the form Kafka's
/// PEM keystore reads) and the trust bundle (`ca.crt`), which clients mount alone.
pub fn kafka_tls(p: &ValidatedPipeline, tls: &TlsBundle) -> Secret {
    kafka_user(p, ChildNames::new(&p.name).kafka_tls(), tls)
}

/// A Kafka user's client certificate, in the same form as the nodes' (`keystore.pem` for
/// Kafka's Java tools, `tls.crt`/`tls.key` for librdkafka).
pub fn kafka_user(p: &ValidatedPipeline, name: String, tls: &TlsBundle) -> Secret {
    let keystore = join_pem([tls.tls_key.as_str(), &tls.tls_crt]);
    secret(
        p,
        name,
        Role::Kafka,
        "kubernetes.io/tls",
        &[
            (keys::CA_CRT, &tls.ca_crt),
            (keys::TLS_CRT, &tls.tls_crt),
            (keys::TLS_KEY, &tls.tls_key),
            (keys::KEYSTORE_PEM, &keystore),
        ],
    )
}

/// MinIO's certificate and key (mounted as `public.crt` and `private.key`, MinIO's names)
/// and the trust bundle (`ca.crt`), which clients mount alone.
pub fn minio_tls(p: &ValidatedPipeline, tls: &TlsBundle) -> Secret {
    tls_secret(
        p,
        ChildNames::new(&p.name).minio_tls(),
        Role::ObjectStore,
        tls,
    )
}

/// A managed OpenSearch's node certificate and key (HTTP and transport) and the trust
/// bundle (`ca.crt`), which clients mount alone.
pub fn search_tls(p: &ValidatedPipeline, tls: &TlsBundle) -> Secret {
    tls_secret(p, ChildNames::new(&p.name).search_tls(), Role::Search, tls)
}

/// The runtime's OpenSearch user: name and password (what the runtime and the operator
/// send), and the bcrypt hash kept so that the security configuration stays the same
/// from one reconcile to the next.
pub fn search_runtime_user(p: &ValidatedPipeline, user: &HashedPassword) -> Secret {
    let username = opensearch::runtime_username(p);
    secret(
        p,
        ChildNames::new(&p.name).search_runtime_user(),
        Role::Search,
        "kubernetes.io/basic-auth",
        &[
            (keys::USERNAME, &username),
            (keys::PASSWORD, &user.password),
            (keys::PASSWORD_HASH, &user.hash),
        ],
    )
}

/// The security plugin's configuration files of a managed OpenSearch (a Secret: the user
/// database holds password hashes).
pub fn search_security(p: &ValidatedPipeline, user: &HashedPassword) -> Secret {
    let files = opensearch::security_config(p, &user.hash);
    let data: Vec<(&str, &str)> = files
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    secret(
        p,
        ChildNames::new(&p.name).search_security(),
        Role::Search,
        "Opaque",
        &data,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{fixed_credentials, managed_plan};
    use serde_json::json;

    #[test]
    fn generated_secrets_hold_the_given_values() {
        let p = managed_plan();
        let creds = fixed_credentials();
        let minio =
            serde_json::to_value(minio_credentials(&p, creds.minio.as_ref().expect("minio")))
                .expect("json");
        assert_eq!(minio["metadata"]["name"], "shop-minio-credentials");
        assert_eq!(minio["type"], "Opaque");
        // Values are base64 on the wire: "shop-admin", "minio-secret-key".
        assert_eq!(
            minio["data"],
            json!({"accessKeyId": "c2hvcC1hZG1pbg==", "secretAccessKey": "bWluaW8tc2VjcmV0LWtleQ=="})
        );
        let elastic = serde_json::to_value(elastic_user(&p, "elastic-password")).expect("json");
        assert_eq!(elastic["metadata"]["name"], "shop-es-elastic-user");
        assert_eq!(
            elastic["data"],
            json!({"elastic": "ZWxhc3RpYy1wYXNzd29yZA=="})
        );
        let tls = serde_json::to_value(search_transport_tls(
            &p,
            creds.search_transport.as_ref().expect("tls"),
        ))
        .expect("json");
        assert_eq!(tls["type"], "kubernetes.io/tls");
        assert_eq!(
            tls["data"]
                .as_object()
                .expect("data")
                .keys()
                .collect::<Vec<_>>(),
            vec!["ca.crt", "tls.crt", "tls.key"]
        );
    }

    fn data_text(secret: &serde_json::Value) -> BTreeMap<String, String> {
        use base64::Engine as _;
        secret["data"]
            .as_object()
            .expect("data")
            .iter()
            .map(|(k, v)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().expect("base64"))
                    .expect("decodes");
                (k.clone(), String::from_utf8(bytes).expect("utf-8"))
            })
            .collect()
    }

    #[test]
    fn pipeline_ca_secret_holds_every_ca_of_the_rotation() {
        use crate::controller::pipeline_ca::CaKeyPair;
        let p = managed_plan();
        let mut ca = fixed_credentials().pipeline_ca.expect("ca");
        let only = serde_json::to_value(pipeline_ca(&p, &ca, Role::Kafka)).expect("json");
        assert_eq!(only["metadata"]["name"], "shop-ca");
        assert_eq!(only["type"], "Opaque");
        assert_eq!(
            data_text(&only),
            BTreeMap::from([
                ("ca.crt".to_string(), "pipeline-ca-pem".to_string()),
                ("ca.key".to_string(), "pipeline-ca-key-pem".to_string()),
            ])
        );
        ca.next = Some(CaKeyPair {
            crt: "next-crt".into(),
            key: "next-key".into(),
        });
        ca.previous = Some("old-crt".into());
        let rotating =
            data_text(&serde_json::to_value(pipeline_ca(&p, &ca, Role::Kafka)).expect("json"));
        assert_eq!(rotating["next-ca.crt"], "next-crt");
        assert_eq!(rotating["next-ca.key"], "next-key");
        assert_eq!(rotating["previous-ca.crt"], "old-crt");
    }

    #[test]
    fn kafka_tls_secret_joins_key_and_certificate_for_the_keystore() {
        let p = managed_plan();
        let tls = fixed_credentials().kafka_tls.expect("kafka tls");
        let json = serde_json::to_value(kafka_tls(&p, &tls)).expect("json");
        assert_eq!(json["metadata"]["name"], "shop-kafka-tls");
        assert_eq!(json["type"], "kubernetes.io/tls");
        assert_eq!(
            data_text(&json),
            BTreeMap::from([
                ("ca.crt".to_string(), "pipeline-ca-pem".to_string()),
                ("tls.crt".to_string(), "kafka-cert-pem".to_string()),
                ("tls.key".to_string(), "kafka-key-pem".to_string()),
                (
                    "keystore.pem".to_string(),
                    "kafka-key-pem\nkafka-cert-pem".to_string()
                ),
            ])
        );
    }
}
