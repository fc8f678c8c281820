//! Object storage: `s3://BUCKET/PREFIX` dataset and checkpoint paths, and Hub dataset files
//! streamed over HTTP (feature `s3`; the Hub side is [`crate::hub`]'s `stream_dataset`).
//!
//! A remote folder is used through a local mirror under the cache (`$REINCARNATE_CACHE`, else
//! `$XDG_CACHE_HOME/reincarnate`, else `~/.cache/reincarnate`): its small JSON files (manifests,
//! configs) are copied, and each Parquet file is represented by a *pointer file*, a few hundred
//! bytes naming the object, its size and its ETag. Every reader of dataset folders works on the
//! mirror unchanged; [`crate::history::TransitionReader`] opening a pointer reads the object by
//! byte ranges (the footer, then only the column chunks it decodes), each range kept in a local
//! cache, so a dataset is streamed a row group at a time rather than downloaded whole, and read
//! again from the disk. Writers (`collect --out s3://...`, `train --out s3://...`) write into the
//! mirror and publish: a run's data files first, its manifest last.
//!
//! Credentials, region and endpoint come from the standard variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, and
//! `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint such as a local server).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[cfg(feature = "s3")]
mod s3;
#[cfg(feature = "s3")]
pub use s3::{http_get, publish_dataset, publish_folder, stats, RemoteFile, Stats};

/// The first line of a pointer file.
pub const POINTER_MAGIC: &str = "reincarnate-remote-object v1\n";

/// `s3://BUCKET/PREFIX`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectUrl {
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty (the whole bucket).
    pub prefix: String,
}

impl ObjectUrl {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Config(format!(
                "`{s}`: {why}; expected s3://BUCKET/PREFIX (e.g. s3://my-bucket/datasets/dark-room)"
            ))
        };
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// address"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !bucket_ok {
            return Err(bad(
                "the bucket name must be 3–63 lowercase letters, digits, `-` or `.`",
            ));
        }
        let prefix = prefix.trim_matches('/').to_string();
        for part in prefix.split('/').filter(|p| !p.is_empty()) {
            if part == "." || part == ".." {
                return Err(bad("`.` and `..` are not allowed in the prefix"));
            }
        }
        if prefix.split('/').any(|p| p.is_empty()) && !prefix.is_empty() {
            return Err(bad("the prefix has an empty segment (`//`)"));
        }
        Ok(Self {
            bucket: bucket.to_string(),
            prefix,
        })
    }

    /// The object key of `rel` (a `/`-separated path inside the prefix).
    pub fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    /// The local mirror folder of this prefix.
    pub fn mirror(&self) -> PathBuf {
        let mut p = cache_root().join("s3").join(&self.bucket);
        for part in self.prefix.split('/').filter(|p| !p.is_empty()) {
            p.push(part);
        }
        p
    }
}

impl std::fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Whether `s` names an object-storage location.
pub fn is_object_url(s: &str) -> bool {
    s.starts_with("s3://")
}

/// Where mirrors and cached byte ranges live.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("REINCARNATE_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("reincarnate");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/reincarnate"))
        .unwrap_or_else(|| PathBuf::from(".cache/reincarnate"))
}

/// What a pointer file says of its object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pointer {
    /// The S3 bucket (empty for an object over HTTP).
    #[serde(default)]
    pub bucket: String,
    /// The object's key in the bucket, or its path under `http`.
    pub key: String,
    /// An object read over HTTP (a Hub file): the base URL its key is under
    /// (`ENDPOINT/datasets/ORG/NAME/resolve/COMMIT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    pub size: u64,
    #[serde(default)]
    pub etag: Option<String>,
}

impl Pointer {
    pub fn url(&self) -> String {
        match &self.http {
            Some(base) => format!("{base}/{}", self.key),
            None => format!("s3://{}/{}", self.bucket, self.key),
        }
    }

    /// The pointer file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let json = serde_json::to_string(self)
            .map_err(|e| Error::Config(format!("a pointer does not serialise: {e}")))?;
        Ok(format!("{POINTER_MAGIC}{json}\n").into_bytes())
    }
}

/// The pointer `path` holds, if it is a pointer file (a data file is `None`).
pub fn read_pointer(path: &Path) -> Result<Option<Pointer>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = vec![0u8; POINTER_MAGIC.len()];
    let n = f.read(&mut head).map_err(|e| Error::io(path, e))?;
    if n < head.len() || head != POINTER_MAGIC.as_bytes() {
        return Ok(None);
    }
    let mut rest = String::new();
    f.take(64 << 10)
        .read_to_string(&mut rest)
        .map_err(|e| Error::io(path, e))?;
    serde_json::from_str(rest.trim()).map(Some).map_err(|e| {
        Error::data(
            path,
            format!("a remote-object pointer that does not parse: {e}"),
        )
    })
}

/// The local folder for a dataset or checkpoint argument: an `s3://` prefix is mirrored (its
/// JSON files copied, its Parquet files as pointers, its other files downloaded); anything
/// else is returned as a path.
pub fn local_folder(arg: &str) -> Result<PathBuf> {
    if !is_object_url(arg) {
        return Ok(PathBuf::from(arg));
    }
    let url = ObjectUrl::parse(arg)?;
    mirror(&url, true)
}

/// The mirror of `url` to write into (an empty or missing prefix is fine): what is there already
/// is mirrored, so that finished runs are not redone.
pub fn folder_for_writing(arg: &str) -> Result<Option<(ObjectUrl, PathBuf)>> {
    if crate::hub::is_hub_url(arg) {
        return Err(Error::Config(format!(
            "--out {arg}: the Hub is read-only here (no commits are made to it); write to a folder \
             or to s3://BUCKET/PREFIX, then upload the folder with `hf upload ORG/NAME FOLDER`"
        )));
    }
    if !is_object_url(arg) {
        return Ok(None);
    }
    let url = ObjectUrl::parse(arg)?;
    let local = mirror(&url, false)?;
    Ok(Some((url, local)))
}

#[cfg(feature = "s3")]
fn mirror(url: &ObjectUrl, must_exist: bool) -> Result<PathBuf> {
    s3::mirror(url, must_exist)
}

#[cfg(not(feature = "s3"))]
fn mirror(url: &ObjectUrl, _must_exist: bool) -> Result<PathBuf> {
    Err(not_built(&url.to_string()))
}

/// The Parquet data under `folder` (a mirror): its bytes, counting the objects pointer files
/// name, and how many of its files are pointers.
pub fn remote_bytes(folder: &Path) -> Result<(u64, usize)> {
    let (mut total, mut pointers) = (0, 0);
    let mut stack = vec![folder.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let p = e.map_err(|err| Error::io(&d, err))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                match read_pointer(&p)? {
                    Some(ptr) => {
                        total += ptr.size;
                        pointers += 1;
                    }
                    None => total += std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?.len(),
                }
            }
        }
    }
    Ok((total, pointers))
}

/// The error for an `s3://` path in a build without the feature.
pub fn not_built(what: &str) -> Error {
    Error::Config(format!(
        "{what}: object storage needs the `s3` feature (cargo build --release --features s3)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_urls_parse_or_say_what_is_wrong() {
        let u = ObjectUrl::parse("s3://my-bucket/datasets/dark/").unwrap();
        assert_eq!(u.bucket, "my-bucket");
        assert_eq!(u.prefix, "datasets/dark");
        assert_eq!(u.key("dataset.json"), "datasets/dark/dataset.json");
        assert_eq!(ObjectUrl::parse("s3://bkt").unwrap().key("a"), "a");
        for (bad, why) in [
            ("s3://B/x", "lowercase"),
            ("s3://ab/x", "3–63"),
            ("s3://bucket/a/../b", "`..`"),
            ("s3://bucket/a//b", "empty segment"),
            ("gs://bucket/a", "not an s3://"),
        ] {
            let e = ObjectUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn pointer_files_round_trip_and_data_files_are_not_pointers() {
        let dir = tempfile::tempdir().unwrap();
        let p = Pointer {
            bucket: "bkt".into(),
            key: "d/runs/run-00000/data/a.parquet".into(),
            http: None,
            size: 1234,
            etag: Some("\"abc\"".into()),
        };
        let file = dir.path().join("a.parquet");
        std::fs::write(&file, p.to_bytes().unwrap()).unwrap();
        assert_eq!(read_pointer(&file).unwrap(), Some(p));
        std::fs::write(&file, b"PAR1\x00\x00").unwrap();
        assert_eq!(read_pointer(&file).unwrap(), None);
        let mut broken = POINTER_MAGIC.as_bytes().to_vec();
        broken.extend_from_slice(b"{not json");
        std::fs::write(&file, broken).unwrap();
        let e = read_pointer(&file).unwrap_err().to_string();
        assert!(e.contains("a.parquet") && e.contains("pointer"), "{e}");
    }

    #[cfg(not(feature = "s3"))]
    #[test]
    fn without_the_feature_s3_paths_say_how_to_build() {
        let e = local_folder("s3://bucket/data").unwrap_err().to_string();
        assert!(e.contains("--features s3"), "{e}");
        assert_eq!(
            local_folder("datasets/x").unwrap(),
            PathBuf::from("datasets/x")
        );
    }
}
