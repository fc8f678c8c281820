//! `reincarnate run EXPERIMENT.toml`: a whole pipeline from one file. Every stage writes into
//! `runs/NAME/STAGE/`; `runs/NAME/summary.json` maps each stage's name to its result. A stage
//! whose `result.json` exists and whose config has not changed is skipped on re-run.
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

use crate::device::CpuParallelism;
pub use crate::envs::EnvRef;
use crate::envs::{EnvConfig, TaskFamily, TaskSet};
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalReport, RandomPolicy};
use crate::fs::{create_dir_all, read_json, write_json_atomic};
use crate::stage_result::{CompareResult, FinalReturn, SeedResult, StageResult, TrainResult};
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
                crate::limits::check_count(
                    "episodes",
                    e.episodes as u64,
                    crate::limits::MAX_EPISODES,
                    "an evaluation that long never ends in practice",
                )
                .map_err(in_stage)?;
            }
            Stage::IclEval(e) => {
                crate::limits::check_count(
                    "episodes",
                    e.episodes as u64,
                    crate::limits::MAX_EPISODES,
                    "an evaluation that long never ends in practice",
                )
                .map_err(in_stage)?;
            }
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

/// Runs every stage of `exp` (skipping finished ones) and writes `summary.json`.
pub fn run_experiment(
    exp: &Experiment,
    default_name: &str,
    device: &candle_core::Device,
) -> Result<(PathBuf, Vec<StageOutcome>)> {
    let name = exp.name.clone().unwrap_or_else(|| default_name.to_string());
    let root = exp
        .runs_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs"))
        .join(&name);
    let _lock = crate::fs::FolderLock::acquire(&root)?;
    create_dir_all(&root)?;
    let mut outcomes: Vec<StageOutcome> = Vec::new();
    let mut summary = serde_json::Map::new();
    for stage in &exp.stages {
        let dir = root.join(stage.name());
        create_dir_all(&dir)?;
        let stage_file = dir.join("stage.json");
        let result_file = dir.join("result.json");
        // A comparison is cheap and reads other stages' outputs: it is always redrawn.
        let unchanged = !matches!(
            stage,
            Stage::Compare(_) | Stage::ReincarnationSummary(_) | Stage::IclPlot(_)
        ) && stage_file.exists()
            && read_json::<Stage>(&stage_file).ok().as_ref() == Some(stage);
        let (result, skipped) = if unchanged && result_file.exists() {
            (StageResult::read(stage, &result_file)?, true)
        } else {
            write_json_atomic(&stage_file, stage)?;
            let result = match stage {
                Stage::Eval(s) => run_eval_stage(s, exp.seed)?,
                Stage::Train(s) => run_train_stage(s, exp.seed, &dir, device)?,
                Stage::Compare(s) => run_compare_stage(s, exp, &root, &dir)?,
                Stage::Collect(s) => crate::ad::stages::run_collect(s, exp.seed, &dir, device)?,
                Stage::Distill(s) => {
                    crate::ad::stages::run_distill(s, exp.seed, &root, &dir, device)?
                }
                Stage::IclEval(s) => crate::ad::stages::run_icl_eval(s, exp.seed, &root, device)?,
                Stage::IclPlot(s) => crate::ad::stages::run_icl_plot(s, &root, &dir)?,
                Stage::Reincarnate(s) => {
                    crate::reincarnation::stage::run_stage(s, exp.seed, &dir, device, &|name| {
                        train_stage_checkpoint(exp, &root, name)
                    })?
                }
                Stage::ReincarnationSummary(s) => {
                    let earlier =
                        |name: &str| outcomes.iter().find(|o| o.name == name).map(|o| &o.result);
                    crate::reincarnation::stage::run_summary_stage(s, &earlier, &dir, exp.seed)?
                }
            };
            write_json_atomic(&result_file, &result.to_json()?)?;
            (result, false)
        };
        summary.insert(stage.name().to_string(), result.to_json()?);
        outcomes.push(StageOutcome {
            name: stage.name().to_string(),
            skipped,
            result,
        });
    }
    write_json_atomic(&root.join("summary.json"), &summary)?;
    Ok((root, outcomes))
}

fn run_train_stage(
    stage: &TrainStage,
    default_seed: u64,
    dir: &Path,
    device: &candle_core::Device,
) -> Result<StageResult> {
    let seeds = if stage.seeds.is_empty() {
        vec![default_seed]
    } else {
        stage.seeds.clone()
    };
    let spec = crate::train::TrainSpec {
        env: stage.env.clone(),
        algo: stage.algo.clone(),
        agent: stage.agent.clone(),
        train_loop: stage.train_loop.clone(),
    };
    let mut finals = Vec::new();
    let mut per_seed = BTreeMap::new();
    for seed in seeds {
        let out = dir.join(format!("seed-{seed}"));
        let summary = crate::train::run_train(&spec, seed, device, &out, false)?;
        let r = summary
            .final_eval
            .map(|r| r.mean_return)
            .unwrap_or(f64::NAN);
        finals.push(r);
        per_seed.insert(
            seed.to_string(),
            SeedResult {
                final_return: r,
                episodes: summary.episodes,
                steps_per_second: summary.steps_per_second,
            },
        );
    }
    let (mean, se) = crate::eval::mean_stderr(&finals);
    Ok(StageResult::Train(TrainResult {
        final_return_mean: mean,
        final_return_stderr: se,
        seeds: per_seed,
    }))
}

/// The checkpoint of train stage `name` (its first seed), for `teacher = "stage:NAME"`.
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
