//! Where rows come from: a local file, the CSV objects under the landing prefix, or the
//! generator; listing them and opening one as a byte stream. Does file and object-store
//! I/O.

use std::io::Read;
use std::path::PathBuf;

use super::progress::source_id;
use crate::config::IngestArgs;
use crate::error::{Error, Result};
use crate::store::{ObjectInfo, ObjectStore};

/// Where rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File {
        path: PathBuf,
        version_tag: String,
    },
    Object(ObjectInfo),
    Generator {
        events: u64,
        seed: u64,
        /// At most this many rows per second (`None`: as fast as possible).
        rate_per_second: Option<u64>,
    },
}

impl Source {
    /// The name rejected rows and logs carry.
    pub fn name(&self) -> String {
        match self {
            Source::File { path, .. } => path.display().to_string(),
            Source::Object(o) => o.key.clone(),
            Source::Generator { events, seed, .. } => format!("generator:{events}:{seed}"),
        }
    }

    fn version_tag(&self) -> String {
        match self {
            Source::File { version_tag, .. } => version_tag.clone(),
            Source::Object(o) => o.version_tag.clone(),
            Source::Generator { .. } => String::new(),
        }
    }

    /// Stable id of this version of the source: same name and content tag, same id.
    pub fn id(&self) -> String {
        source_id(&self.name(), &self.version_tag())
    }
}

/// Whether an object under the landing prefix is an input file.
pub fn is_csv_key(key: &str) -> bool {
    key.to_ascii_lowercase().ends_with(".csv")
}

pub(super) async fn list_sources(args: &IngestArgs, store: &ObjectStore) -> Result<Vec<Source>> {
    if let Some(events) = args.generate {
        return Ok(vec![Source::Generator {
            events,
            seed: args.seed,
            rate_per_second: args.rate_per_second,
        }]);
    }
    if let Some(path) = &args.input {
        let meta = std::fs::metadata(path).map_err(|e| Error::file(path, e))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return Ok(vec![Source::File {
            path: path.clone(),
            version_tag: format!("{}-{modified}", meta.len()),
        }]);
    }
    let prefix = format!("{}/", args.source_prefix.trim_end_matches('/'));
    Ok(store
        .list(&prefix)
        .await?
        .into_iter()
        .filter(|o| is_csv_key(&o.key))
        .map(Source::Object)
        .collect())
}

pub(super) async fn open_source(
    source: &Source,
    store: &ObjectStore,
) -> Result<Box<dyn Read + Send>> {
    match source {
        Source::File { path, .. } => {
            let file = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
            Ok(Box::new(file))
        }
        // Nothing is sent before it opens: a transient failure is simply retried.
        Source::Object(o) => {
            crate::retry::retry("open landing object", 6, || store.open_reader(&o.key)).await
        }
        Source::Generator {
            events,
            seed,
            rate_per_second,
        } => Ok(Box::new(
            crate::generator::reader(crate::generator::GeneratorConfig::new(*events, *seed))
                .paced(*rate_per_second),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_keys() {
        assert!(is_csv_key("landing/x.csv"));
        assert!(is_csv_key("landing/X.CSV"));
        assert!(!is_csv_key("landing/x.csv.tmp"));
        assert!(!is_csv_key("landing/readme.md"));
    }
}
