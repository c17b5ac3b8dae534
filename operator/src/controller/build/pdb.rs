//! PodDisruptionBudgets: voluntary disruptions (node drains) take at most one pod of a
//! Kafka, search (Elasticsearch or OpenSearch) or runtime workload at a time. Pure.

use k8s_openapi::{
    api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::{
    names::{selector_labels, Role},
    pieces::meta,
};
use crate::controller::validate::ValidatedPipeline;

pub fn budget(p: &ValidatedPipeline, name: String, role: Role) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(p, name, role),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&p.name, role)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::managed_plan;
    use serde_json::json;

    #[test]
    fn one_pod_at_a_time() {
        let pdb = serde_json::to_value(budget(
            &managed_plan(),
            "shop-runtime".into(),
            Role::Runtime,
        ))
        .expect("json");
        assert_eq!(pdb["apiVersion"], "policy/v1");
        assert_eq!(pdb["metadata"]["name"], "shop-runtime");
        assert_eq!(
            pdb["spec"],
            json!({
                "maxUnavailable": 1,
                "selector": {"matchLabels": {
                    "app.kubernetes.io/component": "runtime",
                    "app.kubernetes.io/instance": "shop",
                    "app.kubernetes.io/name": "pipeline-runtime"
                }}
            })
        );
    }
}
