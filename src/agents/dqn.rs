//! DQN (Mnih et al. 2015) with the options the platform's experiments need: double Q-learning
//! (van Hasselt et al. 2016), n-step returns, Huber or MSE loss, hard or Polyak target updates,
//! a linear ε schedule, uniform replay; and C51 (Bellemare et al. 2017) as an algorithm
//! (`--algo c51`) or option (`network.atoms > 1`). The network is an MLP or the MinAtar conv
//! body, with spectral normalisation on chosen layers (Gogianu et al. 2021) — see
//! [`crate::nn::qnet`].
//!
//! Defaults are CleanRL's `dqn.py` for CartPole (lr 2.5e-4, buffer 10k, batch 128, MSE, target
//! every 500 steps, ε 1 → 0.05 over half the run), with its budget-dependent values as
//! fractions of the run: ε decays over `{ fraction = 0.5 }` (its `exploration_fraction`) and
//! learning starts after `{ fraction = 0.02, at_most = 10_000 }` (its 10k of 500k steps, never
//! more). One departure: an update every environment step (`train_frequency = 1`, MinAtar's DQN,
//! Young & Tian 2019) where CleanRL updates every 10th: at budgets below CleanRL's 500k its 10
//! leaves too few updates (CartPole at 100k steps: greedy return 314 against 495, 3 seeds).
//! C51 takes CleanRL's `c51.py` support for classic control, 101 atoms on [−100, 100] (returns
//! of unit rewards reach 1/(1 − γ) = 100; the paper's [−10, 10] is for clipped Atari rewards),
//! with the paper's Adam ε 3.125e-4 = 0.01/32. Experiment files tune them.

use super::{Agent, Experience, Metrics, PolicyOutput};
use crate::checkpoint::{raw_to_tensors, tensors_to_raw, CheckpointData};
use crate::envs::ActionBuf;
use crate::envs::{EnvSpec, Space};
use crate::error::{Error, Result};
use crate::nn::categorical::cross_entropy;
use crate::nn::optim::AdamState;
use crate::nn::{
    grad, Adam, AdamConfig, CategoricalSupport, ParamStore, QNetConfig, QNetwork, Schedule, Steps,
};
use crate::replay::{Batch, ReplayBuffer};
use crate::rng::Rng;
use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Temporal-difference loss on the scalar Q head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TdLoss {
    /// Huber with δ = 1 (Mnih et al. 2015's clipped error).
    Huber,
    /// Mean squared error (CleanRL's choice).
    Mse,
}

/// Linear ε-greedy exploration: `start` → `end` over `decay_steps` environment steps, a count
/// or a fraction of the run (`{ fraction = 0.5 }`: CleanRL's `exploration_fraction`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Epsilon {
    pub start: f64,
    pub end: f64,
    pub decay_steps: Steps,
}

impl Epsilon {
    /// ε at environment step `step` (of a resolved schedule).
    pub fn at(&self, step: u64) -> f64 {
        Schedule::Linear {
            start: self.start,
            end: self.end,
            steps: Steps::Count(self.decay_steps.count().max(1)),
        }
        .value(step)
    }
}

/// DQN / C51 hyperparameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DqnConfig {
    pub network: QNetConfig,
    /// Learning rate (a number or a schedule over updates).
    pub learning_rate: Schedule,
    pub optimizer: AdamConfig,
    pub gamma: f64,
    pub n_step: usize,
    pub double_q: bool,
    pub loss: TdLoss,
    pub buffer_size: usize,
    pub batch_size: usize,
    /// Environment steps of pure exploration before the first update.
    pub learning_starts: Steps,
    /// Gradient updates happen every this many environment steps ...
    pub train_frequency: u64,
    /// ... and each time this many of them (SB3's `gradient_steps`).
    pub gradient_steps: usize,
    /// Target update every this many environment steps.
    pub target_update_frequency: Steps,
    /// 1.0 = hard copy; < 1 = Polyak averaging at each target update.
    pub tau: f64,
    pub epsilon: Epsilon,
    /// Clip gradients by global norm (none by default, as in the DQN papers).
    pub max_grad_norm: Option<f64>,
    /// C51 support (used when `network.atoms > 1`).
    pub v_min: f64,
    pub v_max: f64,
    /// Rewards stored for learning are clipped to [−c, c] (the DQN papers' Atari setting, c =
    /// 1); the environment's own rewards, and so every reported return, stay unclipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward_clip: Option<f32>,
}

impl Default for DqnConfig {
    fn default() -> Self {
        Self {
            network: QNetConfig::default(),
            learning_rate: Schedule::constant(2.5e-4),
            optimizer: AdamConfig::default(),
            gamma: 0.99,
            n_step: 1,
            double_q: false,
            loss: TdLoss::Mse,
            buffer_size: 10_000,
            batch_size: 128,
            learning_starts: Steps::Fraction {
                fraction: 0.02,
                at_most: Some(10_000),
            },
            train_frequency: 1,
            gradient_steps: 1,
            target_update_frequency: Steps::Count(500),
            tau: 1.0,
            epsilon: Epsilon {
                start: 1.0,
                end: 0.05,
                decay_steps: Steps::fraction(0.5),
            },
            max_grad_norm: None,
            v_min: -100.0,
            v_max: 100.0,
            reward_clip: None,
        }
    }
}

impl DqnConfig {
    /// C51 defaults: 101 atoms on [−100, 100] (CleanRL's `c51.py` for classic control), Adam
    /// ε = 0.01/32 (Bellemare et al. 2017).
    pub fn c51() -> Self {
        let mut c = Self::default();
        c.network.atoms = 101;
        c.optimizer = AdamConfig::adam(3.125e-4);
        c
    }

    /// The config with every fraction resolved against a run of `budget` environment steps:
    /// ε's decay, learning starts and the target period in environment steps, a linear
    /// learning-rate schedule's length in the run's gradient updates. `None` (an agent rebuilt
    /// from its `config.json`, which holds counts) refuses fractions.
    pub fn resolve(mut self, budget: Option<u64>) -> Result<Self> {
        self.learning_starts = self
            .learning_starts
            .resolve(budget, "agent.learning_starts")?;
        self.target_update_frequency = self
            .target_update_frequency
            .resolve(budget, "agent.target_update_frequency")?;
        self.epsilon.decay_steps = self
            .epsilon
            .decay_steps
            .resolve(budget, "agent.epsilon.decay_steps")?;
        let updates = budget.map(|b| self.updates(b));
        self.learning_rate = self.learning_rate.resolve(updates, "agent.learning_rate")?;
        Ok(self)
    }

    /// Gradient updates a run of `budget` environment steps makes (learning starts resolved).
    pub fn updates(&self, budget: u64) -> u64 {
        budget.saturating_sub(self.learning_starts.count()) / self.train_frequency.max(1)
            * self.gradient_steps as u64
    }

    /// Exploration for a student that starts from a teacher's competence (fine-tuning,
    /// QDagger after its offline phase, pretraining, behaviour cloning, DQfD): ε held at the
    /// schedule's end value from the first step. Re-exploring from ε = 1 would fill the replay
    /// with near-random episodes in place of the teacher's behaviour.
    pub fn start_warm(&mut self) {
        self.epsilon.start = self.epsilon.end;
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.batch_size == 0 || self.buffer_size == 0 {
            return bad("agent.batch_size and agent.buffer_size must be at least 1".into());
        }
        if self.batch_size > self.buffer_size {
            return bad(format!(
                "agent.batch_size = {} is larger than agent.buffer_size = {}: a batch is drawn from the buffer",
                self.batch_size, self.buffer_size
            ));
        }
        if self.n_step == 0 {
            return bad("agent.n_step must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.gamma) {
            return bad(format!("agent.gamma must be in [0, 1], got {}", self.gamma));
        }
        if self.train_frequency == 0
            || self.target_update_frequency.count() == 0
            || self.gradient_steps == 0
        {
            return bad("agent.train_frequency, agent.gradient_steps and agent.target_update_frequency must be at least 1".into());
        }
        if self.network.atoms > 1 && self.v_min >= self.v_max {
            return bad(format!(
                "agent.v_min ({}) must be below agent.v_max ({})",
                self.v_min, self.v_max
            ));
        }
        if let Some(c) = self.reward_clip {
            if !(c.is_finite() && c > 0.0) {
                return bad(format!(
                    "agent.reward_clip must be a positive number, got {c}"
                ));
            }
        }
        self.learning_rate.validate("agent.learning_rate")
    }
}

/// What a reincarnation method ([`crate::reincarnation`]) adds to the DQN update, so that
/// every method of Agarwal et al. (2022) runs on this one agent and the ordinary training loop
/// ([`crate::train`]): an extra loss on each sampled batch (QDagger's and kickstarting's
/// distillation, DQfD's large-margin loss, CQL, behaviour cloning), a fraction of teacher
/// transitions mixed into each batch (rehearsal, DQfD), a learning-rate factor (QDagger ties
/// the learning rate to its distillation weight), and actions chosen for the agent while it
/// explores (JSRL's teacher roll-in). A plain DQN run has no hook.
pub trait DqnHook {
    /// Sees every batched step the agent stores (e.g. to track the student's episode returns).
    fn observe(&mut self, _exp: &Experience<'_>) -> Result<()> {
        Ok(())
    }
    /// May choose the exploration actions itself (JSRL roll-in); returns whether it did.
    fn override_actions(&mut self, _obs: &[f32], _actions: &mut [usize]) -> Result<bool> {
        Ok(false)
    }
    /// Teacher transitions and the fraction of each batch drawn from them.
    fn rehearsal(&self) -> Option<(&ReplayBuffer, f64)> {
        None
    }
    /// Weight of the TD loss (0 for pure behaviour cloning).
    fn td_weight(&self) -> f64 {
        1.0
    }
    /// An extra loss term on the sampled batch. `q` holds the student's Q-values
    /// `(batch, actions)` (expected values for C51) with gradients; the first `teacher_rows`
    /// rows of the batch came from teacher data.
    fn loss(
        &mut self,
        batch: &Batch,
        q: &Tensor,
        teacher_rows: usize,
        step: u64,
    ) -> Result<Option<(Tensor, Metrics)>>;
    /// Factor on the configured learning rate.
    fn lr_scale(&self) -> f64 {
        1.0
    }
    /// State to save for an exact resume, and its restore.
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn load_state(&mut self, _state: &serde_json::Value) -> Result<()> {
        Ok(())
    }
}

/// The DQN-family agent.
pub struct Dqn {
    algorithm: String,
    config: DqnConfig,
    env: EnvSpec,
    n_actions: usize,
    obs_dim: usize,
    device: Device,
    store: ParamStore,
    q: QNetwork,
    target_store: ParamStore,
    target: QNetwork,
    optimizer: Adam,
    support: Option<CategoricalSupport>,
    replay: ReplayBuffer,
    rng: Rng,
    updates: u64,
    batch: Batch,
    /// Scratch for rehearsal's second sample.
    own_batch: Batch,
    hook: Option<Box<dyn DqnHook>>,
    /// Multiply-adds of one forward pass on a batch (batch × parameters), for
    /// [`crate::device::join_for`].
    pass_work: usize,
}

impl Dqn {
    /// A fresh agent for `env` (discrete actions only), for a run of `budget` environment
    /// steps (fractions in `config` resolve against it, [`DqnConfig::resolve`]).
    pub fn new(
        algorithm: &str,
        config: DqnConfig,
        env: &EnvSpec,
        device: &Device,
        seed: u64,
        budget: Option<u64>,
    ) -> Result<Self> {
        let config = config.resolve(budget)?;
        config.validate()?;
        crate::device::configure_cpu_threads(None);
        let n_actions = match &env.action_space {
            Space::Discrete { n } => *n,
            other => {
                return Err(Error::Config(format!(
                    "{algorithm} needs discrete actions, but `{}` has {other}",
                    env.id()
                )))
            }
        };
        let obs_shape = match &env.observation_space {
            Space::Box { shape, .. } => shape.clone(),
            Space::Discrete { .. } => vec![1],
        };
        let obs_dim = obs_shape.iter().product();
        let mut store = ParamStore::new(device, crate::rng::derive_seed(seed, 1));
        let q = QNetwork::new(&config.network, &obs_shape, n_actions, store.pp("q"))?;
        let mut target_store = ParamStore::new(device, crate::rng::derive_seed(seed, 2));
        let target = QNetwork::new(&config.network, &obs_shape, n_actions, target_store.pp("q"))?;
        target_store.copy_from(&store)?;
        let optimizer = Adam::new(store.trainable(), config.optimizer.clone())?;
        let support = (config.network.atoms > 1)
            .then(|| CategoricalSupport::new(config.network.atoms, config.v_min, config.v_max))
            .transpose()?;
        let replay = ReplayBuffer::for_spec(config.buffer_size, env, None, "agent.buffer_size")?;
        let pass_work = store.num_params() * config.batch_size;
        Ok(Self {
            algorithm: algorithm.to_string(),
            config,
            env: env.clone(),
            n_actions,
            obs_dim,
            device: device.clone(),
            store,
            q,
            target_store,
            target,
            optimizer,
            support,
            replay,
            rng: Rng::seed_from_u64(crate::rng::derive_seed(seed, 3)),
            updates: 0,
            batch: Batch::default(),
            own_batch: Batch::default(),
            hook: None,
            pass_work,
        })
    }

    pub fn config(&self) -> &DqnConfig {
        &self.config
    }

    pub fn network(&self) -> &QNetwork {
        &self.q
    }

    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    pub fn replay(&self) -> &ReplayBuffer {
        &self.replay
    }

    /// Holds ε at its end value from the first step ([`DqnConfig::start_warm`]).
    pub fn start_warm(&mut self) {
        self.config.start_warm();
    }

    /// Installs (or with `None` removes) a reincarnation method's hook.
    pub fn set_hook(&mut self, hook: Option<Box<dyn DqnHook>>) {
        self.hook = hook;
    }

    /// One optimiser step on a batch drawn from `data` only (the offline phase of QDagger,
    /// pretraining, DQfD and behaviour cloning), with the hook's loss on every row. The target
    /// network is synchronised at the online rate measured in updates
    /// (`target_update_frequency / train_frequency × gradient_steps` updates).
    pub fn offline_step(&mut self, data: &ReplayBuffer, step: u64) -> Result<Metrics> {
        if data.is_empty() {
            return Err(Error::Config(
                "the offline phase needs teacher data, but the teacher dataset is empty".into(),
            ));
        }
        let m = self.gradient_step(step, Some(data))?;
        let c = &self.config;
        let every = (c.target_update_frequency.count() / c.train_frequency).max(1)
            * c.gradient_steps as u64;
        if self.updates.is_multiple_of(every) {
            self.sync_target()?;
        }
        Ok(m)
    }

    /// Ends an offline phase: the target network takes the online weights, so the first online
    /// TD targets come from the network the offline phase ended with rather than one up to a
    /// target period older (the paper's implementation syncs both networks at this point too).
    pub fn end_offline_phase(&mut self) -> Result<()> {
        self.set_hook(None);
        self.target_store.copy_from(&self.store)
    }

    fn sync_target(&mut self) -> Result<()> {
        if self.config.tau >= 1.0 {
            self.target_store.copy_from(&self.store)
        } else {
            self.target_store.polyak_from(&self.store, self.config.tau)
        }
    }

    fn obs_tensor(&self, obs: &[f32]) -> Result<Tensor> {
        let n = super::batch_rows(&self.algorithm, obs, self.obs_dim)?;
        Ok(Tensor::from_slice(obs, (n, self.obs_dim), &self.device)?)
    }

    /// Q-values `(batch, actions)` of the online network (expected values for C51).
    pub fn q_values(&self, obs: &Tensor) -> Result<Tensor> {
        let out = self.q.forward(obs, false)?;
        match &self.support {
            Some(s) => s.expected_value(&out),
            None => Ok(out),
        }
    }

    fn one_hot(&self, actions: &[i64]) -> Result<Tensor> {
        super::one_hot(actions, self.n_actions, &self.device)
    }

    /// The TD loss of a sampled batch, the mean Q of the taken actions, and (when a hook is
    /// installed) the online network's Q-values `(batch, actions)` with gradients. The network
    /// passes are scheduled here; the arithmetic is [`td_target`]/[`dqn_loss`] or
    /// [`c51_target`]/[`c51_loss`].
    fn loss(&self, b: &Batch) -> Result<(Tensor, f64, Option<Tensor>)> {
        let n = b.size;
        let obs = self.obs_tensor(&b.obs)?;
        let next = self.obs_tensor(&b.next_obs)?;
        let returns = Tensor::from_slice(&b.returns, n, &self.device)?;
        let discounts = Tensor::from_slice(&b.discounts, n, &self.device)?;
        let taken = self.one_hot(&b.actions_discrete)?;
        // The target network's pass runs beside the online one with gradients
        // (`device::join_for`). With double Q the online network's pass on the next observations
        // comes first: the training pass advances spectral normalisation's power iteration.
        let (q_net, target_net) = (&self.q, &self.target);
        let (next_out, online_out, next_online_out) = if self.config.double_q {
            let (next_out, next_online) = crate::device::join_for(
                self.pass_work,
                || target_net.forward(&next, false),
                || q_net.forward(&next, false),
            );
            let next_online = next_online?;
            (next_out?, q_net.forward(&obs, true)?, Some(next_online))
        } else {
            let (next_out, online_out) = crate::device::join_for(
                self.pass_work,
                || target_net.forward(&next, false),
                || q_net.forward(&obs, true),
            );
            (next_out?, online_out?, None)
        };
        match &self.support {
            None => {
                let y = td_target(&returns, &discounts, &next_out, next_online_out.as_ref())?;
                let (loss, q) = dqn_loss(&online_out, &taken, &y, self.config.loss)?;
                let q_mean = q.mean_all()?.to_scalar::<f32>()? as f64;
                Ok((loss, q_mean, self.hook.is_some().then_some(online_out)))
            }
            Some(support) => {
                let logits = online_out;
                let target = c51_target(
                    support,
                    &returns,
                    &discounts,
                    &next_out,
                    next_online_out.as_ref(),
                )?;
                let (loss, logits_a) = c51_loss(&logits, &taken, &target)?;
                let q_mean = support
                    .expected_value(&logits_a.detach())?
                    .mean_all()?
                    .to_scalar::<f32>()? as f64;
                let q_all = match self.hook {
                    Some(_) => Some(support.expected_value(&logits)?),
                    None => None,
                };
                Ok((loss, q_mean, q_all))
            }
        }
    }

    /// One sampled minibatch, one optimiser step. The batch comes from `offline` when given,
    /// else from the agent's replay with the hook's rehearsal fraction drawn from teacher data
    /// (those rows first).
    fn gradient_step(&mut self, step: u64, offline: Option<&ReplayBuffer>) -> Result<Metrics> {
        let mut batch = std::mem::take(&mut self.batch);
        let (bs, n, gamma) = (
            self.config.batch_size,
            self.config.n_step,
            self.config.gamma as f32,
        );
        let rehearsal = self
            .hook
            .as_ref()
            .and_then(|h| h.rehearsal())
            .filter(|(buf, _)| !buf.is_empty());
        let teacher_rows = match (offline, rehearsal) {
            (Some(data), _) => {
                data.sample_into(bs, n, gamma, &mut self.rng, &mut batch);
                bs
            }
            (None, Some((data, fraction))) => {
                let k = crate::replay::rehearsal_rows(fraction, bs);
                data.sample_into(k, n, gamma, &mut self.rng, &mut batch);
                if k < bs {
                    let own = &mut self.own_batch;
                    self.replay
                        .sample_into(bs - k, n, gamma, &mut self.rng, own);
                    batch.append(own);
                }
                k
            }
            (None, None) => {
                self.replay
                    .sample_into(bs, n, gamma, &mut self.rng, &mut batch);
                0
            }
        };
        let (td_loss, q_mean, q_all) = self.loss(&batch)?;
        let mut extra = Metrics::new();
        let mut loss = td_loss;
        if let (Some(hook), Some(q_all)) = (self.hook.as_mut(), q_all) {
            let w = hook.td_weight();
            if w != 1.0 {
                loss = (loss * w)?;
            }
            if let Some((aux, m)) = hook.loss(&batch, &q_all, teacher_rows, step)? {
                loss = (loss + aux)?;
                extra = m;
            }
        }
        self.batch = batch;
        let loss_value = loss.to_scalar::<f32>()? as f64;
        if !loss_value.is_finite() {
            return Err(Error::NonFinite(format!(
                "{} loss became {loss_value}",
                self.algorithm
            )));
        }
        let mut grads = loss.backward()?;
        let vars: Vec<candle_core::Var> =
            self.store.trainable().into_iter().map(|(_, v)| v).collect();
        let grad_norm = match self.config.max_grad_norm {
            Some(max) => grad::clip_global_norm(&mut grads, &vars, max)?,
            None => grad::global_norm(&grads, &vars)?,
        };
        if !grad_norm.is_finite() {
            return Err(Error::NonFinite(format!(
                "{} gradient norm became {grad_norm}",
                self.algorithm
            )));
        }
        self.q.sn_before_step(&mut grads, &mut self.optimizer)?;
        let lr_scale = self.hook.as_ref().map_or(1.0, |h| h.lr_scale());
        let lr = self.config.learning_rate.value(self.updates) * lr_scale;
        self.optimizer.step(&grads, lr)?;
        self.updates += 1;
        let mut metrics = Metrics::from([
            ("loss".to_string(), loss_value),
            ("q_mean".to_string(), q_mean),
            ("grad_norm".to_string(), grad_norm),
            ("learning_rate".to_string(), lr),
            ("epsilon".to_string(), self.config.epsilon.at(step)),
            ("updates".to_string(), self.updates as f64),
        ]);
        metrics.extend(extra);
        Ok(metrics)
    }

    /// Model tensors named as in `model.safetensors`.
    fn expected_model(&self) -> HashMap<String, Tensor> {
        self.store.state_dict()
    }
}

/// The greedy next action of each row, `argmax_a Q(s′, a)` over `(batch, actions)` values, as
/// a `(batch, 1)` index tensor.
fn greedy_index(q: &Tensor) -> Result<Tensor> {
    Ok(q.argmax_keepdim(D::Minus1)?)
}

/// A reward clipped to `[−c, c]` for learning (`None`: unchanged).
pub fn clip_reward(reward: f32, clip: Option<f32>) -> f32 {
    match clip {
        Some(c) => reward.clamp(-c, c),
        None => reward,
    }
}

/// The TD target of each row (Mnih et al. 2015, eq. 3; van Hasselt et al. 2016, eq. 4 for
/// double Q), with n-step returns (Sutton & Barto 2018, eq. 7.1):
///
/// `y = R⁽ⁿ⁾ + γⁿ (1 − d) · Q_target(s′, a*)`, `a* = argmax_a Q_online(s′, a)` with double Q
/// (`next_online_q` given), else `argmax_a Q_target(s′, a)`.
///
/// `returns` holds `R⁽ⁿ⁾ = Σ_{k<n} γᵏ r_{t+k}` and `discounts` holds `γⁿ(1 − d)` per row (0
/// where the n-step window ended in a true terminal; a time-limit truncation bootstraps), as
/// [`ReplayBuffer::sample_into`] writes them. `next_target_q` and `next_online_q` are
/// `(batch, actions)`. The result `(batch,)` carries no gradient.
pub fn td_target(
    returns: &Tensor,
    discounts: &Tensor,
    next_target_q: &Tensor,
    next_online_q: Option<&Tensor>,
) -> Result<Tensor> {
    let a_star = greedy_index(next_online_q.unwrap_or(next_target_q))?;
    let next_q = next_target_q
        .gather(&a_star, D::Minus1)?
        .squeeze(D::Minus1)?;
    Ok((returns + (discounts * next_q)?)?.detach())
}

/// The DQN loss `mean_i ℓ(Q(s_i, a_i) − y_i)` with ℓ the squared error or Huber (δ = 1), and
/// the taken actions' Q-values `(batch,)`. `q_all` is the online network's `(batch, actions)`
/// with gradients, `taken` the one-hot `(batch, actions)` of the actions, `target` the
/// [`td_target`].
pub fn dqn_loss(
    q_all: &Tensor,
    taken: &Tensor,
    target: &Tensor,
    loss: TdLoss,
) -> Result<(Tensor, Tensor)> {
    let q = (q_all * taken)?.sum(D::Minus1)?;
    let td = (&q - target)?;
    let loss = match loss {
        TdLoss::Mse => td.sqr()?.mean_all()?,
        TdLoss::Huber => huber(&td)?.mean_all()?,
    };
    Ok((loss, q))
}

/// The C51 target distribution (Bellemare et al. 2017, Algorithm 1): the next state's
/// distribution under the greedy action, `Z(s′, a*)`, shifted to `R⁽ⁿ⁾ + γⁿ(1 − d) z_j`, clipped
/// to `[v_min, v_max]` and projected onto the support. `a*` maximises the expected value of the
/// online network's distribution (double Q, `next_online_logits` given) or of the target's.
/// Logits are `(batch, actions, atoms)`; the result `(batch, atoms)` carries no gradient.
pub fn c51_target(
    support: &CategoricalSupport,
    returns: &Tensor,
    discounts: &Tensor,
    next_target_logits: &Tensor,
    next_online_logits: Option<&Tensor>,
) -> Result<Tensor> {
    let a_star =
        greedy_index(&support.expected_value(next_online_logits.unwrap_or(next_target_logits))?)?;
    let atoms = next_target_logits.dim(D::Minus1)?;
    let index = a_star
        .unsqueeze(D::Minus1)?
        .broadcast_as((a_star.dim(0)?, 1, atoms))?
        .contiguous()?;
    let next_logits = next_target_logits.gather(&index, 1)?.squeeze(1)?;
    let next_probs = candle_nn::ops::softmax(&next_logits, D::Minus1)?;
    support.project_tensor(returns, discounts, &next_probs)
}

/// The C51 loss: the cross-entropy `−Σ_j m_j log p_j(s, a)` from the projected target `m`
/// ([`c51_target`]) to the taken action's distribution, averaged over the batch; and the taken
/// action's logits `(batch, atoms)`. `logits` are `(batch, actions, atoms)` with gradients,
/// `taken` the one-hot `(batch, actions)`.
pub fn c51_loss(logits: &Tensor, taken: &Tensor, target: &Tensor) -> Result<(Tensor, Tensor)> {
    let logits_a = logits.broadcast_mul(&taken.unsqueeze(D::Minus1)?)?.sum(1)?;
    let loss = cross_entropy(&logits_a, target)?.mean_all()?;
    Ok((loss, logits_a))
}

/// Elementwise Huber loss with δ = 1: ½x² where |x| ≤ 1, |x| − ½ elsewhere.
pub fn huber(x: &Tensor) -> Result<Tensor> {
    let abs = x.abs()?;
    let quad = abs.clamp(0.0, 1.0)?;
    let lin = (&abs - &quad)?;
    Ok(((quad.sqr()? * 0.5)? + lin)?)
}

impl Agent for Dqn {
    fn algorithm(&self) -> &str {
        &self.algorithm
    }

    fn as_dqn_mut(&mut self) -> Option<&mut Dqn> {
        Some(self)
    }

    fn act(
        &mut self,
        obs: &[f32],
        explore: bool,
        step: u64,
        actions: &mut ActionBuf,
    ) -> Result<()> {
        let ActionBuf::Discrete(out) = actions else {
            return Err(Error::Env(format!(
                "{} acts with discrete actions",
                self.algorithm
            )));
        };
        if explore {
            if let Some(hook) = self.hook.as_mut() {
                if hook.override_actions(obs, out)? {
                    return Ok(());
                }
            }
        }
        let n = out.len();
        let eps = if explore {
            self.config.epsilon.at(step)
        } else {
            0.0
        };
        let mut greedy_needed = Vec::with_capacity(n);
        for (i, a) in out.iter_mut().enumerate() {
            if explore && self.rng.uniform() < eps {
                *a = self.rng.below(self.n_actions);
            } else {
                greedy_needed.push(i);
            }
        }
        if !greedy_needed.is_empty() {
            let q = self.q_values(&self.obs_tensor(obs)?)?;
            let best: Vec<u32> = q.argmax(D::Minus1)?.to_vec1()?;
            for i in greedy_needed {
                out[i] = best[i] as usize;
            }
        }
        Ok(())
    }

    fn observe(&mut self, exp: &Experience<'_>) -> Result<()> {
        let ActionBuf::Discrete(a) = exp.actions else {
            return Err(Error::Env(format!(
                "{} stores discrete actions",
                self.algorithm
            )));
        };
        if let Some(hook) = self.hook.as_mut() {
            hook.observe(exp)?;
        }
        let d = self.obs_dim;
        let clip = self.config.reward_clip;
        for (i, &action) in a.iter().enumerate() {
            self.replay.push(
                &exp.obs[i * d..(i + 1) * d],
                action as i64,
                &[],
                clip_reward(exp.rewards[i], clip),
                &exp.next_obs[i * d..(i + 1) * d],
                exp.terminated[i],
                exp.truncated[i],
            )?;
        }
        Ok(())
    }

    fn update(&mut self, step: u64) -> Result<Option<Metrics>> {
        let c = &self.config;
        if step < c.learning_starts.count() || self.replay.is_empty() {
            return Ok(None);
        }
        let mut metrics = None;
        if step.is_multiple_of(c.train_frequency) {
            for _ in 0..c.gradient_steps {
                metrics = Some(self.gradient_step(step, None)?);
            }
        }
        if step.is_multiple_of(self.config.target_update_frequency.count()) {
            self.sync_target()?;
        }
        Ok(metrics)
    }

    fn diagnostics(&self) -> Result<Metrics> {
        let mut m = Metrics::new();
        for (name, sigma) in self.q.sigmas()? {
            m.insert(format!("sigma/{name}"), sigma);
        }
        for (name, norm) in self.q.param_norms()? {
            m.insert(format!("param_norm/{name}"), norm);
        }
        Ok(m)
    }

    fn policy_output(&self, obs: &[f32]) -> Result<PolicyOutput> {
        let q = self.q_values(&self.obs_tensor(obs)?)?;
        Ok(PolicyOutput::QValues(q.flatten_all()?.to_vec1()?))
    }

    fn save(&self, resume: bool) -> Result<CheckpointData> {
        let config = serde_json::json!({
            "algorithm": self.algorithm,
            "agent": self.config,
            "env": self.env,
        });
        let mut data = CheckpointData {
            config,
            model: tensors_to_raw(&self.expected_model())?,
            ..Default::default()
        };
        if resume {
            let AdamState { step, tensors } = self.optimizer.state()?;
            data.optimizer = Some(tensors_to_raw(&tensors)?);
            data.target = Some(tensors_to_raw(&self.target_store.state_dict())?);
            let (arrays, replay) = self.replay.export();
            data.replay = Some(arrays);
            let state = DqnResumeState {
                rng: self.rng.clone(),
                updates: self.updates,
                optimizer_step: step,
                replay,
                hook: self
                    .hook
                    .as_ref()
                    .map_or(serde_json::Value::Null, |h| h.state()),
            };
            data.trainer_state = Some(
                serde_json::to_value(&state)
                    .map_err(|e| Error::Training(format!("encoding the DQN state: {e}")))?,
            );
        }
        Ok(data)
    }

    fn load(&mut self, data: &CheckpointData) -> Result<()> {
        let src = Path::new("model.safetensors");
        self.store
            .load_state_dict(&raw_to_tensors(&data.model, &self.device)?, src)?;
        let Some(agent) = super::resume_state(data) else {
            // Weights only (a teacher, or evaluation): the target starts as the online net.
            return self.target_store.copy_from(&self.store);
        };
        let state: DqnResumeState = super::decode_resume_state(agent)?;
        let (opt, replay, target) = super::resume_arrays(data)?;
        self.target_store.load_state_dict(
            &raw_to_tensors(target, &self.device)?,
            Path::new(crate::checkpoint::TARGET_FILE),
        )?;
        // Every update is one optimiser step, offline or online.
        if state.optimizer_step != state.updates {
            return Err(Error::data(
                crate::checkpoint::TRAINER_STATE_FILE,
                format!(
                    "agent.optimizer_step = {} disagrees with agent.updates = {} (one optimiser step per update)",
                    state.optimizer_step, state.updates
                ),
            ));
        }
        super::restore_adam(&mut self.optimizer, state.optimizer_step, opt, &self.device)?;
        self.replay.import(replay, &state.replay)?;
        self.rng = state.rng;
        self.updates = state.updates;
        match self.hook.as_mut() {
            Some(hook) => hook.load_state(&state.hook),
            None => super::no_hook_state(&state.hook),
        }
    }
}

/// Everything a DQN-family agent needs beyond its weights to resume exactly: the
/// `agent` object of `trainer_state.json`, decoded strictly (a missing, unknown or mistyped
/// field is an error naming it). The optimiser moments live in `optimizer.safetensors`, the
/// target network in `target.safetensors`, the replay contents in `replay.safetensors`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DqnResumeState {
    rng: Rng,
    /// Gradient updates so far (the learning-rate schedule's clock).
    updates: u64,
    /// Adam's step count (its bias correction).
    optimizer_step: u64,
    /// The replay buffer's cursor and length.
    replay: serde_json::Value,
    /// The reincarnation method's state (`null` for a plain run).
    hook: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn t1(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    fn t2(rows: &[[f32; 2]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (rows.len(), 2), &Device::Cpu).unwrap()
    }

    fn close(got: &Tensor, want: &[f32]) {
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    /// Rows: a 1-step transition (γ = 0.9), a terminal one (discount 0: no bootstrap), and a
    /// 2-step one cut by a time limit (γ² = 0.81: it bootstraps).
    fn batch() -> (Tensor, Tensor, Tensor) {
        let returns = t1(&[1.0, 0.5, -1.0]);
        let discounts = t1(&[0.9, 0.0, 0.81]);
        let next_target_q = t2(&[[2.0, 3.0], [5.0, 1.0], [1.0, 4.0]]);
        (returns, discounts, next_target_q)
    }

    #[test]
    fn clip_reward_bounds_only_when_asked() {
        assert_eq!(clip_reward(4.0, Some(1.0)), 1.0);
        assert_eq!(clip_reward(-30.0, Some(1.0)), -1.0);
        assert_eq!(clip_reward(0.25, Some(1.0)), 0.25);
        assert_eq!(clip_reward(4.0, None), 4.0);
    }

    #[test]
    fn td_target_bootstraps_from_the_greedy_target_value() {
        let (r, d, next_target) = batch();
        // argmax of the target net: actions 1, 0, 1 → Q' = 3, 5, 4
        // y = 1 + 0.9·3 = 3.7;  0.5 + 0·5 = 0.5;  −1 + 0.81·4 = 2.24
        let y = td_target(&r, &d, &next_target, None).unwrap();
        close(&y, &[3.7, 0.5, 2.24]);
    }

    #[test]
    fn double_q_takes_the_online_argmax_and_the_target_value() {
        let (r, d, next_target) = batch();
        let next_online = t2(&[[4.0, 1.0], [0.0, 2.0], [3.0, 1.0]]);
        // argmax of the online net: actions 0, 1, 0 → the target's Q' = 2, 1, 1
        // y = 1 + 0.9·2 = 2.8;  0.5 + 0 = 0.5;  −1 + 0.81·1 = −0.19
        let y = td_target(&r, &d, &next_target, Some(&next_online)).unwrap();
        close(&y, &[2.8, 0.5, -0.19]);
    }

    #[test]
    fn td_target_carries_no_gradient() {
        let (r, d, next_target) = batch();
        let v = Var::from_tensor(&next_target).unwrap();
        let y = td_target(&r, &d, v.as_tensor(), None).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&v).is_none());
    }

    #[test]
    fn dqn_loss_is_mse_or_huber_on_the_taken_actions() {
        let q_all = Var::from_tensor(&t2(&[[1.0, 2.0], [0.5, -1.0]])).unwrap();
        let taken = crate::agents::one_hot(&[1, 0], 2, &Device::Cpu).unwrap();
        let y = t1(&[4.0, 0.0]);
        // Q(s, a) = 2, 0.5; δ = −2, 0.5
        let (mse, q) = dqn_loss(q_all.as_tensor(), &taken, &y, TdLoss::Mse).unwrap();
        close(&q, &[2.0, 0.5]);
        close(&mse, &[(4.0 + 0.25) / 2.0]);
        // d/dQ of mean δ² = 2δ/2 = δ on the taken actions, 0 elsewhere
        let g = mse.backward().unwrap();
        close(g.get(&q_all).unwrap(), &[0.0, -2.0, 0.5, 0.0]);
        // Huber: |δ| = 2 > 1 → 2 − ½ = 1.5; |δ| = 0.5 → ½·0.25 = 0.125
        let (huber, _) = dqn_loss(q_all.as_tensor(), &taken, &y, TdLoss::Huber).unwrap();
        close(&huber, &[(1.5 + 0.125) / 2.0]);
        // its gradient is δ clipped to [−1, 1], over the batch of 2
        let g = huber.backward().unwrap();
        close(g.get(&q_all).unwrap(), &[0.0, -0.5, 0.25, 0.0]);
    }

    /// Logits `(2 rows, 2 actions, 3 atoms)` on the support z = −1, 0, 1; −1e4 is probability 0.
    fn c51_logits(rows: [[[f32; 3]; 2]; 2]) -> Tensor {
        Tensor::new(&rows, &Device::Cpu).unwrap()
    }

    #[test]
    fn c51_target_projects_the_greedy_distribution_and_clips_to_the_support() {
        let support = CategoricalSupport::new(3, -1.0, 1.0).unwrap();
        const NO: f32 = -1e4;
        // Target net: action 0 is ½/½ on z = −1, 0 (mean −½); action 1 is ½/½ on z = 0, 1 (mean ½).
        let next_target = c51_logits([[[0.0, 0.0, NO], [NO, 0.0, 0.0]]; 2]);
        // Row 0: r = 0.5, γ = 0.5. Row 1: terminal (discount 0) with r = 3, beyond v_max.
        let r = t1(&[0.5, 3.0]);
        let d = t1(&[0.5, 0.0]);
        // Greedy by the target: action 1. z = 0 → 0.5 (half to z = 0, half to z = 1);
        // z = 1 → 1.0. So m = [0, 0.25, 0.75]. Row 1: 3 clips to 1 → [0, 0, 1].
        let m = c51_target(&support, &r, &d, &next_target, None).unwrap();
        close(&m, &[0.0, 0.25, 0.75, 0.0, 0.0, 1.0]);
        // Double Q: the online net prefers action 0 (mean 1 against −1); the target's action 0
        // is ½/½ on z = −1, 0: z = −1 → 0; z = 0 → 0.5. So m = [0, 0.5 + 0.25, 0.25].
        let next_online = c51_logits([[[NO, NO, 0.0], [0.0, NO, NO]]; 2]);
        let m = c51_target(&support, &r, &d, &next_target, Some(&next_online)).unwrap();
        close(&m, &[0.0, 0.75, 0.25, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn c51_loss_is_the_cross_entropy_of_the_taken_actions_distribution() {
        // Row 0 took action 1, whose logits are uniform: CE to [0, 0.75, 0.25] = ln 3.
        // Row 1 took action 0, logits (0, 0, ln 2) → p = (¼, ¼, ½): CE to [0, 0, 1] = ln 2.
        let ln2 = std::f32::consts::LN_2;
        let logits = Var::from_tensor(&c51_logits([
            [[5.0, -2.0, 1.0], [0.0, 0.0, 0.0]],
            [[0.0, 0.0, ln2], [3.0, 3.0, 3.0]],
        ]))
        .unwrap();
        let taken = crate::agents::one_hot(&[1, 0], 2, &Device::Cpu).unwrap();
        let target = Tensor::new(&[[0.0f32, 0.75, 0.25], [0.0, 0.0, 1.0]], &Device::Cpu).unwrap();
        let (loss, logits_a) = c51_loss(logits.as_tensor(), &taken, &target).unwrap();
        close(&logits_a, &[0.0, 0.0, 0.0, 0.0, 0.0, ln2]);
        close(&loss, &[(3f32.ln() + ln2) / 2.0]);
        // ∂/∂logits = (softmax − m)/2 on the taken action, 0 on the other
        let g = loss.backward().unwrap();
        let third = 1.0 / 3.0;
        close(
            g.get(&logits).unwrap(),
            &[
                0.0,
                0.0,
                0.0,
                third / 2.0,
                (third - 0.75) / 2.0,
                (third - 0.25) / 2.0,
                0.125,
                0.125,
                -0.25,
                0.0,
                0.0,
                0.0,
            ],
        );
    }

    /// `reward_clip` clips what the learner stores; without it rewards are stored as given.
    #[test]
    fn reward_clip_applies_to_the_stored_rewards_only_when_set() {
        let fam = crate::envs::TaskFamily::from_id("cartpole").unwrap();
        for (clip, want) in [
            (Some(1.0), vec![1.0, -1.0, 0.5]),
            (None, vec![4.0, -7.0, 0.5]),
        ] {
            let cfg = DqnConfig {
                reward_clip: clip,
                ..DqnConfig::default()
            };
            let mut dqn = Dqn::new("dqn", cfg, fam.spec(), &Device::Cpu, 0, Some(1_000)).unwrap();
            let obs = [0.0f32; 12];
            let actions = ActionBuf::Discrete(vec![0, 1, 0]);
            dqn.observe(&Experience {
                obs: &obs,
                actions: &actions,
                rewards: &[4.0, -7.0, 0.5],
                next_obs: &obs,
                terminated: &[false; 3],
                truncated: &[false; 3],
            })
            .unwrap();
            let stored: Vec<f32> = dqn.replay().iter_ordered().map(|t| t.3).collect();
            assert_eq!(stored, want, "clip {clip:?}");
        }
    }

    /// Offline updates move the online network away from the target; ending the phase makes
    /// them equal, so the first online TD targets come from the network the phase produced.
    #[test]
    fn the_offline_phase_ends_with_the_target_network_synced() {
        let fam = crate::envs::TaskFamily::from_id("cartpole").unwrap();
        let cfg = DqnConfig {
            batch_size: 8,
            buffer_size: 64,
            target_update_frequency: Steps::Count(10_000),
            ..DqnConfig::default()
        };
        let mut dqn = Dqn::new("dqn", cfg, fam.spec(), &Device::Cpu, 0, Some(1_000)).unwrap();
        let mut data = ReplayBuffer::new(64, 4, None);
        for i in 0..64 {
            let o = [i as f32 * 0.01, 0.0, -0.02, 0.1];
            data.push(&o, (i % 2) as i64, &[], 1.0, &o, i % 9 == 0, false)
                .unwrap();
        }
        for _ in 0..5 {
            dqn.offline_step(&data, 0).unwrap();
        }
        let differ = |d: &Dqn| {
            let (a, b) = (d.store.state_dict(), d.target_store.state_dict());
            a.iter().any(|(k, t)| {
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                    != b[k].flatten_all().unwrap().to_vec1::<f32>().unwrap()
            })
        };
        assert!(
            differ(&dqn),
            "offline updates should have moved the online network"
        );
        dqn.end_offline_phase().unwrap();
        assert!(!differ(&dqn));
    }

    #[test]
    fn defaults_resolve_against_the_budget_and_explicit_counts_win() {
        let c = DqnConfig::default().resolve(Some(100_000)).unwrap();
        assert_eq!(c.epsilon.decay_steps, Steps::Count(50_000));
        assert_eq!(c.learning_starts, Steps::Count(2_000));
        assert_eq!(c.target_update_frequency, Steps::Count(500));
        // CleanRL's own budget gives CleanRL's numbers; a long run caps learning starts.
        let c = DqnConfig::default().resolve(Some(500_000)).unwrap();
        assert_eq!(c.learning_starts, Steps::Count(10_000));
        assert_eq!(c.epsilon.decay_steps, Steps::Count(250_000));
        let c = DqnConfig::default().resolve(Some(10_000_000)).unwrap();
        assert_eq!(c.learning_starts, Steps::Count(10_000));
        // Explicit counts are kept; a fractional lr schedule spans the run's updates:
        // (10_000 − 1_000) / 3 steps between updates × 2 per update = 6_000.
        let mut c = DqnConfig {
            learning_starts: Steps::Count(1_000),
            train_frequency: 3,
            gradient_steps: 2,
            learning_rate: Schedule::Linear {
                start: 1.0,
                end: 0.0,
                steps: Steps::fraction(1.0),
            },
            ..DqnConfig::default()
        };
        c.epsilon.decay_steps = Steps::Count(123);
        let c = c.resolve(Some(10_000)).unwrap();
        assert_eq!(c.learning_starts, Steps::Count(1_000));
        assert_eq!(c.epsilon.decay_steps, Steps::Count(123));
        assert_eq!(c.learning_rate.value(3_000), 0.5);
        // A config rebuilt from a checkpoint holds counts; a fraction there is refused.
        let e = DqnConfig::default().resolve(None).unwrap_err().to_string();
        assert!(e.contains("agent.learning_starts"), "{e}");
        // A warm start holds ε at the end value from the first step.
        let mut c = DqnConfig::default().resolve(Some(1_000)).unwrap();
        c.start_warm();
        assert_eq!(c.epsilon.at(0), 0.05);
    }

    #[test]
    fn epsilon_decays_linearly_then_holds() {
        let e = Epsilon {
            start: 1.0,
            end: 0.05,
            decay_steps: Steps::Count(1000),
        };
        assert_eq!(e.at(0), 1.0);
        assert!((e.at(500) - 0.525).abs() < 1e-12);
        assert!((e.at(1000) - 0.05).abs() < 1e-12);
        assert!((e.at(5000) - 0.05).abs() < 1e-12);
    }

    #[test]
    fn a_resume_state_with_a_missing_or_retyped_counter_is_refused() {
        let good = serde_json::json!({
            "rng": Rng::seed_from_u64(1),
            "updates": 7,
            "optimizer_step": 7,
            "replay": {"len": 0},
            "hook": null,
        });
        let ok: DqnResumeState = crate::agents::decode_resume_state(&good).unwrap();
        assert_eq!((ok.updates, ok.optimizer_step), (7, 7));
        for (field, bad) in [
            ("optimizer_step", serde_json::Value::Null),
            ("updates", serde_json::json!("7")),
        ] {
            let mut v = good.clone();
            if bad.is_null() {
                v.as_object_mut().unwrap().remove(field);
            } else {
                v[field] = bad;
            }
            let err = crate::agents::decode_resume_state::<DqnResumeState>(&v)
                .err()
                .unwrap()
                .to_string();
            assert!(
                err.contains("trainer_state.json") && err.contains(field),
                "{err}"
            );
        }
    }
}
