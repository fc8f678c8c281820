//! Environments: the [`Env`] trait, observation/action [`Space`]s, the [`EnvSpec`] that travels
//! with checkpoints and datasets, [`TaskFamily`] (tasks and their train/test split) and
//! [`VecEnv`] (a batch of environments, possibly of different tasks, with auto-reset).
//!
//! Environments are native Rust and allocation-free per step: `reset` and `step` write the
//! observation into a caller-provided slice. Every environment owns a seedable [`Rng`]; `reset`
//! with a seed re-seeds it (as Gymnasium's `reset(seed=...)`), `reset(None)` continues its stream.

pub mod bandit;
pub mod classic;
pub mod gridworld;
pub mod gym;
pub mod minatar;
pub mod obs_encoding;
pub mod registry;
pub mod vec_env;

use serde::{Deserialize, Serialize};

pub use registry::{registry, EnvEntry};
pub use vec_env::{ActionBuf, EpisodeEnd, VecEnv};

use crate::error::{Error, Result};

/// A scalar bound applied to every dimension, or one bound per dimension.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bounds {
    Scalar(f32),
    PerDim(Vec<f32>),
}

impl Bounds {
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Bounds::Scalar(v) => *v,
            Bounds::PerDim(v) => v[i],
        }
    }
}

/// Observation or action space, in the sense of Gymnasium's `Discrete` and `Box`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Space {
    Discrete {
        n: usize,
    },
    Box {
        shape: Vec<usize>,
        low: Bounds,
        high: Bounds,
    },
}

/// The most values one observation or action, or the most actions a discrete space, may have
/// (2^24: images of 3 × 2048 × 2048 fit; more is a damaged file, not an environment).
pub const MAX_SPACE_SIZE: usize = 1 << 24;

/// Largest `env.size` of the gridworlds (Dark Key-to-Door has size⁴ tasks).
pub const MAX_GRID_SIZE: usize = 64;

impl Space {
    /// Checks a space read from a file: 1 to [`MAX_SPACE_SIZE`] actions or values, per-dimension
    /// bounds as long as the shape, `low ≤ high`, no NaN. `what` names it.
    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("{what}: {m}")));
        match self {
            Space::Discrete { n } if *n == 0 || *n > MAX_SPACE_SIZE => bad(format!(
                "a discrete space needs 1 to {MAX_SPACE_SIZE} actions, found {n}"
            )),
            Space::Discrete { .. } => Ok(()),
            Space::Box { shape, low, high } => {
                let dim = match shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
                    Some(d) if d <= MAX_SPACE_SIZE => d,
                    _ => {
                        return bad(format!(
                            "shape {shape:?} holds more than {MAX_SPACE_SIZE} values"
                        ))
                    }
                };
                for (name, b) in [("low", low), ("high", high)] {
                    if let Bounds::PerDim(v) = b {
                        if v.len() != dim {
                            return bad(format!(
                                "`{name}` has {} values for shape {shape:?} ({dim} dimensions)",
                                v.len()
                            ));
                        }
                    }
                }
                if (0..dim).any(|i| {
                    low.get(i).is_nan() || high.get(i).is_nan() || low.get(i) > high.get(i)
                }) {
                    return bad("bounds must be numbers with low ≤ high".into());
                }
                Ok(())
            }
        }
    }

    /// Number of scalars in one element of the space (1 for `Discrete`).
    pub fn flat_dim(&self) -> usize {
        match self {
            Space::Discrete { .. } => 1,
            Space::Box { shape, .. } => shape.iter().product(),
        }
    }

    pub fn discrete_n(&self) -> Option<usize> {
        match self {
            Space::Discrete { n } => Some(*n),
            Space::Box { .. } => None,
        }
    }

    pub fn is_discrete(&self) -> bool {
        matches!(self, Space::Discrete { .. })
    }
}

impl std::fmt::Display for Space {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Space::Discrete { n } => write!(f, "Discrete({n})"),
            Space::Box { shape, low, high } => {
                let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
                match (low, high) {
                    (Bounds::Scalar(l), Bounds::Scalar(h)) => {
                        write!(f, "Box({l}, {h}, [{}])", dims.join(", "))
                    }
                    _ => write!(f, "Box([{}])", dims.join(", ")),
                }
            }
        }
    }
}

/// An action handed to [`Env::step`].
#[derive(Clone, Copy, Debug)]
pub enum Action<'a> {
    Discrete(usize),
    Continuous(&'a [f32]),
}

/// What one step returns besides the observation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Step {
    pub reward: f32,
    /// The episode ended in a true terminal state: do not bootstrap.
    pub terminated: bool,
    /// The episode was cut (time limit): bootstrap from the next observation.
    pub truncated: bool,
}

impl Step {
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// How an environment's observation values are represented: `float32`, or `uint8` for byte
/// images (Atari frames). The [`Env`] interface hands every observation over as `f32` (a byte
/// is exact in `f32`); replay buffers keep `uint8` observations as bytes
/// ([`crate::replay::ReplayBuffer::for_spec`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObsDtype {
    #[default]
    #[serde(rename = "float32")]
    F32,
    #[serde(rename = "uint8")]
    U8,
}

impl ObsDtype {
    pub fn is_f32(&self) -> bool {
        *self == ObsDtype::F32
    }
}

/// A single environment instance of one task.
pub trait Env: Send {
    fn observation_space(&self) -> &Space;
    /// How the observation values are represented (every native environment: `float32`).
    fn observation_dtype(&self) -> ObsDtype {
        ObsDtype::F32
    }
    fn action_space(&self) -> &Space;
    /// Time limit after which an episode is truncated.
    fn max_episode_steps(&self) -> u32;
    /// Starts a new episode, writing the first observation into `obs`. `Some(seed)` re-seeds
    /// the environment's generator; `None` continues its stream.
    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]);
    /// Applies `action`, writing the next observation into `obs`.
    fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> Result<Step>;
    /// The best achievable return of an episode of this task, where the environment can compute
    /// it (shortest-path return in Dark Room). For tasks with a random start it is the return
    /// from the start of the current episode.
    fn optimal_return(&self) -> Option<f64> {
        None
    }
    /// The environment's whole state (including its generator), so that a resumed run
    /// continues mid-episode exactly as if never interrupted.
    fn snapshot(&self) -> Result<serde_json::Value>;
    /// Restores a state produced by [`Env::snapshot`] of the same environment and task.
    fn restore(&mut self, state: &serde_json::Value) -> Result<()>;
    /// Whether the state is one the environment can be in (finite, within its physical
    /// limits): checked on every restored snapshot, since a snapshot is a file someone may
    /// have edited.
    fn check_state(&self) -> Result<()> {
        Ok(())
    }
}

/// Implements [`Env::snapshot`]/[`Env::restore`] for an environment struct that derives
/// `Serialize` and `Deserialize`.
#[macro_export]
macro_rules! serde_snapshot {
    ($name:literal) => {
        $crate::serde_snapshot!($name, fixed = []);
    };
    // `fixed`: fields that make the task (a goal, a size) and that a snapshot may not change.
    ($name:literal, fixed = [$($field:ident),* $(,)?]) => {
        fn snapshot(&self) -> $crate::error::Result<serde_json::Value> {
            serde_json::to_value(&*self)
                .map_err(|e| $crate::error::Error::Env(format!("cannot snapshot `{}`: {e}", $name)))
        }
        fn restore(&mut self, state: &serde_json::Value) -> $crate::error::Result<()> {
            let restored: Self = serde_json::from_value(state.clone()).map_err(|e| {
                $crate::error::Error::Env(format!(
                    "cannot restore `{}` from its snapshot: {e}",
                    $name
                ))
            })?;
            // A snapshot restores a state, never another environment.
            if restored.observation_space() != self.observation_space()
                || restored.action_space() != self.action_space()
                || restored.max_episode_steps() != self.max_episode_steps()
            {
                return Err($crate::error::Error::Env(format!(
                    "cannot restore `{}`: the snapshot's spaces or time limit differ from this environment's",
                    $name
                )));
            }
            $(
                if restored.$field != self.$field {
                    return Err($crate::error::Error::Env(format!(
                        "cannot restore `{}`: the snapshot's `{}` differs from this task's",
                        $name,
                        stringify!($field)
                    )));
                }
            )*
            restored.check_state().map_err(|e| {
                $crate::error::Error::Env(format!("cannot restore `{}`: {e}", $name))
            })?;
            *self = restored;
            Ok(())
        }
    };
}

/// Checks a discrete action against `n` and names the environment and the valid range if it is not.
#[inline]
pub fn discrete_action(id: &str, action: Action<'_>, n: usize) -> Result<usize> {
    match action {
        Action::Discrete(a) if a < n => Ok(a),
        Action::Discrete(a) => Err(Error::Env(format!(
            "invalid action {a} for `{id}`: actions are integers in 0..{n} (0 to {})",
            n - 1
        ))),
        Action::Continuous(v) => Err(Error::Env(format!(
            "`{id}` has discrete actions (0..{n}) but was given a continuous action of length {}",
            v.len()
        ))),
    }
}

/// Checks a continuous action's length and finiteness and names the environment if it is wrong.
#[inline]
pub fn continuous_action<'a>(id: &str, action: Action<'a>, dim: usize) -> Result<&'a [f32]> {
    match action {
        Action::Continuous(v) if v.len() == dim && v.iter().all(|x| x.is_finite()) => Ok(v),
        Action::Continuous(v) if v.len() != dim => Err(Error::Env(format!(
            "`{id}` expects a continuous action of length {dim}, got length {}",
            v.len()
        ))),
        Action::Continuous(v) => Err(Error::Env(format!("`{id}` got a non-finite action {v:?}"))),
        Action::Discrete(a) => Err(Error::Env(format!(
            "`{id}` has continuous actions of length {dim} but was given the discrete action {a}"
        ))),
    }
}

/// User-facing environment configuration: the id plus the options that apply to it. Serialised
/// into every checkpoint and dataset so that the exact environment can be rebuilt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// Registered id, e.g. `dark_room`, `cartpole`, `minatar/breakout`.
    pub id: String,
    /// Overrides the environment's time limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_episode_steps: Option<u32>,
    /// MinAtar: probability that the previous action is repeated (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_action_prob: Option<f64>,
    /// MinAtar: whether games speed up as the episode goes on (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difficulty_ramping: Option<bool>,
    /// Task families: fraction of tasks held out for testing (default depends on the family).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    /// Task families: seed of the deterministic train/test split and of generated tasks (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_seed: Option<u64>,
    /// Bandits: number of generated tasks (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_tasks: Option<usize>,
    /// Dark Key-to-Door: append a has-key flag (0/1) to the observation (default false). The
    /// key and door stay invisible; the flag only makes the task Markov for memoryless source
    /// algorithms, which otherwise cannot tell "fetch the key" from "go to the door" apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observe_key: Option<bool>,
    /// Dark rooms and Dark Key-to-Door: side of the square room (default 9; 17 for
    /// `dark_room_hard`), for smaller or larger versions of the same task family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// `gym:` environments: keyword arguments of `gymnasium.make` (`--set env.kwargs.KEY=V`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kwargs: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    /// `gym:` environments: a standard set of wrappers, `atari` (see [`gym`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// `gym:` environments: step every batch of environments in this many worker processes
    /// (each running its share in Gymnasium's `SyncVectorEnv`), and evaluate on this many
    /// environments at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_envs: Option<usize>,
}

impl EnvConfig {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            max_episode_steps: None,
            sticky_action_prob: None,
            difficulty_ramping: None,
            test_fraction: None,
            split_seed: None,
            num_tasks: None,
            observe_key: None,
            size: None,
            kwargs: None,
            preset: None,
            num_envs: None,
        }
    }

    /// This config with `--set env.KEY=VALUE` overrides applied (`sets` without the prefix).
    pub fn with_overrides(&self, sets: &[String]) -> Result<EnvConfig> {
        let mut table = toml::Table::try_from(self)
            .map_err(|e| Error::Config(format!("env `{}`: {e}", self.id)))?;
        crate::config::apply_overrides(&mut table, sets)?;
        crate::config::from_table(table, "--set env.*")
    }

    /// Names of the options that are set, for checking that each applies to the env.
    fn set_options(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.max_episode_steps.is_some() {
            out.push("max_episode_steps");
        }
        if self.sticky_action_prob.is_some() {
            out.push("sticky_action_prob");
        }
        if self.difficulty_ramping.is_some() {
            out.push("difficulty_ramping");
        }
        if self.test_fraction.is_some() {
            out.push("test_fraction");
        }
        if self.split_seed.is_some() {
            out.push("split_seed");
        }
        if self.num_tasks.is_some() {
            out.push("num_tasks");
        }
        if self.observe_key.is_some() {
            out.push("observe_key");
        }
        if self.size.is_some() {
            out.push("size");
        }
        if self.kwargs.is_some() {
            out.push("kwargs");
        }
        if self.preset.is_some() {
            out.push("preset");
        }
        if self.num_envs.is_some() {
            out.push("num_envs");
        }
        out
    }
}

/// An environment given by id alone or as a full [`EnvConfig`] table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnvRef {
    Id(String),
    Config(EnvConfig),
}

impl EnvRef {
    pub fn config(&self) -> EnvConfig {
        match self {
            EnvRef::Id(id) => EnvConfig::new(id.clone()),
            EnvRef::Config(c) => c.clone(),
        }
    }
}

/// Which tasks of a family to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TaskSet {
    Train,
    Test,
    All,
}

impl TaskSet {
    /// `train`, `test` or `all`, as the flag spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskSet::Train => "train",
            TaskSet::Test => "test",
            TaskSet::All => "all",
        }
    }
}

impl std::str::FromStr for TaskSet {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(TaskSet::Train),
            "test" => Ok(TaskSet::Test),
            "all" => Ok(TaskSet::All),
            other => Err(Error::Config(format!(
                "unknown task set `{other}`: expected one of train, test, all"
            ))),
        }
    }
}

/// Everything needed to rebuild an environment and check that a model fits it. Serialised into
/// checkpoints (`config.json`) and datasets (`dataset.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvSpec {
    pub config: EnvConfig,
    pub observation_space: Space,
    pub action_space: Space,
    pub max_episode_steps: u32,
    pub num_tasks: usize,
    /// `uint8` for byte observations; absent (`float32`) in files of float environments.
    #[serde(default, skip_serializing_if = "ObsDtype::is_f32")]
    pub observation_dtype: ObsDtype,
}

impl EnvSpec {
    /// Checks the spaces of a spec read from a file ([`Space::validate`]).
    pub fn validate(&self) -> Result<()> {
        self.observation_space.validate("observation_space")?;
        self.action_space.validate("action_space")
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }
    pub fn obs_dim(&self) -> usize {
        self.observation_space.flat_dim()
    }

    /// Checks that a model built for this spec fits `target`'s observation and action spaces.
    /// `trained` opens the error: "`{trained}` `cartpole` (observation ..., action ...), which
    /// does not fit ...", e.g. "ckpt/ was trained on".
    pub fn check_fits(&self, target: &EnvSpec, trained: &str) -> Result<()> {
        if target.observation_space != self.observation_space
            || target.action_space != self.action_space
        {
            return Err(Error::Config(format!(
                "{trained} `{}` (observation {}, action {}), which does not fit `{}` (observation {}, action {})",
                self.id(), self.observation_space, self.action_space,
                target.id(), target.observation_space, target.action_space
            )));
        }
        Ok(())
    }
}

/// A family of tasks of one environment (81 goals of Dark Room; one task for CartPole) with its
/// deterministic train/test split.
#[derive(Clone)]
pub struct TaskFamily {
    spec: EnvSpec,
    entry: &'static EnvEntry,
    train: Vec<usize>,
    test: Vec<usize>,
}

impl TaskFamily {
    /// Builds the family for `config`, checking the id and that every set option applies.
    pub fn new(config: &EnvConfig) -> Result<Self> {
        let entry = registry::lookup(&config.id)?;
        for opt in config.set_options() {
            if !entry.options.contains(&opt) && opt != "max_episode_steps" {
                let valid = if entry.options.is_empty() {
                    "none besides max_episode_steps".to_string()
                } else {
                    entry.options.join(", ")
                };
                return Err(Error::Config(format!(
                    "env option `{opt}` does not apply to `{}` (its options: {valid})",
                    config.id
                )));
            }
        }
        if let Some(p) = config.sticky_action_prob {
            if !(0.0..=1.0).contains(&p) {
                crate::config_bail!("env.sticky_action_prob must be in [0, 1], got {p}");
            }
        }
        if let Some(f) = config.test_fraction {
            if !(0.0..1.0).contains(&f) {
                crate::config_bail!("env.test_fraction must be in [0, 1), got {f}");
            }
        }
        if config.max_episode_steps == Some(0) {
            crate::config_bail!("env.max_episode_steps must be at least 1");
        }
        if config.num_envs == Some(0) {
            crate::config_bail!("env.num_envs must be at least 1");
        }
        if config.num_tasks == Some(0) {
            crate::config_bail!("env.num_tasks must be at least 1");
        }
        if let Some(s) = config.size {
            if !(2..=MAX_GRID_SIZE).contains(&s) {
                crate::config_bail!("env.size must be in 2..={MAX_GRID_SIZE}, got {s}");
            }
        }
        let num_tasks = (entry.num_tasks)(config);
        let probe = (entry.make)(config, 0)?;
        let spec = EnvSpec {
            config: config.clone(),
            observation_space: probe.observation_space().clone(),
            action_space: probe.action_space().clone(),
            max_episode_steps: probe.max_episode_steps(),
            num_tasks,
            observation_dtype: probe.observation_dtype(),
        };
        let (train, test) = (entry.split)(config, num_tasks);
        Ok(Self {
            spec,
            entry,
            train,
            test,
        })
    }

    /// Shorthand for a family with default options.
    pub fn from_id(id: &str) -> Result<Self> {
        Self::new(&EnvConfig::new(id))
    }

    pub fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    pub fn num_tasks(&self) -> usize {
        self.spec.num_tasks
    }

    pub fn tasks(&self, set: TaskSet) -> Vec<usize> {
        match set {
            TaskSet::Train => self.train.clone(),
            TaskSet::Test => self.test.clone(),
            TaskSet::All => (0..self.spec.num_tasks).collect(),
        }
    }

    /// A fresh environment of task `task` (not yet reset).
    pub fn make(&self, task: usize) -> Result<Box<dyn Env>> {
        if task >= self.spec.num_tasks {
            return Err(Error::Env(format!(
                "task {task} does not exist in `{}`: valid task indices are 0..{} (0 to {})",
                self.spec.config.id,
                self.spec.num_tasks,
                self.spec.num_tasks - 1
            )));
        }
        (self.entry.make)(&self.spec.config, task)
    }

    /// A JSON description of a task's parameters (goal position, arm means, ...).
    pub fn describe_task(&self, task: usize) -> serde_json::Value {
        (self.entry.describe)(&self.spec.config, task)
    }
}

/// Deterministic split of `0..n` into (train, test): a shuffle seeded by `seed`, the first
/// `round(n · test_fraction)` tasks (at least one when `n > 1` and the fraction is positive) go to
/// test. Both lists are returned sorted. With one task, train and test are that task.
pub fn shuffled_split(n: usize, test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    if n <= 1 || test_fraction <= 0.0 {
        let all: Vec<usize> = (0..n).collect();
        return (all.clone(), all);
    }
    let mut idx: Vec<usize> = (0..n).collect();
    crate::rng::Rng::seed_from_u64(seed ^ 0x5EED_5EED).shuffle(&mut idx);
    let n_test = ((n as f64 * test_fraction).round() as usize).clamp(1, n - 1);
    let mut test = idx[..n_test].to_vec();
    let mut train = idx[n_test..].to_vec();
    test.sort_unstable();
    train.sort_unstable();
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_deterministic_disjoint_and_covering() {
        let (tr, te) = shuffled_split(81, 0.2, 0);
        let (tr2, te2) = shuffled_split(81, 0.2, 0);
        assert_eq!((tr.clone(), te.clone()), (tr2, te2));
        assert_eq!(te.len(), 16);
        assert_eq!(tr.len() + te.len(), 81);
        assert!(te.iter().all(|t| !tr.contains(t)));
        let (_, te3) = shuffled_split(81, 0.2, 1);
        assert_ne!(te, te3);
    }

    #[test]
    fn options_that_do_not_apply_are_rejected_by_name() {
        let mut cfg = EnvConfig::new("cartpole");
        cfg.sticky_action_prob = Some(0.1);
        let err = TaskFamily::new(&cfg).err().expect("must fail").to_string();
        assert!(
            err.contains("sticky_action_prob") && err.contains("cartpole"),
            "{err}"
        );
    }

    /// `env.size` makes smaller (or larger) rooms of the same families, and is checked.
    #[test]
    fn grid_size_option_scales_the_room_and_its_tasks() {
        let family = |id: &str, size: Option<usize>| {
            let mut cfg = EnvConfig::new(id);
            cfg.size = size;
            TaskFamily::new(&cfg)
        };
        for (id, size, tasks, high) in [
            ("dark_room", None, 81, 8.0),
            ("dark_room", Some(5), 25, 4.0),
            ("dark_room_hard", None, 289, 16.0),
            ("dark_room_hard", Some(9), 81, 8.0),
            ("dark_key_to_door", None, 6561, 8.0),
            ("dark_key_to_door", Some(5), 625, 4.0),
        ] {
            let f = family(id, size).unwrap();
            assert_eq!(f.spec().num_tasks, tasks, "{id} {size:?}");
            let Space::Box { high: b, .. } = &f.spec().observation_space else {
                panic!("{id}: a box observation space");
            };
            assert_eq!(b, &Bounds::Scalar(high), "{id} {size:?}");
            // The last task's goal (or door) is the far corner of the room.
            let env = f.make(tasks - 1).unwrap();
            let d = f.describe_task(tasks - 1);
            let corner = serde_json::json!([high as usize, high as usize]);
            assert!(
                d.get("goal") == Some(&corner) || d.get("door") == Some(&corner),
                "{d}"
            );
            assert_eq!(env.observation_space(), &f.spec().observation_space);
        }
        for bad in [0, 1, MAX_GRID_SIZE + 1] {
            let e = family("dark_key_to_door", Some(bad))
                .err()
                .unwrap()
                .to_string();
            assert!(
                e.contains("env.size") && e.contains(&bad.to_string()),
                "{e}"
            );
        }
        let e = family("cartpole", Some(5)).err().unwrap().to_string();
        assert!(e.contains("size") && e.contains("does not apply"), "{e}");
    }

    #[test]
    fn bad_task_index_lists_valid_range() {
        let fam = TaskFamily::from_id("dark_room").unwrap();
        let err = fam.make(81).err().expect("must fail").to_string();
        assert!(err.contains("0..81"), "{err}");
    }

    #[test]
    fn spec_round_trips_through_json() {
        for entry in registry() {
            let fam = TaskFamily::from_id(entry.id).unwrap();
            let json = serde_json::to_string(fam.spec()).unwrap();
            let back: EnvSpec = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, fam.spec(), "{}", entry.id);
        }
    }
}
