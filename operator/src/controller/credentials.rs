//! Credentials the operator generates for managed services (MinIO keys, the `elastic`
//! password, Elasticsearch transport TLS; a managed OpenSearch, security plugin off, gets
//! none). Generated once: values already stored in their
//! Secrets (read by `dereference`) are always reused. Randomness sits behind
//! `CredentialGenerator` so reconciles are deterministic in tests. No I/O.

use rand::{distr::Alphanumeric, Rng};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::validate::{ObjectStoreMode, SearchMode, ValidatedPipeline};
use crate::{
    crd::SearchEngine,
    error::{Error, Result},
};

/// S3 access key of a managed MinIO (its root user).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Keys {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// PEM CA certificate, node certificate and node key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsBundle {
    pub ca_crt: String,
    pub tls_crt: String,
    pub tls_key: String,
}

/// Credentials of the managed services; `None` where the service is external (or, as
/// read from the cluster, where the Secret does not exist yet).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GeneratedCredentials {
    pub minio: Option<S3Keys>,
    pub elastic_password: Option<String>,
    pub search_transport: Option<TlsBundle>,
}

/// What `Debug` shows of a secret value: whether there is one, never the value, so logs
/// and panic messages carry no credential.
const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for S3Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Keys")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &REDACTED)
            .finish()
    }
}

impl std::fmt::Debug for TlsBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsBundle")
            .field("ca_crt_bytes", &self.ca_crt.len())
            .field("tls_crt_bytes", &self.tls_crt.len())
            .field("tls_key", &REDACTED)
            .finish()
    }
}

impl std::fmt::Debug for GeneratedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCredentials")
            .field("minio", &self.minio)
            .field(
                "elastic_password",
                &self.elastic_password.as_ref().map(|_| REDACTED),
            )
            .field("search_transport", &self.search_transport)
            .finish()
    }
}

/// Source of new secrets.
pub trait CredentialGenerator: Send + Sync {
    /// A random password of letters and digits.
    fn password(&self) -> String;
    /// A CA and a node certificate valid for the given DNS names.
    fn tls_bundle(&self, common_name: &str, dns_names: Vec<String>) -> Result<TlsBundle>;
}

/// Fills what the managed services need and the cluster does not have yet; keeps every
/// existing value and drops credentials of services that are not managed.
pub fn complete(
    existing: GeneratedCredentials,
    plan: &ValidatedPipeline,
    generator: &dyn CredentialGenerator,
) -> Result<GeneratedCredentials> {
    let minio = match plan.object_store.mode {
        ObjectStoreMode::Managed(_) => Some(existing.minio.unwrap_or_else(|| S3Keys {
            access_key_id: format!("{}-admin", plan.name),
            secret_access_key: generator.password(),
        })),
        ObjectStoreMode::External(_) => None,
    };
    let (elastic_password, search_transport) = match &plan.search.mode {
        SearchMode::Managed(search) if search.engine == SearchEngine::Elasticsearch => {
            let password = existing
                .elastic_password
                .unwrap_or_else(|| generator.password());
            let tls = match existing.search_transport {
                Some(tls) => tls,
                None => {
                    let names = super::build::names::ChildNames::new(&plan.name);
                    let headless = names.search_headless();
                    let namespace = &plan.namespace;
                    generator.tls_bundle(
                        &names.search(),
                        vec![
                            format!("*.{headless}.{namespace}.svc"),
                            format!("*.{headless}.{namespace}.svc.cluster.local"),
                            format!("*.{headless}"),
                            headless,
                            "localhost".into(),
                        ],
                    )?
                }
            };
            (Some(password), Some(tls))
        }
        // A managed OpenSearch runs without its security plugin; external engines bring
        // their own credentials.
        SearchMode::Managed(_) | SearchMode::External(_) => (None, None),
    };
    Ok(GeneratedCredentials {
        minio,
        elastic_password,
        search_transport,
    })
}

/// Cryptographically random passwords and freshly generated ECDSA certificates.
pub struct RandomCredentials;

/// Length of generated passwords (alphanumeric: ~190 bits).
const PASSWORD_LENGTH: usize = 32;

impl CredentialGenerator for RandomCredentials {
    fn password(&self) -> String {
        rand::rng()
            .sample_iter(&Alphanumeric)
            .take(PASSWORD_LENGTH)
            .map(char::from)
            .collect()
    }

    fn tls_bundle(&self, common_name: &str, dns_names: Vec<String>) -> Result<TlsBundle> {
        let fail = |e: rcgen::Error| Error::Credentials {
            what: "Elasticsearch transport TLS",
            reason: e.to_string(),
        };
        let ca_key = KeyPair::generate().map_err(fail)?;
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{common_name} transport CA"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(fail)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let node_key = KeyPair::generate().map_err(fail)?;
        let mut node_params = CertificateParams::new(dns_names).map_err(fail)?;
        node_params
            .distinguished_name
            .push(DnType::CommonName, common_name.to_string());
        node_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        node_params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let node_cert = node_params.signed_by(&node_key, &issuer).map_err(fail)?;
        Ok(TlsBundle {
            ca_crt: ca_cert.pem(),
            tls_crt: node_cert.pem(),
            tls_key: node_key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{managed_pipeline, settings, FixedCredentials};
    use crate::controller::validate::validate;

    #[test]
    fn existing_values_are_kept_and_missing_ones_generated() {
        let plan = validate(&managed_pipeline(), &settings()).expect("valid");
        let existing = GeneratedCredentials {
            minio: None,
            elastic_password: Some("kept-password".into()),
            search_transport: None,
        };
        let done = complete(existing, &plan, &FixedCredentials).expect("complete");
        assert_eq!(
            done.minio,
            Some(S3Keys {
                access_key_id: "shop-admin".into(),
                secret_access_key: "generated-password".into()
            })
        );
        assert_eq!(done.elastic_password.as_deref(), Some("kept-password"));
        assert_eq!(
            done.search_transport.map(|t| t.tls_crt),
            Some("cert for shop-es: *.shop-es-headless.shops.svc,*.shop-es-headless.shops.svc.cluster.local,*.shop-es-headless,shop-es-headless,localhost".into())
        );
    }

    #[test]
    fn external_services_get_no_generated_credentials() {
        let plan = validate(
            &crate::controller::fixtures::external_pipeline(),
            &settings(),
        )
        .expect("valid");
        let existing = GeneratedCredentials {
            minio: Some(S3Keys {
                access_key_id: "a".into(),
                secret_access_key: "b".into(),
            }),
            elastic_password: Some("c".into()),
            search_transport: None,
        };
        assert_eq!(
            complete(existing, &plan, &FixedCredentials).expect("complete"),
            GeneratedCredentials::default()
        );
    }

    #[test]
    fn managed_opensearch_gets_no_search_credentials() {
        let plan = crate::controller::fixtures::opensearch_plan(1);
        let existing = GeneratedCredentials {
            minio: None,
            elastic_password: Some("left-over".into()),
            search_transport: None,
        };
        let done = complete(existing, &plan, &FixedCredentials).expect("complete");
        assert_eq!(done.elastic_password, None);
        assert_eq!(done.search_transport, None);
        assert!(done.minio.is_some());
    }

    #[test]
    fn random_passwords_differ_and_are_alphanumeric() {
        let a = RandomCredentials.password();
        let b = RandomCredentials.password();
        assert_eq!(a.len(), PASSWORD_LENGTH);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn generated_tls_bundle_is_pem() {
        let tls = RandomCredentials
            .tls_bundle("shop-es", vec!["shop-es-headless".into()])
            .expect("generated");
        assert!(tls.ca_crt.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(tls.tls_crt.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(tls.tls_key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(tls.ca_crt, tls.tls_crt);
    }

    #[test]
    fn debug_output_carries_no_secret() {
        let credentials = GeneratedCredentials {
            minio: Some(S3Keys {
                access_key_id: "shop-admin".into(),
                secret_access_key: "s3-SECRET".into(),
            }),
            elastic_password: Some("elastic-SECRET".into()),
            search_transport: Some(TlsBundle {
                ca_crt: "CA".into(),
                tls_crt: "CRT".into(),
                tls_key: "KEY-SECRET".into(),
            }),
        };
        let text = format!("{credentials:?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("shop-admin"), "{text}");
        assert_eq!(text.matches("<redacted>").count(), 3, "{text}");
    }
}
