//! Turns a DataPipeline into a `ValidatedPipeline`: every default resolved, every choice
//! (managed or external, landing or generator) made explicit, and the rules of the CRD
//! checked again so a spec that bypassed them (an older CRD) fails with a clear message
//! instead of producing broken children. Pure: no client, no clock, no randomness.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::ResourceRequirements, apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::Resource;
use pipeline_config::PipelineNames;

use super::problem::Problem;
use crate::crd::{
    AutoscalingSpec, DataPipeline, ExternalKafka, ExternalObjectStore, ExternalSearch, KafkaSpec,
    ManagedKafka, ManagedObjectStore, ObjectStoreSpec, SearchEngine, SearchSpec, SourceSpec,
    StorageSpec, MAX_NAME_LENGTH,
};

/// Operator-wide settings that fill gaps in a spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorSettings {
    /// pipeline-runtime image used when `spec.runtime.image` is not set.
    pub runtime_image: String,
    /// The operator's own pods, which the NetworkPolicies admit to Kafka and the search
    /// engine (it reads offsets and `_count`); `None` when it runs outside the cluster or
    /// was not told where it runs (then no policy names it).
    pub operator_pods: Option<OperatorPods>,
}

/// Where the operator's pods run and how they are labelled, as a NetworkPolicy selects
/// them: a namespace (by its `kubernetes.io/metadata.name` label) and pod labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorPods {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

impl OperatorPods {
    /// From the operator's namespace and a `key=value,...` list of its pod labels (the
    /// chart's selector labels); `None` when either is missing or empty.
    pub fn parse(namespace: Option<&str>, labels: Option<&str>) -> Result<Option<Self>, String> {
        let (Some(namespace), Some(labels)) = (
            namespace.map(str::trim).filter(|n| !n.is_empty()),
            labels.map(str::trim).filter(|l| !l.is_empty()),
        ) else {
            return Ok(None);
        };
        let labels = labels
            .split(',')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    Ok((k.trim().to_string(), v.trim().to_string()))
                }
                _ => Err(format!("`{pair}` is not key=value")),
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        Ok(Some(Self {
            namespace: namespace.to_string(),
            labels,
        }))
    }

    /// From `POD_NAMESPACE` (the downward API) and `DATAPIPELINE_OPERATOR_POD_LABELS`.
    pub fn from_environment() -> Result<Option<Self>, String> {
        Self::parse(
            std::env::var(POD_NAMESPACE_ENV).ok().as_deref(),
            std::env::var(OPERATOR_POD_LABELS_ENV).ok().as_deref(),
        )
        .map_err(|e| format!("{OPERATOR_POD_LABELS_ENV}: {e}"))
    }
}

/// The operator's namespace, from the downward API.
pub const POD_NAMESPACE_ENV: &str = "POD_NAMESPACE";
/// The operator's pod labels as `key=value,...` (the chart sets its selector labels).
pub const OPERATOR_POD_LABELS_ENV: &str = "DATAPIPELINE_OPERATOR_POD_LABELS";

/// NetworkPolicies to build: present when `spec.networkPolicies.enabled`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkPolicyPlan {
    /// The operator's pods, admitted where it reads (Kafka, the search engine).
    pub operator: Option<OperatorPods>,
}

/// A DataPipeline with every default resolved; the only input of the builders.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedPipeline {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub owner: OwnerReference,
    pub names: PipelineNames,
    pub source: SourcePlan,
    pub kafka: KafkaPlan,
    pub object_store: ObjectStorePlan,
    pub search: SearchPlan,
    pub runtime: RuntimePlan,
    pub paused: bool,
    /// `None`: no NetworkPolicies (`spec.networkPolicies.enabled: false`).
    pub network_policies: Option<NetworkPolicyPlan>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourcePlan {
    Landing {
        prefix: String,
    },
    Generator {
        events: u64,
        seed: u64,
        rate_per_second: Option<u64>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct KafkaPlan {
    pub mode: KafkaMode,
    pub partitions: i32,
    pub retention_hours: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum KafkaMode {
    Managed(ManagedKafka),
    External(ExternalKafka),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ObjectStorePlan {
    pub mode: ObjectStoreMode,
    pub bucket: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ObjectStoreMode {
    Managed(ManagedObjectStore),
    External(ExternalObjectStore),
}

#[derive(Clone, Debug, PartialEq)]
pub struct SearchPlan {
    pub mode: SearchMode,
    pub index: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SearchMode {
    Managed(ManagedSearchPlan),
    External(ExternalSearch),
}

/// A search cluster the operator deploys, its image resolved for its engine.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagedSearchPlan {
    pub engine: SearchEngine,
    pub replicas: i32,
    pub image: String,
    pub storage: StorageSpec,
    pub resources: Option<ResourceRequirements>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RuntimePlan {
    pub image: String,
    /// Processing pods to run now: 0 when paused, the autoscaler's decision when
    /// autoscaling, else `spec.runtime.replicas` (default 1).
    pub replicas: i32,
    pub resources: Option<ResourceRequirements>,
    pub checkpoint_interval_ms: u64,
    pub autoscaling: Option<AutoscalingSpec>,
}

/// Checks the spec and resolves it: the pipeline's own metadata, then each part of the
/// spec in order (source, Kafka, object store, search, runtime); the first problem found
/// is the one reported.
pub fn validate(
    dp: &DataPipeline,
    settings: &OperatorSettings,
) -> Result<ValidatedPipeline, Problem> {
    let name = dp.metadata.name.clone().unwrap_or_default();
    check_name(&name)?;
    let namespace = dp
        .metadata
        .namespace
        .clone()
        .ok_or_else(|| invalid("metadata.namespace", "a DataPipeline must be namespaced"))?;
    let uid = dp.metadata.uid.clone().ok_or_else(|| {
        invalid(
            "metadata.uid",
            "the object has no uid; it was not read from the API server",
        )
    })?;
    let owner = dp
        .controller_owner_ref(&())
        .ok_or_else(|| invalid("metadata", "cannot reference the DataPipeline as owner"))?;
    let spec = &dp.spec;
    let names = PipelineNames::new(name.clone());
    let source = source_plan(&spec.source)?;
    let kafka = kafka_plan(&spec.kafka)?;
    let object_store = object_store_plan(&spec.object_store)?;
    let search = search_plan(&spec.search, &names)?;
    let runtime = runtime_plan(dp, settings)?;
    Ok(ValidatedPipeline {
        name,
        namespace,
        uid,
        owner,
        names,
        source,
        kafka,
        object_store,
        search,
        runtime,
        paused: spec.paused,
        network_policies: spec.network_policies.enabled.then(|| NetworkPolicyPlan {
            operator: settings.operator_pods.clone(),
        }),
    })
}

/// A landing prefix or a generator with a positive event count, rate and a seed.
fn source_plan(source: &SourceSpec) -> Result<SourcePlan, Problem> {
    match (&source.landing_prefix, &source.generator) {
        (Some(prefix), None) => Ok(SourcePlan::Landing {
            prefix: prefix.clone(),
        }),
        (None, Some(generator)) => {
            let events = positive(generator.events, "spec.source.generator.events")?;
            let rate_per_second = generator
                .rate_per_second
                .map(|r| positive(r, "spec.source.generator.ratePerSecond"))
                .transpose()?;
            let seed = u64::try_from(generator.seed)
                .map_err(|_| invalid("spec.source.generator.seed", "must not be negative"))?;
            Ok(SourcePlan::Generator {
                events,
                seed,
                rate_per_second,
            })
        }
        _ => Err(exactly_one("spec.source", "landingPrefix", "generator")),
    }
}

/// A managed cluster of 1 or at least 3 nodes, or external brokers (with credentials when
/// SASL is on); at least one partition and one hour of retention.
fn kafka_plan(kafka: &KafkaSpec) -> Result<KafkaPlan, Problem> {
    let mode = match (&kafka.managed, &kafka.external) {
        (Some(managed), None) => {
            if managed.replicas < 1 {
                return Err(invalid("spec.kafka.managed.replicas", "must be at least 1"));
            }
            if managed.replicas == 2 {
                return Err(invalid(
                    "spec.kafka.managed.replicas",
                    "must be 1 or at least 3: losing either of two nodes stops the cluster",
                ));
            }
            KafkaMode::Managed(managed.clone())
        }
        (None, Some(external)) => {
            if external.bootstrap_servers.trim().is_empty() {
                return Err(invalid(
                    "spec.kafka.external.bootstrapServers",
                    "must name at least one host:port",
                ));
            }
            if external.security_protocol.uses_sasl()
                && (external.secret_ref.is_none() || external.sasl_mechanism.is_none())
            {
                return Err(invalid(
                    "spec.kafka.external",
                    "SASL needs credentials: set secretRef and saslMechanism",
                ));
            }
            KafkaMode::External(external.clone())
        }
        _ => return Err(exactly_one("spec.kafka", "managed", "external")),
    };
    if kafka.partitions < 1 {
        return Err(invalid("spec.kafka.partitions", "must be at least 1"));
    }
    if kafka.retention_hours < 1 {
        return Err(invalid("spec.kafka.retentionHours", "must be at least 1"));
    }
    Ok(KafkaPlan {
        mode,
        partitions: kafka.partitions,
        retention_hours: kafka.retention_hours,
    })
}

/// A managed or an external store, and a valid bucket name.
fn object_store_plan(store: &ObjectStoreSpec) -> Result<ObjectStorePlan, Problem> {
    let mode = match (&store.managed, &store.external) {
        (Some(managed), None) => ObjectStoreMode::Managed(managed.clone()),
        (None, Some(external)) => ObjectStoreMode::External(external.clone()),
        _ => return Err(exactly_one("spec.objectStore", "managed", "external")),
    };
    check_bucket(&store.bucket)?;
    Ok(ObjectStorePlan {
        mode,
        bucket: store.bucket.clone(),
    })
}

/// A managed cluster of 1 or at least 3 nodes (its image resolved for its engine) or an
/// external engine, and a valid index name (the pipeline's profiles index by default).
fn search_plan(search: &SearchSpec, names: &PipelineNames) -> Result<SearchPlan, Problem> {
    let mode = match (&search.managed, &search.external) {
        (Some(managed), None) => {
            if !(managed.replicas == 1 || managed.replicas >= 3) {
                return Err(invalid(
                    "spec.search.managed.replicas",
                    "must be 1 or at least 3: two master-eligible nodes cannot survive the loss of either",
                ));
            }
            SearchMode::Managed(ManagedSearchPlan {
                engine: managed.engine,
                replicas: managed.replicas,
                image: managed
                    .image
                    .clone()
                    .unwrap_or_else(|| managed.engine.default_image().to_string()),
                storage: managed.storage.clone(),
                resources: managed.resources.clone(),
            })
        }
        (None, Some(external)) => SearchMode::External(external.clone()),
        _ => return Err(exactly_one("spec.search", "managed", "external")),
    };
    let index = search
        .index
        .clone()
        .unwrap_or_else(|| names.profiles_index());
    check_index(&index)?;
    Ok(SearchPlan { mode, index })
}

/// The runtime: autoscaling bounds in order, no negative replicas, a positive checkpoint
/// interval; the image defaults to the operator's setting, and the replicas to run now
/// follow `desired_runtime_replicas` (the autoscaler's last decision is in the status).
fn runtime_plan(dp: &DataPipeline, settings: &OperatorSettings) -> Result<RuntimePlan, Problem> {
    let spec = &dp.spec;
    let runtime = &spec.runtime;
    if let Some(autoscaling) = &runtime.autoscaling {
        if autoscaling.min_replicas < 1 || autoscaling.min_replicas > autoscaling.max_replicas {
            return Err(invalid(
                "spec.runtime.autoscaling",
                &format!(
                    "minReplicas ({}) must be at least 1 and not exceed maxReplicas ({})",
                    autoscaling.min_replicas, autoscaling.max_replicas
                ),
            ));
        }
    }
    if runtime.replicas.is_some_and(|r| r < 0) {
        return Err(invalid("spec.runtime.replicas", "must not be negative"));
    }
    let checkpoint_interval_ms = positive(
        i64::from(runtime.checkpoint_interval_seconds),
        "spec.runtime.checkpointIntervalSeconds",
    )? * 1000;
    let autoscaler_decision = dp
        .status
        .as_ref()
        .and_then(|s| s.autoscaler.as_ref())
        .map(|a| a.desired_replicas);
    Ok(RuntimePlan {
        image: runtime
            .image
            .clone()
            .unwrap_or_else(|| settings.runtime_image.clone()),
        replicas: desired_runtime_replicas(
            spec.paused,
            runtime.replicas,
            runtime.autoscaling.as_ref(),
            autoscaler_decision,
        ),
        resources: runtime.resources.clone(),
        checkpoint_interval_ms,
        autoscaling: runtime.autoscaling.clone(),
    })
}

/// Processing pods to run: none when paused; with autoscaling the autoscaler's last
/// decision (its minimum before the first one), kept within the spec's bounds; otherwise
/// the spec's replicas, 1 by default.
pub fn desired_runtime_replicas(
    paused: bool,
    replicas: Option<i32>,
    autoscaling: Option<&AutoscalingSpec>,
    autoscaler_decision: Option<i32>,
) -> i32 {
    if paused {
        return 0;
    }
    match autoscaling {
        Some(a) => autoscaler_decision
            .unwrap_or(a.min_replicas)
            .clamp(a.min_replicas, a.max_replicas.max(a.min_replicas)),
        None => replicas.unwrap_or(1),
    }
}

fn check_name(name: &str) -> Result<(), Problem> {
    if name.len() > MAX_NAME_LENGTH {
        return Err(invalid(
            "metadata.name",
            &format!("must be at most {MAX_NAME_LENGTH} characters"),
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(invalid(
            "metadata.name",
            "must start with a lowercase letter",
        ));
    }
    Ok(())
}

/// S3 bucket naming rules (the same as the CRD's CEL rule).
pub fn is_valid_bucket_name(bucket: &str) -> bool {
    let bytes = bucket.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-';
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let looks_like_ip = bucket.split('.').count() == 4
        && bucket
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(allowed)
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && !bucket.contains("..")
        && !looks_like_ip
        && !bucket.starts_with("xn--")
        && !bucket.ends_with("-s3alias")
        && !bucket.ends_with("--ol-s3")
}

/// Elasticsearch/OpenSearch index naming rules (the same as the CRD's CEL rule).
pub fn is_valid_index_name(index: &str) -> bool {
    const FORBIDDEN: &[char] = &['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':'];
    !index.is_empty()
        && index.len() <= 255
        && !index
            .chars()
            .any(|c| c.is_ascii_uppercase() || FORBIDDEN.contains(&c))
        && !index.starts_with(['-', '_', '+', '.'])
}

fn check_bucket(bucket: &str) -> Result<(), Problem> {
    if is_valid_bucket_name(bucket) {
        Ok(())
    } else {
        Err(invalid(
            "spec.objectStore.bucket",
            "must be a valid S3 bucket name (3-63 lowercase letters, digits, '.' and '-')",
        ))
    }
}

fn check_index(index: &str) -> Result<(), Problem> {
    if is_valid_index_name(index) {
        Ok(())
    } else {
        Err(invalid(
            "spec.search.index",
            "must be a valid index name (lowercase, none of \\ / * ? \" < > | , # : or spaces)",
        ))
    }
}

fn positive(value: i64, field: &str) -> Result<u64, Problem> {
    u64::try_from(value)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| invalid(field, "must be at least 1"))
}

fn invalid(field: &str, message: &str) -> Problem {
    Problem::InvalidSpec {
        field: field.to_string(),
        message: message.to_string(),
    }
}

fn exactly_one(field: &str, a: &str, b: &str) -> Problem {
    invalid(field, &format!("set exactly one of {a} and {b}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{managed_pipeline, settings};
    use crate::crd::{AutoscalerStatus, DataPipelineStatus};

    #[test]
    fn managed_pipeline_resolves_defaults() {
        let plan = validate(&managed_pipeline(), &settings()).expect("valid");
        assert_eq!(plan.name, "shop");
        assert_eq!(plan.namespace, "shops");
        assert_eq!(plan.search.index, "shop-profiles");
        assert_eq!(plan.runtime.image, "pipeline-runtime:test");
        assert_eq!(plan.runtime.replicas, 1);
        assert_eq!(plan.runtime.checkpoint_interval_ms, 5_000);
        assert_eq!(
            plan.source,
            SourcePlan::Generator {
                events: 1000,
                seed: 7,
                rate_per_second: None
            }
        );
        assert_eq!(plan.owner.kind, "DataPipeline");
        assert_eq!(plan.owner.controller, Some(true));
        assert_eq!(plan.owner.uid, "0b9f5f2e-2c1a-4d5e-9a35-1f4b3c2d1e0f");
    }

    #[test]
    fn the_search_image_defaults_by_engine() {
        let image = |dp: &DataPipeline| match validate(dp, &settings()).expect("valid").search.mode
        {
            SearchMode::Managed(m) => (m.engine, m.image),
            SearchMode::External(_) => unreachable!("managed fixture"),
        };
        assert_eq!(
            image(&managed_pipeline()),
            (
                SearchEngine::Elasticsearch,
                "docker.elastic.co/elasticsearch/elasticsearch:8.18.0".to_string()
            )
        );
        let mut dp = managed_pipeline();
        let managed = dp.spec.search.managed.as_mut().expect("managed");
        managed.engine = SearchEngine::Opensearch;
        assert_eq!(
            image(&dp),
            (
                SearchEngine::Opensearch,
                "opensearchproject/opensearch:2.19.1".to_string()
            )
        );
        dp.spec.search.managed.as_mut().expect("managed").image =
            Some("registry.example.com/opensearch:2.19.1-patched".into());
        assert_eq!(
            image(&dp).1,
            "registry.example.com/opensearch:2.19.1-patched"
        );
    }

    #[test]
    fn both_managed_and_external_is_refused() {
        let mut dp = managed_pipeline();
        dp.spec.kafka.external = Some(ExternalKafka {
            bootstrap_servers: "kafka:9092".into(),
            security_protocol: Default::default(),
            sasl_mechanism: None,
            secret_ref: None,
            ca_secret_ref: None,
        });
        assert_eq!(
            validate(&dp, &settings()),
            Err(Problem::InvalidSpec {
                field: "spec.kafka".into(),
                message: "set exactly one of managed and external".into()
            })
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let mut dp = managed_pipeline();
        dp.spec.object_store.bucket = "Bad_Bucket".into();
        assert_eq!(
            validate(&dp, &settings()).unwrap_err().reason(),
            "InvalidSpec"
        );
        let mut dp = managed_pipeline();
        dp.metadata.name = Some("9lives".into());
        assert_eq!(
            validate(&dp, &settings()),
            Err(Problem::InvalidSpec {
                field: "metadata.name".into(),
                message: "must start with a lowercase letter".into()
            })
        );
    }

    #[test]
    fn two_kafka_nodes_are_refused() {
        for (replicas, valid) in [(1, true), (2, false), (3, true), (5, true)] {
            let mut dp = managed_pipeline();
            if let Some(kafka) = dp.spec.kafka.managed.as_mut() {
                kafka.replicas = replicas;
            }
            let expected = if valid {
                Ok(())
            } else {
                Err(Problem::InvalidSpec {
                    field: "spec.kafka.managed.replicas".into(),
                    message:
                        "must be 1 or at least 3: losing either of two nodes stops the cluster"
                            .into(),
                })
            };
            assert_eq!(
                validate(&dp, &settings()).map(|_| ()),
                expected,
                "{replicas} nodes"
            );
        }
    }

    #[test]
    fn replicas_follow_pause_autoscaler_and_spec() {
        let autoscaling = AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 5,
            lag_per_replica: 1000,
            scale_down_stabilization_seconds: 60,
        };
        assert_eq!(desired_runtime_replicas(true, Some(3), None, None), 0);
        assert_eq!(
            desired_runtime_replicas(true, None, Some(&autoscaling), Some(4)),
            0
        );
        assert_eq!(desired_runtime_replicas(false, None, None, None), 1);
        assert_eq!(desired_runtime_replicas(false, Some(3), None, Some(5)), 3);
        assert_eq!(
            desired_runtime_replicas(false, None, Some(&autoscaling), None),
            2
        );
        assert_eq!(
            desired_runtime_replicas(false, None, Some(&autoscaling), Some(4)),
            4
        );
        assert_eq!(
            desired_runtime_replicas(false, None, Some(&autoscaling), Some(9)),
            5
        );
        assert_eq!(
            desired_runtime_replicas(false, Some(3), Some(&autoscaling), Some(1)),
            2
        );
    }

    #[test]
    fn autoscaler_decision_comes_from_status() {
        let mut dp = managed_pipeline();
        dp.spec.runtime.autoscaling = Some(AutoscalingSpec {
            min_replicas: 1,
            max_replicas: 6,
            lag_per_replica: 1000,
            scale_down_stabilization_seconds: 60,
        });
        dp.status = Some(DataPipelineStatus {
            autoscaler: Some(AutoscalerStatus {
                desired_replicas: 4,
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            validate(&dp, &settings()).expect("valid").runtime.replicas,
            4
        );
        dp.spec.paused = true;
        assert_eq!(
            validate(&dp, &settings()).expect("valid").runtime.replicas,
            0
        );
    }

    #[test]
    fn bucket_and_index_rules_match_the_crd() {
        for good in ["lake", "shop-lake.v2", "abc"] {
            assert!(is_valid_bucket_name(good), "{good}");
        }
        for bad in [
            "ab",
            "Shop",
            "shop_lake",
            "-shop",
            "shop-",
            "shop..lake",
            "192.168.1.10",
            "xn--shop",
            "a-s3alias",
        ] {
            assert!(!is_valid_bucket_name(bad), "{bad}");
        }
        for good in ["shop-profiles", "profiles_v2", "a.b"] {
            assert!(is_valid_index_name(good), "{good}");
        }
        for bad in [
            "", "Shop", "a b", "a\\b", "a/b", "a*", "a?", "a\"", "a<", "a>", "a|", "a,", "a#",
            "a:", "-a", "_a", "+a", ".a",
        ] {
            assert!(!is_valid_index_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_operators_pods_from_its_namespace_and_labels() {
        assert_eq!(
            OperatorPods::parse(
                Some("datapipeline-system"),
                Some("app.kubernetes.io/name=datapipeline-operator, app.kubernetes.io/instance=dp")
            ),
            Ok(Some(OperatorPods {
                namespace: "datapipeline-system".into(),
                labels: BTreeMap::from([
                    ("app.kubernetes.io/instance".into(), "dp".into()),
                    (
                        "app.kubernetes.io/name".into(),
                        "datapipeline-operator".into()
                    ),
                ]),
            }))
        );
        assert_eq!(OperatorPods::parse(None, Some("a=b")), Ok(None));
        assert_eq!(OperatorPods::parse(Some("ns"), Some(" ")), Ok(None));
        assert_eq!(
            OperatorPods::parse(Some("ns"), Some("a=b,oops")),
            Err("`oops` is not key=value".into())
        );
    }

    #[test]
    fn network_policies_follow_the_spec_and_name_the_operator() {
        let plan = validate(&managed_pipeline(), &settings()).expect("valid");
        assert_eq!(
            plan.network_policies,
            Some(NetworkPolicyPlan {
                operator: settings().operator_pods
            })
        );
        let mut dp = managed_pipeline();
        dp.spec.network_policies.enabled = false;
        let plan = validate(&dp, &settings()).expect("valid");
        assert_eq!(plan.network_policies, None);
    }
}
