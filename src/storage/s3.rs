//! The `s3` feature's half of [`crate::storage`]: the object-store client, mirrors, byte-range
//! reads with a local range cache, and publishing folders.

use super::{cache_root, ObjectUrl, Pointer};
use crate::error::{Error, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

static FETCHED: AtomicU64 = AtomicU64::new(0);
static CACHED: AtomicU64 = AtomicU64::new(0);
static REQUESTS: AtomicU64 = AtomicU64::new(0);
static WRITTEN: AtomicU64 = AtomicU64::new(0);

/// Bytes this process moved to and from object storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of data files read from the store (byte ranges).
    pub fetched: u64,
    /// Bytes of data files served from the local range cache instead.
    pub cached: u64,
    /// Range requests made.
    pub requests: u64,
    /// Bytes written to the store.
    pub written: u64,
}

pub fn stats() -> Stats {
    Stats {
        fetched: FETCHED.load(Ordering::Relaxed),
        cached: CACHED.load(Ordering::Relaxed),
        requests: REQUESTS.load(Ordering::Relaxed),
        written: WRITTEN.load(Ordering::Relaxed),
    }
}

fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("object-store")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::Config(format!("object storage: cannot start the I/O runtime: {e}")))
}

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    Ok(runtime()?.block_on(f))
}

/// The client of `bucket`, configured from the `AWS_*` environment variables.
fn store(bucket: &str) -> Result<Arc<dyn ObjectStore>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let map = STORES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map
        .lock()
        .map_err(|_| Error::Config("object storage: a client panicked".into()))?;
    if let Some(s) = map.get(bucket) {
        return Ok(s.clone());
    }
    let s3 = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .map_err(|e| {
            Error::Config(format!(
                "s3://{bucket}: cannot configure the client from the AWS_* variables: {e}"
            ))
        })?;
    let s: Arc<dyn ObjectStore> = Arc::new(s3);
    map.insert(bucket.to_string(), s.clone());
    Ok(s)
}

/// The client of the HTTP server under `base` (a Hub `resolve/COMMIT` URL): redirects to the
/// Hub's content servers are followed, and `HF_TOKEN`, when set, is sent for private repos.
fn http_store(base: &str) -> Result<Arc<dyn ObjectStore>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let map = STORES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map
        .lock()
        .map_err(|_| Error::Config("object storage: a client panicked".into()))?;
    if let Some(s) = map.get(base) {
        return Ok(s.clone());
    }
    let mut options =
        object_store::ClientOptions::new().with_allow_http(base.starts_with("http://"));
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        let mut headers = http::HeaderMap::new();
        let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Error::Config("HF_TOKEN holds characters a header cannot".into()))?;
        headers.insert(http::header::AUTHORIZATION, value);
        options = options.with_default_headers(headers);
    }
    let store = object_store::http::HttpBuilder::new()
        .with_url(base)
        .with_client_options(options)
        .build()
        .map_err(|e| Error::Config(format!("{base}: cannot configure an HTTP client: {e}")))?;
    let s: Arc<dyn ObjectStore> = Arc::new(store);
    map.insert(base.to_string(), s.clone());
    Ok(s)
}

/// The whole object `key` under the HTTP `base` (a Hub file's small metadata).
pub fn http_get(base: &str, key: &str) -> Result<Bytes> {
    let s = http_store(base)?;
    let location = ObjPath::from(key);
    block_on(async { s.get(&location).await?.bytes().await })?
        .map_err(|e| http_error(&format!("{base}/{key}"), e))
}

fn http_error(what: &str, e: object_store::Error) -> Error {
    Error::Config(format!(
        "{what}: {e} (the Hub's address comes from HF_ENDPOINT; a private or gated repo needs HF_TOKEN)"
    ))
}

fn store_error(what: &str, e: object_store::Error) -> Error {
    Error::Config(format!(
        "{what}: {e} (credentials and endpoint come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP)"
    ))
}

/// Every object under `url`'s prefix, keyed by its path relative to the prefix.
fn list(url: &ObjectUrl) -> Result<BTreeMap<String, ObjectMeta>> {
    let s = store(&url.bucket)?;
    let prefix = (!url.prefix.is_empty()).then(|| ObjPath::from(url.prefix.as_str()));
    let metas: Vec<ObjectMeta> = block_on(s.list(prefix.as_ref()).try_collect())?
        .map_err(|e| store_error(&url.to_string(), e))?;
    let mut out = BTreeMap::new();
    for m in metas {
        let key = m.location.as_ref().to_string();
        let rel = if url.prefix.is_empty() {
            key.clone()
        } else {
            match key.strip_prefix(&format!("{}/", url.prefix)) {
                Some(r) => r.to_string(),
                None => continue,
            }
        };
        out.insert(rel, m);
    }
    Ok(out)
}

/// A relative object path that stays inside the mirror.
fn safe_rel(rel: &str) -> bool {
    !rel.is_empty()
        && rel
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != ".." && !p.contains('\\'))
}

/// The record of which object version each mirrored file holds.
const ETAGS: &str = ".mirror-etags.json";

/// Mirrors `url` into its local folder: JSON and other small files downloaded (when their
/// ETag changed), Parquet files as pointers (a local data file of the same size, written by
/// this machine, is kept). Files whose names start with `.` are skipped.
pub(super) fn mirror(url: &ObjectUrl, must_exist: bool) -> Result<PathBuf> {
    let local = url.mirror();
    let objects = list(url)?;
    if must_exist && objects.is_empty() {
        return Err(Error::Config(format!(
            "{url}: no objects under this prefix (check the bucket, the prefix and AWS_ENDPOINT_URL)"
        )));
    }
    crate::fs::create_dir_all(&local)?;
    let etags_file = local.join(ETAGS);
    let mut etags: BTreeMap<String, String> = if etags_file.exists() {
        crate::fs::read_json(&etags_file).unwrap_or_default()
    } else {
        BTreeMap::new()
    };
    let s = store(&url.bucket)?;
    for (rel, meta) in &objects {
        if !safe_rel(rel) || rel.split('/').any(|p| p.starts_with('.')) {
            continue;
        }
        let path = local.join(rel);
        if let Some(parent) = path.parent() {
            crate::fs::create_dir_all(parent)?;
        }
        let tag = meta.e_tag.clone().unwrap_or_default();
        if rel.ends_with(".parquet") {
            let own = path.is_file()
                && super::read_pointer(&path)?.is_none()
                && std::fs::metadata(&path).map(|m| m.len()).ok() == Some(meta.size);
            if own {
                continue;
            }
            let pointer = Pointer {
                bucket: url.bucket.clone(),
                key: meta.location.as_ref().to_string(),
                http: None,
                size: meta.size,
                etag: meta.e_tag.clone(),
            };
            if super::read_pointer(&path).ok().flatten().as_ref() != Some(&pointer) {
                crate::fs::write_atomic(&path, &pointer.to_bytes()?)?;
            }
        } else if etags.get(rel) != Some(&tag) || !path.is_file() {
            let bytes = block_on(async { s.get(&meta.location).await?.bytes().await })?
                .map_err(|e| store_error(&format!("{url}/{rel}"), e))?;
            crate::fs::write_atomic(&path, &bytes)?;
            etags.insert(rel.clone(), tag);
        }
    }
    crate::fs::write_json_atomic(&etags_file, &etags)?;
    Ok(local)
}

/// The unit of range reads and of the local cache: aligned blocks of an object.
pub const BLOCK_BYTES: u64 = 1 << 20;

/// An object read by byte ranges in aligned blocks, each block fetched once and kept in the
/// local cache (and the last one used in memory).
#[derive(Clone)]
pub struct RemoteFile {
    store: Arc<dyn ObjectStore>,
    location: ObjPath,
    pointer: Pointer,
    cache: PathBuf,
    last: Arc<Mutex<Option<(u64, Bytes)>>>,
}

impl RemoteFile {
    pub fn open(pointer: &Pointer) -> Result<Self> {
        // The cache folder names this exact object version: a rewritten object gets a new one.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let id = format!(
            "{}{}\n{}\n{}\n{}",
            pointer.http.as_deref().unwrap_or(""),
            pointer.bucket,
            pointer.key,
            pointer.size,
            pointer.etag.as_deref().unwrap_or("")
        );
        for b in id.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let store = match &pointer.http {
            Some(base) => http_store(base)?,
            None => store(&pointer.bucket)?,
        };
        Ok(Self {
            store,
            location: ObjPath::from(pointer.key.as_str()),
            pointer: pointer.clone(),
            cache: cache_root().join("ranges").join(format!("{h:016x}")),
            last: Arc::new(Mutex::new(None)),
        })
    }

    pub fn size(&self) -> u64 {
        self.pointer.size
    }

    fn url_error(&self, msg: String) -> Error {
        Error::Data {
            path: PathBuf::from(self.pointer.url()),
            msg,
        }
    }

    /// Block `i`: from memory, the cache folder, or the store (then cached).
    fn block(&self, i: u64) -> Result<Bytes> {
        if let Ok(last) = self.last.lock() {
            if let Some((j, b)) = last.as_ref() {
                if *j == i {
                    return Ok(b.clone());
                }
            }
        }
        let start = i * BLOCK_BYTES;
        let len = BLOCK_BYTES.min(self.pointer.size.saturating_sub(start)) as usize;
        let file = self.cache.join(i.to_string());
        let bytes = match std::fs::read(&file) {
            Ok(b) if b.len() == len => {
                CACHED.fetch_add(len as u64, Ordering::Relaxed);
                Bytes::from(b)
            }
            _ => {
                let end = start + len as u64;
                let b =
                    block_on(self.store.get_range(&self.location, start..end))?.map_err(|e| {
                        match self.pointer.http {
                            Some(_) => http_error(&self.pointer.url(), e),
                            None => store_error(&self.pointer.url(), e),
                        }
                    })?;
                if b.len() != len {
                    return Err(self.url_error(format!(
                        "asked for bytes {start}..{end}, the store returned {} bytes (was the object replaced?)",
                        b.len()
                    )));
                }
                REQUESTS.fetch_add(1, Ordering::Relaxed);
                FETCHED.fetch_add(len as u64, Ordering::Relaxed);
                // A cache entry appears whole or not at all (temp file, then rename); it is a
                // cache, so it is not synced to disk.
                crate::fs::create_dir_all(&self.cache)?;
                let tmp = crate::fs::temp_path(&file);
                std::fs::write(&tmp, &b).map_err(|e| Error::io(&tmp, e))?;
                std::fs::rename(&tmp, &file).map_err(|e| Error::io(&file, e))?;
                b
            }
        };
        if let Ok(mut last) = self.last.lock() {
            *last = Some((i, bytes.clone()));
        }
        Ok(bytes)
    }

    /// `len` bytes from `start`.
    pub fn read_range(&self, start: u64, len: usize) -> Result<Bytes> {
        let end = start.saturating_add(len as u64);
        if end > self.pointer.size {
            return Err(self.url_error(format!(
                "a read of bytes {start}..{end} past the object's end ({} bytes)",
                self.pointer.size
            )));
        }
        if len == 0 {
            return Ok(Bytes::new());
        }
        let (first, last) = (start / BLOCK_BYTES, (end - 1) / BLOCK_BYTES);
        if first == last {
            let b = self.block(first)?;
            let at = (start - first * BLOCK_BYTES) as usize;
            return Ok(b.slice(at..at + len));
        }
        let mut out = Vec::with_capacity(len);
        for i in first..=last {
            let b = self.block(i)?;
            let lo = start.max(i * BLOCK_BYTES) - i * BLOCK_BYTES;
            let hi = end.min((i + 1) * BLOCK_BYTES) - i * BLOCK_BYTES;
            out.extend_from_slice(&b[lo as usize..hi as usize]);
        }
        Ok(Bytes::from(out))
    }
}

/// A sequential reader of a remote object from an offset, fetching blocks as it goes.
pub struct RemoteRead {
    file: RemoteFile,
    pos: u64,
}

impl std::io::Read for RemoteRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = self.file.size();
        if self.pos >= size || buf.is_empty() {
            return Ok(0);
        }
        let block_end = (self.pos / BLOCK_BYTES + 1) * BLOCK_BYTES;
        let n = (buf.len() as u64).min(block_end.min(size) - self.pos) as usize;
        let b = self
            .file
            .read_range(self.pos, n)
            .map_err(std::io::Error::other)?;
        buf[..n].copy_from_slice(&b);
        self.pos += n as u64;
        Ok(n)
    }
}

impl parquet::file::reader::Length for RemoteFile {
    fn len(&self) -> u64 {
        self.pointer.size
    }
}

impl parquet::file::reader::ChunkReader for RemoteFile {
    type T = RemoteRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(RemoteRead {
            file: self.clone(),
            pos: start,
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.read_range(start, length)
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
    }
}

/// The files under `dir` (recursively), as `/`-separated relative paths, skipping names that
/// start with `.` (locks, temp files, the mirror's records) and pointer files.
fn local_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let e = e.map_err(|err| Error::io(&d, err))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let p = e.path();
            if p.is_dir() {
                stack.push((p, r));
            } else if super::read_pointer(&p)?.is_none() {
                out.push(r);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn put(url: &ObjectUrl, rel: &str, local: &Path) -> Result<()> {
    let bytes = std::fs::read(local).map_err(|e| Error::io(local, e))?;
    let n = bytes.len() as u64;
    let s = store(&url.bucket)?;
    block_on(s.put(
        &ObjPath::from(url.key(rel).as_str()),
        PutPayload::from(bytes),
    ))?
    .map_err(|e| store_error(&format!("{url}/{rel}"), e))?;
    WRITTEN.fetch_add(n, Ordering::Relaxed);
    Ok(())
}

/// Uploads every file of `dir` to `url` (a checkpoint folder: data files first, the JSON files
/// that describe them last). Returns the number of files.
pub fn publish_folder(dir: &Path, url: &ObjectUrl) -> Result<usize> {
    let mut files = local_files(dir)?;
    files.sort_by_key(|f| (f.ends_with(".json"), f.clone()));
    for f in &files {
        put(url, f, &dir.join(f))?;
    }
    Ok(files.len())
}

/// Publishes a collection written into `url`'s mirror: each finished run this machine holds
/// that the store lacks (its data files, then its manifest, the run's commit mark), then the
/// dataset manifest rebuilt from every run in the store, this machine's and other shards'.
/// `rebuild` rewrites a folder's dataset manifest from its run folders and returns the number
/// of runs ([`crate::collect::rebuild_manifest`]). Returns the number of runs uploaded now.
pub fn publish_dataset(
    local: &Path,
    url: &ObjectUrl,
    rebuild: &dyn Fn(&Path) -> Result<usize>,
) -> Result<usize> {
    let remote = list(url)?;
    let runs_dir = local.join("runs");
    let mut uploaded = 0;
    if runs_dir.is_dir() {
        let mut runs: Vec<String> = std::fs::read_dir(&runs_dir)
            .map_err(|e| Error::io(&runs_dir, e))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("run-"))
            .collect();
        runs.sort();
        for run in runs {
            let folder = runs_dir.join(&run);
            let manifest = format!("runs/{run}/dataset.json");
            if !folder.join("dataset.json").is_file() || remote.contains_key(&manifest) {
                continue;
            }
            for f in local_files(&folder)? {
                if f != "dataset.json" {
                    put(url, &format!("runs/{run}/{f}"), &folder.join(&f))?;
                }
            }
            put(url, &manifest, &folder.join("dataset.json"))?;
            uploaded += 1;
        }
    }
    // Shards finishing together may each write the manifest from a listing that lacks the other's
    // runs; each checks after writing that the store's manifest covers every run in the store,
    // and rewrites it while it does not.
    for _ in 0..5 {
        mirror(url, false)?;
        if rebuild(local)? == 0 {
            break;
        }
        put(url, "dataset.json", &local.join("dataset.json"))?;
        let remote = list(url)?;
        let in_store = remote
            .keys()
            .filter(|k| {
                k.starts_with("runs/")
                    && k.ends_with("/dataset.json")
                    && k.matches('/').count() == 2
            })
            .count();
        let s = store(&url.bucket)?;
        let key = ObjPath::from(url.key("dataset.json").as_str());
        let top = block_on(async { s.get(&key).await?.bytes().await })?
            .map_err(|e| store_error(&format!("{url}/dataset.json"), e))?;
        let listed = serde_json::from_slice::<serde_json::Value>(&top)
            .ok()
            .and_then(|v| v["runs"].as_array().map(Vec::len))
            .unwrap_or(0);
        if listed >= in_store {
            break;
        }
    }
    Ok(uploaded)
}
