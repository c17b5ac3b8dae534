//! Offline checks of the CRD's CEL rules (kube-cel evaluates them the way the API server
//! does, defaults applied first): every `examples/invalid/*.yaml` is refused with exactly
//! the message its header announces, and the valid examples pass. Tests only; reads files.

use std::path::{Path, PathBuf};

use kube_cel::{ValidationError, Validator};
use serde_json::{json, Value};

use super::{crd, DataPipeline};

/// This crate's directory, read at run time (cargo sets it for tests) so a test binary
/// reused from a build cache shared between clones reads this clone's files.
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn schema() -> Value {
    let crd = crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("openAPIV3Schema");
    serde_json::to_value(schema).expect("schema as JSON")
}

fn examples_dir() -> PathBuf {
    crate_dir().join("../examples")
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let value: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            value
        })
        .collect()
}

fn errors(object: &Value, old: Option<&Value>) -> Vec<ValidationError> {
    match Validator::new().validate(&schema(), object, old) {
        Ok(()) => vec![],
        Err(errors) => errors.into_vec(),
    }
}

/// The `# expect-field:` and `# expect-message:` header lines of an invalid example.
fn expectation(path: &Path) -> (String, String) {
    let text = std::fs::read_to_string(path).expect("readable example");
    let header = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{} lacks a `{key}` line", path.display()))
            .to_string()
    };
    (header("# expect-field:"), header("# expect-message:"))
}

#[test]
fn every_invalid_example_is_refused_with_its_message() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir().join("invalid"))
        .expect("examples/invalid exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        28,
        "one invalid example per CEL rule (the transition rules are tested below)"
    );
    for file in files {
        let (field, message) = expectation(&file);
        let docs = yaml_documents(&file);
        assert_eq!(docs.len(), 1, "{}", file.display());
        // The example must be well-formed apart from the rule it breaks.
        serde_json::from_value::<DataPipeline>(docs[0].clone())
            .unwrap_or_else(|e| panic!("{} does not deserialise: {e}", file.display()));
        let found: Vec<(String, String)> = errors(&docs[0], None)
            .into_iter()
            .map(|e| (e.field_path, e.message))
            .collect();
        let field = if field == "<root>" {
            String::new()
        } else {
            field
        };
        assert_eq!(found, vec![(field, message)], "{}", file.display());
    }
}

#[test]
fn valid_examples_pass_every_rule() {
    for name in [
        "shop-events.yaml",
        "shop-events-opensearch.yaml",
        "external-services.yaml",
    ] {
        let path = examples_dir().join(name);
        let pipelines: Vec<Value> = yaml_documents(&path)
            .into_iter()
            .filter(|d| d["kind"] == "DataPipeline")
            .collect();
        assert_eq!(pipelines.len(), 1, "{name}");
        assert_eq!(errors(&pipelines[0], None), vec![], "{name}");
        serde_json::from_value::<DataPipeline>(pipelines[0].clone()).expect(name);
    }
}

fn minimal(name: &str) -> Value {
    json!({
        "apiVersion": "datapipeline.io/v1alpha1",
        "kind": "DataPipeline",
        "metadata": {"name": name},
        "spec": {
            "source": {"generator": {"events": 10, "seed": 1}},
            "kafka": {"managed": {}},
            "objectStore": {"managed": {}, "bucket": "lake"},
            "search": {"managed": {}}
        }
    })
}

/// The (field, message) pairs of the refusal of `new` replacing `old`.
fn transition_errors(new: &Value, old: &Value) -> Vec<(String, String)> {
    errors(new, Some(old))
        .into_iter()
        .map(|e| (e.field_path, e.message))
        .collect()
}

fn refusal(field: &str, message: &str) -> Vec<(String, String)> {
    vec![(field.to_string(), message.to_string())]
}

#[test]
fn partitions_cannot_change() {
    let mut old = minimal("shop");
    old["spec"]["kafka"]["partitions"] = json!(6);
    let why = "ingest sends each user to partition hash(user_id) modulo the partition count and the runtime keeps each profile with its partition, so another count would split profiles between partitions (and Kafka cannot remove partitions); create a new pipeline for another partition count";
    for (requested, shown) in [(12, "it is 6, requested 12"), (3, "it is 6, requested 3")] {
        let mut changed = old.clone();
        changed["spec"]["kafka"]["partitions"] = json!(requested);
        assert_eq!(
            transition_errors(&changed, &old),
            refusal(
                "spec.kafka",
                &format!("spec.kafka.partitions cannot change ({shown}): {why}")
            ),
            "{requested} partitions"
        );
    }
    // Other Kafka settings may change. The partitions of an external Kafka's topics are
    // just as fixed (the rule is on spec.kafka, whoever runs Kafka).
    let mut retention = old.clone();
    retention["spec"]["kafka"]["retentionHours"] = json!(24);
    assert_eq!(transition_errors(&retention, &old), vec![]);
    let external =
        json!({"external": {"bootstrapServers": "kafka.example.com:9092"}, "partitions": 6});
    let mut old_external = old.clone();
    old_external["spec"]["kafka"] = external.clone();
    let mut grown_external = old_external.clone();
    grown_external["spec"]["kafka"]["partitions"] = json!(8);
    assert_eq!(
        transition_errors(&grown_external, &old_external),
        refusal(
            "spec.kafka",
            &format!("spec.kafka.partitions cannot change (it is 6, requested 8): {why}")
        )
    );
    // Left out, the partitions default to 6: writing the default is no change.
    let mut implicit = minimal("shop");
    implicit["spec"]["kafka"]["managed"] = json!({});
    assert_eq!(transition_errors(&implicit, &old), vec![]);
}

#[test]
fn two_kafka_nodes_are_refused() {
    for (replicas, valid) in [(1, true), (2, false), (3, true), (4, true)] {
        let mut dp = minimal("shop");
        dp["spec"]["kafka"]["managed"] = json!({"replicas": replicas});
        let found: Vec<(String, String)> = errors(&dp, None)
            .into_iter()
            .map(|e| (e.field_path, e.message))
            .collect();
        let expected = if valid {
            vec![]
        } else {
            refusal(
                "spec.kafka.managed",
                "spec.kafka.managed.replicas must be 1 or at least 3: with 2 nodes the KRaft quorum of 2 controllers and min.insync.replicas 2 both need every node, so losing either stops the cluster; use 1 (no redundancy) or 3 (survives the loss of a node)",
            )
        };
        assert_eq!(found, expected, "{replicas} Kafka nodes");
    }
}

#[test]
fn the_managed_kafka_node_count_cannot_change() {
    let mut old = minimal("shop");
    old["spec"]["kafka"]["managed"] = json!({"replicas": 3});
    for (replicas, from_to) in [(5, "from 3 to 5"), (1, "from 3 to 1")] {
        let mut changed = old.clone();
        changed["spec"]["kafka"]["managed"]["replicas"] = json!(replicas);
        assert_eq!(
            transition_errors(&changed, &old),
            refusal(
                "spec.kafka.managed",
                &format!("spec.kafka.managed.replicas cannot change {from_to}: the nodes form a static KRaft controller quorum (controller.quorum.voters names every node and is fixed when their storage is formatted), which Kafka cannot grow or shrink; create a new pipeline with the replicas you want")
            ),
            "{replicas} nodes"
        );
    }
    // The image and resources may change (a rolling update).
    let mut image = old.clone();
    image["spec"]["kafka"]["managed"]["image"] = json!("apache/kafka:4.1.1");
    assert_eq!(transition_errors(&image, &old), vec![]);
    // Moving to an external Kafka is not a change of the managed node count.
    let mut external = old.clone();
    external["spec"]["kafka"] = json!({"external": {"bootstrapServers": "kafka.example.com:9092"}});
    assert_eq!(transition_errors(&external, &old), vec![]);
}

#[test]
fn the_storage_of_managed_services_cannot_change() {
    let services = [
        ("kafka", "spec.kafka.managed", "data-<name>-kafka-<n>"),
        (
            "objectStore",
            "spec.objectStore.managed",
            "data-<name>-minio-0",
        ),
        ("search", "spec.search.managed", "data-<name>-es-<n>"),
    ];
    for (service, field, claims) in services {
        let old = minimal("shop");
        // Writing the default size out is no change.
        let mut same = old.clone();
        same["spec"][service]["managed"]["storage"] = json!({"size": "10Gi"});
        assert_eq!(transition_errors(&same, &old), vec![], "{service}");

        let mut bigger = old.clone();
        bigger["spec"][service]["managed"]["storage"] = json!({"size": "20Gi"});
        assert_eq!(
            transition_errors(&bigger, &old),
            refusal(
                field,
                &format!("{field}.storage.size cannot change from 10Gi to 20Gi: it is part of the volumeClaimTemplates of the StatefulSet, which Kubernetes does not let change; to grow the volumes, expand the PersistentVolumeClaims {claims} themselves (if their StorageClass allows expansion), otherwise create a new pipeline")
            ),
            "{service}"
        );

        let class_refusal = refusal(
            field,
            &format!("{field}.storage.storageClassName cannot change: it is part of the volumeClaimTemplates of the StatefulSet, which Kubernetes does not let change, and existing volumes cannot move to another StorageClass; create a new pipeline"),
        );
        let mut classed = old.clone();
        classed["spec"][service]["managed"]["storage"] = json!({"storageClassName": "fast"});
        assert_eq!(
            transition_errors(&classed, &old),
            class_refusal,
            "{service}: default class -> fast"
        );
        let mut other_class = classed.clone();
        other_class["spec"][service]["managed"]["storage"]["storageClassName"] = json!("slow");
        assert_eq!(
            transition_errors(&other_class, &classed),
            class_refusal,
            "{service}: fast -> slow"
        );
        assert_eq!(
            transition_errors(&old, &classed),
            class_refusal,
            "{service}: fast -> default class"
        );
        assert_eq!(transition_errors(&classed, &classed), vec![], "{service}");

        // Keeping the volumes (or not) may change at any time.
        let mut kept = old.clone();
        kept["spec"][service]["managed"]["storage"] = json!({"retainOnDelete": true});
        assert_eq!(transition_errors(&kept, &old), vec![], "{service}");
        assert_eq!(transition_errors(&old, &kept), vec![], "{service}");
    }
}

#[test]
fn managed_opensearch_takes_the_same_node_counts() {
    for (replicas, valid) in [(1, true), (2, false), (3, true), (5, true)] {
        let mut dp = minimal("shop");
        dp["spec"]["search"]["managed"] = json!({"engine": "opensearch", "replicas": replicas});
        let found: Vec<(String, String)> = errors(&dp, None)
            .into_iter()
            .map(|e| (e.field_path, e.message))
            .collect();
        let expected = if valid {
            vec![]
        } else {
            vec![(
                "spec.search.managed".to_string(),
                "spec.search.managed.replicas must be 1 or at least 3: two master-eligible nodes cannot survive the loss of either".to_string(),
            )]
        };
        assert_eq!(found, expected, "{replicas} OpenSearch nodes");
    }
    // An image of one's own is fine; leaving it out picks the engine's default.
    let mut dp = minimal("shop");
    dp["spec"]["search"]["managed"] =
        json!({"engine": "opensearch", "image": "registry.example.com/opensearch:2.19.1"});
    assert_eq!(errors(&dp, None), vec![]);
}

#[test]
fn the_managed_search_engine_cannot_change() {
    let old = minimal("shop");
    let mut same = old.clone();
    same["spec"]["search"]["managed"]["replicas"] = json!(3);
    same["spec"]["search"]["managed"]["engine"] = json!("elasticsearch");
    assert_eq!(errors(&same, Some(&old)), vec![]);

    let mut switched = old.clone();
    switched["spec"]["search"]["managed"]["engine"] = json!("opensearch");
    let found: Vec<(String, String)> = errors(&switched, Some(&old))
        .into_iter()
        .map(|e| (e.field_path, e.message))
        .collect();
    assert_eq!(
        found,
        vec![(
            "spec.search.managed".to_string(),
            "spec.search.managed.engine cannot change from elasticsearch to opensearch: the volumes of the nodes hold data the other engine cannot read; create a new pipeline, or point spec.search.external at a cluster of the other engine".to_string()
        )]
    );

    // Going external (and back to a new managed cluster later) is not a change of engine.
    let mut external = old.clone();
    external["spec"]["search"] =
        json!({"external": {"url": "https://search.example.com", "engine": "opensearch"}});
    assert_eq!(errors(&external, Some(&old)), vec![]);
}

#[test]
fn bucket_names_follow_s3_rules() {
    let cases = [
        ("lake", true),
        ("shop-lake.v2", true),
        ("abc", true),
        (&"a".repeat(63), true),
        ("ab", false),
        (&"a".repeat(64), false),
        ("Shop", false),
        ("shop_lake", false),
        ("-shop", false),
        ("shop-", false),
        ("shop..lake", false),
        ("192.168.1.10", false),
        ("xn--shop", false),
        ("shop-s3alias", false),
        ("shop--ol-s3", false),
    ];
    for (bucket, valid) in cases {
        let mut dp = minimal("shop");
        dp["spec"]["objectStore"]["bucket"] = json!(bucket);
        // maxLength is enforced by the OpenAPI schema, not CEL; kube-cel checks only CEL.
        if bucket.len() > 63 {
            continue;
        }
        assert_eq!(errors(&dp, None).is_empty(), valid, "bucket {bucket:?}");
    }
}

#[test]
fn index_names_follow_elasticsearch_rules() {
    let cases = [
        ("shop-profiles", true),
        ("profiles_v2", true),
        ("shop.profiles", true),
        ("Shop", false),
        ("shop profiles", false),
        ("shop\\profiles", false),
        ("shop/profiles", false),
        ("shop*", false),
        ("shop?", false),
        ("shop\"", false),
        ("shop<", false),
        ("shop|x", false),
        ("shop,x", false),
        ("shop#x", false),
        ("shop:x", false),
        ("-shop", false),
        ("_shop", false),
        ("+shop", false),
        (".shop", false),
    ];
    for (index, valid) in cases {
        let mut dp = minimal("shop");
        dp["spec"]["search"]["index"] = json!(index);
        assert_eq!(errors(&dp, None).is_empty(), valid, "index {index:?}");
    }
}

#[test]
fn replicas_within_autoscaling_bounds_are_accepted() {
    let mut dp = minimal("shop");
    dp["spec"]["runtime"] =
        json!({"replicas": 3, "autoscaling": {"minReplicas": 2, "maxReplicas": 4}});
    assert_eq!(errors(&dp, None), vec![]);
    dp["spec"]["runtime"] = json!({"replicas": 5});
    assert_eq!(errors(&dp, None), vec![]);
}

#[test]
fn every_rule_compiles() {
    let compiled = kube_cel::compile_schema(&schema());
    let problems: Vec<String> = compiled
        .compilation_errors()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(problems, Vec::<String>::new());
}
