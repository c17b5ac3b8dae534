//! The `spec` of a DataPipeline: what users write. Pure data; the doc comments are the
//! `kubectl explain` text, and the `x-kubernetes-validations` (CEL) rules next to each type
//! make the API server refuse impossible specs with a message naming the field.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::DataPipelineStatus;

/// Desired state of a DataPipeline: where events come from, the services they flow
/// through, and the runtime that turns them into customer profiles.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
// Each printcolumn repeats `type_`; clippy mistakes that for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "datapipeline.io",
    version = "v1alpha1",
    kind = "DataPipeline",
    plural = "datapipelines",
    shortname = "dp",
    category = "datapipeline",
    namespaced,
    status = "DataPipelineStatus",
    derive = "PartialEq",
    doc = "A DataPipeline: e-commerce events ingested into Kafka, turned into customer profiles by an autoscaled runtime, stored as Parquet in an object store and indexed for search.",
    scale(
        spec_replicas_path = ".spec.runtime.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Events/s",
        type_ = "number",
        json_path = ".status.throughput.processedPerSecond",
        description = "Events processed per second by the runtime"
    ),
    printcolumn(
        name = "Lag",
        type_ = "integer",
        json_path = ".status.throughput.consumerLag",
        description = "Events in Kafka not yet processed"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "string",
        json_path = ".status.replicasSummary",
        description = "Runtime replicas ready/desired"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DataPipelineSpec {
    /// Where events come from: CSV files under a landing prefix of the object store, or the
    /// built-in generator of REES46-shaped events.
    pub source: SourceSpec,
    /// The Kafka cluster carrying the events: deployed by the operator (`managed`) or an
    /// existing one (`external`), and the topics' partitions and retention.
    pub kafka: KafkaSpec,
    /// The S3-compatible object store holding the Parquet lake: a MinIO deployed by the
    /// operator (`managed`) or an existing endpoint such as AWS S3 (`external`).
    pub object_store: ObjectStoreSpec,
    /// The search engine holding customer profiles: an Elasticsearch or OpenSearch deployed by
    /// the operator (`managed`) or an existing Elasticsearch or OpenSearch (`external`).
    pub search: SearchSpec,
    /// The pipeline-runtime pods that process events into profiles.
    #[serde(default)]
    pub runtime: RuntimeSpec,
    /// Stop processing: the runtime and ingest scale to zero; Kafka, the object store and the
    /// search engine keep running and keep their data. Set back to false to resume where it
    /// stopped.
    #[serde(default)]
    pub paused: bool,
    /// NetworkPolicies around the managed services (on by default): Kafka, the object store
    /// and the search engine admit only this pipeline's own pods (runtime, ingest, setup
    /// Jobs), their own peers (Kafka's controller and replication traffic, the search
    /// cluster's transport) and the operator. Enforced only where the cluster's network
    /// plugin enforces NetworkPolicies.
    #[serde(default)]
    pub network_policies: NetworkPoliciesSpec,
}

/// Whether the operator puts NetworkPolicies around the managed services.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPoliciesSpec {
    /// Create the NetworkPolicies (default true); false deletes them, leaving the managed
    /// services open to every pod that can reach them.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for NetworkPoliciesSpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

fn yes() -> bool {
    true
}

// ------------------------------------------------------------------------------- source

/// Exactly one of `landingPrefix` and `generator`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.landingPrefix) != has(self.generator)",
        "message": "set exactly one of spec.source.landingPrefix (read CSV files from the object store) or spec.source.generator (generate events)"
    }
]))]
pub struct SourceSpec {
    /// Object-store prefix (inside the bucket) where CSV files land, e.g. `landing/`. The
    /// ingest role publishes each new file once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub landing_prefix: Option<String>,
    /// Generate REES46-shaped events instead of reading files (demos and load tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorSpec>,
}

/// Parameters of the built-in event generator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.events >= 1", "message": "spec.source.generator.events must be at least 1"},
    {"rule": "self.seed >= 0", "message": "spec.source.generator.seed must not be negative"},
    {
        "rule": "!has(self.ratePerSecond) || self.ratePerSecond >= 1",
        "message": "spec.source.generator.ratePerSecond must be at least 1 when set (omit it for full speed)"
    }
]))]
pub struct GeneratorSpec {
    /// Number of events to generate.
    pub events: i64,
    /// Seed of the generator: the same seed gives the same events.
    #[serde(default)]
    pub seed: i64,
    /// Publish at most this many events per second; omit for as fast as possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_second: Option<i64>,
}

// -------------------------------------------------------------------------------- kafka

/// Exactly one of `managed` and `external`, plus the topic settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.managed) != has(self.external)",
        "message": "set exactly one of spec.kafka.managed (the operator deploys Kafka) or spec.kafka.external (use an existing Kafka)"
    },
    {
        "rule": "self.partitions >= 1",
        "message": "spec.kafka.partitions must be at least 1"
    },
    {
        "rule": "self.partitions == oldSelf.partitions",
        "messageExpression": "'spec.kafka.partitions cannot change (it is %d, requested %d): ingest sends each user to partition hash(user_id) modulo the partition count and the runtime keeps each profile with its partition, so another count would split profiles between partitions (and Kafka cannot remove partitions); create a new pipeline for another partition count'.format([oldSelf.partitions, self.partitions])"
    },
    {
        "rule": "self.retentionHours >= 1",
        "message": "spec.kafka.retentionHours must be at least 1"
    }
]))]
pub struct KafkaSpec {
    /// Deploy a KRaft Kafka cluster (combined broker and controller nodes) in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedKafka>,
    /// Use an existing Kafka cluster (Strimzi, a cloud service, ...). The topics
    /// `<name>-events` and `<name>-events-dlq` must exist there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalKafka>,
    /// Partitions of the events topic; the runtime never runs more busy replicas than this.
    /// Fixed once the pipeline exists: ingest routes each user to a partition by a hash of
    /// the user id modulo this count, and each profile lives with its partition, so another
    /// count would split profiles. Choose it for the most runtime replicas you expect; for
    /// another count, create a new pipeline.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// How long Kafka keeps events, in hours.
    #[serde(default = "default_retention_hours")]
    pub retention_hours: i64,
}

fn default_partitions() -> i32 {
    6
}

fn default_retention_hours() -> i64 {
    168
}

/// A Kafka cluster deployed by the operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.replicas >= 1", "message": "spec.kafka.managed.replicas must be at least 1"},
    {
        "rule": "self.replicas != 2",
        "message": "spec.kafka.managed.replicas must be 1 or at least 3: with 2 nodes the KRaft quorum of 2 controllers and min.insync.replicas 2 both need every node, so losing either stops the cluster; use 1 (no redundancy) or 3 (survives the loss of a node)"
    },
    {
        "rule": "self.replicas == oldSelf.replicas",
        "messageExpression": "'spec.kafka.managed.replicas cannot change from %d to %d: the nodes form a static KRaft controller quorum (controller.quorum.voters names every node and is fixed when their storage is formatted), which Kafka cannot grow or shrink; create a new pipeline with the replicas you want'.format([oldSelf.replicas, self.replicas])"
    },
    {
        "rule": "self.storage.size == oldSelf.storage.size",
        "messageExpression": "'spec.kafka.managed.storage.size cannot change from %s to %s: it is part of the volumeClaimTemplates of the StatefulSet, which Kubernetes does not let change; to grow the volumes, expand the PersistentVolumeClaims data-<name>-kafka-<n> themselves (if their StorageClass allows expansion), otherwise create a new pipeline'.format([oldSelf.storage.size, self.storage.size])"
    },
    {
        "rule": "(has(self.storage.storageClassName) ? self.storage.storageClassName : '') == (has(oldSelf.storage.storageClassName) ? oldSelf.storage.storageClassName : '')",
        "message": "spec.kafka.managed.storage.storageClassName cannot change: it is part of the volumeClaimTemplates of the StatefulSet, which Kubernetes does not let change, and existing volumes cannot move to another StorageClass; create a new pipeline"
    }
]))]
pub struct ManagedKafka {
    /// Number of Kafka nodes, each both broker and KRaft controller: 1 (no redundancy) or
    /// at least 3 (3 tolerates the loss of one node); 2 is refused, since losing either of
    /// two nodes stops the cluster. Fixed once the pipeline exists: the nodes form a static
    /// KRaft controller quorum that Kafka cannot grow or shrink.
    #[serde(default = "one")]
    pub replicas: i32,
    /// The official Apache Kafka image.
    #[serde(default = "default_kafka_image")]
    pub image: String,
    /// Persistent volume of each node. Its size and class cannot change once the pipeline
    /// exists (a StatefulSet's volumeClaimTemplates are immutable).
    #[serde(default)]
    pub storage: StorageSpec,
    /// CPU and memory of each node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for ManagedKafka {
    fn default() -> Self {
        Self {
            replicas: 1,
            image: default_kafka_image(),
            storage: StorageSpec::default(),
            resources: None,
        }
    }
}

/// Default Apache Kafka image of managed clusters.
pub const DEFAULT_KAFKA_IMAGE: &str = "apache/kafka:4.1.0";

fn default_kafka_image() -> String {
    DEFAULT_KAFKA_IMAGE.into()
}

/// An existing Kafka cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "size(self.bootstrapServers) > 0",
        "message": "spec.kafka.external.bootstrapServers must name at least one host:port"
    },
    {
        "rule": "!self.securityProtocol.startsWith('SASL') || (has(self.secretRef) && has(self.saslMechanism))",
        "message": "SASL needs credentials: set spec.kafka.external.secretRef and spec.kafka.external.saslMechanism"
    }
]))]
pub struct ExternalKafka {
    /// Comma-separated `host:port` list, e.g. `my-cluster-kafka-bootstrap.kafka:9093`.
    #[schemars(length(max = 4096))]
    pub bootstrap_servers: String,
    /// How the runtime talks to the brokers.
    #[serde(default)]
    pub security_protocol: KafkaSecurityProtocol,
    /// SASL mechanism, when `securityProtocol` is `SASL_PLAINTEXT` or `SASL_SSL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// Secret with the SASL username and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<BasicAuthSecretRef>,
    /// Secret with the CA certificate that signed the brokers' certificates (SSL and
    /// SASL_SSL), e.g. Strimzi's `<cluster>-cluster-ca-cert`. Omit to trust the system CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<CaSecretRef>,
}

/// Kafka's `security.protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum KafkaSecurityProtocol {
    #[default]
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    #[serde(rename = "SSL")]
    Ssl,
    #[serde(rename = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

impl KafkaSecurityProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// Kafka's `sasl.mechanism`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

// ------------------------------------------------------------------------- object store

/// Exactly one of `managed` and `external`, plus the bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.managed) != has(self.external)",
        "message": "set exactly one of spec.objectStore.managed (the operator deploys MinIO) or spec.objectStore.external (use an existing S3 endpoint)"
    }
]))]
pub struct ObjectStoreSpec {
    /// Deploy a single-node MinIO in the namespace, with generated credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedObjectStore>,
    /// Use an existing S3-compatible endpoint (AWS S3, MinIO, Ceph, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalObjectStore>,
    /// Bucket of the Parquet lake (`events/`, `profiles/`) and of the landing prefix. The
    /// operator creates it on a managed store; on an external one it must exist.
    #[schemars(length(max = 63))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.matches('^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$') && !self.contains('..') && !self.matches('^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$') && !self.startsWith('xn--') && !self.endsWith('-s3alias') && !self.endsWith('--ol-s3')",
            "message": "spec.objectStore.bucket must be a valid S3 bucket name: 3-63 characters of lowercase letters, digits, '.' and '-', starting and ending with a letter or digit, without '..', not an IP address, not starting with 'xn--'"
        }
    ]))]
    pub bucket: String,
}

/// A MinIO deployed by the operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.storage.size == oldSelf.storage.size",
        "messageExpression": "'spec.objectStore.managed.storage.size cannot change from %s to %s: it is part of the volumeClaimTemplates of the StatefulSet, which Kubernetes does not let change; to grow the volumes, expand the PersistentVolumeClaims data-<name>-minio-0 themselves (if their StorageClass allows expansion), otherwise create a new pipeline'.format([oldSelf.storage.size, self.storage.size])"
    },
    {
        "rule": "(has(self.storage.storageClassName) ? self.storage.storageClassName : '') == (has(oldSelf.storage.storageClassName) ? oldSelf.storage.storageClassName : '')",
        "message": "spec.objectStore.managed.storage.storageClassName cannot change: it is part of the volumeClaimTemplates of the StatefulSet, which Kubernetes does not let change, and existing volumes cannot move to another StorageClass; create a new pipeline"
    }
]))]
pub struct ManagedObjectStore {
    /// The MinIO server image.
    #[serde(default = "default_minio_image")]
    pub image: String,
    /// The MinIO client (`mc`) image of the bucket-creation Job.
    #[serde(default = "default_mc_image")]
    pub client_image: String,
    /// Persistent volume of the MinIO node. Its size and class cannot change once the
    /// pipeline exists (a StatefulSet's volumeClaimTemplates are immutable).
    #[serde(default)]
    pub storage: StorageSpec,
    /// CPU and memory of the MinIO node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for ManagedObjectStore {
    fn default() -> Self {
        Self {
            image: default_minio_image(),
            client_image: default_mc_image(),
            storage: StorageSpec::default(),
            resources: None,
        }
    }
}

/// Default MinIO server image of managed object stores.
pub const DEFAULT_MINIO_IMAGE: &str = "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z";
/// Default MinIO client image of the bucket-creation Job.
pub const DEFAULT_MC_IMAGE: &str = "quay.io/minio/mc:RELEASE.2025-04-16T18-13-26Z";

fn default_minio_image() -> String {
    DEFAULT_MINIO_IMAGE.into()
}

fn default_mc_image() -> String {
    DEFAULT_MC_IMAGE.into()
}

/// An existing S3-compatible endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.endpoint) || self.endpoint.startsWith('http://') || self.endpoint.startsWith('https://')",
        "message": "spec.objectStore.external.endpoint must be a URL starting with http:// or https://"
    }
]))]
pub struct ExternalObjectStore {
    /// S3 endpoint URL, e.g. `https://s3.eu-west-1.amazonaws.com` or
    /// `http://minio.storage:9000`. Omit for AWS S3's default endpoint of the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub endpoint: Option<String>,
    /// Region of the bucket.
    #[serde(default = "default_region")]
    pub region: String,
    /// Address buckets as `endpoint/bucket` (MinIO and most self-hosted servers) rather
    /// than `bucket.endpoint` (AWS virtual-hosted style).
    #[serde(default)]
    pub path_style: bool,
    /// Secret with the access key id and secret access key. Omit to use the pod's ambient
    /// credentials (e.g. IAM roles for service accounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<S3SecretRef>,
    /// Secret with the CA certificate(s) of an `https://` endpoint signed by a private CA;
    /// trusted in place of the system CAs. Omit to trust the system CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<CaSecretRef>,
}

fn default_region() -> String {
    "us-east-1".into()
}

// ------------------------------------------------------------------------------- search

/// Exactly one of `managed` and `external`, plus the index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.managed) != has(self.external)",
        "message": "set exactly one of spec.search.managed (the operator deploys Elasticsearch or OpenSearch) or spec.search.external (use an existing Elasticsearch or OpenSearch)"
    },
    {
        "rule": "!has(self.managed) || !has(oldSelf.managed) || !has(self.managed.engine) || self.managed.engine != 'opensearch' || (has(self.index) ? self.index : '') == (has(oldSelf.index) ? oldSelf.index : '')",
        "message": "spec.search.index cannot change while the operator manages an OpenSearch: the runtime's OpenSearch user may use only the index its role was created for, and OpenSearch loads that role when the cluster first starts; create a new pipeline for another index"
    }
]))]
pub struct SearchSpec {
    /// Deploy a search cluster in the namespace: Elasticsearch (security on, with a
    /// generated password for the `elastic` user) or OpenSearch (TLS and a generated user
    /// limited to the pipeline's index); see `engine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedSearch>,
    /// Use an existing Elasticsearch or OpenSearch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSearch>,
    /// Index of customer profiles (document id = user_id). Defaults to `<name>-profiles`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self == self.lowerAscii() && !self.matches('[\\\\\\\\/*?\"<>| ,#:]') && !self.matches('^[-_+.]')",
            "message": "spec.search.index must be a valid index name: lowercase, without spaces or any of \\ / * ? \" < > | , # :, and not starting with -, _, + or ."
        }
    ]))]
    pub index: Option<String>,
}

/// A search cluster deployed by the operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.replicas == 1 || self.replicas >= 3",
        "message": "spec.search.managed.replicas must be 1 or at least 3: two master-eligible nodes cannot survive the loss of either"
    },
    {
        "rule": "self.engine == oldSelf.engine",
        "messageExpression": "'spec.search.managed.engine cannot change from %s to %s: the volumes of the nodes hold data the other engine cannot read; create a new pipeline, or point spec.search.external at a cluster of the other engine'.format([oldSelf.engine, self.engine])"
    },
    {
        "rule": "self.storage.size == oldSelf.storage.size",
        "messageExpression": "'spec.search.managed.storage.size cannot change from %s to %s: it is part of the volumeClaimTemplates of the StatefulSet, which Kubernetes does not let change; to grow the volumes, expand the PersistentVolumeClaims data-<name>-es-<n> themselves (if their StorageClass allows expansion), otherwise create a new pipeline'.format([oldSelf.storage.size, self.storage.size])"
    },
    {
        "rule": "(has(self.storage.storageClassName) ? self.storage.storageClassName : '') == (has(oldSelf.storage.storageClassName) ? oldSelf.storage.storageClassName : '')",
        "message": "spec.search.managed.storage.storageClassName cannot change: it is part of the volumeClaimTemplates of the StatefulSet, which Kubernetes does not let change, and existing volumes cannot move to another StorageClass; create a new pipeline"
    }
]))]
pub struct ManagedSearch {
    /// Which engine to deploy. `elasticsearch` (default): the official Elasticsearch image
    /// with security on, a generated password for the `elastic` user (Secret
    /// `<name>-es-elastic-user`) and TLS between the nodes. `opensearch`: the official
    /// OpenSearch image with its security plugin on: HTTPS and node-to-node TLS from a
    /// certificate of the pipeline CA (Secret `<name>-es-tls`, renewed with a rolling
    /// restart), and one generated user, `<name>-runtime` (Secret
    /// `<name>-es-runtime-user`), whose role may use the pipeline's index and no other;
    /// no demo users. Cannot change once created.
    #[serde(default)]
    pub engine: SearchEngine,
    /// Number of nodes: 1 (single-node discovery) or at least 3.
    #[serde(default = "one")]
    pub replicas: i32,
    /// The engine's image. Defaults to `docker.elastic.co/elasticsearch/elasticsearch:8.18.0`
    /// for Elasticsearch and `opensearchproject/opensearch:2.19.1` for OpenSearch; another
    /// image must keep the official image's layout and entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Persistent volume of each node. Its size and class cannot change once the pipeline
    /// exists (a StatefulSet's volumeClaimTemplates are immutable).
    #[serde(default)]
    pub storage: StorageSpec,
    /// CPU and memory of each node. The heap is half the memory: Elasticsearch sizes it
    /// from the memory limit itself; for OpenSearch the operator sets `OPENSEARCH_JAVA_OPTS`
    /// to half the memory limit (else the request, else the image's default of 1 GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for ManagedSearch {
    fn default() -> Self {
        Self {
            engine: SearchEngine::default(),
            replicas: 1,
            image: None,
            storage: StorageSpec::default(),
            resources: None,
        }
    }
}

/// Default Elasticsearch image of managed search clusters.
pub const DEFAULT_ELASTICSEARCH_IMAGE: &str =
    "docker.elastic.co/elasticsearch/elasticsearch:8.18.0";
/// Default OpenSearch image of managed search clusters.
pub const DEFAULT_OPENSEARCH_IMAGE: &str = "opensearchproject/opensearch:2.19.1";

/// An existing Elasticsearch or OpenSearch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.url.startsWith('http://') || self.url.startsWith('https://')",
        "message": "spec.search.external.url must be a URL starting with http:// or https://"
    }
]))]
pub struct ExternalSearch {
    /// Base URL, e.g. `https://search.example.com:9200`.
    #[schemars(length(max = 2048))]
    pub url: String,
    /// Which engine serves `url`.
    #[serde(default)]
    pub engine: SearchEngine,
    /// Secret with a username and password (basic authentication). Omit for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<BasicAuthSecretRef>,
    /// Secret with the CA certificate of an `https://` URL signed by a private CA. Omit to
    /// trust the system CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<CaSecretRef>,
}

/// A search engine the runtime can write profiles to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchEngine {
    #[default]
    Elasticsearch,
    Opensearch,
}

impl SearchEngine {
    /// The engine's name as people write it, for messages.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Elasticsearch => "Elasticsearch",
            Self::Opensearch => "OpenSearch",
        }
    }

    /// The image of a managed cluster when the spec names none.
    pub fn default_image(self) -> &'static str {
        match self {
            Self::Elasticsearch => DEFAULT_ELASTICSEARCH_IMAGE,
            Self::Opensearch => DEFAULT_OPENSEARCH_IMAGE,
        }
    }
}

// ------------------------------------------------------------------------------ runtime

/// The pipeline-runtime pods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.replicas) || self.replicas >= 0",
        "message": "spec.runtime.replicas must not be negative"
    },
    {
        "rule": "!has(self.autoscaling) || !has(self.replicas) || (self.replicas >= self.autoscaling.minReplicas && self.replicas <= self.autoscaling.maxReplicas)",
        "messageExpression": "'spec.runtime.replicas (%d) must lie within spec.runtime.autoscaling [minReplicas, maxReplicas] = [%d, %d] while autoscaling is on; remove replicas or autoscaling'.format([self.replicas, self.autoscaling.minReplicas, self.autoscaling.maxReplicas])"
    },
    {
        "rule": "self.checkpointIntervalSeconds >= 1",
        "message": "spec.runtime.checkpointIntervalSeconds must be at least 1"
    }
]))]
pub struct RuntimeSpec {
    /// The pipeline-runtime image. Defaults to the image the operator was installed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Number of processing pods when autoscaling is off (default 1); `kubectl scale dp`
    /// sets it. While autoscaling is on it must lie within [minReplicas, maxReplicas] and
    /// the autoscaler decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// CPU and memory of each processing pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Scale the processing pods on Kafka consumer lag. Present = on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Seconds between checkpoints (Parquet, search index, offsets). Shorter means fresher
    /// profiles and smaller files.
    #[serde(default = "default_checkpoint_interval_seconds")]
    pub checkpoint_interval_seconds: i32,
}

impl Default for RuntimeSpec {
    fn default() -> Self {
        Self {
            image: None,
            replicas: None,
            resources: None,
            autoscaling: None,
            checkpoint_interval_seconds: default_checkpoint_interval_seconds(),
        }
    }
}

fn default_checkpoint_interval_seconds() -> i32 {
    5
}

/// Lag-driven autoscaling: desired = ceil(total lag / lagPerReplica), capped at the
/// partitions that have lag, clamped to [minReplicas, maxReplicas].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.minReplicas >= 1",
        "message": "spec.runtime.autoscaling.minReplicas must be at least 1 (use spec.paused to stop the pipeline)"
    },
    {
        "rule": "self.minReplicas <= self.maxReplicas",
        "messageExpression": "'spec.runtime.autoscaling.minReplicas (%d) must not exceed maxReplicas (%d)'.format([self.minReplicas, self.maxReplicas])"
    },
    {
        "rule": "self.lagPerReplica >= 1",
        "message": "spec.runtime.autoscaling.lagPerReplica must be at least 1"
    },
    {
        "rule": "self.scaleDownStabilizationSeconds >= 0",
        "message": "spec.runtime.autoscaling.scaleDownStabilizationSeconds must not be negative"
    }
]))]
pub struct AutoscalingSpec {
    /// Fewest processing pods.
    #[serde(default = "one")]
    pub min_replicas: i32,
    /// Most processing pods; more than the partition count never helps.
    pub max_replicas: i32,
    /// Target consumer lag (events) per pod.
    #[serde(default = "default_lag_per_replica")]
    pub lag_per_replica: i64,
    /// Scale down only after the lower replica count has been wanted this long.
    #[serde(default = "default_scale_down_stabilization_seconds")]
    pub scale_down_stabilization_seconds: i32,
}

fn default_lag_per_replica() -> i64 {
    100_000
}

fn default_scale_down_stabilization_seconds() -> i32 {
    300
}

// ------------------------------------------------------------------------------- shared

/// A persistent volume per node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of the volume, e.g. `10Gi`.
    #[serde(default = "default_storage_size")]
    #[schemars(length(max = 64))]
    pub size: String,
    /// StorageClass of the volume; omit for the cluster's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,
    /// Keep the volumes when the pipeline is deleted. Default false: the
    /// PersistentVolumeClaims (`data-<name>-kafka-<n>`, `data-<name>-minio-0`,
    /// `data-<name>-es-<n>`) and their data are deleted with the pipeline, or when the spec
    /// stops deploying the service (StatefulSet `persistentVolumeClaimRetentionPolicy`
    /// `whenDeleted: Delete`), so a pipeline created again with the same name starts empty
    /// instead of silently finding the old topics, offsets, objects and profiles. true keeps
    /// them (`whenDeleted: Retain`): a pipeline created later with the same name in the
    /// same namespace then adopts them, data included; delete them with `kubectl delete pvc`
    /// when the data may go. Can change at any time; scaling down never deletes volumes
    /// (`whenScaled: Retain`).
    #[serde(default)]
    pub retain_on_delete: bool,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            retain_on_delete: false,
        }
    }
}

fn default_storage_size() -> String {
    "10Gi".into()
}

/// A Secret (in the DataPipeline's namespace) holding a username and a password.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuthSecretRef {
    /// Name of the Secret. It must carry the label `datapipeline.io/use: "true"` (its
    /// opt-in to DataPipeline use), else the operator refuses it, without reading its data,
    /// with the condition reason `SecretNotOptedIn`.
    pub name: String,
    /// Key of the username.
    #[serde(default = "default_username_key")]
    pub username_key: String,
    /// Key of the password.
    #[serde(default = "default_password_key")]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".into()
}

fn default_password_key() -> String {
    "password".into()
}

/// A Secret (in the DataPipeline's namespace) holding S3 credentials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3SecretRef {
    /// Name of the Secret. It must carry the label `datapipeline.io/use: "true"` (its
    /// opt-in to DataPipeline use), else the operator refuses it, without reading its data,
    /// with the condition reason `SecretNotOptedIn`.
    pub name: String,
    /// Key of the access key id.
    #[serde(default = "default_access_key_id_key")]
    pub access_key_id_key: String,
    /// Key of the secret access key.
    #[serde(default = "default_secret_access_key_key")]
    pub secret_access_key_key: String,
}

fn default_access_key_id_key() -> String {
    "accessKeyId".into()
}

fn default_secret_access_key_key() -> String {
    "secretAccessKey".into()
}

/// A key of a Secret (in the DataPipeline's namespace) holding a PEM CA certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaSecretRef {
    /// Name of the Secret. It must carry the label `datapipeline.io/use: "true"` (its
    /// opt-in to DataPipeline use), else the operator refuses it, without reading its data,
    /// with the condition reason `SecretNotOptedIn`.
    pub name: String,
    /// Key of the PEM certificate.
    #[serde(default = "default_ca_key")]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

fn one() -> i32 {
    1
}
