//! Names and labels of a pipeline's children, derived from the pipeline's name, and the
//! keys of the Secrets the operator generates (written by `secrets`, read back by
//! `dereference`). Pure.

use std::collections::BTreeMap;

/// Field manager of every server-side apply, and the `managed-by` label value.
pub const MANAGER: &str = "datapipeline-operator";
/// `app.kubernetes.io/part-of` of every child.
pub const PART_OF: &str = "datapipeline";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";

/// Pod-template annotation holding the sha256 of the runtime configuration.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "checksum/config";

/// What a child is part of: its `app.kubernetes.io/name` and `component` labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Kafka,
    KafkaTopics,
    ObjectStore,
    Bucket,
    Search,
    Runtime,
    Ingest,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Self::Kafka,
        Self::KafkaTopics,
        Self::ObjectStore,
        Self::Bucket,
        Self::Search,
        Self::Runtime,
        Self::Ingest,
    ];

    /// The role whose `component` label value this is.
    pub fn from_component(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.component() == label)
    }

    pub fn app_name(self) -> &'static str {
        match self {
            Self::Kafka | Self::KafkaTopics => "kafka",
            Self::ObjectStore | Self::Bucket => "minio",
            Self::Search => "elasticsearch",
            Self::Runtime | Self::Ingest => "pipeline-runtime",
        }
    }

    pub fn component(self) -> &'static str {
        match self {
            Self::Kafka => "kafka",
            Self::KafkaTopics => "kafka-topics",
            Self::ObjectStore => "object-store",
            Self::Bucket => "bucket",
            Self::Search => "search",
            Self::Runtime => "runtime",
            Self::Ingest => "ingest",
        }
    }
}

/// Labels selecting the pods of one role of one pipeline (immutable in workloads).
pub fn selector_labels(pipeline: &str, role: Role) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), role.app_name().to_string()),
        (LABEL_INSTANCE.to_string(), pipeline.to_string()),
        (LABEL_COMPONENT.to_string(), role.component().to_string()),
    ])
}

/// Every label of a child of one role.
pub fn labels(pipeline: &str, role: Role) -> BTreeMap<String, String> {
    let mut labels = selector_labels(pipeline, role);
    labels.insert(LABEL_MANAGED_BY.to_string(), MANAGER.to_string());
    labels.insert(LABEL_PART_OF.to_string(), PART_OF.to_string());
    labels
}

/// Label selector of everything the operator created for one pipeline (orphan listing).
pub fn children_selector(pipeline: &str) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGER},{LABEL_INSTANCE}={pipeline}")
}

/// `namespace/name`: how a namespaced object (a pipeline, a pod) is named in messages and
/// logs, and the key of a pipeline in the controller's memory.
pub fn namespaced_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// `key=value,...` form of a label map, in key order.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Keys of the Secrets the operator generates.
pub mod keys {
    pub const ACCESS_KEY_ID: &str = "accessKeyId";
    pub const SECRET_ACCESS_KEY: &str = "secretAccessKey";
    pub const ELASTIC: &str = "elastic";
    pub const CA_CRT: &str = "ca.crt";
    pub const TLS_CRT: &str = "tls.crt";
    pub const TLS_KEY: &str = "tls.key";
    /// The pipeline CA's key, and its staged successor and retired predecessor.
    pub const CA_KEY: &str = "ca.key";
    pub const NEXT_CA_CRT: &str = "next-ca.crt";
    pub const NEXT_CA_KEY: &str = "next-ca.key";
    pub const PREVIOUS_CA_CRT: &str = "previous-ca.crt";
    /// Key and certificate in one PEM file, as Kafka's PEM keystore reads them.
    pub const KEYSTORE_PEM: &str = "keystore.pem";
    /// A generated user of a managed OpenSearch, and the bcrypt hash its security
    /// configuration stores.
    pub const USERNAME: &str = "username";
    pub const PASSWORD: &str = "password";
    pub const PASSWORD_HASH: &str = "passwordHash";
}

/// Names of a pipeline's children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildNames {
    base: String,
}

impl ChildNames {
    pub fn new(pipeline: &str) -> Self {
        Self {
            base: pipeline.to_string(),
        }
    }

    fn with(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.base)
    }

    /// Kafka StatefulSet, client Service and PodDisruptionBudget.
    pub fn kafka(&self) -> String {
        self.with("kafka")
    }
    pub fn kafka_headless(&self) -> String {
        self.with("kafka-headless")
    }
    /// The Kafka nodes' certificate, key and trust bundle.
    pub fn kafka_tls(&self) -> String {
        self.with("kafka-tls")
    }
    /// Client certificate of the Kafka superuser: the topic Job and the operator.
    pub fn kafka_admin(&self) -> String {
        self.with("kafka-admin")
    }
    /// Client certificate of the runtime Deployment's pods (the process role).
    pub fn kafka_runtime(&self) -> String {
        self.with("kafka-runtime")
    }
    /// Client certificate of the ingest role's pods (the ingest Deployment, the generator).
    pub fn kafka_ingest(&self) -> String {
        self.with("kafka-ingest")
    }
    /// The pipeline CA (certificates and keys); only the operator reads it.
    pub fn pipeline_ca(&self) -> String {
        self.with("ca")
    }
    /// Prefix of the topic Job; the full name ends with a hash of the Job's spec.
    pub fn kafka_topics_job(&self, hash: &str) -> String {
        self.with(&format!("kafka-topics-{hash}"))
    }
    /// MinIO StatefulSet and Service.
    pub fn minio(&self) -> String {
        self.with("minio")
    }
    pub fn minio_credentials(&self) -> String {
        self.with("minio-credentials")
    }
    /// MinIO's certificate, key and trust bundle.
    pub fn minio_tls(&self) -> String {
        self.with("minio-tls")
    }
    pub fn bucket_job(&self, hash: &str) -> String {
        self.with(&format!("minio-bucket-{hash}"))
    }
    /// Search (Elasticsearch or OpenSearch) StatefulSet, client Service and
    /// PodDisruptionBudget.
    pub fn search(&self) -> String {
        self.with("es")
    }
    pub fn search_headless(&self) -> String {
        self.with("es-headless")
    }
    pub fn elastic_user(&self) -> String {
        self.with("es-elastic-user")
    }
    pub fn search_transport_tls(&self) -> String {
        self.with("es-transport")
    }
    /// A managed OpenSearch's certificate, key and trust bundle (HTTP and transport).
    pub fn search_tls(&self) -> String {
        self.with("es-tls")
    }
    /// The runtime's OpenSearch user (name, password, bcrypt hash); the operator counts
    /// the index as it.
    pub fn search_runtime_user(&self) -> String {
        self.with("es-runtime-user")
    }
    /// A managed OpenSearch's security configuration (users, roles, authentication).
    pub fn search_security(&self) -> String {
        self.with("es-security")
    }
    /// Runtime Deployment and PodDisruptionBudget.
    pub fn runtime(&self) -> String {
        self.with("runtime")
    }
    pub fn runtime_config(&self) -> String {
        self.with("runtime-config")
    }
    /// Ingest Deployment (landing prefix).
    pub fn ingest(&self) -> String {
        self.with("ingest")
    }
    /// Generator Job; the name ends with a hash of its spec so a new spec starts a new run.
    pub fn generator_job(&self, hash: &str) -> String {
        self.with(&format!("generate-{hash}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_names_fit_63_characters() {
        let longest_pipeline = "a".repeat(crate::crd::MAX_NAME_LENGTH);
        let names = ChildNames::new(&longest_pipeline);
        let hash = "0123abcd";
        for name in [
            names.kafka_topics_job(hash),
            names.bucket_job(hash),
            names.generator_job(hash),
            names.kafka_headless(),
            names.minio_credentials(),
            names.kafka_tls(),
        ] {
            assert!(name.len() <= 63, "{name} has {} characters", name.len());
        }
        // StatefulSet pods get a controller-revision-hash label `<sts>-<10 chars>`.
        assert!(names.kafka().len() + 11 <= 63);
        assert!(names.minio().len() + 11 <= 63);
    }

    #[test]
    fn labels_of_a_role() {
        assert_eq!(
            labels("shop", Role::Kafka),
            BTreeMap::from([
                (
                    "app.kubernetes.io/component".to_string(),
                    "kafka".to_string()
                ),
                ("app.kubernetes.io/instance".to_string(), "shop".to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "datapipeline-operator".to_string()
                ),
                ("app.kubernetes.io/name".to_string(), "kafka".to_string()),
                (
                    "app.kubernetes.io/part-of".to_string(),
                    "datapipeline".to_string()
                ),
            ])
        );
        assert_eq!(
            selector_string(&selector_labels("shop", Role::Runtime)),
            "app.kubernetes.io/component=runtime,app.kubernetes.io/instance=shop,app.kubernetes.io/name=pipeline-runtime"
        );
        assert_eq!(
            children_selector("shop"),
            "app.kubernetes.io/managed-by=datapipeline-operator,app.kubernetes.io/instance=shop"
        );
    }
}
