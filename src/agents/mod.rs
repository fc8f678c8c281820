//! Agents: one file per algorithm, all behind the small [`Agent`] interface that the training
//! loop ([`crate::train`]), evaluation and the reincarnation methods use.

use crate::checkpoint::CheckpointData;
use crate::envs::ActionBuf;
use crate::error::Result;
use std::collections::BTreeMap;

/// Named arrays of a safetensors file, as a checkpoint holds them.
type RawArrays = BTreeMap<String, crate::replay::RawArray>;

pub mod bandit_algos;
pub mod dqn;
pub mod memory;
pub mod ppo;
pub mod sac;
pub mod tabular_q;

/// Scalar metrics by name (losses, Q values, gradient norms, σ per SN layer, ...).
pub type Metrics = BTreeMap<String, f64>;

/// One batched environment step, as the agent needs it for learning.
pub struct Experience<'a> {
    pub obs: &'a [f32],
    pub actions: &'a ActionBuf,
    pub rewards: &'a [f32],
    /// True next observations (before auto-reset).
    pub next_obs: &'a [f32],
    pub terminated: &'a [bool],
    pub truncated: &'a [bool],
}

/// What a teacher offers a student: Q-values or action probabilities, `(batch, actions)`.
pub enum PolicyOutput {
    QValues(Vec<f32>),
    Probs(Vec<f32>),
    /// A tanh-squashed Gaussian policy (SAC family): the pre-tanh mean and log-std,
    /// `(batch, action_dim)` each, in the normalised action space [−1, 1].
    GaussianMeanLogStd {
        mean: Vec<f32>,
        log_std: Vec<f32>,
    },
}

pub trait Agent {
    /// Algorithm name as written in configs (`dqn`, `c51`, ...).
    fn algorithm(&self) -> &str;
    /// Actions for a batch of observations; `explore` selects the behaviour policy (ε-greedy,
    /// sampling) rather than the greedy one. `step` is the global environment step (schedules).
    fn act(&mut self, obs: &[f32], explore: bool, step: u64, actions: &mut ActionBuf)
        -> Result<()>;
    /// Records a batched step (replay storage, rollout buffers).
    fn observe(&mut self, exp: &Experience<'_>) -> Result<()>;
    /// Called once per environment step after `observe`; performs the updates that are due and
    /// returns their metrics. A non-finite loss is an `Error::Training`.
    fn update(&mut self, step: u64) -> Result<Option<Metrics>>;
    /// Heavier diagnostics (parameter norms, σ per spectrally normalised layer), computed only
    /// when the loop logs.
    fn diagnostics(&self) -> Result<Metrics> {
        Ok(Metrics::new())
    }
    /// A greedy evaluation over `n_envs` fresh environments begins (agents with a memory of
    /// the episode reset it; others ignore this).
    fn eval_begin(&mut self, _n_envs: usize) {}
    /// The outcome of a greedy evaluation step (agents with a memory of the episode update it).
    fn eval_observe(&mut self, _feedback: &crate::eval::Feedback<'_>) {}
    /// The number of actions whose probabilities [`behaviour_probs`](Self::behaviour_probs)
    /// reports, for agents that sample from an explicit distribution: their logged learning
    /// histories carry those probabilities (the `policy` column). `None` (default): none.
    fn behaviour_policy_dim(&self) -> Option<usize> {
        None
    }
    /// Per environment row, the action probabilities the last exploring `act` sampled from
    /// (rows of [`behaviour_policy_dim`](Self::behaviour_policy_dim) values).
    fn behaviour_probs(&self) -> &[f32] {
        &[]
    }
    /// The teacher-usable policy output for a batch of observations.
    fn policy_output(&self, obs: &[f32]) -> Result<PolicyOutput>;
    /// Everything needed to rebuild (config, weights) and, with `resume`, to continue exactly
    /// (optimiser, replay, RNG and schedule state in `trainer_state["agent"]`).
    fn save(&self, resume: bool) -> Result<CheckpointData>;
    /// Restores what [`save`](Self::save) wrote; weights-only data restores just the weights.
    fn load(&mut self, data: &CheckpointData) -> Result<()>;
    /// The DQN-family agent behind this box, for the reincarnation methods that hook into its
    /// update ([`dqn::DqnHook`]); `None` for other agents.
    fn as_dqn_mut(&mut self) -> Option<&mut dqn::Dqn> {
        None
    }
    /// The SAC-family agent behind this box, for the reincarnation methods that hook into its
    /// update ([`sac::SacHook`]); `None` for other agents.
    fn as_sac_mut(&mut self) -> Option<&mut sac::Sac> {
        None
    }
}

/// The actions of a batched step as discrete indices, or an error naming `algo` for
/// continuous ones.
pub fn discrete_actions<'a>(algo: &str, actions: &'a ActionBuf) -> crate::Result<&'a [usize]> {
    match actions {
        ActionBuf::Discrete(a) => Ok(a),
        ActionBuf::Continuous(_) => {
            Err(crate::Error::Env(format!("{algo} takes discrete actions")))
        }
    }
}

/// Rows in a flat batch of observations of `obs_dim` values each, or an error naming `algo`
/// when the batch is not a whole number of observations.
pub fn batch_rows(algo: &str, obs: &[f32], obs_dim: usize) -> crate::Result<usize> {
    if obs_dim == 0 || !obs.len().is_multiple_of(obs_dim) {
        return Err(crate::Error::Env(format!(
            "{algo} expects observations of {obs_dim} values each, got a batch of {}",
            obs.len()
        )));
    }
    Ok(obs.len() / obs_dim)
}

/// One-hot rows `(actions.len(), n)` for discrete actions; an action outside `0..n` (from
/// a dataset written for another environment) is an error.
pub fn one_hot(
    actions: &[i64],
    n: usize,
    device: &candle_core::Device,
) -> crate::Result<candle_core::Tensor> {
    let mut v = vec![0f32; actions.len() * n];
    for (i, &a) in actions.iter().enumerate() {
        if a < 0 || a as usize >= n {
            return Err(crate::Error::Training(format!(
                "action {a} is outside the {n} actions of the environment"
            )));
        }
        v[i * n + a as usize] = 1.0;
    }
    Ok(candle_core::Tensor::from_vec(
        v,
        (actions.len(), n),
        device,
    )?)
}

/// The agent's part of a checkpoint's `trainer_state.json` (its `agent` object), or `None`
/// for weights-only data (a teacher, an evaluation).
pub fn resume_state(data: &CheckpointData) -> Option<&serde_json::Value> {
    data.trainer_state
        .as_ref()
        .and_then(|t| t.get("agent"))
        .filter(|a| !a.is_null())
}

/// Decodes an agent's resume state strictly: a missing, unknown or mistyped field is an error
/// naming `trainer_state.json` and the field.
pub fn decode_resume_state<T: serde::de::DeserializeOwned>(
    agent: &serde_json::Value,
) -> crate::Result<T> {
    crate::checkpoint::decode_strict(
        agent,
        std::path::Path::new(crate::checkpoint::TRAINER_STATE_FILE),
        "agent",
    )
}

/// The `agent.hook` of a resume state for an agent that trains without a reincarnation hook:
/// it must be null, or the checkpoint belongs to another kind of run.
pub fn no_hook_state(hook: &serde_json::Value) -> crate::Result<()> {
    if hook.is_null() {
        Ok(())
    } else {
        Err(crate::Error::data(
            crate::checkpoint::TRAINER_STATE_FILE,
            "agent.hook holds a reincarnation method's state, but this agent trains without one",
        ))
    }
}

/// One of the array files a resume needs; its absence beside a resume state is an error naming
/// the file.
pub fn resume_file<'a>(arrays: Option<&'a RawArrays>, file: &str) -> crate::Result<&'a RawArrays> {
    arrays.ok_or_else(|| {
        crate::Error::data(
            file,
            "missing: trainer_state.json holds a resume state, but this file is needed to resume",
        )
    })
}

/// Restores `opt` from the moments in `optimizer.safetensors` and its step count.
pub fn restore_adam(
    opt: &mut crate::nn::Adam,
    step: u64,
    moments: &RawArrays,
    device: &candle_core::Device,
) -> crate::Result<()> {
    opt.load_state(
        &crate::nn::AdamState {
            step,
            tensors: crate::checkpoint::raw_to_tensors(moments, device)?,
        },
        std::path::Path::new(crate::checkpoint::OPTIMIZER_FILE),
    )
}

/// The optimiser, replay and target-network arrays an off-policy agent's resume needs.
pub fn resume_arrays(data: &CheckpointData) -> crate::Result<(&RawArrays, &RawArrays, &RawArrays)> {
    use crate::checkpoint::{OPTIMIZER_FILE, REPLAY_FILE, TARGET_FILE};
    Ok((
        resume_file(data.optimizer.as_ref(), OPTIMIZER_FILE)?,
        resume_file(data.replay.as_ref(), REPLAY_FILE)?,
        resume_file(data.target.as_ref(), TARGET_FILE)?,
    ))
}

/// Algorithms `train` accepts.
pub const ALGORITHMS: &[&str] = &[
    "dqn",
    "c51",
    "ppo",
    "ucb",
    "thompson",
    "tabular_q",
    "sac",
    "simbav2",
];

/// Deep-merges `over` into `base` (tables merge key by key; other values replace). A table
/// with a `kind` tag (a schedule, an enum variant) replaces the default wholesale: its fields
/// belong to that variant only.
pub fn merge_tables(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) if !o.contains_key("kind") => {
                merge_tables(b, o)
            }
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

pub(crate) fn with_defaults<T: serde::Serialize + serde::de::DeserializeOwned>(
    defaults: T,
    user: &toml::Table,
    algo: &str,
) -> crate::Result<T> {
    let mut table = toml::Table::try_from(defaults)
        .map_err(|e| crate::Error::Config(format!("{algo} defaults: {e}")))?;
    merge_tables(&mut table, user);
    crate::config::from_table(table, &format!("[agent] of {algo}"))
}

/// Builds a fresh agent of `algo` with its paper defaults overridden by `agent_cfg`, for a run
/// of `budget` environment steps: the defaults and values given as `{ fraction = f }` of the
/// budget resolve against it ([`crate::nn::Steps`]).
pub fn build(
    algo: &str,
    agent_cfg: &toml::Table,
    env: &crate::envs::EnvSpec,
    device: &candle_core::Device,
    seed: u64,
    budget: u64,
) -> crate::Result<Box<dyn Agent>> {
    match algo {
        "dqn" => Ok(Box::new(dqn::Dqn::new(
            algo,
            with_defaults(dqn::DqnConfig::default(), agent_cfg, algo)?,
            env,
            device,
            seed,
            Some(budget),
        )?)),
        "c51" => Ok(Box::new(dqn::Dqn::new(
            algo,
            with_defaults(dqn::DqnConfig::c51(), agent_cfg, algo)?,
            env,
            device,
            seed,
            Some(budget),
        )?)),
        "ppo" => Ok(Box::new(ppo::Ppo::new(
            with_defaults(ppo::PpoConfig::default(), agent_cfg, algo)?,
            env,
            device,
            seed,
        )?)),
        "ucb" => Ok(Box::new(bandit_algos::Ucb::new(
            with_defaults(bandit_algos::UcbConfig::default(), agent_cfg, algo)?,
            env,
        )?)),
        "thompson" => Ok(Box::new(bandit_algos::Thompson::new(
            with_defaults(bandit_algos::ThompsonConfig::default(), agent_cfg, algo)?,
            env,
            seed,
        )?)),
        "tabular_q" => Ok(Box::new(tabular_q::TabularQ::new(
            with_defaults(tabular_q::TabularQConfig::default(), agent_cfg, algo)?,
            env,
            seed,
        )?)),
        "sac" => Ok(Box::new(sac::Sac::new(
            algo,
            with_defaults(sac::SacConfig::default(), agent_cfg, algo)?,
            env,
            device,
            seed,
            Some(budget),
        )?)),
        "simbav2" => Ok(Box::new(sac::Sac::new(
            algo,
            with_defaults(sac::SacConfig::simbav2(), agent_cfg, algo)?,
            env,
            device,
            seed,
            Some(budget),
        )?)),
        other => Err(crate::Error::Config(format!(
            "unknown algorithm `{other}`{}; available: {}",
            crate::error::did_you_mean(other, ALGORITHMS.iter().copied()),
            ALGORITHMS.join(", ")
        ))),
    }
}

/// Rebuilds the agent a checkpoint was written by (from its `config.json`) and loads it.
pub fn from_checkpoint(
    data: &CheckpointData,
    device: &candle_core::Device,
) -> crate::Result<Box<dyn Agent>> {
    let bad = |m: &str| crate::Error::data("config.json", m.to_string());
    let algo = data
        .config
        .get("algorithm")
        .and_then(|a| a.as_str())
        .ok_or_else(|| bad("missing `algorithm`"))?;
    let file = std::path::Path::new(crate::checkpoint::CONFIG_FILE);
    let section = |key: &str| data.config.get(key).unwrap_or(&serde_json::Value::Null);
    let env: crate::envs::EnvSpec =
        crate::checkpoint::decode_complete(section("env"), file, "env")?;
    env.validate()
        .map_err(|e| crate::Error::data(file, format!("env.{e}")))?;
    crate::envs::TaskFamily::new(&env.config)
        .map_err(|e| crate::Error::data(file, format!("env: {e}")))?;
    // A config value the agent refuses is a fault of this file.
    let build = || -> crate::Result<Box<dyn Agent>> {
        Ok(match algo {
            "dqn" | "c51" => {
                let cfg: dqn::DqnConfig =
                    crate::checkpoint::decode_complete(section("agent"), file, "agent")?;
                Box::new(dqn::Dqn::new(algo, cfg, &env, device, 0, None)?)
            }
            "ppo" => {
                let cfg: ppo::PpoConfig =
                    crate::checkpoint::decode_complete(section("agent"), file, "agent")?;
                Box::new(ppo::Ppo::new(cfg, &env, device, 0)?)
            }
            "ucb" => {
                let cfg: bandit_algos::UcbConfig =
                    crate::checkpoint::decode_complete(section("agent"), file, "agent")?;
                Box::new(bandit_algos::Ucb::new(cfg, &env)?)
            }
            "thompson" => {
                let cfg: bandit_algos::ThompsonConfig =
                    crate::checkpoint::decode_complete(section("agent"), file, "agent")?;
                Box::new(bandit_algos::Thompson::new(cfg, &env, 0)?)
            }
            "tabular_q" => {
                let cfg: tabular_q::TabularQConfig =
                    crate::checkpoint::decode_complete(section("agent"), file, "agent")?;
                Box::new(tabular_q::TabularQ::new(cfg, &env, 0)?)
            }
            "sac" | "simbav2" => {
                let cfg: sac::SacConfig =
                    crate::checkpoint::decode_complete(section("agent"), file, "agent")?;
                Box::new(sac::Sac::new(algo, cfg, &env, device, 0, None)?)
            }
            other => return Err(bad(&format!("unknown algorithm `{other}`"))),
        })
    };
    let mut agent = build().map_err(|e| match e {
        crate::Error::Config(m) => crate::Error::data(file, m),
        e => e,
    })?;
    agent.load(data)?;
    // After the load: some of config.json describes loaded state (SAC's observation statistics).
    crate::checkpoint::check_config_round_trip(&data.config, &agent.save(false)?.config)?;
    Ok(agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_tables_replace_and_plain_tables_merge() {
        let mut base: toml::Table = toml::from_str(
            "lr = { kind = \"constant\", value = 1.0 }\nnet = { body = \"mlp\", atoms = 1 }",
        )
        .unwrap();
        let over: toml::Table = toml::from_str(
            "lr = { kind = \"linear\", start = 1.0, end = 0.0, steps = 10 }\nnet = { atoms = 51 }",
        )
        .unwrap();
        merge_tables(&mut base, &over);
        assert!(!base["lr"].as_table().unwrap().contains_key("value"));
        assert_eq!(base["net"]["body"].as_str(), Some("mlp"));
        assert_eq!(base["net"]["atoms"].as_integer(), Some(51));
    }
}
