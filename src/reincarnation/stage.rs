//! Experiment stages for reincarnation (`reincarnate run FILE.toml`):
//!
//! - `kind = "reincarnate"`: one teacher, one environment, every listed method (and
//!   `tabula_rasa`) over several seeds into `STAGE/METHOD/seed-S/`. The result holds, per
//!   method, the IQM of the final teacher-normalised score with a 95% bootstrap CI, the IQM
//!   curve and the first step at which that curve reaches the teacher (1.0);
//!   `STAGE/reincarnation.svg` plots the IQM curves. A finished run (its `reincarnation.json`
//!   written under an unchanged spec) is not redone when an interrupted stage is re-run.
//! - `kind = "reincarnation_summary"`: pools the final normalised scores of earlier
//!   reincarnate stages (all games × seeds, as the paper aggregates over Atari games) into
//!   one IQM ± CI per method, and writes `STAGE/table.md` with one column per game.

use super::{aggregate, plot_normalised, run_reincarnate, Method, MethodConfig, ReincarnateSpec};
use super::{ReincarnationSummary, METHODS};
use crate::envs::EnvRef;
use crate::error::{Error, Result};
use crate::train::LoopConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReincarnateStage {
    pub name: String,
    pub env: EnvRef,
    /// `stage:NAME` (an earlier train stage's checkpoint, its first seed), a checkpoint folder,
    /// a state dict (with `arch`) or `hf://...`.
    pub teacher: String,
    #[serde(default)]
    pub arch: Option<String>,
    #[serde(default)]
    pub teacher_data: Option<PathBuf>,
    pub methods: Vec<Method>,
    #[serde(default = "d_student")]
    pub student: String,
    #[serde(default)]
    pub agent: toml::Table,
    #[serde(default, rename = "loop")]
    pub train_loop: LoopConfig,
    #[serde(default)]
    pub method_config: MethodConfig,
    /// Seeds of every method (default: the experiment's seed).
    #[serde(default)]
    pub seeds: Vec<u64>,
}

fn d_student() -> String {
    "dqn".into()
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReincarnationSummaryStage {
    pub name: String,
    /// Earlier `reincarnate` stages (one per game).
    pub stages: Vec<String>,
}

/// Runs a `reincarnate` stage into `dir`. `teacher_stage` maps `stage:NAME` to a checkpoint.
pub fn run_stage(
    stage: &ReincarnateStage,
    default_seed: u64,
    dir: &Path,
    device: &candle_core::Device,
    teacher_stage: &dyn Fn(&str) -> Result<PathBuf>,
) -> Result<serde_json::Value> {
    if stage.methods.is_empty() {
        return Err(Error::Config(format!(
            "stage `{}`: `methods` is empty; list some of {}",
            stage.name,
            METHODS.join(", ")
        )));
    }
    let teacher = match stage.teacher.strip_prefix("stage:") {
        Some(name) => teacher_stage(name)?.display().to_string(),
        None => stage.teacher.clone(),
    };
    let seeds = if stage.seeds.is_empty() {
        vec![default_seed]
    } else {
        stage.seeds.clone()
    };
    let mut runs: BTreeMap<String, Vec<ReincarnationSummary>> = BTreeMap::new();
    for &method in &stage.methods {
        for &seed in &seeds {
            let spec = ReincarnateSpec {
                env: stage.env.clone(),
                teacher: teacher.clone(),
                arch: stage.arch.clone(),
                teacher_data: stage.teacher_data.clone(),
                method,
                student: stage.student.clone(),
                agent: stage.agent.clone(),
                train_loop: stage.train_loop.clone(),
                method_config: stage.method_config.clone(),
            };
            let out = dir.join(method.name()).join(format!("seed-{seed}"));
            let spec_file = dir
                .join(method.name())
                .join(format!("seed-{seed}.spec.json"));
            let report = out.join("reincarnation.json");
            let spec_json = serde_json::to_value(&spec)
                .map_err(|e| Error::Config(format!("stage `{}`: {e}", stage.name)))?;
            let done = report.exists()
                && crate::fs::read_json::<serde_json::Value>(&spec_file).ok()
                    == Some(spec_json.clone());
            let r = if done {
                crate::fs::read_json(&report)?
            } else {
                crate::fs::create_dir_all(&dir.join(method.name()))?;
                let r = run_reincarnate(&spec, seed, device, &out)?;
                crate::fs::write_json_atomic(&spec_file, &spec_json)?;
                r
            };
            runs.entry(method.name().to_string()).or_default().push(r);
        }
    }
    let agg = aggregate(&runs, default_seed);
    let curves: Vec<(String, Vec<(f64, f64)>)> = agg
        .iter()
        .map(|(m, v)| {
            let pts = serde_json::from_value(v["iqm_curve"].clone()).unwrap_or_default();
            (m.clone(), pts)
        })
        .collect();
    let env_id = stage.env.config().id;
    let plot = dir.join("reincarnation.svg");
    plot_normalised(
        &plot,
        &format!(
            "{env_id}: teacher-normalised greedy return (IQM over {} seeds)",
            seeds.len()
        ),
        &curves,
    )?;
    Ok(serde_json::json!({
        "env": env_id,
        "teacher": teacher,
        "teacher_return": runs.values().next().and_then(|r| r.first()).map(|r| r.teacher_return),
        "random_return": runs.values().next().and_then(|r| r.first()).map(|r| r.random_return),
        "methods": agg,
        "reincarnation_plot": plot,
    }))
}

/// Runs a `reincarnation_summary` stage from the results of earlier stages.
pub fn run_summary_stage(
    stage: &ReincarnationSummaryStage,
    results: &serde_json::Map<String, serde_json::Value>,
    dir: &Path,
    seed: u64,
) -> Result<serde_json::Value> {
    use crate::report::aggregate::{bootstrap_ci, iqm};
    let mut pooled: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut per_game: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut games = Vec::new();
    for name in &stage.stages {
        let r = results
            .get(name)
            .and_then(|r| r.get("methods"))
            .ok_or_else(|| {
                Error::Config(format!(
                    "stage `{}`: `{name}` is not an earlier reincarnate stage of this experiment",
                    stage.name
                ))
            })?;
        let game = results[name]["env"].as_str().unwrap_or(name).to_string();
        games.push(game.clone());
        for (method, v) in r.as_object().into_iter().flatten() {
            let finals: Vec<f64> = serde_json::from_value(v["finals"].clone()).unwrap_or_default();
            pooled.entry(method.clone()).or_default().extend(&finals);
            per_game
                .entry(method.clone())
                .or_default()
                .insert(game.clone(), v["final_iqm"].as_f64().unwrap_or(f64::NAN));
        }
    }
    let mut table = format!(
        "| method | IQM (all games × seeds) | 95% CI | {} |\n|---|---|---|{}\n",
        games.join(" | "),
        "---|".repeat(games.len())
    );
    let mut out = serde_json::Map::new();
    let mut order: Vec<(&String, &Vec<f64>)> = pooled.iter().collect();
    order.sort_by(|a, b| iqm(b.1).total_cmp(&iqm(a.1)));
    for (method, finals) in order {
        let (lo, hi) = bootstrap_ci(finals, iqm, 2000, 0.95, seed);
        let cells: Vec<String> = games
            .iter()
            .map(|g| {
                format!(
                    "{:.2}",
                    per_game[method].get(g).copied().unwrap_or(f64::NAN)
                )
            })
            .collect();
        table.push_str(&format!(
            "| {method} | {:.2} | [{lo:.2}, {hi:.2}] | {} |\n",
            iqm(finals),
            cells.join(" | ")
        ));
        out.insert(
            method.clone(),
            serde_json::json!({ "iqm": iqm(finals), "ci95": [lo, hi], "runs": finals.len(), "per_game": per_game[method] }),
        );
    }
    let path = dir.join("table.md");
    crate::fs::write_atomic(&path, table.as_bytes())?;
    Ok(serde_json::json!({ "methods": out, "table": path, "table_text": table }))
}
