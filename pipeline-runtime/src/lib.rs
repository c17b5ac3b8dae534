//! Runtime library: parsing, profiles, sources and sinks of the data plane.
//!
//! The data core (pure or thin I/O): [`event`], [`csv_input`], [`profile`], [`parquet`],
//! [`generator`], [`report`], [`embedded`]; [`progress`] draws the long commands' progress
//! on a terminal. The distributed roles build on these types.

pub mod csv_input;
pub mod embedded;
pub mod error;
pub mod event;
pub mod generator;
pub mod money;
pub mod parquet;
pub mod profile;
pub mod progress;
pub mod report;
pub mod time;

// The distributed roles: configuration, clients, sinks, ingest and process.
pub mod config;
pub mod dead_letter;
pub mod http;
pub mod ingest;
pub mod kafka;
pub mod metrics;
pub mod process;
pub mod retry;
pub mod search;
pub mod store;

pub use error::{Error, Result};
pub use event::{Event, EventType, RejectKind, Rejected};
