//! PPO (Schulman et al. 2017, "Proximal Policy Optimization Algorithms") for discrete actions:
//! the source algorithm that produces learning histories on the dark gridworlds for algorithm
//! distillation (Laskin et al. 2023, §5 and App. — an actor-critic with a 3-layer MLP of 128
//! units, γ 0.99, GAE λ 0.95, entropy 0.01, Adam).
//!
//! One iteration, in the order of CleanRL's `ppo.py` (Huang et al. 2022, "The 37 implementation
//! details of PPO"):
//!
//! 1. collect `rollout_steps` steps per environment with the sampling policy, storing
//!    observation, action, log-probability, value, reward and whether the episode ended;
//! 2. compute GAE advantages (Schulman et al. 2016, eq. 16) and returns = advantages + values;
//! 3. for `update_epochs` epochs, shuffle the rollout into `num_minibatches` minibatches and take
//!    one Adam step per minibatch on the clipped surrogate (PPO eq. 7) + value loss − entropy
//!    bonus (PPO eq. 9), with the gradient clipped by global norm.
//!
//! Truncation (time limit) is not termination: the observation holds no time, so the value of
//! the state the episode was cut in is still `V(s')`, and its discounted value `γ·V(s')` is added
//! to the truncated step's reward when the step is observed (as Stable-Baselines3 does); the
//! GAE recursion then stops at the episode boundary as for a terminal step. The rollout's last
//! step, if its episode goes on, bootstraps from `V(next_obs)` at update time.
//!
//! The rollout lives in the agent (`update` runs when it is full) and is saved with optimiser
//! moments, RNG and counters, so a resumed run equals an uninterrupted one bit for bit.

use super::{Agent, Experience, Metrics, PolicyOutput};
use crate::checkpoint::{raw_to_tensors, tensors_to_raw, CheckpointData};
use crate::envs::obs_encoding::{ObsEncoder, ObsEncoding};
use crate::envs::ActionBuf;
use crate::envs::{EnvSpec, Space};
use crate::error::{Error, Result};
use crate::nn::optim::AdamState;
use crate::nn::{grad, Activation, Adam, AdamConfig, Mlp, MlpInit, ParamStore, Schedule};
use crate::replay::RawArray;
use crate::rng::Rng;
use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// PPO hyperparameters. Defaults follow Laskin et al. (2023)'s source algorithm where it says
/// something (3 × 128 MLP, γ 0.99, λ 0.95, entropy 0.01, Adam) and CleanRL's `ppo.py` elsewhere
/// (clip 0.2, value coefficient 0.5, 4 epochs × 4 minibatches, grad norm 0.5, Adam ε 1e-5,
/// orthogonal init, tanh). Changes, tuned so that one run on one dark-room goal learns within a
/// few hundred episodes (sweep over all 81 goals: 75 at the exact optimum after 4000 steps =
/// 200 episodes, the rest by 8000; see `tests/source_algos.rs`):
/// - learning rate 1e-3 rather than the paper's 1e-4;
/// - short rollouts (100 steps = 5 dark-room episodes), so a learning history improves steadily;
/// - one-hot coordinates as network input ([`ObsEncoding::OneHot`]);
/// - advantages divided by `max(std, 1)` rather than `std` ([`Self::advantage_std_floor`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// Hidden layer widths of both the actor and the critic (separate networks, as CleanRL).
    pub hidden: Vec<usize>,
    pub activation: Activation,
    /// How observations enter the networks (see [`ObsEncoding`]); the stored observations stay
    /// raw.
    pub obs_encoding: ObsEncoding,
    /// Learning rate: a number or a schedule over gradient steps.
    pub learning_rate: Schedule,
    /// Adam; ε = 1e-5 as CleanRL's PPO (PyTorch's 1e-8 is the default elsewhere).
    pub optimizer: AdamConfig,
    /// Discount γ.
    pub gamma: f64,
    /// GAE λ (Schulman et al. 2016).
    pub gae_lambda: f64,
    /// Environment steps per environment collected before each update (CleanRL `num_steps`).
    pub rollout_steps: usize,
    /// Passes over each rollout.
    pub update_epochs: usize,
    /// Minibatches per pass; the minibatch size is `rollout_steps × envs / num_minibatches`.
    pub num_minibatches: usize,
    /// Surrogate clipping ε (PPO eq. 7).
    pub clip_coef: f64,
    /// Clip the value update around the rollout's old values with the same ε (CleanRL's
    /// `clip_vloss`). Off by default: with truncation bootstrapping the value targets of a
    /// dark-room goal cell grow far beyond one step's reward, and clipping slows that fit.
    pub clip_value_loss: bool,
    /// Weight of the value loss `½ (V − R)²` (PPO eq. 9's c₁).
    pub value_coef: f64,
    /// Weight of the entropy bonus (PPO eq. 9's c₂; Laskin et al. use 0.01).
    pub entropy_coef: f64,
    /// Normalise advantages to zero mean, unit variance over the whole rollout (once per
    /// iteration rather than per minibatch: with one environment the minibatches are small and
    /// their statistics noisy).
    pub normalize_advantages: bool,
    /// Advantages are divided by `max(std, advantage_std_floor)` (with normalisation on).
    /// Plain normalisation (floor ≈ 0) blows the tiny, value-noise advantages of a rollout
    /// without any reward up to unit scale, and the resulting random policy steps collapsed the
    /// policy before it found far dark-room goals (the corners); no normalisation at all let the
    /// large bootstrapped advantages (goal values near 1/(1 − γ)) collapse the policy onto
    /// stepping on and off the goal. A floor of 1 keeps reward-free rollouts near the initial
    /// policy and still scales large advantages down.
    pub advantage_std_floor: f64,
    /// Clip the global gradient norm (actor and critic together) to this value.
    pub max_grad_norm: Option<f64>,
    /// A memory the networks read beside the observation, built from the agent's own
    /// experience (see [`Memory`]); none by default.
    pub memory: Memory,
}

use super::memory::EpisodeMemory;
pub use super::memory::Memory;

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            hidden: vec![128, 128, 128],
            activation: Activation::Tanh,
            obs_encoding: ObsEncoding::OneHot,
            learning_rate: Schedule::constant(1e-3),
            optimizer: AdamConfig::adam(1e-5),
            gamma: 0.99,
            gae_lambda: 0.95,
            rollout_steps: 100,
            update_epochs: 4,
            num_minibatches: 4,
            clip_coef: 0.2,
            clip_value_loss: false,
            value_coef: 0.5,
            entropy_coef: 0.01,
            normalize_advantages: true,
            advantage_std_floor: 1.0,
            max_grad_norm: Some(0.5),
            memory: Memory::None,
        }
    }
}

impl PpoConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.hidden.contains(&0) {
            return bad(format!(
                "agent.hidden: every layer needs at least one unit, got {:?}",
                self.hidden
            ));
        }
        if self.rollout_steps == 0 || self.update_epochs == 0 || self.num_minibatches == 0 {
            return bad(
                "agent.rollout_steps, agent.update_epochs and agent.num_minibatches must be at least 1"
                    .into(),
            );
        }
        if self.num_minibatches > self.rollout_steps {
            return bad(format!(
                "agent.num_minibatches ({}) exceeds agent.rollout_steps ({}): minibatches would be empty",
                self.num_minibatches, self.rollout_steps
            ));
        }
        for (name, v) in [("gamma", self.gamma), ("gae_lambda", self.gae_lambda)] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("agent.{name} must be in [0, 1], got {v}"));
            }
        }
        for (name, v) in [
            ("clip_coef", self.clip_coef),
            ("value_coef", self.value_coef),
            ("entropy_coef", self.entropy_coef),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(format!("agent.{name} must be finite and ≥ 0, got {v}"));
            }
        }
        if !(self.advantage_std_floor >= 0.0 && self.advantage_std_floor.is_finite()) {
            return bad(format!(
                "agent.advantage_std_floor must be finite and ≥ 0, got {}",
                self.advantage_std_floor
            ));
        }
        if let Some(m) = self.max_grad_norm {
            if m.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
                return bad(format!("agent.max_grad_norm must be > 0, got {m}"));
            }
        }
        self.learning_rate.validate("agent.learning_rate")
    }
}

/// GAE (Schulman et al. 2016, eq. 16) over a rollout stored time-major, `t * n_envs + env`.
///
/// `ended[i]` marks a step that ended its episode (terminated or truncated): the recursion does
/// not look past it (a truncated step's bootstrap is already folded into its reward).
/// `last_values[env]` is `V` of the observation after the rollout's last step (ignored where
/// that step ended its episode). Returns (advantages, returns = advantages + values).
pub fn gae(
    rewards: &[f32],
    values: &[f32],
    ended: &[bool],
    last_values: &[f32],
    gamma: f64,
    lambda: f64,
) -> (Vec<f32>, Vec<f32>) {
    let n = last_values.len().max(1);
    let steps = rewards.len() / n;
    let mut adv = vec![0f32; rewards.len()];
    for (e, &last_value) in last_values.iter().enumerate() {
        let mut running = 0f64;
        for t in (0..steps).rev() {
            let i = t * n + e;
            let next_value = if t + 1 == steps {
                last_value as f64
            } else {
                values[i + n] as f64
            };
            let cont = if ended[i] { 0.0 } else { 1.0 };
            let delta = rewards[i] as f64 + gamma * next_value * cont - values[i] as f64;
            running = delta + gamma * lambda * cont * running;
            adv[i] = running as f32;
        }
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

/// One minibatch as tensors: encoded observations `(B, input_dim)`, one-hot actions `(B, A)`, and `(B,)` old
/// log-probabilities, (normalised) advantages, returns and old values.
pub struct Minibatch {
    pub obs: Tensor,
    pub actions_one_hot: Tensor,
    pub old_log_probs: Tensor,
    pub advantages: Tensor,
    pub returns: Tensor,
    pub old_values: Tensor,
}

/// The PPO objective's parts for one minibatch.
pub struct PpoLoss {
    /// `policy + value_coef · value − entropy_coef · entropy`, to minimise.
    pub total: Tensor,
    pub policy: f64,
    pub value: f64,
    pub entropy: f64,
    /// `E[(r − 1) − log r]`, a low-variance KL(old‖new) estimate (Schulman's "approx KL").
    pub approx_kl: f64,
    /// Fraction of samples whose ratio left `[1 − ε, 1 + ε]`.
    pub clip_fraction: f64,
}

/// The clipped-surrogate loss (PPO eq. 7), value loss and entropy bonus (eq. 9) from the
/// network's `logits (B, A)` and `values (B,)` on a minibatch.
pub fn ppo_loss(
    logits: &Tensor,
    values: &Tensor,
    mb: &Minibatch,
    cfg: &PpoConfig,
) -> Result<PpoLoss> {
    let log_probs_all = candle_nn::ops::log_softmax(logits, D::Minus1)?; // (B, A)
    let log_probs = (&log_probs_all * &mb.actions_one_hot)?.sum(D::Minus1)?; // (B,)
    let log_ratio = (&log_probs - &mb.old_log_probs)?;
    let ratio = log_ratio.exp()?;
    let eps = cfg.clip_coef;
    let unclipped = (&mb.advantages * &ratio)?;
    let clipped = (&mb.advantages * ratio.clamp(1.0 - eps, 1.0 + eps)?)?;
    // max(−A·r, −A·clip(r)) = −min(A·r, A·clip(r))
    let policy = unclipped.minimum(&clipped)?.neg()?.mean_all()?;

    let value_err = (values - &mb.returns)?.sqr()?;
    let value = if cfg.clip_value_loss {
        let v_clipped = (&mb.old_values + (values - &mb.old_values)?.clamp(-eps, eps)?)?;
        let clipped_err = (v_clipped - &mb.returns)?.sqr()?;
        (value_err.maximum(&clipped_err)?.mean_all()? * 0.5)?
    } else {
        (value_err.mean_all()? * 0.5)?
    };

    let entropy = (log_probs_all.exp()? * &log_probs_all)?
        .sum(D::Minus1)?
        .neg()?
        .mean_all()?;
    let total = ((&policy + (&value * cfg.value_coef)?)? - (&entropy * cfg.entropy_coef)?)?;

    let scalar = |t: &Tensor| -> Result<f64> { Ok(t.to_scalar::<f32>()? as f64) };
    let ratio_d = ratio.detach();
    let approx_kl = ((&ratio_d - 1.0)? - log_ratio.detach())?.mean_all()?;
    let clip_fraction = (&ratio_d - 1.0)?
        .abs()?
        .gt(eps)?
        .to_dtype(DType::F32)?
        .mean_all()?;
    Ok(PpoLoss {
        policy: scalar(&policy)?,
        value: scalar(&value)?,
        entropy: scalar(&entropy)?,
        approx_kl: scalar(&approx_kl)?,
        clip_fraction: scalar(&clip_fraction)?,
        total,
    })
}

/// Separate actor and critic MLPs, named as PyTorch `nn.Sequential`s with the activation
/// modules in between (`actor.0.weight`, `actor.2.weight`, ..., `critic.6.bias`), as CleanRL's
/// `Agent` is saved.
pub struct ActorCritic {
    actor: Mlp,
    critic: Mlp,
}

impl ActorCritic {
    /// Orthogonal initialisation (CleanRL's `layer_init`): gain √2 on hidden layers, 0.01 on the
    /// policy head (near-uniform initial policy), 1 on the value head; zero biases.
    /// Networks over `input_dim` encoded inputs (see [`ObsEncoder`]).
    pub fn new(
        cfg: &PpoConfig,
        input_dim: usize,
        n_actions: usize,
        store: &mut ParamStore,
    ) -> Result<Self> {
        let build = |store: &mut ParamStore, name: &str, out: usize, head_gain: f64| {
            let sizes: Vec<usize> = [input_dim]
                .into_iter()
                .chain(cfg.hidden.iter().copied())
                .chain([out])
                .collect();
            let init = MlpInit::Orthogonal {
                hidden_gain: std::f64::consts::SQRT_2,
                head_gain,
            };
            Mlp::new(store, name, &sizes, cfg.activation, init, 2)
        };
        let actor = build(store, "actor", n_actions, 0.01)?;
        let critic = build(store, "critic", 1, 1.0)?;
        Ok(Self { actor, critic })
    }

    /// Action logits `(B, A)` for encoded observations `(B, input_dim)`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.actor.forward(x)
    }

    /// State values `(B,)`.
    pub fn values(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.critic.forward(x)?.squeeze(D::Minus1)?)
    }

    /// Logits and values together.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.logits(x)?, self.values(x)?))
    }
}

/// The collected rollout, time-major (`t * n_envs + env`), on the host.
#[derive(Default)]
struct Rollout {
    n_envs: usize,
    obs: Vec<f32>,
    actions: Vec<i64>,
    log_probs: Vec<f32>,
    values: Vec<f32>,
    /// Rewards, with `γ·V(s')` added on truncated steps.
    rewards: Vec<f32>,
    ended: Vec<bool>,
    /// The observation after the latest step, per environment (bootstrap at update time).
    last_next_obs: Vec<f32>,
}

impl Rollout {
    fn steps(&self) -> usize {
        self.actions.len().checked_div(self.n_envs).unwrap_or(0)
    }

    fn clear(&mut self) {
        self.obs.clear();
        self.actions.clear();
        self.log_probs.clear();
        self.values.clear();
        self.rewards.clear();
        self.ended.clear();
    }

    fn export(&self) -> BTreeMap<String, RawArray> {
        let b = self.actions.len();
        let d = self.obs.len().checked_div(b).unwrap_or(0);
        let e = self.n_envs;
        BTreeMap::from([
            ("obs".into(), RawArray::f32(vec![b, d], &self.obs)),
            ("action".into(), RawArray::i64(vec![b], &self.actions)),
            ("log_prob".into(), RawArray::f32(vec![b], &self.log_probs)),
            ("value".into(), RawArray::f32(vec![b], &self.values)),
            ("reward".into(), RawArray::f32(vec![b], &self.rewards)),
            ("ended".into(), RawArray::bool(vec![b], &self.ended)),
            (
                "last_next_obs".into(),
                RawArray::f32(
                    vec![e, self.last_next_obs.len().checked_div(e).unwrap_or(0)],
                    &self.last_next_obs,
                ),
            ),
        ])
    }

    fn import(
        &mut self,
        arrays: &BTreeMap<String, RawArray>,
        n_envs: usize,
        obs_dim: usize,
    ) -> Result<()> {
        let get = |k: &str| {
            arrays.get(k).ok_or_else(|| {
                Error::data(
                    crate::checkpoint::REPLAY_FILE,
                    format!("the PPO rollout lacks `{k}`"),
                )
            })
        };
        let b = get("action")?.shape.first().copied().unwrap_or(0);
        if n_envs == 0 && b > 0 {
            return Err(Error::data(
                crate::checkpoint::REPLAY_FILE,
                "the PPO rollout holds steps but trainer_state.json says 0 environments",
            ));
        }
        self.n_envs = n_envs;
        self.actions = get("action")?.to_i64("action", b)?;
        self.obs = get("obs")?.to_f32("obs", b * obs_dim)?;
        self.log_probs = get("log_prob")?.to_f32("log_prob", b)?;
        self.values = get("value")?.to_f32("value", b)?;
        self.rewards = get("reward")?.to_f32("reward", b)?;
        self.ended = get("ended")?.to_bool("ended", b)?;
        self.last_next_obs = get("last_next_obs")?.to_f32("last_next_obs", n_envs * obs_dim)?;
        Ok(())
    }
}

/// The PPO agent.
pub struct Ppo {
    config: PpoConfig,
    env: EnvSpec,
    n_actions: usize,
    obs_dim: usize,
    /// Memory inputs appended to each observation ([`Memory::width`]).
    mem_dim: usize,
    device: Device,
    store: ParamStore,
    encoder: ObsEncoder,
    net: ActorCritic,
    optimizer: Adam,
    rng: Rng,
    rollout: Rollout,
    /// (log-prob, value) of the actions chosen by the last exploring `act`, consumed by `observe`.
    pending: Option<(Vec<f32>, Vec<f32>)>,
    /// The action probabilities the last exploring `act` sampled from (per env row).
    last_probs: Vec<f32>,
    /// Gradient steps taken (the learning-rate schedule's clock).
    updates: u64,
    /// Completed PPO iterations (rollouts learned from).
    iterations: u64,
    /// The training environments' memory (updated by `observe`).
    memory: EpisodeMemory,
    /// The evaluation environments' memory (updated through [`Agent::eval_observe`]).
    eval_memory: EpisodeMemory,
}

impl Ppo {
    /// A fresh agent for `env` (discrete actions only).
    pub fn new(config: PpoConfig, env: &EnvSpec, device: &Device, seed: u64) -> Result<Self> {
        config.validate()?;
        crate::device::configure_cpu_threads(None);
        let n_actions = match &env.action_space {
            Space::Discrete { n } => *n,
            other => {
                return Err(Error::Config(format!(
                    "ppo needs discrete actions, but `{}` has {other}",
                    env.id()
                )))
            }
        };
        let obs_dim = env.observation_space.flat_dim();
        let mut store = ParamStore::new(device, crate::rng::derive_seed(seed, 1));
        let encoder = ObsEncoder::new(config.obs_encoding, &env.observation_space);
        let mem_dim = config.memory.width();
        let net = ActorCritic::new(
            &config,
            encoder.input_dim() + mem_dim,
            n_actions,
            &mut store,
        )?;
        let optimizer = Adam::new(store.trainable(), config.optimizer.clone())?;
        Ok(Self {
            config,
            env: env.clone(),
            n_actions,
            obs_dim,
            mem_dim,
            device: device.clone(),
            store,
            encoder,
            net,
            optimizer,
            rng: Rng::seed_from_u64(crate::rng::derive_seed(seed, 3)),
            rollout: Rollout::default(),
            pending: None,
            last_probs: Vec::new(),
            updates: 0,
            iterations: 0,
            memory: EpisodeMemory::default(),
            eval_memory: EpisodeMemory::default(),
        })
    }

    pub fn config(&self) -> &PpoConfig {
        &self.config
    }

    pub fn network(&self) -> &ActorCritic {
        &self.net
    }

    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// Width of a stored row: the raw observation, then the memory.
    fn row_dim(&self) -> usize {
        self.obs_dim + self.mem_dim
    }

    /// Rows of `obs` (`B·obs_dim`) each followed by its environment's memory (see
    /// [`EpisodeMemory::rows`]).
    fn with_memory<'o>(
        &self,
        obs: &'o [f32],
        memory: &EpisodeMemory,
    ) -> Result<std::borrow::Cow<'o, [f32]>> {
        memory.rows("ppo", obs, self.obs_dim, self.config.memory)
    }

    /// Encoded network inputs `(B, input_dim)` for stored rows `(B·row_dim)`: the observation
    /// part encoded, the memory part appended as is.
    fn obs_tensor(&self, rows: &[f32]) -> Result<Tensor> {
        let d = self.row_dim();
        let n = super::batch_rows("ppo", rows, d)?;
        let width = self.encoder.input_dim() + self.mem_dim;
        let x = if self.mem_dim == 0 {
            self.encoder.encode(rows)
        } else {
            let obs: Vec<f32> = rows
                .chunks_exact(d)
                .flat_map(|r| r[..self.obs_dim].iter().copied())
                .collect();
            let enc = self.encoder.encode(&obs);
            let mut x = Vec::with_capacity(n * width);
            for (e, r) in enc
                .chunks_exact(self.encoder.input_dim())
                .zip(rows.chunks_exact(d))
            {
                x.extend_from_slice(e);
                x.extend_from_slice(&r[self.obs_dim..]);
            }
            x
        };
        Ok(Tensor::from_vec(x, (n, width), &self.device)?)
    }

    /// Log-probabilities `(B·A)` row-major and values `(B)` on the host.
    fn evaluate(&self, obs: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let (logits, values) = self.net.forward(&self.obs_tensor(obs)?)?;
        let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        Ok((lp.flatten_all()?.to_vec1()?, values.to_vec1()?))
    }

    fn values(&self, obs: &[f32]) -> Result<Vec<f32>> {
        Ok(self.net.values(&self.obs_tensor(obs)?)?.to_vec1()?)
    }

    fn one_hot(&self, actions: &[i64]) -> Result<Tensor> {
        super::one_hot(actions, self.n_actions, &self.device)
    }

    /// One PPO iteration on the full rollout; clears it.
    fn learn(&mut self) -> Result<Metrics> {
        let cfg = self.config.clone();
        let r = &self.rollout;
        let (n_envs, d) = (r.n_envs, self.row_dim());
        let last_values = self.values(&r.last_next_obs)?;
        let (mut adv, returns) = gae(
            &r.rewards,
            &r.values,
            &r.ended,
            &last_values,
            cfg.gamma,
            cfg.gae_lambda,
        );
        if cfg.normalize_advantages && adv.len() > 1 {
            let n = adv.len() as f64;
            let mean = adv.iter().map(|&a| a as f64).sum::<f64>() / n;
            let var = adv.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
            let inv = 1.0 / var.sqrt().max(cfg.advantage_std_floor).max(1e-8);
            adv.iter_mut()
                .for_each(|a| *a = ((*a as f64 - mean) * inv) as f32);
        }
        let explained_variance = explained_variance(&r.values, &returns);

        let batch = r.actions.len();
        let mb_size = batch / cfg.num_minibatches;
        let mut order: Vec<usize> = (0..batch).collect();
        let vars: Vec<candle_core::Var> =
            self.store.trainable().into_iter().map(|(_, v)| v).collect();
        let mut sums = [0f64; 6]; // policy, value, entropy, kl, clipfrac, grad norm
        let mut count = 0usize;
        let mut lr = 0.0;
        for _epoch in 0..cfg.update_epochs {
            self.rng.shuffle(&mut order);
            for chunk in order.chunks(mb_size).take(cfg.num_minibatches) {
                let r = &self.rollout;
                let mut obs = Vec::with_capacity(chunk.len() * d);
                let mut actions = Vec::with_capacity(chunk.len());
                let pick = |src: &[f32]| -> Vec<f32> { chunk.iter().map(|&i| src[i]).collect() };
                for &i in chunk {
                    obs.extend_from_slice(&r.obs[i * d..(i + 1) * d]);
                    actions.push(r.actions[i]);
                }
                let m = chunk.len();
                let dev = &self.device;
                let mb = Minibatch {
                    obs: self.obs_tensor(&obs)?,
                    actions_one_hot: self.one_hot(&actions)?,
                    old_log_probs: Tensor::from_vec(pick(&r.log_probs), m, dev)?,
                    advantages: Tensor::from_vec(pick(&adv), m, dev)?,
                    returns: Tensor::from_vec(pick(&returns), m, dev)?,
                    old_values: Tensor::from_vec(pick(&r.values), m, dev)?,
                };
                let (logits, values) = self.net.forward(&mb.obs)?;
                let loss = ppo_loss(&logits, &values, &mb, &cfg)?;
                let total = loss.total.to_scalar::<f32>()? as f64;
                if !total.is_finite() {
                    return Err(Error::Training(format!("ppo loss became {total}")));
                }
                let mut grads = loss.total.backward()?;
                let grad_norm = match cfg.max_grad_norm {
                    Some(max) => grad::clip_global_norm(&mut grads, &vars, max)?,
                    None => grad::global_norm(&grads, &vars)?,
                };
                if !grad_norm.is_finite() {
                    return Err(Error::Training(format!(
                        "ppo gradient norm became {grad_norm}"
                    )));
                }
                lr = cfg.learning_rate.value(self.updates);
                self.optimizer.step(&grads, lr)?;
                self.updates += 1;
                for (s, v) in sums.iter_mut().zip([
                    loss.policy,
                    loss.value,
                    loss.entropy,
                    loss.approx_kl,
                    loss.clip_fraction,
                    grad_norm,
                ]) {
                    *s += v;
                }
                count += 1;
            }
        }
        self.rollout.clear();
        self.iterations += 1;
        let c = count.max(1) as f64;
        let names = [
            "policy_loss",
            "value_loss",
            "entropy",
            "approx_kl",
            "clip_fraction",
            "grad_norm",
        ];
        let mut m: Metrics = names
            .iter()
            .zip(sums)
            .map(|(n, s)| (n.to_string(), s / c))
            .collect();
        m.insert("explained_variance".into(), explained_variance);
        m.insert("learning_rate".into(), lr);
        m.insert("updates".into(), self.updates as f64);
        m.insert("iterations".into(), self.iterations as f64);
        m.insert("rollout_envs".into(), n_envs as f64);
        Ok(m)
    }
}

/// `1 − Var[R − V] / Var[R]`: how much of the return's variance the value function explains
/// (1 perfect, 0 no better than a constant; NaN-free: 0 when the returns are constant).
fn explained_variance(values: &[f32], returns: &[f32]) -> f64 {
    let n = returns.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let var = |xs: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = xs.collect();
        let mean = v.iter().sum::<f64>() / n;
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n
    };
    let var_r = var(&mut returns.iter().map(|&x| x as f64));
    if var_r <= 0.0 {
        return 0.0;
    }
    let var_e = var(&mut returns.iter().zip(values).map(|(&r, &v)| (r - v) as f64));
    1.0 - var_e / var_r
}

impl Agent for Ppo {
    fn algorithm(&self) -> &str {
        "ppo"
    }

    fn behaviour_policy_dim(&self) -> Option<usize> {
        Some(self.n_actions)
    }

    fn behaviour_probs(&self) -> &[f32] {
        &self.last_probs
    }

    fn act(
        &mut self,
        obs: &[f32],
        explore: bool,
        _step: u64,
        actions: &mut ActionBuf,
    ) -> Result<()> {
        let ActionBuf::Discrete(out) = actions else {
            return Err(Error::Env("ppo acts with discrete actions".into()));
        };
        let n = out.len();
        let memory = if explore {
            self.memory.ensure(n);
            &self.memory
        } else {
            &self.eval_memory
        };
        let obs = &self.with_memory(obs, memory)?;
        if explore {
            let (log_probs, values) = self.evaluate(obs)?;
            let a_n = self.n_actions;
            let mut chosen_lp = Vec::with_capacity(n);
            self.last_probs.clear();
            self.last_probs
                .extend(log_probs[..n * a_n].iter().map(|lp| lp.exp()));
            for (i, a) in out.iter_mut().enumerate() {
                let row = &log_probs[i * a_n..(i + 1) * a_n];
                // Inverse-CDF sampling; the last action takes any rounding remainder.
                let u = self.rng.uniform();
                let mut acc = 0.0f64;
                *a = a_n - 1;
                for (k, &lp) in row.iter().enumerate() {
                    acc += (lp as f64).exp();
                    if u < acc {
                        *a = k;
                        break;
                    }
                }
                chosen_lp.push(row[*a]);
            }
            self.pending = Some((chosen_lp, values));
        } else {
            let logits = self.net.logits(&self.obs_tensor(obs)?)?;
            let best: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
            for (a, b) in out.iter_mut().zip(best) {
                *a = b as usize;
            }
        }
        Ok(())
    }

    fn observe(&mut self, exp: &Experience<'_>) -> Result<()> {
        let ActionBuf::Discrete(a) = exp.actions else {
            return Err(Error::Env("ppo stores discrete actions".into()));
        };
        let n = a.len();
        let d = self.obs_dim;
        self.memory.ensure(n);
        let obs = self.with_memory(&exp.obs[..n * d], &self.memory)?;
        // The state a step ended in (the truncation bootstrap) or the rollout stops in (the
        // last bootstrap) remembers this step's reward.
        let after = self.memory.after(exp.rewards);
        let next_obs = self.with_memory(&exp.next_obs[..n * d], &after)?;
        let rd = self.row_dim();
        if self.rollout.actions.is_empty() {
            self.rollout.n_envs = n;
        } else if self.rollout.n_envs != n {
            return Err(Error::Env(format!(
                "ppo's rollout collects {} environments per step, got a step of {n}",
                self.rollout.n_envs
            )));
        }
        // The log-probabilities and values of the acting policy; recomputed if these actions did
        // not come from an exploring `act` on this batch.
        let (log_probs, values) = match self.pending.take() {
            Some((lp, v)) if lp.len() == n => (lp, v),
            _ => {
                let (lp_all, v) = self.evaluate(&obs)?;
                let lp = a
                    .iter()
                    .enumerate()
                    .map(|(i, &ai)| lp_all[i * self.n_actions + ai])
                    .collect();
                (lp, v)
            }
        };
        let truncated: Vec<usize> = (0..n)
            .filter(|&i| exp.truncated[i] && !exp.terminated[i])
            .collect();
        let mut rewards = exp.rewards.to_vec();
        if !truncated.is_empty() {
            let next: Vec<f32> = truncated
                .iter()
                .flat_map(|&i| next_obs[i * rd..(i + 1) * rd].iter().copied())
                .collect();
            let v = self.values(&next)?;
            for (&i, vi) in truncated.iter().zip(v) {
                rewards[i] += (self.config.gamma as f32) * vi;
            }
        }
        self.memory
            .record(exp.rewards, exp.terminated, exp.truncated);
        let r = &mut self.rollout;
        r.obs.extend_from_slice(&obs);
        r.actions.extend(a.iter().map(|&x| x as i64));
        r.log_probs.extend(log_probs);
        r.values.extend(values);
        r.rewards.extend(rewards);
        r.ended
            .extend((0..n).map(|i| exp.terminated[i] || exp.truncated[i]));
        r.last_next_obs.clear();
        r.last_next_obs.extend_from_slice(&next_obs);
        Ok(())
    }

    fn update(&mut self, _step: u64) -> Result<Option<Metrics>> {
        if self.rollout.steps() < self.config.rollout_steps {
            return Ok(None);
        }
        self.learn().map(Some)
    }

    fn diagnostics(&self) -> Result<Metrics> {
        let mut m = Metrics::new();
        for (name, var) in self.store.vars() {
            let norm = var.as_tensor().sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
            m.insert(format!("param_norm/{name}"), norm as f64);
        }
        Ok(m)
    }

    fn eval_begin(&mut self, n_envs: usize) {
        self.eval_memory = EpisodeMemory::fresh(n_envs);
    }

    fn eval_observe(&mut self, feedback: &crate::eval::Feedback<'_>) {
        self.eval_memory.observe(feedback);
    }

    /// With a memory, the output at the start of an episode (memory zero): a bare batch of
    /// observations carries no episode.
    fn policy_output(&self, obs: &[f32]) -> Result<PolicyOutput> {
        let rows = self.with_memory(obs, &EpisodeMemory::default())?;
        let logits = self.net.logits(&self.obs_tensor(&rows)?)?;
        let probs = candle_nn::ops::softmax(&logits, D::Minus1)?;
        Ok(PolicyOutput::Probs(probs.flatten_all()?.to_vec1()?))
    }

    fn save(&self, resume: bool) -> Result<CheckpointData> {
        let config = serde_json::json!({
            "algorithm": "ppo",
            "agent": self.config,
            "env": self.env,
        });
        let mut data = CheckpointData {
            config,
            model: tensors_to_raw(&self.store.state_dict())?,
            ..Default::default()
        };
        if resume {
            let AdamState { step, tensors } = self.optimizer.state()?;
            data.optimizer = Some(tensors_to_raw(&tensors)?);
            data.replay = Some(self.rollout.export());
            let state = PpoResumeState {
                rng: self.rng.clone(),
                updates: self.updates,
                iterations: self.iterations,
                optimizer_step: step,
                rollout_envs: self.rollout.n_envs,
                memory: self.memory.returns.clone(),
            };
            data.trainer_state = Some(
                serde_json::to_value(&state)
                    .map_err(|e| Error::Training(format!("encoding the PPO state: {e}")))?,
            );
        }
        Ok(data)
    }

    fn load(&mut self, data: &CheckpointData) -> Result<()> {
        self.store.load_state_dict(
            &raw_to_tensors(&data.model, &self.device)?,
            Path::new(crate::checkpoint::MODEL_FILE),
        )?;
        self.pending = None;
        let Some(agent) = super::resume_state(data) else {
            return Ok(());
        };
        let state: PpoResumeState = super::decode_resume_state(agent)?;
        let opt = super::resume_file(data.optimizer.as_ref(), crate::checkpoint::OPTIMIZER_FILE)?;
        let rollout = super::resume_file(data.replay.as_ref(), crate::checkpoint::REPLAY_FILE)?;
        super::restore_adam(&mut self.optimizer, state.optimizer_step, opt, &self.device)?;
        self.rollout
            .import(rollout, state.rollout_envs, self.row_dim())?;
        self.rng = state.rng;
        self.memory = EpisodeMemory {
            returns: state.memory,
        };
        self.updates = state.updates;
        self.iterations = state.iterations;
        Ok(())
    }
}

/// PPO's resumable state beyond its weights: the `agent` object of `trainer_state.json`,
/// decoded strictly. The optimiser moments live in `optimizer.safetensors`, the pending
/// rollout in `replay.safetensors`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PpoResumeState {
    rng: Rng,
    updates: u64,
    /// Rollout-and-update iterations (the learning-rate schedule's clock).
    iterations: u64,
    /// Adam's step count (its bias correction).
    optimizer_step: u64,
    /// Environments of the pending rollout.
    rollout_envs: usize,
    /// The training environments' episode memory (empty without [`Memory`]). Required, as
    /// every field here: a resume state that lacks it is an error, never a silent reset.
    memory: Vec<f32>,
}

/// Names of the model tensors a PPO agent of this shape holds (for tests and `inspect`).
pub fn expected_tensor_names(cfg: &PpoConfig) -> Vec<String> {
    let mut v = Vec::new();
    for net in ["actor", "critic"] {
        for k in 0..=cfg.hidden.len() {
            for leaf in ["weight", "bias"] {
                v.push(format!("{net}.{}.{leaf}", 2 * k));
            }
        }
    }
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed GAE: one environment, a truncation in the middle, a bootstrap at the end.
    #[test]
    fn gae_matches_hand_computation_and_stops_at_episode_ends() {
        let (g, l) = (0.9, 0.5);
        let rewards = [1.0f32, 0.0, 2.0];
        let values = [0.5f32, 1.0, 0.25];
        let ended = [false, true, false];
        let (adv, ret) = gae(&rewards, &values, &ended, &[2.0], g, l);
        // t = 2: δ = 2 + 0.9·2 − 0.25 = 3.55
        let a2 = 2.0 + 0.9 * 2.0 - 0.25;
        // t = 1 ended: δ = 0 − 1 = −1, no look-ahead
        let a1 = -1.0;
        // t = 0: δ = 1 + 0.9·1 − 0.5 = 1.4; A = 1.4 + 0.9·0.5·(−1)
        let a0 = 1.4 + 0.45 * a1;
        for (got, want) in adv.iter().zip([a0, a1, a2]) {
            assert!((*got as f64 - want).abs() < 1e-6, "{adv:?}");
        }
        for i in 0..3 {
            assert!((ret[i] - (adv[i] + values[i])).abs() < 1e-6);
        }
        // Two environments interleaved time-major give each its own recursion.
        let (adv2, _) = gae(
            &[1.0, 0.0, 0.0, 2.0, 2.0, 0.0],
            &[0.5, 9.0, 1.0, 9.0, 0.25, 9.0],
            &[false, true, true, false, false, false],
            &[2.0, 0.0],
            g,
            l,
        );
        for (got, want) in [adv2[0], adv2[2], adv2[4]].iter().zip([a0, a1, a2]) {
            assert!((*got as f64 - want).abs() < 1e-6, "{adv2:?}");
        }
    }

    fn mb(dev: &Device, adv: &[f32], old_lp: &[f32]) -> Minibatch {
        let n = adv.len();
        Minibatch {
            obs: Tensor::zeros((n, 1), DType::F32, dev).unwrap(),
            actions_one_hot: Tensor::from_vec(
                (0..n).flat_map(|_| [1f32, 0.0]).collect::<Vec<_>>(),
                (n, 2),
                dev,
            )
            .unwrap(),
            old_log_probs: Tensor::from_slice(old_lp, n, dev).unwrap(),
            advantages: Tensor::from_slice(adv, n, dev).unwrap(),
            returns: Tensor::from_slice(&vec![1f32; n], n, dev).unwrap(),
            old_values: Tensor::from_slice(&vec![0f32; n], n, dev).unwrap(),
        }
    }

    /// The clipped objective: inside the trust region it is −A·r; outside it stops pushing
    /// (zero gradient) in the direction the advantage favours.
    #[test]
    fn clipped_surrogate_values_and_gradients() {
        let dev = Device::Cpu;
        let cfg = PpoConfig {
            entropy_coef: 0.0,
            value_coef: 0.0,
            ..PpoConfig::default()
        };
        // Policy over 2 actions with logits (z, 0): log π(0) = z − ln(1 + e^z).
        let lp = |z: f32| z - (1.0 + z.exp()).ln();
        let z0 = 0.3f32;
        for (z, adv, expect_grad) in [
            (0.35f32, 1.0f32, true),
            (1.5, 1.0, false),
            (1.5, -1.0, true),
        ] {
            let zvar = candle_core::Var::new(&[z], &dev).unwrap();
            let zeros = Tensor::zeros(1, DType::F32, &dev).unwrap();
            let logits = Tensor::stack(&[zvar.as_tensor(), &zeros], 1).unwrap();
            let values = Tensor::zeros(1, DType::F32, &dev).unwrap();
            let m = mb(&dev, &[adv], &[lp(z0)]);
            let loss = ppo_loss(&logits, &values, &m, &cfg).unwrap();
            let r = (lp(z) - lp(z0)).exp() as f64;
            let rc = r.clamp(0.8, 1.2);
            let want = -(adv as f64 * r).min(adv as f64 * rc);
            assert!(
                (loss.policy - want).abs() < 1e-5,
                "{} vs {want}",
                loss.policy
            );
            assert_eq!(loss.clip_fraction > 0.5, (r - 1.0).abs() > 0.2);
            let g = loss.total.backward().unwrap();
            let gz = g
                .get(zvar.as_tensor())
                .map(|t| t.to_vec1::<f32>().unwrap()[0])
                .unwrap_or(0.0);
            assert_eq!(gz != 0.0, expect_grad, "z {z} adv {adv}: grad {gz}");
        }
    }

    #[test]
    fn entropy_and_value_terms() {
        let dev = Device::Cpu;
        let cfg = PpoConfig::default();
        let logits = Tensor::zeros((2, 2), DType::F32, &dev).unwrap();
        let values = Tensor::from_slice(&[0f32, 3.0], 2, &dev).unwrap();
        let lp = -(2f32.ln());
        let m = mb(&dev, &[1.0, -1.0], &[lp, lp]);
        let loss = ppo_loss(&logits, &values, &m, &cfg).unwrap();
        assert!((loss.entropy - 2f64.ln()).abs() < 1e-6);
        // ½·mean((0 − 1)², (3 − 1)²) = 1.25
        assert!((loss.value - 1.25).abs() < 1e-6);
        assert!(loss.approx_kl.abs() < 1e-7 && loss.policy.abs() < 1e-7);
        let total = loss.total.to_scalar::<f32>().unwrap() as f64;
        assert!((total - (0.5 * 1.25 - 0.01 * 2f64.ln())).abs() < 1e-6);
    }

    #[test]
    fn tensor_names_follow_sequential_convention() {
        let spec = crate::envs::TaskFamily::from_id("dark_room")
            .unwrap()
            .spec()
            .clone();
        let agent = Ppo::new(PpoConfig::default(), &spec, &Device::Cpu, 0).unwrap();
        let mut names: Vec<String> = agent.store.vars().keys().cloned().collect();
        names.sort();
        assert_eq!(names, expected_tensor_names(&PpoConfig::default()));
        assert!(names.contains(&"actor.6.weight".to_string()));
        assert_eq!(agent.store.get("actor.6.weight").unwrap().dims(), &[5, 128]);
        // one-hot (x, y): 9 + 9 inputs
        assert_eq!(
            agent.store.get("critic.0.weight").unwrap().dims(),
            &[128, 18]
        );
    }

    #[test]
    fn observation_encodings() {
        use crate::envs::Bounds;
        let space = Space::Box {
            shape: vec![3],
            low: Bounds::PerDim(vec![0.0, -1.0, f32::NEG_INFINITY]),
            high: Bounds::PerDim(vec![2.0, 0.5, f32::INFINITY]),
        };
        let obs = [2.0f32, 0.5, 7.0, 0.0, -1.0, -3.0];
        let one_hot = ObsEncoder::new(ObsEncoding::OneHot, &space);
        assert_eq!(one_hot.input_dim(), 5);
        assert_eq!(
            one_hot.encode(&obs),
            vec![0.0, 0.0, 1.0, 1.0, 7.0, 1.0, 0.0, 0.0, -1.0, -3.0]
        );
        let scaled = ObsEncoder::new(ObsEncoding::Scaled, &space);
        assert_eq!(scaled.input_dim(), 3);
        assert_eq!(scaled.encode(&obs), vec![1.0, 1.0, 7.0, -1.0, -1.0, -3.0]);
        let raw = ObsEncoder::new(ObsEncoding::Raw, &space);
        assert_eq!(raw.encode(&obs), obs.to_vec());
    }
}

#[cfg(test)]
mod memory_tests {
    use super::*;
    use crate::envs::{EnvConfig, TaskFamily};

    fn ppo(memory: Memory) -> Ppo {
        let family = TaskFamily::new(&EnvConfig::new("dark_key_to_door")).unwrap();
        let cfg = PpoConfig {
            memory,
            hidden: vec![8],
            rollout_steps: 4,
            num_minibatches: 1,
            ..PpoConfig::default()
        };
        Ppo::new(cfg, family.spec(), &Device::Cpu, 0).unwrap()
    }

    fn step(p: &mut Ppo, obs: [f32; 4], rewards: [f32; 2], ended: [bool; 2]) {
        let mut a = ActionBuf::Discrete(vec![0, 0]);
        p.act(&obs, true, 0, &mut a).unwrap();
        p.observe(&Experience {
            obs: &obs,
            actions: &a,
            rewards: &rewards,
            next_obs: &obs,
            terminated: &ended,
            truncated: &[false, false],
        })
        .unwrap();
    }

    /// The episode's return so far is the input after the observation's one-hot code: stored
    /// with each row, reset when the episode ends, saved for resume, and kept apart from the
    /// memory of greedy evaluations.
    #[test]
    fn episode_return_memory_is_stored_reset_and_resumed() {
        let mut p = ppo(Memory::EpisodeReturn);
        assert_eq!(p.row_dim(), 3);
        let obs = [1.0, 2.0, 3.0, 4.0];
        step(&mut p, obs, [1.0, 0.0], [false, false]);
        step(&mut p, obs, [0.0, 1.0], [false, true]);
        step(&mut p, obs, [0.0, 0.0], [false, false]);
        // rows: (obs, memory before the step)
        let mem: Vec<f32> = p.rollout.obs.chunks(3).map(|r| r[2]).collect();
        assert_eq!(mem, [0.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        assert_eq!(p.memory.returns, [1.0, 0.0]);
        // the last bootstrap state remembers the last reward
        assert_eq!(&p.rollout.last_next_obs, &[1.0, 2.0, 1.0, 3.0, 4.0, 0.0]);
        // the network reads the one-hot code (9 + 9) and then the memory
        let x = p.obs_tensor(&[1.0, 2.0, 0.5]).unwrap();
        let x: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(x.len(), 19);
        assert_eq!((x[1], x[9 + 2], x[18]), (1.0, 1.0, 0.5));
        // evaluation has its own memory
        p.eval_begin(1);
        p.eval_observe(&crate::eval::Feedback {
            actions: &ActionBuf::Discrete(vec![0]),
            rewards: &[1.0],
            terminated: &[false],
            truncated: &[false],
            next_obs: &[1.0, 2.0],
        });
        assert_eq!(p.eval_memory.returns, [1.0]);
        assert_eq!(p.memory.returns, [1.0, 0.0]);
        // resume
        let mut data = p.save(true).unwrap();
        data.trainer_state = Some(serde_json::json!({ "agent": data.trainer_state }));
        let mut q = ppo(Memory::EpisodeReturn);
        q.load(&data).unwrap();
        assert_eq!(q.memory.returns, [1.0, 0.0]);
        assert_eq!(q.rollout.obs, p.rollout.obs);
        // without a memory the rows are the observations
        let mut p = ppo(Memory::None);
        step(&mut p, obs, [1.0, 0.0], [false, false]);
        assert_eq!(p.rollout.obs, obs);
    }
}
