//! Experiment stages of the distillation pipeline (`reincarnate run`): `collect` (learning
//! histories), `distill` (AD or ED), `icl_eval` (frozen in-context evaluation on held-out tasks)
//! and `icl_plot` (in-context learning curves next to the source algorithm's own curve).
//!
//! A stage that consumes another names it (`data = "histories"`, `policy = "ad"`): its output
//! folder `runs/NAME/STAGE/` is used. A name that is not a stage is a path or an address:
//! `s3://BUCKET/PREFIX` (feature `s3`), `hf://...`.
//!
//! ```toml
//! [[stage]]
//! name = "histories"
//! kind = "collect"
//! env = "dark_room"
//! algo = "ppo"
//! tasks = "train"
//! runs = 130
//! steps = 4000
//!
//! [[stage]]
//! name = "ad"
//! kind = "distill"
//! data = "histories"
//! config = { mode = "ad", steps = 1200, every_kth_episode = 10, model = { n_layer = 2 } }
//!
//! [[stage]]
//! name = "ad-eval"
//! kind = "icl_eval"
//! policy = "ad"
//! episodes = 40
//!
//! [[stage]]
//! name = "curves"
//! kind = "icl_plot"
//! evals = ["ad-eval"]
//! source = "test-histories"     # optional: a collect stage on the test tasks
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::train::{distill, DistillConfig};
use crate::collect::{collect, CollectSpec};
use crate::envs::{EnvRef, TaskSet};
use crate::error::{Error, Result};
use crate::eval::EvalReport;
use crate::stage_result::{
    CurveSummary, EvalCurve, IclCurves, SeedCurve, SourceCurve, StageResult,
};
use std::collections::BTreeMap;

fn d_ppo() -> String {
    "ppo".into()
}
fn d_train() -> TaskSet {
    TaskSet::Train
}
fn d_test() -> TaskSet {
    TaskSet::Test
}
fn d_episodes() -> usize {
    40
}

/// `kind = "collect"`: many source runs, every transition logged (see `reincarnate collect`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CollectStage {
    pub name: String,
    pub env: EnvRef,
    #[serde(default = "d_ppo")]
    pub algo: String,
    #[serde(default)]
    pub agent: toml::Table,
    #[serde(default = "d_train")]
    pub tasks: TaskSet,
    pub runs: usize,
    pub steps: u64,
}

/// `kind = "distill"`: train AD or ED (`config.mode`) on a collect stage's histories.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DistillStage {
    pub name: String,
    /// A collect stage's name, or a dataset folder.
    pub data: String,
    #[serde(default)]
    pub config: DistillConfig,
}

/// `kind = "icl_eval"`: roll a distilled model out with frozen weights on held-out tasks.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IclEvalStage {
    pub name: String,
    /// A distill stage's name, or a checkpoint folder.
    pub policy: String,
    /// Default: the environment the model was distilled on.
    #[serde(default)]
    pub env: Option<EnvRef>,
    #[serde(default = "d_test")]
    pub tasks: TaskSet,
    #[serde(default = "d_episodes")]
    pub episodes: usize,
    /// Sampling temperature of the frozen model (1: its learned distribution; 0: most likely).
    #[serde(default = "d_temperature")]
    pub temperature: f64,
    /// Transitions the context keeps when it is full (default: half the model's context).
    #[serde(default)]
    pub keep: Option<usize>,
    /// Evaluation seeds: the experiment's seed and the next `seeds − 1`, pooled in the result
    /// (each seed's curve kept beside; see [`crate::eval::merge_seeds`]).
    #[serde(default = "d_seeds", skip_serializing_if = "is_one")]
    pub seeds: usize,
}

fn d_seeds() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

fn d_temperature() -> f64 {
    1.0
}

/// `kind = "icl_plot"`: the in-context learning curves of `icl_eval` stages and, optionally, the
/// source algorithm's curve from a collect stage on the same tasks, into `STAGE/icl.svg`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IclPlotStage {
    pub name: String,
    pub evals: Vec<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
}

/// A stage's output folder when `name` is a stage of this run, else `name` as a path.
/// An `s3://` or `hf://` address is fetched (mirrored) first.
fn resolve(root: &Path, name: &str, dataset: bool) -> Result<PathBuf> {
    let stage = root.join(name);
    if stage.is_dir() {
        Ok(stage)
    } else {
        crate::hub::local_folder(name, dataset)
    }
}

/// Collects the runs of `shard` (every run without one) into `dir`.
pub fn run_collect(
    s: &CollectStage,
    seed: u64,
    shard: Option<crate::collect::Shard>,
    dir: &Path,
    device: &candle_core::Device,
) -> Result<()> {
    let spec = CollectSpec {
        env: s.env.clone(),
        algo: s.algo.clone(),
        agent: s.agent.clone(),
        tasks: s.tasks,
        runs: s.runs,
        steps: s.steps,
        threads: None,
        policy: None,
        epsilon: 0.0,
    };
    collect(&spec, seed, shard, dir, device).map(|_| ())
}

/// A collect stage's result once every run is in `dir`: the dataset's summary. The manifest is
/// rebuilt first when it lists fewer runs than the folder holds (slices that finished at the
/// same moment).
pub fn finish_collect(s: &CollectStage, dir: &Path) -> Result<StageResult> {
    let mut summary = crate::history::summarize(dir)?;
    if summary.runs != s.runs {
        crate::collect::rebuild_manifest(dir)?;
        summary = crate::history::summarize(dir)?;
    }
    if summary.runs != s.runs {
        return Err(Error::Config(format!(
            "stage `{}`: {} lists {} runs, the stage asks for {}",
            s.name,
            dir.display(),
            summary.runs,
            s.runs
        )));
    }
    Ok(StageResult::Collect(summary))
}

pub fn run_distill(
    s: &DistillStage,
    seed: u64,
    root: &Path,
    dir: &Path,
    device: &candle_core::Device,
) -> Result<StageResult> {
    let data = resolve(root, &s.data, true)?;
    // `validation` may name a collect stage, as `data` does.
    let mut cfg = s.config.clone();
    if let Some(v) = &cfg.validation {
        cfg.validation = Some(resolve(root, &v.to_string_lossy(), true)?);
    }
    // Resume an interrupted run of this same configuration (a finished one only recomputes its
    // validation loss); anything else starts afresh.
    let same = crate::fs::read_json::<serde_json::Value>(&dir.join(crate::checkpoint::CONFIG_FILE))
        .ok()
        .is_some_and(|c| {
            super::train::same_training(
                &c["distill"],
                &serde_json::to_value(&cfg).unwrap_or_default(),
            ) && c["dataset"] == serde_json::json!(data.display().to_string())
        });
    Ok(StageResult::Distill(distill(
        &cfg, &data, dir, seed, device, same,
    )?))
}

pub fn run_icl_eval(
    s: &IclEvalStage,
    seed: u64,
    root: &Path,
    device: &candle_core::Device,
) -> Result<StageResult> {
    let ck = crate::checkpoint::load(&resolve(root, &s.policy, false)?)?;
    if !super::is_in_context(&ck.config) {
        return Err(Error::Config(format!(
            "stage `{}`: `{}` is not an AD/ED checkpoint (config.json algorithm must be ad or ed)",
            s.name, s.policy
        )));
    }
    let what = format!("stage `{}`: seeds", s.name);
    let r = crate::eval::over_seeds(seed, s.seeds, &what, |seed| {
        super::curves::eval_in_context_at(
            &ck,
            s.env.as_ref().map(|e| e.config()),
            s.tasks,
            s.episodes,
            seed,
            device,
            s.temperature,
            s.keep,
        )
        .map_err(|e| Error::Config(format!("stage `{}`: {e}", s.name)))
    })?;
    Ok(StageResult::Eval(r))
}

/// The level a source curve `(episode, mean, s.e.)` ends at: its mean over the last 5 episodes.
fn final_level(curve: &[(f64, f64, f64)]) -> Option<f64> {
    let means: Vec<f64> = curve.iter().map(|p| p.1).collect();
    crate::eval::mean_of_last(&means, 5)
}

/// First episode index (from 1) at which a curve reaches `frac` of `optimal`.
fn episodes_to(curve: &[(f64, f64)], optimal: f64, frac: f64) -> Option<f64> {
    curve.iter().find(|p| p.1 >= frac * optimal).map(|p| p.0)
}

/// The figures of one return-per-episode curve `c` (and its bandit normalised score): where it
/// starts and ends, and the first episodes at which it reaches 80% of `optimal` and the
/// source's final level.
fn curve_figures(
    seed: u64,
    c: &[f64],
    normalised: Option<&[f64]>,
    optimal: Option<f64>,
    source_final: Option<f64>,
) -> SeedCurve {
    let pts: Vec<(f64, f64)> = c
        .iter()
        .enumerate()
        .map(|(i, &m)| ((i + 1) as f64, m))
        .collect();
    SeedCurve {
        seed,
        first_2_episodes: c.iter().take(2).sum::<f64>() / c.len().clamp(1, 2) as f64,
        last_5_episodes: crate::eval::mean_of_last(c, 5).unwrap_or(0.0),
        normalised_last_5: normalised.map(|n| crate::eval::mean_of_last(n, 5).unwrap_or(0.0)),
        episodes_to_80pct: optimal.and_then(|o| episodes_to(&pts, o, 0.8)),
        episodes_to_source_final: source_final.and_then(|l| episodes_to(&pts, l, 1.0)),
    }
}

pub fn run_icl_plot(s: &IclPlotStage, root: &Path, dir: &Path) -> Result<StageResult> {
    let mut reports = Vec::new();
    for name in &s.evals {
        let file = root.join(name).join("result.json");
        let r: EvalReport = crate::fs::read_json(&file).map_err(|_| {
            Error::Config(format!(
                "icl_plot stage `{}`: `{name}` has no finished icl_eval result ({} is missing or not an eval report)",
                s.name,
                file.display()
            ))
        })?;
        reports.push((name.clone(), r));
    }
    let source = match &s.source {
        Some(src) => Some(super::curves::source_curve(&resolve(root, src, true)?)?),
        None => None,
    };
    let max_ep = reports.iter().map(|(_, r)| r.episodes).max();
    let plot = dir.join("icl.svg");
    let title = s
        .title
        .clone()
        .unwrap_or_else(|| "in-context learning on held-out tasks (mean ± s.e.)".into());
    let src_name = s.source.clone().unwrap_or_default();
    super::curves::plot_icl(
        &plot,
        &title,
        &reports,
        source.as_deref().map(|c| (src_name.as_str(), c)),
        max_ep,
    )?;
    if reports
        .iter()
        .any(|(_, r)| r.normalised_score_by_episode.is_some())
    {
        super::curves::plot_normalised(&dir.join("normalised.svg"), &reports)?;
    }
    let optimal = reports.iter().find_map(|(_, r)| r.optimal_return);
    let source_final = source.as_deref().and_then(final_level);
    let mut curves = BTreeMap::new();
    for (name, r) in &reports {
        let one = |seed: u64, c: &[f64], normalised: Option<&Vec<f64>>| {
            curve_figures(
                seed,
                c,
                normalised.map(Vec::as_slice),
                optimal,
                source_final,
            )
        };
        let pooled = one(
            r.seeds.first().copied().unwrap_or_default(),
            &r.returns_by_episode,
            r.normalised_score_by_episode.as_ref(),
        );
        let by_seed = r
            .seeds
            .iter()
            .zip(&r.returns_by_seed)
            .enumerate()
            .map(|(i, (&s, c))| one(s, c, r.normalised_score_by_seed.get(i)))
            .collect();
        curves.insert(
            name.clone(),
            CurveSummary::Eval(EvalCurve {
                first_2_episodes: pooled.first_2_episodes,
                last_5_episodes: pooled.last_5_episodes,
                optimal_return: r.optimal_return,
                episodes_to_80pct: pooled.episodes_to_80pct,
                episodes_to_source_final: pooled.episodes_to_source_final,
                normalised_last_5: pooled.normalised_last_5,
                by_seed,
            }),
        );
    }
    if let Some(curve) = &source {
        let pts: Vec<(f64, f64)> = curve.iter().map(|p| (p.0, p.1)).collect();
        curves.insert(
            format!("source:{src_name}"),
            CurveSummary::Source(SourceCurve {
                first_2_episodes: pts.iter().take(2).map(|p| p.1).sum::<f64>() / 2.0,
                episodes: pts.len(),
                episodes_to_80pct: optimal.and_then(|o| episodes_to(&pts, o, 0.8)),
                final_level: source_final,
                episodes_to_final: source_final.and_then(|l| episodes_to(&pts, l, 1.0)),
            }),
        );
    }
    Ok(StageResult::IclCurves(IclCurves { plot, curves }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The source's final level is its mean over the last 5 episodes, and an in-context curve's
    /// data efficiency the first episode at which it reaches that level.
    #[test]
    fn source_final_level_and_episodes_to_reach_it() {
        let source: Vec<(f64, f64, f64)> = (1..=10).map(|e| (e as f64, e as f64, 0.1)).collect();
        let level = final_level(&source).unwrap();
        assert_eq!(level, 8.0); // (6 + 7 + 8 + 9 + 10) / 5
        let ad: Vec<(f64, f64)> = [2.0, 5.0, 7.9, 8.0, 9.0]
            .iter()
            .enumerate()
            .map(|(i, &r)| ((i + 1) as f64, r))
            .collect();
        assert_eq!(episodes_to(&ad, level, 1.0), Some(4.0));
        assert_eq!(episodes_to(&ad[..3], level, 1.0), None);
        // the source itself first reaches its final level at episode 8
        let own: Vec<(f64, f64)> = source.iter().map(|p| (p.0, p.1)).collect();
        assert_eq!(episodes_to(&own, level, 1.0), Some(8.0));
        assert_eq!(final_level(&[]), None);
    }

    /// Each seed's curve and the pooled one get their own figures: a seed that never reaches
    /// the source's level has none, while the pooled curve may.
    #[test]
    fn figures_of_each_seed_and_of_the_pooled_curve() {
        let a = [0.0, 1.0, 2.0, 4.0, 4.0, 4.0];
        let b = [0.0, 1.0, 3.0, 3.0, 3.0, 3.0];
        let pooled: Vec<f64> = a.iter().zip(&b).map(|(x, y)| (x + y) / 2.0).collect();
        let (opt, level) = (Some(4.0), Some(3.5));
        let fa = curve_figures(0, &a, None, opt, level);
        let fb = curve_figures(1, &b, Some(&[0.0, 0.5, 1.0]), opt, level);
        let fp = curve_figures(0, &pooled, None, opt, level);
        assert_eq!(
            (fa.episodes_to_80pct, fa.episodes_to_source_final),
            (Some(4.0), Some(4.0))
        );
        assert_eq!(
            (fb.episodes_to_80pct, fb.episodes_to_source_final),
            (None, None)
        );
        assert_eq!(fp.episodes_to_source_final, Some(4.0)); // (4 + 3) / 2 = 3.5
        assert_eq!(fb.first_2_episodes, 0.5);
        assert_eq!(fb.last_5_episodes, 2.6); // (1 + 3 + 3 + 3 + 3) / 5
        assert_eq!(fb.normalised_last_5, Some(0.5));
        assert_eq!(fa.normalised_last_5, None);
    }
}
