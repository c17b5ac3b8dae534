//! Credentials the operator generates for managed services (MinIO keys, the `elastic`
//! password, Elasticsearch transport TLS; the pipeline CA, the server certificates of the
//! managed Kafka, MinIO and OpenSearch and the client certificates of Kafka's users,
//! renewed on `pipeline_ca`'s schedule; the runtime's OpenSearch user, its password and
//! the bcrypt hash OpenSearch's security configuration stores).
//! Generated once: values already stored in their Secrets (read by `dereference`) are
//! reused until they are due for renewal. Randomness sits behind
//! `CredentialGenerator` so reconciles are deterministic in tests. No I/O.

use rand::{distr::Alphanumeric, Rng};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::{
    pipeline_ca::{self, CaKeyPair, CertificateRequest, PipelineCa, Validity},
    validate::{KafkaMode, ObjectStoreMode, SearchMode, ValidatedPipeline},
};
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

/// A generated user of a managed OpenSearch: the password the client sends and the bcrypt
/// hash of it that the engine's `internal_users.yml` holds (hashed once: bcrypt salts, so
/// hashing again would change the configuration and roll the nodes).
#[derive(Clone, PartialEq, Eq)]
pub struct HashedPassword {
    pub password: String,
    pub hash: String,
}

impl std::fmt::Debug for HashedPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashedPassword")
            .field("password", &REDACTED)
            .field("hash", &REDACTED)
            .finish()
    }
}

/// Credentials of the managed services; `None` where the service is external (or, as
/// read from the cluster, where the Secret does not exist yet).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GeneratedCredentials {
    pub minio: Option<S3Keys>,
    pub elastic_password: Option<String>,
    pub search_transport: Option<TlsBundle>,
    /// The pipeline's CA, present when a managed service serves TLS from it.
    pub pipeline_ca: Option<PipelineCa>,
    /// The managed Kafka's server certificate, from `pipeline_ca`.
    pub kafka_tls: Option<TlsBundle>,
    /// Client certificates of the managed Kafka's users (its principal is the subject,
    /// `CN=<Secret name>`): the superuser of the topic Job and the operator, and one user
    /// per runtime role, which ACLs limit to what the role does: the process role's
    /// (`kafka_runtime`: events read, dead letters written, the consumer group) and the
    /// ingest role's (`kafka_ingest`: both topics written and created, the transactions).
    pub kafka_admin: Option<TlsBundle>,
    pub kafka_runtime: Option<TlsBundle>,
    pub kafka_ingest: Option<TlsBundle>,
    /// The managed MinIO's server certificate, from `pipeline_ca`.
    pub minio_tls: Option<TlsBundle>,
    /// The managed OpenSearch's node certificate (HTTP and transport), from `pipeline_ca`.
    pub search_tls: Option<TlsBundle>,
    /// The runtime's user of the managed OpenSearch, whose role reaches the pipeline's
    /// index only.
    pub search_runtime_user: Option<HashedPassword>,
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
            .field("pipeline_ca", &self.pipeline_ca)
            .field("kafka_tls", &self.kafka_tls)
            .field("kafka_admin", &self.kafka_admin)
            .field("kafka_runtime", &self.kafka_runtime)
            .field("kafka_ingest", &self.kafka_ingest)
            .field("minio_tls", &self.minio_tls)
            .field("search_tls", &self.search_tls)
            .field("search_runtime_user", &self.search_runtime_user)
            .finish()
    }
}

/// Source of new secrets.
pub trait CredentialGenerator: Send + Sync {
    /// A random password of letters and digits.
    fn password(&self) -> String;
    /// The bcrypt hash of `password`, as OpenSearch's security plugin stores it (`$2y$`).
    fn password_hash(&self, password: &str) -> Result<String>;
    /// A CA and a node certificate valid for the given DNS names.
    fn tls_bundle(&self, common_name: &str, dns_names: Vec<String>) -> Result<TlsBundle>;
    /// A self-signed CA certificate and its key.
    fn certificate_authority(&self, common_name: &str, validity: Validity) -> Result<CaKeyPair>;
    /// A server (and client) certificate issued by `issuer`, and its key, as PEM.
    fn server_certificate(
        &self,
        issuer: &CaKeyPair,
        common_name: &str,
        dns_names: &[String],
        validity: Validity,
    ) -> Result<(String, String)>;
}

/// DNS names of the managed Kafka's certificate: every node under the headless Service
/// and the client Service, short and fully qualified.
pub fn kafka_certificate_request(plan: &ValidatedPipeline) -> CertificateRequest {
    let names = super::build::names::ChildNames::new(&plan.name);
    let (kafka, headless, namespace) = (names.kafka(), names.kafka_headless(), &plan.namespace);
    CertificateRequest {
        common_name: kafka.clone(),
        dns_names: vec![
            format!("*.{headless}.{namespace}.svc"),
            format!("*.{headless}.{namespace}.svc.cluster.local"),
            format!("{kafka}.{namespace}.svc"),
            format!("{kafka}.{namespace}.svc.cluster.local"),
            format!("{kafka}.{namespace}"),
            kafka,
        ],
    }
}

/// A client certificate of the managed Kafka: its subject, `CN=<name>`, is the user's
/// principal; no host names.
pub fn kafka_user_request(name: String) -> CertificateRequest {
    CertificateRequest {
        common_name: name,
        dns_names: Vec::new(),
    }
}

/// DNS names of a managed OpenSearch's node certificate: every node under the headless
/// Service and the client Service, short and fully qualified, and `localhost` (for
/// `kubectl port-forward`). Its subject, `CN=<search Service>`, is how the nodes recognise
/// each other (`plugins.security.nodes_dn`).
pub fn search_certificate_request(plan: &ValidatedPipeline) -> CertificateRequest {
    let names = super::build::names::ChildNames::new(&plan.name);
    let (search, headless, namespace) = (names.search(), names.search_headless(), &plan.namespace);
    CertificateRequest {
        common_name: search.clone(),
        dns_names: vec![
            format!("*.{headless}.{namespace}.svc"),
            format!("*.{headless}.{namespace}.svc.cluster.local"),
            format!("{search}.{namespace}.svc"),
            format!("{search}.{namespace}.svc.cluster.local"),
            format!("{search}.{namespace}"),
            search,
            "localhost".into(),
        ],
    }
}

/// DNS names of the managed MinIO's certificate: its Service, short and fully qualified.
pub fn minio_certificate_request(plan: &ValidatedPipeline) -> CertificateRequest {
    let minio = super::build::names::ChildNames::new(&plan.name).minio();
    let namespace = &plan.namespace;
    CertificateRequest {
        common_name: minio.clone(),
        dns_names: vec![
            format!("{minio}.{namespace}.svc"),
            format!("{minio}.{namespace}.svc.cluster.local"),
            format!("{minio}.{namespace}"),
            minio,
        ],
    }
}

/// Fills what the managed services need and the cluster does not have yet; keeps every
/// existing value and drops credentials of services that are not managed.
/// `now` (Unix seconds) drives the renewal of the CA and the certificates.
pub fn complete(
    existing: GeneratedCredentials,
    plan: &ValidatedPipeline,
    now: i64,
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
        // A managed OpenSearch gets a certificate from the pipeline CA and a runtime user
        // (below); external engines bring their own credentials.
        SearchMode::Managed(_) | SearchMode::External(_) => (None, None),
    };
    let kafka_managed = matches!(plan.kafka.mode, KafkaMode::Managed(_));
    let minio_managed = matches!(plan.object_store.mode, ObjectStoreMode::Managed(_));
    let opensearch_managed = matches!(
        &plan.search.mode,
        SearchMode::Managed(search) if search.engine == SearchEngine::Opensearch
    );
    let pipeline_ca = match kafka_managed || minio_managed || opensearch_managed {
        true => Some(pipeline_ca::maintain_ca(
            existing.pipeline_ca,
            &plan.name,
            now,
            generator,
        )?),
        false => None,
    };
    let certificate = |managed: bool, stored: Option<TlsBundle>, request: CertificateRequest| match (
        &pipeline_ca,
        managed,
    ) {
        (Some(ca), true) => {
            pipeline_ca::maintain_certificate(stored, ca, &request, now, generator).map(Some)
        }
        _ => Ok(None),
    };
    let kafka_tls = certificate(
        kafka_managed,
        existing.kafka_tls,
        kafka_certificate_request(plan),
    )?;
    let minio_tls = certificate(
        minio_managed,
        existing.minio_tls,
        minio_certificate_request(plan),
    )?;
    let names = super::build::names::ChildNames::new(&plan.name);
    let kafka_admin = certificate(
        kafka_managed,
        existing.kafka_admin,
        kafka_user_request(names.kafka_admin()),
    )?;
    let kafka_runtime = certificate(
        kafka_managed,
        existing.kafka_runtime,
        kafka_user_request(names.kafka_runtime()),
    )?;
    let kafka_ingest = certificate(
        kafka_managed,
        existing.kafka_ingest,
        kafka_user_request(names.kafka_ingest()),
    )?;
    let search_tls = certificate(
        opensearch_managed,
        existing.search_tls,
        search_certificate_request(plan),
    )?;
    let search_runtime_user = match opensearch_managed {
        true => Some(hashed_password(existing.search_runtime_user, generator)?),
        false => None,
    };
    Ok(GeneratedCredentials {
        minio,
        elastic_password,
        search_transport,
        pipeline_ca,
        kafka_tls,
        kafka_admin,
        kafka_runtime,
        kafka_ingest,
        minio_tls,
        search_tls,
        search_runtime_user,
    })
}

/// The stored password and hash when both are there and the hash is of that password's
/// form; a new password (and its hash) otherwise. A stored hash is not re-checked against
/// the password: bcrypt is slow by design and the operator wrote both together.
fn hashed_password(
    stored: Option<HashedPassword>,
    generator: &dyn CredentialGenerator,
) -> Result<HashedPassword> {
    match stored {
        Some(user) if !user.password.is_empty() && !user.hash.is_empty() => Ok(user),
        Some(user) if !user.password.is_empty() => Ok(HashedPassword {
            hash: generator.password_hash(&user.password)?,
            password: user.password,
        }),
        _ => {
            let password = generator.password();
            Ok(HashedPassword {
                hash: generator.password_hash(&password)?,
                password,
            })
        }
    }
}

fn to_offset(seconds: i64) -> std::result::Result<time::OffsetDateTime, rcgen::Error> {
    time::OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| rcgen::Error::Time)
}

/// A certificate for `dns_names` that serves TLS and may also act as a client (nodes talk
/// to each other).
fn server_params(
    common_name: &str,
    dns_names: Vec<String>,
) -> std::result::Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(dns_names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name.to_string());
    // ECDSA keys sign; they never encipher a key (RFC 5480 section 3 forbids
    // keyEncipherment with them, and strict TLS stacks refuse such a certificate).
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
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

    fn password_hash(&self, password: &str) -> Result<String> {
        bcrypt::hash_with_result(password, bcrypt::DEFAULT_COST)
            .map(|parts| parts.format_for_version(bcrypt::Version::TwoY))
            .map_err(|e| Error::Credentials {
                what: "an OpenSearch user's password hash",
                reason: e.to_string(),
            })
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
        let node_params = server_params(common_name, dns_names).map_err(fail)?;
        let node_cert = node_params.signed_by(&node_key, &issuer).map_err(fail)?;
        Ok(TlsBundle {
            ca_crt: ca_cert.pem(),
            tls_crt: node_cert.pem(),
            tls_key: node_key.serialize_pem(),
        })
    }

    fn certificate_authority(&self, common_name: &str, validity: Validity) -> Result<CaKeyPair> {
        let fail = |e: rcgen::Error| Error::Credentials {
            what: "the pipeline CA",
            reason: e.to_string(),
        };
        let key = KeyPair::generate().map_err(fail)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name.to_string());
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = to_offset(validity.not_before).map_err(fail)?;
        params.not_after = to_offset(validity.not_after).map_err(fail)?;
        let crt = params.self_signed(&key).map_err(fail)?;
        Ok(CaKeyPair {
            crt: crt.pem(),
            key: key.serialize_pem(),
        })
    }

    fn server_certificate(
        &self,
        issuer: &CaKeyPair,
        common_name: &str,
        dns_names: &[String],
        validity: Validity,
    ) -> Result<(String, String)> {
        let fail = |e: rcgen::Error| Error::Credentials {
            what: "a server certificate from the pipeline CA",
            reason: e.to_string(),
        };
        let ca_key = KeyPair::from_pem(&issuer.key).map_err(fail)?;
        let issuer = Issuer::from_ca_cert_pem(&issuer.crt, ca_key).map_err(fail)?;
        let key = KeyPair::generate().map_err(fail)?;
        let mut params = server_params(common_name, dns_names.to_vec()).map_err(fail)?;
        params.not_before = to_offset(validity.not_before).map_err(fail)?;
        params.not_after = to_offset(validity.not_after).map_err(fail)?;
        let crt = params.signed_by(&key, &issuer).map_err(fail)?;
        Ok((crt.pem(), key.serialize_pem()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{
        external_pipeline, managed_pipeline, settings, FixedCredentials,
    };
    use crate::controller::validate::validate;

    const NOW: i64 = 1_800_000_000;

    /// What a first reconcile generates for `plan` (deterministic values).
    fn fresh(plan: &ValidatedPipeline) -> GeneratedCredentials {
        complete(
            GeneratedCredentials::default(),
            plan,
            NOW,
            &FixedCredentials,
        )
        .expect("complete")
    }

    #[test]
    fn existing_values_are_kept_and_missing_ones_generated() {
        let plan = validate(&managed_pipeline(), &settings()).expect("valid");
        let existing = GeneratedCredentials {
            minio: None,
            elastic_password: Some("kept-password".into()),
            search_transport: None,
            ..GeneratedCredentials::default()
        };
        let done = complete(existing, &plan, NOW, &FixedCredentials).expect("complete");
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
            ..GeneratedCredentials::default()
        };
        assert_eq!(
            complete(existing, &plan, NOW, &FixedCredentials).expect("complete"),
            GeneratedCredentials::default()
        );
    }

    #[test]
    fn managed_opensearch_gets_no_elasticsearch_credentials() {
        let plan = crate::controller::fixtures::opensearch_plan(1);
        let existing = GeneratedCredentials {
            minio: None,
            elastic_password: Some("left-over".into()),
            search_transport: None,
            ..GeneratedCredentials::default()
        };
        let done = complete(existing, &plan, NOW, &FixedCredentials).expect("complete");
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
    fn a_service_certificate_is_for_signing_only_as_its_ecdsa_key_allows() {
        let tls = RandomCredentials
            .tls_bundle("shop-kafka", vec!["kafka-0.shop".into()])
            .expect("generated");
        let (_, pem) = x509_parser::pem::parse_x509_pem(tls.tls_crt.as_bytes()).expect("PEM");
        let certificate = pem.parse_x509().expect("X.509");
        let usage = certificate
            .key_usage()
            .expect("one key usage extension")
            .expect("present")
            .value;
        assert!(usage.digital_signature());
        assert!(!usage.key_encipherment());
        assert!(!usage.key_cert_sign());
        let extended = certificate
            .extended_key_usage()
            .expect("one extended key usage extension")
            .expect("present")
            .value;
        assert!(extended.server_auth && extended.client_auth);
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
            pipeline_ca: Some(PipelineCa {
                current: CaKeyPair {
                    crt: "CA".into(),
                    key: "CA-KEY-SECRET".into(),
                },
                next: Some(CaKeyPair {
                    crt: "NEXT".into(),
                    key: "NEXT-KEY-SECRET".into(),
                }),
                previous: None,
            }),
            kafka_tls: Some(TlsBundle {
                ca_crt: "CA".into(),
                tls_crt: "CRT".into(),
                tls_key: "KAFKA-KEY-SECRET".into(),
            }),
            kafka_admin: Some(TlsBundle {
                ca_crt: "CA".into(),
                tls_crt: "CRT".into(),
                tls_key: "ADMIN-KEY-SECRET".into(),
            }),
            kafka_runtime: Some(TlsBundle {
                ca_crt: "CA".into(),
                tls_crt: "CRT".into(),
                tls_key: "RUNTIME-KEY-SECRET".into(),
            }),
            kafka_ingest: Some(TlsBundle {
                ca_crt: "CA".into(),
                tls_crt: "CRT".into(),
                tls_key: "INGEST-KEY-SECRET".into(),
            }),
            minio_tls: Some(TlsBundle {
                ca_crt: "CA".into(),
                tls_crt: "CRT".into(),
                tls_key: "MINIO-KEY-SECRET".into(),
            }),
            search_tls: Some(TlsBundle {
                ca_crt: "CA".into(),
                tls_crt: "CRT".into(),
                tls_key: "SEARCH-KEY-SECRET".into(),
            }),
            search_runtime_user: Some(HashedPassword {
                password: "search-SECRET".into(),
                hash: "$2y$12$SECRET-HASH".into(),
            }),
        };
        let text = format!("{credentials:?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("shop-admin"), "{text}");
        assert_eq!(text.matches("<redacted>").count(), 13, "{text}");
    }

    #[test]
    fn managed_kafka_gets_a_pipeline_ca_and_a_certificate_for_its_services() {
        let plan = validate(&managed_pipeline(), &settings()).expect("valid");
        let done = complete(
            GeneratedCredentials::default(),
            &plan,
            NOW,
            &RandomCredentials,
        )
        .expect("complete");
        let ca = done.pipeline_ca.clone().expect("ca");
        let tls = done.kafka_tls.clone().expect("kafka certificate");
        let leaf = pipeline_ca::facts(&tls.tls_crt).expect("readable");
        assert_eq!(
            leaf.issuer,
            pipeline_ca::facts(&ca.current.crt).expect("ca").subject
        );
        assert_eq!(
            leaf.dns_names.into_iter().collect::<Vec<_>>(),
            vec![
                "*.shop-kafka-headless.shops.svc",
                "*.shop-kafka-headless.shops.svc.cluster.local",
                "shop-kafka",
                "shop-kafka.shops",
                "shop-kafka.shops.svc",
                "shop-kafka.shops.svc.cluster.local",
            ]
        );
        assert_eq!(tls.ca_crt, ca.current.crt);
        // MinIO's certificate: the same CA, its Service's names, another key.
        let minio = done.minio_tls.clone().expect("minio certificate");
        assert!(pipeline_ca::signed_by(&minio.tls_crt, &ca.current.crt));
        assert_eq!(
            pipeline_ca::facts(&minio.tls_crt)
                .expect("readable")
                .dns_names
                .into_iter()
                .collect::<Vec<_>>(),
            vec![
                "shop-minio",
                "shop-minio.shops",
                "shop-minio.shops.svc",
                "shop-minio.shops.svc.cluster.local",
            ]
        );
        assert_eq!(minio.ca_crt, ca.current.crt);
        assert_ne!(minio.tls_key, tls.tls_key);
        // Kafka's users: the subject is the principal Kafka sees (`User:CN=...`), no names.
        for (user, subject) in [
            (&done.kafka_admin, "CN=shop-kafka-admin"),
            (&done.kafka_runtime, "CN=shop-kafka-runtime"),
        ] {
            let user = user.clone().expect("a client certificate");
            let leaf = pipeline_ca::facts(&user.tls_crt).expect("readable");
            assert_eq!(leaf.subject, subject);
            assert!(leaf.dns_names.is_empty());
            assert!(pipeline_ca::signed_by(&user.tls_crt, &ca.current.crt));
            assert_eq!(user.ca_crt, ca.current.crt);
        }
        // Stored values are kept on the next reconcile.
        assert_eq!(
            complete(done.clone(), &plan, NOW + 3600, &RandomCredentials).expect("complete"),
            done
        );
    }

    #[test]
    fn a_managed_opensearch_gets_a_certificate_and_a_runtime_user_kept_across_reconciles() {
        // OpenSearch alone managed: the pipeline CA exists for it.
        let mut dp = crate::controller::fixtures::opensearch_pipeline(3);
        dp.spec.kafka = external_pipeline().spec.kafka;
        dp.spec.object_store = external_pipeline().spec.object_store;
        let plan = validate(&dp, &settings()).expect("valid");
        let done = fresh(&plan);
        let ca = done.pipeline_ca.clone().expect("a CA").current.crt;
        assert_eq!(
            done.search_tls.clone().expect("a certificate").tls_crt,
            format!(
                "cert for shop-es from {ca}: *.shop-es-headless.shops.svc,\
                 *.shop-es-headless.shops.svc.cluster.local,shop-es.shops.svc,\
                 shop-es.shops.svc.cluster.local,shop-es.shops,shop-es,localhost"
            )
        );
        assert_eq!(
            done.search_runtime_user,
            Some(HashedPassword {
                password: "generated-password".into(),
                hash: "hash of generated-password".into(),
            })
        );
        assert_eq!(
            (&done.elastic_password, &done.search_transport),
            (&None, &None)
        );
        // Kept as stored (another generator would make other values).
        struct Other;
        impl CredentialGenerator for Other {
            fn password(&self) -> String {
                "other".into()
            }
            fn password_hash(&self, password: &str) -> Result<String> {
                Ok(format!("other hash of {password}"))
            }
            fn tls_bundle(&self, c: &str, d: Vec<String>) -> Result<TlsBundle> {
                FixedCredentials.tls_bundle(c, d)
            }
            fn certificate_authority(&self, c: &str, v: Validity) -> Result<CaKeyPair> {
                FixedCredentials.certificate_authority(c, v)
            }
            fn server_certificate(
                &self,
                i: &CaKeyPair,
                c: &str,
                d: &[String],
                v: Validity,
            ) -> Result<(String, String)> {
                FixedCredentials.server_certificate(i, c, d, v)
            }
        }
        let stored_user = done.search_runtime_user.clone();
        let again = complete(done.clone(), &plan, NOW + 3600, &Other).expect("complete");
        assert_eq!(again.search_runtime_user, stored_user);
        // A stored password without its hash keeps the password and gets a hash of it.
        let hashless = GeneratedCredentials {
            search_runtime_user: Some(HashedPassword {
                password: "kept".into(),
                hash: String::new(),
            }),
            ..done
        };
        assert_eq!(
            complete(hashless, &plan, NOW, &Other)
                .expect("complete")
                .search_runtime_user,
            Some(HashedPassword {
                password: "kept".into(),
                hash: "other hash of kept".into(),
            })
        );
        // An Elasticsearch pipeline has neither.
        let es = fresh(&validate(&managed_pipeline(), &settings()).expect("valid"));
        assert_eq!((es.search_tls, es.search_runtime_user), (None, None));
    }

    #[test]
    fn a_password_hash_is_bcrypt_in_the_form_opensearch_reads() {
        let hash = RandomCredentials.password_hash("s3cret-pw").expect("hash");
        assert!(hash.starts_with("$2y$12$"), "{hash}");
        assert_eq!(hash.len(), 60);
        assert!(bcrypt::verify("s3cret-pw", &hash).expect("verifiable"));
        assert!(!bcrypt::verify("other", &hash).expect("verifiable"));
    }

    #[test]
    fn the_pipeline_ca_exists_while_kafka_or_minio_is_managed() {
        let mut minio_only = managed_pipeline();
        minio_only.spec.kafka = external_pipeline().spec.kafka;
        let plan = validate(&minio_only, &settings()).expect("valid");
        let done = fresh(&plan);
        assert_eq!(done.kafka_tls, None);
        let ca = done.pipeline_ca.expect("a CA for MinIO").current.crt;
        assert!(ca.starts_with("ca shop pipeline CA "), "{ca}");
        assert!(done
            .minio_tls
            .expect("a certificate")
            .tls_crt
            .starts_with(&format!("cert for shop-minio from {ca}: ")));

        let plan = validate(&external_pipeline(), &settings()).expect("valid");
        let done = fresh(&plan);
        assert_eq!(
            (done.pipeline_ca, done.kafka_tls, done.minio_tls),
            (None, None, None)
        );
    }
}
