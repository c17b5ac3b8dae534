//! Helpers shared by the integration tests: endpoints of the servers started by `e2e/services.sh`.

pub mod k8s;
pub mod runtime;
