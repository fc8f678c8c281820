//! Soft Actor-Critic with MLP networks (`--algo sac`; Haarnoja et al., "Soft Actor-Critic
//! Algorithms and Applications", 2018) or SimbaV2 networks (`--algo simbav2`; Lee et al.,
//! "Hyperspherical Normalization for Scalable Deep Reinforcement Learning", ICML 2025).
//!
//! One agent, two sets of defaults, as `dqn`/`c51` share [`super::dqn`]:
//! - `sac` follows CleanRL's `sac_continuous_action.py`: actor and twin critics 256-256 ReLU MLPs
//!   with PyTorch's default init, log-std squashed into [−5, 2], Adam lr 3e-4 (actor) / 1e-3
//!   (critics and temperature), batch 256, buffer 1M, 5,000 random steps (5% of a shorter run:
//!   `learning_starts = { fraction = 0.05, at_most = 5_000 }`), γ 0.99, τ 0.005,
//!   automatic entropy tuning toward −|A| from α = 1, and the actor (with the temperature)
//!   updated every second step, twice (`actor_update_interval = 2`, CleanRL's
//!   `policy_frequency`). Update order: critic, actor, temperature, target.
//! - `simbav2` follows Lee et al. (2025): [`crate::nn::hyperspherical`] actor (1 block × 128) and
//!   critic (2 blocks × 512), 101-atom categorical critic on [−5, 5] with the C51 projection,
//!   log-std in [−10, 2], running observation normalisation, reward scaling with G_max = 5,
//!   temperature from 0.01 toward −|A|/2, Adam (no weight decay) with lr linear 1e-4 → 5e-5
//!   over the run's updates (`steps = { fraction = 1.0 }`),
//!   γ from the horizon, and the update order actor, temperature, critic, target. Every kernel
//!   is re-projected onto unit rows after each optimiser step.
//!
//! Choices the spec leaves open, written down here:
//! - Actions are produced in [−1, 1] and rescaled to the environment's box; the replay stores
//!   the normalised action, and log-probabilities and the entropy target refer to it (as SB3 and
//!   SimbaV2's action-rescaling wrapper do).
//! - Observations and rewards are stored raw; normalisation and reward scaling use the current
//!   running statistics when a batch is sampled (and when acting). Statistics update in
//!   `observe`, from the observation the action was taken in.
//! - With `clipped_double_q = false` the critic is a single network (SimbaV2 switches the twin
//!   off for non-episodic tasks). With the twin on, the categorical target comes, per sample,
//!   from the target critic of lower expected value, and the actor maximises the lower expected
//!   Q.
//! - The target network is a plain Polyak average; its kernels are not re-projected.
//! - The temperature's learning rate is a separate schedule (1e-4 constant for SimbaV2).
//! - The linear lr decay counts gradient updates; a fractional `steps` resolves against the
//!   run's updates, `(budget − learning_starts) × utd`.
//!
//! The losses are pure functions of tensors in [`losses`] (re-exported here), each with its
//! equation and a test on a hand-worked batch; this file holds the networks, the agent, and the
//! update loop that samples noise, runs the networks and steps the optimisers around them.
//!
//! Metrics: losses, α, entropy, Q; every `diagnostics_interval` updates also per-layer feature
//! norms, weight norms and effective learning rate `‖ΔW‖/‖W‖` of one step (after projection:
//! the angular step on the sphere), the quantities the SimbaV2 paper plots (Fig. 3–4).

use super::{Agent, Experience, Metrics, PolicyOutput};
use crate::checkpoint::{raw_to_tensors, tensors_to_raw, CheckpointData};
use crate::envs::ActionBuf;
use crate::envs::{EnvSpec, Space};
use crate::error::{Error, Result};
use crate::nn::hyperspherical::{self, FeatureLog, HyperNet};
use crate::nn::linear::linear;
use crate::nn::optim::AdamState;
use crate::nn::running_norm::{RewardScaler, RunningMeanStd};
use crate::nn::{
    tanh_gaussian, Activation, Adam, AdamConfig, CategoricalSupport, Init, Linear, Mlp, MlpInit,
    ParamStore, Schedule, SnMode, Steps,
};
use crate::replay::{Batch, ReplayBuffer};
use crate::rng::Rng;
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

mod losses;
pub use losses::{
    categorical_critic_loss, mse_critic_loss, sac_actor_loss, sac_critic_loss, sac_critic_target,
    temperature_loss, CriticTarget,
};

/// Which networks the agent uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SacBody {
    /// ReLU MLPs (`network.hidden`).
    Mlp,
    /// SimbaV2 hyperspherical networks (`network.actor_*`, `network.critic_*`).
    Simbav2,
}

/// Network sizes. `hidden` is read by the MLP body, the `actor_*`/`critic_*` fields by SimbaV2.
///
/// In a config file the table is tagged by `body` and takes only that body's keys
/// ([`SacNetSpec`]), so a size meant for the other body is refused instead of ignored; the
/// fields of the body not in use keep their defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "SacNetSpec", into = "SacNetSpec")]
pub struct SacNetConfig {
    pub body: SacBody,
    pub hidden: Vec<usize>,
    pub actor_hidden: usize,
    pub actor_blocks: usize,
    pub critic_hidden: usize,
    pub critic_blocks: usize,
}

impl Default for SacNetConfig {
    fn default() -> Self {
        Self {
            body: SacBody::Mlp,
            hidden: vec![256, 256],
            actor_hidden: 128,
            actor_blocks: 1,
            critic_hidden: 512,
            critic_blocks: 2,
        }
    }
}

/// [`SacNetConfig`] as written in config files and `config.json`: `body = "mlp"` with
/// `hidden`, or `body = "simbav2"` with `actor_hidden`, `actor_blocks`, `critic_hidden` and
/// `critic_blocks`; a key of the other body is an error that names it. Keys left out take the
/// defaults of [`SacNetConfig::default`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "body", rename_all = "snake_case", deny_unknown_fields)]
pub enum SacNetSpec {
    Mlp {
        #[serde(default = "default_hidden")]
        hidden: Vec<usize>,
    },
    Simbav2 {
        #[serde(default = "default_actor_hidden")]
        actor_hidden: usize,
        #[serde(default = "default_actor_blocks")]
        actor_blocks: usize,
        #[serde(default = "default_critic_hidden")]
        critic_hidden: usize,
        #[serde(default = "default_critic_blocks")]
        critic_blocks: usize,
    },
}

fn default_hidden() -> Vec<usize> {
    SacNetConfig::default().hidden
}
fn default_actor_hidden() -> usize {
    SacNetConfig::default().actor_hidden
}
fn default_actor_blocks() -> usize {
    SacNetConfig::default().actor_blocks
}
fn default_critic_hidden() -> usize {
    SacNetConfig::default().critic_hidden
}
fn default_critic_blocks() -> usize {
    SacNetConfig::default().critic_blocks
}

impl From<SacNetSpec> for SacNetConfig {
    fn from(spec: SacNetSpec) -> Self {
        match spec {
            SacNetSpec::Mlp { hidden } => Self {
                body: SacBody::Mlp,
                hidden,
                ..Self::default()
            },
            SacNetSpec::Simbav2 {
                actor_hidden,
                actor_blocks,
                critic_hidden,
                critic_blocks,
            } => Self {
                body: SacBody::Simbav2,
                actor_hidden,
                actor_blocks,
                critic_hidden,
                critic_blocks,
                ..Self::default()
            },
        }
    }
}

impl From<SacNetConfig> for SacNetSpec {
    fn from(c: SacNetConfig) -> Self {
        match c.body {
            SacBody::Mlp => SacNetSpec::Mlp { hidden: c.hidden },
            SacBody::Simbav2 => SacNetSpec::Simbav2 {
                actor_hidden: c.actor_hidden,
                actor_blocks: c.actor_blocks,
                critic_hidden: c.critic_hidden,
                critic_blocks: c.critic_blocks,
            },
        }
    }
}

/// How a raw log-std output becomes one in `[min, max]` ([`SacConfig::log_std_bound`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStdBound {
    /// `min + (max − min)(tanh(x) + 1)/2`.
    #[default]
    Tanh,
    /// `clamp(x, min, max)`.
    Clip,
}

impl LogStdBound {
    fn is_tanh(&self) -> bool {
        *self == LogStdBound::Tanh
    }
}

/// SAC / SimbaV2 hyperparameters (defaults: CleanRL's SAC; [`SacConfig::simbav2`]: the paper's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SacConfig {
    pub network: SacNetConfig,
    pub actor_lr: Schedule,
    pub critic_lr: Schedule,
    pub temperature_lr: Schedule,
    pub optimizer: AdamConfig,
    /// Discount; absent: from the horizon H, `clip((H/5 − 1)/(H/5), 0.95, 0.995)` (SimbaV2).
    pub gamma: Option<f64>,
    /// Polyak coefficient of the target critic, applied after every critic update.
    pub tau: f64,
    pub buffer_size: usize,
    pub batch_size: usize,
    /// No updates before this many environment steps, and (with `random_start`) uniformly
    /// random actions until then.
    pub learning_starts: Steps,
    /// Act uniformly at random until `learning_starts` (off for students that start from a
    /// teacher's competence: they fill the replay with their own policy's actions).
    pub random_start: bool,
    /// Gradient updates per environment step (update-to-data ratio).
    pub utd: usize,
    /// The actor and temperature update every this many critic updates, this many times.
    pub actor_update_interval: u64,
    pub actor_first: bool,
    pub clipped_double_q: bool,
    pub autotune_temperature: bool,
    pub initial_temperature: f64,
    /// Target entropy = −scale · |A|.
    pub target_entropy_scale: f64,
    pub log_std_min: f64,
    pub log_std_max: f64,
    /// How the actor's raw log-std is kept in `[log_std_min, log_std_max]`: `tanh` (squashed,
    /// CleanRL and SimbaV2) or `clip` (clamped, Stable-Baselines3's SAC with bounds −20, 2).
    #[serde(skip_serializing_if = "LogStdBound::is_tanh")]
    pub log_std_bound: LogStdBound,
    /// Critic atoms: 1 = scalar Q with MSE loss; > 1 = categorical on [v_min, v_max].
    pub atoms: usize,
    pub v_min: f64,
    pub v_max: f64,
    pub normalize_observations: bool,
    pub scale_rewards: bool,
    pub reward_g_max: f64,
    /// Feature/weight norms and effective learning rates every this many updates (0: never).
    pub diagnostics_interval: u64,
}

impl Default for SacConfig {
    fn default() -> Self {
        Self {
            network: SacNetConfig::default(),
            actor_lr: Schedule::constant(3e-4),
            critic_lr: Schedule::constant(1e-3),
            temperature_lr: Schedule::constant(1e-3),
            optimizer: AdamConfig::default(),
            gamma: Some(0.99),
            tau: 0.005,
            buffer_size: 1_000_000,
            batch_size: 256,
            learning_starts: Steps::Fraction {
                fraction: 0.05,
                at_most: Some(5_000),
            },
            random_start: true,
            utd: 1,
            actor_update_interval: 2,
            actor_first: false,
            clipped_double_q: true,
            autotune_temperature: true,
            initial_temperature: 1.0,
            target_entropy_scale: 1.0,
            log_std_min: -5.0,
            log_std_max: 2.0,
            log_std_bound: LogStdBound::Tanh,
            atoms: 1,
            v_min: -5.0,
            v_max: 5.0,
            normalize_observations: false,
            scale_rewards: false,
            reward_g_max: 5.0,
            diagnostics_interval: 1000,
        }
    }
}

impl SacConfig {
    /// SimbaV2's defaults (Lee et al. 2025).
    pub fn simbav2() -> Self {
        let lr = Schedule::Linear {
            start: 1e-4,
            end: 5e-5,
            steps: Steps::fraction(1.0),
        };
        Self {
            network: SacNetConfig {
                body: SacBody::Simbav2,
                ..SacNetConfig::default()
            },
            actor_lr: lr.clone(),
            critic_lr: lr,
            temperature_lr: Schedule::constant(1e-4),
            gamma: None,
            actor_update_interval: 1,
            actor_first: true,
            initial_temperature: 0.01,
            target_entropy_scale: 0.5,
            log_std_min: -10.0,
            log_std_max: 2.0,
            atoms: 101,
            normalize_observations: true,
            scale_rewards: true,
            ..Self::default()
        }
    }

    /// The config with every fraction resolved against a run of `budget` environment steps
    /// (learning starts in steps, linear learning-rate schedules in the run's updates);
    /// `None` refuses fractions (see [`crate::nn::Steps`]).
    pub fn resolve(mut self, budget: Option<u64>) -> Result<Self> {
        self.learning_starts = self
            .learning_starts
            .resolve(budget, "agent.learning_starts")?;
        let updates = budget.map(|b| self.updates(b));
        self.actor_lr = self.actor_lr.resolve(updates, "agent.actor_lr")?;
        self.critic_lr = self.critic_lr.resolve(updates, "agent.critic_lr")?;
        self.temperature_lr = self
            .temperature_lr
            .resolve(updates, "agent.temperature_lr")?;
        Ok(self)
    }

    /// Gradient updates a run of `budget` environment steps makes (learning starts resolved).
    pub fn updates(&self, budget: u64) -> u64 {
        budget.saturating_sub(self.learning_starts.count()) * self.utd as u64
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.batch_size == 0 || self.buffer_size == 0 || self.utd == 0 {
            return bad(
                "agent.batch_size, agent.buffer_size and agent.utd must be at least 1".into(),
            );
        }
        if self.batch_size > self.buffer_size || self.utd > 1024 {
            return bad(format!(
                "agent.batch_size = {} must be at most agent.buffer_size = {} (a batch is drawn from the buffer) and agent.utd = {} at most 1024",
                self.batch_size, self.buffer_size, self.utd
            ));
        }
        if self.actor_update_interval == 0 {
            return bad("agent.actor_update_interval must be at least 1".into());
        }
        if let Some(g) = self.gamma {
            if !(0.0..=1.0).contains(&g) {
                return bad(format!("agent.gamma must be in [0, 1], got {g}"));
            }
        }
        if !(0.0..=1.0).contains(&self.tau) {
            return bad(format!("agent.tau must be in [0, 1], got {}", self.tau));
        }
        if self.initial_temperature <= 0.0 || self.log_std_min >= self.log_std_max {
            return bad(format!(
                "agent.initial_temperature must be > 0 and agent.log_std_min < agent.log_std_max, \
                 got {}, [{}, {}]",
                self.initial_temperature, self.log_std_min, self.log_std_max
            ));
        }
        if self.atoms == 0 {
            return bad("agent.atoms must be 1 (scalar Q) or more (categorical)".into());
        }
        if self.atoms > 1 {
            CategoricalSupport::new(self.atoms, self.v_min, self.v_max)?;
        }
        if self.reward_g_max <= 0.0 {
            return bad(format!(
                "agent.reward_g_max must be > 0, got {}",
                self.reward_g_max
            ));
        }
        let n = &self.network;
        let sizes_ok = match n.body {
            SacBody::Mlp => !n.hidden.is_empty() && n.hidden.iter().all(|&h| h > 0),
            SacBody::Simbav2 => n.actor_hidden > 0 && n.critic_hidden > 0,
        };
        if !sizes_ok {
            return bad(format!(
                "agent.network: layer sizes must be positive, got {n:?}"
            ));
        }
        self.actor_lr.validate("agent.actor_lr")?;
        self.critic_lr.validate("agent.critic_lr")?;
        self.temperature_lr.validate("agent.temperature_lr")
    }

    /// The discount for an environment with `horizon` steps per episode.
    pub fn discount(&self, horizon: usize) -> f64 {
        self.gamma.unwrap_or_else(|| {
            let h = horizon as f64 / 5.0;
            ((h - 1.0) / h).clamp(0.95, 0.995)
        })
    }
}

/// A parameter, or a detached alias of it (see [`crate::nn::hyperspherical`]).
fn view(v: &Var, grad: bool) -> Tensor {
    if grad {
        v.as_tensor().clone()
    } else {
        v.as_detached_tensor()
    }
}

/// The MLP body of SAC's actor and critics: ReLU, PyTorch's default init, layers `PREFIX.i`.
fn relu_mlp(store: &mut ParamStore, prefix: &str, sizes: &[usize]) -> Result<Mlp> {
    Mlp::new(store, prefix, sizes, Activation::Relu, MlpInit::Torch, 1)
}

/// Actor: `(mean, raw log-std)` heads over a body.
enum ActorNet {
    Mlp {
        body: Mlp,
        mean: Linear,
        log_std: Linear,
    },
    Hyper(HyperNet),
}

/// One critic: `(batch, atoms)` outputs for `[obs, action]`.
enum CriticNet {
    Mlp(Mlp),
    Hyper(HyperNet),
}

impl ActorNet {
    fn new(c: &SacNetConfig, store: &mut ParamStore, obs: usize, act: usize) -> Result<Self> {
        Ok(match c.body {
            SacBody::Mlp => {
                let mut sizes = vec![obs];
                sizes.extend(&c.hidden);
                let body = relu_mlp(store, "actor.body", &sizes)?;
                let h = *sizes.last().unwrap_or(&obs);
                let mean = Linear::new(store.pp("actor.mean"), h, act, SnMode::Off)?;
                let log_std = Linear::new(store.pp("actor.log_std"), h, act, SnMode::Off)?;
                ActorNet::Mlp {
                    body,
                    mean,
                    log_std,
                }
            }
            SacBody::Simbav2 => ActorNet::Hyper(HyperNet::new(
                &mut store.pp("actor"),
                obs,
                c.actor_hidden,
                c.actor_blocks,
                &[("mean", act), ("log_std", act)],
                hyperspherical::ORTHOGONAL,
            )?),
        })
    }

    fn forward(
        &self,
        obs: &Tensor,
        grad: bool,
        mut log: FeatureLog<'_>,
    ) -> Result<(Tensor, Tensor)> {
        match self {
            ActorNet::Mlp {
                body,
                mean,
                log_std,
            } => {
                let h = body.forward_fused(obs, grad, &mut log, true)?;
                let head = |l: &Linear| -> Result<Tensor> {
                    let b = l.bias().map(|b| view(b, grad));
                    Ok(linear(&h, &view(l.weight(), grad), b.as_ref())?)
                };
                Ok((head(mean)?, head(log_std)?))
            }
            ActorNet::Hyper(net) => {
                let mut out = net.forward(obs, grad, log)?;
                let log_std = out
                    .pop()
                    .ok_or_else(|| Error::Training("actor head".into()))?;
                let mean = out
                    .pop()
                    .ok_or_else(|| Error::Training("actor head".into()))?;
                Ok((mean, log_std))
            }
        }
    }
}

impl CriticNet {
    /// `fresh = false` builds a copy whose values are set right after (a target network).
    fn new(
        c: &SacNetConfig,
        store: &mut ParamStore,
        prefix: &str,
        in_dim: usize,
        atoms: usize,
        fresh: bool,
    ) -> Result<Self> {
        Ok(match c.body {
            SacBody::Mlp => {
                let mut sizes = vec![in_dim];
                sizes.extend(&c.hidden);
                sizes.push(atoms);
                CriticNet::Mlp(relu_mlp(store, prefix, &sizes)?)
            }
            SacBody::Simbav2 => CriticNet::Hyper(HyperNet::new(
                &mut store.pp(prefix),
                in_dim,
                c.critic_hidden,
                c.critic_blocks,
                &[("head", atoms)],
                if fresh {
                    hyperspherical::ORTHOGONAL
                } else {
                    Init::Zeros
                },
            )?),
        })
    }

    fn forward(&self, x: &Tensor, grad: bool, mut log: FeatureLog<'_>) -> Result<Tensor> {
        match self {
            CriticNet::Mlp(m) => m.forward_fused(x, grad, &mut log, false),
            CriticNet::Hyper(net) => net
                .forward(x, grad, log)?
                .pop()
                .ok_or_else(|| Error::Training("critic head".into())),
        }
    }
}

/// One critic's loss on `x` toward `target` ([`sac_critic_loss`]), and its detached output.
fn critic_term(c: &CriticNet, x: &Tensor, target: &CriticTarget) -> Result<(Tensor, Tensor)> {
    let out = c.forward(x, true, None)?;
    Ok((sac_critic_loss(&out, target)?, out.detach()))
}

/// A critic's Q-values `(batch,)` from its output: the expected value of a categorical
/// critic's distribution (`support`), or the scalar head.
fn q_of_output(support: Option<&CategoricalSupport>, out: &Tensor) -> Result<Tensor> {
    match support {
        Some(s) => s.expected_value(out),
        None => Ok(out.squeeze(D::Minus1)?),
    }
}

/// `f` on every critic, twin critics side by side ([`crate::device::join_for`]).
fn each_critic<R: Send>(
    nets: &[CriticNet],
    work: usize,
    f: impl Fn(&CriticNet) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    match nets {
        [a, b] => {
            let (ra, rb) = crate::device::join_for(work, || f(a), || f(b));
            Ok(vec![ra?, rb?])
        }
        nets => nets.iter().map(f).collect(),
    }
}

/// Each net's output on `x`; twins side by side when each pass has `work` multiply-adds worth
/// splitting ([`crate::device::join_for`]).
fn forward_each(nets: &[CriticNet], x: &Tensor, grad: bool, work: usize) -> Result<Vec<Tensor>> {
    each_critic(nets, work, |c| c.forward(x, grad, None))
}

/// Every weight matrix of a store, for weight norms and effective learning rates: the
/// hyperspherical kernels (`*.weight`) of SimbaV2 and the linear weights of the MLPs.
fn weight_vars(store: &ParamStore) -> Vec<(String, Var)> {
    store
        .vars()
        .iter()
        .filter(|(n, _)| n.ends_with(".weight"))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// What a reincarnation method ([`crate::reincarnation`]) adds to the SAC update, as
/// [`super::dqn::DqnHook`] does for the DQN family: an extra term in the actor's loss on each
/// sampled batch (actor distillation toward a Gaussian teacher) and a view of every stored
/// step (the student's returns, for the distillation weight's schedule). Critic pretraining
/// needs no hook: [`Sac::offline_step`] runs the ordinary update on batches of given data.
/// Without a hook the update is plain SAC.
pub trait SacHook {
    /// Sees every batched step the agent stores.
    fn observe(&mut self, _exp: &Experience<'_>) -> Result<()> {
        Ok(())
    }
    /// An extra actor-loss term on the batch: `obs` are the batch's raw observations (as
    /// stored, `(batch, obs_dim)` row-major, for a teacher that normalises its own inputs);
    /// `mean` and `log_std` the student's pre-tanh Gaussian `(batch, actions)` with gradients.
    /// `step` is the environment step of the update (0 in an offline phase).
    fn actor_loss(
        &mut self,
        obs: &[f32],
        mean: &Tensor,
        log_std: &Tensor,
        step: u64,
    ) -> Result<Option<(Tensor, Metrics)>>;
    /// Teacher transitions (actions in [−1, 1], see [`Sac::adopt_data`]) and the fraction of
    /// each online batch drawn from them (rehearsal).
    fn rehearsal(&self) -> Option<(&ReplayBuffer, f64)> {
        None
    }
    /// State to save for an exact resume, and its restore.
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn load_state(&mut self, _state: &serde_json::Value) -> Result<()> {
        Ok(())
    }
}

/// The SAC-family agent.
pub struct Sac {
    algorithm: String,
    config: SacConfig,
    env: EnvSpec,
    obs_dim: usize,
    act_dim: usize,
    action_scale: Vec<f32>,
    action_bias: Vec<f32>,
    gamma: f64,
    device: Device,
    actor_store: ParamStore,
    actor: ActorNet,
    critic_store: ParamStore,
    critics: Vec<CriticNet>,
    target_store: ParamStore,
    targets: Vec<CriticNet>,
    temp_store: ParamStore,
    log_alpha: Var,
    actor_opt: Adam,
    critic_opt: Adam,
    temp_opt: Adam,
    support: Option<CategoricalSupport>,
    obs_norm: Option<RunningMeanStd>,
    reward_scaler: Option<RewardScaler>,
    replay: ReplayBuffer,
    rng: Rng,
    updates: u64,
    batch: Batch,
    /// The latest per-layer norms and effective learning rates (logged by `diagnostics`).
    norm_metrics: Metrics,
    hook: Option<Box<dyn SacHook>>,
    /// The environment step of the current update, for the hook.
    hook_step: u64,
    /// Multiply-adds of one critic's forward pass on a batch (batch × parameters), for
    /// [`crate::device::join_for`].
    critic_work: usize,
}

/// Diagnostics taken before an update: feature norms and every weight matrix's values.
struct Snapshot {
    features: Metrics,
    weights: Vec<(String, Var, Vec<f32>)>,
}

/// A sampled batch as tensors, observations normalised and rewards scaled.
pub struct Prepared {
    /// The observations as stored, for a hook's teacher.
    raw_obs: Vec<f32>,
    obs: Tensor,
    act: Tensor,
    next: Tensor,
    rewards: Vec<f32>,
    discounts: Vec<f32>,
}

/// What an exact resume restores besides tensors: the `agent` object of `trainer_state.json`.
/// Decoded strictly ([`crate::agents::decode_resume_state`]): a missing, mistyped or unknown key is an
/// error that names it, never a silent default (a step counter read as 0 would restart Adam's
/// bias correction).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SacResumeState {
    rng: Rng,
    updates: u64,
    optimizer_steps: OptimizerSteps,
    /// The replay buffer's counters ([`ReplayBuffer::export`]); its arrays are in `replay.safetensors`.
    replay: serde_json::Value,
    #[serde(deserialize_with = "crate::checkpoint::required")]
    reward_scaler: Option<RewardScaler>,
    norm_metrics: Metrics,
    /// The reincarnation hook's state ([`SacHook::state`]); null without a hook.
    hook: serde_json::Value,
}

/// Adam's step counts (its bias correction), one per optimiser.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptimizerSteps {
    actor: u64,
    critic: u64,
    temperature: u64,
}

impl Sac {
    pub fn new(
        algorithm: &str,
        config: SacConfig,
        env: &EnvSpec,
        device: &Device,
        seed: u64,
        budget: Option<u64>,
    ) -> Result<Self> {
        let config = config.resolve(budget)?;
        config.validate()?;
        crate::device::configure_cpu_threads(None);
        let (act_dim, action_scale, action_bias) = match &env.action_space {
            Space::Box { shape, low, high } => {
                let d: usize = shape.iter().product();
                let (mut s, mut b) = (Vec::with_capacity(d), Vec::with_capacity(d));
                for i in 0..d {
                    let (lo, hi) = (low.get(i), high.get(i));
                    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                        return Err(Error::Config(format!(
                            "{algorithm} needs a bounded action box, but `{}` has [{lo}, {hi}] in dimension {i}",
                            env.id()
                        )));
                    }
                    s.push((hi - lo) / 2.0);
                    b.push((hi + lo) / 2.0);
                }
                (d, s, b)
            }
            other => {
                return Err(Error::Config(format!(
                    "{algorithm} needs continuous (box) actions, but `{}` has {other}",
                    env.id()
                )))
            }
        };
        let obs_dim = env.observation_space.flat_dim();
        let n_critics = if config.clipped_double_q { 2 } else { 1 };
        let mut actor_store = ParamStore::new(device, crate::rng::derive_seed(seed, 1));
        let actor = ActorNet::new(&config.network, &mut actor_store, obs_dim, act_dim)?;
        let build_critics = |store: &mut ParamStore, fresh: bool| -> Result<Vec<CriticNet>> {
            (0..n_critics)
                .map(|i| {
                    CriticNet::new(
                        &config.network,
                        store,
                        &format!("critic.{i}"),
                        obs_dim + act_dim,
                        config.atoms,
                        fresh,
                    )
                })
                .collect()
        };
        let mut critic_store = ParamStore::new(device, crate::rng::derive_seed(seed, 2));
        let critics = build_critics(&mut critic_store, true)?;
        let mut target_store = ParamStore::new(device, crate::rng::derive_seed(seed, 3));
        let targets = build_critics(&mut target_store, false)?;
        target_store.copy_from(&critic_store)?;
        let mut temp_store = ParamStore::new(device, 0);
        let log_alpha = temp_store.var(
            "log_alpha",
            &[1],
            Init::Const(config.initial_temperature.ln() as f32),
        )?;
        let actor_opt = Adam::new(actor_store.trainable(), config.optimizer.clone())?;
        let critic_opt = Adam::new(critic_store.trainable(), config.optimizer.clone())?;
        let temp_opt = Adam::new(temp_store.trainable(), config.optimizer.clone())?;
        let support = (config.atoms > 1)
            .then(|| CategoricalSupport::new(config.atoms, config.v_min, config.v_max))
            .transpose()?;
        let gamma = config.discount(env.max_episode_steps as usize);
        let critic_work = critic_store.num_params() / n_critics * config.batch_size;
        Ok(Self {
            algorithm: algorithm.to_string(),
            obs_norm: config
                .normalize_observations
                .then(|| RunningMeanStd::new(obs_dim)),
            reward_scaler: config
                .scale_rewards
                .then(|| RewardScaler::new(1, gamma, config.reward_g_max)),
            replay: ReplayBuffer::for_spec(
                config.buffer_size,
                env,
                Some(act_dim),
                "agent.buffer_size",
            )?,
            config,
            env: env.clone(),
            obs_dim,
            act_dim,
            action_scale,
            action_bias,
            gamma,
            device: device.clone(),
            actor_store,
            actor,
            critic_store,
            critics,
            target_store,
            targets,
            temp_store,
            log_alpha,
            actor_opt,
            critic_opt,
            temp_opt,
            support,
            rng: Rng::seed_from_u64(crate::rng::derive_seed(seed, 4)),
            updates: 0,
            batch: Batch::default(),
            norm_metrics: Metrics::new(),
            hook: None,
            hook_step: 0,
            critic_work,
        })
    }

    pub fn config(&self) -> &SacConfig {
        &self.config
    }
    pub fn gamma(&self) -> f64 {
        self.gamma
    }
    pub fn updates(&self) -> u64 {
        self.updates
    }
    /// The actor's and critics' parameters (`actor.*`, `critic.<i>.*`).
    pub fn stores(&self) -> [&ParamStore; 2] {
        [&self.actor_store, &self.critic_store]
    }

    /// Every hyperspherical kernel of the online actor and critics (empty for MLP bodies).
    pub fn hyperspherical_kernels(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        if let ActorNet::Hyper(n) = &self.actor {
            out.extend(n.kernels());
        }
        let mut k: Vec<(String, Tensor)> = out
            .into_iter()
            .map(|k| (k.name().to_string(), k.weight().as_detached_tensor()))
            .collect();
        for c in &self.critics {
            if let CriticNet::Hyper(n) = c {
                k.extend(
                    n.kernels()
                        .into_iter()
                        .map(|k| (k.name().to_string(), k.weight().as_detached_tensor())),
                );
            }
        }
        k
    }

    /// For a student that starts from a teacher's competence: its own policy acts from the first
    /// step instead of uniform random actions until `learning_starts`.
    pub fn start_warm(&mut self) {
        self.config.random_start = false;
    }

    /// Installs (or with `None` removes) a reincarnation method's hook.
    pub fn set_hook(&mut self, hook: Option<Box<dyn SacHook>>) {
        self.hook = hook;
    }

    /// Teacher data as this agent trains on it: actions mapped from the environment's box
    /// into [−1, 1] (datasets and rollouts store environment actions, the agent's replay the
    /// normalised ones), and the observation normaliser and reward scaler fed with the data,
    /// so that an offline phase sees the statistics an agent that had collected the data
    /// would have. Errors name the data's action width when it is not this agent's.
    pub fn adopt_data(&mut self, data: &ReplayBuffer) -> Result<ReplayBuffer> {
        let (d, k) = (self.obs_dim, self.act_dim);
        if data.obs_dim() != d {
            return Err(Error::Config(format!(
                "teacher data: observations have {} values, {} on `{}` expects {d}",
                data.obs_dim(),
                self.algorithm,
                self.env.id()
            )));
        }
        let mut out = ReplayBuffer::new(data.len().max(1), d, Some(k));
        let mut unit = vec![0f32; k];
        for (o, _, a, r, next, term, trunc) in data.iter_ordered() {
            if a.len() != k {
                return Err(Error::Config(format!(
                    "teacher data: actions have {} continuous values, {} on `{}` expects {k}",
                    a.len(),
                    self.algorithm,
                    self.env.id()
                )));
            }
            for (j, u) in unit.iter_mut().enumerate() {
                *u = ((a[j] - self.action_bias[j]) / self.action_scale[j]).clamp(-1.0, 1.0);
            }
            if let Some(n) = self.obs_norm.as_mut() {
                n.update(&o);
            }
            if let Some(s) = self.reward_scaler.as_mut() {
                s.update(&[r], |_| term || trunc);
            }
            out.push(&o, 0, &unit, r, &next, term, trunc)?;
        }
        Ok(out)
    }

    /// One update on a batch of `data` (from [`Sac::adopt_data`]) instead of the agent's own
    /// replay: the offline phase of reincarnation (critic TD updates, and the actor's update
    /// with the hook's term).
    pub fn offline_step(&mut self, data: &ReplayBuffer) -> Result<Metrics> {
        if data.is_empty() {
            return Err(Error::Config("teacher data holds no transitions".into()));
        }
        self.hook_step = 0;
        self.gradient_step(Some(data))
    }

    pub fn alpha(&self) -> Result<f64> {
        Ok(self.log_alpha.as_tensor().exp()?.to_vec1::<f32>()?[0] as f64)
    }

    fn rows(&self, obs: &[f32]) -> Result<usize> {
        super::batch_rows(&self.algorithm, obs, self.obs_dim)
    }

    /// Observations as the networks see them (normalised when configured).
    fn obs_tensor(&self, obs: &[f32]) -> Result<Tensor> {
        let n = self.rows(obs)?;
        match &self.obs_norm {
            Some(norm) => {
                let mut v = obs.to_vec();
                norm.normalize(&mut v);
                Ok(Tensor::from_vec(v, (n, self.obs_dim), &self.device)?)
            }
            None => Ok(Tensor::from_slice(obs, (n, self.obs_dim), &self.device)?),
        }
    }

    fn noise(&mut self, rows: usize) -> Result<Tensor> {
        let v: Vec<f32> = (0..rows * self.act_dim)
            .map(|_| self.rng.normal() as f32)
            .collect();
        Ok(Tensor::from_vec(v, (rows, self.act_dim), &self.device)?)
    }

    /// `(mean, log_std)` of the pre-tanh Gaussian, `(batch, actions)` each.
    pub fn gaussian(&self, obs: &Tensor, grad: bool) -> Result<(Tensor, Tensor)> {
        let (mean, raw) = self.actor.forward(obs, grad, None)?;
        let (lo, hi) = (self.config.log_std_min, self.config.log_std_max);
        let log_std = match self.config.log_std_bound {
            LogStdBound::Tanh => tanh_gaussian::squash_log_std(&raw, lo, hi)?,
            LogStdBound::Clip => raw.clamp(lo, hi)?,
        };
        Ok((mean, log_std))
    }

    /// Each critic's Q-values for observations `obs` (`(batch, obs_dim)` row-major, raw) and
    /// actions in [−1, 1] (`(batch, act_dim)`), one `Vec` per critic.
    pub fn critic_values(&self, obs: &[f32], unit_actions: &[f32]) -> Result<Vec<Vec<f32>>> {
        let rows = unit_actions.len() / self.act_dim.max(1);
        let x = Tensor::cat(
            &[
                &self.obs_tensor(obs)?,
                &Tensor::from_slice(unit_actions, (rows, self.act_dim), &self.device)?,
            ],
            1,
        )?;
        self.q_values(&self.critics, &x, false)?
            .into_iter()
            .map(|q| Ok(q.to_vec1::<f32>()?))
            .collect()
    }

    /// Q-values `(batch,)` of each critic in `nets` for `[obs, action]` rows.
    fn q_values(&self, nets: &[CriticNet], x: &Tensor, grad: bool) -> Result<Vec<Tensor>> {
        forward_each(nets, x, grad, self.critic_work)?
            .iter()
            .map(|out| self.q_of_output(out))
            .collect()
    }

    fn q_of_output(&self, out: &Tensor) -> Result<Tensor> {
        q_of_output(self.support.as_ref(), out)
    }

    fn prepare(&self, b: &Batch) -> Result<Prepared> {
        let n = b.size;
        let scale = self
            .reward_scaler
            .as_ref()
            .map(|s| s.scale() as f32)
            .unwrap_or(1.0);
        Ok(Prepared {
            raw_obs: b.obs.clone(),
            obs: self.obs_tensor(&b.obs)?,
            act: Tensor::from_slice(&b.actions_continuous, (n, self.act_dim), &self.device)?,
            next: self.obs_tensor(&b.next_obs)?,
            rewards: b.returns.iter().map(|r| r * scale).collect(),
            discounts: b.discounts.clone(),
        })
    }

    fn check(&self, what: &str, v: f64) -> Result<f64> {
        if v.is_finite() {
            Ok(v)
        } else {
            Err(Error::NonFinite(format!(
                "{} {what} became {v}",
                self.algorithm
            )))
        }
    }

    /// The critics' input `[obs, action]` and what they are trained toward: the soft TD target
    /// through the minimum of the target critics (scalar Q), or the C51 projection of the
    /// distribution of the target critic of lower expected value, per row (categorical).
    fn critic_target(&mut self, p: &Prepared) -> Result<(Tensor, CriticTarget)> {
        let alpha = self.alpha()?;
        let rows = p.rewards.len();
        let noise = self.noise(rows)?;
        let (mean, log_std) = self.gaussian(&p.next, false)?;
        let (next_act, next_logp) = tanh_gaussian::sample(&mean, &log_std, &noise)?;
        let next_x = Tensor::cat(&[&p.next, &next_act], 1)?;
        let x = Tensor::cat(&[&p.obs, &p.act], 1)?;
        let rewards = Tensor::from_slice(&p.rewards, rows, &self.device)?;
        let discounts = Tensor::from_slice(&p.discounts, rows, &self.device)?;
        let outs = forward_each(&self.targets, &next_x, false, self.critic_work)?;
        let target = sac_critic_target(
            &rewards,
            &discounts,
            &next_logp,
            &outs,
            alpha,
            self.support.as_ref(),
        )?;
        Ok((x, target))
    }

    /// The mean Q-value of a critic's detached output ([`critic_term`]).
    fn q_mean(&self, out: &Tensor) -> Result<f64> {
        let q = self.q_of_output(out)?;
        Ok(q.mean_all()?.to_scalar::<f32>()? as f64)
    }

    /// Actor loss `E[α log π(a|s) − min_i Q_i(s, a)]` with `a ~ π(·|s)` reparameterised (the
    /// critics' weights detached), and the batch's log-probabilities (detached).
    pub fn actor_loss(&mut self, obs: &Tensor) -> Result<(Tensor, Tensor)> {
        let (loss, logp, _, _) = self.actor_loss_parts(obs)?;
        Ok((loss, logp))
    }

    /// [`Sac::actor_loss`] and the Gaussian `(mean, log_std)` it sampled from (with gradients).
    /// What both forms of the actor loss start from: α, the critics' input `[obs, a]` with
    /// `a ~ π(·|obs)` reparameterised, `log π(a|obs)`, and the Gaussian `(mean, log_std)`.
    fn policy_sample(&mut self, obs: &Tensor) -> Result<(f64, Tensor, Tensor, Tensor, Tensor)> {
        let alpha = self.alpha()?;
        let noise = self.noise(obs.dim(0)?)?;
        let (mean, log_std) = self.gaussian(obs, true)?;
        let (act, logp) = tanh_gaussian::sample(&mean, &log_std, &noise)?;
        let x = Tensor::cat(&[obs, &act], 1)?;
        Ok((alpha, x, logp, mean, log_std))
    }

    fn actor_loss_parts(&mut self, obs: &Tensor) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let (alpha, x, logp, mean, log_std) = self.policy_sample(obs)?;
        let qs = self.q_values(&self.critics, &x, false)?;
        let loss = sac_actor_loss(&logp, &qs, alpha)?;
        Ok((loss, logp.detach(), mean, log_std))
    }

    /// The actor loss of [`Sac::actor_loss_parts`] for twin critics, arranged so that the two
    /// critics' backward passes run side by side: the loss is built with the critics' values as
    /// constants, and the gradient of the loss in the critics' input, found by differentiating
    /// each critic on its own, enters through `(x ⊙ ∂L/∂x).sum()` (`x` the critics' input, tied
    /// to the actor). Differentiating the returned surrogate gives the actor the gradient of the
    /// actor loss; one `backward` through both critics would run their chains one after the other.
    /// Returns (loss, surrogate term, log-probabilities (detached), mean, log_std).
    fn actor_loss_twin(
        &mut self,
        obs: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor, Tensor)> {
        let (alpha, x, logp, mean, log_std) = self.policy_sample(obs)?;
        let [a, b] = self.critics.as_slice() else {
            return Err(Error::Training("twin critics expected".into()));
        };
        let support = self.support.as_ref();
        let q_of = |net: &CriticNet, input: &Tensor| -> Result<Tensor> {
            q_of_output(support, &net.forward(input, false, None)?)
        };
        let (xa, xb) = (
            Var::from_tensor(&x.detach())?,
            Var::from_tensor(&x.detach())?,
        );
        let (qa, qb) = crate::device::join_for(self.critic_work, || q_of(a, &xa), || q_of(b, &xb));
        let (qa, qb) = (qa?, qb?);
        // ∂L/∂q per critic, from the loss with the critics' values as leaves.
        let (la, lb) = (
            Var::from_tensor(&qa.detach())?,
            Var::from_tensor(&qb.detach())?,
        );
        let dq = sac_actor_loss(
            &logp.detach(),
            &[la.as_tensor().clone(), lb.as_tensor().clone()],
            alpha,
        )?
        .backward()?;
        let missing = || Error::Training("the actor loss has no gradient in a critic".into());
        let back = |q: &Tensor, leaf: &Var, input: &Var| -> Result<Tensor> {
            let g = dq.get(leaf.as_tensor()).ok_or_else(missing)?;
            let grads = (q * g)?.sum_all()?.backward()?;
            grads.get(input.as_tensor()).cloned().ok_or_else(missing)
        };
        let (ga, gb) = crate::device::join_for(
            self.critic_work,
            || back(&qa, &la, &xa),
            || back(&qb, &lb, &xb),
        );
        let gx = (ga? + gb?)?;
        let loss = sac_actor_loss(&logp, &[qa.detach(), qb.detach()], alpha)?;
        let through = (x * gx)?.sum_all()?;
        Ok((loss, through, logp.detach(), mean, log_std))
    }

    fn actor_step(&mut self, p: &Prepared, m: &mut Metrics) -> Result<()> {
        let (mut loss, through, logp, mean, log_std) = if self.critics.len() == 2 {
            let (loss, through, logp, mean, log_std) = self.actor_loss_twin(&p.obs)?;
            (loss, Some(through), logp, mean, log_std)
        } else {
            let (loss, logp, mean, log_std) = self.actor_loss_parts(&p.obs)?;
            (loss, None, logp, mean, log_std)
        };
        if let Some(hook) = self.hook.as_mut() {
            if let Some((extra, hm)) =
                hook.actor_loss(&p.raw_obs, &mean, &log_std, self.hook_step)?
            {
                m.extend(hm);
                loss = (loss + extra)?;
            }
        }
        let lv = self.check("actor loss", loss.to_scalar::<f32>()? as f64)?;
        let grads = match through {
            Some(t) => (loss + t)?.backward()?,
            None => loss.backward()?,
        };
        let lr = self.config.actor_lr.value(self.updates);
        self.actor_opt.step(&grads, lr)?;
        if let ActorNet::Hyper(n) = &self.actor {
            n.project()?;
        }
        let mean_logp = logp.mean_all()?.to_scalar::<f32>()? as f64;
        m.insert("actor_loss".into(), lv);
        m.insert("entropy".into(), -mean_logp);
        if self.config.autotune_temperature {
            let target = -self.config.target_entropy_scale * self.act_dim as f64;
            let loss = temperature_loss(self.log_alpha.as_tensor(), mean_logp, target)?;
            let grads = loss.backward()?;
            let lr = self.config.temperature_lr.value(self.updates);
            self.temp_opt.step(&grads, lr)?;
        }
        Ok(())
    }

    /// One critic step on the critic loss: MSE per critic for scalar Q, cross-entropy to the
    /// C51-projected target for categorical, summed over the critics. The critics share no
    /// tracked tensor (their input and target carry no gradient), so each one's loss is
    /// differentiated on its own, the twins side by side ([`crate::device::join_for`]); the
    /// gradients equal those of the summed loss. Logs the mean Q of the first critic.
    fn critic_step(&mut self, p: &Prepared, m: &mut Metrics) -> Result<()> {
        let (x, target) = self.critic_target(p)?;
        let term = |c: &CriticNet| -> Result<(Tensor, Tensor, GradStore)> {
            let (loss, out) = critic_term(c, &x, &target)?;
            let grads = loss.backward()?;
            Ok((loss, out, grads))
        };
        let terms = each_critic(&self.critics, self.critic_work, term)?;
        let mut terms = terms.into_iter();
        let (mut loss, q_out, mut grads) = terms
            .next()
            .ok_or_else(|| Error::Training("no critics".into()))?;
        for (l, _, g) in terms {
            loss = (loss + l)?;
            let ids: Vec<_> = g.get_ids().copied().collect();
            for id in ids {
                if let Some(t) = g.get_id(id) {
                    grads.insert_id(id, t.clone());
                }
            }
        }
        let lv = self.check("critic loss", loss.to_scalar::<f32>()? as f64)?;
        let q_mean = self.q_mean(&q_out)?;
        let lr = self.config.critic_lr.value(self.updates);
        self.critic_opt.step(&grads, lr)?;
        each_critic(&self.critics, self.critic_work, |c| match c {
            CriticNet::Hyper(n) => n.project(),
            CriticNet::Mlp(_) => Ok(()),
        })?;
        m.insert("critic_loss".into(), lv);
        m.insert("q_mean".into(), q_mean);
        m.insert("learning_rate".into(), lr);
        Ok(())
    }

    /// One gradient update: sample, (actor, temperature), critic, target — or critic first.
    fn gradient_step(&mut self, data: Option<&ReplayBuffer>) -> Result<Metrics> {
        let mut batch = std::mem::take(&mut self.batch);
        let n = self.config.batch_size;
        let rehearsal = match (data, self.hook.as_ref()) {
            (None, Some(h)) => h.rehearsal(),
            _ => None,
        };
        match rehearsal {
            Some((teacher, fraction)) if !teacher.is_empty() => {
                // the first rows from the teacher's data, the rest from the agent's replay
                let k = crate::replay::rehearsal_rows(fraction, n);
                let mut own = Batch::default();
                teacher.sample_into(k, 1, self.gamma as f32, &mut self.rng, &mut batch);
                self.replay
                    .sample_into(n - k, 1, self.gamma as f32, &mut self.rng, &mut own);
                batch.append(&own);
            }
            _ => data.unwrap_or(&self.replay).sample_into(
                n,
                1,
                self.gamma as f32,
                &mut self.rng,
                &mut batch,
            ),
        }
        let p = self.prepare(&batch);
        self.batch = batch;
        let p = p?;
        let diag = self.config.diagnostics_interval > 0
            && self
                .updates
                .is_multiple_of(self.config.diagnostics_interval);
        let before = if diag { Some(self.snapshot(&p)?) } else { None };
        let mut m = Metrics::new();
        let actor_due = self
            .updates
            .is_multiple_of(self.config.actor_update_interval);
        let actor_times = if actor_due {
            self.config.actor_update_interval
        } else {
            0
        };
        if self.config.actor_first {
            for _ in 0..actor_times {
                self.actor_step(&p, &mut m)?;
            }
            self.critic_step(&p, &mut m)?;
        } else {
            self.critic_step(&p, &mut m)?;
            for _ in 0..actor_times {
                self.actor_step(&p, &mut m)?;
            }
        }
        self.target_store
            .polyak_from(&self.critic_store, self.config.tau)?;
        self.updates += 1;
        if let Some(before) = before {
            self.finish_diagnostics(before)?;
        }
        m.insert("alpha".into(), self.alpha()?);
        m.insert("updates".into(), self.updates as f64);
        if let Some(s) = &self.reward_scaler {
            m.insert("reward_scale".into(), s.scale());
        }
        Ok(m)
    }

    /// Feature norms on the batch and a copy of every weight matrix before the update.
    fn snapshot(&self, p: &Prepared) -> Result<Snapshot> {
        let mut features = Metrics::new();
        let mut feats = Vec::new();
        self.actor.forward(&p.obs, false, Some(&mut feats))?;
        for (name, v) in feats.drain(..) {
            features.insert(format!("feature_norm/actor.{name}"), v);
        }
        let x = Tensor::cat(&[&p.obs, &p.act], 1)?;
        self.critics[0].forward(&x, false, Some(&mut feats))?;
        for (name, v) in feats {
            features.insert(format!("feature_norm/critic.0.{name}"), v);
        }
        let mut weights = Vec::new();
        for store in [&self.actor_store, &self.critic_store] {
            for (n, v) in weight_vars(store) {
                let data: Vec<f32> = v.as_tensor().flatten_all()?.to_vec1()?;
                weights.push((n, v, data));
            }
        }
        Ok(Snapshot { features, weights })
    }

    /// Weight norms and the effective learning rate `‖W_after − W_before‖ / ‖W_before‖` of the
    /// update just taken (after projection, for hyperspherical kernels: the angular step).
    fn finish_diagnostics(&mut self, before: Snapshot) -> Result<()> {
        let mut m = before.features;
        m.insert("diagnostics_update".into(), self.updates as f64);
        for (name, var, old) in before.weights {
            let new: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
            let (mut diff, mut norm_old, mut norm_new) = (0f64, 0f64, 0f64);
            for (a, b) in new.iter().zip(&old) {
                diff += ((a - b) as f64).powi(2);
                norm_old += (*b as f64).powi(2);
                norm_new += (*a as f64).powi(2);
            }
            let layer = name.trim_end_matches(".weight");
            m.insert(format!("weight_norm/{layer}"), norm_new.sqrt());
            m.insert(
                format!("effective_lr/{layer}"),
                diff.sqrt() / norm_old.sqrt().max(1e-12),
            );
        }
        self.norm_metrics = m;
        Ok(())
    }

    fn model_tensors(&self) -> HashMap<String, Tensor> {
        let mut t = self.actor_store.state_dict();
        t.extend(self.critic_store.state_dict());
        t.extend(self.temp_store.state_dict());
        t
    }
}

impl Agent for Sac {
    fn algorithm(&self) -> &str {
        &self.algorithm
    }

    fn act(
        &mut self,
        obs: &[f32],
        explore: bool,
        step: u64,
        actions: &mut ActionBuf,
    ) -> Result<()> {
        let ActionBuf::Continuous(out) = actions else {
            return Err(Error::Env(format!(
                "{} acts with continuous actions",
                self.algorithm
            )));
        };
        let rows = self.rows(obs)?;
        if out.len() != rows * self.act_dim {
            return Err(Error::Env(format!(
                "{}: action buffer holds {} values, expected {rows}×{}",
                self.algorithm,
                out.len(),
                self.act_dim
            )));
        }
        let unit: Vec<f32> =
            if explore && self.config.random_start && step < self.config.learning_starts.count() {
                (0..out.len())
                    .map(|_| self.rng.uniform_range(-1.0, 1.0) as f32)
                    .collect()
            } else {
                let o = self.obs_tensor(obs)?;
                let (mean, log_std) = self.gaussian(&o, false)?;
                let a = if explore {
                    let noise = self.noise(rows)?;
                    tanh_gaussian::sample(&mean, &log_std, &noise)?.0
                } else {
                    mean.tanh()?
                };
                a.flatten_all()?.to_vec1()?
            };
        for (i, (o, u)) in out.iter_mut().zip(unit).enumerate() {
            let d = i % self.act_dim;
            *o = u * self.action_scale[d] + self.action_bias[d];
        }
        Ok(())
    }

    fn observe(&mut self, exp: &Experience<'_>) -> Result<()> {
        let ActionBuf::Continuous(a) = exp.actions else {
            return Err(Error::Env(format!(
                "{} stores continuous actions",
                self.algorithm
            )));
        };
        let (d, k) = (self.obs_dim, self.act_dim);
        let mut unit = vec![0f32; k];
        for i in 0..exp.rewards.len() {
            for (j, u) in unit.iter_mut().enumerate() {
                *u = ((a[i * k + j] - self.action_bias[j]) / self.action_scale[j]).clamp(-1.0, 1.0);
            }
            let o = &exp.obs[i * d..(i + 1) * d];
            if let Some(n) = self.obs_norm.as_mut() {
                n.update(o);
            }
            self.replay.push(
                o,
                0,
                &unit,
                exp.rewards[i],
                &exp.next_obs[i * d..(i + 1) * d],
                exp.terminated[i],
                exp.truncated[i],
            )?;
        }
        if let Some(s) = self.reward_scaler.as_mut() {
            s.update(exp.rewards, |i| exp.terminated[i] || exp.truncated[i]);
        }
        if let Some(hook) = self.hook.as_mut() {
            hook.observe(exp)?;
        }
        Ok(())
    }

    fn update(&mut self, step: u64) -> Result<Option<Metrics>> {
        if step < self.config.learning_starts.count() || self.replay.is_empty() {
            return Ok(None);
        }
        self.hook_step = step;
        let mut m = None;
        for _ in 0..self.config.utd {
            m = Some(self.gradient_step(None)?);
        }
        Ok(m)
    }

    fn diagnostics(&self) -> Result<Metrics> {
        Ok(self.norm_metrics.clone())
    }

    fn as_sac_mut(&mut self) -> Option<&mut Sac> {
        Some(self)
    }

    /// The pre-tanh Gaussian's mean and log-std in the normalised action space [−1, 1]
    /// (a student distils toward `tanh(mean)` or the full distribution).
    fn policy_output(&self, obs: &[f32]) -> Result<PolicyOutput> {
        let (mean, log_std) = self.gaussian(&self.obs_tensor(obs)?, false)?;
        Ok(PolicyOutput::GaussianMeanLogStd {
            mean: mean.flatten_all()?.to_vec1()?,
            log_std: log_std.flatten_all()?.to_vec1()?,
        })
    }

    fn save(&self, resume: bool) -> Result<CheckpointData> {
        let config = serde_json::json!({
            "algorithm": self.algorithm,
            "agent": self.config,
            "env": self.env,
            "gamma": self.gamma,
            "observation_normalizer": self.obs_norm,
        });
        let mut data = CheckpointData {
            config,
            model: tensors_to_raw(&self.model_tensors())?,
            ..Default::default()
        };
        if resume {
            let mut opt = BTreeMap::new();
            let mut steps = [0u64; 3];
            for (o, step_out) in [&self.actor_opt, &self.critic_opt, &self.temp_opt]
                .into_iter()
                .zip(&mut steps)
            {
                let AdamState { step, tensors } = o.state()?;
                opt.extend(tensors_to_raw(&tensors)?);
                *step_out = step;
            }
            data.optimizer = Some(opt);
            data.target = Some(tensors_to_raw(&self.target_store.state_dict())?);
            let (arrays, replay_state) = self.replay.export();
            data.replay = Some(arrays);
            let [actor, critic, temperature] = steps;
            let state = SacResumeState {
                rng: self.rng.clone(),
                updates: self.updates,
                optimizer_steps: OptimizerSteps {
                    actor,
                    critic,
                    temperature,
                },
                replay: replay_state,
                reward_scaler: self.reward_scaler.clone(),
                norm_metrics: self.norm_metrics.clone(),
                hook: self
                    .hook
                    .as_ref()
                    .map_or(serde_json::Value::Null, |h| h.state()),
            };
            data.trainer_state =
                Some(serde_json::to_value(state).map_err(|e| {
                    Error::Training(format!("{}: resume state: {e}", self.algorithm))
                })?);
        }
        Ok(data)
    }

    fn load(&mut self, data: &CheckpointData) -> Result<()> {
        let src = Path::new("model.safetensors");
        let model = raw_to_tensors(&data.model, &self.device)?;
        let split = |prefix: &str| -> HashMap<String, Tensor> {
            model
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let unknown: Vec<&String> = model
            .keys()
            .filter(|k| !(k.starts_with("actor.") || k.starts_with("critic.") || *k == "log_alpha"))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::data(
                src,
                format!(
                    "unexpected tensors {unknown:?}: not part of a {} agent",
                    self.algorithm
                ),
            ));
        }
        self.actor_store.load_state_dict(&split("actor."), src)?;
        self.critic_store.load_state_dict(&split("critic."), src)?;
        self.temp_store.load_state_dict(&split("log_alpha"), src)?;
        if let Some(norm) = data
            .config
            .get("observation_normalizer")
            .filter(|v| !v.is_null())
        {
            let n: RunningMeanStd = serde_json::from_value(norm.clone())
                .map_err(|e| Error::data("config.json", format!("observation_normalizer: {e}")))?;
            n.check_dim(self.obs_dim, "config.json")?;
            self.obs_norm = Some(n);
        }
        let Some(agent) = crate::agents::resume_state(data) else {
            // Weights only (a teacher, or evaluation): the targets start as the critics.
            return self.target_store.copy_from(&self.critic_store);
        };
        let state: SacResumeState = crate::agents::decode_resume_state(agent)?;
        let (opt, replay, target) = crate::agents::resume_arrays(data)?;
        self.target_store.load_state_dict(
            &raw_to_tensors(target, &self.device)?,
            Path::new(crate::checkpoint::TARGET_FILE),
        )?;
        let osrc = Path::new(crate::checkpoint::OPTIMIZER_FILE);
        let mut parts: [HashMap<String, Tensor>; 3] = Default::default();
        for (k, v) in raw_to_tensors(opt, &self.device)? {
            if k.starts_with("actor.") {
                parts[0].insert(k, v);
            } else if k.starts_with("critic.") {
                parts[1].insert(k, v);
            } else {
                parts[2].insert(k, v);
            }
        }
        let steps = &state.optimizer_steps;
        for ((step, o), tensors) in [
            (steps.actor, &mut self.actor_opt),
            (steps.critic, &mut self.critic_opt),
            (steps.temperature, &mut self.temp_opt),
        ]
        .into_iter()
        .zip(parts)
        {
            o.load_state(&AdamState { step, tensors }, osrc)?;
        }
        self.replay.import(replay, &state.replay)?;
        self.rng = state.rng;
        self.updates = state.updates;
        self.reward_scaler = state.reward_scaler;
        self.norm_metrics = state.norm_metrics;
        match self.hook.as_mut() {
            Some(hook) => hook.load_state(&state.hook),
            None => super::no_hook_state(&state.hook),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envs::TaskFamily;
    use serde_json::json;

    /// A small agent of `algo` on Pendulum with `[agent] network = <net>`.
    fn build(algo: &str, net: &str) -> Result<Box<dyn Agent>> {
        let table: toml::Table = toml::from_str(&format!(
            "network = {net}\nbatch_size = 4\nbuffer_size = 16\nlearning_starts = 0"
        ))
        .unwrap();
        let family = TaskFamily::from_id("pendulum").unwrap();
        crate::agents::build(algo, &table, family.spec(), &Device::Cpu, 0, 1_000)
    }

    const MLP: &str = "{ hidden = [8, 8] }";
    const SIMBA: &str = "{ actor_hidden = 8, critic_hidden = 8, critic_blocks = 1 }";

    /// The twin-critic actor loss whose critics are differentiated one by one (side by side)
    /// gives the actor the gradient of the one `backward` through both critics, and the same loss.
    #[test]
    fn twin_critic_actor_gradients_equal_the_single_backward_ones() {
        for (algo, net, defaults) in [
            ("sac", MLP, SacConfig::default()),
            ("simbav2", SIMBA, SacConfig::simbav2()),
        ] {
            let table: toml::Table = toml::from_str(&format!(
                "network = {net}\nbatch_size = 4\nbuffer_size = 16\nlearning_starts = 0"
            ))
            .unwrap();
            let family = TaskFamily::from_id("pendulum").unwrap();
            let cfg = crate::agents::with_defaults(defaults, &table, algo).unwrap();
            let mut sac = Sac::new(algo, cfg, family.spec(), &Device::Cpu, 3, Some(1_000)).unwrap();
            assert_eq!(sac.critics.len(), 2);
            let mut rng = Rng::seed_from_u64(7);
            let obs: Vec<f32> = (0..6 * 3).map(|_| rng.normal() as f32).collect();
            let obs = Tensor::from_slice(&obs, (6, 3), &Device::Cpu).unwrap();
            let start = sac.rng.clone();
            let (loss, ..) = sac.actor_loss_parts(&obs).unwrap();
            let single = loss.backward().unwrap();
            sac.rng = start;
            let (loss2, through, ..) = sac.actor_loss_twin(&obs).unwrap();
            let split = (&loss2 + through).unwrap().backward().unwrap();
            let scalar = |t: &Tensor| t.to_scalar::<f32>().unwrap();
            assert_eq!(scalar(&loss), scalar(&loss2), "{algo}: the loss");
            let mut checked = 0;
            for (name, v) in sac.actor_store.trainable() {
                let a = single.get(v.as_tensor()).unwrap().flatten_all().unwrap();
                let b = split.get(v.as_tensor()).unwrap().flatten_all().unwrap();
                let (a, b) = (a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
                let scale = a.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() <= 1e-5 * scale, "{algo} {name}: {x} vs {y}");
                }
                checked += 1;
            }
            assert!(checked >= 4, "{algo}: {checked} actor parameters");
            // The critics' weights get no gradient from the actor loss either way.
            for (_, v) in sac.critic_store.trainable() {
                assert!(split.get(v.as_tensor()).is_none());
            }
        }
    }

    /// `--algo sac --set agent.network.critic_hidden=1024` is a SimbaV2 size on an MLP body:
    /// refused with the key's name, as is an MLP size on a SimbaV2 body.
    #[test]
    fn network_keys_of_the_other_body_are_refused_by_name() {
        build("sac", MLP).unwrap();
        build("simbav2", SIMBA).unwrap();
        for (algo, net, key) in [
            ("sac", "{ critic_hidden = 1024 }", "critic_hidden"),
            ("sac", "{ actor_blocks = 2 }", "actor_blocks"),
            ("simbav2", "{ hidden = [64, 64] }", "hidden"),
        ] {
            let e = build(algo, net).err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.contains(&format!("`{key}`"))),
                "{algo} with network = {net}: {e:?}"
            );
        }
    }

    /// `config.json` holds only the keys of the body in use, and a checkpoint rebuilt from it
    /// has the same configuration.
    #[test]
    fn saved_network_config_round_trips_for_both_bodies() {
        for (algo, net, want) in [
            ("sac", MLP, json!({ "body": "mlp", "hidden": [8, 8] })),
            (
                "simbav2",
                SIMBA,
                json!({
                    "body": "simbav2",
                    "actor_hidden": 8,
                    "actor_blocks": 1,
                    "critic_hidden": 8,
                    "critic_blocks": 1
                }),
            ),
        ] {
            let agent = build(algo, net).unwrap();
            let mut data = agent.save(false).unwrap();
            // through the file's text, as a checkpoint is read back
            data.config = serde_json::from_str(&data.config.to_string()).unwrap();
            assert_eq!(data.config["agent"]["network"], want, "{algo}");
            let loaded = crate::agents::from_checkpoint(&data, &Device::Cpu).unwrap();
            assert_eq!(loaded.save(false).unwrap().config, data.config, "{algo}");
        }
    }

    /// A resume state with a key removed, retyped or added is refused, the message naming
    /// `trainer_state.json` and the key, instead of resuming from a default (an Adam step
    /// count of 0 would restart its bias correction).
    #[test]
    fn resume_state_with_a_missing_or_mistyped_key_is_refused_by_name() {
        let saved = build("simbav2", SIMBA).unwrap().save(true).unwrap();
        let state = saved.trainer_state.clone().unwrap();
        let load = |agent_state: serde_json::Value| -> Result<()> {
            let data = CheckpointData {
                config: saved.config.clone(),
                model: saved.model.clone(),
                trainer_state: Some(json!({ "agent": agent_state })),
                optimizer: saved.optimizer.clone(),
                replay: saved.replay.clone(),
                target: saved.target.clone(),
            };
            build("simbav2", SIMBA)?.load(&data)
        };
        load(state.clone()).unwrap();
        type Edit = fn(&mut serde_json::Value);
        let edits: [(Edit, &str); 7] = [
            (|s| drop(s["updates"].take()), "updates"),
            (|s| s["updates"] = json!("12"), "updates"),
            (
                |s| drop(s.as_object_mut().unwrap().remove("updates")),
                "updates",
            ),
            (
                |s| drop(s.as_object_mut().unwrap().remove("reward_scaler")),
                "reward_scaler",
            ),
            (
                |s| {
                    drop(
                        s["optimizer_steps"]
                            .as_object_mut()
                            .unwrap()
                            .remove("critic"),
                    )
                },
                "critic",
            ),
            (|s| s["optimizer_steps"]["actor"] = json!(-1), "actor"),
            (|s| s["learning_rate"] = json!(1e-3), "learning_rate"),
        ];
        for (edit, key) in edits {
            let mut s = state.clone();
            edit(&mut s);
            let e = load(s).err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.contains("trainer_state.json") && e.contains(key)),
                "{key}: {e:?}"
            );
        }
    }
}
