//! Dataset folders:
//!
//! ```text
//! datasets/<name>/
//!   dataset.json              Manifest: format, env spec, tasks, split, source algorithm, runs
//!   data/part-00000.parquet   transitions, sorted by (run, episode, step)
//! ```
//!
//! [`DatasetWriter`] produces a folder, [`validate`] checks one against its files and reports
//! every problem, [`merge`] combines shard folders (`collect --shard i/n`) by their manifests,
//! and [`summarize`] is what `reincarnate inspect datasets/NAME` prints.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::reader::{TransitionReader, DEFAULT_BATCH_ROWS};
use super::schema::{TransitionSchema, FORMAT_NAME, FORMAT_VERSION};
use super::tally::RunSummary;
use super::transitions::{TransitionRef, Transitions};
use super::writer::{TransitionWriter, WriterOptions};
use crate::envs::EnvSpec;
use crate::error::{Error, Result};

pub const MANIFEST_FILE: &str = "dataset.json";
pub const DATA_DIR: &str = "data";

/// One task of the dataset's task list: its index in the env's task family and its
/// parameters (goal cell, arm means, ...) as `TaskFamily::describe_task` gives them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskEntry {
    pub index: u32,
    #[serde(default)]
    pub params: serde_json::Value,
}

/// The algorithm whose runs produced the data, with its full configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceAlgo {
    pub name: String,
    #[serde(default)]
    pub config: serde_json::Value,
}

/// One run of the dataset: which file holds it and what it contains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunEntry {
    /// Path relative to the dataset folder, under `data/`.
    pub file: String,
    #[serde(flatten)]
    pub summary: RunSummary,
}

/// `dataset.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub env: EnvSpec,
    /// Layout of every file (observation size, action kind, policy column).
    pub layout: TransitionSchema,
    pub tasks: Vec<TaskEntry>,
    /// How the runs were made, a label: the task set they were collected on (`train`, `test`,
    /// `all`), `replay` (a replay dump) or `teacher` (a teacher's rollouts).
    pub split: String,
    pub source: SourceAlgo,
    pub runs: Vec<RunEntry>,
}

/// One thing wrong with a dataset folder.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

impl Manifest {
    /// A manifest with no runs yet (a [`DatasetWriter`] adds them).
    pub fn new(
        env: EnvSpec,
        layout: TransitionSchema,
        tasks: Vec<TaskEntry>,
        split: impl Into<String>,
        source: SourceAlgo,
    ) -> Self {
        Self {
            format: FORMAT_NAME.to_string(),
            version: FORMAT_VERSION,
            env,
            layout,
            tasks,
            split: split.into(),
            source,
            runs: Vec::new(),
        }
    }

    /// Reads `folder/dataset.json`.
    /// Reads `folder/dataset.json` strictly: a missing or mistyped field is an error naming it.
    pub fn load(folder: &Path) -> Result<Self> {
        let path = folder.join(MANIFEST_FILE);
        let value: serde_json::Value = crate::fs::read_json(&path)?;
        crate::checkpoint::decode_complete(&value, &path, "")
    }

    /// Writes `folder/dataset.json` atomically.
    pub fn save(&self, folder: &Path) -> Result<()> {
        crate::fs::write_json_atomic(&folder.join(MANIFEST_FILE), self)
    }

    pub fn total_rows(&self) -> u64 {
        self.runs
            .iter()
            .map(|r| r.summary.rows.end - r.summary.rows.start)
            .sum()
    }

    pub fn total_episodes(&self) -> u64 {
        self.runs.iter().map(|r| r.summary.episodes).sum()
    }

    /// The data files, each once, in order of first mention.
    pub fn files(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.runs
            .iter()
            .map(|r| r.file.as_str())
            .filter(|f| seen.insert(*f))
            .collect()
    }
}

/// Resolves a manifest path inside `folder`, refusing absolute paths and `..` so that a
/// dataset can never make a reader touch files outside its folder.
pub fn resolve_data_path(folder: &Path, file: &str) -> std::result::Result<PathBuf, String> {
    let p = Path::new(file);
    if file.is_empty() {
        return Err("empty file path".into());
    }
    if p.is_absolute() || file.starts_with('/') || file.starts_with('\\') {
        return Err(format!(
            "file path `{file}` is absolute: paths in {MANIFEST_FILE} are relative to the dataset folder"
        ));
    }
    for c in p.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "file path `{file}` contains `..`: paths must stay inside the dataset folder"
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("file path `{file}` is absolute"))
            }
        }
    }
    if file.contains('\\') {
        return Err(format!("file path `{file}` contains `\\`: use `/`"));
    }
    let path = folder.join(p);
    stays_inside(folder, &path, file)?;
    Ok(path)
}

/// A path that exists must also stay inside `folder` once symlinks are followed. The one
/// exception is the Hugging Face cache's own layout, where a snapshot's files link to the
/// repository's `blobs/` folder (`datasets--ORG--NAME/{snapshots/REV,blobs}`).
fn stays_inside(folder: &Path, path: &Path, file: &str) -> std::result::Result<(), String> {
    let (Ok(real), Ok(root)) = (path.canonicalize(), folder.canonicalize()) else {
        // Not there (yet): nothing to follow; a reader reports the missing file.
        return Ok(());
    };
    if real.starts_with(&root) {
        return Ok(());
    }
    let hub_blobs = root
        .ancestors()
        .find(|a| {
            a.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("datasets--") || n.starts_with("models--"))
        })
        .map(|repo| repo.join("blobs"));
    match hub_blobs {
        Some(blobs) if real.starts_with(&blobs) => Ok(()),
        _ => Err(format!(
            "file path `{file}` leads outside the dataset folder through a symlink (to {})",
            real.display()
        )),
    }
}

/// Checks a dataset folder against its manifest and returns every problem found (empty: valid).
/// Checks: manifest readable, format and version, task list, run indices unique, file paths safe,
/// files exist, each file's schema matches the env spec and layout, rows sorted by
/// (run, episode, step), and each run's task, rows, episode count and returns match the file;
/// runs in a file without a manifest entry and Parquet files in `data/` that no run names.
pub fn validate(folder: &Path) -> Vec<Problem> {
    let manifest_path = folder.join(MANIFEST_FILE);
    let mut problems = Vec::new();
    let mut push = |file: &Path, message: String| {
        problems.push(Problem {
            file: file.to_path_buf(),
            message,
        })
    };
    let m = match Manifest::load(folder) {
        Ok(m) => m,
        Err(e) => {
            push(&manifest_path, format!("cannot load the manifest: {e}"));
            return problems;
        }
    };
    if m.format != FORMAT_NAME {
        push(
            &manifest_path,
            format!("format is `{}`, expected `{FORMAT_NAME}`", m.format),
        );
    }
    if m.version != FORMAT_VERSION {
        push(
            &manifest_path,
            format!("version is {}, expected {FORMAT_VERSION}", m.version),
        );
    }
    let want_layout = TransitionSchema {
        policy: m.layout.policy,
        ..TransitionSchema::for_env(&m.env)
    };
    for p in want_layout.mismatches(&m.layout) {
        push(
            &manifest_path,
            format!("layout does not fit env `{}`: {p}", m.env.id()),
        );
    }
    let mut task_ids = BTreeSet::new();
    for t in &m.tasks {
        if !task_ids.insert(t.index) {
            push(&manifest_path, format!("task {} is listed twice", t.index));
        }
        if t.index as usize >= m.env.num_tasks {
            push(
                &manifest_path,
                format!(
                    "task {} does not exist in `{}` ({} tasks)",
                    t.index,
                    m.env.id(),
                    m.env.num_tasks
                ),
            );
        }
    }
    // Manifest entries by file, after path and uniqueness checks.
    let mut run_ids = BTreeSet::new();
    let mut by_file: BTreeMap<String, Vec<&RunEntry>> = BTreeMap::new();
    for r in &m.runs {
        let s = &r.summary;
        if !run_ids.insert(s.run) {
            push(&manifest_path, format!("run {} is listed twice", s.run));
        }
        if !task_ids.contains(&s.task) {
            push(
                &manifest_path,
                format!(
                    "run {} has task {}, which is not in the task list",
                    s.run, s.task
                ),
            );
        }
        if let Err(msg) = resolve_data_path(folder, &r.file) {
            push(&manifest_path, format!("run {}: {msg}", s.run));
            continue;
        }
        by_file.entry(r.file.clone()).or_default().push(r);
    }
    for (file, entries) in &by_file {
        let path = folder.join(file);
        if !path.is_file() {
            push(
                &path,
                format!(
                    "file does not exist (named by {MANIFEST_FILE} for run(s) {})",
                    entries
                        .iter()
                        .map(|r| r.summary.run.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            continue;
        }
        let reader = match TransitionReader::open(&path) {
            Ok(r) => r,
            Err(e) => {
                push(&path, strip_path(&e, &path));
                continue;
            }
        };
        let found = reader.schema();
        let mismatches = m.layout.mismatches(found);
        for p in &mismatches {
            push(
                &path,
                format!("does not match {MANIFEST_FILE}'s layout: {p}"),
            );
        }
        if let Some(spec) = reader.env_spec() {
            if *spec != m.env {
                push(
                    &path,
                    format!("env spec in the footer differs from {MANIFEST_FILE}'s"),
                );
            }
        }
        if !mismatches.is_empty() {
            continue;
        }
        let runs = match reader.runs() {
            Ok(r) => r,
            Err(e) => {
                push(&path, strip_path(&e, &path));
                continue;
            }
        };
        let listed: HashMap<u32, &RunSummary> = entries
            .iter()
            .map(|r| (r.summary.run, &r.summary))
            .collect();
        let mut seen = BTreeSet::new();
        for got in &runs {
            seen.insert(got.run);
            let Some(want) = listed.get(&got.run) else {
                push(
                    &path,
                    format!(
                        "run {} (rows {}..{}) is in the file but has no entry in {MANIFEST_FILE}",
                        got.run, got.rows.start, got.rows.end
                    ),
                );
                continue;
            };
            for msg in run_differences(want, got) {
                push(&path, format!("run {}: {msg}", got.run));
            }
        }
        for r in entries {
            if !seen.contains(&r.summary.run) {
                push(
                    &path,
                    format!(
                        "{MANIFEST_FILE} lists run {} in this file, but the file has no rows of it",
                        r.summary.run
                    ),
                );
            }
        }
    }
    // Parquet files nobody names.
    let data = folder.join(DATA_DIR);
    if let Ok(entries) = std::fs::read_dir(&data) {
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".parquet") && !n.starts_with('.'))
            .collect();
        names.sort();
        for n in names {
            let rel = format!("{DATA_DIR}/{n}");
            if !by_file.contains_key(&rel) {
                push(
                    &data.join(&n),
                    format!("not named by any run in {MANIFEST_FILE}"),
                );
            }
        }
    }
    problems
}

/// [`validate`] as a `Result`: one error listing every problem, for the CLI.
pub fn validate_or_error(folder: &Path) -> Result<()> {
    let problems = validate(folder);
    if problems.is_empty() {
        return Ok(());
    }
    let mut msg = format!("{} problem(s) in the dataset:", problems.len());
    for p in &problems {
        msg.push_str(&format!("\n  - {p}"));
    }
    Err(Error::data(folder, msg))
}

/// An error's message without the leading path (the [`Problem`] names the file already).
fn strip_path(e: &Error, path: &Path) -> String {
    let s = e.to_string();
    let prefix = format!("{}: ", path.display());
    s.strip_prefix(&prefix).map(str::to_string).unwrap_or(s)
}

fn run_differences(want: &RunSummary, got: &RunSummary) -> Vec<String> {
    let mut out = Vec::new();
    if want.task != got.task {
        out.push(format!(
            "task is {} in {MANIFEST_FILE} but {} in the file",
            want.task, got.task
        ));
    }
    if want.rows != got.rows {
        out.push(format!(
            "rows are {}..{} in {MANIFEST_FILE} but {}..{} in the file",
            want.rows.start, want.rows.end, got.rows.start, got.rows.end
        ));
    }
    if want.episodes != got.episodes {
        out.push(format!(
            "{} episodes in {MANIFEST_FILE} but {} in the file",
            want.episodes, got.episodes
        ));
    }
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * (1.0 + a.abs().max(b.abs())),
        _ => false,
    };
    for (what, a, b) in [
        ("first_return", want.first_return, got.first_return),
        ("last_return", want.last_return, got.last_return),
    ] {
        if !close(a, b) {
            out.push(format!(
                "{what} is {a:?} in {MANIFEST_FILE} but {b:?} in the file"
            ));
        }
    }
    out
}

/// Writes a dataset folder: streams transitions into `data/part-NNNNN.parquet` files (a new
/// file starts at a run boundary once the current one holds `rows_per_file` rows) and writes
/// `dataset.json` last, so a folder with a manifest is always complete.
pub struct DatasetWriter {
    folder: PathBuf,
    manifest: Manifest,
    options: WriterOptions,
    rows_per_file: u64,
    current: Option<TransitionWriter>,
    current_run: Option<u32>,
    next_part: usize,
}

impl DatasetWriter {
    /// Starts a dataset in `folder` (created if needed) from a manifest whose `runs` is empty.
    /// Refuses a folder that already has a `dataset.json`.
    pub fn create(folder: &Path, manifest: Manifest) -> Result<Self> {
        let mpath = folder.join(MANIFEST_FILE);
        if mpath.exists() {
            return Err(Error::data(
                &mpath,
                "already exists: refusing to overwrite a dataset (choose another --out or delete it)",
            ));
        }
        if !manifest.runs.is_empty() {
            return Err(Error::Config(
                "DatasetWriter::create takes a manifest with no runs".into(),
            ));
        }
        crate::fs::create_dir_all(&folder.join(DATA_DIR))?;
        Ok(Self {
            folder: folder.to_path_buf(),
            manifest,
            options: WriterOptions::default(),
            rows_per_file: 1 << 24,
            current: None,
            current_run: None,
            next_part: 0,
        })
    }

    /// Rows after which the next run starts a new file (default 16M).
    pub fn with_rows_per_file(mut self, rows: u64) -> Self {
        self.rows_per_file = rows.max(1);
        self
    }

    pub fn with_options(mut self, options: WriterOptions) -> Self {
        self.options = options;
        self
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            let summary = w.finish()?;
            let file = format!(
                "{DATA_DIR}/{}",
                summary
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            );
            for r in summary.runs {
                self.manifest.runs.push(RunEntry {
                    file: file.clone(),
                    summary: r,
                });
            }
        }
        Ok(())
    }

    /// Appends one transition (rows sorted by (run, episode, step) across the whole dataset).
    pub fn push(&mut self, t: &TransitionRef<'_>) -> Result<()> {
        let new_run = self.current_run != Some(t.run);
        if new_run {
            if let Some(prev) = self.current_run {
                if t.run < prev {
                    return Err(Error::data(
                        &self.folder,
                        format!(
                            "run {} arrives after run {prev}: runs must come in increasing order",
                            t.run
                        ),
                    ));
                }
            }
            let full = self
                .current
                .as_ref()
                .is_some_and(|w| w.rows() >= self.rows_per_file);
            if full {
                self.close_current()?;
            }
        }
        if self.current.is_none() {
            let path = self
                .folder
                .join(DATA_DIR)
                .join(format!("part-{:05}.parquet", self.next_part));
            self.next_part += 1;
            self.current = Some(TransitionWriter::create(
                &path,
                self.manifest.layout,
                Some(&self.manifest.env),
                &self.options,
            )?);
        }
        if let Some(w) = self.current.as_mut() {
            w.push(t)?;
        }
        self.current_run = Some(t.run);
        Ok(())
    }

    /// Appends every row of `batch`.
    pub fn push_batch(&mut self, batch: &Transitions) -> Result<()> {
        if batch.schema != self.manifest.layout {
            return Err(Error::data(
                &self.folder,
                format!(
                    "batch layout {:?} differs from the dataset's {:?}",
                    batch.schema, self.manifest.layout
                ),
            ));
        }
        for i in 0..batch.len() {
            self.push(&batch.row(i))?;
        }
        Ok(())
    }

    /// Finishes the last file and writes `dataset.json`.
    pub fn finish(mut self) -> Result<Manifest> {
        self.close_current()?;
        self.manifest.save(&self.folder)?;
        Ok(self.manifest.clone())
    }
}

/// Combines shard datasets into `out`: runs are renumbered 0, 1, 2, ... in the order of
/// `folders` and, within each, of the run indices; task lists are united. Every shard is
/// validated first. Refused: shards whose env spec, layout, split or source algorithm differ
/// from the first's, tasks with the same index but different parameters, and an `out` that
/// already holds a dataset.
pub fn merge(folders: &[PathBuf], out: &Path) -> Result<Manifest> {
    let Some(first_folder) = folders.first() else {
        return Err(Error::Config(
            "merge needs at least one dataset folder".into(),
        ));
    };
    let manifests: Vec<Manifest> = folders
        .iter()
        .map(|f| Manifest::load(f))
        .collect::<Result<_>>()?;
    let first = &manifests[0];
    let mut refusals = Vec::new();
    let mut tasks: BTreeMap<u32, serde_json::Value> = BTreeMap::new();
    for (folder, m) in folders.iter().zip(&manifests) {
        let here = folder.join(MANIFEST_FILE);
        let json = |v: &EnvSpec| serde_json::to_string(v).unwrap_or_default();
        if m.env != first.env {
            refusals.push(format!(
                "{}: env spec differs from {}'s\n      expected {}\n      found    {}",
                here.display(),
                first_folder.display(),
                json(&first.env),
                json(&m.env)
            ));
        }
        if m.layout != first.layout {
            refusals.push(format!(
                "{}: layout {:?} differs from {}'s {:?}",
                here.display(),
                m.layout,
                first_folder.display(),
                first.layout
            ));
        }
        if m.split != first.split {
            refusals.push(format!(
                "{}: split `{}` differs from {}'s `{}`",
                here.display(),
                m.split,
                first_folder.display(),
                first.split
            ));
        }
        if m.source.name != first.source.name {
            refusals.push(format!(
                "{}: source algorithm `{}` differs from {}'s `{}`",
                here.display(),
                m.source.name,
                first_folder.display(),
                first.source.name
            ));
        }
        for t in &m.tasks {
            match tasks.get(&t.index) {
                Some(p) if *p != t.params => refusals.push(format!(
                    "{}: task {} has parameters {} but another shard has {}",
                    here.display(),
                    t.index,
                    t.params,
                    p
                )),
                Some(_) => {}
                None => {
                    tasks.insert(t.index, t.params.clone());
                }
            }
        }
    }
    if !refusals.is_empty() {
        return Err(Error::Config(format!(
            "cannot merge these datasets:\n  - {}",
            refusals.join("\n  - ")
        )));
    }
    for folder in folders {
        validate_or_error(folder)?;
    }
    let header = Manifest::new(
        first.env.clone(),
        first.layout,
        tasks
            .into_iter()
            .map(|(index, params)| TaskEntry { index, params })
            .collect(),
        first.split.clone(),
        first.source.clone(),
    );
    let mut w = DatasetWriter::create(out, header)?;
    let mut next_run = 0u32;
    for (folder, m) in folders.iter().zip(&manifests) {
        let mut entries: Vec<&RunEntry> = m.runs.iter().collect();
        entries.sort_by_key(|r| r.summary.run);
        let mut renumber: HashMap<u32, u32> = HashMap::new();
        for r in &entries {
            renumber.insert(r.summary.run, next_run);
            next_run += 1;
        }
        let mut files: Vec<&str> = Vec::new();
        for r in &entries {
            if !files.contains(&r.file.as_str()) {
                files.push(&r.file);
            }
        }
        for file in files {
            let path = resolve_data_path(folder, file).map_err(|m| Error::data(folder, m))?;
            let reader = TransitionReader::open(&path)?;
            for batch in reader.batches(None, DEFAULT_BATCH_ROWS)? {
                let mut batch = batch?;
                for run in batch.run.iter_mut() {
                    *run = *renumber.get(run).ok_or_else(|| {
                        Error::data(&path, format!("run {run} has no entry in {MANIFEST_FILE}"))
                    })?;
                }
                w.push_batch(&batch)?;
            }
        }
    }
    w.finish()
}

/// What `reincarnate inspect datasets/NAME` shows about a dataset (from its manifest).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetSummary {
    pub path: PathBuf,
    pub env: String,
    pub source: String,
    pub split: String,
    pub runs: usize,
    /// Tasks in the task list.
    pub tasks: usize,
    pub transitions: u64,
    pub episodes: u64,
    pub files: usize,
    pub bytes: u64,
    /// Mean over runs of the first complete episode's return.
    pub mean_first_return: Option<f64>,
    /// Mean over runs of the last complete episode's return.
    pub mean_last_return: Option<f64>,
    /// Runs whose last return beats their first: does the history show learning?
    pub runs_improved: usize,
}

/// Summarises a dataset folder from its manifest (no data is decoded; run [`validate`] to
/// check the files).
pub fn summarize(folder: &Path) -> Result<DatasetSummary> {
    let m = Manifest::load(folder)?;
    let mean = |f: fn(&RunSummary) -> Option<f64>| {
        let v: Vec<f64> = m.runs.iter().filter_map(|r| f(&r.summary)).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let files = m.files();
    let bytes = files
        .iter()
        .filter_map(|f| resolve_data_path(folder, f).ok())
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|md| md.len())
        .sum();
    Ok(DatasetSummary {
        path: folder.to_path_buf(),
        env: m.env.id().to_string(),
        source: m.source.name.clone(),
        split: m.split.clone(),
        runs: m.runs.len(),
        tasks: m.tasks.len(),
        transitions: m.total_rows(),
        episodes: m.total_episodes(),
        files: files.len(),
        bytes,
        mean_first_return: mean(|r| r.first_return),
        mean_last_return: mean(|r| r.last_return),
        runs_improved: m
            .runs
            .iter()
            .filter(|r| matches!((r.summary.first_return, r.summary.last_return), (Some(a), Some(b)) if b > a))
            .count(),
    })
}

impl fmt::Display for DatasetSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ret = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
        writeln!(f, "dataset      {}", self.path.display())?;
        writeln!(f, "env          {} (split: {})", self.env, self.split)?;
        writeln!(f, "source       {}", self.source)?;
        writeln!(f, "runs         {}", self.runs)?;
        writeln!(f, "tasks        {}", self.tasks)?;
        writeln!(f, "transitions  {}", self.transitions)?;
        writeln!(f, "episodes     {}", self.episodes)?;
        writeln!(f, "files        {} ({} bytes)", self.files, self.bytes)?;
        write!(
            f,
            "return       first episode {} → last episode {} (mean over runs; {} of {} runs improved)",
            ret(self.mean_first_return),
            ret(self.mean_last_return),
            self.runs_improved,
            self.runs
        )
    }
}
