//! What each kind of experiment stage produces: one [`StageResult`] variant per kind of result.
//!
//! A result serialises to the stage's `result.json` and to its entry in `runs/NAME/summary.json`,
//! and displays as the text `reincarnate run` prints under the stage's name. A finished stage is
//! read back from its `result.json` by [`StageResult::read`], which knows from the stage's kind
//! which variant to expect.

use crate::ad::DistillSummary;
use crate::error::{Error, Result};
use crate::eval::EvalReport;
use crate::experiment::Stage;
use crate::history::DatasetSummary;
use crate::report::table;
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The result of one stage. Serialised without a tag: each variant's JSON is its payload's.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum StageResult {
    /// `eval` on one environment, and `icl_eval`.
    Eval(EvalReport),
    /// `eval` over several environments (`envs`), keyed by environment id.
    EvalByEnv(BTreeMap<String, EvalReport>),
    /// `train`: final greedy return over seeds.
    Train(TrainResult),
    /// `compare`: the plot of train stages' curves and each one's final return.
    Compare(CompareResult),
    /// `collect`: the learning-history dataset written.
    Collect(DatasetSummary),
    /// `distill`: the AD/ED training run.
    Distill(DistillSummary),
    /// `icl_plot`: in-context learning curves summarised, and their plot.
    IclCurves(IclCurves),
    /// `reincarnate`: per-method IQM of the teacher-normalised score with its 95% CI.
    Reincarnate(ReincarnateResult),
    /// `reincarnation_summary`: methods pooled over games, with a Markdown table.
    ReincarnationSummary(ReincarnationTable),
}

/// A `train` stage's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainResult {
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub final_return_mean: f64,
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub final_return_stderr: f64,
    /// Keyed by the seed in decimal.
    pub seeds: BTreeMap<String, SeedResult>,
}

/// One seed of a `train` stage.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedResult {
    /// Greedy return of the final evaluation (NaN, written `null`, without one).
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub final_return: f64,
    pub episodes: u64,
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub steps_per_second: f64,
}

/// A `compare` stage's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareResult {
    pub plot: PathBuf,
    /// Train stage name → the last point of its evaluation curve.
    #[serde(rename = "final")]
    pub finals: BTreeMap<String, FinalReturn>,
}

/// Mean ± standard error over seeds of a final greedy return.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalReturn {
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub final_return_mean: f64,
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub final_return_stderr: f64,
}

/// An `icl_plot` stage's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IclCurves {
    pub plot: PathBuf,
    /// icl_eval stage name → its curve; `source:NAME` → the source algorithm's curve.
    pub curves: BTreeMap<String, CurveSummary>,
}

/// One curve of an `icl_plot`, summarised.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CurveSummary {
    /// A frozen model's (or any evaluated policy's) return per episode index.
    Eval(EvalCurve),
    /// The source algorithm learning the same tasks from scratch.
    Source(SourceCurve),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalCurve {
    /// Mean return over episodes 1–2.
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub first_2_episodes: f64,
    /// Mean return over the last 5 episodes.
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub last_5_episodes: f64,
    pub optimal_return: Option<f64>,
    /// First episode (from 1) whose return reaches 80% of the optimal return.
    pub episodes_to_80pct: Option<f64>,
    /// Bandits: the mean normalised score over the last 5 episodes (UCB 1, random 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalised_last_5: Option<f64>,
    /// Data efficiency against the plot's source algorithm: the first episode (from 1) whose
    /// return reaches the source's final level ([`SourceCurve::final_level`]); absent without a
    /// source or when the curve never gets there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episodes_to_source_final: Option<f64>,
    /// An evaluation over several seeds: the figures above of each seed's own curve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_seed: Vec<SeedCurve>,
}

/// One evaluation seed's figures in an [`EvalCurve`] over several seeds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeedCurve {
    pub seed: u64,
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub first_2_episodes: f64,
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub last_5_episodes: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalised_last_5: Option<f64>,
    pub episodes_to_80pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episodes_to_source_final: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceCurve {
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub first_2_episodes: f64,
    /// Episodes every source run reached.
    pub episodes: usize,
    pub episodes_to_80pct: Option<f64>,
    /// The level the source reaches at the end of its history: its mean return over its last
    /// 5 episodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_level: Option<f64>,
    /// The first episode at which the source's own curve reaches that level (the count an
    /// in-context learner's `episodes_to_source_final` is compared with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episodes_to_final: Option<f64>,
}

/// A `reincarnate` stage's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReincarnateResult {
    pub env: String,
    pub teacher: String,
    pub teacher_return: Option<f64>,
    pub random_return: Option<f64>,
    pub methods: BTreeMap<String, MethodAggregate>,
    pub reincarnation_plot: PathBuf,
}

/// One method of a `reincarnate` stage over its seeds (from [`crate::reincarnation::aggregate`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodAggregate {
    /// IQM over seeds of the final teacher-normalised score.
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub final_iqm: f64,
    /// 95% bootstrap confidence interval of `final_iqm`.
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub ci95: (f64, f64),
    /// Each seed's final teacher-normalised score.
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub finals: Vec<f64>,
    /// (environment step, IQM over seeds of the normalised score).
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub iqm_curve: Vec<(f64, f64)>,
    /// First step at which `iqm_curve` reaches the teacher (1.0).
    pub first_step_iqm_at_teacher: Option<f64>,
    /// With an in-context teacher, per seed: the first evaluation step at which the student's
    /// greedy return reaches the teacher's in-context final level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps_to_in_context_level: Vec<Option<u64>>,
}

/// A `reincarnation_summary` stage's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReincarnationTable {
    pub methods: BTreeMap<String, PooledMethod>,
    /// `STAGE/table.md`.
    pub table: PathBuf,
    /// The contents of `table.md`.
    pub table_text: String,
}

/// One method pooled over the games (reincarnate stages) and seeds of a summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PooledMethod {
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub iqm: f64,
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub ci95: (f64, f64),
    pub runs: usize,
    /// Game (environment id) → that stage's `final_iqm`.
    #[serde(deserialize_with = "nan_as_null::deserialize")]
    pub per_game: BTreeMap<String, f64>,
}

impl StageResult {
    /// Reads a finished `stage`'s `result.json`; the stage's kind says which variant it holds.
    pub fn read(stage: &Stage, file: &Path) -> Result<StageResult> {
        fn typed<T: DeserializeOwned>(file: &Path) -> Result<T> {
            crate::fs::read_json(file)
        }
        Ok(match stage {
            Stage::Eval(s) if s.env.is_some() => StageResult::Eval(typed(file)?),
            Stage::Eval(_) => StageResult::EvalByEnv(typed(file)?),
            Stage::IclEval(_) => StageResult::Eval(typed(file)?),
            Stage::Train(_) => StageResult::Train(typed(file)?),
            Stage::Compare(_) => StageResult::Compare(typed(file)?),
            Stage::Collect(_) => StageResult::Collect(typed(file)?),
            Stage::Distill(_) => StageResult::Distill(typed(file)?),
            Stage::IclPlot(_) => StageResult::IclCurves(typed(file)?),
            Stage::Reincarnate(_) => StageResult::Reincarnate(typed(file)?),
            Stage::ReincarnationSummary(_) => StageResult::ReincarnationSummary(typed(file)?),
        })
    }

    /// The result as JSON, exactly as written to `result.json` and `summary.json`.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self)
            .map_err(|e| Error::Config(format!("a stage result does not serialise: {e}")))
    }
}

/// The rows of the evaluation table: environment, return, length, optimal return.
fn eval_row(r: &EvalReport) -> Vec<String> {
    vec![
        r.env.clone(),
        format!("{:.3} ± {:.3}", r.mean_return, r.stderr),
        format!("{:.1}", r.mean_length),
        r.optimal_return
            .map(|o| format!("{o:.2}"))
            .unwrap_or_else(|| "-".into()),
    ]
}

fn eval_table(f: &mut fmt::Formatter<'_>, rows: &[Vec<String>]) -> fmt::Result {
    writeln!(
        f,
        "{}",
        table(&["env", "return (mean ± s.e.)", "length", "optimal"], rows)
    )
}

impl fmt::Display for StageResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StageResult::Eval(r) => eval_table(f, &[eval_row(r)]),
            StageResult::EvalByEnv(by_env) => {
                let rows: Vec<Vec<String>> = by_env
                    .iter()
                    .map(|(env, r)| {
                        let mut row = eval_row(r);
                        row[0] = env.clone();
                        row
                    })
                    .collect();
                if rows.is_empty() {
                    Ok(())
                } else {
                    eval_table(f, &rows)
                }
            }
            StageResult::Train(r) => write!(f, "{r}"),
            StageResult::Compare(r) => write!(f, "{r}"),
            // The dataset and the distilled model are described by `inspect`; a run shows
            // the evaluations made from them.
            StageResult::Collect(_) | StageResult::Distill(_) => Ok(()),
            StageResult::IclCurves(r) => write!(f, "{r}"),
            StageResult::Reincarnate(r) => write!(f, "{r}"),
            StageResult::ReincarnationSummary(r) => writeln!(f, "{}", r.table_text),
        }
    }
}

impl fmt::Display for TrainResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  final evaluation return {:.2} ± {:.2} over seeds",
            self.final_return_mean, self.final_return_stderr
        )
    }
}

impl fmt::Display for CompareResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, r) in &self.finals {
            writeln!(
                f,
                "  {name}: final evaluation return {:.2} ± {:.2}",
                r.final_return_mean, r.final_return_stderr
            )?;
        }
        writeln!(f, "  plot: {}", self.plot.display())
    }
}

impl fmt::Display for IclCurves {
    /// One line per curve in words: where it starts, where it ends, against the optimal return.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, c) in &self.curves {
            match c {
                CurveSummary::Eval(c) => {
                    write!(
                        f,
                        "  {name}: episodes 1–2 return {:.2}, last 5 episodes {:.2}",
                        c.first_2_episodes, c.last_5_episodes
                    )?;
                    if let Some(o) = c.optimal_return {
                        write!(
                            f,
                            " = {:.0}% of optimal {o:.2}",
                            100.0 * c.last_5_episodes / o
                        )?;
                    }
                    if let Some(n) = c.normalised_last_5 {
                        write!(f, ", normalised score {n:.2} (UCB 1, random 0)")?;
                    }
                    if let Some(e) = c.episodes_to_source_final {
                        write!(f, "; reaches the source's final level at episode {e}")?;
                    }
                    if !c.by_seed.is_empty() {
                        let to_source = c.episodes_to_source_final.is_some()
                            || c.by_seed
                                .iter()
                                .any(|s| s.episodes_to_source_final.is_some());
                        let at =
                            |e: Option<f64>| e.map_or_else(|| "-".to_string(), |e| e.to_string());
                        let seeds: Vec<String> = c
                            .by_seed
                            .iter()
                            .map(|s| {
                                let mut t =
                                    format!("seed {}: last 5 {:.2}", s.seed, s.last_5_episodes);
                                if let Some(n) = s.normalised_last_5 {
                                    t += &format!(" (normalised {n:.3})");
                                }
                                t += &format!(", 80% at {}", at(s.episodes_to_80pct));
                                if to_source {
                                    t += &format!(
                                        ", source's final level at {}",
                                        at(s.episodes_to_source_final)
                                    );
                                }
                                t
                            })
                            .collect();
                        write!(f, "\n    {}", seeds.join("\n    "))?;
                    }
                    writeln!(f)?;
                }
                CurveSummary::Source(c) => {
                    let name = name.strip_prefix("source:").unwrap_or(name);
                    let reached = c.episodes_to_80pct.map_or_else(
                        || "does not reach 80% of optimal".to_string(),
                        |e| format!("reaches 80% of optimal at episode {e}"),
                    );
                    write!(
                        f,
                        "  {name} (source algorithm, from scratch): episodes 1–2 return {:.2}, {reached} (of {} episodes)",
                        c.first_2_episodes, c.episodes
                    )?;
                    match c.final_level {
                        Some(l) => {
                            write!(f, ", final level {l:.2} (last 5 episodes)")?;
                            match c.episodes_to_final {
                                Some(e) => writeln!(f, ", first reached at episode {e}")?,
                                None => writeln!(f)?,
                            }
                        }
                        None => writeln!(f)?,
                    }
                }
            }
        }
        writeln!(f, "  plot: {}", self.plot.display())
    }
}

impl fmt::Display for ReincarnateResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (m, v) in &self.methods {
            let at = v
                .first_step_iqm_at_teacher
                .map_or("not reached".to_string(), |s| format!("step {s}"));
            writeln!(
                f,
                "  {m}: final teacher-normalised IQM {:.2} (95% CI {:.2}..{:.2}) | teacher level: {at}",
                v.final_iqm, v.ci95.0, v.ci95.1
            )?;
            if !v.steps_to_in_context_level.is_empty() {
                let steps: Vec<String> = v
                    .steps_to_in_context_level
                    .iter()
                    .map(|s| s.map_or("never".to_string(), |s| s.to_string()))
                    .collect();
                writeln!(
                    f,
                    "    reaches the in-context teacher's final level at step {} (per seed)",
                    steps.join(" / ")
                )?;
            }
        }
        Ok(())
    }
}

/// serde_json writes a non-finite `f64` as `null`; these fields read `null` back as NaN.
mod nan_as_null {
    use super::*;

    pub trait Nullable: Sized {
        type Repr: DeserializeOwned;
        fn from_repr(r: Self::Repr) -> Self;
    }
    impl Nullable for f64 {
        type Repr = Option<f64>;
        fn from_repr(r: Option<f64>) -> f64 {
            r.unwrap_or(f64::NAN)
        }
    }
    impl<A: Nullable, B: Nullable> Nullable for (A, B) {
        type Repr = (A::Repr, B::Repr);
        fn from_repr(r: Self::Repr) -> Self {
            (A::from_repr(r.0), B::from_repr(r.1))
        }
    }
    impl<T: Nullable> Nullable for Vec<T> {
        type Repr = Vec<T::Repr>;
        fn from_repr(r: Self::Repr) -> Self {
            r.into_iter().map(T::from_repr).collect()
        }
    }
    impl<T: Nullable> Nullable for BTreeMap<String, T> {
        type Repr = BTreeMap<String, T::Repr>;
        fn from_repr(r: Self::Repr) -> Self {
            r.into_iter().map(|(k, v)| (k, T::from_repr(v))).collect()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Nullable>(
        d: D,
    ) -> std::result::Result<T, D::Error> {
        T::Repr::deserialize(d).map(T::from_repr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_written_as_null_reads_back_as_nan() {
        let r = TrainResult {
            final_return_mean: f64::NAN,
            final_return_stderr: 0.0,
            seeds: BTreeMap::from([(
                "0".to_string(),
                SeedResult {
                    final_return: f64::NAN,
                    episodes: 3,
                    steps_per_second: 10.0,
                },
            )]),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"final_return_mean\":null"), "{text}");
        let back: TrainResult = serde_json::from_str(&text).unwrap();
        assert!(back.final_return_mean.is_nan() && back.seeds["0"].final_return.is_nan());
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
    }

    #[test]
    fn icl_curves_tell_eval_and_source_curves_apart_and_print_them_in_words() {
        let json = serde_json::json!({
            "plot": "runs/q/curves/icl.svg",
            "curves": {
                "ad-eval": { "first_2_episodes": 0.5, "last_5_episodes": 8.0,
                             "optimal_return": 16.0, "episodes_to_80pct": null,
                             "episodes_to_source_final": 3.0 },
                "source:ppo": { "first_2_episodes": 0.25, "episodes": 400,
                                "episodes_to_80pct": 120.0, "final_level": 7.5 },
            }
        });
        let r: IclCurves = serde_json::from_value(json.clone()).unwrap();
        assert!(matches!(r.curves["ad-eval"], CurveSummary::Eval(_)));
        assert!(matches!(r.curves["source:ppo"], CurveSummary::Source(_)));
        assert_eq!(serde_json::to_value(&r).unwrap(), json);
        let text = r.to_string();
        assert!(
            text.contains(
                "ad-eval: episodes 1–2 return 0.50, last 5 episodes 8.00 = 50% of optimal 16.00"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "reaches 80% of optimal at episode 120 (of 400 episodes), final level 7.50"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "8.00 = 50% of optimal 16.00; reaches the source's final level at episode 3"
            ),
            "{text}"
        );
        assert!(text.ends_with("plot: runs/q/curves/icl.svg\n"), "{text}");
    }

    #[test]
    fn a_renamed_key_is_an_error_not_a_nan() {
        let json = serde_json::json!({
            "final_iqm": 0.5, "ci": [0.1, 0.9], "finals": [0.5],
            "iqm_curve": [[0.0, 0.1]], "first_step_iqm_at_teacher": null,
        });
        assert!(serde_json::from_value::<MethodAggregate>(json).is_err());
    }
}
