//! Helpers shared by the integration tests: endpoints of the servers started by `e2e/services.sh`.

pub mod control_plane;
pub mod crd_examples;
pub mod k8s;
pub mod runtime;
