//! The example pipelines as the CRD-schema tests (`tests/operator_crd_schema.rs`) read
//! them: the invalid examples and what each one's top comment says the API server must
//! answer, and how the API server reports fields and numbers. Reads files, no server.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::k8s;

/// `examples/invalid/*.yaml`, sorted.
pub fn invalid_examples() -> anyhow::Result<Vec<PathBuf>> {
    let dir = k8s::repo_root().join("examples/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    Ok(files)
}

/// What an invalid example's header announces: the field the API server names (`<root>`
/// for rules on the whole object) and the message.
#[derive(Debug, PartialEq)]
pub struct Expectation {
    pub field: String,
    pub message: String,
}

pub fn expectation(path: &Path) -> anyhow::Result<Expectation> {
    let text = std::fs::read_to_string(path)?;
    let header = |key: &str| {
        text.lines()
            .take_while(|l| l.starts_with('#'))
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("{} has no `{key}` line in its top comment", path.display()))
    };
    Ok(Expectation {
        field: header("# expect-field:")?,
        message: header("# expect-message:")?,
    })
}

/// The field path the API server reports for a rule's location: rules on the root object
/// are reported at `<nil>`.
pub fn server_field(expected_field: &str) -> &str {
    if expected_field == "<root>" {
        "<nil>"
    } else {
        expected_field
    }
}

/// Causes the API server reports besides the CEL rule, from its own validation: the
/// `scale` subresource makes it check `specReplicasPath` (`.spec.runtime.replicas`) itself.
pub fn built_in_causes(example: &str) -> &'static [(&'static str, &'static str)] {
    match example {
        "runtime-negative-replicas" => &[(
            ".spec.runtime.replicas",
            "Invalid value: -1: should be a non-negative integer",
        )],
        _ => &[],
    }
}

/// `value` with every integral float (`0.0`) written as an integer (`0`), as the API
/// server stores JSON numbers.
pub fn json_numbers_normalised(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => {
            Value::Array(items.into_iter().map(json_numbers_normalised).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, json_numbers_normalised(v)))
                .collect(),
        ),
        other => other,
    }
}
