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

pub use crate::envs::EnvRef;
use crate::envs::{EnvConfig, TaskFamily, TaskSet};
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalReport, RandomPolicy};
use crate::fs::{create_dir_all, read_json, write_json_atomic};
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
}

impl Stage {
    pub fn name(&self) -> &str {
        match self {
            Stage::Eval(s) => &s.name,
        }
    }
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
    Ok(exp)
}

/// Runs a policy evaluation given by name. Only `random` exists at this layer; checkpoint
/// policies are resolved by the callers that know about agents.
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

fn run_eval_stage(stage: &EvalStage, seed: u64) -> Result<serde_json::Value> {
    if stage.policy != "random" {
        return Err(Error::Config(format!(
            "stage `{}`: policy `{}` is not available in experiment files yet; use \"random\"",
            stage.name, stage.policy
        )));
    }
    match (&stage.env, stage.envs.is_empty()) {
        (Some(env), true) => {
            let r = eval_random(&env.config(), stage.tasks, stage.episodes, seed)?;
            Ok(serde_json::to_value(r).expect("report serialises"))
        }
        (None, false) => {
            let mut out = BTreeMap::new();
            for env in &stage.envs {
                let cfg = env.config();
                let r = eval_random(&cfg, stage.tasks, stage.episodes, seed)?;
                out.insert(cfg.id.clone(), r);
            }
            Ok(serde_json::to_value(out).expect("reports serialise"))
        }
        _ => Err(Error::Config(format!(
            "stage `{}`: give exactly one of `env` or `envs`",
            stage.name
        ))),
    }
}

/// Outcome of one stage in a run.
pub struct StageOutcome {
    pub name: String,
    pub skipped: bool,
    pub result: serde_json::Value,
}

/// Runs every stage of `exp` (skipping finished ones) and writes `summary.json`.
pub fn run_experiment(
    exp: &Experiment,
    default_name: &str,
) -> Result<(PathBuf, Vec<StageOutcome>)> {
    let name = exp.name.clone().unwrap_or_else(|| default_name.to_string());
    let root = exp
        .runs_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs"))
        .join(&name);
    create_dir_all(&root)?;
    let mut outcomes = Vec::new();
    let mut summary = serde_json::Map::new();
    for stage in &exp.stages {
        let dir = root.join(stage.name());
        create_dir_all(&dir)?;
        let stage_file = dir.join("stage.json");
        let result_file = dir.join("result.json");
        let unchanged =
            stage_file.exists() && read_json::<Stage>(&stage_file).ok().as_ref() == Some(stage);
        let (result, skipped) = if unchanged && result_file.exists() {
            (read_json::<serde_json::Value>(&result_file)?, true)
        } else {
            write_json_atomic(&stage_file, stage)?;
            let result = match stage {
                Stage::Eval(s) => run_eval_stage(s, exp.seed)?,
            };
            write_json_atomic(&result_file, &result)?;
            (result, false)
        };
        summary.insert(stage.name().to_string(), result.clone());
        outcomes.push(StageOutcome {
            name: stage.name().to_string(),
            skipped,
            result,
        });
    }
    write_json_atomic(&root.join("summary.json"), &summary)?;
    Ok((root, outcomes))
}
