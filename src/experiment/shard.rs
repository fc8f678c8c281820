//! An experiment as units of work that several processes share: `reincarnate run FILE --shard
//! i/n` runs the i-th slice of every stage's grid (train seeds, reincarnate methods × seeds, the
//! runs of a collection), waiting for the stages it reads to be complete; `reincarnate report
//! FILE` then builds every stage's result, the plots and `summary.json` from what the slices
//! wrote, as the one-process run does.
//!
//! A unit ([`Item`]) is done when its output and the record of the spec it ran under are on disk
//! (each written atomically, the record last), so a killed slice re-run does only what is
//! missing. Item `k` of the grid of the experiment's `s`-th stage (from 0) belongs to slice
//! `(k + s) mod n`.

use super::{Experiment, Stage};
use crate::collect::Shard;
use crate::error::{Error, Result};
use crate::fs::read_json;
use crate::reincarnation::Method;
use std::path::Path;

/// One unit of a stage's work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// The whole stage (`eval`, `distill`, `icl_eval`): one process runs it.
    Whole,
    /// One seed of a `train` stage.
    Seed(u64),
    /// One method × seed of a `reincarnate` stage.
    Run(Method, u64),
    /// The runs `r` with `r mod count = index` of a `collect` stage.
    Collect(Shard),
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Whole => write!(f, "the whole stage"),
            Item::Seed(s) => write!(f, "seed {s}"),
            Item::Run(m, s) => write!(f, "{} seed {s}", m.name()),
            Item::Collect(sh) if sh.count == 1 => write!(f, "every run"),
            Item::Collect(sh) => write!(f, "runs r with r mod {} = {}", sh.count, sh.index),
        }
    }
}

/// The seeds a `train` stage trains (default: the experiment's seed).
pub fn train_seeds(seeds: &[u64], default_seed: u64) -> Vec<u64> {
    if seeds.is_empty() {
        vec![default_seed]
    } else {
        seeds.to_vec()
    }
}

/// The units of `stage`'s work when `slices` processes share the experiment; none for the
/// stages that only read others' results (`compare`, `icl_plot`, `reincarnation_summary`),
/// which `report` (or the one-process run) computes.
pub fn items(stage: &Stage, default_seed: u64, slices: usize) -> Vec<Item> {
    match stage {
        Stage::Eval(_) | Stage::Distill(_) | Stage::IclEval(_) => vec![Item::Whole],
        Stage::Train(t) => train_seeds(&t.seeds, default_seed)
            .into_iter()
            .map(Item::Seed)
            .collect(),
        Stage::Reincarnate(r) => {
            let seeds = crate::reincarnation::stage::stage_seeds(r, default_seed);
            r.methods
                .iter()
                .flat_map(|&m| seeds.iter().map(move |&s| Item::Run(m, s)))
                .collect()
        }
        Stage::Collect(c) => (0..slices.min(c.runs).max(1))
            .map(|index| {
                Item::Collect(Shard {
                    index,
                    count: slices.max(1),
                })
            })
            .collect(),
        Stage::Compare(_) | Stage::IclPlot(_) | Stage::ReincarnationSummary(_) => Vec::new(),
    }
}

/// The slice an item belongs to: item `k` of the grid of the experiment's `stage`-th stage goes
/// to slice `(k + stage) mod n`. The rotation spreads the one-unit stages (two distills, their
/// evaluations) over the slices instead of piling them on slice 0.
pub fn owner(stage: usize, k: usize, slices: usize) -> usize {
    (k + stage) % slices.max(1)
}

/// The slices that hold some unit of stage `stage` (`units` of them), ascending.
pub fn owners(stage: usize, units: usize, slices: usize) -> Vec<usize> {
    let mut o: Vec<usize> = (0..units).map(|k| owner(stage, k, slices)).collect();
    o.sort_unstable();
    o.dedup();
    o
}

/// The earlier stages of `exp` whose outputs `stage` reads.
pub fn inputs<'a>(exp: &'a Experiment, stage: &Stage) -> Vec<&'a Stage> {
    let validation = match stage {
        Stage::Distill(d) => d.config.validation.as_ref().map(|v| v.to_string_lossy()),
        _ => None,
    };
    let named: Vec<&str> = match stage {
        Stage::Reincarnate(r) => r.teacher.strip_prefix("stage:").into_iter().collect(),
        Stage::Distill(d) => std::iter::once(d.data.as_str())
            .chain(validation.as_deref())
            .collect(),
        Stage::IclEval(e) => vec![e.policy.as_str()],
        Stage::Compare(c) => c.stages.iter().map(String::as_str).collect(),
        Stage::IclPlot(p) => p
            .evals
            .iter()
            .map(String::as_str)
            .chain(p.source.as_deref())
            .collect(),
        Stage::ReincarnationSummary(s) => s.stages.iter().map(String::as_str).collect(),
        Stage::Eval(_) | Stage::Train(_) | Stage::Collect(_) => Vec::new(),
    };
    exp.stages
        .iter()
        .take_while(|s| s.name() != stage.name())
        .filter(|s| named.contains(&s.name()))
        .collect()
}

/// The record of one finished train seed (`STAGE/seed-S.result.json`): the spec it trained
/// under and its result.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SeedRecord {
    pub spec: serde_json::Value,
    pub result: crate::stage_result::SeedResult,
}

pub(super) fn seed_record_path(dir: &Path, seed: u64) -> std::path::PathBuf {
    dir.join(format!("seed-{seed}.result.json"))
}

/// The finished seed's record, if it trained under `spec`.
pub(super) fn seed_record(
    dir: &Path,
    seed: u64,
    spec: &serde_json::Value,
) -> Result<Option<SeedRecord>> {
    let path = seed_record_path(dir, seed);
    if !path.exists() {
        return Ok(None);
    }
    let r: SeedRecord = read_json(&path)?;
    Ok((&r.spec == spec).then_some(r))
}

/// Whether the stage's own `stage.json` holds exactly `stage`.
pub(super) fn stage_file_matches(stage: &Stage, dir: &Path) -> bool {
    read_json::<Stage>(&dir.join("stage.json")).ok().as_ref() == Some(stage)
}

/// What a stage's output depends on besides its own spec: the specs of the stages it reads,
/// each with what it depends on in turn. Recorded in `STAGE/inputs.json` when a whole-stage unit
/// (a distill, an evaluation) runs, so that changing an earlier stage reruns the ones reading it.
pub fn lineage(exp: &Experiment, stage: &Stage) -> serde_json::Value {
    serde_json::Value::Array(
        inputs(exp, stage)
            .into_iter()
            .map(|s| serde_json::json!({ "stage": s, "inputs": lineage(exp, s) }))
            .collect(),
    )
}

/// The file recording [`lineage`] beside a stage's output.
pub(super) const INPUTS_FILE: &str = "inputs.json";

/// Whether the stage's output in `dir` was made from the inputs `exp` gives it now.
pub(super) fn inputs_match(exp: &Experiment, stage: &Stage, dir: &Path) -> bool {
    lineage_recorded(exp, stage, &dir.join(INPUTS_FILE))
}

/// [`inputs_match`] over the inputs a stage trains on: for a distill its `data` and not its
/// `validation` (scoring held-out histories never changes the weights, so another validation
/// set rescores the model rather than training it again).
pub(super) fn training_inputs_match(exp: &Experiment, stage: &Stage, dir: &Path) -> bool {
    let Stage::Distill(d) = stage else {
        return inputs_match(exp, stage, dir);
    };
    let trained_on = |v: serde_json::Value| match v {
        serde_json::Value::Array(a) => a
            .into_iter()
            .filter(|e| e["stage"]["name"] == d.data.as_str())
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    let want = trained_on(lineage(exp, stage));
    want.is_empty()
        || read_json::<serde_json::Value>(&dir.join(INPUTS_FILE))
            .ok()
            .map(trained_on)
            == Some(want)
}

/// Whether `file` records the stage's current [`lineage`] (always, for a stage reading none).
fn lineage_recorded(exp: &Experiment, stage: &Stage, file: &Path) -> bool {
    let want = lineage(exp, stage);
    want.as_array().is_some_and(|a| a.is_empty())
        || read_json::<serde_json::Value>(file).ok() == Some(want)
}

/// The record of [`lineage`] beside one reincarnate run (`METHOD/seed-S.inputs.json`): a run
/// whose teacher stage was retrained under another spec is run again.
pub(super) fn run_inputs_file(
    dir: &Path,
    method: crate::reincarnation::Method,
    seed: u64,
) -> std::path::PathBuf {
    dir.join(method.name())
        .join(format!("seed-{seed}.inputs.json"))
}

fn run_inputs_match(
    exp: &Experiment,
    stage: &Stage,
    dir: &Path,
    method: crate::reincarnation::Method,
    seed: u64,
) -> bool {
    lineage_recorded(exp, stage, &run_inputs_file(dir, method, seed))
}

/// Whether `item` of `stage` (in `dir`) is done under the stage's current spec (and, for a
/// whole-stage unit, the current specs of the stages it reads). `teacher` is the resolved
/// teacher of a reincarnate stage.
pub(super) fn item_done(
    exp: &Experiment,
    stage: &Stage,
    item: Item,
    dir: &Path,
    teacher: Option<&str>,
) -> Result<bool> {
    Ok(match (stage, item) {
        (_, Item::Whole) => {
            stage_file_matches(stage, dir)
                && inputs_match(exp, stage, dir)
                && dir.join("result.json").exists()
        }
        (Stage::Train(t), Item::Seed(seed)) => {
            seed_record(dir, seed, &super::train_spec_json(t)?)?.is_some()
        }
        (Stage::Reincarnate(r), Item::Run(method, seed)) => {
            let teacher = teacher.unwrap_or(&r.teacher);
            crate::reincarnation::stage::run_done(r, teacher, method, seed, dir)?
                && run_inputs_match(exp, stage, dir, method, seed)
        }
        (Stage::Collect(c), Item::Collect(shard)) => {
            stage_file_matches(stage, dir)
                && (0..c.runs)
                    .filter(|r| r % shard.count == shard.index)
                    .all(|r| {
                        // A scratch folder left beside a finished run is cleaned by rerunning.
                        crate::collect::run_folder(dir, r)
                            .join("dataset.json")
                            .exists()
                            && !crate::collect::scratch_folder(dir, r).exists()
                    })
        }
        _ => false,
    })
}

/// The items of `stage` not done yet, over the whole grid (one slice).
pub(super) fn missing_items(
    exp: &Experiment,
    stage: &Stage,
    dir: &Path,
    teacher: Option<&str>,
) -> Result<Vec<Item>> {
    let mut missing = Vec::new();
    for item in items(stage, exp.seed, 1) {
        if !item_done(exp, stage, item, dir, teacher)? {
            missing.push(item);
        }
    }
    Ok(missing)
}

/// Which slice a process is: `i/n`, or `auto` (the index and count from Slurm's
/// `SLURM_ARRAY_TASK_ID`/`SLURM_ARRAY_TASK_COUNT`), or `auto/n` (the index from
/// `SLURM_ARRAY_TASK_ID` or a Kubernetes indexed Job's `JOB_COMPLETION_INDEX`, the count `n`:
/// what a resubmitted single task of an array needs, whose own task count is 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardArg {
    Fixed(Shard),
    Auto(Option<usize>),
}

impl std::str::FromStr for ShardArg {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.strip_prefix("auto") {
            Some("") => Ok(ShardArg::Auto(None)),
            Some(rest) => {
                let n = rest
                    .strip_prefix('/')
                    .and_then(|n| n.trim().parse::<usize>().ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "--shard {s}: expected auto, auto/n (n ≥ 1) or i/n, e.g. --shard auto/4"
                        ))
                    })?;
                Ok(ShardArg::Auto(Some(n)))
            }
            None => Ok(ShardArg::Fixed(s.parse()?)),
        }
    }
}

impl ShardArg {
    /// The slice, reading the scheduler's variables through `var` for `auto`.
    pub fn resolve(&self, var: &dyn Fn(&str) -> Option<String>) -> Result<Shard> {
        let number = |name: &str| -> Result<Option<usize>> {
            match var(name) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| {
                    Error::Config(format!(
                        "--shard auto: ${name} is `{v}`, expected a whole number"
                    ))
                }),
            }
        };
        let (index, count) = match *self {
            ShardArg::Fixed(s) => return Ok(s),
            ShardArg::Auto(count) => {
                let index = match number("SLURM_ARRAY_TASK_ID")? {
                    Some(i) => i,
                    None => number("JOB_COMPLETION_INDEX")?.ok_or_else(|| {
                        Error::Config(
                            "--shard auto: neither $SLURM_ARRAY_TASK_ID (a Slurm job array) nor $JOB_COMPLETION_INDEX (a Kubernetes indexed Job) is set; give --shard i/n".into(),
                        )
                    })?,
                };
                let count = match count {
                    Some(n) => n,
                    None => number("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                        Error::Config(
                            "--shard auto: $SLURM_ARRAY_TASK_COUNT is not set; give the slice count as --shard auto/n".into(),
                        )
                    })?,
                };
                (index, count)
            }
        };
        if index >= count {
            return Err(Error::Config(format!(
                "--shard: task index {index} is not below the slice count {count} (an array resubmitted as one task needs --shard auto/n with the original n)"
            )));
        }
        Ok(Shard { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::vars as env;

    #[test]
    fn shard_flags_read_the_schedulers_variables() {
        let fixed: ShardArg = "1/4".parse().unwrap();
        assert_eq!(
            fixed.resolve(&env(&[])).unwrap(),
            Shard { index: 1, count: 4 }
        );
        let auto: ShardArg = "auto".parse().unwrap();
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        assert_eq!(auto.resolve(&slurm).unwrap(), Shard { index: 2, count: 3 });
        // A task resubmitted alone: its array has one task, the slice count comes from the flag.
        let alone = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "1"),
        ]);
        let err = auto.resolve(&alone).unwrap_err().to_string();
        assert!(err.contains("auto/n"), "{err}");
        let auto4: ShardArg = "auto/4".parse().unwrap();
        assert_eq!(auto4.resolve(&alone).unwrap(), Shard { index: 2, count: 4 });
        let k8s = env(&[("JOB_COMPLETION_INDEX", "3")]);
        assert_eq!(auto4.resolve(&k8s).unwrap(), Shard { index: 3, count: 4 });
        assert!(auto
            .resolve(&k8s)
            .unwrap_err()
            .to_string()
            .contains("auto/n"));
        let none = auto4.resolve(&env(&[])).unwrap_err().to_string();
        assert!(none.contains("JOB_COMPLETION_INDEX"), "{none}");
        let bad = env(&[("SLURM_ARRAY_TASK_ID", "x")]);
        assert!(auto4.resolve(&bad).unwrap_err().to_string().contains("`x`"));
        for s in ["auto/0", "auto/x", "autox", "4/4", "1/0"] {
            assert!(s.parse::<ShardArg>().is_err(), "{s}");
        }
    }

    #[test]
    fn grids_split_into_slices_by_index() {
        let exp: Experiment = toml::from_str(
            r#"
seed = 7
[[stage]]
name = "t"
kind = "train"
env = "cartpole"
algo = "dqn"
seeds = [0, 1, 2]
[[stage]]
name = "r"
kind = "reincarnate"
env = "cartpole"
teacher = "stage:t"
methods = ["qdagger", "tabula_rasa"]
seeds = [3, 4]
[[stage]]
name = "c"
kind = "collect"
env = "dark_room"
runs = 3
steps = 10
[[stage]]
name = "s"
kind = "reincarnation_summary"
stages = ["r"]
"#,
        )
        .unwrap();
        let [t, r, c, s] = &exp.stages[..] else {
            panic!("four stages")
        };
        assert_eq!(
            items(t, 7, 4),
            vec![Item::Seed(0), Item::Seed(1), Item::Seed(2)]
        );
        let runs = items(r, 7, 4);
        assert_eq!(runs.len(), 4);
        assert_eq!(runs[1], Item::Run(Method::Qdagger, 4));
        assert_eq!(runs[2], Item::Run(Method::TabulaRasa, 3));
        // Three runs over four slices: slices 0, 1, 2 collect one run each.
        assert_eq!(items(c, 7, 4).len(), 3);
        assert_eq!(
            items(c, 7, 1),
            vec![Item::Collect(Shard { index: 0, count: 1 })]
        );
        assert!(items(s, 7, 4).is_empty());
        assert_eq!(
            (0..6).map(|k| owner(0, k, 4)).collect::<Vec<_>>(),
            [0, 1, 2, 3, 0, 1]
        );
        // The second stage's grid starts at slice 1; a one-unit third stage sits on slice 2.
        assert_eq!(
            (0..6).map(|k| owner(1, k, 4)).collect::<Vec<_>>(),
            [1, 2, 3, 0, 1, 2]
        );
        assert_eq!(owners(2, 1, 4), [2]);
        assert_eq!(owners(3, 2, 4), [0, 3]);
        assert_eq!(owners(1, 9, 4), [0, 1, 2, 3]);
        let names = |v: Vec<&Stage>| v.iter().map(|s| s.name().to_string()).collect::<Vec<_>>();
        assert_eq!(names(inputs(&exp, r)), ["t"]);
        assert_eq!(names(inputs(&exp, s)), ["r"]);
        assert!(inputs(&exp, t).is_empty());
    }
}
