//! Tabular Q-learning (Watkins 1989; Sutton & Barto 2018, §6.5) with optimistic initial values
//! (Sutton & Barto 2018, §2.6): a source algorithm for sparse-reward gridworlds such as Dark
//! Room Hard, where a policy-gradient learner's random walk rarely meets the one reward.
//!
//! Every action value starts at `initial_value`; a state-action the agent has not tried keeps
//! it, and a tried one drops towards `r + γ max Q(s′, ·)`. With an initial value above what the
//! rewardless moves bootstrap to, the greedy policy heads for the nearest untried action — a
//! systematic sweep of the room — and once the goal's value (`γ^d` at distance `d`) exceeds the
//! initial value, it heads for the goal: a learning history that explores, finds, then exploits.
//!
//! The table is keyed by the exact observation (its f32 bits), so it suits small discrete
//! observation spaces (grid positions); `max_states` bounds it with a clear error. Time limits
//! are not terminations: a truncated step bootstraps from its next state (the observation holds
//! no time). Learning happens in `observe`, one update per transition.
//!
//! The table is the "model": `model.safetensors` holds `observations` (F32, states × obs_dim, in
//! the order first visited) and `q` (F64, states × actions); the tie-breaking RNG goes to
//! `trainer_state.json`, so a resumed run equals an uninterrupted one.

use super::{Agent, Experience, PolicyOutput};
use crate::checkpoint::CheckpointData;
use crate::envs::ActionBuf;
use crate::envs::{EnvSpec, Space};
use crate::error::{Error, Result};
use crate::replay::RawArray;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Tabular Q-learning settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TabularQConfig {
    /// Step size α of `Q ← Q + α (target − Q)`; 1 suits deterministic environments.
    pub learning_rate: f64,
    /// Discount γ.
    pub gamma: f64,
    /// Every action value before its first update (optimism drives exploration).
    pub initial_value: f64,
    /// Probability of a uniformly random action while exploring (0: greedy on the optimistic
    /// values, ties broken at random).
    pub epsilon: f64,
    /// Distinct observations the table may hold before the run stops with an error.
    pub max_states: usize,
}

impl Default for TabularQConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1.0,
            gamma: 0.99,
            initial_value: 1.0,
            epsilon: 0.0,
            max_states: 1_000_000,
        }
    }
}

impl TabularQConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return bad(format!(
                "agent.learning_rate must be in (0, 1], got {}",
                self.learning_rate
            ));
        }
        for (name, v) in [("gamma", self.gamma), ("epsilon", self.epsilon)] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("agent.{name} must be in [0, 1], got {v}"));
            }
        }
        if !self.initial_value.is_finite() {
            return bad(format!(
                "agent.initial_value must be finite, got {}",
                self.initial_value
            ));
        }
        if self.max_states == 0 {
            return bad("agent.max_states must be at least 1".into());
        }
        Ok(())
    }
}

/// The tabular Q-learning agent.
pub struct TabularQ {
    config: TabularQConfig,
    env: EnvSpec,
    n_actions: usize,
    obs_dim: usize,
    /// Observation bits → row of `q`.
    index: HashMap<Vec<u32>, usize>,
    /// The observations, row by row in the order first visited.
    observations: Vec<f32>,
    /// Action values, `states × n_actions`.
    q: Vec<f64>,
    rng: Rng,
}

/// A table key for an exact observation: its f32 bits, with +0 and −0 one key.
pub fn obs_key(obs: &[f32]) -> Vec<u32> {
    obs.iter().map(|&x| (x + 0.0).to_bits()).collect()
}

impl TabularQ {
    pub fn new(config: TabularQConfig, env: &EnvSpec, seed: u64) -> Result<Self> {
        config.validate()?;
        let n_actions = match &env.action_space {
            Space::Discrete { n } => *n,
            other => {
                return Err(Error::Config(format!(
                    "tabular_q needs discrete actions, but `{}` has {other}",
                    env.id()
                )))
            }
        };
        Ok(Self {
            config,
            env: env.clone(),
            n_actions,
            obs_dim: env.observation_space.flat_dim(),
            index: HashMap::new(),
            observations: Vec::new(),
            q: Vec::new(),
            rng: Rng::seed_from_u64(crate::rng::derive_seed(seed, 3)),
        })
    }

    /// Distinct observations seen so far.
    pub fn num_states(&self) -> usize {
        self.index.len()
    }

    /// The action values of `obs` (the initial values where it was never updated).
    pub fn values(&self, obs: &[f32]) -> Vec<f64> {
        match self.index.get(&obs_key(obs)) {
            Some(&r) => self.q[r * self.n_actions..(r + 1) * self.n_actions].to_vec(),
            None => vec![self.config.initial_value; self.n_actions],
        }
    }

    /// The row of `obs`, added with initial values if new.
    fn row(&mut self, obs: &[f32]) -> Result<usize> {
        if let Some(&r) = self.index.get(&obs_key(obs)) {
            return Ok(r);
        }
        if self.index.len() >= self.config.max_states {
            return Err(Error::Training(format!(
                "tabular_q: more than agent.max_states = {} distinct observations of `{}`; \
                 tabular Q-learning needs a small discrete observation space",
                self.config.max_states,
                self.env.id()
            )));
        }
        let r = self.index.len();
        self.index.insert(obs_key(obs), r);
        self.observations.extend_from_slice(obs);
        self.q.extend(std::iter::repeat_n(
            self.config.initial_value,
            self.n_actions,
        ));
        Ok(r)
    }

    /// The actions of highest value.
    fn best(values: &[f64]) -> Vec<usize> {
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (0..values.len()).filter(|&a| values[a] == max).collect()
    }
}

impl Agent for TabularQ {
    fn algorithm(&self) -> &str {
        "tabular_q"
    }

    /// Exploring: ε-random, else a uniformly chosen best action. Greedy: the first best action.
    fn act(
        &mut self,
        obs: &[f32],
        explore: bool,
        _step: u64,
        actions: &mut ActionBuf,
    ) -> Result<()> {
        let n = super::batch_rows("tabular_q", obs, self.obs_dim)?;
        let ActionBuf::Discrete(out) = actions else {
            return Err(Error::Env("tabular_q acts with discrete actions".into()));
        };
        for (i, a) in out.iter_mut().enumerate().take(n) {
            let best = Self::best(&self.values(&obs[i * self.obs_dim..(i + 1) * self.obs_dim]));
            *a = if !explore {
                best[0]
            } else if self.config.epsilon > 0.0 && self.rng.uniform() < self.config.epsilon {
                self.rng.below(self.n_actions)
            } else {
                best[self.rng.below(best.len())]
            };
        }
        Ok(())
    }

    fn observe(&mut self, exp: &Experience<'_>) -> Result<()> {
        let actions = super::discrete_actions("tabular_q", exp.actions)?;
        let (d, na) = (self.obs_dim, self.n_actions);
        for (i, &a) in actions.iter().enumerate() {
            if a >= na {
                return Err(Error::Env(format!(
                    "tabular_q: action {a} is outside 0..{na}"
                )));
            }
            let next = if exp.terminated[i] {
                0.0
            } else {
                let v = self.values(&exp.next_obs[i * d..(i + 1) * d]);
                v.into_iter().fold(f64::NEG_INFINITY, f64::max)
            };
            let target = exp.rewards[i] as f64 + self.config.gamma * next;
            let r = self.row(&exp.obs[i * d..(i + 1) * d])?;
            let q = &mut self.q[r * na + a];
            *q += self.config.learning_rate * (target - *q);
        }
        Ok(())
    }

    fn update(&mut self, _step: u64) -> Result<Option<super::Metrics>> {
        Ok(None)
    }

    fn diagnostics(&self) -> Result<super::Metrics> {
        Ok(BTreeMap::from([(
            "states".to_string(),
            self.num_states() as f64,
        )]))
    }

    /// One-hot on the greedy action.
    fn policy_output(&self, obs: &[f32]) -> Result<PolicyOutput> {
        let n = super::batch_rows("tabular_q", obs, self.obs_dim)?;
        let mut p = vec![0f32; n * self.n_actions];
        for i in 0..n {
            let best = Self::best(&self.values(&obs[i * self.obs_dim..(i + 1) * self.obs_dim]));
            p[i * self.n_actions + best[0]] = 1.0;
        }
        Ok(PolicyOutput::Probs(p))
    }

    fn save(&self, resume: bool) -> Result<CheckpointData> {
        let s = self.num_states();
        Ok(CheckpointData {
            config: serde_json::json!({
                "algorithm": "tabular_q",
                "agent": self.config,
                "env": self.env,
            }),
            model: BTreeMap::from([
                (
                    "observations".to_string(),
                    RawArray::f32(vec![s, self.obs_dim], &self.observations),
                ),
                (
                    "q".to_string(),
                    RawArray::f64(vec![s, self.n_actions], &self.q),
                ),
            ]),
            trainer_state: resume.then(|| serde_json::json!({ "rng": self.rng })),
            ..Default::default()
        })
    }

    fn load(&mut self, data: &CheckpointData) -> Result<()> {
        let bad = |m: String| Error::data(crate::checkpoint::MODEL_FILE, m);
        super::bandit_algos::check_model_keys(&data.model, &["observations", "q"])?;
        let get = |name: &str| {
            data.model
                .get(name)
                .ok_or_else(|| bad(format!("missing tensor `{name}`")))
        };
        let (obs, q) = (get("observations")?, get("q")?);
        let s = obs.shape.first().copied().unwrap_or(0);
        if obs.shape != [s, self.obs_dim] || q.shape != [s, self.n_actions] {
            return Err(bad(format!(
                "expected `observations` [states, {}] and `q` [states, {}] with the same number \
                 of states, found {:?} and {:?}",
                self.obs_dim, self.n_actions, obs.shape, q.shape
            )));
        }
        let observations = obs.to_f32("observations", s * self.obs_dim)?;
        let values = q.to_f64("q", s * self.n_actions)?;
        let mut index = HashMap::with_capacity(s);
        for (r, o) in observations.chunks_exact(self.obs_dim.max(1)).enumerate() {
            if index.insert(obs_key(o), r).is_some() {
                return Err(bad(format!(
                    "observation {o:?} appears twice in `observations`"
                )));
            }
        }
        self.index = index;
        self.observations = observations;
        self.q = values;
        if let Some(state) = super::resume_state(data) {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct State {
                rng: Rng,
            }
            let st: State = super::decode_resume_state(state)?;
            self.rng = st.rng;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envs::{EnvConfig, TaskFamily};

    fn agent(cfg: TabularQConfig) -> (TabularQ, TaskFamily) {
        let family = TaskFamily::new(&EnvConfig::new("dark_room")).unwrap();
        (TabularQ::new(cfg, family.spec(), 0).unwrap(), family)
    }

    fn step(a: &mut TabularQ, obs: [f32; 2], act: usize, r: f32, next: [f32; 2], term: bool) {
        a.observe(&Experience {
            obs: &obs,
            actions: &ActionBuf::Discrete(vec![act]),
            rewards: &[r],
            next_obs: &next,
            terminated: &[term],
            truncated: &[false],
        })
        .unwrap();
    }

    /// Hand-worked updates: α = 0.5, γ = 0.9, Q₀ = 1.
    #[test]
    fn updates_match_hand_computation() {
        let cfg = TabularQConfig {
            learning_rate: 0.5,
            gamma: 0.9,
            ..Default::default()
        };
        let (mut a, _) = agent(cfg);
        // unseen next state: max Q = 1 → target 0.9; Q = 1 + 0.5 (0.9 − 1) = 0.95
        step(&mut a, [4.0, 4.0], 1, 0.0, [5.0, 4.0], false);
        assert_eq!(a.values(&[4.0, 4.0]), vec![1.0, 0.95, 1.0, 1.0, 1.0]);
        // terminal with reward 1: target 1 → Q stays 1
        step(&mut a, [5.0, 4.0], 2, 1.0, [5.0, 5.0], true);
        assert_eq!(a.values(&[5.0, 4.0])[2], 1.0);
        // terminal without reward: target 0 → 0.5; then again → 0.25
        step(&mut a, [5.0, 4.0], 0, 0.0, [4.0, 4.0], true);
        step(&mut a, [5.0, 4.0], 0, 0.0, [4.0, 4.0], true);
        assert_eq!(a.values(&[5.0, 4.0])[0], 0.25);
        // bootstraps from the best value of (5, 4), which is 1
        step(&mut a, [4.0, 4.0], 1, 0.0, [5.0, 4.0], false);
        assert!((a.values(&[4.0, 4.0])[1] - (0.95 + 0.5 * (0.9 - 0.95))).abs() < 1e-12);
        assert_eq!(a.num_states(), 2);
    }

    /// Greedy acting takes the first best action; exploring picks among the tied best only.
    #[test]
    fn acts_on_the_best_actions() {
        let (mut a, _) = agent(TabularQConfig::default());
        for act in [0, 1, 3] {
            step(&mut a, [4.0, 4.0], act, 0.0, [4.0, 4.0], true);
        }
        let mut out = ActionBuf::Discrete(vec![0]);
        a.act(&[4.0, 4.0], false, 0, &mut out).unwrap();
        assert!(matches!(&out, ActionBuf::Discrete(v) if v[0] == 2));
        let mut seen = [false; 5];
        for _ in 0..200 {
            a.act(&[4.0, 4.0], true, 0, &mut out).unwrap();
            let ActionBuf::Discrete(v) = &out else {
                unreachable!()
            };
            seen[v[0]] = true;
        }
        assert_eq!(seen, [false, false, true, false, true]);
    }

    #[test]
    fn save_load_round_trips_and_bad_tables_are_named() {
        let (mut a, family) = agent(TabularQConfig::default());
        step(&mut a, [4.0, 4.0], 1, 0.0, [5.0, 4.0], false);
        step(&mut a, [5.0, 4.0], 3, 1.0, [5.0, 5.0], true);
        let mut data = a.save(true).unwrap();
        // The training loop files the agent's state under `agent`.
        data.trainer_state = Some(serde_json::json!({ "agent": data.trainer_state }));
        let mut b = TabularQ::new(TabularQConfig::default(), family.spec(), 7).unwrap();
        b.load(&data).unwrap();
        assert_eq!(b.values(&[4.0, 4.0]), a.values(&[4.0, 4.0]));
        assert_eq!(b.values(&[5.0, 4.0]), a.values(&[5.0, 4.0]));
        assert_eq!(b.rng.next_u64(), a.rng.next_u64());
        let mut broken = a.save(false).unwrap();
        broken
            .model
            .insert("q".into(), RawArray::f64(vec![3, 5], &[0.0; 15]));
        let e = b.load(&broken).unwrap_err().to_string();
        assert!(e.contains("`q`") && e.contains("[3, 5]"), "{e}");
    }

    #[test]
    fn the_table_is_bounded() {
        let cfg = TabularQConfig {
            max_states: 1,
            ..Default::default()
        };
        let (mut a, _) = agent(cfg);
        step(&mut a, [4.0, 4.0], 1, 0.0, [5.0, 4.0], false);
        let e = a
            .observe(&Experience {
                obs: &[5.0, 4.0],
                actions: &ActionBuf::Discrete(vec![0]),
                rewards: &[0.0],
                next_obs: &[4.0, 4.0],
                terminated: &[false],
                truncated: &[false],
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent.max_states = 1"), "{e}");
    }
}
