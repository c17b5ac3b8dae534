//! Operator library: the DataPipeline CRD, its reconciler and the pure builders of its children.
