//! The status step of a visit: what the visit found (`findings`), why pods cannot start
//! (`pods`, one list request when something is not ready), the pure computation of the
//! new status (`compute`, from each component's verdict in `assess`) and its one write
//! (`write`).

pub mod assess;
pub mod compute;
pub mod findings;
pub mod pods;
pub mod write;

#[cfg(test)]
mod tests;
