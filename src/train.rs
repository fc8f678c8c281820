//! The online training loop every agent trains in (CleanRL-style, in plain sight):
//! act → step → observe → update → log → evaluate → checkpoint, with exact resume.
//!
//! Outputs go to the checkpoint folder (`--out`): the checkpoint files, `metrics.jsonl`,
//! `eval.json` (the last evaluation) and `learning_curve.svg`.
//!
//! Exact resume: the checkpoint's `trainer_state.json` holds the loop counters, the training
//! environment's full snapshot and the agent's RNG/schedule state; `optimizer.safetensors` and
//! `replay.safetensors` hold the rest. On CPU a resumed run's final weights equal an
//! uninterrupted run's bit for bit (tested in `tests/train_resume.rs`).

use crate::agents::{Agent, Experience, Metrics};
use crate::checkpoint::{self, CheckpointData};
use crate::envs::{EnvConfig, TaskFamily, TaskSet, VecEnv};
use crate::error::{Error, Result};
use crate::eval::{evaluate_tasks, ActionBuf, EvalReport, Policy};
use crate::history::{
    ActionRef, DatasetWriter, Manifest, PolicyKind, SourceAlgo, TaskEntry, TransitionRef,
    TransitionSchema,
};
use crate::report::metrics::{read_series, MetricsLog};
use crate::report::plot::{line_plot, smooth, Series};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Loop settings (the agent's own hyperparameters live in its config).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    /// Environment steps to train for: the run's budget, which schedules given as fractions
    /// (`{ fraction = 0.5 }`) span.
    #[serde(default = "d_steps")]
    pub steps: u64,
    /// Stop at this step with a resumable checkpoint, as a job whose time ran out would
    /// (`--resume` continues it); the schedules still span `steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_at: Option<u64>,
    /// Task index to train on (default: the family's first training task).
    #[serde(default)]
    pub task: Option<usize>,
    /// Greedy evaluation every this many steps (0: only at the end).
    #[serde(default = "d_eval_interval")]
    pub eval_interval: u64,
    #[serde(default = "d_eval_episodes")]
    pub eval_episodes: usize,
    /// Evaluation ε: each greedy action is replaced by a uniformly random one with this
    /// probability (discrete actions; 0, the default, is purely greedy). DQN's Atari
    /// evaluations use 0.05 (Mnih et al. 2015): a purely greedy agent that never presses FIRE
    /// waits out the 27,000-step limit.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub eval_epsilon: f64,
    /// Checkpoint every this many steps (0: only at the end).
    #[serde(default = "d_checkpoint_interval")]
    pub checkpoint_interval: u64,
    /// Train metrics are logged every this many steps.
    #[serde(default = "d_log_interval")]
    pub log_interval: u64,
    /// Show a progress bar (off in tests).
    #[serde(default = "d_true")]
    pub progress: bool,
    /// Log every transition of the run (its whole learning history) to this dataset folder,
    /// in the Parquet transition schema (`train --log-history datasets/NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_history: Option<PathBuf>,
    /// Updates whose loss or gradient norm is NaN or infinite that may be skipped in a row
    /// (DQN and SAC families) before the run stops; 0 (default): stop at the first, keeping the
    /// last checkpoint.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub skip_nonfinite: u64,
    /// Allow `steps` beyond [`crate::limits::MAX_ENV_STEPS`] (10^10), a budget that runs for
    /// months or years.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_long: bool,
    /// Run index written into the logged history (`collect` numbers its runs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub history_run: u32,
    /// The task split the logged history's manifest names (default `train`; `collect` writes
    /// the task set it ran on, so a collection on held-out tasks says `test`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_split: Option<String>,
}

fn is_zero_f64(x: &f64) -> bool {
    *x == 0.0
}

fn is_zero(x: &u32) -> bool {
    *x == 0
}

fn is_zero_u64(x: &u64) -> bool {
    *x == 0
}

fn is_false(x: &bool) -> bool {
    !*x
}

fn d_steps() -> u64 {
    100_000
}
fn d_eval_interval() -> u64 {
    10_000
}
fn d_eval_episodes() -> usize {
    10
}
fn d_checkpoint_interval() -> u64 {
    50_000
}
fn d_log_interval() -> u64 {
    1_000
}
fn d_true() -> bool {
    true
}

impl Default for LoopConfig {
    fn default() -> Self {
        crate::config::from_table(toml::Table::new(), "defaults").expect("defaults deserialise")
    }
}

impl LoopConfig {
    /// Limits checked before a run starts: a budget of years, or an evaluation that never ends,
    /// is refused with a message.
    pub fn validate(&self) -> Result<()> {
        use crate::limits::{check_count, MAX_ENV_STEPS, MAX_EPISODES};
        if self.steps == 0 || self.eval_episodes == 0 {
            return Err(Error::Config(format!(
                "loop.steps and loop.eval_episodes must be at least 1, found {} and {}",
                self.steps, self.eval_episodes
            )));
        }
        if !(0.0..=1.0).contains(&self.eval_epsilon) {
            return Err(Error::Config(format!(
                "loop.eval_epsilon must be in [0, 1], found {}",
                self.eval_epsilon
            )));
        }
        if !self.allow_long {
            check_count(
                "loop.steps",
                self.steps,
                MAX_ENV_STEPS,
                "months to years of training at this platform's speed; set loop.allow_long = true to run it anyway",
            )?;
        }
        check_count(
            "loop.eval_episodes",
            self.eval_episodes as u64,
            MAX_EPISODES,
            "an evaluation that long never ends in practice",
        )
    }
}

/// What a finished (or stopped) training run reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainSummary {
    pub step: u64,
    pub episodes: u64,
    pub final_eval: Option<EvalReport>,
    pub out: PathBuf,
    pub steps_per_second: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoopState {
    step: u64,
    episodes: u64,
    evals: u64,
    venv: serde_json::Value,
    /// The latest update's metrics: a resumed run logs them at its next log step, as the
    /// uninterrupted run does.
    #[serde(default)]
    last_train: Option<Metrics>,
    /// The budget the agent's schedules were resolved against when the run started: a resumed
    /// run (even one extended with a larger `--steps`) keeps them.
    budget: u64,
}

/// `trainer_state.json` of a training checkpoint: the loop's state, the agent's own
/// (decoded strictly by the agent), and, for people, the counters and loop settings.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainerState {
    step: u64,
    episodes: u64,
    seed: u64,
    #[serde(rename = "loop")]
    loop_state: LoopState,
    agent: serde_json::Value,
    loop_config: LoopConfig,
}

/// A resume continues the run its checkpoint holds: the algorithm, agent config and environment
/// of the checkpoint's `config.json` must be the ones the command line builds (at the run's
/// recorded budget), or the resumed run would silently be another one; only the learning
/// rates and gradient clipping may change ([`RESUME_TUNABLE`]).
fn same_run(saved: &serde_json::Value, built: &serde_json::Value, file: &Path) -> Result<()> {
    for key in ["algorithm", "env", "agent"] {
        if let Some(path) =
            checkpoint::first_difference(saved.get(key), built.get(key), key, RESUME_TUNABLE)
        {
            return Err(Error::data(
                file,
                format!(
                    "`{path}` differs from the configuration this command builds ({} in the checkpoint, {} here): resume with the flags and config the run started with",
                    checkpoint::show_at(saved, &path),
                    checkpoint::show_at(built, &path)
                ),
            ));
        }
    }
    Ok(())
}

/// Agent settings a resume may change: the learning rates and gradient clipping, which a run
/// stopped by a non-finite loss is resumed with lower.
const RESUME_TUNABLE: &[&str] = &[
    "learning_rate",
    "actor_lr",
    "critic_lr",
    "temperature_lr",
    "max_grad_norm",
];

/// `loop.FIELD` of the checkpoint in `out` (`None` without a trainer state, or for a checkpoint
/// written before the field was recorded).
fn recorded(out: &Path, field: &str) -> Result<Option<u64>> {
    let path = out.join(checkpoint::TRAINER_STATE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let v: serde_json::Value = crate::fs::read_json(&path)?;
    Ok(v["loop"][field].as_u64())
}

/// The budget a checkpoint's run was started with (`None` for a checkpoint without a trainer
/// state).
pub fn recorded_budget(out: &Path) -> Result<Option<u64>> {
    recorded(out, "budget")
}

/// Logs the transitions of a one-environment [`VecEnv`] as one run of a dataset, numbering
/// episodes and steps as they go (the training loop's `--log-history`, `collect`'s teacher data).
pub struct HistoryLogger {
    writer: DatasetWriter,
    run: u32,
    task: u32,
    episode: u32,
    step: u32,
}

impl HistoryLogger {
    pub fn new(writer: DatasetWriter, run: u32, task: usize) -> Self {
        Self {
            writer,
            run,
            task: task as u32,
            episode: 0,
            step: 0,
        }
    }

    /// Records the step just taken: `obs` is the observation the actions were chosen in,
    /// `policy` the probabilities they were sampled from (where the schema has that column).
    pub fn log(
        &mut self,
        obs: &[f32],
        actions: &ActionBuf,
        policy: Option<&[f32]>,
        venv: &VecEnv,
    ) -> Result<()> {
        let action = match actions {
            ActionBuf::Discrete(a) => ActionRef::Discrete(a[0] as i64),
            ActionBuf::Continuous(a) => ActionRef::Continuous(a),
        };
        self.writer.push(&TransitionRef {
            run: self.run,
            task: self.task,
            episode: self.episode,
            step: self.step,
            obs,
            action,
            reward: venv.rewards()[0],
            terminated: venv.terminated()[0],
            truncated: venv.truncated()[0],
            next_obs: venv.next_obs(),
            policy,
        })?;
        self.step += 1;
        if !venv.finished().is_empty() {
            self.episode += 1;
            self.step = 0;
        }
        Ok(())
    }

    pub fn finish(self) -> Result<crate::history::Manifest> {
        self.writer.finish()
    }
}

/// The agent acting greedily, as a [`Policy`] for evaluation (an evaluation ε wraps it in
/// [`crate::eval::WithEpsilon`]).
pub struct GreedyPolicy<'a> {
    pub agent: &'a mut dyn Agent,
    pub step: u64,
}

impl<'a> GreedyPolicy<'a> {
    pub fn new(agent: &'a mut dyn Agent, step: u64) -> Self {
        Self { agent, step }
    }
}

impl Policy for GreedyPolicy<'_> {
    fn name(&self) -> String {
        format!("{} (greedy)", self.agent.algorithm())
    }
    fn begin(&mut self, n_envs: usize) -> Result<()> {
        self.agent.eval_begin(n_envs);
        Ok(())
    }
    fn act(&mut self, obs: &[f32], actions: &mut ActionBuf) -> Result<()> {
        self.agent.act(obs, false, self.step, actions)
    }
    fn observe(&mut self, feedback: &crate::eval::Feedback<'_>) -> Result<()> {
        self.agent.eval_observe(feedback);
        Ok(())
    }
}

/// Greedy evaluation on fresh environments seeded by the run seed and the step, so evaluations
/// never disturb training and an interrupted run's extra evaluation shifts nothing.
fn eval_now(
    agent: &mut dyn Agent,
    family: &TaskFamily,
    task: usize,
    cfg: &LoopConfig,
    seed: u64,
    step: u64,
) -> Result<EvalReport> {
    let eval_seed = crate::rng::derive_seed(seed ^ 0xE7A1, step);
    let space = family.spec().action_space.clone();
    let mut policy = crate::eval::WithEpsilon::new(
        GreedyPolicy::new(agent, step),
        cfg.eval_epsilon,
        &space,
        eval_seed,
    )?;
    evaluate_tasks(
        family,
        &[task],
        "train",
        cfg.eval_episodes,
        eval_seed,
        &mut policy,
    )
}

/// Trains `agent` on `env` and writes everything under `out`. With `resume`, continues from the
/// checkpoint in `out`.
pub fn train(
    agent: &mut dyn Agent,
    env: &EnvConfig,
    cfg: &LoopConfig,
    seed: u64,
    out: &Path,
    resume: bool,
) -> Result<TrainSummary> {
    cfg.validate()?;
    let family = TaskFamily::new(env)?;
    let task = cfg.task.unwrap_or_else(|| family.tasks(TaskSet::Train)[0]);
    if task >= family.num_tasks() {
        return Err(Error::Config(format!(
            "task {task} does not exist in `{}` (0..{})",
            env.id,
            family.num_tasks()
        )));
    }
    let mut venv = VecEnv::new(&family, &[task], seed)?;
    venv.reset();
    let (mut step, mut episodes, mut evals) = (0u64, 0u64, 0u64);
    let mut resumed_last_train: Option<Metrics> = None;
    let mut budget = cfg.steps;
    if resume {
        let data = checkpoint::load(out)?;
        let ts = data.trainer_state.clone().ok_or_else(|| {
            Error::data(
                out,
                "no trainer_state.json: this checkpoint holds weights only and cannot be resumed",
            )
        })?;
        let ts_path = out.join(checkpoint::TRAINER_STATE_FILE);
        let state: TrainerState = checkpoint::decode_complete(&ts, &ts_path, "")?;
        let st = state.loop_state;
        let bad = |m: String| Err(Error::data(&ts_path, m));
        if (state.step, state.episodes) != (st.step, st.episodes) {
            return bad(format!(
                "step {} and episodes {} disagree with loop.step {} and loop.episodes {}",
                state.step, state.episodes, st.step, st.episodes
            ));
        }
        if state.seed != seed {
            return bad(format!(
                "the run was started with seed {}, this command has seed {seed}: resume with --seed {}",
                state.seed, state.seed
            ));
        }
        if state.agent.is_null() && data.optimizer.is_some() {
            return bad(
                "agent: null, but the checkpoint holds optimizer.safetensors: the agent's state (optimiser steps, schedules, replay position) is missing".into(),
            );
        }
        same_run(
            &data.config,
            &agent.save(false)?.config,
            &out.join(checkpoint::CONFIG_FILE),
        )?;
        agent.load(&data)?;
        venv.restore(&st.venv)
            .map_err(|e| Error::data(&ts_path, format!("loop.venv: {e}")))?;
        tracing::info!(checkpoint = %out.display(), step = st.step, "resuming");
        (step, episodes, evals) = (st.step, st.episodes, st.evals);
        resumed_last_train = st.last_train;
        budget = st.budget;
        if step >= cfg.steps {
            return Err(Error::Config(format!(
                "the checkpoint in {} is already at step {step}; pass a larger --steps to continue",
                out.display()
            )));
        }
    }
    crate::fs::create_dir_all(out)?;
    let mut history = match &cfg.log_history {
        None => None,
        Some(_) if resume => return Err(Error::Config(
            "--log-history cannot continue a history across --resume yet; log a fresh run instead"
                .into(),
        )),
        Some(dir) => {
            let spec = family.spec().clone();
            let source = SourceAlgo {
                name: agent.algorithm().to_string(),
                config: agent
                    .save(false)?
                    .config
                    .get("agent")
                    .cloned()
                    .unwrap_or_default(),
            };
            let tasks = vec![TaskEntry {
                index: task as u32,
                params: family.describe_task(task),
            }];
            // A sampling agent's action probabilities go into the `policy` column.
            let mut schema = TransitionSchema::for_env(&spec);
            if let Some(n) = agent.behaviour_policy_dim() {
                schema = schema.with_policy(PolicyKind::Probs, n);
            }
            let manifest = Manifest::new(
                spec.clone(),
                schema,
                tasks,
                cfg.history_split.as_deref().unwrap_or("train"),
                source,
            );
            Some(HistoryLogger::new(
                DatasetWriter::create(dir, manifest)?,
                cfg.history_run,
                task,
            ))
        }
    };
    let mut log = MetricsLog::open(&out.join("metrics.jsonl"), resume.then_some(step))?;
    let n_actions_space = family.spec().action_space.clone();
    let mut actions = ActionBuf::for_space(&n_actions_space, 1);
    let mut obs = venv.obs().to_vec();
    let bar = crate::report::progress_bar(
        cfg.steps,
        &format!("train {} {}", agent.algorithm(), env.id),
    );
    if !cfg.progress {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_position(step);
    let start = std::time::Instant::now();
    let start_step = step;
    let mut recent: std::collections::VecDeque<f64> = std::collections::VecDeque::new();
    let mut last_train: Option<Metrics> = resumed_last_train;
    // Non-finite updates skipped (loop.skip_nonfinite): in a row, and in all.
    let (mut bad_in_a_row, mut skipped) = (0u64, 0u64);
    let mut last_eval: Option<EvalReport> = None;

    let save = |agent: &dyn Agent,
                venv: &VecEnv,
                step: u64,
                episodes: u64,
                evals: u64,
                last_train: &Option<Metrics>,
                log: &mut MetricsLog|
     -> Result<()> {
        log.flush()?;
        let mut data: CheckpointData = agent.save(true)?;
        let agent_state = data.trainer_state.take().unwrap_or(serde_json::Value::Null);
        let loop_state = LoopState {
            step,
            episodes,
            evals,
            venv: venv.snapshot()?,
            last_train: last_train.clone(),
            budget,
        };
        let state = TrainerState {
            step,
            episodes,
            seed,
            loop_state,
            agent: agent_state,
            loop_config: cfg.clone(),
        };
        data.trainer_state = Some(
            serde_json::to_value(&state)
                .map_err(|e| Error::data(out, format!("cannot encode the trainer state: {e}")))?,
        );
        checkpoint::save(out, &data)?;
        // The save swapped the folder: keep appending to the new copy of metrics.jsonl.
        log.reopen()
    };

    let end = cfg
        .stop_at
        .map_or(cfg.steps, |s| s.clamp(step + 1, cfg.steps));
    while step < end {
        agent.act(&obs, true, step, &mut actions)?;
        venv.step(actions.as_batch())?;
        agent.observe(&Experience {
            obs: &obs,
            actions: &actions,
            rewards: venv.rewards(),
            next_obs: venv.next_obs(),
            terminated: venv.terminated(),
            truncated: venv.truncated(),
        })?;
        if let Some(h) = history.as_mut() {
            // The one environment's row of the probabilities (none before an exploring act).
            let probs = agent
                .behaviour_policy_dim()
                .and_then(|n| agent.behaviour_probs().get(..n));
            h.log(&obs, &actions, probs, &venv)?;
        }
        step += 1;
        obs.copy_from_slice(venv.obs());
        for end in venv.finished() {
            episodes += 1;
            recent.push_back(end.ret);
            if recent.len() > 20 {
                recent.pop_front();
            }
            log.log(
                step,
                "episode",
                &BTreeMap::from([
                    ("return".to_string(), end.ret),
                    ("length".to_string(), end.length as f64),
                ]),
            )?;
        }
        match agent.update(step) {
            Ok(Some(m)) => {
                last_train = Some(m);
                bad_in_a_row = 0;
            }
            Ok(None) => {}
            Err(Error::NonFinite(msg)) if bad_in_a_row < cfg.skip_nonfinite => {
                bad_in_a_row += 1;
                skipped += 1;
                tracing::warn!(step, "{msg}: update skipped (loop.skip_nonfinite)");
                log.log(
                    step,
                    "skipped",
                    &BTreeMap::from([("skipped_updates".to_string(), skipped as f64)]),
                )?;
            }
            Err(Error::Training(msg)) | Err(Error::NonFinite(msg)) => {
                log.flush()?;
                let kept = match recorded(out, "step").ok().flatten() {
                    Some(s) => format!(
                        "The last good checkpoint (step {s}) in {} is kept: resume it with --resume, \
                         perhaps with a lower learning rate",
                        out.display()
                    ),
                    None => "No checkpoint was written before it".to_string(),
                };
                return Err(Error::Training(format!(
                    "{msg} at step {step}; training stopped. {kept} (or set loop.skip_nonfinite = N \
                     to skip up to N such updates in a row)"
                )));
            }
            Err(e) => return Err(e),
        }
        if cfg.log_interval > 0 && step % cfg.log_interval == 0 {
            if let Some(m) = &last_train {
                let mut m = m.clone();
                m.extend(agent.diagnostics()?);
                log.log(step, "train", &m)?;
            }
            let mean = recent.iter().sum::<f64>() / recent.len().max(1) as f64;
            bar.set_message(format!("return {mean:.1} ({episodes} episodes)"));
        }
        bar.set_position(step);
        let final_step = step == end;
        if (cfg.eval_interval > 0 && step % cfg.eval_interval == 0) || final_step {
            let r = eval_now(agent, &family, task, cfg, seed, step)?;
            evals += 1;
            log.log(
                step,
                "eval",
                &BTreeMap::from([
                    ("return".to_string(), r.mean_return),
                    ("stderr".to_string(), r.stderr),
                    ("length".to_string(), r.mean_length),
                ]),
            )?;
            last_eval = Some(r);
        }
        if (cfg.checkpoint_interval > 0 && step % cfg.checkpoint_interval == 0) || final_step {
            save(agent, &venv, step, episodes, evals, &last_train, &mut log)?;
        }
    }
    bar.finish_and_clear();
    if let Some(h) = history {
        h.finish()?;
    }
    log.flush()?;
    if let Some(r) = &last_eval {
        crate::fs::write_json_atomic(&out.join("eval.json"), r)?;
    }
    draw_learning_curve(out, &format!("{} on {}", agent.algorithm(), env.id))?;
    let el = start.elapsed().as_secs_f64().max(1e-9);
    Ok(TrainSummary {
        step,
        episodes,
        final_eval: last_eval,
        out: out.to_path_buf(),
        steps_per_second: (step - start_step) as f64 / el,
    })
}

/// `learning_curve.svg` from `metrics.jsonl`: smoothed training episode returns and the greedy
/// evaluation returns against environment steps.
pub fn draw_learning_curve(dir: &Path, title: &str) -> Result<()> {
    let metrics = dir.join("metrics.jsonl");
    let episodes = read_series(&metrics, "episode", "return")?;
    let evals = read_series(&metrics, "eval", "return")?;
    let mut series = vec![Series::line(
        "episode return (moving avg 20)",
        smooth(&episodes, 20),
    )];
    if !evals.is_empty() {
        series.push(Series::line("greedy evaluation", evals));
    }
    line_plot(
        &dir.join("learning_curve.svg"),
        title,
        "environment steps",
        "return",
        &series,
    )
}

/// A training job as written in TOML (`train --config FILE`, or a `kind = "train"` stage).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    pub env: crate::envs::EnvRef,
    pub algo: String,
    /// The agent's hyperparameters (its paper defaults where absent).
    #[serde(default)]
    pub agent: toml::Table,
    #[serde(default, rename = "loop")]
    pub train_loop: LoopConfig,
}

impl TrainSpec {
    /// Where `train` writes without `--out`: `checkpoints/ENV-ALGO-sSEED`.
    pub fn default_out(&self, seed: u64) -> PathBuf {
        PathBuf::from("checkpoints").join(format!(
            "{}-{}-s{seed}",
            self.env.config().id.replace('/', "-"),
            self.algo
        ))
    }
}

impl TrainSummary {
    /// One line on the final greedy evaluation, if the run made one.
    pub fn final_eval_line(&self, algo: &str) -> Option<String> {
        self.final_eval.as_ref().map(|r| {
            format!(
                "{algo} on {}: {} steps, {} episodes, {:.0} steps/s | greedy return {:.2} ± {:.2} over {} episodes",
                r.env, self.step, self.episodes, self.steps_per_second, r.mean_return, r.stderr, r.episodes
            )
        })
    }
}

/// Builds the agent of `spec` and trains it into `out`, holding `out`'s
/// [`FolderLock`](crate::fs::FolderLock) throughout.
pub fn run_train(
    spec: &TrainSpec,
    seed: u64,
    device: &candle_core::Device,
    out: &Path,
    resume: bool,
) -> Result<TrainSummary> {
    let _lock = crate::fs::FolderLock::acquire(out)?;
    let env = spec.env.config();
    let family = TaskFamily::new(&env)?;
    let budget = match resume {
        true => recorded_budget(out)?.unwrap_or(spec.train_loop.steps),
        false => spec.train_loop.steps,
    };
    let mut agent =
        crate::agents::build(&spec.algo, &spec.agent, family.spec(), device, seed, budget)?;
    train(agent.as_mut(), &env, &spec.train_loop, seed, out, resume)
}
