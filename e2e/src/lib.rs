//! Helpers shared by the integration tests (`e2e/tests/`), one module per kind of test:
//! `runtime` for the runtime's tests against real Kafka, OpenSearch and S3; `k8s` for a
//! client of the Kubernetes control plane and throwaway namespaces; `control_plane` for the
//! operator's controller and Helm-chart tests (a running pipeline and its children);
//! `crd_examples` for the CRD-schema tests (the example pipelines and what the API server
//! must answer); `browser` for a headless Chromium that opens the pages the runtime writes.
//! The servers are the ones `e2e/services.sh` starts.

pub mod browser;
pub mod control_plane;
pub mod crd_examples;
pub mod k8s;
pub mod runtime;
