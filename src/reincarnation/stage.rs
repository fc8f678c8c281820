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
//!
//! [`run_with_baseline`] is the one-seed form `reincarnate reincarnate --baseline` runs.

use super::{aggregate, plot_normalised, run_reincarnate, Method, MethodConfig, ReincarnateSpec};
use super::{ReincarnationSummary, METHODS};
use crate::envs::EnvRef;
use crate::error::{Error, Result};
use crate::stage_result::{PooledMethod, ReincarnateResult, ReincarnationTable, StageResult};
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

/// The phase markers of a stage's plot: the offline phase's end when a method had one, and
/// the forced switch-off of distillation when `decay_steps` sets one for QDagger or
/// kickstarting.
fn stage_markers(
    stage: &ReincarnateStage,
    runs: &BTreeMap<String, Vec<ReincarnationSummary>>,
) -> Vec<crate::report::plot::Series> {
    use crate::report::plot::Series;
    let mut marks = Vec::new();
    let offline = runs.values().flatten().map(|r| r.offline_updates).max();
    if let Some(n) = offline.filter(|&n| n > 0) {
        marks.push(Series::marker(
            format!("offline phases end (up to {n} updates)"),
            0.0,
        ));
    }
    if stage.methods.iter().any(|m| m.distils()) {
        marks.extend(super::switch_off_marker(&stage.method_config));
    }
    marks
}

/// The seeds of a stage (default: the experiment's seed).
pub fn stage_seeds(stage: &ReincarnateStage, default_seed: u64) -> Vec<u64> {
    if stage.seeds.is_empty() {
        vec![default_seed]
    } else {
        stage.seeds.clone()
    }
}

/// The teacher a stage names, with `stage:NAME` resolved by `teacher_stage`.
pub fn stage_teacher(
    stage: &ReincarnateStage,
    teacher_stage: &dyn Fn(&str) -> Result<PathBuf>,
) -> Result<String> {
    if stage.methods.is_empty() {
        return Err(Error::Config(format!(
            "stage `{}`: `methods` is empty; list some of {}",
            stage.name,
            METHODS.join(", ")
        )));
    }
    Ok(match stage.teacher.strip_prefix("stage:") {
        Some(name) => teacher_stage(name)?.display().to_string(),
        None => stage.teacher.clone(),
    })
}

/// One method × seed of a stage: its spec, its folder `STAGE/METHOD/seed-S` and the spec file
/// beside it that says which spec the folder's `reincarnation.json` answers.
struct RunSlot {
    spec: ReincarnateSpec,
    spec_json: serde_json::Value,
    out: PathBuf,
    spec_file: PathBuf,
}

fn run_slot(
    stage: &ReincarnateStage,
    teacher: &str,
    method: Method,
    seed: u64,
    dir: &Path,
) -> Result<RunSlot> {
    let spec = ReincarnateSpec {
        env: stage.env.clone(),
        teacher: teacher.to_string(),
        arch: stage.arch.clone(),
        teacher_data: stage.teacher_data.clone(),
        method,
        student: stage.student.clone(),
        agent: stage.agent.clone(),
        train_loop: stage.train_loop.clone(),
        method_config: stage.method_config.clone(),
    };
    let spec_json = serde_json::to_value(&spec)
        .map_err(|e| Error::Config(format!("stage `{}`: {e}", stage.name)))?;
    Ok(RunSlot {
        spec,
        spec_json,
        out: dir.join(method.name()).join(format!("seed-{seed}")),
        spec_file: dir
            .join(method.name())
            .join(format!("seed-{seed}.spec.json")),
    })
}

impl RunSlot {
    /// The finished run's report, if this same spec finished here.
    fn finished(&self) -> Result<Option<ReincarnationSummary>> {
        let report = self.out.join("reincarnation.json");
        let same = report.exists()
            && crate::fs::read_json::<serde_json::Value>(&self.spec_file)
                .ok()
                .as_ref()
                == Some(&self.spec_json);
        if same {
            Ok(Some(crate::fs::read_json(&report)?))
        } else {
            Ok(None)
        }
    }
}

/// Whether `method` × `seed` of a stage has finished under its current spec.
pub fn run_done(
    stage: &ReincarnateStage,
    teacher: &str,
    method: Method,
    seed: u64,
    dir: &Path,
) -> Result<bool> {
    Ok(run_slot(stage, teacher, method, seed, dir)?
        .finished()?
        .is_some())
}

/// Makes `method` × `seed` of a stage count as not finished (its spec record removed), so that
/// [`run_one`] runs it again; the run's folder is rewritten by that run.
pub fn forget_run(stage: &ReincarnateStage, method: Method, seed: u64, dir: &Path) -> Result<()> {
    let slot = run_slot(stage, &stage.teacher, method, seed, dir)?;
    crate::fs::remove_file_if_present(&slot.spec_file)
}

/// Runs `method` × `seed` of a stage into `STAGE/METHOD/seed-S/` unless it finished earlier under
/// the same spec; true when it ran.
pub fn run_one(
    stage: &ReincarnateStage,
    teacher: &str,
    method: Method,
    seed: u64,
    dir: &Path,
    device: &candle_core::Device,
) -> Result<bool> {
    let slot = run_slot(stage, teacher, method, seed, dir)?;
    if slot.finished()?.is_some() {
        return Ok(false);
    }
    crate::fs::create_dir_all(&dir.join(method.name()))?;
    run_reincarnate(&slot.spec, seed, device, &slot.out)?;
    crate::fs::write_json_atomic(&slot.spec_file, &slot.spec_json)?;
    Ok(true)
}

/// A stage's result from its finished runs (every method × seed must have finished): the IQM
/// per method and the plot of their curves.
pub fn finish_stage(
    stage: &ReincarnateStage,
    teacher: &str,
    default_seed: u64,
    dir: &Path,
) -> Result<StageResult> {
    let seeds = stage_seeds(stage, default_seed);
    let mut runs: BTreeMap<String, Vec<ReincarnationSummary>> = BTreeMap::new();
    for &method in &stage.methods {
        for &seed in &seeds {
            let slot = run_slot(stage, teacher, method, seed, dir)?;
            let r = slot.finished()?.ok_or_else(|| {
                Error::Config(format!(
                    "stage `{}`: {} seed {seed} has not finished ({} is missing or from another spec)",
                    stage.name,
                    method.name(),
                    slot.out.join("reincarnation.json").display()
                ))
            })?;
            runs.entry(method.name().to_string()).or_default().push(r);
        }
    }
    let methods = aggregate(&runs, default_seed);
    let curves: Vec<(String, Vec<(f64, f64)>)> = methods
        .iter()
        .map(|(m, v)| (m.clone(), v.iqm_curve.clone()))
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
        stage_markers(stage, &runs),
    )?;
    let first = runs.values().next().and_then(|r| r.first());
    Ok(StageResult::Reincarnate(ReincarnateResult {
        env: env_id,
        teacher: teacher.to_string(),
        teacher_return: first.map(|r| r.teacher_return),
        random_return: first.map(|r| r.random_return),
        methods,
        reincarnation_plot: plot,
    }))
}

/// Runs a `reincarnation_summary` stage from the results of earlier stages (`earlier` finds one
/// by name).
pub fn run_summary_stage<'a>(
    stage: &ReincarnationSummaryStage,
    earlier: &dyn Fn(&str) -> Option<&'a StageResult>,
    dir: &Path,
    seed: u64,
) -> Result<StageResult> {
    use crate::report::aggregate::{bootstrap_ci, iqm};
    let mut pooled: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut per_game: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut games = Vec::new();
    for name in &stage.stages {
        let r = match earlier(name) {
            Some(StageResult::Reincarnate(r)) => r,
            _ => {
                return Err(Error::Config(format!(
                    "stage `{}`: `{name}` is not an earlier reincarnate stage of this experiment",
                    stage.name
                )))
            }
        };
        // One game may come from several stages (methods split over seed counts).
        let game = r.env.clone();
        if !games.contains(&game) {
            games.push(game.clone());
        }
        for (method, v) in &r.methods {
            pooled.entry(method.clone()).or_default().extend(&v.finals);
            per_game
                .entry(method.clone())
                .or_default()
                .insert(game.clone(), v.final_iqm);
        }
    }
    let mut table = format!(
        "| method | IQM (all games × seeds) | 95% CI | {} |\n|---|---|---|{}\n",
        games.join(" | "),
        "---|".repeat(games.len())
    );
    let mut methods = BTreeMap::new();
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
        methods.insert(
            method.clone(),
            PooledMethod {
                iqm: iqm(finals),
                ci95: (lo, hi),
                runs: finals.len(),
                per_game: per_game[method].clone(),
            },
        );
    }
    let path = dir.join("table.md");
    crate::fs::write_atomic(&path, table.as_bytes())?;
    Ok(StageResult::ReincarnationSummary(ReincarnationTable {
        methods,
        table: path,
        table_text: table,
    }))
}

/// Where `reincarnate reincarnate` writes without `--out`: `checkpoints/ENV-METHOD-sSEED`.
pub fn default_out(env: &str, method: Method, seed: u64) -> PathBuf {
    PathBuf::from("checkpoints").join(format!(
        "{}-{}-s{seed}",
        env.replace('/', "-"),
        method.name()
    ))
}

/// `reincarnate reincarnate`: `spec` with `seed` into `out` and, with `baseline`, the same
/// student trained from scratch at the same budget into `OUT-tabula-rasa`, both curves plotted
/// into `OUT/reincarnation.svg`.
pub fn run_with_baseline(
    spec: &ReincarnateSpec,
    seed: u64,
    device: &candle_core::Device,
    out: &Path,
    baseline: bool,
) -> Result<WithBaseline> {
    let run = run_reincarnate(spec, seed, device, out)?;
    let baseline = if baseline && spec.method != Method::TabulaRasa {
        let base_out = super::sibling(out, "tabula-rasa");
        let base = ReincarnateSpec {
            method: Method::TabulaRasa,
            ..spec.clone()
        };
        let b = run_reincarnate(&base, seed, device, &base_out)?;
        plot_normalised(
            &out.join("reincarnation.svg"),
            &format!("{} vs tabula rasa on {}", spec.method.name(), run.env),
            &[
                (spec.method.name().to_string(), run.normalised_curve.clone()),
                ("tabula_rasa".into(), b.normalised_curve.clone()),
            ],
            super::phase_markers(spec, run.offline_updates),
        )?;
        Some((b, base_out))
    } else {
        None
    };
    Ok(WithBaseline {
        run,
        baseline,
        out: out.to_path_buf(),
    })
}

/// What [`run_with_baseline`] did: the reincarnated student and, if asked, the baseline with its
/// folder.
pub struct WithBaseline {
    pub run: ReincarnationSummary,
    pub baseline: Option<(ReincarnationSummary, PathBuf)>,
    pub out: PathBuf,
}

impl std::fmt::Display for WithBaseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let steps = |s: Option<u64>| s.map_or("not reached".to_string(), |s| format!("step {s}"));
        let r = &self.run;
        writeln!(
            f,
            "{} student on {}: teacher {:.2}, random {:.2} | final teacher-normalised score {:.3} | teacher level: {}",
            r.method.name(), r.env, r.teacher_return, r.random_return, r.final_normalised, steps(r.steps_to_teacher)
        )?;
        if let Some(ic) = &r.in_context_teacher {
            writeln!(
                f,
                "in-context teacher on task {}: episode 1 return {:.2}, final level {:.2} (mean of its last {} of {} episodes, {} environment steps{}); the student reaches it at {}",
                ic.task,
                ic.returns_by_episode.first().copied().unwrap_or(f64::NAN),
                ic.final_level,
                ic.final_episodes,
                ic.episodes,
                ic.steps,
                if ic.training_task { ", a training task of the model" } else { "" },
                steps(r.steps_to_in_context_level)
            )?;
        }
        if let Some((b, base_out)) = &self.baseline {
            writeln!(
                f,
                "tabula_rasa student: final teacher-normalised score {:.3} | teacher level: {} ({})",
                b.final_normalised,
                steps(b.steps_to_teacher),
                base_out.display()
            )?;
            if b.in_context_teacher.is_some() {
                writeln!(
                    f,
                    "tabula_rasa student reaches the in-context level at {}",
                    steps(b.steps_to_in_context_level)
                )?;
            }
        }
        writeln!(
            f,
            "wrote {} (model.safetensors, metrics.jsonl, reincarnation.json, reincarnation.svg)",
            self.out.display()
        )
    }
}
