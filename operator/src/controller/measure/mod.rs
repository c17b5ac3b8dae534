//! Measuring a running pipeline from outside the runtime: the Kafka offsets of its topics
//! and its search index's document count. `observer` is the seam the reconciler measures
//! through (no I/O), `throughput` the pure arithmetic on offsets (lag, rates, lag growth),
//! `offset_reader` reads the brokers (I/O) and `index_count` the search engine (I/O).

pub mod index_count;
pub mod observer;
pub mod offset_reader;
pub mod throughput;
