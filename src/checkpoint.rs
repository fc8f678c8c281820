//! Checkpoint folders, in the convention of Hugging Face model repositories:
//!
//! ```text
//! checkpoints/<name>/
//!   model.safetensors      weights with dotted PyTorch-style names; __metadata__: format=pt, config=<JSON>
//!   config.json            algorithm, agent/network config, env spec
//!   trainer_state.json     step counters, RNG and schedule state, environment snapshot: exact resume
//!   optimizer.safetensors  optimiser moments (resume only)
//!   target.safetensors     target networks, named like the online ones (resume only, DQN/SAC)
//!   replay.safetensors     replay buffer contents (resume only, off-policy agents)
//! ```
//!
//! A folder is written beside its final place (`.<name>.tmp-PID`) and swapped in whole
//! ([`crate::fs::swap_dir`], one atomic exchange on Linux), so a crash leaves either the
//! previous checkpoint or the new one, never a half-written mix; the swap's leftovers of a
//! killed process are removed by the next save.

use crate::error::{Error, Result};
use crate::fs::{read_json, write_atomic, write_json_atomic};
use crate::replay::RawArray;
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const REPLAY_FILE: &str = "replay.safetensors";
pub const TARGET_FILE: &str = "target.safetensors";

/// Decodes `value` (the object at `at` in `file`; `at` empty for the whole file) into `T`. With
/// `#[serde(deny_unknown_fields)]` on `T`, a missing, unknown or mistyped field is an error
/// naming the file and the field's path (`agent.optimizer_step`).
pub fn decode_strict<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
    file: &Path,
    at: &str,
) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = match (at, path.as_str()) {
            ("", ".") => "the top level".to_string(),
            (at, ".") => at.to_string(),
            ("", p) => p.to_string(),
            (at, p) => format!("{at}.{p}"),
        };
        Error::data(file, format!("{field}: {}", e.into_inner()))
    })
}

/// [`decode_strict`] for a file the platform writes in full (a checkpoint's `config.json`,
/// `dataset.json`, a loop state): every field that `T` writes must also be in `value`, so a
/// field that was removed is an error naming it rather than a default that silently changes
/// what is loaded (the structs give defaults for hand-written TOML).
pub fn decode_complete<T: serde::de::DeserializeOwned + serde::Serialize>(
    value: &serde_json::Value,
    file: &Path,
    at: &str,
) -> Result<T> {
    let decoded: T = decode_strict(value, file, at)?;
    let written = serde_json::to_value(&decoded)
        .map_err(|e| Error::data(file, format!("cannot re-encode {at}: {e}")))?;
    match first_missing(&written, value, at) {
        Some(field) => Err(Error::data(
            file,
            format!("{field}: missing field (the platform writes every field of this file)"),
        )),
        None => Ok(decoded),
    }
}

/// `at.k` (`k` alone at the top level).
fn join_path(at: &str, k: &str) -> String {
    if at.is_empty() {
        k.to_string()
    } else {
        format!("{at}.{k}")
    }
}

/// The first object key present in `written` and absent from `read`, as a dotted path.
fn first_missing(
    written: &serde_json::Value,
    read: &serde_json::Value,
    at: &str,
) -> Option<String> {
    use serde_json::Value;
    let join = |k: &str| join_path(at, k);
    match (written, read) {
        (Value::Object(w), Value::Object(r)) => w.iter().find_map(|(k, wv)| match r.get(k) {
            None => Some(join(k)),
            Some(rv) => first_missing(wv, rv, &join(k)),
        }),
        (Value::Array(w), Value::Array(r)) => w
            .iter()
            .zip(r)
            .enumerate()
            .find_map(|(i, (wv, rv))| first_missing(wv, rv, &join(&i.to_string()))),
        // Serde reads a struct from an array too (its fields in order): the file must have
        // the object the platform wrote.
        (Value::Object(_), _) => Some(if at.is_empty() {
            "the top level (not an object)".to_string()
        } else {
            format!("{at} (not an object)")
        }),
        _ => None,
    }
}

/// The first dotted path at which two JSON values differ, ignoring object keys in `skip`
/// (at any depth); `at` prefixes the path (empty: none).
pub fn first_difference(
    a: Option<&serde_json::Value>,
    b: Option<&serde_json::Value>,
    at: &str,
    skip: &[&str],
) -> Option<String> {
    use serde_json::Value;
    let join = |k: &str| join_path(at, k);
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .filter(|k| !skip.contains(&k.as_str()))
                .find_map(|k| first_difference(x.get(k), y.get(k), &join(k), skip))
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| {
                first_difference(Some(p), Some(q), &join(&i.to_string()), skip)
            })
        }
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            (x.as_f64() != y.as_f64()).then(|| at.to_string())
        }
        (x, y) => (x != y).then(|| at.to_string()),
    }
}

/// The value at dotted `path` in `v`, shortened for a message (`absent` if there is none).
pub fn show_at(v: &serde_json::Value, path: &str) -> String {
    let found = path.split('.').try_fold(v, |v, k| match v {
        serde_json::Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => v.get(k),
    });
    match found {
        None => "absent".into(),
        Some(v) => {
            let s = v.to_string();
            if s.len() > 60 {
                format!("{}…", &s[..s.floor_char_boundary(60)])
            } else {
                s
            }
        }
    }
}

/// Errors unless `config` (a checkpoint's `config.json`) is exactly what the agent it
/// configures writes: a field that was removed, retyped or changed to a value the agent would
/// not write (a derived value such as SAC's `gamma`) is named.
pub fn check_config_round_trip(
    config: &serde_json::Value,
    written: &serde_json::Value,
) -> Result<()> {
    match first_difference(Some(config), Some(written), "", &[]) {
        None => Ok(()),
        Some(path) => Err(Error::data(
            CONFIG_FILE,
            format!(
                "`{path}` is {}, but the agent this file configures writes {}: the file was edited or damaged",
                show_at(config, &path),
                show_at(written, &path)
            ),
        )),
    }
}

/// `#[serde(deserialize_with = "crate::checkpoint::required")]` on an `Option` field makes it
/// required (present, possibly `null`): serde otherwise reads a missing `Option` as `None`.
pub fn required<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d)
}

/// Serialises named arrays into safetensors bytes with optional `__metadata__`. The header's
/// keys (tensor names, and the metadata's keys) are written in sorted order, so the same arrays
/// and metadata always give the same bytes.
pub fn safetensors_bytes(
    arrays: &BTreeMap<String, RawArray>,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = arrays
        .iter()
        .map(|(k, a)| {
            safetensors::tensor::TensorView::new(a.dtype, a.shape.clone(), &a.bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::Training(format!("tensor `{k}` cannot be serialised: {e}")))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::tensor::serialize(views, metadata)
        .map_err(|e| Error::Training(format!("safetensors serialisation failed: {e}")))?;
    sort_safetensors_header(bytes)
}

/// The `__metadata__` key of the checksum of a safetensors file's data section.
pub const CHECKSUM_KEY: &str = "crc32";

fn checksum(data: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(data))
}

/// Rewrites a safetensors header with its keys sorted at both levels (the crate writes the
/// metadata map in hash order). Offsets are unchanged: they index the data section, which is
/// kept as it is. The header stays padded with spaces to a multiple of 8 bytes, and records
/// the data section's CRC-32 (`__metadata__.crc32`), which [`read_safetensors`] checks.
fn sort_safetensors_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    type Header = BTreeMap<String, BTreeMap<String, serde_json::Value>>;
    let bad = |m: String| Error::Training(format!("safetensors header rewrite: {m}"));
    let n = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| bad("no header length".into()))? as usize;
    let header_end = 8usize
        .checked_add(n)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| bad(format!("header length {n} beyond the data")))?;
    let mut header: Header =
        serde_json::from_slice(&bytes[8..header_end]).map_err(|e| bad(e.to_string()))?;
    header.entry("__metadata__".into()).or_default().insert(
        CHECKSUM_KEY.into(),
        serde_json::Value::from(checksum(&bytes[header_end..])),
    );
    let mut h = serde_json::to_vec(&header).map_err(|e| bad(e.to_string()))?;
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + bytes.len() - header_end);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[header_end..]);
    Ok(out)
}

/// Writes named arrays to a safetensors file atomically.
pub fn write_safetensors(
    path: &Path,
    arrays: &BTreeMap<String, RawArray>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    write_atomic(path, &safetensors_bytes(arrays, metadata)?)
}

/// Reads every array and the `__metadata__` of a safetensors file. A file that records a
/// checksum of its data (every file the platform writes) must match it; files from elsewhere
/// carry none and are read as they are.
pub fn read_safetensors(
    path: &Path,
) -> Result<(BTreeMap<String, RawArray>, HashMap<String, String>)> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    crate::limits::check_memory(|| format!("reading {}", path.display()), Some(len))?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::data(path, format!("not a valid safetensors file: {e}")))?;
    let (header_len, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::data(path, format!("unreadable safetensors header: {e}")))?;
    if let Some(recorded) = meta.metadata().as_ref().and_then(|m| m.get(CHECKSUM_KEY)) {
        let data = bytes.get(8 + header_len..).unwrap_or_default();
        let computed = checksum(data);
        if *recorded != computed {
            return Err(Error::data(
                path,
                format!(
                    "the data does not match the checksum its header records (crc32 {recorded}, computed {computed}): the file is damaged"
                ),
            ));
        }
    }
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        out.insert(
            name,
            RawArray {
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                bytes: view.data().to_vec(),
            },
        );
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// A candle tensor as raw little-endian bytes (f32, f64, i64, u32, u8, f16, bf16).
pub fn tensor_to_raw(t: &Tensor) -> Result<RawArray> {
    let shape = t.dims().to_vec();
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F32 => RawArray::f32(shape, &flat.to_vec1::<f32>()?),
        DType::I64 => RawArray::i64(shape, &flat.to_vec1::<i64>()?),
        DType::F64 => RawArray {
            dtype: safetensors::Dtype::F64,
            shape,
            bytes: flat
                .to_vec1::<f64>()?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        },
        DType::U32 => RawArray {
            dtype: safetensors::Dtype::U32,
            shape,
            bytes: flat
                .to_vec1::<u32>()?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        },
        DType::U8 => RawArray {
            dtype: safetensors::Dtype::U8,
            shape,
            bytes: flat.to_vec1::<u8>()?,
        },
        DType::F16 => RawArray {
            dtype: safetensors::Dtype::F16,
            shape,
            bytes: flat
                .to_vec1::<half::f16>()?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        },
        DType::BF16 => RawArray {
            dtype: safetensors::Dtype::BF16,
            shape,
            bytes: flat
                .to_vec1::<half::bf16>()?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        },
        other => {
            return Err(Error::Training(format!(
                "tensors of dtype {other:?} cannot be checkpointed"
            )))
        }
    })
}

/// Raw bytes back to a candle tensor of the same dtype (no silent conversion).
pub fn raw_to_tensor(name: &str, a: &RawArray, device: &Device) -> Result<Tensor> {
    use safetensors::Dtype as S;
    let (dtype, width) = match a.dtype {
        S::F32 => (DType::F32, 4),
        S::F64 => (DType::F64, 8),
        S::I64 => (DType::I64, 8),
        S::U32 => (DType::U32, 4),
        S::U8 | S::BOOL => (DType::U8, 1),
        S::F16 => (DType::F16, 2),
        S::BF16 => (DType::BF16, 2),
        other => {
            return Err(Error::Training(format!(
                "tensor `{name}` has dtype {other:?}, which this platform does not read"
            )))
        }
    };
    let elems: usize = a.shape.iter().product();
    if a.bytes.len() != elems * width {
        return Err(Error::Training(format!(
            "tensor `{name}`: {} bytes for shape {:?} of {:?}",
            a.bytes.len(),
            a.shape,
            a.dtype
        )));
    }
    Ok(Tensor::from_raw_buffer(&a.bytes, dtype, &a.shape, device)?)
}

/// Tensors by name → raw arrays.
pub fn tensors_to_raw(tensors: &HashMap<String, Tensor>) -> Result<BTreeMap<String, RawArray>> {
    tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), tensor_to_raw(t)?)))
        .collect()
}

/// Raw arrays → tensors by name on `device`.
pub fn raw_to_tensors(
    arrays: &BTreeMap<String, RawArray>,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    arrays
        .iter()
        .map(|(k, a)| Ok((k.clone(), raw_to_tensor(k, a, device)?)))
        .collect()
}

/// Everything a checkpoint folder holds.
#[derive(Default)]
pub struct CheckpointData {
    pub config: serde_json::Value,
    pub model: BTreeMap<String, RawArray>,
    pub trainer_state: Option<serde_json::Value>,
    pub optimizer: Option<BTreeMap<String, RawArray>>,
    pub replay: Option<BTreeMap<String, RawArray>>,
    /// Target networks (DQN, SAC), with the online networks' tensor names.
    pub target: Option<BTreeMap<String, RawArray>>,
}

fn sibling(dir: &Path, tag: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    dir.with_file_name(format!(".{name}.{tag}-{}", std::process::id()))
}

/// Removes the `.NAME.tmp-PID` and `.NAME.old-PID` folders of `dir` that a killed process left
/// (the caller holds the folder's lock, so no live writer owns them).
fn remove_stale_siblings(dir: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Ok(());
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let name = name.to_string_lossy();
    let prefixes = [format!(".{name}.tmp-"), format!(".{name}.old-")];
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        if prefixes.iter().any(|p| n.starts_with(p.as_str())) && entry.path().is_dir() {
            std::fs::remove_dir_all(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

/// Writes a checkpoint folder atomically (see the module docs).
pub fn save(dir: &Path, data: &CheckpointData) -> Result<()> {
    let tmp = sibling(dir, "tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            crate::fs::create_dir_all(parent)?;
        }
    }
    crate::fs::create_dir_all(&tmp)?;
    // A write that fails (a full disk, a file-size limit) leaves the previous checkpoint as it
    // was and no half-written folder beside it.
    if let Err(e) = write_folder(&tmp, dir, data) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        let old = crate::fs::swap_dir(&tmp, dir)?;
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    } else {
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    }
    remove_stale_siblings(dir)?;
    tracing::debug!(checkpoint = %dir.display(), resume = data.trainer_state.is_some(), "checkpoint written");
    Ok(())
}

/// Writes the checkpoint's files into `tmp`, with copies of the files that live beside the
/// checkpoint in `dir` (metrics, plots).
fn write_folder(tmp: &Path, dir: &Path, data: &CheckpointData) -> Result<()> {
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert("config".to_string(), data.config.to_string());
    write_safetensors(&tmp.join(MODEL_FILE), &data.model, Some(meta))?;
    write_json_atomic(&tmp.join(CONFIG_FILE), &data.config)?;
    if let Some(s) = &data.trainer_state {
        write_json_atomic(&tmp.join(TRAINER_STATE_FILE), s)?;
    }
    if let Some(o) = &data.optimizer {
        write_safetensors(&tmp.join(OPTIMIZER_FILE), o, None)?;
    }
    if let Some(r) = &data.replay {
        write_safetensors(&tmp.join(REPLAY_FILE), r, None)?;
    }
    if let Some(t) = &data.target {
        write_safetensors(&tmp.join(TARGET_FILE), t, None)?;
    }
    // Keep files that live beside the checkpoint (metrics, plots) across the swap; not the
    // temporary files a killed process left.
    if dir.exists() {
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name();
            let target = tmp.join(&name);
            if !target.exists()
                && !crate::fs::is_temp_name(&name.to_string_lossy())
                && entry.file_type().map(|t| t.is_file()).unwrap_or(false)
            {
                std::fs::copy(entry.path(), &target).map_err(|e| Error::io(entry.path(), e))?;
            }
        }
    }
    Ok(())
}

/// Reads the weights and config of a checkpoint folder, and none of its resume-only files (a
/// policy to act with: a teacher, an evaluation, a collection policy; its replay may be large).
pub fn load_weights(dir: &Path) -> Result<CheckpointData> {
    if !dir.is_dir() {
        return Err(Error::data(
            dir,
            "not a checkpoint folder (expected a directory with model.safetensors and config.json)",
        ));
    }
    let config: serde_json::Value = read_json(&dir.join(CONFIG_FILE))?;
    let (model, _) = read_safetensors(&dir.join(MODEL_FILE))?;
    Ok(CheckpointData {
        config,
        model,
        ..Default::default()
    })
}

/// Reads a checkpoint folder. Missing resume-only files are `None`.
pub fn load(dir: &Path) -> Result<CheckpointData> {
    let weights = load_weights(dir)?;
    let opt = |name: &str| -> Result<Option<BTreeMap<String, RawArray>>> {
        let p = dir.join(name);
        Ok(if p.exists() {
            Some(read_safetensors(&p)?.0)
        } else {
            None
        })
    };
    let ts = dir.join(TRAINER_STATE_FILE);
    Ok(CheckpointData {
        trainer_state: if ts.exists() {
            Some(read_json(&ts)?)
        } else {
            None
        },
        optimizer: opt(OPTIMIZER_FILE)?,
        replay: opt(REPLAY_FILE)?,
        target: opt(TARGET_FILE)?,
        ..weights
    })
}

/// Compares tensors found in a file with the ones a model expects and lists every mismatch
/// (missing, unexpected, wrong shape, wrong dtype) at once.
pub fn check_tensors(
    source: &Path,
    expected: &BTreeMap<String, (Vec<usize>, safetensors::Dtype)>,
    found: &BTreeMap<String, RawArray>,
) -> Result<()> {
    let mut problems = Vec::new();
    for (name, (shape, dtype)) in expected {
        match found.get(name) {
            None => problems.push(format!(
                "missing tensor `{name}` (expected {dtype:?} {shape:?})"
            )),
            Some(a) if &a.shape != shape || a.dtype != *dtype => problems.push(format!(
                "tensor `{name}`: expected {dtype:?} {shape:?}, found {:?} {:?}",
                a.dtype, a.shape
            )),
            _ => {}
        }
    }
    for name in found.keys() {
        if !expected.contains_key(name) {
            problems.push(format!("unexpected tensor `{name}`"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::data(
            source,
            format!(
                "{} problem(s):\n  {}",
                problems.len(),
                problems.join("\n  ")
            ),
        ))
    }
}

/// `reincarnate inspect` of a checkpoint folder: config, step and a tensor table.
pub fn describe(dir: &Path) -> Result<String> {
    let data = load(dir)?;
    let mut out = format!("checkpoint {}\n", dir.display());
    if let Some(algo) = data.config.get("algorithm").and_then(|v| v.as_str()) {
        out.push_str(&format!("algorithm: {algo}\n"));
    }
    if let Some(env) = data
        .config
        .pointer("/env/config/id")
        .and_then(|v| v.as_str())
    {
        out.push_str(&format!("env: {env}\n"));
    }
    if let Some(ts) = &data.trainer_state {
        for key in ["step", "episodes", "updates"] {
            if let Some(v) = ts.get(key) {
                out.push_str(&format!("{key}: {v}\n"));
            }
        }
    } else {
        out.push_str("trainer state: none (weights only; cannot resume)\n");
    }
    out.push_str(&format!(
        "optimizer state: {}\nreplay buffer: {}\n\n",
        if data.optimizer.is_some() {
            "yes"
        } else {
            "no"
        },
        if data.replay.is_some() { "yes" } else { "no" }
    ));
    let rows: Vec<Vec<String>> = data
        .model
        .iter()
        .map(|(k, a)| {
            vec![
                k.clone(),
                format!("{:?}", a.dtype),
                format!("{:?}", a.shape),
                a.shape.iter().product::<usize>().to_string(),
            ]
        })
        .collect();
    let total: usize = data
        .model
        .values()
        .map(|a| a.shape.iter().product::<usize>())
        .sum();
    out.push_str(&crate::report::table(
        &["tensor", "dtype", "shape", "numel"],
        &rows,
    ));
    out.push_str(&format!(
        "\n{} tensors, {total} parameters\n\nconfig:\n{}\n",
        data.model.len(),
        serde_json::to_string_pretty(&data.config).unwrap_or_default()
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CheckpointData {
        let mut model = BTreeMap::new();
        model.insert(
            "q.0.weight".into(),
            RawArray::f32(vec![2, 3], &[1., 2., 3., 4., 5., 6.]),
        );
        model.insert("q.0.bias".into(), RawArray::f32(vec![2], &[0.5, -0.5]));
        CheckpointData {
            config: serde_json::json!({"algorithm": "dqn"}),
            model,
            trainer_state: Some(serde_json::json!({"step": 10})),
            optimizer: None,
            replay: None,
            target: None,
        }
    }

    #[test]
    fn save_load_round_trip_with_metadata_and_atomic_swap() {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("ck");
        save(&ck, &sample()).unwrap();
        std::fs::write(ck.join("metrics.jsonl"), "{}\n").unwrap();
        let mut second = sample();
        second.trainer_state = Some(serde_json::json!({"step": 20}));
        save(&ck, &second).unwrap();
        let back = load(&ck).unwrap();
        assert_eq!(back.model, second.model);
        assert_eq!(back.trainer_state.unwrap()["step"], 20);
        assert!(
            ck.join("metrics.jsonl").exists(),
            "side files survive the swap"
        );
        let (_, meta) = read_safetensors(&ck.join(MODEL_FILE)).unwrap();
        assert_eq!(meta["format"], "pt");
        assert!(meta["config"].contains("dqn"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn mismatches_are_all_reported() {
        let data = sample();
        let mut expected = BTreeMap::new();
        expected.insert(
            "q.0.weight".to_string(),
            (vec![3, 3], safetensors::Dtype::F32),
        );
        expected.insert(
            "q.1.weight".to_string(),
            (vec![1, 2], safetensors::Dtype::F32),
        );
        let e = check_tensors(Path::new("m.safetensors"), &expected, &data.model)
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.safetensors"), "{e}");
        assert!(
            e.contains("`q.0.weight`: expected F32 [3, 3], found F32 [2, 3]"),
            "{e}"
        );
        assert!(e.contains("missing tensor `q.1.weight`"), "{e}");
        assert!(e.contains("unexpected tensor `q.0.bias`"), "{e}");
    }

    #[test]
    fn tensors_round_trip_through_raw_bytes() {
        let t = Tensor::new(&[[1.5f32, -2.0], [3.25, 0.0]], &Device::Cpu).unwrap();
        let raw = tensor_to_raw(&t).unwrap();
        let back = raw_to_tensor("t", &raw, &Device::Cpu).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
        let bad = RawArray {
            dtype: safetensors::Dtype::F32,
            shape: vec![3],
            bytes: vec![0; 8],
        };
        assert!(raw_to_tensor("bad", &bad, &Device::Cpu).is_err());
    }

    #[test]
    fn garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        std::fs::write(&p, b"not safetensors at all").unwrap();
        let e = read_safetensors(&p).unwrap_err().to_string();
        assert!(
            e.contains("x.safetensors") && e.contains("not a valid safetensors"),
            "{e}"
        );
    }

    #[test]
    fn the_same_arrays_and_metadata_always_give_the_same_bytes() {
        let arrays = sample().model;
        let meta = || -> HashMap<String, String> {
            (0..8)
                .map(|i| (format!("key{i}"), format!("{i}")))
                .collect()
        };
        let first = safetensors_bytes(&arrays, Some(meta())).unwrap();
        for _ in 0..20 {
            // Each HashMap iterates in its own random order.
            assert_eq!(safetensors_bytes(&arrays, Some(meta())).unwrap(), first);
        }
        let st = safetensors::SafeTensors::deserialize(&first).unwrap();
        assert_eq!(st.len(), arrays.len());
        for (name, a) in &arrays {
            assert_eq!(st.tensor(name).unwrap().data(), &a.bytes[..]);
        }
        let (n, m) = safetensors::SafeTensors::read_metadata(&first).unwrap();
        let mut want = meta();
        want.insert(CHECKSUM_KEY.into(), checksum(&first[8 + n..]));
        assert_eq!(m.metadata().clone().unwrap(), want);
    }

    #[test]
    fn a_flipped_bit_in_the_data_is_refused_by_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.safetensors");
        write_safetensors(&p, &sample().model, None).unwrap();
        assert!(read_safetensors(&p).is_ok());
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x10;
        std::fs::write(&p, &bytes).unwrap();
        let e = read_safetensors(&p).unwrap_err().to_string();
        assert!(
            e.contains("model.safetensors") && e.contains("checksum") && e.contains("damaged"),
            "{e}"
        );
    }
}
