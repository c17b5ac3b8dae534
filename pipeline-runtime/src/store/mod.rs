//! The object store the distributed roles write the lake, profile snapshots and their
//! durable state to: a local directory (embedded use, tests) or an S3 bucket. Whole-object
//! puts only, each atomic (temp file + rename locally; S3 PUT is atomic by itself), so a
//! reader sees either the old or the new object, never a torn one. Does I/O.
//!
//! Conditional writes ([`ObjectStore::put_if`]) create an object only if it is absent, or
//! replace it only if it is still the version the writer last saw; the process role fences
//! a member that lost its partition with them (see [`crate::process::checkpoint`]). On S3
//! they are `If-None-Match: *` and `If-Match: <ETag>` (AWS since 2024, MinIO, versitygw);
//! locally they hold within one process, which is the only writer of a local lake.
//!
//! Errors say whether a retry can help ([`Error::is_retryable`]): a timeout or a 5xx can
//! be retried, a missing bucket or a refused credential cannot.

mod local;
mod s3;

use std::io::Read;

/// Object bodies.
pub use bytes::Bytes;
pub use local::LocalStore;
pub use s3::S3Store;

use crate::config::StoreSettings;
use crate::error::{Error, Result};

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Changes whenever the content changes (S3 ETag; local: size and modification time).
    pub version_tag: String,
}

/// The condition of a [`ObjectStore::put_if`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Only if no object has the key.
    Absent,
    /// Only if the object's version tag is still this one.
    Matches(String),
}

/// A local directory or an S3 bucket.
#[derive(Debug, Clone)]
pub enum ObjectStore {
    Local(LocalStore),
    S3(S3Store),
}

impl ObjectStore {
    /// Opens the store the settings describe. For S3, creates the bucket when it does not
    /// exist (a managed MinIO may not have it yet); refuses when it cannot be reached.
    pub async fn open(settings: &StoreSettings) -> Result<Self> {
        match settings {
            StoreSettings::Local { root } => Ok(ObjectStore::Local(LocalStore::new(root.clone())?)),
            StoreSettings::S3(s3) => {
                let store = S3Store::connect(s3).await?;
                store.ensure_bucket().await?;
                Ok(ObjectStore::S3(store))
            }
        }
    }

    /// `file:///dir` or `s3://bucket`, for logs.
    pub fn describe(&self) -> String {
        match self {
            ObjectStore::Local(l) => format!("file://{}", l.root().display()),
            ObjectStore::S3(s) => format!("s3://{}", s.bucket()),
        }
    }

    /// Writes the whole object, replacing any previous one atomically.
    pub async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        check_key(key)?;
        match self {
            ObjectStore::Local(l) => l.put(key, body).await,
            ObjectStore::S3(s) => s.put(key, body).await,
        }
    }

    /// Writes the whole object if `condition` holds, and returns its new version tag;
    /// [`Error::Conflict`] when it does not hold.
    pub async fn put_if(&self, key: &str, body: Bytes, condition: &Precondition) -> Result<String> {
        check_key(key)?;
        match self {
            ObjectStore::Local(l) => l.put_if(key, body, condition).await,
            ObjectStore::S3(s) => s.put_if(key, body, condition).await,
        }
    }

    /// The object's bytes and version tag, or `None` when it does not exist.
    pub async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, String)>> {
        check_key(key)?;
        match self {
            ObjectStore::Local(l) => l.get_versioned(key).await,
            ObjectStore::S3(s) => s.get_versioned(key).await,
        }
    }

    /// The object's version tag, or `None` when it does not exist.
    pub async fn version(&self, key: &str) -> Result<Option<String>> {
        check_key(key)?;
        match self {
            ObjectStore::Local(l) => l.version(key).await,
            ObjectStore::S3(s) => s.version(key).await,
        }
    }

    /// The object's bytes, or `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        check_key(key)?;
        match self {
            ObjectStore::Local(l) => l.get(key).await,
            ObjectStore::S3(s) => s.get(key).await,
        }
    }

    /// A blocking reader over the object's bytes that streams (the whole object is never
    /// held in memory). Read it from a blocking thread, not from an async task.
    pub async fn open_reader(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        check_key(key)?;
        match self {
            ObjectStore::Local(l) => l.open_reader(key),
            ObjectStore::S3(s) => s.open_reader(key).await,
        }
    }

    /// Every object whose key starts with `prefix`, sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut objects = match self {
            ObjectStore::Local(l) => l.list(prefix).await?,
            ObjectStore::S3(s) => s.list(prefix).await?,
        };
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Deletes the object; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        match self {
            ObjectStore::Local(l) => l.delete(key).await,
            ObjectStore::S3(s) => s.delete(key).await,
        }
    }
}

/// Keys are relative, `/`-separated, without `.`/`..` segments: the same key must name
/// the same object in a directory and in a bucket, and never escape the directory.
fn check_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.ends_with('/')
        || key.contains('\\')
        || key
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if bad {
        return Err(Error::Store {
            op: "validate",
            key: key.to_string(),
            retryable: false,
            message:
                "object keys are relative, '/'-separated paths without empty, '.' or '..' segments"
                    .into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for good in [
            "a",
            "events/dt=2019-10-01/p0-o0.parquet",
            "_state/process/p3.state",
        ] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", "a\\b"] {
            let err = check_key(bad).unwrap_err();
            assert!(!err.is_retryable(), "{bad}");
        }
    }

    async fn exercise(store: &ObjectStore) {
        assert_eq!(store.get("x/missing").await.unwrap(), None);
        store.put("p/b", Bytes::from_static(b"two")).await.unwrap();
        store.put("p/a", Bytes::from_static(b"one")).await.unwrap();
        store
            .put("q/c", Bytes::from_static(b"three"))
            .await
            .unwrap();
        store.put("p/a", Bytes::from_static(b"uno")).await.unwrap();
        assert_eq!(
            store.get("p/a").await.unwrap(),
            Some(Bytes::from_static(b"uno"))
        );
        let keys: Vec<String> = store
            .list("p/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["p/a".to_string(), "p/b".to_string()]);
        let sizes: Vec<u64> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.size)
            .collect();
        assert_eq!(sizes, vec![3, 3, 5]);
        let mut text = String::new();
        let key = "q/c".to_string();
        let mut reader = store.open_reader(&key).await.unwrap();
        tokio::task::spawn_blocking(move || {
            reader.read_to_string(&mut text).unwrap();
            text
        })
        .await
        .map(|t| assert_eq!(t, "three"))
        .unwrap();
        store.delete("p/a").await.unwrap();
        store.delete("p/a").await.unwrap();
        assert_eq!(store.get("p/a").await.unwrap(), None);
        let keys: Vec<String> = store
            .list("p")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["p/b".to_string()]);
    }

    /// What every store must do with conditional writes.
    pub async fn exercise_conditional_writes(store: &ObjectStore) {
        let absent = Precondition::Absent;
        let first = store
            .put_if("c/k", Bytes::from_static(b"one"), &absent)
            .await
            .unwrap();
        assert_eq!(store.version("c/k").await.unwrap(), Some(first.clone()));
        let again = store
            .put_if("c/k", Bytes::from_static(b"two"), &absent)
            .await;
        assert!(matches!(again, Err(Error::Conflict { .. })), "{again:?}");
        let second = store
            .put_if(
                "c/k",
                Bytes::from_static(b"second"),
                &Precondition::Matches(first.clone()),
            )
            .await
            .unwrap();
        assert_ne!(second, first);
        let stale = store
            .put_if(
                "c/k",
                Bytes::from_static(b"x"),
                &Precondition::Matches(first),
            )
            .await;
        assert!(matches!(stale, Err(Error::Conflict { .. })), "{stale:?}");
        assert_eq!(
            store.get_versioned("c/k").await.unwrap(),
            Some((Bytes::from_static(b"second"), second))
        );
        let missing = store
            .put_if(
                "c/missing",
                Bytes::from_static(b"x"),
                &Precondition::Matches("nope".into()),
            )
            .await;
        assert!(
            matches!(missing, Err(Error::Conflict { .. })),
            "{missing:?}"
        );
        assert_eq!(store.version("c/missing").await.unwrap(), None);
        assert_eq!(store.get_versioned("c/missing").await.unwrap(), None);
        store.delete("c/k").await.unwrap();
    }

    #[tokio::test]
    async fn local_store_conditional_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::Local(LocalStore::new(dir.path().to_path_buf()).unwrap());
        exercise_conditional_writes(&store).await;
    }

    #[tokio::test]
    async fn local_store_put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(&StoreSettings::Local {
            root: dir.path().to_path_buf(),
        })
        .await
        .unwrap();
        exercise(&store).await;
        // No temp file is left behind by the atomic writes.
        let root = dir.path().display().to_string();
        let leftovers: Vec<_> = walk(dir.path())
            .into_iter()
            .filter(|p| p[root.len()..].contains(".tmp-"))
            .collect();
        assert_eq!(leftovers, Vec::<String>::new());
    }

    fn walk(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path.display().to_string());
            }
        }
        out
    }
}
