//! The Secrets holding generated credentials (values come from `credentials`, which
//! reuses what already exists). Pure.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::Secret, ByteString};

use super::{
    names::{keys, ChildNames, Role},
    pieces::meta,
};
use crate::controller::{
    credentials::{S3Keys, TlsBundle},
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
    secret(
        p,
        ChildNames::new(&p.name).search_transport_tls(),
        Role::Search,
        "kubernetes.io/tls",
        &[
            (keys::CA_CRT, &tls.ca_crt),
            (keys::TLS_CRT, &tls.tls_crt),
            (keys::TLS_KEY, &tls.tls_key),
        ],
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
}
