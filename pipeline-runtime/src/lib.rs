//! Runtime library: parsing, profiles, sources and sinks of the data plane.
