//! The object store as a local directory: key `a/b` is file `<root>/a/b`. Writes go to a
//! temp file in the target's directory, are synced, then renamed over the target, so a
//! crash leaves the old object or the new one. Conditional writes compare a hash of the
//! content (like an S3 ETag) under a lock held by this process, the only writer of a local
//! lake. Does file I/O (on blocking threads).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::{ObjectInfo, Precondition};
use crate::error::{Error, Result};

/// Temp files carry this marker so listings skip them (and a crash's leftovers).
const TEMP_MARKER: &str = ".tmp-";

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    counter: Arc<AtomicU64>,
    /// Held across a conditional write's check and write.
    conditional: Arc<std::sync::Mutex<()>>,
}

impl LocalStore {
    pub fn new(root: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&root)
            .map_err(|e| store_io("open", &root.display().to_string(), e))?;
        Ok(Self {
            root,
            counter: Arc::new(AtomicU64::new(0)),
            conditional: Arc::new(std::sync::Mutex::new(())),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    pub async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let target = self.path(key);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let key = key.to_string();
        blocking(move || write_atomically(&target, &key, &body, n)).await
    }

    pub async fn put_if(&self, key: &str, body: Bytes, condition: &Precondition) -> Result<String> {
        let target = self.path(key);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let key = key.to_string();
        let condition = condition.clone();
        let lock = self.conditional.clone();
        blocking(move || {
            let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
            let current = read_if_exists(&target, &key)?.map(|bytes| content_tag(&bytes));
            let holds = match (&condition, &current) {
                (Precondition::Absent, None) => true,
                (Precondition::Matches(want), Some(have)) => want == have,
                _ => false,
            };
            if !holds {
                return Err(Error::Conflict {
                    key,
                    detail: format!("wanted {condition:?}, found {current:?}"),
                });
            }
            write_atomically(&target, &key, &body, n)?;
            Ok(content_tag(&body))
        })
        .await
    }

    pub async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, String)>> {
        let path = self.path(key);
        let key = key.to_string();
        blocking(move || {
            Ok(read_if_exists(&path, &key)?.map(|bytes| {
                let tag = content_tag(&bytes);
                (Bytes::from(bytes), tag)
            }))
        })
        .await
    }

    pub async fn version(&self, key: &str) -> Result<Option<String>> {
        Ok(self.get_versioned(key).await?.map(|(_, tag)| tag))
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let path = self.path(key);
        let key = key.to_string();
        blocking(move || Ok(read_if_exists(&path, &key)?.map(Bytes::from))).await
    }

    pub fn open_reader(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let file = std::fs::File::open(self.path(key)).map_err(|e| store_io("get", key, e))?;
        Ok(Box::new(file))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            // Walk only the directory the prefix's complete segments name.
            let start_dir = match prefix.rfind('/') {
                Some(at) => root.join(&prefix[..at]),
                None => root.clone(),
            };
            let mut out = Vec::new();
            walk(&root, &start_dir, &prefix, &mut out).map_err(|e| store_io("list", &prefix, e))?;
            Ok(out)
        })
        .await
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        let key = key.to_string();
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(store_io("delete", &key, e)),
        })
        .await
    }
}

/// Writes `body` to a temp file next to `target`, syncs it and renames it over `target`.
fn write_atomically(target: &Path, key: &str, body: &[u8], n: u64) -> Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| store_io("put", key, e))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!("{name}{TEMP_MARKER}{}-{n}", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(body)?;
        file.sync_all()?;
        std::fs::rename(&temp, target)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        store_io("put", key, e)
    })
}

fn read_if_exists(path: &Path, key: &str) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(store_io("get", key, e)),
    }
}

/// The version tag of conditional writes: SHA-256 of the content, like an ETag.
fn content_tag(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ObjectInfo>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        let key = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            // Descend when the directory can hold keys with the prefix.
            if key.starts_with(prefix) || prefix.starts_with(&format!("{key}/")) {
                walk(root, &path, prefix, out)?;
            }
        } else if file_type.is_file() && key.starts_with(prefix) && !key.contains(TEMP_MARKER) {
            let meta = entry.metadata()?;
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            out.push(ObjectInfo {
                key,
                size: meta.len(),
                version_tag: format!("{}-{modified}", meta.len()),
            });
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Store {
            op: "io",
            key: String::new(),
            retryable: false,
            message: format!("blocking task failed: {e}"),
        })?
}

/// Local I/O errors: a full disk or a permission problem will not fix itself, an
/// interrupted or timed-out operation may.
fn store_io(op: &'static str, key: &str, e: std::io::Error) -> Error {
    use std::io::ErrorKind::*;
    let retryable = matches!(e.kind(), Interrupted | TimedOut | WouldBlock);
    Error::Store {
        op,
        key: key.to_string(),
        retryable,
        message: e.to_string(),
    }
}
