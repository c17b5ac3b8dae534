//! The Helm chart's values.yaml and values.schema.json agree: every value has a schema
//! entry (the schema forbids unknown keys, so a value missing from it would make the chart
//! refuse its own defaults), and every value is preceded by a comment documenting it.

use std::path::PathBuf;

use serde_yaml::Value;

/// This crate's directory, read at run time (cargo sets it for tests) so a test binary
/// reused from a build cache shared between clones reads this clone's files.
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn chart_file(name: &str) -> String {
    let path = crate_dir()
        .join("../charts/datapipeline-operator")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Paths of the values the user sets: leaves, and maps the schema leaves open (resources,
/// annotations, ...).
fn value_paths(value: &Value, prefix: &str, schema: &serde_json::Value, out: &mut Vec<String>) {
    let properties = schema.get("properties").and_then(|p| p.as_object());
    match (value, properties) {
        (Value::Mapping(map), Some(properties)) => {
            for (key, child) in map {
                let key = key.as_str().expect("string keys");
                let path = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                };
                match properties.get(key) {
                    Some(child_schema) => value_paths(child, &path, child_schema, out),
                    None => out.push(format!("MISSING {path}")),
                }
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn every_value_has_a_schema_entry() {
    let values: Value = serde_yaml::from_str(&chart_file("values.yaml")).expect("values.yaml");
    let schema: serde_json::Value =
        serde_json::from_str(&chart_file("values.schema.json")).expect("values.schema.json");
    let mut paths = Vec::new();
    value_paths(&values, "", &schema, &mut paths);
    let missing: Vec<&String> = paths.iter().filter(|p| p.starts_with("MISSING")).collect();
    assert!(
        missing.is_empty(),
        "values without a schema entry: {missing:?}"
    );
    assert!(paths.contains(&"crds.enabled".to_string()), "{paths:?}");
    assert!(
        paths.contains(&"serviceMonitor.enabled".to_string()),
        "{paths:?}"
    );
}

#[test]
fn every_value_is_commented() {
    // Keys inside these values are plain Kubernetes data documented as a whole.
    const DATA: [&str; 1] = ["resources"];
    let text = chart_file("values.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let mut parents: Vec<(usize, &str)> = Vec::new();
    let mut undocumented = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        if trimmed.starts_with('#')
            || key.is_empty()
            || !key.chars().all(|c| c.is_ascii_alphanumeric())
        {
            continue;
        }
        let indent = line.len() - trimmed.len();
        parents.retain(|(parent_indent, _)| *parent_indent < indent);
        let in_data = parents.iter().any(|(_, parent)| DATA.contains(parent));
        let commented = i > 0 && lines[i - 1].trim_start().starts_with('#');
        if !commented && !in_data {
            undocumented.push(format!("line {}: {line}", i + 1));
        }
        parents.push((indent, key));
    }
    assert!(
        undocumented.is_empty(),
        "values without a comment:\n{}",
        undocumented.join("\n")
    );
}
