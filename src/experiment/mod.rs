//! `reincarnate run EXPERIMENT.toml`: a whole pipeline from one file. Every stage writes into
//! `runs/NAME/STAGE/`; `runs/NAME/summary.json` maps each stage's name to its result. A stage is
//! a grid of units of work (seeds, methods × seeds, collection runs; see [`shard`]); a unit
//! finished under an unchanged config is skipped on re-run. The same units split over processes
//! (`run --shard i/n`, merged by `report`; Slurm job arrays from [`slurm`]) give the same results.
//!
//! ```toml
//! name = "quickstart"          # default: the file's stem
//! seed = 0
//!
//! [[stage]]
//! name = "random-dark-room"
//! kind = "eval"
//! env = "dark_room"            # or a table: env = { id = "minatar/breakout", sticky_action_prob = 0.0 }
//! policy = "random"
//! episodes = 100
//! tasks = "test"
//! ```

pub use crate::collect::Shard;
use crate::device::CpuParallelism;
pub use crate::envs::EnvRef;
use crate::envs::{EnvConfig, TaskFamily, TaskSet};
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalReport, RandomPolicy};
use crate::fs::{create_dir_all, write_json_atomic};
use crate::stage_result::{CompareResult, FinalReturn, SeedResult, StageResult, TrainResult};
pub use shard::{inputs, items, owner, owners, Item, ShardArg};

pub mod shard;
pub mod slurm;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub seed: u64,
    /// Where outputs go; default `runs/`.
    #[serde(default)]
    pub runs_dir: Option<PathBuf>,
    #[serde(rename = "stage")]
    pub stages: Vec<Stage>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stage {
    Eval(EvalStage),
    Train(TrainStage),
    Compare(CompareStage),
    Collect(crate::ad::stages::CollectStage),
    Distill(crate::ad::stages::DistillStage),
    IclEval(crate::ad::stages::IclEvalStage),
    IclPlot(crate::ad::stages::IclPlotStage),
    Reincarnate(Box<crate::reincarnation::stage::ReincarnateStage>),
    ReincarnationSummary(crate::reincarnation::stage::ReincarnationSummaryStage),
}

impl Experiment {
    /// How the CPU cores serve this experiment: online RL trains small networks, which run
    /// fastest one core per op with independent passes side by side; a distillation stage
    /// trains a transformer whose matrix products are worth splitting over the cores.
    pub fn cpu_parallelism(&self) -> CpuParallelism {
        if self.stages.iter().any(|s| matches!(s, Stage::Distill(_))) {
            CpuParallelism::WithinOps
        } else {
            CpuParallelism::AcrossOps
        }
    }
}

/// An experiment's name when the file sets none: the file's stem.
pub fn default_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "experiment".into())
}

impl Stage {
    pub fn name(&self) -> &str {
        match self {
            Stage::Eval(s) => &s.name,
            Stage::Train(s) => &s.name,
            Stage::Compare(s) => &s.name,
            Stage::Collect(s) => &s.name,
            Stage::Distill(s) => &s.name,
            Stage::IclEval(s) => &s.name,
            Stage::IclPlot(s) => &s.name,
            Stage::Reincarnate(s) => &s.name,
            Stage::ReincarnationSummary(s) => &s.name,
        }
    }
}

/// Train one agent configuration over several seeds (`runs/NAME/STAGE/seed-S/`). The result
/// holds each seed's final greedy evaluation and their mean.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainStage {
    pub name: String,
    pub env: EnvRef,
    pub algo: String,
    #[serde(default)]
    pub agent: toml::Table,
    #[serde(default, rename = "loop")]
    pub train_loop: crate::train::LoopConfig,
    /// Seeds to train (default: the experiment's seed).
    #[serde(default)]
    pub seeds: Vec<u64>,
}

/// Plot the greedy-evaluation curves of earlier `train` stages (mean ± standard error over
/// seeds) into `STAGE/compare.svg`; the result is the final mean of each.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CompareStage {
    pub name: String,
    pub stages: Vec<String>,
    #[serde(default)]
    pub title: Option<String>,
}

fn default_policy() -> String {
    "random".into()
}
fn default_episodes() -> usize {
    100
}
fn default_tasks() -> TaskSet {
    TaskSet::Test
}

/// Evaluate a policy on one environment (`env`) or several (`envs`, result keyed by env id).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvalStage {
    pub name: String,
    #[serde(default)]
    pub env: Option<EnvRef>,
    #[serde(default)]
    pub envs: Vec<EnvRef>,
    #[serde(default = "default_policy")]
    pub policy: String,
    #[serde(default = "default_episodes")]
    pub episodes: usize,
    #[serde(default = "default_tasks")]
    pub tasks: TaskSet,
}

/// Loads an experiment file with `--set` overrides applied.
pub fn load_experiment(path: &Path, overrides: &[String]) -> Result<Experiment> {
    let exp: Experiment = crate::config::load(Some(path), overrides)?;
    let mut seen = std::collections::HashSet::new();
    for s in &exp.stages {
        if !seen.insert(s.name().to_string()) {
            return Err(Error::Config(format!(
                "{}: two stages are named `{}`; stage names must be unique",
                path.display(),
                s.name()
            )));
        }
    }
    if exp.stages.is_empty() {
        return Err(Error::Config(format!(
            "{}: no [[stage]] tables; an experiment needs at least one stage",
            path.display()
        )));
    }
    validate_stages(&exp).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    Ok(exp)
}

/// What can be checked before any stage runs, so that a mistake in the last stage does not
/// surface hours later: names that become folders, environments, loop limits, counts.
fn validate_stages(exp: &Experiment) -> Result<()> {
    if let Some(name) = &exp.name {
        crate::fs::check_folder_name("name", name)?;
    }
    let env_ok = |stage: &str, env: &EnvRef| -> Result<()> {
        crate::envs::TaskFamily::new(&env.config())
            .map(|_| ())
            .map_err(|e| Error::Config(format!("stage `{stage}`: {e}")))
    };
    let algo_ok = |stage: &str, what: &str, algo: &str| -> Result<()> {
        if crate::agents::ALGORITHMS.contains(&algo) {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "stage `{stage}`: {what} `{algo}` is not one of {}",
                crate::agents::ALGORITHMS.join(", ")
            )))
        }
    };
    let episodes_ok = |episodes: usize| {
        crate::limits::check_count(
            "episodes",
            episodes as u64,
            crate::limits::MAX_EPISODES,
            "an evaluation that long never ends in practice",
        )
    };
    let mut earlier: Vec<&str> = Vec::new();
    for s in &exp.stages {
        let name = s.name();
        crate::fs::check_folder_name("stage name", name)?;
        let in_stage = |e: Error| Error::Config(format!("stage `{name}`: {e}"));
        match s {
            Stage::Train(t) => {
                env_ok(name, &t.env)?;
                algo_ok(name, "algo", &t.algo)?;
                t.train_loop.validate().map_err(in_stage)?;
            }
            Stage::Reincarnate(r) => {
                env_ok(name, &r.env)?;
                algo_ok(name, "student", &r.student)?;
                r.train_loop.validate().map_err(in_stage)?;
                // A teacher is an earlier stage, a Hub reference, or a file that exists now.
                let t = r.teacher.as_str();
                let found = match t.strip_prefix("stage:") {
                    Some(stage) => earlier.contains(&stage),
                    None => t.starts_with("hf://") || Path::new(t).exists(),
                };
                if !found {
                    return Err(Error::Config(format!(
                        "stage `{name}`: teacher `{t}` is neither an earlier stage (`stage:NAME`), an `hf://` reference, nor an existing file or folder"
                    )));
                }
            }
            Stage::Collect(c) => {
                env_ok(name, &c.env)?;
                crate::limits::check_count(
                    "runs × steps",
                    (c.runs as u64).saturating_mul(c.steps),
                    crate::limits::MAX_ENV_STEPS,
                    "a collection that long never ends in practice",
                )
                .map_err(in_stage)?;
            }
            Stage::Distill(d) => d.config.validate().map_err(in_stage)?,
            Stage::Eval(e) => {
                for env in e.env.iter().chain(&e.envs) {
                    env_ok(name, env)?;
                }
                episodes_ok(e.episodes).map_err(in_stage)?;
            }
            Stage::IclEval(e) => episodes_ok(e.episodes).map_err(in_stage)?,
            Stage::Compare(_) | Stage::IclPlot(_) | Stage::ReincarnationSummary(_) => {}
        }
        earlier.push(name);
    }
    Ok(())
}

/// Evaluates a uniformly random policy (the reference of every normalised score).
pub fn eval_random(
    env: &EnvConfig,
    tasks: TaskSet,
    episodes: usize,
    seed: u64,
) -> Result<EvalReport> {
    let family = TaskFamily::new(env)?;
    let mut policy = RandomPolicy::new(family.spec().action_space.clone(), seed);
    evaluate(&family, tasks, episodes, seed, &mut policy)
}

/// A policy evaluation as `reincarnate eval` asks for it.
#[derive(Clone, Debug)]
pub struct PolicyEval<'a> {
    /// `random`, a checkpoint folder, `hf://ORG/NAME`, or a state dict (with `arch`).
    pub policy: &'a str,
    /// Network held by a state-dict policy: `mlp:120,84`, `minatar-conv:16,128`.
    pub arch: Option<&'a str>,
    /// Environment id; default the checkpoint's (required for `random` and state dicts).
    pub env: Option<&'a str>,
    /// `--set` overrides; only `env.*` ones apply.
    pub overrides: &'a [String],
    pub tasks: TaskSet,
    /// Episodes per task.
    pub episodes: usize,
    pub seed: u64,
    /// Evaluation seeds `seed, seed + 1, …`: with more than one, the report pools them
    /// ([`crate::eval::merge_seeds`]).
    pub seeds: usize,
    /// In-context (AD/ED) policies: sampling temperature (0: most likely action).
    pub temperature: f64,
    /// In-context policies: transitions the context keeps when it is full.
    pub keep: Option<usize>,
}

/// Evaluates the policy `a.policy` names: a state dict through the teacher loader, `random`,
/// an AD/ED checkpoint in context, or an agent checkpoint greedily.
pub fn eval_policy(a: &PolicyEval<'_>, device: &candle_core::Device) -> Result<EvalReport> {
    crate::limits::check_count(
        "--episodes",
        a.episodes as u64,
        crate::limits::MAX_EPISODES,
        "an evaluation that long never ends in practice",
    )?;
    crate::eval::over_seeds(a.seed, a.seeds, "--seeds", |seed| {
        let one = PolicyEval {
            seed,
            seeds: 1,
            ..a.clone()
        };
        eval_policy_once(&one, device)
    })
}

fn eval_policy_once(a: &PolicyEval<'_>, device: &candle_core::Device) -> Result<EvalReport> {
    let env_config = |id: &str| -> Result<EnvConfig> {
        EnvConfig::new(id).with_overrides(&crate::config::env_overrides_only(a.overrides)?)
    };
    if a.arch.is_some() || crate::reincarnation::is_state_dict(a.policy) {
        let env = a
            .env
            .ok_or_else(|| Error::Config("--env is required with a state-dict --policy".into()))?;
        return crate::reincarnation::eval_teacher(
            a.policy,
            a.arch,
            &env_config(env)?,
            a.tasks,
            a.episodes,
            a.seed,
            device,
        );
    }
    if a.policy == "random" {
        let env = a
            .env
            .ok_or_else(|| Error::Config("--env is required with --policy random".into()))?;
        return eval_random(&env_config(env)?, a.tasks, a.episodes, a.seed);
    }
    let path = crate::hub::local_folder(a.policy, false)?;
    let data = crate::checkpoint::load_weights(&path)?;
    if crate::ad::is_in_context(&data.config) {
        return crate::ad::curves::eval_in_context_at(
            &data,
            a.env.map(env_config).transpose()?,
            a.tasks,
            a.episodes,
            a.seed,
            device,
            a.temperature,
            a.keep,
        );
    }
    let mut agent = crate::agents::from_checkpoint(&data, device)
        .map_err(|e| Error::Config(format!("loading {}: {e}", path.display())))?;
    let trained: crate::envs::EnvSpec = serde_json::from_value(data.config["env"].clone())
        .map_err(|e| {
            Error::data(
                path.join(crate::checkpoint::CONFIG_FILE),
                format!("`env` is not an environment spec: {e}"),
            )
        })?;
    let cfg = match a.env {
        Some(id) => env_config(id)?,
        // The checkpoint's own environment takes the `env.*` overrides; others do not apply.
        None => {
            let sets: Vec<String> = a
                .overrides
                .iter()
                .filter_map(|o| o.strip_prefix("env.").map(String::from))
                .collect();
            trained.config.with_overrides(&sets)?
        }
    };
    let family = TaskFamily::new(&cfg)?;
    trained.check_fits(family.spec(), &format!("{} was trained on", path.display()))?;
    let mut greedy = crate::train::GreedyPolicy::new(agent.as_mut(), u64::MAX);
    evaluate(&family, a.tasks, a.episodes, a.seed, &mut greedy)
}

fn run_eval_stage(stage: &EvalStage, seed: u64) -> Result<StageResult> {
    if stage.policy != "random" {
        return Err(Error::Config(format!(
            "stage `{}`: policy `{}` is not available in experiment files yet; use \"random\"",
            stage.name, stage.policy
        )));
    }
    match (&stage.env, stage.envs.is_empty()) {
        (Some(env), true) => {
            let r = eval_random(&env.config(), stage.tasks, stage.episodes, seed)?;
            Ok(StageResult::Eval(r))
        }
        (None, false) => {
            let mut out = BTreeMap::new();
            for env in &stage.envs {
                let cfg = env.config();
                let r = eval_random(&cfg, stage.tasks, stage.episodes, seed)?;
                out.insert(cfg.id.clone(), r);
            }
            Ok(StageResult::EvalByEnv(out))
        }
        _ => Err(Error::Config(format!(
            "stage `{}`: give exactly one of `env` or `envs`",
            stage.name
        ))),
    }
}

/// Outcome of one stage in a run.
#[derive(Debug)]
pub struct StageOutcome {
    pub name: String,
    pub skipped: bool,
    pub result: StageResult,
}

impl std::fmt::Display for StageOutcome {
    /// The stage's name, whether it was skipped, then its result.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let note = if self.skipped {
            " (finished earlier, skipped)"
        } else {
            ""
        };
        writeln!(f, "stage {}{note}", self.name)?;
        write!(f, "{}", self.result)
    }
}

/// Where an experiment writes: `RUNS_DIR/NAME`.
pub fn experiment_root(exp: &Experiment, default_name: &str) -> PathBuf {
    let name = exp.name.clone().unwrap_or_else(|| default_name.to_string());
    exp.runs_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs"))
        .join(name)
}

/// The resolved teacher of a reincarnate stage (`stage:NAME` becomes that stage's checkpoint).
fn teacher_of(exp: &Experiment, root: &Path, stage: &Stage) -> Result<Option<String>> {
    match stage {
        Stage::Reincarnate(r) => Ok(Some(crate::reincarnation::stage::stage_teacher(
            r,
            &|name| train_stage_checkpoint(exp, root, name),
        )?)),
        _ => Ok(None),
    }
}

/// Runs every stage of `exp` (skipping the units of work finished earlier) and writes
/// `summary.json`.
pub fn run_experiment(
    exp: &Experiment,
    default_name: &str,
    device: &candle_core::Device,
) -> Result<(PathBuf, Vec<StageOutcome>)> {
    let root = experiment_root(exp, default_name);
    let _lock = crate::fs::FolderLock::acquire(&root)?;
    create_dir_all(&root)?;
    let mut outcomes: Vec<StageOutcome> = Vec::new();
    for stage in &exp.stages {
        let dir = root.join(stage.name());
        create_dir_all(&dir)?;
        let teacher = teacher_of(exp, &root, stage)?;
        let work = items(stage, exp.seed, 1);
        let mut ran = false;
        for &item in &work {
            if !shard::item_done(exp, stage, item, &dir, teacher.as_deref())? {
                run_item(exp, &root, stage, item, &dir, teacher.as_deref(), device)?;
                ran = true;
            }
        }
        let result = finish_stage(exp, &root, stage, &dir, teacher.as_deref(), &outcomes)?;
        outcomes.push(StageOutcome {
            name: stage.name().to_string(),
            skipped: !work.is_empty() && !ran,
            result,
        });
    }
    write_summary(&root, &outcomes)?;
    Ok((root, outcomes))
}

fn write_summary(root: &Path, outcomes: &[StageOutcome]) -> Result<()> {
    let mut summary = serde_json::Map::new();
    for o in outcomes {
        summary.insert(o.name.clone(), o.result.to_json()?);
    }
    write_json_atomic(&root.join("summary.json"), &summary)
}

/// What one slice of an experiment did.
#[derive(Debug)]
pub struct SliceSummary {
    pub root: PathBuf,
    pub shard: Shard,
    /// (stage, unit) run now.
    pub ran: Vec<(String, Item)>,
    /// (stage, unit) finished earlier.
    pub skipped: Vec<(String, Item)>,
}

impl std::fmt::Display for SliceSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (i, n) = (self.shard.index, self.shard.count);
        for (stage, item) in &self.ran {
            writeln!(f, "slice {i}/{n}: stage {stage}: ran {item}")?;
        }
        for (stage, item) in &self.skipped {
            writeln!(
                f,
                "slice {i}/{n}: stage {stage}: {item} finished earlier, skipped"
            )?;
        }
        if self.ran.is_empty() && self.skipped.is_empty() {
            writeln!(f, "slice {i}/{n}: no unit of work falls to this slice")?;
        }
        writeln!(
            f,
            "slice {i}/{n} done in {}; `reincarnate report` merges the slices once all are done",
            self.root.display()
        )
    }
}

/// How often a waiting slice looks at its inputs again, and how many looks between notes.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_secs(2);
const WAIT_NOTE_EVERY: u32 = 30;

/// Runs slice `shard` of every stage's grid (of stage `only` alone, if given): unit `k` of the
/// `s`-th stage's grid when `(k + s) mod n = i`, each stage after the stages it reads are complete (waiting for
/// other slices to finish them). Writes no stage result: [`report_experiment`] does.
pub fn run_slice(
    exp: &Experiment,
    default_name: &str,
    shard: Shard,
    only: Option<&str>,
    device: &candle_core::Device,
) -> Result<SliceSummary> {
    if let Some(name) = only {
        if !exp.stages.iter().any(|s| s.name() == name) {
            return Err(Error::Config(format!(
                "--stage {name}: no stage of that name; the stages are {}",
                exp.stages
                    .iter()
                    .map(Stage::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let root = experiment_root(exp, default_name);
    create_dir_all(&root)?;
    let _lock = crate::fs::FolderLock::acquire(
        &root.join(format!("slice-{}-of-{}", shard.index, shard.count)),
    )?;
    let mut out = SliceSummary {
        root: root.clone(),
        shard,
        ran: Vec::new(),
        skipped: Vec::new(),
    };
    for (position, stage) in exp
        .stages
        .iter()
        .enumerate()
        .filter(|(_, s)| only.is_none_or(|o| o == s.name()))
    {
        let mine: Vec<Item> = items(stage, exp.seed, shard.count)
            .into_iter()
            .enumerate()
            .filter(|(k, _)| owner(position, *k, shard.count) == shard.index)
            .map(|(_, item)| item)
            .collect();
        if mine.is_empty() {
            continue;
        }
        wait_for_inputs(exp, &root, stage, shard)?;
        let dir = root.join(stage.name());
        create_dir_all(&dir)?;
        let teacher = teacher_of(exp, &root, stage)?;
        for item in mine {
            let entry = (stage.name().to_string(), item);
            if shard::item_done(exp, stage, item, &dir, teacher.as_deref())? {
                out.skipped.push(entry);
            } else {
                run_item(exp, &root, stage, item, &dir, teacher.as_deref(), device)?;
                out.ran.push(entry);
            }
        }
    }
    Ok(out)
}

/// Waits until every stage that `stage` reads has all its units done.
fn wait_for_inputs(exp: &Experiment, root: &Path, stage: &Stage, shard: Shard) -> Result<()> {
    for input in shard::inputs(exp, stage) {
        let dir = root.join(input.name());
        let teacher = teacher_of(exp, root, input)?;
        let mut looks = 0u32;
        loop {
            let missing = shard::missing_items(exp, input, &dir, teacher.as_deref())?;
            if missing.is_empty() {
                break;
            }
            if looks.is_multiple_of(WAIT_NOTE_EVERY) {
                eprintln!(
                    "slice {}/{}: stage `{}` waits for stage `{}` ({} of {} units not done yet, first: {})",
                    shard.index,
                    shard.count,
                    stage.name(),
                    input.name(),
                    missing.len(),
                    items(input, exp.seed, 1).len(),
                    missing[0]
                );
            }
            looks = looks.wrapping_add(1);
            std::thread::sleep(WAIT_POLL);
        }
    }
    Ok(())
}

/// Builds every stage's result, the plots, tables and `summary.json` from the finished units of
/// work of all slices, running none; fails naming every unit not done yet.
pub fn report_experiment(
    exp: &Experiment,
    default_name: &str,
) -> Result<(PathBuf, Vec<StageOutcome>)> {
    let root = experiment_root(exp, default_name);
    if !root.is_dir() {
        return Err(Error::Config(format!(
            "{}: no such folder; run the experiment (or its slices) first",
            root.display()
        )));
    }
    let _lock = crate::fs::FolderLock::acquire(&root)?;
    let mut missing = Vec::new();
    for stage in &exp.stages {
        let dir = root.join(stage.name());
        let teacher = teacher_of(exp, &root, stage)?;
        let m = shard::missing_items(exp, stage, &dir, teacher.as_deref())?;
        if !m.is_empty() {
            let total = items(stage, exp.seed, 1).len();
            let list: Vec<String> = m.iter().map(Item::to_string).collect();
            missing.push(format!(
                "stage `{}`: {} of {total} units not done: {}",
                stage.name(),
                m.len(),
                list.join("; ")
            ));
        }
    }
    if !missing.is_empty() {
        return Err(Error::Config(format!(
            "{}: the slices have not finished:\n  {}\nre-run the slices that hold them (`reincarnate run FILE --shard i/n`; unit k of the s-th stage's grid, counting from 0, belongs to slice (k + s) mod n, and a re-run does only what is missing), then report again",
            root.display(),
            missing.join("\n  ")
        )));
    }
    let mut outcomes: Vec<StageOutcome> = Vec::new();
    for stage in &exp.stages {
        let dir = root.join(stage.name());
        create_dir_all(&dir)?;
        let teacher = teacher_of(exp, &root, stage)?;
        let result = finish_stage(exp, &root, stage, &dir, teacher.as_deref(), &outcomes)?;
        outcomes.push(StageOutcome {
            name: stage.name().to_string(),
            skipped: !items(stage, exp.seed, 1).is_empty(),
            result,
        });
    }
    write_summary(&root, &outcomes)?;
    Ok((root, outcomes))
}

/// Runs one unit of a stage's work into `dir`.
fn run_item(
    exp: &Experiment,
    root: &Path,
    stage: &Stage,
    item: Item,
    dir: &Path,
    teacher: Option<&str>,
    device: &candle_core::Device,
) -> Result<()> {
    match (stage, item) {
        (Stage::Train(t), Item::Seed(seed)) => run_train_seed(t, seed, dir, device),
        (Stage::Reincarnate(r), Item::Run(method, seed)) => {
            let teacher = teacher.unwrap_or(&r.teacher);
            // A run of the same spec whose teacher stage changed since is run again.
            crate::reincarnation::stage::forget_run(r, method, seed, dir)?;
            crate::reincarnation::stage::run_one(r, teacher, method, seed, dir, device)?;
            write_json_atomic(
                &shard::run_inputs_file(dir, method, seed),
                &shard::lineage(exp, stage),
            )
        }
        (Stage::Collect(c), Item::Collect(shard)) => {
            // Runs of another spec would be kept as finished runs of this one: refuse rather
            // than mix them (or delete what may have cost hours).
            let has_runs = std::fs::read_dir(dir.join("runs"))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            if has_runs && dir.join("stage.json").exists() && !shard::stage_file_matches(stage, dir)
            {
                return Err(Error::Config(format!(
                    "stage `{}`: {} holds runs collected under another spec of this stage (see its stage.json); \
                     remove the folder to collect again under the current spec, or restore the spec",
                    stage.name(),
                    dir.display()
                )));
            }
            write_json_atomic(&dir.join("stage.json"), stage)?;
            crate::ad::stages::run_collect(c, exp.seed, Some(shard), dir, device)
        }
        (_, Item::Whole) => {
            // An earlier result is stale from here on; a distill whose inputs changed (an
            // earlier stage rerun under another spec) starts afresh rather than resuming.
            crate::fs::remove_file_if_present(&dir.join("result.json"))?;
            if !shard::training_inputs_match(exp, stage, dir) {
                crate::fs::remove_file_if_present(&dir.join(crate::checkpoint::CONFIG_FILE))?;
            }
            write_json_atomic(&dir.join("stage.json"), stage)?;
            write_json_atomic(&dir.join(shard::INPUTS_FILE), &shard::lineage(exp, stage))?;
            let result = match stage {
                Stage::Eval(s) => run_eval_stage(s, exp.seed)?,
                Stage::Distill(s) => {
                    crate::ad::stages::run_distill(s, exp.seed, root, dir, device)?
                }
                Stage::IclEval(s) => crate::ad::stages::run_icl_eval(s, exp.seed, root, device)?,
                _ => return Err(unit_mismatch(stage, item)),
            };
            write_json_atomic(&dir.join("result.json"), &result.to_json()?)
        }
        _ => Err(unit_mismatch(stage, item)),
    }
}

fn unit_mismatch(stage: &Stage, item: Item) -> Error {
    Error::Config(format!(
        "stage `{}`: {item} is not a unit of this kind of stage",
        stage.name()
    ))
}

/// A stage's result from its finished units (and, for the stages that read others, from the
/// earlier outcomes); writes `stage.json` and `result.json`.
fn finish_stage(
    exp: &Experiment,
    root: &Path,
    stage: &Stage,
    dir: &Path,
    teacher: Option<&str>,
    outcomes: &[StageOutcome],
) -> Result<StageResult> {
    let result_file = dir.join("result.json");
    let result = match stage {
        Stage::Eval(_) | Stage::Distill(_) | Stage::IclEval(_) => {
            if !shard::item_done(exp, stage, Item::Whole, dir, None)? {
                return Err(Error::Config(format!(
                    "stage `{}`: not finished ({} is missing or from another spec)",
                    stage.name(),
                    result_file.display()
                )));
            }
            return StageResult::read(stage, &result_file);
        }
        Stage::Train(t) => finish_train_stage(t, exp.seed, dir)?,
        Stage::Reincarnate(r) => crate::reincarnation::stage::finish_stage(
            r,
            teacher.unwrap_or(&r.teacher),
            exp.seed,
            dir,
        )?,
        Stage::Collect(c) => crate::ad::stages::finish_collect(c, dir)?,
        Stage::Compare(s) => run_compare_stage(s, exp, root, dir)?,
        Stage::IclPlot(s) => crate::ad::stages::run_icl_plot(s, root, dir)?,
        Stage::ReincarnationSummary(s) => {
            let earlier = |name: &str| outcomes.iter().find(|o| o.name == name).map(|o| &o.result);
            crate::reincarnation::stage::run_summary_stage(s, &earlier, dir, exp.seed)?
        }
    };
    write_json_atomic(&dir.join("stage.json"), stage)?;
    write_json_atomic(&result_file, &result.to_json()?)?;
    Ok(result)
}

/// The spec a train stage's seeds run under, as recorded beside each finished seed.
fn train_spec(stage: &TrainStage) -> crate::train::TrainSpec {
    crate::train::TrainSpec {
        env: stage.env.clone(),
        algo: stage.algo.clone(),
        agent: stage.agent.clone(),
        train_loop: stage.train_loop.clone(),
    }
}

pub(crate) fn train_spec_json(stage: &TrainStage) -> Result<serde_json::Value> {
    serde_json::to_value(train_spec(stage))
        .map_err(|e| Error::Config(format!("stage `{}`: {e}", stage.name)))
}

/// Trains one seed of a train stage into `STAGE/seed-S/` and records its result beside it.
fn run_train_seed(
    stage: &TrainStage,
    seed: u64,
    dir: &Path,
    device: &candle_core::Device,
) -> Result<()> {
    let out = dir.join(format!("seed-{seed}"));
    let summary = crate::train::run_train(&train_spec(stage), seed, device, &out, false)?;
    let record = shard::SeedRecord {
        spec: train_spec_json(stage)?,
        result: SeedResult {
            final_return: summary
                .final_eval
                .map(|r| r.mean_return)
                .unwrap_or(f64::NAN),
            episodes: summary.episodes,
            steps_per_second: summary.steps_per_second,
        },
    };
    write_json_atomic(&shard::seed_record_path(dir, seed), &record)
}

/// A train stage's result from its seeds' records: each final greedy return and their mean.
fn finish_train_stage(stage: &TrainStage, default_seed: u64, dir: &Path) -> Result<StageResult> {
    let spec = train_spec_json(stage)?;
    let mut finals = Vec::new();
    let mut per_seed = BTreeMap::new();
    for seed in shard::train_seeds(&stage.seeds, default_seed) {
        let record = shard::seed_record(dir, seed, &spec)?.ok_or_else(|| {
            Error::Config(format!(
                "stage `{}`: seed {seed} has not finished ({} is missing or from another spec)",
                stage.name,
                shard::seed_record_path(dir, seed).display()
            ))
        })?;
        finals.push(record.result.final_return);
        per_seed.insert(seed.to_string(), record.result);
    }
    let (mean, se) = crate::eval::mean_stderr(&finals);
    Ok(StageResult::Train(TrainResult {
        final_return_mean: mean,
        final_return_stderr: se,
        seeds: per_seed,
    }))
}

/// The checkpoint a `stage:NAME` teacher names: a train stage's first seed, or a distill
/// stage's model (an in-context teacher).
fn train_stage_checkpoint(exp: &Experiment, root: &Path, name: &str) -> Result<PathBuf> {
    exp.stages
        .iter()
        .find_map(|s| match s {
            Stage::Train(t) if t.name == name => {
                let seed = t.seeds.first().copied().unwrap_or(exp.seed);
                Some(root.join(name).join(format!("seed-{seed}")))
            }
            Stage::Distill(d) if d.name == name => Some(root.join(name)),
            _ => None,
        })
        .ok_or_else(|| {
            Error::Config(format!(
                "teacher `stage:{name}`: no train or distill stage named `{name}` in this experiment"
            ))
        })
}

/// Evaluation curves of a train stage's seeds: (step, mean, stderr) at the steps every seed reached.
fn eval_curve(stage_dir: &Path) -> Result<Vec<(f64, f64, f64)>> {
    let mut curves = Vec::new();
    for entry in std::fs::read_dir(stage_dir).map_err(|e| Error::io(stage_dir, e))? {
        let p = entry.map_err(|e| Error::io(stage_dir, e))?.path();
        let m = p.join("metrics.jsonl");
        if p.is_dir() && m.exists() {
            curves.push(crate::report::metrics::read_series(&m, "eval", "return")?);
        }
    }
    let n = curves.iter().map(|c| c.len()).min().unwrap_or(0);
    Ok((0..n)
        .map(|i| {
            let ys: Vec<f64> = curves.iter().map(|c| c[i].1).collect();
            let (m, se) = crate::eval::mean_stderr(&ys);
            (curves[0][i].0, m, se)
        })
        .collect())
}

fn run_compare_stage(
    stage: &CompareStage,
    exp: &Experiment,
    root: &Path,
    dir: &Path,
) -> Result<StageResult> {
    use crate::report::plot::{line_plot, Series};
    let mut series = Vec::new();
    let mut finals = BTreeMap::new();
    for name in &stage.stages {
        if !exp
            .stages
            .iter()
            .any(|s| matches!(s, Stage::Train(t) if &t.name == name))
        {
            return Err(Error::Config(format!(
                "compare stage `{}`: `{name}` is not a train stage of this experiment",
                stage.name
            )));
        }
        let curve = eval_curve(&root.join(name))?;
        if let Some(last) = curve.last() {
            finals.insert(
                name.clone(),
                FinalReturn {
                    final_return_mean: last.1,
                    final_return_stderr: last.2,
                },
            );
        }
        series.push(Series {
            name: name.clone(),
            points: curve.iter().map(|c| (c.0, c.1)).collect(),
            band: curve.iter().map(|c| (c.0, c.1 - c.2, c.1 + c.2)).collect(),
            hline: None,
            vline: None,
        });
    }
    let title = stage
        .title
        .clone()
        .unwrap_or_else(|| "greedy evaluation return (mean ± s.e. over seeds)".into());
    let plot = dir.join("compare.svg");
    line_plot(&plot, &title, "environment steps", "return", &series)?;
    Ok(StageResult::Compare(CompareResult { plot, finals }))
}
