//! Minari datasets (the maintained successor of D4RL): a folder `NAME-vN/` holding `data/`
//! with `metadata.json` and the episodes, in either storage backend:
//!
//! - `hdf5`: `data/main_data.hdf5`, one group `episode_ID` per episode with `observations`
//!   (steps + 1 rows), `actions`, `rewards`, `terminations`, `truncations` (steps rows);
//! - `arrow`: `data/ID/*.arrow`, one Arrow IPC file per episode with the same columns, all of
//!   steps + 1 rows (the step columns' last row is padding and is not read).
//!
//! `metadata.json` gives the spaces (Minari's JSON serialisation of Gymnasium spaces, with
//! Python's `Infinity`), `env_spec` (the Gymnasium id and time limit), `total_episodes`,
//! `total_steps` and `data_format`. Only `Box` observations and `Box`/`Discrete` actions are
//! supported; `Dict`, `Tuple`, `Text` spaces are refused by name.

use super::hdf5::H5;
use super::import::{Episode, ImportReport, Importer};
use crate::envs::{EnvSpec, Space};
use crate::error::{Error, Result};
use crate::history::{Manifest, SourceAlgo};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Storage backend of a Minari dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Hdf5,
    Arrow,
}

/// An opened Minari dataset.
pub struct MinariDataset {
    pub data_dir: PathBuf,
    pub metadata: Value,
    pub backend: Backend,
    pub observation_space: Space,
    pub action_space: Space,
    /// `env_spec.id`, when recorded.
    pub env_id: Option<String>,
    pub total_episodes: u64,
    pub total_steps: u64,
}

/// Parses JSON as Python's `json` writes it: bare `Infinity`, `-Infinity` and `NaN` become
/// the strings `"inf"`, `"-inf"`, `"nan"`.
pub fn python_json(s: &str) -> std::result::Result<Value, String> {
    let mut out = String::with_capacity(s.len());
    let (mut in_str, mut escaped) = (false, false);
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_str = true;
        }
        let mut matched = false;
        for (token, text) in [
            ("-Infinity", "\"-inf\""),
            ("Infinity", "\"inf\""),
            ("NaN", "\"nan\""),
        ] {
            if rest.starts_with(token) {
                out.push_str(text);
                rest = &rest[token.len()..];
                matched = true;
                break;
            }
        }
        if !matched {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    serde_json::from_str(&out).map_err(|e| e.to_string())
}

fn number(v: &Value) -> Option<f32> {
    match v {
        Value::Number(n) => n.as_f64().map(|x| x as f32),
        Value::String(s) => match s.as_str() {
            "inf" => Some(f32::INFINITY),
            "-inf" => Some(f32::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// A space from Minari's JSON serialisation.
pub fn parse_space(v: &Value, what: &str) -> std::result::Result<Space, String> {
    let ty = v.get("type").and_then(Value::as_str).unwrap_or("(none)");
    match ty {
        "Discrete" => {
            let n = v
                .get("n")
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("`{what}.n` is missing"))? as usize;
            if v.get("start").and_then(Value::as_i64).unwrap_or(0) != 0 {
                return Err(format!("`{what}` starts at a value other than 0; unsupported"));
            }
            Ok(Space::Discrete { n })
        }
        "Box" => {
            let shape: Vec<usize> = v
                .get("shape")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect())
                .ok_or_else(|| format!("`{what}.shape` is missing or not a list of sizes"))?;
            let flat = |k: &str| -> std::result::Result<Vec<f32>, String> {
                fn walk(v: &Value, out: &mut Vec<f32>) -> bool {
                    match v {
                        Value::Array(a) => a.iter().all(|x| walk(x, out)),
                        x => number(x).map(|n| out.push(n)).is_some(),
                    }
                }
                let mut out = Vec::new();
                let field = v.get(k).ok_or_else(|| format!("`{what}.{k}` is missing"))?;
                if walk(field, &mut out) {
                    Ok(out)
                } else {
                    Err(format!("`{what}.{k}` holds something other than numbers"))
                }
            };
            super::box_space(shape, flat("low")?, flat("high")?).map_err(|e| format!("`{what}`: {e}"))
        }
        other => Err(format!(
            "`{what}` is a {other} space; only Box observations and Box/Discrete actions are supported"
        )),
    }
}

impl MinariDataset {
    /// Opens the dataset at `path`: the dataset folder (`NAME-vN/`) or its `data/` folder.
    pub fn open(path: &Path) -> Result<Self> {
        let data_dir = if path.join("data").join("metadata.json").is_file() {
            path.join("data")
        } else if path.join("metadata.json").is_file() {
            path.to_path_buf()
        } else {
            return Err(Error::data(
                path,
                "not a Minari dataset: no data/metadata.json (expected the folder Minari writes, \
                 e.g. ~/.minari/datasets/NAMESPACE/NAME-v0)",
            ));
        };
        let meta_path = data_dir.join("metadata.json");
        let text = std::fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
        let metadata =
            python_json(&text).map_err(|e| Error::data(&meta_path, format!("not JSON: {e}")))?;
        let bad = |m: String| Error::data(&meta_path, m);
        let space = |key: &str| -> Result<Space> {
            let v = metadata
                .get(key)
                .ok_or_else(|| bad(format!("no `{key}`")))?;
            let v = match v {
                Value::String(s) => {
                    python_json(s).map_err(|e| bad(format!("`{key}` is not JSON: {e}")))?
                }
                other => other.clone(),
            };
            parse_space(&v, key).map_err(bad)
        };
        let (observation_space, action_space) =
            (space("observation_space")?, space("action_space")?);
        let backend = match metadata.get("data_format").and_then(Value::as_str) {
            Some("hdf5") => Backend::Hdf5,
            Some("arrow") => Backend::Arrow,
            other => {
                return Err(bad(format!(
                    "`data_format` is {other:?}; expected \"hdf5\" or \"arrow\""
                )))
            }
        };
        let env_id = match metadata.get("env_spec") {
            Some(Value::String(s)) => python_json(s)
                .ok()
                .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string)),
            Some(v) => v.get("id").and_then(Value::as_str).map(str::to_string),
            None => None,
        };
        let count = |k: &str| -> Result<u64> {
            metadata
                .get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| bad(format!("`{k}` is missing or not a count")))
        };
        Ok(Self {
            data_dir,
            backend,
            observation_space,
            action_space,
            env_id,
            total_episodes: count("total_episodes")?,
            total_steps: count("total_steps")?,
            metadata,
        })
    }

    /// The files of the dataset at `folder` (the folder holding `data/`), relative to it, as
    /// its metadata describes them: `data/main_data.hdf5`, or one `data/ID/part-0.arrow` per
    /// episode (the name Minari's Arrow writer gives). The Hub resolver fetches these.
    pub fn data_files(folder: &Path) -> Result<Vec<String>> {
        let ds = Self::open(folder)?;
        Ok(match ds.backend {
            Backend::Hdf5 => vec!["data/main_data.hdf5".to_string()],
            Backend::Arrow => (0..ds.total_episodes)
                .map(|i| format!("data/{i}/part-0.arrow"))
                .collect(),
        })
    }

    /// `dataset_id` from the metadata, or the folder name.
    pub fn dataset_id(&self) -> String {
        self.metadata
            .get("dataset_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| self.data_dir.display().to_string())
    }

    /// The target environment: `env` if given, else the native environment of `env_spec.id`.
    pub fn target_env(&self, env: Option<&str>) -> Result<EnvSpec> {
        super::target_env(
            env,
            self.env_id.as_deref(),
            &self.data_dir.join("metadata.json"),
        )
    }

    /// Converts every episode into a dataset at `out` for `env`.
    pub fn import(&self, out: &Path, env: &EnvSpec) -> Result<(Manifest, ImportReport)> {
        let meta = self.data_dir.join("metadata.json");
        super::check_spaces(
            &meta,
            &format!(
                "the Minari dataset `{}` (recorded on `{}`)",
                self.dataset_id(),
                self.env_id.as_deref().unwrap_or("an unrecorded env")
            ),
            &self.observation_space,
            &self.action_space,
            env,
        )?;
        let source = SourceAlgo {
            name: format!("minari:{}", self.dataset_id()),
            config: serde_json::json!({
                "format": "minari",
                "backend": format!("{:?}", self.backend).to_lowercase(),
                "path": self.data_dir.display().to_string(),
                "algorithm_name": self.metadata.get("algorithm_name"),
                "minari_version": self.metadata.get("minari_version"),
                "env_id": self.env_id,
            }),
        };
        let mut imp = Importer::create(out, env, &meta, source)?;
        match self.backend {
            Backend::Hdf5 => self.import_hdf5(&mut imp)?,
            Backend::Arrow => self.import_arrow(&mut imp)?,
        }
        if imp.report.episodes != self.total_episodes || imp.report.transitions != self.total_steps
        {
            return Err(Error::data(
                &meta,
                format!(
                    "`total_episodes` {} and `total_steps` {} disagree with the {} episodes and {} steps stored",
                    self.total_episodes, self.total_steps, imp.report.episodes, imp.report.transitions
                ),
            ));
        }
        imp.finish()
    }

    fn import_hdf5(&self, imp: &mut Importer) -> Result<()> {
        let path = self.data_dir.join("main_data.hdf5");
        let h5 = H5::open(&path)?;
        let mut ids: Vec<(u64, String)> = h5
            .groups("/")?
            .into_iter()
            .filter_map(|g| {
                g.strip_prefix("episode_")
                    .and_then(|i| i.parse().ok())
                    .map(|i| (i, g.clone()))
            })
            .collect();
        ids.sort();
        let discrete = self.action_space.is_discrete();
        for (_, g) in ids {
            let col = |n: &str| h5.require(&format!("/{g}/{n}"));
            let obs = col("observations")?;
            let steps = obs.rows().saturating_sub(1);
            let rewards = col("rewards")?;
            let actions = col("actions")?;
            for c in [&rewards, &actions] {
                if c.rows() != steps {
                    return Err(Error::data(
                        &path,
                        format!(
                            "`{}` has {} rows; with {} observations the episode has {steps} steps",
                            c.name,
                            c.rows(),
                            obs.rows()
                        ),
                    ));
                }
            }
            for c in [&obs, &rewards] {
                if c.dtype_name() == "float64" {
                    imp.note_conversion(format!(
                        "{}: float64 → float32",
                        c.name.rsplit('/').next().unwrap_or("")
                    ));
                }
            }
            let ep = Episode {
                obs: obs.read_f32(0, obs.rows())?,
                discrete: if discrete {
                    actions.read_i64(0, steps)?
                } else {
                    Vec::new()
                },
                continuous: if discrete {
                    Vec::new()
                } else {
                    actions.read_f32(0, steps)?
                },
                rewards: rewards.read_f32(0, steps)?,
                terminated: col("terminations")?.read_bool(0, steps)?,
                truncated: col("truncations")?.read_bool(0, steps)?,
            };
            imp.push_episode(&format!("{} `{g}`", path.display()), ep)?;
        }
        Ok(())
    }

    fn import_arrow(&self, imp: &mut Importer) -> Result<()> {
        let mut dirs: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.data_dir)
            .map_err(|e| Error::io(&self.data_dir, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name
                    .strip_prefix("episode_id=")
                    .unwrap_or(&name)
                    .parse()
                    .ok()?;
                Some((id, e.path()))
            })
            .collect();
        dirs.sort();
        for (_, dir) in dirs {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| Error::io(&dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "arrow"))
                .collect();
            files.sort();
            let [file] = files.as_slice() else {
                return Err(Error::data(
                    &dir,
                    format!(
                        "expected one .arrow file per episode, found {}",
                        files.len()
                    ),
                ));
            };
            let ep = read_arrow_episode(file, self.action_space.is_discrete(), imp)?;
            imp.push_episode(&file.display().to_string(), ep)?;
        }
        Ok(())
    }
}

/// One episode from a Minari Arrow IPC file.
fn read_arrow_episode(path: &Path, discrete: bool, imp: &mut Importer) -> Result<Episode> {
    use arrow::array::{Array, RecordBatch};
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = arrow::ipc::reader::FileReader::try_new(f, None)
        .map_err(|e| Error::data(path, format!("not an Arrow IPC file: {e}")))?;
    let batches: Vec<RecordBatch> = reader
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::data(path, format!("unreadable record batch: {e}")))?;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| Error::data(path, "no record batches"))?;
    let column = |name: &str| -> Result<Vec<std::sync::Arc<dyn Array>>> {
        let i = schema
            .index_of(name)
            .map_err(|_| Error::data(path, format!("no column `{name}`")))?;
        Ok(batches.iter().map(|b| b.column(i).clone()).collect())
    };
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let steps = rows.saturating_sub(1);
    let floats = |name: &str, imp: &mut Importer| -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for a in column(name)? {
            flatten_f32(path, name, a.as_ref(), &mut out, imp)?;
        }
        Ok(out)
    };
    let obs = floats("observations", imp)?;
    let mut rewards = floats("rewards", imp)?;
    rewards.truncate(steps);
    let (mut discrete_actions, mut continuous) = (Vec::new(), Vec::new());
    if discrete {
        for a in column("actions")? {
            let ints = arrow::compute::cast(&a, &arrow::datatypes::DataType::Int64)
                .map_err(|e| Error::data(path, format!("`actions`: {e}")))?;
            let ints = ints
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .ok_or_else(|| Error::data(path, "`actions` are not integers"))?;
            for i in 0..ints.len() {
                // The padding row after the last step may be null; a step's action may not.
                if ints.is_null(i) && discrete_actions.len() < steps {
                    return Err(Error::data(
                        path,
                        format!("`actions` row {} is null", discrete_actions.len()),
                    ));
                }
                discrete_actions.push(ints.value(i));
            }
        }
        discrete_actions.truncate(steps);
    } else {
        continuous = floats("actions", imp)?;
        let per = continuous.len() / rows.max(1);
        continuous.truncate(steps * per);
    }
    let flags = |name: &str| -> Result<Vec<bool>> {
        let mut out = Vec::new();
        for a in column(name)? {
            let b = a
                .as_any()
                .downcast_ref::<arrow::array::BooleanArray>()
                .ok_or_else(|| {
                    Error::data(
                        path,
                        format!("`{name}` is {}, expected bool", a.data_type()),
                    )
                })?;
            out.extend((0..b.len()).map(|i| b.is_valid(i) && b.value(i)));
        }
        out.truncate(steps);
        Ok(out)
    };
    Ok(Episode {
        obs,
        discrete: discrete_actions,
        continuous,
        rewards,
        terminated: flags("terminations")?,
        truncated: flags("truncations")?,
    })
}

/// Appends the values of a numeric or fixed-size-list column as `f32`.
fn flatten_f32(
    path: &Path,
    name: &str,
    a: &dyn arrow::array::Array,
    out: &mut Vec<f32>,
    imp: &mut Importer,
) -> Result<()> {
    use arrow::array::Array;
    use arrow::datatypes::DataType;
    match a.data_type() {
        DataType::FixedSizeList(_, _) => {
            let l = a
                .as_any()
                .downcast_ref::<arrow::array::FixedSizeListArray>()
                .ok_or_else(|| Error::data(path, format!("`{name}`: bad list column")))?;
            let values = l.values().slice(
                l.offset() * l.value_length() as usize,
                l.len() * l.value_length() as usize,
            );
            flatten_f32(path, name, values.as_ref(), out, imp)
        }
        DataType::Float32
        | DataType::Float64
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => {
            if a.data_type() == &DataType::Float64 {
                imp.note_conversion(format!("{name}: float64 → float32"));
            }
            if a.null_count() > 0 {
                return Err(Error::data(path, format!("`{name}` holds nulls")));
            }
            let f = arrow::compute::cast(a, &DataType::Float32)
                .map_err(|e| Error::data(path, format!("`{name}`: {e}")))?;
            let f = f
                .as_any()
                .downcast_ref::<arrow::array::Float32Array>()
                .ok_or_else(|| Error::data(path, format!("`{name}`: not numbers")))?;
            out.extend(f.values().iter().copied());
            Ok(())
        }
        other => Err(Error::data(
            path,
            format!("`{name}` is {other}; expected numbers or fixed-size lists of numbers"),
        )),
    }
}
