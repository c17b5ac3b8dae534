//! Whether a visit of a pipeline applies its children or only measures it. Most visits of
//! a running pipeline come from the observation timer, and re-reading its Secrets,
//! re-applying its children and listing orphans then changes nothing: an observation reads
//! the offsets, updates the status and applies only when the autoscaler asks for other
//! replicas. Everything else (a spec, label or annotation change, a child or referenced
//! Secret that changed, a failure, the resync period) applies. Pure, no I/O.

use std::collections::BTreeMap;

use kube::ResourceExt;

use super::{apply::readiness::ChildrenState, status::findings::PipelineFacts};
use crate::crd::DataPipeline;

/// What identifies the pipeline object a reconcile applied: a change here means the
/// desired children may differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl Identity {
    /// The identity of the pipeline as this visit reads it.
    pub fn of(dp: &DataPipeline) -> Self {
        Self {
            uid: dp.metadata.uid.clone(),
            generation: dp.metadata.generation,
            labels: dp.labels().clone(),
            annotations: dp.annotations().clone(),
        }
    }
}

/// What the last applying reconcile of a pipeline saw and decided.
#[derive(Clone, Debug, PartialEq)]
pub struct LastApply {
    pub identity: Identity,
    /// Unix seconds.
    pub at_s: i64,
    /// The runtime replicas it applied.
    pub replicas: i32,
    pub children: Box<ChildrenState>,
    pub facts: PipelineFacts,
}

/// Why a visit applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyReason {
    /// No applying reconcile since the operator started (or since a failure).
    Unknown,
    /// The pipeline's spec, labels or annotations changed, or it was recreated.
    PipelineChanged,
    /// A child or a referenced Secret changed.
    DependentChanged,
    /// The resync period passed: repair drift nobody was told about.
    Resync,
}

/// `None`: an observation is enough; `Some`: apply, and why.
/// `last`: the identity the last applying reconcile saw and when (Unix seconds).
pub fn apply_reason(
    last: Option<(&Identity, i64)>,
    identity: &Identity,
    dependents_changed: bool,
    now_s: i64,
    resync_s: i64,
) -> Option<ApplyReason> {
    let Some((last_identity, last_at_s)) = last else {
        return Some(ApplyReason::Unknown);
    };
    if last_identity != identity {
        Some(ApplyReason::PipelineChanged)
    } else if dependents_changed {
        Some(ApplyReason::DependentChanged)
    } else if now_s - last_at_s >= resync_s || now_s < last_at_s {
        Some(ApplyReason::Resync)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(generation: i64) -> Identity {
        Identity {
            uid: Some("u1".into()),
            generation: Some(generation),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn a_quiet_pipeline_is_only_observed_until_the_resync() {
        let applied = identity(3);
        let last = (&applied, 1_000);
        assert_eq!(
            apply_reason(Some(last), &identity(3), false, 1_299, 300),
            None
        );
        assert_eq!(
            apply_reason(Some(last), &identity(3), false, 1_300, 300),
            Some(ApplyReason::Resync)
        );
        // A clock that went backwards: apply rather than trust the age.
        assert_eq!(
            apply_reason(Some(last), &identity(3), false, 999, 300),
            Some(ApplyReason::Resync)
        );
    }

    #[test]
    fn changes_and_the_unknown_apply() {
        let applied = identity(3);
        let last = (&applied, 1_000);
        assert_eq!(
            apply_reason(None, &identity(3), false, 1_000, 300),
            Some(ApplyReason::Unknown)
        );
        assert_eq!(
            apply_reason(Some(last), &identity(4), false, 1_001, 300),
            Some(ApplyReason::PipelineChanged)
        );
        let mut annotated = identity(3);
        annotated
            .annotations
            .insert("datapipeline.io/paused".into(), "true".into());
        assert_eq!(
            apply_reason(Some(last), &annotated, false, 1_001, 300),
            Some(ApplyReason::PipelineChanged)
        );
        let mut recreated = identity(3);
        recreated.uid = Some("u2".into());
        assert_eq!(
            apply_reason(Some(last), &recreated, false, 1_001, 300),
            Some(ApplyReason::PipelineChanged)
        );
        assert_eq!(
            apply_reason(Some(last), &identity(3), true, 1_001, 300),
            Some(ApplyReason::DependentChanged)
        );
    }
}
