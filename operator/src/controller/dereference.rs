//! Reads what a DataPipeline refers to but does not contain: the Secrets its spec names
//! (checked for existence and keys, values never kept) and the credentials the operator
//! generated earlier (so they are reused, never regenerated). Also the one place Secrets
//! are read for their values (`read_secret`, `secret_text`: the measuring reads Kafka and
//! search credentials with them). I/O; the decisions about what to read are the pure
//! `referenced_secrets` and `check_references`.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::Secret, ByteString};
use kube::{Api, Client};

use super::{
    build::names::{keys, ChildNames},
    credentials::{GeneratedCredentials, S3Keys, TlsBundle},
    problem::{Component, Problem},
};
use crate::{
    crd::{DataPipelineSpec, SearchEngine},
    error::{Error, Result},
};

/// A Secret the spec names, and the keys it must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretReference {
    pub component: Component,
    /// The spec field naming it, for messages.
    pub field: &'static str,
    pub name: String,
    pub keys: Vec<String>,
}

/// The Secrets a spec names (only those of the external services actually selected).
pub fn referenced_secrets(spec: &DataPipelineSpec) -> Vec<SecretReference> {
    let mut refs = Vec::new();
    if let Some(kafka) = &spec.kafka.external {
        if let Some(s) = &kafka.secret_ref {
            refs.push(SecretReference {
                component: Component::Kafka,
                field: "spec.kafka.external.secretRef",
                name: s.name.clone(),
                keys: vec![s.username_key.clone(), s.password_key.clone()],
            });
        }
        if let Some(ca) = &kafka.ca_secret_ref {
            refs.push(SecretReference {
                component: Component::Kafka,
                field: "spec.kafka.external.caSecretRef",
                name: ca.name.clone(),
                keys: vec![ca.key.clone()],
            });
        }
    }
    if let Some(store) = &spec.object_store.external {
        if let Some(s) = &store.secret_ref {
            refs.push(SecretReference {
                component: Component::ObjectStore,
                field: "spec.objectStore.external.secretRef",
                name: s.name.clone(),
                keys: vec![s.access_key_id_key.clone(), s.secret_access_key_key.clone()],
            });
        }
    }
    if let Some(search) = &spec.search.external {
        if let Some(s) = &search.secret_ref {
            refs.push(SecretReference {
                component: Component::Search,
                field: "spec.search.external.secretRef",
                name: s.name.clone(),
                keys: vec![s.username_key.clone(), s.password_key.clone()],
            });
        }
        if let Some(ca) = &search.ca_secret_ref {
            refs.push(SecretReference {
                component: Component::Search,
                field: "spec.search.external.caSecretRef",
                name: ca.name.clone(),
                keys: vec![ca.key.clone()],
            });
        }
    }
    refs
}

/// Whether a change to the Secret `name` matters to a pipeline with this spec.
pub fn refers_to_secret(spec: &DataPipelineSpec, name: &str) -> bool {
    referenced_secrets(spec).iter().any(|r| r.name == name)
}

/// The first problem with the referenced Secrets, or `None` when they all hold their keys.
pub fn check_references(
    namespace: &str,
    references: &[SecretReference],
    found: &BTreeMap<String, Option<Secret>>,
) -> Option<Problem> {
    for reference in references {
        match found.get(&reference.name).and_then(Option::as_ref) {
            None => {
                return Some(Problem::SecretNotFound {
                    component: reference.component,
                    namespace: namespace.to_string(),
                    name: reference.name.clone(),
                    field: reference.field.to_string(),
                    keys: reference.keys.clone(),
                })
            }
            Some(secret) => {
                if let Some(key) = reference.keys.iter().find(|k| !has_key(secret, k)) {
                    return Some(Problem::SecretKeyNotFound {
                        component: reference.component,
                        namespace: namespace.to_string(),
                        name: reference.name.clone(),
                        field: reference.field.to_string(),
                        key: key.clone(),
                    });
                }
            }
        }
    }
    None
}

fn has_key(secret: &Secret, key: &str) -> bool {
    secret.data.as_ref().is_some_and(|d| d.contains_key(key))
        || secret
            .string_data
            .as_ref()
            .is_some_and(|d| d.contains_key(key))
}

/// The UTF-8 text of a Secret's key, if it has the key.
pub fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let ByteString(bytes) = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.clone()).ok()
}

/// Reads a Secret for its values; the error says which Secret could not be read.
pub async fn read_secret(client: &Client, namespace: &str, name: &str) -> Result<Secret, String> {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| format!("cannot read Secret {namespace}/{name}: {e}"))
}

/// A generated credential: the text of its key, absent when empty.
fn text(secret: &Secret, key: &str) -> Option<String> {
    secret_text(secret, key).filter(|s| !s.is_empty())
}

/// Credentials stored in the operator's own Secrets (each `None` if absent or incomplete).
pub fn existing_credentials(
    minio: Option<&Secret>,
    elastic: Option<&Secret>,
    transport: Option<&Secret>,
) -> GeneratedCredentials {
    GeneratedCredentials {
        minio: minio.and_then(|s| {
            Some(S3Keys {
                access_key_id: text(s, keys::ACCESS_KEY_ID)?,
                secret_access_key: text(s, keys::SECRET_ACCESS_KEY)?,
            })
        }),
        elastic_password: elastic.and_then(|s| text(s, keys::ELASTIC)),
        search_transport: transport.and_then(|s| {
            Some(TlsBundle {
                ca_crt: text(s, keys::CA_CRT)?,
                tls_crt: text(s, keys::TLS_CRT)?,
                tls_key: text(s, keys::TLS_KEY)?,
            })
        }),
    }
}

/// Reads the referenced Secrets (stopping at the first problem) and the generated ones.
pub async fn dereference(
    client: &Client,
    namespace: &str,
    pipeline: &str,
    spec: &DataPipelineSpec,
) -> Result<Result<GeneratedCredentials, Problem>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let references = referenced_secrets(spec);
    let mut found = BTreeMap::new();
    for reference in &references {
        if found.contains_key(&reference.name) {
            continue;
        }
        let secret = get_opt(&secrets, namespace, &reference.name).await?;
        let missing = secret.is_none();
        found.insert(reference.name.clone(), secret);
        if missing {
            break;
        }
    }
    if let Some(problem) = check_references(namespace, &references, &found) {
        return Ok(Err(problem));
    }

    let names = ChildNames::new(pipeline);
    let minio = match spec.object_store.managed {
        Some(_) => get_opt(&secrets, namespace, &names.minio_credentials()).await?,
        None => None,
    };
    // Only a managed Elasticsearch has generated credentials (OpenSearch runs without its
    // security plugin).
    let (elastic, transport) = match &spec.search.managed {
        Some(search) if search.engine == SearchEngine::Elasticsearch => (
            get_opt(&secrets, namespace, &names.elastic_user()).await?,
            get_opt(&secrets, namespace, &names.search_transport_tls()).await?,
        ),
        Some(_) | None => (None, None),
    };
    Ok(Ok(existing_credentials(
        minio.as_ref(),
        elastic.as_ref(),
        transport.as_ref(),
    )))
}

async fn get_opt(secrets: &Api<Secret>, namespace: &str, name: &str) -> Result<Option<Secret>> {
    secrets
        .get_opt(name)
        .await
        .map_err(|source| Error::Dereference {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source: Box::new(source),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{external_pipeline, managed_pipeline, secret_with};

    #[test]
    fn external_pipeline_references_its_secrets() {
        let refs = referenced_secrets(&external_pipeline().spec);
        let summary: Vec<(&str, &str, Vec<&str>)> = refs
            .iter()
            .map(|r| {
                (
                    r.field,
                    r.name.as_str(),
                    r.keys.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "spec.kafka.external.secretRef",
                    "shop-kafka-user",
                    vec!["username", "password"]
                ),
                (
                    "spec.kafka.external.caSecretRef",
                    "shop-kafka-ca",
                    vec!["ca.crt"]
                ),
                (
                    "spec.objectStore.external.secretRef",
                    "shop-s3",
                    vec!["accessKeyId", "secretAccessKey"]
                ),
                (
                    "spec.search.external.secretRef",
                    "shop-search-user",
                    vec!["username", "password"]
                ),
            ]
        );
        assert!(refers_to_secret(&external_pipeline().spec, "shop-s3"));
        assert!(!refers_to_secret(&external_pipeline().spec, "other"));
        assert_eq!(referenced_secrets(&managed_pipeline().spec), vec![]);
    }

    #[test]
    fn missing_secret_and_missing_key_are_problems() {
        let refs = referenced_secrets(&external_pipeline().spec);
        let mut found = BTreeMap::from([("shop-kafka-user".to_string(), None::<Secret>)]);
        assert_eq!(
            check_references("shops", &refs, &found),
            Some(Problem::SecretNotFound {
                component: Component::Kafka,
                namespace: "shops".into(),
                name: "shop-kafka-user".into(),
                field: "spec.kafka.external.secretRef".into(),
                keys: vec!["username".into(), "password".into()],
            })
        );
        found.insert(
            "shop-kafka-user".into(),
            Some(secret_with(
                "shop-kafka-user",
                &[("username", "u"), ("password", "p")],
            )),
        );
        found.insert(
            "shop-kafka-ca".into(),
            Some(secret_with("shop-kafka-ca", &[("ca.crt", "pem")])),
        );
        found.insert(
            "shop-s3".into(),
            Some(secret_with("shop-s3", &[("accessKeyId", "a")])),
        );
        assert_eq!(
            check_references("shops", &refs, &found),
            Some(Problem::SecretKeyNotFound {
                component: Component::ObjectStore,
                namespace: "shops".into(),
                name: "shop-s3".into(),
                field: "spec.objectStore.external.secretRef".into(),
                key: "secretAccessKey".into(),
            })
        );
        found.insert(
            "shop-s3".into(),
            Some(secret_with(
                "shop-s3",
                &[("accessKeyId", "a"), ("secretAccessKey", "b")],
            )),
        );
        found.insert(
            "shop-search-user".into(),
            Some(secret_with(
                "shop-search-user",
                &[("username", "u"), ("password", "p")],
            )),
        );
        assert_eq!(check_references("shops", &refs, &found), None);
    }

    #[test]
    fn generated_secrets_are_read_back() {
        let minio = secret_with(
            "shop-minio-credentials",
            &[("accessKeyId", "shop-admin"), ("secretAccessKey", "s3cret")],
        );
        let elastic = secret_with("shop-es-elastic-user", &[("elastic", "pw")]);
        let partial_tls = secret_with("shop-es-transport", &[("tls.crt", "c")]);
        assert_eq!(
            existing_credentials(Some(&minio), Some(&elastic), Some(&partial_tls)),
            GeneratedCredentials {
                minio: Some(S3Keys {
                    access_key_id: "shop-admin".into(),
                    secret_access_key: "s3cret".into()
                }),
                elastic_password: Some("pw".into()),
                search_transport: None,
            }
        );
    }
}
