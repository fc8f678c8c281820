//! `reincarnate collect`: many source runs of one algorithm over a task family, every
//! transition logged — the learning histories that algorithm distillation trains on.
//!
//! Layout: run `r` trains a fresh agent (seed derived from the collection seed and `r`) on task
//! [`task_of_run`]`(tasks, runs, r)` — the runs cycle through the task list when there are at
//! least as many runs as tasks, and are spread evenly over it when there are fewer — and logs
//! itself into `OUT/runs/run-RRRRR/`, a complete one-run dataset folder whose `dataset.json` is
//! written last. After every finished run the top-level `OUT/dataset.json` is rebuilt from the
//! finished run folders (their files referenced as `runs/run-RRRRR/data/...`), atomically. So a
//! collection killed at any moment leaves a readable dataset of its finished runs; the
//! interrupted run has no manifest and is simply redone by the next invocation, which skips
//! finished runs.
//!
//! `--shard i/n` runs only the runs `r ≡ i (mod n)`: any scheduler (Slurm array, Kubernetes
//! indexed Job, Ray) can fill one dataset folder on shared storage, or separate folders that
//! `reincarnate dataset merge` combines. Each run is collected under its folder's lock (a
//! process that finds a run locked leaves it to its holder) and the manifest is rebuilt under
//! its own, so concurrent writers end with a manifest that lists every finished run once.

use crate::envs::{EnvRef, TaskFamily, TaskSet};
use crate::error::{Error, Result};
use crate::history::{Manifest, RunEntry};
use crate::train::{run_train, LoopConfig, TrainSpec};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A collection job (`collect` flags or a `kind = "collect"` stage).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CollectSpec {
    pub env: EnvRef,
    pub algo: String,
    #[serde(default)]
    pub agent: toml::Table,
    /// Which tasks the runs are spread over ([`task_of_run`]).
    #[serde(default = "d_tasks")]
    pub tasks: TaskSet,
    /// Number of source runs (learning histories).
    pub runs: usize,
    /// Environment steps per run.
    pub steps: u64,
    /// Runs in parallel (default: all cores).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Teacher mode: roll out this fixed policy (a checkpoint folder) instead of training
    /// `algo`; actions are greedy, or uniformly random with probability `epsilon`.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    #[serde(default)]
    pub epsilon: f64,
}

impl CollectSpec {
    /// The spec the `collect` flags give. `--set agent.KEY=VALUE` configures the source agent,
    /// `--set env.KEY=VALUE` the environment; other keys are an error.
    #[allow(clippy::too_many_arguments)]
    pub fn from_flags(
        env: &str,
        algo: &str,
        tasks: TaskSet,
        runs: usize,
        steps: u64,
        threads: Option<usize>,
        policy: Option<PathBuf>,
        epsilon: f64,
        overrides: &[String],
    ) -> Result<CollectSpec> {
        let (mut agent_sets, mut env_sets) = (Vec::new(), Vec::new());
        for o in overrides {
            if let Some(rest) = o.strip_prefix("agent.") {
                agent_sets.push(rest.to_string());
            } else if let Some(rest) = o.strip_prefix("env.") {
                env_sets.push(rest.to_string());
            } else {
                return Err(Error::Config(format!(
                    "--set {o}: collect takes agent.* and env.* overrides (e.g. --set agent.learning_rate=1e-3)"
                )));
            }
        }
        let mut agent = toml::Table::new();
        crate::config::apply_overrides(&mut agent, &agent_sets)?;
        let env = if env_sets.is_empty() {
            EnvRef::Id(env.to_string())
        } else {
            EnvRef::Config(crate::envs::EnvConfig::new(env).with_overrides(&env_sets)?)
        };
        let policy = match policy {
            Some(p) => Some(crate::hub::local_folder(&p.to_string_lossy(), false)?),
            None => None,
        };
        Ok(CollectSpec {
            env,
            algo: algo.to_string(),
            agent,
            tasks,
            runs,
            steps,
            threads,
            policy,
            epsilon,
        })
    }
}

fn d_tasks() -> TaskSet {
    TaskSet::Train
}

/// `i/n`: this process does runs `r` with `r % n == i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "--shard {s}: expected i/n with 0 ≤ i < n, e.g. --shard 0/4"
            ))
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// What a collection did.
#[derive(Clone, Debug, Serialize)]
pub struct CollectSummary {
    pub out: PathBuf,
    pub runs_done_now: usize,
    pub runs_skipped: usize,
    pub runs_in_dataset: usize,
}

impl std::fmt::Display for CollectSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} runs collected now, {} finished earlier; the dataset holds {} runs",
            self.out.display(),
            self.runs_done_now,
            self.runs_skipped,
            self.runs_in_dataset
        )
    }
}

pub fn run_folder(out: &Path, run: usize) -> PathBuf {
    out.join("runs").join(format!("run-{run:05}"))
}

/// The checkpoint folder of run `run` while it is being collected.
pub fn scratch_folder(out: &Path, run: usize) -> PathBuf {
    out.join("runs").join(format!(".checkpoint-{run:05}"))
}

/// Runs the collection (or the remaining part of an interrupted one).
pub fn collect(
    spec: &CollectSpec,
    seed: u64,
    shard: Option<Shard>,
    out: &Path,
    device: &candle_core::Device,
) -> Result<CollectSummary> {
    if spec.runs == 0 || spec.steps == 0 {
        return Err(Error::Config(
            "collect needs --runs and --steps of at least 1".into(),
        ));
    }
    use crate::limits::{check_count, MAX_ENV_STEPS};
    check_count(
        "--runs × --steps",
        (spec.runs as u64).saturating_mul(spec.steps),
        MAX_ENV_STEPS,
        "a collection that long never ends in practice",
    )?;
    let family = TaskFamily::new(&spec.env.config())?;
    let tasks = family.tasks(spec.tasks);
    let shard = shard.unwrap_or(Shard { index: 0, count: 1 });
    crate::fs::create_dir_all(&out.join("runs"))?;
    let mine: Vec<usize> = (0..spec.runs)
        .filter(|r| r % shard.count == shard.index)
        .collect();
    let (done, todo): (Vec<usize>, Vec<usize>) = mine
        .into_iter()
        .partition(|&r| run_folder(out, r).join("dataset.json").exists());
    // A run killed after its data was final but before its scratch was removed leaves the
    // scratch behind; finished runs never need theirs.
    for &r in &done {
        crate::fs::remove_dir_if_present(&scratch_folder(out, r))?;
    }
    let threads = spec
        .threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let bar = crate::report::progress_bar(
        todo.len() as u64,
        &format!("collect {} {}", spec.algo, family.spec().id()),
    );
    let manifest_lock = Mutex::new(());
    let next = Mutex::new(todo.clone().into_iter());
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    // Workers take the next unfinished run until none is left or one has failed.
    let next_run = || -> Option<usize> {
        let failed = first_error.lock().map(|e| e.is_some()).unwrap_or(true);
        if failed {
            return None;
        }
        next.lock().ok().and_then(|mut it| it.next())
    };
    std::thread::scope(|scope| {
        for _ in 0..threads.min(todo.len()).max(1) {
            scope.spawn(|| {
                while let Some(r) = next_run() {
                    let result = collect_one(spec, &tasks, seed, r, out, device).and_then(|_| {
                        let _guard = manifest_lock.lock();
                        rebuild_manifest(out)
                    });
                    bar.inc(1);
                    if let Err(e) = result {
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let total = rebuild_manifest(out)?;
    Ok(CollectSummary {
        out: out.to_path_buf(),
        runs_done_now: todo.len(),
        runs_skipped: done.len(),
        runs_in_dataset: total,
    })
}

/// The task of run `r` of `runs` over the (sorted) task list `tasks`: with at least as many runs
/// as tasks the runs cycle through the list (run `r` on `tasks[r mod n]`, so every task gets
/// ⌊runs / n⌋ or one more); with fewer, they are spread evenly over it (`tasks[⌊r·n / runs⌋]`),
/// so that a subset of a large family (Key-to-Door's 6,561 (key, door) pairs are ordered by
/// door) samples all of it rather than its first indices.
pub fn task_of_run(tasks: &[usize], runs: usize, r: usize) -> usize {
    let n = tasks.len();
    if runs >= n {
        tasks[r % n]
    } else {
        tasks[r * n / runs]
    }
}

fn collect_one(
    spec: &CollectSpec,
    tasks: &[usize],
    seed: u64,
    r: usize,
    out: &Path,
    device: &candle_core::Device,
) -> Result<()> {
    let folder = run_folder(out, r);
    // Another process (a duplicated shard) on this run: leave it to that one.
    let Ok(_lock) = crate::fs::FolderLock::acquire(&folder) else {
        tracing::info!(
            run = r,
            "run is being collected by another process; skipped"
        );
        return Ok(());
    };
    if folder.join("dataset.json").exists() {
        return Ok(());
    }
    // A folder without a manifest is an interrupted run: start it again.
    if folder.exists() {
        std::fs::remove_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
    }
    if let Some(policy) = &spec.policy {
        let seed = crate::rng::derive_seed(seed, r as u64);
        return rollout_one(
            spec,
            policy,
            task_of_run(tasks, spec.runs, r),
            seed,
            r as u32,
            &folder,
            device,
        );
    }
    let scratch = scratch_folder(out, r);
    let train_loop = LoopConfig {
        steps: spec.steps,
        stop_at: None,
        task: Some(task_of_run(tasks, spec.runs, r)),
        eval_interval: 0,
        eval_episodes: 1,
        eval_epsilon: 0.0,
        checkpoint_interval: 0,
        log_interval: spec.steps.max(1),
        progress: false,
        log_history: Some(folder),
        history_run: r as u32,
        history_split: Some(spec.tasks.as_str().to_string()),
        allow_long: false,
        skip_nonfinite: 0,
    };
    let job = TrainSpec {
        env: spec.env.clone(),
        algo: spec.algo.clone(),
        agent: spec.agent.clone(),
        train_loop,
    };
    let result = run_train(
        &job,
        crate::rng::derive_seed(seed, r as u64),
        device,
        &scratch,
        false,
    );
    let _ = std::fs::remove_dir_all(&scratch);
    result.map(|_| ())
}

/// Rewrites `OUT/dataset.json` from every finished run folder; returns the number of runs.
/// Processes that collect into one folder (shards) take turns: each rebuild reads the run
/// folders under the manifest's lock, so the last one lists every finished run.
pub fn rebuild_manifest(out: &Path) -> Result<usize> {
    let _lock = crate::fs::FolderLock::acquire_blocking(&out.join("dataset.json"))?;
    // Manifest temp files are written only under this lock: any left are a killed writer's.
    for e in std::fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".dataset.json.tmp-") {
            std::fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), err))?;
        }
    }
    let runs_dir = out.join("runs");
    let mut names: Vec<String> = std::fs::read_dir(&runs_dir)
        .map_err(|e| Error::io(&runs_dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("run-"))
        .collect();
    names.sort();
    let mut top: Option<Manifest> = None;
    for name in names {
        let folder = runs_dir.join(&name);
        if !folder.join("dataset.json").exists() {
            continue;
        }
        let m = Manifest::load(&folder)?;
        let top = top.get_or_insert_with(|| {
            let mut t = m.clone();
            t.runs.clear();
            t.tasks.clear();
            t
        });
        if top.env != m.env || top.source.name != m.source.name {
            return Err(Error::data(
                folder.join("dataset.json"),
                "a run of another environment or algorithm is in this collection",
            ));
        }
        for t in &m.tasks {
            if !top.tasks.iter().any(|x| x.index == t.index) {
                top.tasks.push(t.clone());
            }
        }
        for run in &m.runs {
            top.runs.push(RunEntry {
                file: format!("runs/{name}/{}", run.file),
                summary: run.summary.clone(),
            });
        }
    }
    let Some(mut top) = top else { return Ok(0) };
    top.tasks.sort_by_key(|t| t.index);
    let n = top.runs.len();
    top.save(out)?;
    Ok(n)
}

/// Teacher data: `spec.steps` steps of a fixed policy on `task`, logged as run `run`.
fn rollout_one(
    spec: &CollectSpec,
    policy: &Path,
    task: usize,
    seed: u64,
    run: u32,
    folder: &Path,
    device: &candle_core::Device,
) -> Result<()> {
    use crate::eval::ActionBuf;
    use crate::history::{DatasetWriter, SourceAlgo, TaskEntry, TransitionSchema};
    let data = crate::checkpoint::load_weights(policy)?;
    let mut agent = crate::agents::from_checkpoint(&data, device)?;
    let family = TaskFamily::new(&spec.env.config())?;
    let trained: crate::envs::EnvSpec = serde_json::from_value(data.config["env"].clone())
        .map_err(|e| {
            Error::data(
                policy.join("config.json"),
                format!("`env` is not an env spec: {e}"),
            )
        })?;
    let env_spec = family.spec().clone();
    if trained.observation_space != env_spec.observation_space
        || trained.action_space != env_spec.action_space
    {
        return Err(Error::Config(format!(
            "{} was trained on `{}` (observation {}, action {}), which does not fit `{}` (observation {}, action {})",
            policy.display(), trained.id(), trained.observation_space, trained.action_space,
            env_spec.id(), env_spec.observation_space, env_spec.action_space
        )));
    }
    let source = SourceAlgo {
        name: format!("policy:{}", agent.algorithm()),
        config: serde_json::json!({ "checkpoint": policy, "epsilon": spec.epsilon, "agent": data.config.get("agent") }),
    };
    let tasks = vec![TaskEntry {
        index: task as u32,
        params: family.describe_task(task),
    }];
    let manifest = crate::history::Manifest::new(
        env_spec.clone(),
        TransitionSchema::for_env(&env_spec),
        tasks,
        "teacher",
        source,
    );
    let mut logger =
        crate::train::HistoryLogger::new(DatasetWriter::create(folder, manifest)?, run, task);
    let mut venv = crate::envs::VecEnv::new(&family, &[task], seed)?;
    venv.reset();
    let mut rng = crate::rng::Rng::seed_from_u64(seed ^ 0x07EA_C4E5);
    let mut actions = ActionBuf::for_space(&env_spec.action_space, 1);
    let mut random = crate::eval::RandomPolicy::new(env_spec.action_space.clone(), seed);
    let mut obs = venv.obs().to_vec();
    for _ in 0..spec.steps {
        if spec.epsilon > 0.0 && rng.bernoulli(spec.epsilon) {
            crate::eval::Policy::act(&mut random, &obs, &mut actions)?;
        } else {
            agent.act(&obs, false, u64::MAX, &mut actions)?;
        }
        venv.step(actions.as_batch())?;
        logger.log(&obs, &actions, None, &venv)?;
        obs.copy_from_slice(venv.obs());
    }
    logger.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::task_of_run;

    #[test]
    fn runs_cycle_through_few_tasks_and_spread_over_many() {
        let tasks = [3, 5, 8];
        let cycled: Vec<usize> = (0..7).map(|r| task_of_run(&tasks, 7, r)).collect();
        assert_eq!(cycled, [3, 5, 8, 3, 5, 8, 3]);
        // 4 runs over 10 tasks: every part of the list, not its first four.
        let tasks: Vec<usize> = (100..110).collect();
        let spread: Vec<usize> = (0..4).map(|r| task_of_run(&tasks, 4, r)).collect();
        assert_eq!(spread, [100, 102, 105, 107]);
        // Key-to-Door's 6,495 training tasks (door = task / 81), 4,000 runs: each door row gets
        // its share and no task is used twice.
        let tasks: Vec<usize> = (0..6495).collect();
        let chosen: Vec<usize> = (0..4000).map(|r| task_of_run(&tasks, 4000, r)).collect();
        assert!(chosen.windows(2).all(|w| w[0] < w[1]));
        for row in 0..9 {
            let in_row = chosen.iter().filter(|&&t| t / 81 / 9 == row).count();
            assert!(
                (400..=500).contains(&in_row),
                "door row {row}: {in_row} runs"
            );
        }
    }
}
