//! `hf://` sources: checkpoints and datasets kept in Hugging Face Hub repositories
//! (checkpoint folders as [`crate::checkpoint`] writes them, dataset folders as
//! [`crate::history`] writes them).
//!
//! ```text
//! hf://ORG/NAME[@REV][/path/in/repo]            a model repo (checkpoints, state dicts)
//! hf://datasets/ORG/NAME[@REV][/path/in/repo]   a dataset repo (learning histories)
//! ```
//!
//! Resolution is cache first: the files live in the Hub cache that `huggingface_hub` (Python)
//! and `hf-hub` (Rust) share (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`), laid out as
//!
//! ```text
//! models--ORG--NAME/refs/REV                      the commit REV points to
//! models--ORG--NAME/snapshots/COMMIT/path/...     the repo's files at that commit
//! ```
//!
//! When every file needed is in the snapshot the revision points to, the snapshot folder is
//! returned without any network access, so a cached source works offline. Otherwise the
//! revision is pinned to one commit (one metadata request), the missing files are downloaded
//! into that commit's snapshot, and the ref is updated, as `huggingface_hub` does.
//! `HF_HUB_OFFLINE=1` forbids downloading: a missing file is then an error that names the
//! repo, the revision and the file.
//!
//! The folders returned are the cache's snapshot folders: they already have the checkpoint and
//! dataset layouts, so the checkpoint and history modules read them like local folders.
//!
//! With the `s3` feature, a dataset not complete in the cache is streamed instead
//! (`REINCARNATE_HF_STREAM=0` turns this off): its manifest is downloaded into a mirror of the
//! pinned commit under [`crate::storage::cache_root`] and each Parquet file becomes a pointer
//! read by byte ranges through the object store's HTTP client.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use hf_hub::api::sync::{Api, ApiBuilder};
use hf_hub::{Cache, Repo, RepoType};

use crate::checkpoint::{CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE, REPLAY_FILE, TRAINER_STATE_FILE};
use crate::error::{did_you_mean, Error, Result};
use crate::history::manifest::{resolve_data_path, Manifest, MANIFEST_FILE};

/// The URL scheme of Hub sources.
pub const SCHEME: &str = "hf://";

/// The revision used when a URL names none.
pub const DEFAULT_REVISION: &str = "main";

/// Files a checkpoint folder must have.
pub const CHECKPOINT_REQUIRED: [&str; 2] = [CONFIG_FILE, MODEL_FILE];

/// Files a checkpoint folder may have (needed only to resume training).
pub const CHECKPOINT_OPTIONAL: [&str; 3] = [TRAINER_STATE_FILE, OPTIMIZER_FILE, REPLAY_FILE];

/// File extensions that make a ref name a single state-dict file rather than a folder.
const SINGLE_FILE_EXTENSIONS: [&str; 7] = [
    "safetensors",
    "pt",
    "pth",
    "bin",
    "zip",
    "cleanrl_model",
    "msgpack",
];

const EXPECTED_FORM: &str =
    "expected hf://ORG/NAME[@REVISION][/PATH] (a model repo) or hf://datasets/ORG/NAME[@REVISION][/PATH] (a dataset repo)";

/// Which kind of Hub repository a ref names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RepoKind {
    /// `hf://ORG/NAME`: checkpoints and state dicts.
    Model,
    /// `hf://datasets/ORG/NAME`: datasets of learning histories.
    Dataset,
}

impl RepoKind {
    fn repo_type(self) -> RepoType {
        match self {
            RepoKind::Model => RepoType::Model,
            RepoKind::Dataset => RepoType::Dataset,
        }
    }
}

/// A parsed `hf://` URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HubRef {
    pub kind: RepoKind,
    /// `ORG/NAME`.
    pub repo: String,
    /// Branch, tag or commit; [`DEFAULT_REVISION`] when the URL names none.
    pub revision: String,
    /// Path inside the repo, `/`-separated, without leading or trailing `/`; empty for the root.
    pub path: String,
}

/// Whether `s` is meant as a Hub source (starts with `hf://`), so callers can dispatch before
/// parsing and report a malformed URL as such rather than as a missing local folder.
pub fn is_hub_url(s: &str) -> bool {
    s.starts_with(SCHEME)
}

impl HubRef {
    /// Parses `hf://ORG/NAME[@REV][/path]` or `hf://datasets/ORG/NAME[@REV][/path]`.
    ///
    /// A revision is one path segment; a branch whose name holds `/` is written with `%2F`
    /// (`@feature%2Fx`), and the Hub's own `refs/pr/N` and `refs/convert/NAME` are accepted as
    /// written (`@refs/pr/3/model.safetensors`).
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Config(format!(
                "`{url}` is not a Hub source: {why}; {EXPECTED_FORM}"
            ))
        };
        let Some(rest) = url.strip_prefix(SCHEME) else {
            return Err(bad("it does not start with hf://"));
        };
        let (kind, rest) = if let Some(r) = rest.strip_prefix("datasets/") {
            (RepoKind::Dataset, r)
        } else if rest.starts_with("spaces/") {
            return Err(bad("Spaces hold no checkpoints or datasets"));
        } else if let Some(r) = rest.strip_prefix("models/") {
            (RepoKind::Model, r)
        } else {
            (RepoKind::Model, rest)
        };
        let mut segments = rest.split('/');
        let org = segments.next().unwrap_or_default();
        let Some(name_rev) = segments.next() else {
            return Err(bad("the repo must be ORG/NAME"));
        };
        if org.contains('@') {
            return Err(bad("the repo must be ORG/NAME before any @REVISION"));
        }
        let (name, revision) = match name_rev.split_once('@') {
            None => (name_rev, DEFAULT_REVISION.to_string()),
            Some((name, rev)) => {
                let rev = if rev == "refs" {
                    // `refs/pr/N` or `refs/convert/NAME`: the Hub's special refs take three segments.
                    let (Some(kind), Some(id)) = (segments.next(), segments.next()) else {
                        return Err(bad(
                            "revision `refs/...` must be refs/pr/N or refs/convert/NAME",
                        ));
                    };
                    if !matches!(kind, "pr" | "convert") {
                        return Err(bad(
                            "revision `refs/...` must be refs/pr/N or refs/convert/NAME",
                        ));
                    }
                    format!("refs/{kind}/{id}")
                } else {
                    rev.replace("%2F", "/").replace("%2f", "/")
                };
                (name, rev)
            }
        };
        check_repo_part(org).map_err(|why| bad(&format!("organisation `{org}` {why}")))?;
        check_repo_part(name).map_err(|why| bad(&format!("repo name `{name}` {why}")))?;
        check_revision(&revision).map_err(|why| bad(&format!("revision `{revision}` {why}")))?;
        let path: Vec<&str> = segments.collect();
        // A single trailing `/` is harmless (`hf://org/name/sub/`); anything else empty is not.
        let path = match path.split_last() {
            Some((&"", init)) => init,
            _ => &path[..],
        };
        for seg in path {
            match *seg {
                "" => return Err(bad("the path has an empty segment (`//`)")),
                "." | ".." => {
                    return Err(bad(&format!("the path may not contain `{seg}` segments")));
                }
                s if s.contains('\\') => return Err(bad("the path may not contain `\\`; use `/`")),
                _ => {}
            }
        }
        Ok(Self {
            kind,
            repo: format!("{org}/{name}"),
            revision,
            path: path.join("/"),
        })
    }

    /// Whether the ref names a single state-dict file (`.safetensors`, `.pt`, `.pth`), to be
    /// resolved with [`Hub::resolve_file`], rather than a checkpoint folder.
    pub fn is_single_file(&self) -> bool {
        Path::new(&self.path)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| SINGLE_FILE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
    }

    /// The `/`-separated path in the repo of `file`, relative to this ref's path.
    fn repo_file(&self, file: &str) -> String {
        let parts = Path::new(file)
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("/");
        if self.path.is_empty() {
            parts
        } else if parts.is_empty() {
            self.path.clone()
        } else {
            format!("{}/{parts}", self.path)
        }
    }

    fn hf_repo(&self, revision: &str) -> Repo {
        Repo::with_revision(
            self.repo.clone(),
            self.kind.repo_type(),
            revision.to_string(),
        )
    }
}

impl FromStr for HubRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Display for HubRef {
    /// The URL, in the form [`HubRef::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}")?;
        if self.kind == RepoKind::Dataset {
            write!(f, "datasets/")?;
        }
        write!(f, "{}", self.repo)?;
        if self.revision != DEFAULT_REVISION {
            let special =
                self.revision.starts_with("refs/pr/") || self.revision.starts_with("refs/convert/");
            if special {
                write!(f, "@{}", self.revision)?;
            } else {
                write!(f, "@{}", self.revision.replace('/', "%2F"))?;
            }
        }
        if !self.path.is_empty() {
            write!(f, "/{}", self.path)?;
        }
        Ok(())
    }
}

/// The Hub's rule for organisation and repo names: letters, digits, `-`, `_`, `.`; no `--` or
/// `..`; `-` and `.` neither first nor last; at most 96 characters. Keeping to it also keeps
/// the cache folder name (`models--ORG--NAME`) unambiguous and inside the cache.
fn check_repo_part(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.len() > 96 {
        return Err("is longer than 96 characters".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "contains `{c}`: only letters, digits, `-`, `_` and `.` are allowed"
        ));
    }
    if s.contains("--") || s.contains("..") {
        return Err("may not contain `--` or `..`".into());
    }
    if s.starts_with(['-', '.']) || s.ends_with(['-', '.']) {
        return Err("may not start or end with `-` or `.`".into());
    }
    Ok(())
}

/// A revision becomes a file name under `refs/` in the cache: no empty, `.` or `..` segments,
/// no `\`, no whitespace or control characters.
fn check_revision(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.split('/').any(|seg| matches!(seg, "" | "." | "..")) {
        return Err("has an empty, `.` or `..` segment".into());
    }
    if s.chars()
        .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
    {
        return Err("contains `\\`, whitespace or a control character".into());
    }
    Ok(())
}

/// A commit id read from a ref file or from the Hub, safe to use as a folder name.
fn check_commit(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric())).then_some(s)
}

fn is_full_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Whether `HF_HUB_OFFLINE` (or a value of the same meaning) asks for offline mode.
pub fn is_truthy(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// The cache root the environment names, in `huggingface_hub`'s order: `HF_HUB_CACHE`,
/// `HUGGINGFACE_HUB_CACHE` (its old name), `HF_HOME/hub`, `XDG_CACHE_HOME/huggingface/hub`,
/// `~/.cache/huggingface/hub`. `var` looks a variable up (empty counts as unset).
pub fn cache_dir_from(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let get = |k: &str| var(k).filter(|v| !v.is_empty());
    if let Some(d) = get("HF_HUB_CACHE").or_else(|| get("HUGGINGFACE_HUB_CACHE")) {
        return Some(PathBuf::from(d));
    }
    if let Some(home) = get("HF_HOME") {
        return Some(PathBuf::from(home).join("hub"));
    }
    if let Some(xdg) = get("XDG_CACHE_HOME") {
        return Some(PathBuf::from(xdg).join("huggingface").join("hub"));
    }
    get("HOME").or_else(|| get("USERPROFILE")).map(|h| {
        PathBuf::from(h)
            .join(".cache")
            .join("huggingface")
            .join("hub")
    })
}

/// Access to the Hub through its local cache. [`Hub::from_env`] follows the environment
/// (`HF_HUB_CACHE`/`HF_HOME`, `HF_HUB_OFFLINE`, `HF_ENDPOINT`, `HF_TOKEN`); [`Hub::new`] takes
/// an explicit cache root and nothing from the environment, for tests and `--hf-cache`-style
/// options.
#[derive(Clone, Debug)]
pub struct Hub {
    cache_dir: PathBuf,
    offline: bool,
    endpoint: Option<String>,
    token: Option<String>,
    progress: bool,
    /// Stream datasets (feature `s3`): Parquet files read by byte ranges instead of downloaded.
    stream: bool,
}

/// What [`Hub::fetch`] needs: files that must exist, and files to take when the repo has them.
struct Wanted {
    required: Vec<String>,
    optional: Vec<String>,
}

impl Hub {
    /// A hub over the cache at `cache_dir`, online, the default endpoint, no token.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            offline: false,
            endpoint: None,
            token: None,
            progress: false,
            stream: false,
        }
    }

    /// A hub configured by the environment, as `huggingface_hub` reads it.
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok();
        let Some(cache_dir) = cache_dir_from(var) else {
            return Err(Error::Config(
                "cannot find the Hugging Face cache: set HF_HUB_CACHE or HF_HOME (no HOME either)"
                    .into(),
            ));
        };
        use std::io::IsTerminal;
        Ok(Self {
            cache_dir,
            offline: is_truthy(var("HF_HUB_OFFLINE").as_deref()),
            endpoint: var("HF_ENDPOINT").filter(|e| !e.is_empty()),
            token: var("HF_TOKEN").filter(|t| !t.is_empty()),
            progress: std::io::stderr().is_terminal(),
            stream: cfg!(feature = "s3")
                && !var("REINCARNATE_HF_STREAM").is_some_and(|v| {
                    matches!(
                        v.to_ascii_lowercase().as_str(),
                        "0" | "false" | "no" | "off"
                    )
                }),
        })
    }

    /// Replaces the cache root (keeping the other settings).
    pub fn with_cache_dir(mut self, cache_dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = cache_dir.into();
        self
    }

    /// Offline: never download; a file missing from the cache is an error.
    pub fn with_offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// The Hub's base URL (default `https://huggingface.co`, or a mirror).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Datasets not in the cache are streamed (their Parquet files read by byte ranges through
    /// the object store, feature `s3`) rather than downloaded whole.
    pub fn with_stream(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }

    /// Download progress bars on stderr.
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// `CACHE/models--ORG--NAME` (or `datasets--ORG--NAME`).
    pub fn repo_dir(&self, r: &HubRef) -> PathBuf {
        self.cache_dir.join(r.hf_repo(&r.revision).folder_name())
    }

    /// The commit the cache says `r.revision` is: the content of `refs/REV`, or the revision
    /// itself when it is a full commit hash with a snapshot. `None` when never downloaded.
    pub fn cached_commit(&self, r: &HubRef) -> Option<String> {
        let repo_dir = self.repo_dir(r);
        let from_ref = std::fs::read_to_string(repo_dir.join("refs").join(&r.revision))
            .ok()
            .and_then(|s| check_commit(&s).map(str::to_string));
        from_ref.or_else(|| {
            (is_full_commit_hash(&r.revision)
                && repo_dir.join("snapshots").join(&r.revision).is_dir())
            .then(|| r.revision.clone())
        })
    }

    fn snapshot_dir(&self, r: &HubRef, commit: &str) -> PathBuf {
        self.repo_dir(r).join("snapshots").join(commit)
    }

    /// A checkpoint folder: `config.json` and `model.safetensors` (required), plus
    /// `trainer_state.json`, `optimizer.safetensors` and `replay.safetensors` where the repo has
    /// them. Cached required files are enough to answer offline; when a download is needed,
    /// every optional file the repo holds comes with it, so the cache holds whole checkpoints.
    pub fn resolve_checkpoint(&self, r: &HubRef) -> Result<PathBuf> {
        self.expect_kind(r, RepoKind::Model, "a checkpoint")?;
        if r.is_single_file() {
            return Err(Error::Config(format!(
                "{r} names a single file, not a checkpoint folder: load it as a state dict (with --arch)"
            )));
        }
        let wanted = Wanted {
            required: CHECKPOINT_REQUIRED.iter().map(|f| f.to_string()).collect(),
            optional: CHECKPOINT_OPTIONAL.iter().map(|f| f.to_string()).collect(),
        };
        if let Some(dir) = self.cached_folder(r, &wanted.required) {
            return Ok(dir);
        }
        let commit = self.fetch(r, &wanted, "a checkpoint folder")?;
        Ok(self.snapshot_dir(r, &commit).join(&r.path))
    }

    /// One file: `r.path` names it (a state dict such as `model.safetensors`, `.pt`, `.pth`).
    pub fn resolve_file(&self, r: &HubRef) -> Result<PathBuf> {
        if r.path.is_empty() {
            return Err(Error::Config(format!(
                "{r} names a whole repo, not a file: add the file's path (hf://ORG/NAME/model.safetensors)"
            )));
        }
        let file = self
            .cached_commit(r)
            .map(|c| self.snapshot_dir(r, &c).join(&r.path));
        if let Some(file) = file.filter(|f| f.is_file()) {
            return Ok(file);
        }
        let bare = HubRef {
            path: String::new(),
            ..r.clone()
        };
        let wanted = Wanted {
            required: vec![r.path.clone()],
            optional: Vec::new(),
        };
        let commit = self.fetch(&bare, &wanted, "the file")?;
        Ok(self.snapshot_dir(r, &commit).join(&r.path))
    }

    /// A dataset folder: `dataset.json` and every data file its runs name. Paths in the
    /// manifest that leave the folder (absolute, `..`) are refused before anything is read or
    /// downloaded for them.
    ///
    /// A Minari dataset folder (`data/metadata.json` and its episodes, as Minari's Hugging Face
    /// remote stores them: `hf://datasets/ORG/NAMESPACE/DATASET-vN`) resolves the same way,
    /// with the data files its metadata describes ([`crate::formats::minari::MinariDataset::data_files`]).
    pub fn resolve_dataset(&self, r: &HubRef) -> Result<PathBuf> {
        self.expect_kind(r, RepoKind::Dataset, "a dataset")?;
        let kinds: [(&str, DataFiles); 2] = [
            (MANIFEST_FILE, data_files),
            (
                MINARI_METADATA,
                crate::formats::minari::MinariDataset::data_files,
            ),
        ];
        for (marker, files_of) in kinds {
            let Some(dir) = self.cached_folder(r, &[marker.to_string()]) else {
                continue;
            };
            let data = files_of(&dir)?;
            if data.iter().all(|f| dir.join(f).is_file()) {
                return Ok(dir);
            }
            if self.offline {
                let missing: Vec<String> = data
                    .into_iter()
                    .filter(|f| !dir.join(f).is_file())
                    .collect();
                return Err(self.offline_error(r, self.cached_commit(r).as_deref(), &missing));
            }
        }
        if self.offline {
            let wanted: Vec<String> = kinds.iter().map(|(m, _)| m.to_string()).collect();
            return Err(self.offline_error(r, self.cached_commit(r).as_deref(), &wanted));
        }
        #[cfg(feature = "s3")]
        if self.stream {
            return self.stream_dataset(r, &kinds);
        }
        // Pin the revision to one commit, take the manifest (or Minari's metadata) of that
        // commit, then the data it names.
        let commit = self.fetch(
            r,
            &Wanted {
                required: Vec::new(),
                optional: kinds.iter().map(|(m, _)| m.to_string()).collect(),
            },
            "a dataset folder",
        )?;
        let pinned = HubRef {
            revision: commit.clone(),
            ..r.clone()
        };
        let dir = self.snapshot_dir(r, &commit).join(&r.path);
        let Some((_, files_of)) = kinds.iter().find(|(m, _)| dir.join(m).is_file()) else {
            return Err(no_dataset_marker(r, &commit));
        };
        let data = files_of(&dir)?;
        self.fetch(
            &pinned,
            &Wanted {
                required: data,
                optional: Vec::new(),
            },
            "a data file named by dataset.json",
        )?;
        Ok(dir)
    }

    /// A dataset folder streamed from the Hub: the revision pinned to a commit (one API call,
    /// which also gives every file's size), the manifest (or Minari's metadata) downloaded into
    /// a mirror of that commit under the object-store cache, each Parquet file it names written
    /// there as a pointer to the file's `resolve/COMMIT/PATH` URL (read later by byte ranges,
    /// each range cached), and any other data file downloaded whole.
    #[cfg(feature = "s3")]
    fn stream_dataset(&self, r: &HubRef, kinds: &[(&str, DataFiles)]) -> Result<PathBuf> {
        #[derive(serde::Deserialize)]
        struct Lfs {
            size: u64,
        }
        #[derive(serde::Deserialize)]
        struct Sibling {
            rfilename: String,
            #[serde(default)]
            size: Option<u64>,
            #[serde(default, rename = "blobId")]
            blob_id: Option<String>,
            #[serde(default)]
            lfs: Option<Lfs>,
        }
        #[derive(serde::Deserialize)]
        struct Info {
            sha: String,
            siblings: Vec<Sibling>,
        }
        tracing::info!(source = %r, "streaming a dataset from the Hub");
        let api = self.api()?;
        let lookup = |e: String| self.lookup_error(r, e);
        let body = api
            .repo(r.hf_repo(&r.revision))
            .info_request()
            .query("blobs", "true")
            .call()
            .map_err(|e| lookup(e.to_string()))?
            .into_string()
            .map_err(|e| lookup(e.to_string()))?;
        let info: Info = serde_json::from_str(&body)
            .map_err(|e| lookup(format!("the answer is not a revision's description: {e}")))?;
        let commit = pinned_commit(r, &info.sha)?;
        let listed: std::collections::BTreeMap<&str, &Sibling> = info
            .siblings
            .iter()
            .map(|s| (s.rfilename.as_str(), s))
            .collect();
        let endpoint = self
            .endpoint
            .as_deref()
            .unwrap_or("https://huggingface.co")
            .trim_end_matches('/');
        let base = format!("{endpoint}/datasets/{}/resolve/{commit}", r.repo);
        let mut root = crate::storage::cache_root().join("hf").join("datasets");
        for part in r.repo.split('/') {
            root.push(part);
        }
        let dir = root.join(&commit).join(&r.path);
        let Some((marker, files_of)) = kinds
            .iter()
            .find(|(m, _)| listed.contains_key(r.repo_file(m).as_str()))
        else {
            return Err(no_dataset_marker(r, &commit));
        };
        let fetch_whole = |file: &str| -> Result<()> {
            let local = dir.join(file);
            if local.is_file() {
                return Ok(());
            }
            if let Some(parent) = local.parent() {
                crate::fs::create_dir_all(parent)?;
            }
            let bytes = crate::storage::http_get(&base, &r.repo_file(file))?;
            crate::fs::write_atomic(&local, &bytes)
        };
        fetch_whole(marker)?;
        let data = files_of(&dir)?;
        check_listed(
            r,
            &commit,
            &data,
            &listed.keys().copied().collect(),
            &format!("the dataset its {marker} describes"),
        )?;
        for f in &data {
            if !f.ends_with(".parquet") {
                fetch_whole(f)?;
                continue;
            }
            let key = r.repo_file(f);
            let sibling = listed[key.as_str()];
            let Some(size) = sibling.lfs.as_ref().map(|l| l.size).or(sibling.size) else {
                return Err(Error::Config(format!(
                    "{r}: the Hub gave no size for `{key}` (a revision description with blobs=true lists sizes)"
                )));
            };
            let pointer = crate::storage::Pointer {
                bucket: String::new(),
                key,
                http: Some(base.clone()),
                size,
                etag: sibling.blob_id.clone(),
            };
            let local = dir.join(f);
            if crate::storage::read_pointer(&local).ok().flatten().as_ref() != Some(&pointer) {
                if let Some(parent) = local.parent() {
                    crate::fs::create_dir_all(parent)?;
                }
                crate::fs::write_atomic(&local, &pointer.to_bytes()?)?;
            }
        }
        Ok(dir)
    }

    /// A failed look-up of `r`'s revision on the Hub.
    fn lookup_error(&self, r: &HubRef, e: impl fmt::Display) -> Error {
        Error::Config(format!(
            "{r}: cannot look up revision `{}` of {} `{}` on the Hub: {e}\n  \
             (check the name and revision; a private or gated repo needs HF_TOKEN; \
             with no network, the files must already be in {})",
            r.revision,
            kind_word(r.kind),
            r.repo,
            self.cache_dir.display()
        ))
    }

    fn expect_kind(&self, r: &HubRef, kind: RepoKind, what: &str) -> Result<()> {
        if r.kind == kind {
            return Ok(());
        }
        let hint = match kind {
            RepoKind::Model => "checkpoints live in model repos: hf://ORG/NAME",
            RepoKind::Dataset => "datasets live in dataset repos: hf://datasets/ORG/NAME",
        };
        Err(Error::Config(format!("{r} cannot be {what}: {hint}")))
    }

    /// `snapshot/path` when the cache has every file of `files` there for `r.revision`.
    fn cached_folder(&self, r: &HubRef, files: &[String]) -> Option<PathBuf> {
        let commit = self.cached_commit(r)?;
        let dir = self.snapshot_dir(r, &commit).join(&r.path);
        files.iter().all(|f| dir.join(f).is_file()).then_some(dir)
    }

    fn offline_error(&self, r: &HubRef, commit: Option<&str>, missing: &[String]) -> Error {
        let at = match commit {
            Some(c) if c != r.revision => format!("revision `{}` (commit {c})", r.revision),
            Some(_) => format!("revision `{}`", r.revision),
            None => format!("revision `{}`, which was never downloaded", r.revision),
        };
        let files = missing
            .iter()
            .map(|f| format!("`{}`", r.repo_file(f)))
            .collect::<Vec<_>>()
            .join(", ");
        Error::Config(format!(
            "{r}: {files} not cached for {} `{}` at {at} in {}, and offline mode is on (HF_HUB_OFFLINE), so nothing is downloaded; \
             run once online (unset HF_HUB_OFFLINE) or point HF_HUB_CACHE at a cache that has it",
            kind_word(r.kind),
            r.repo,
            self.cache_dir.display()
        ))
    }

    fn api(&self) -> Result<Api> {
        let mut b =
            ApiBuilder::from_cache(Cache::new(self.cache_dir.clone())).with_progress(self.progress);
        if let Some(e) = &self.endpoint {
            b = b.with_endpoint(e.clone());
        }
        if self.token.is_some() {
            b = b.with_token(self.token.clone());
        }
        b.build()
            .map_err(|e| Error::Config(format!("cannot set up the Hugging Face Hub client: {e}")))
    }

    /// Pins `r.revision` to a commit, downloads into its snapshot each of `wanted`'s files
    /// (relative to `r.path`) not yet there, points `refs/REV` at the commit, and returns it.
    /// Required files the repo lacks are reported all at once, with near names.
    fn fetch(&self, r: &HubRef, wanted: &Wanted, what: &str) -> Result<String> {
        if self.offline {
            let commit = self.cached_commit(r);
            let dir = commit
                .as_ref()
                .map(|c| self.snapshot_dir(r, c).join(&r.path));
            let missing: Vec<String> = wanted
                .required
                .iter()
                .filter(|f| !dir.as_ref().is_some_and(|d| d.join(f).is_file()))
                .cloned()
                .collect();
            return Err(self.offline_error(r, commit.as_deref(), &missing));
        }
        tracing::info!(source = %r, cache = %self.cache_dir.display(), "fetching {what} from the Hub");
        let api = self.api()?;
        let info = api
            .repo(r.hf_repo(&r.revision))
            .info()
            .map_err(|e| self.lookup_error(r, e))?;
        let commit = pinned_commit(r, &info.sha)?;
        let listed: BTreeSet<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
        check_listed(r, &commit, &wanted.required, &listed, what)?;
        let take = wanted.required.iter().chain(
            wanted
                .optional
                .iter()
                .filter(|f| listed.contains(r.repo_file(f).as_str())),
        );
        let snapshot = self.snapshot_dir(r, &commit);
        let pinned = api.repo(r.hf_repo(&commit));
        for f in take {
            let file = r.repo_file(f);
            let local = snapshot.join(&file);
            if local.is_file() {
                continue;
            }
            let got = pinned.download(&file).map_err(|e| {
                Error::Config(format!(
                    "{r}: cannot download `{file}` of {} `{}` at commit {commit}: {e}",
                    kind_word(r.kind),
                    r.repo
                ))
            })?;
            if !local.is_file() {
                return Err(Error::data(
                    &got,
                    format!(
                        "downloaded `{file}` for commit {commit}, but it is not at {}",
                        local.display()
                    ),
                ));
            }
        }
        if r.revision != commit {
            Cache::new(self.cache_dir.clone())
                .repo(r.hf_repo(&r.revision))
                .create_ref(&commit)
                .map_err(|e| Error::io(self.repo_dir(r).join("refs").join(&r.revision), e))?;
        }
        Ok(commit)
    }
}

/// An error naming each of `files` (relative to `r.path`) that the repo's listing lacks, with
/// the nearest listed names; `what` is what needs them.
fn check_listed(
    r: &HubRef,
    commit: &str,
    files: &[String],
    listed: &BTreeSet<&str>,
    what: &str,
) -> Result<()> {
    let near: Vec<String> = files
        .iter()
        .map(|f| r.repo_file(f))
        .filter(|f| !listed.contains(f.as_str()))
        .map(|m| format!("`{m}`{}", did_you_mean(&m, listed.iter().copied())))
        .collect();
    if near.is_empty() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{r}: {} `{}` at revision `{}` (commit {commit}) has no {}; {what} needs it",
        kind_word(r.kind),
        r.repo,
        r.revision,
        near.join(", ")
    )))
}

/// The error for a dataset repo with neither a platform manifest nor Minari's metadata.
fn no_dataset_marker(r: &HubRef, commit: &str) -> Error {
    Error::Config(format!(
        "{r}: dataset repo `{}` at revision `{}` (commit {commit}) has neither `{}` (a \
         platform dataset) nor `{}` (a Minari dataset)",
        r.repo,
        r.revision,
        r.repo_file(MANIFEST_FILE),
        r.repo_file(MINARI_METADATA)
    ))
}

/// The commit the Hub answered for `r`'s revision, checked to be one.
fn pinned_commit(r: &HubRef, sha: &str) -> Result<String> {
    check_commit(sha).map(str::to_string).ok_or_else(|| {
        Error::Config(format!(
            "{r}: the Hub answered commit `{sha}` for revision `{}`, which is not a commit id",
            r.revision
        ))
    })
}

fn kind_word(kind: RepoKind) -> &'static str {
    match kind {
        RepoKind::Model => "model repo",
        RepoKind::Dataset => "dataset repo",
    }
}

/// Minari's metadata file, relative to a Minari dataset folder.
const MINARI_METADATA: &str = "data/metadata.json";

/// The data files a dataset folder needs, relative to it, read from its manifest or metadata.
type DataFiles = fn(&Path) -> Result<Vec<String>>;

/// The data files `folder/dataset.json` names, each once, relative to `folder`. A path that
/// would leave the folder is an error naming the manifest.
fn data_files(folder: &Path) -> Result<Vec<String>> {
    let manifest = Manifest::load(folder)?;
    let manifest_path = folder.join(MANIFEST_FILE);
    let mut refused = Vec::new();
    for f in manifest.files() {
        if let Err(msg) = resolve_data_path(folder, f) {
            refused.push(msg);
        }
    }
    if !refused.is_empty() {
        return Err(Error::data(
            manifest_path,
            format!(
                "refusing to fetch or read this dataset: {}",
                refused.join("; ")
            ),
        ));
    }
    Ok(manifest.files().into_iter().map(str::to_string).collect())
}

/// [`Hub::resolve_checkpoint`] with the environment's settings.
pub fn resolve_checkpoint(r: &HubRef) -> Result<PathBuf> {
    Hub::from_env()?.resolve_checkpoint(r)
}

/// [`Hub::resolve_file`] with the environment's settings.
pub fn resolve_file(r: &HubRef) -> Result<PathBuf> {
    Hub::from_env()?.resolve_file(r)
}

/// [`Hub::resolve_dataset`] with the environment's settings.
pub fn resolve_dataset(r: &HubRef) -> Result<PathBuf> {
    Hub::from_env()?.resolve_dataset(r)
}

/// A checkpoint or dataset argument as a local folder: `hf://...` resolves through the Hub
/// cache (offline when cached), anything else is taken as a path. `dataset`: resolve a model
/// URL as a dataset repo too (for arguments that only take datasets).
pub fn local_folder(arg: &str, dataset: bool) -> Result<PathBuf> {
    if crate::storage::is_object_url(arg) {
        return crate::storage::local_folder(arg);
    }
    if !is_hub_url(arg) {
        return Ok(PathBuf::from(arg));
    }
    let r = HubRef::parse(arg)?;
    if dataset || r.kind == RepoKind::Dataset {
        resolve_dataset(&r)
    } else {
        resolve_checkpoint(&r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
    const OTHER: &str = "fedcba9876543210fedcba9876543210fedcba98";

    fn parse(s: &str) -> HubRef {
        HubRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn parse_err(s: &str) -> String {
        match HubRef::parse(s) {
            Ok(r) => panic!("{s} parsed as {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Writes `refs/REV` = commit and the given files (relative to the snapshot) in a fake cache.
    fn put(root: &Path, folder: &str, rev: &str, commit: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let repo = root.join(folder);
        let ref_path = repo.join("refs").join(rev);
        std::fs::create_dir_all(ref_path.parent().unwrap()).unwrap();
        // A trailing newline, as a hand-written ref might have, must not matter.
        std::fs::write(&ref_path, format!("{commit}\n")).unwrap();
        let snap = repo.join("snapshots").join(commit);
        for (name, bytes) in files {
            let p = snap.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        snap
    }

    /// Online but with an endpoint no client can reach without failing first: any attempt to
    /// use the network shows up as an error instead of touching it.
    fn no_network_hub(root: &Path) -> Hub {
        Hub::new(root).with_endpoint("unreachable://hub.invalid")
    }

    #[test]
    fn parses_model_and_dataset_refs() {
        let r = parse("hf://org/name");
        assert_eq!(
            r,
            HubRef {
                kind: RepoKind::Model,
                repo: "org/name".into(),
                revision: "main".into(),
                path: String::new()
            }
        );
        let r = parse("hf://org/name@v1.0/sub/dir/");
        assert_eq!((r.revision.as_str(), r.path.as_str()), ("v1.0", "sub/dir"));
        let r = parse("hf://datasets/my-org/dark_room.v2@abc123/shard-0");
        assert_eq!(r.kind, RepoKind::Dataset);
        assert_eq!(r.repo, "my-org/dark_room.v2");
        assert_eq!(
            (r.revision.as_str(), r.path.as_str()),
            ("abc123", "shard-0")
        );
        let r = parse("hf://org/name@refs/pr/3/model.safetensors");
        assert_eq!(
            (r.revision.as_str(), r.path.as_str()),
            ("refs/pr/3", "model.safetensors")
        );
        assert!(r.is_single_file());
        let r = parse("hf://org/name@feature%2Fx/q.pth");
        assert_eq!(r.revision, "feature/x");
        assert!(r.is_single_file());
        assert!(!parse("hf://org/name/ckpt").is_single_file());
        assert_eq!(parse("hf://models/org/name").kind, RepoKind::Model);
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "hf://org/name",
            "hf://org/name@v2/a/b",
            "hf://datasets/org/name@feature%2Fx/p",
            "hf://org/name@refs/pr/3/model.safetensors",
        ] {
            let r = parse(s);
            assert_eq!(r.to_string(), s);
            assert_eq!(parse(&r.to_string()), r);
        }
    }

    #[test]
    fn malformed_urls_say_what_form_is_expected() {
        for (url, why) in [
            ("org/name", "does not start with hf://"),
            (
                "https://huggingface.co/org/name",
                "does not start with hf://",
            ),
            ("hf://", "must be ORG/NAME"),
            ("hf://name", "must be ORG/NAME"),
            ("hf://datasets/name", "must be ORG/NAME"),
            ("hf://org/", "repo name `` is empty"),
            ("hf://org@v1/name", "before any @REVISION"),
            ("hf://org/name@", "revision `` is empty"),
            ("hf://org/name@refs/heads/main", "refs/pr/N"),
            ("hf://org/na me", "contains ` `"),
            ("hf://org/a--b", "`--`"),
            ("hf://../name", "`..`"),
            ("hf://org/name@..%2F..", "`..` segment"),
            ("hf://org/name/a//b", "empty segment"),
            ("hf://org/name/../../etc", "`..` segments"),
            ("hf://org/name/./x", "`.` segments"),
            ("hf://spaces/org/name", "Spaces"),
        ] {
            let e = parse_err(url);
            assert!(e.contains(why), "{url}: {e}");
            assert!(
                e.contains("expected hf://ORG/NAME[@REVISION][/PATH]"),
                "{url}: {e}"
            );
        }
    }

    #[test]
    fn environment_decides_cache_root_and_offline() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            cache_dir_from(env(&[
                ("HF_HUB_CACHE", "/c"),
                ("HF_HOME", "/h"),
                ("HOME", "/u")
            ])),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(
            cache_dir_from(env(&[
                ("HF_HUB_CACHE", ""),
                ("HF_HOME", "/h"),
                ("HOME", "/u")
            ])),
            Some(PathBuf::from("/h/hub"))
        );
        assert_eq!(
            cache_dir_from(env(&[("HOME", "/u")])),
            Some(PathBuf::from("/u/.cache/huggingface/hub"))
        );
        assert_eq!(cache_dir_from(env(&[])), None);
        assert!(is_truthy(Some("1")) && is_truthy(Some("TRUE")) && is_truthy(Some("yes")));
        assert!(!is_truthy(Some("0")) && !is_truthy(Some("")) && !is_truthy(None));
    }

    #[test]
    fn cached_checkpoint_resolves_offline_and_without_network() {
        let tmp = tempfile::tempdir().unwrap();
        let snap = put(
            tmp.path(),
            "models--org--teacher",
            "main",
            COMMIT,
            &[
                ("config.json", b"{}"),
                ("model.safetensors", b"weights"),
                ("trainer_state.json", b"{}"),
            ],
        );
        let r = parse("hf://org/teacher");
        for hub in [
            Hub::new(tmp.path()).with_offline(true),
            no_network_hub(tmp.path()),
        ] {
            let dir = hub.resolve_checkpoint(&r).unwrap();
            assert_eq!(dir, snap);
            assert_eq!(
                std::fs::read(dir.join("model.safetensors")).unwrap(),
                b"weights"
            );
            assert!(dir.join("config.json").is_file() && dir.join("trainer_state.json").is_file());
            // Optional files may be absent: no optimizer here, and that is fine.
            assert!(!dir.join("optimizer.safetensors").exists());
        }
    }

    #[test]
    fn checkpoint_in_a_subfolder_and_single_files() {
        let tmp = tempfile::tempdir().unwrap();
        let snap = put(
            tmp.path(),
            "models--org--zoo",
            "main",
            COMMIT,
            &[
                ("dqn/cartpole/config.json", b"{}"),
                ("dqn/cartpole/model.safetensors", b"w"),
                ("cleanrl/q.pt", b"pickle"),
            ],
        );
        let hub = Hub::new(tmp.path()).with_offline(true);
        let dir = hub
            .resolve_checkpoint(&parse("hf://org/zoo/dqn/cartpole"))
            .unwrap();
        assert_eq!(dir, snap.join("dqn/cartpole"));
        let f = hub
            .resolve_file(&parse("hf://org/zoo/cleanrl/q.pt"))
            .unwrap();
        assert_eq!(std::fs::read(f).unwrap(), b"pickle");
        let f = hub
            .resolve_file(&parse("hf://org/zoo/dqn/cartpole/model.safetensors"))
            .unwrap();
        assert_eq!(f, snap.join("dqn/cartpole/model.safetensors"));
        // The root has no checkpoint: both required files are named.
        let e = hub
            .resolve_checkpoint(&parse("hf://org/zoo"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`config.json`") && e.contains("`model.safetensors`"),
            "{e}"
        );
        // A file ref is not a folder, and a dataset ref is not a checkpoint.
        let e = hub
            .resolve_checkpoint(&parse("hf://org/zoo/cleanrl/q.pt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("single file"), "{e}");
        let e = hub
            .resolve_checkpoint(&parse("hf://datasets/org/zoo"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("model repos"), "{e}");
    }

    #[test]
    fn revision_other_than_main() {
        let tmp = tempfile::tempdir().unwrap();
        let files: &[(&str, &[u8])] = &[("config.json", b"{}"), ("model.safetensors", b"main")];
        put(tmp.path(), "models--org--t", "main", COMMIT, files);
        let v2 = put(
            tmp.path(),
            "models--org--t",
            "v2",
            OTHER,
            &[("config.json", b"{}"), ("model.safetensors", b"v2")],
        );
        let hub = Hub::new(tmp.path()).with_offline(true);
        let dir = hub.resolve_checkpoint(&parse("hf://org/t@v2")).unwrap();
        assert_eq!(dir, v2);
        assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), b"v2");
        // A full commit hash needs no ref.
        let dir = hub
            .resolve_checkpoint(&parse(&format!("hf://org/t@{OTHER}")))
            .unwrap();
        assert_eq!(dir, v2);
        // A revision that was never downloaded is not silently replaced by main.
        let e = hub
            .resolve_checkpoint(&parse("hf://org/t@v3"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("revision `v3`, which was never downloaded"),
            "{e}"
        );
    }

    fn manifest_with_files(files: &[&str]) -> String {
        use crate::envs::TaskFamily;
        use crate::history::{RunEntry, RunSummary, SourceAlgo, TaskEntry, TransitionSchema};
        let spec = TaskFamily::from_id("dark_room").unwrap().spec().clone();
        let mut m = Manifest::new(
            spec.clone(),
            TransitionSchema::for_env(&spec),
            vec![TaskEntry {
                index: 0,
                params: serde_json::json!({}),
            }],
            "train",
            SourceAlgo {
                name: "ppo".into(),
                config: serde_json::json!({}),
            },
        );
        for (i, f) in files.iter().enumerate() {
            m.runs.push(RunEntry {
                file: f.to_string(),
                summary: RunSummary {
                    run: i as u32,
                    task: 0,
                    rows: 0..10,
                    episodes: 1,
                    first_return: None,
                    last_return: None,
                },
            });
        }
        serde_json::to_string(&m).unwrap()
    }

    #[test]
    fn cached_dataset_resolves_with_all_data_files() {
        let tmp = tempfile::tempdir().unwrap();
        let manifest = manifest_with_files(&[
            "data/part-00000.parquet",
            "data/part-00001.parquet",
            "data/part-00000.parquet",
        ]);
        let snap = put(
            tmp.path(),
            "datasets--org--histories",
            "main",
            COMMIT,
            &[
                ("dark_room/dataset.json", manifest.as_bytes()),
                ("dark_room/data/part-00000.parquet", b"p0"),
                ("dark_room/data/part-00001.parquet", b"p1"),
            ],
        );
        let r = parse("hf://datasets/org/histories/dark_room");
        for hub in [
            Hub::new(tmp.path()).with_offline(true),
            no_network_hub(tmp.path()),
        ] {
            let dir = hub.resolve_dataset(&r).unwrap();
            assert_eq!(dir, snap.join("dark_room"));
            assert_eq!(Manifest::load(&dir).unwrap().runs.len(), 3);
            assert_eq!(
                std::fs::read(dir.join("data/part-00001.parquet")).unwrap(),
                b"p1"
            );
        }
        let e = Hub::new(tmp.path())
            .with_offline(true)
            .resolve_dataset(&parse("hf://org/histories/dark_room"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dataset repos"), "{e}");
    }

    #[test]
    fn missing_file_offline_names_repo_revision_and_file() {
        let tmp = tempfile::tempdir().unwrap();
        put(
            tmp.path(),
            "models--org--half",
            "v1",
            COMMIT,
            &[("config.json", b"{}")],
        );
        let hub = Hub::new(tmp.path()).with_offline(true);
        let e = hub
            .resolve_checkpoint(&parse("hf://org/half@v1"))
            .unwrap_err()
            .to_string();
        for part in [
            "`model.safetensors`",
            "`org/half`",
            "revision `v1`",
            COMMIT,
            "HF_HUB_OFFLINE",
        ] {
            assert!(e.contains(part), "missing {part}: {e}");
        }
        assert!(!e.contains("`config.json`"), "config.json is cached: {e}");

        let manifest = manifest_with_files(&["data/part-00000.parquet", "data/part-00001.parquet"]);
        put(
            tmp.path(),
            "datasets--org--d",
            "main",
            COMMIT,
            &[
                ("dataset.json", manifest.as_bytes()),
                ("data/part-00000.parquet", b"p0"),
            ],
        );
        let e = hub
            .resolve_dataset(&parse("hf://datasets/org/d"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`data/part-00001.parquet`") && e.contains("dataset repo `org/d`"),
            "{e}"
        );
        assert!(!e.contains("part-00000"), "{e}");

        let e = hub
            .resolve_file(&parse("hf://org/nothing/q.pt"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`q.pt`") && e.contains("never downloaded"),
            "{e}"
        );
    }

    #[test]
    fn missing_file_online_fails_cleanly_when_the_hub_is_unreachable() {
        let tmp = tempfile::tempdir().unwrap();
        let e = no_network_hub(tmp.path())
            .resolve_checkpoint(&parse("hf://org/absent"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot look up revision `main`") && e.contains("`org/absent`"),
            "{e}"
        );
    }

    #[test]
    fn manifest_paths_that_escape_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for (i, bad) in [
            "../../models--org--x/snapshots/evil",
            "/etc/passwd",
            "data/../../x",
        ]
        .iter()
        .enumerate()
        {
            let folder = format!("datasets--org--evil{i}");
            let manifest = manifest_with_files(&["data/part-00000.parquet", bad]);
            put(
                tmp.path(),
                &folder,
                "main",
                COMMIT,
                &[
                    ("dataset.json", manifest.as_bytes()),
                    ("data/part-00000.parquet", b"p0"),
                ],
            );
            // Online too: the refusal comes before any download is attempted.
            for hub in [
                Hub::new(tmp.path()).with_offline(true),
                no_network_hub(tmp.path()),
            ] {
                let e = hub
                    .resolve_dataset(&parse(&format!("hf://datasets/org/evil{i}")))
                    .unwrap_err()
                    .to_string();
                assert!(
                    e.contains("dataset.json") && e.contains("refusing"),
                    "{bad}: {e}"
                );
                assert!(e.contains("`..`") || e.contains("absolute"), "{bad}: {e}");
            }
        }
    }
}
