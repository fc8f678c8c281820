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
//! With `planning_sweeps = N` the agent also keeps a model of what each state-action last led
//! to (reward and next state: the environment is taken as deterministic) and, whenever an
//! episode ends, sweeps the same update over every modelled state-action until the values
//! settle (at most N sweeps): value iteration on what it has seen (Dyna-Q with full sweeps,
//! Sutton & Barto 2018, §8.2), optimistic where it has not. A reward found once is then
//! worth its discounted value from every known state, so the next episode heads straight for
//! it, where one-step updates move it back one state per visit. The exploration is the same
//! sweep of untried actions.
//!
//! With `known_moves` (the dark gridworlds) planning also covers the untried state-actions,
//! with the room's move rule and the arrivals learned from tried ones (stepping onto a cell
//! with a given memory paid r and ended the episode or not; an unseen arrival pays 0), over
//! every cell: a model-based learner that knows how it moves but not where rewards are. A
//! reward found once is then reached by shortest routes from any start, and with
//! `initial_value = 0` the agent walks at random until it finds one. Its behaviour is then a
//! function of the rewards it has found, which an in-context learner's context shows, where
//! plain planning's routes depend on which transitions it happened to try.
//!
//! With `memory = "episode_return"` a state is the observation and the return of the episode
//! so far (see [`Memory`]): on Dark Key-to-Door the same cell is two states, before and after
//! the key, while the logged observations stay the position alone.
//!
//! The table is the "model": `model.safetensors` holds `observations` (F32, states × (obs_dim +
//! memory width), in the order first visited), `q` (F64, states × actions) and, with planning,
//! `outcomes` (F64, states × actions × 2: reward and next state's row, −1 after a termination,
//! NaN for an untried action); the tie-breaking RNG and the episode memory go to
//! `trainer_state.json`, so a resumed run equals an uninterrupted one.

use super::memory::{EpisodeMemory, Memory};
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
    /// What a state holds beside the observation (none by default). Left out of written
    /// configs when none.
    #[serde(skip_serializing_if = "Memory::is_none")]
    pub memory: Memory,
    /// Sweeps of planning over the modelled state-actions after each episode (0: none, plain
    /// Q-learning). Left out of written configs when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub planning_sweeps: usize,
    /// Planning also over the state-actions not tried yet, with the room's known moves (the
    /// dark gridworlds only): rewards and terminations are learned per arrival (cell and
    /// memory) from the tried ones, every other arrival counts as paying nothing. A reward
    /// found once is then worth its discounted value from every cell along the shortest
    /// routes, and with `initial_value = 0` the agent walks at random until it finds one.
    /// Left out of written configs when off.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub known_moves: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Relative distance below the highest action value within which values count as tied.
const TIE_TOLERANCE: f64 = 1e-9;

/// What a tried state-action last led to (the model planning sweeps over).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Outcome {
    reward: f64,
    /// The next state's row; `None` after a termination.
    next: Option<usize>,
}

impl Default for TabularQConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1.0,
            gamma: 0.99,
            initial_value: 1.0,
            epsilon: 0.0,
            max_states: 1_000_000,
            memory: Memory::None,
            planning_sweeps: 0,
            known_moves: false,
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
    /// State (observation and memory) bits → row of `q`.
    index: HashMap<Vec<u32>, usize>,
    /// The states, row by row in the order first visited.
    observations: Vec<f32>,
    /// The training environments' episode memory (updated by `observe`).
    memory: EpisodeMemory,
    /// The evaluation environments' episode memory (updated through [`Agent::eval_observe`]).
    eval_memory: EpisodeMemory,
    /// Action values, `states × n_actions`.
    q: Vec<f64>,
    /// With planning: each state-action's last outcome, `states × n_actions` (empty without).
    outcomes: Vec<Option<Outcome>>,
    rng: Rng,
    /// Per row, the action probabilities the last exploring `act` drew from (the logged
    /// `policy` column): ε/n on each action plus (1 − ε) shared by the best ones.
    last_probs: Vec<f32>,
    /// With `known_moves`: the room's side.
    grid: Option<i32>,
}

/// The side of the room whose moves `agent.known_moves` plans with: a dark gridworld whose
/// observation is the position alone, with its five moves, and planning on.
fn known_grid(config: &TabularQConfig, env: &EnvSpec, n_actions: usize) -> Result<i32> {
    let dark = ["dark_room", "dark_room_hard", "dark_key_to_door"].contains(&env.id());
    let side = match &env.observation_space {
        Space::Box { shape, high, .. } if dark && shape[..] == [2] && n_actions == 5 => {
            high.get(0) as i32 + 1
        }
        _ => {
            return Err(Error::Config(format!(
                "agent.known_moves plans with the moves of a dark gridworld observed by its \
                 position (dark_room, dark_room_hard, dark_key_to_door without observe_key); \
                 `{}` is not one",
                env.id()
            )))
        }
    };
    if config.planning_sweeps == 0 {
        return Err(Error::Config(
            "agent.known_moves plans: set agent.planning_sweeps to at least 1".into(),
        ));
    }
    Ok(side)
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
        let grid = if config.known_moves {
            Some(known_grid(&config, env, n_actions)?)
        } else {
            None
        };
        Ok(Self {
            grid,
            config,
            env: env.clone(),
            n_actions,
            obs_dim: env.observation_space.flat_dim(),
            index: HashMap::new(),
            observations: Vec::new(),
            memory: EpisodeMemory::default(),
            eval_memory: EpisodeMemory::default(),
            q: Vec::new(),
            outcomes: Vec::new(),
            rng: Rng::seed_from_u64(crate::rng::derive_seed(seed, 3)),
            last_probs: Vec::new(),
        })
    }

    /// Distinct observations seen so far.
    pub fn num_states(&self) -> usize {
        self.index.len()
    }

    /// Width of a state: the observation, then the memory.
    fn state_dim(&self) -> usize {
        self.obs_dim + self.config.memory.width()
    }

    /// The states of `obs` (`B·obs_dim`) with `memory` (see [`EpisodeMemory::rows`]).
    fn states<'o>(
        &self,
        obs: &'o [f32],
        memory: &EpisodeMemory,
    ) -> Result<std::borrow::Cow<'o, [f32]>> {
        memory.rows("tabular_q", obs, self.obs_dim, self.config.memory)
    }

    /// The action values of state `obs` (observation and memory; the initial values where it
    /// was never updated).
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
        if self.config.planning_sweeps > 0 {
            self.outcomes
                .extend(std::iter::repeat_n(None, self.n_actions));
        }
        Ok(r)
    }

    /// The best value of row `r`.
    fn best_value(&self, r: usize) -> f64 {
        let na = self.n_actions;
        self.q[r * na..(r + 1) * na]
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// Planning: the Q-learning update on every modelled state-action, sweep after sweep, until
    /// no value moves by more than 1e-12 or `planning_sweeps` sweeps are done.
    fn plan(&mut self) -> Result<()> {
        let model = match self.grid {
            Some(side) => self.move_model(side)?,
            None => Vec::new(),
        };
        let (lr, gamma) = (self.config.learning_rate, self.config.gamma);
        for _ in 0..self.config.planning_sweeps {
            let mut moved = 0.0f64;
            for i in 0..self.outcomes.len() {
                let Some(o) = self.outcomes[i].or(model.get(i).copied().flatten()) else {
                    continue;
                };
                let next = o.next.map_or(0.0, |r| self.best_value(r));
                let q = &mut self.q[i];
                let change = lr * (o.reward + gamma * next - *q);
                *q += change;
                moved = moved.max(change.abs());
            }
            if moved <= 1e-12 {
                break;
            }
        }
        Ok(())
    }

    /// With `known_moves`: an outcome for every untried state-action of every cell (rows are
    /// added for each cell with each memory seen so far), from the room's moves and the
    /// arrivals learned from the tried ones (what stepping onto a cell with a given memory
    /// paid, and whether it ended the episode); an arrival never seen pays nothing.
    fn move_model(&mut self, side: i32) -> Result<Vec<Option<Outcome>>> {
        let (d, od, na) = (self.state_dim(), self.obs_dim, self.n_actions);
        let cell = |s: &[f32]| (s[0] as i32, s[1] as i32);
        let arrival_key = |c: (i32, i32), mem: &[f32]| {
            let mut k = obs_key(&[c.0 as f32, c.1 as f32]);
            k.extend(obs_key(mem));
            k
        };
        let mut arrivals = HashMap::new();
        let mut memories = std::collections::BTreeMap::new();
        for (r, s) in self.observations.chunks_exact(d).enumerate() {
            memories.insert(obs_key(&s[od..]), s[od..].to_vec());
            for a in 0..na {
                if let Some(o) = self.outcomes[r * na + a] {
                    let to = crate::envs::gridworld::apply_move(side, cell(s), a);
                    arrivals.insert(arrival_key(to, &s[od..]), (o.reward, o.next.is_none()));
                }
            }
        }
        for mem in memories.values() {
            for y in 0..side {
                for x in 0..side {
                    let mut s = vec![x as f32, y as f32];
                    s.extend_from_slice(mem);
                    self.row(&s)?;
                }
            }
        }
        let rows = self.index.len();
        let mut model = vec![None; rows * na];
        for r in 0..rows {
            let s = self.observations[r * d..(r + 1) * d].to_vec();
            for a in 0..na {
                if self.outcomes[r * na + a].is_some() {
                    continue;
                }
                let to = crate::envs::gridworld::apply_move(side, cell(&s), a);
                let (reward, ends) = arrivals
                    .get(&arrival_key(to, &s[od..]))
                    .copied()
                    .unwrap_or((0.0, false));
                let next = if ends {
                    None
                } else {
                    let mut n = vec![to.0 as f32, to.1 as f32];
                    n.extend(s[od..].iter().map(|m| m + reward as f32));
                    Some(self.row(&n)?)
                };
                model[r * na + a] = Some(Outcome { reward, next });
            }
        }
        Ok(model)
    }

    /// The actions of highest value, counting as tied the values within rounding error of the
    /// highest ([`TIE_TOLERANCE`] relative): two routes of equal length reach equal values by
    /// different sums, and which one rounds higher must not decide the action.
    fn best(values: &[f64]) -> Vec<usize> {
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let floor = max - TIE_TOLERANCE * max.abs().max(1.0);
        (0..values.len()).filter(|&a| values[a] >= floor).collect()
    }
}

impl Agent for TabularQ {
    fn algorithm(&self) -> &str {
        "tabular_q"
    }

    fn behaviour_policy_dim(&self) -> Option<usize> {
        Some(self.n_actions)
    }

    fn behaviour_probs(&self) -> &[f32] {
        &self.last_probs
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
        let memory = if explore {
            self.memory.ensure(n);
            &self.memory
        } else {
            &self.eval_memory
        };
        let states = self.states(obs, memory)?;
        let (d, na) = (self.state_dim(), self.n_actions);
        if explore {
            self.last_probs.clear();
            self.last_probs.resize(n * na, 0.0);
        }
        for (i, a) in out.iter_mut().enumerate().take(n) {
            let best = Self::best(&self.values(&states[i * d..(i + 1) * d]));
            if explore {
                let eps = self.config.epsilon;
                let row = &mut self.last_probs[i * na..(i + 1) * na];
                row.iter_mut().for_each(|p| *p = (eps / na as f64) as f32);
                for &b in &best {
                    row[b] += ((1.0 - eps) / best.len() as f64) as f32;
                }
            }
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
        let n = actions.len();
        self.memory.ensure(n);
        let od = self.obs_dim;
        let obs = self.states(&exp.obs[..n * od], &self.memory)?;
        let after = self.memory.after(exp.rewards);
        let next_obs = self.states(&exp.next_obs[..n * od], &after)?;
        let (d, na) = (self.state_dim(), self.n_actions);
        for (i, &a) in actions.iter().enumerate() {
            if a >= na {
                return Err(Error::Env(format!(
                    "tabular_q: action {a} is outside 0..{na}"
                )));
            }
            let next = if exp.terminated[i] {
                0.0
            } else {
                let v = self.values(&next_obs[i * d..(i + 1) * d]);
                v.into_iter().fold(f64::NEG_INFINITY, f64::max)
            };
            let target = exp.rewards[i] as f64 + self.config.gamma * next;
            let r = self.row(&obs[i * d..(i + 1) * d])?;
            let q = &mut self.q[r * na + a];
            *q += self.config.learning_rate * (target - *q);
            if self.config.planning_sweeps > 0 {
                let next = if exp.terminated[i] {
                    None
                } else {
                    Some(self.row(&next_obs[i * d..(i + 1) * d])?)
                };
                self.outcomes[r * na + a] = Some(Outcome {
                    reward: exp.rewards[i] as f64,
                    next,
                });
            }
        }
        self.memory
            .record(exp.rewards, exp.terminated, exp.truncated);
        let ended = (0..n).any(|i| exp.terminated[i] || exp.truncated[i]);
        if ended && self.config.planning_sweeps > 0 {
            self.plan()?;
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

    fn eval_begin(&mut self, n_envs: usize) {
        self.eval_memory = EpisodeMemory::fresh(n_envs);
    }

    fn eval_observe(&mut self, feedback: &crate::eval::Feedback<'_>) {
        self.eval_memory.observe(feedback);
    }

    /// One-hot on the greedy action (with a memory, at the start of an episode: a bare batch
    /// of observations carries no episode).
    fn policy_output(&self, obs: &[f32]) -> Result<PolicyOutput> {
        let n = super::batch_rows("tabular_q", obs, self.obs_dim)?;
        let states = self.states(obs, &EpisodeMemory::default())?;
        let d = self.state_dim();
        let mut p = vec![0f32; n * self.n_actions];
        for i in 0..n {
            let best = Self::best(&self.values(&states[i * d..(i + 1) * d]));
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
                    RawArray::f32(vec![s, self.state_dim()], &self.observations),
                ),
                (
                    "q".to_string(),
                    RawArray::f64(vec![s, self.n_actions], &self.q),
                ),
            ])
            .into_iter()
            .chain((self.config.planning_sweeps > 0).then(|| {
                let flat: Vec<f64> = self
                    .outcomes
                    .iter()
                    .flat_map(|o| match o {
                        Some(o) => [o.reward, o.next.map_or(-1.0, |r| r as f64)],
                        None => [f64::NAN, f64::NAN],
                    })
                    .collect();
                (
                    "outcomes".to_string(),
                    RawArray::f64(vec![s, self.n_actions, 2], &flat),
                )
            }))
            .collect(),
            trainer_state: resume
                .then(|| serde_json::json!({ "rng": self.rng, "memory": self.memory.returns })),
            ..Default::default()
        })
    }

    fn load(&mut self, data: &CheckpointData) -> Result<()> {
        let bad = |m: String| Error::data(crate::checkpoint::MODEL_FILE, m);
        let planning = self.config.planning_sweeps > 0;
        let keys: &[&str] = if planning {
            &["observations", "q", "outcomes"]
        } else {
            &["observations", "q"]
        };
        super::bandit_algos::check_model_keys(&data.model, keys)?;
        let get = |name: &str| {
            data.model
                .get(name)
                .ok_or_else(|| bad(format!("missing tensor `{name}`")))
        };
        let (obs, q) = (get("observations")?, get("q")?);
        let s = obs.shape.first().copied().unwrap_or(0);
        let d = self.state_dim();
        if obs.shape != [s, d] || q.shape != [s, self.n_actions] {
            return Err(bad(format!(
                "expected `observations` [states, {d}] (observation and memory) and `q` \
                 [states, {}] with the same number of states, found {:?} and {:?}",
                self.n_actions, obs.shape, q.shape
            )));
        }
        let observations = obs.to_f32("observations", s * d)?;
        let values = q.to_f64("q", s * self.n_actions)?;
        let outcomes = if planning {
            let o = get("outcomes")?;
            if o.shape != [s, self.n_actions, 2] {
                return Err(bad(format!(
                    "expected `outcomes` [{s}, {}, 2] (reward and next state of each \
                     state-action), found {:?}",
                    self.n_actions, o.shape
                )));
            }
            let flat = o.to_f64("outcomes", s * self.n_actions * 2)?;
            flat.chunks_exact(2)
                .map(|p| match (p[0], p[1]) {
                    (r, _) if r.is_nan() => Ok(None),
                    (reward, -1.0) => Ok(Some(Outcome { reward, next: None })),
                    (reward, n) if n >= 0.0 && n.fract() == 0.0 && (n as usize) < s => {
                        Ok(Some(Outcome {
                            reward,
                            next: Some(n as usize),
                        }))
                    }
                    (_, n) => Err(bad(format!(
                        "`outcomes` names next state {n}, not a row of the {s}-state table \
                         (or −1 for a termination)"
                    ))),
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let mut index = HashMap::with_capacity(s);
        for (r, o) in observations.chunks_exact(d.max(1)).enumerate() {
            if index.insert(obs_key(o), r).is_some() {
                return Err(bad(format!(
                    "observation {o:?} appears twice in `observations`"
                )));
            }
        }
        self.index = index;
        self.observations = observations;
        self.q = values;
        self.outcomes = outcomes;
        if let Some(state) = super::resume_state(data) {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct State {
                rng: Rng,
                /// The training environments' episode memory; states written before the
                /// option existed have none (and no memory to keep).
                #[serde(default)]
                memory: Vec<f32>,
            }
            let st: State = super::decode_resume_state(state)?;
            self.rng = st.rng;
            self.memory = EpisodeMemory { returns: st.memory };
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
        // The logged distribution: the two best share everything (ε = 0).
        assert_eq!(a.behaviour_policy_dim(), Some(5));
        assert_eq!(a.behaviour_probs(), &[0.0, 0.0, 0.5, 0.0, 0.5]);
        let mut eps = TabularQ {
            config: TabularQConfig {
                epsilon: 0.5,
                ..TabularQConfig::default()
            },
            ..a
        };
        eps.act(&[4.0, 4.0], true, 0, &mut out).unwrap();
        assert_eq!(eps.behaviour_probs(), &[0.1, 0.1, 0.35, 0.1, 0.35]);
        // Values a rounding error apart are tied; a real difference is not.
        assert_eq!(TabularQ::best(&[0.9, 0.9 * (1.0 - 1e-15), 0.5]), vec![0, 1]);
        assert_eq!(TabularQ::best(&[0.9, 0.9 * (1.0 - 1e-6), 0.5]), vec![0]);
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

    /// With the episode-return memory a state is (observation, return so far): the same cell
    /// before and after a reward is two rows; the memory resets at episode ends, evaluation
    /// keeps its own, and a resumed agent continues with the training memory.
    #[test]
    fn episode_return_memory_splits_states_and_resumes() {
        let cfg = TabularQConfig {
            gamma: 0.5,
            memory: Memory::EpisodeReturn,
            ..Default::default()
        };
        let (mut a, family) = agent(cfg.clone());
        // (4, 4) → (5, 4) paying 1: the state (4, 4, 0) learns 1 + 0.5 · 1 (the next state,
        // (5, 4, 1), is unseen: initial value 1)
        step(&mut a, [4.0, 4.0], 1, 1.0, [5.0, 4.0], false);
        assert_eq!(a.memory.returns, [1.0]);
        assert_eq!(a.values(&[4.0, 4.0, 0.0])[1], 1.5);
        // (5, 4) with the reward in memory, back to (4, 4): the next state is (4, 4, 1), not
        // the (4, 4, 0) just learned, so the target is 0.5 · 1 (unseen)
        step(&mut a, [5.0, 4.0], 0, 0.0, [4.0, 4.0], false);
        assert_eq!(a.values(&[5.0, 4.0, 1.0])[0], 0.5);
        assert_eq!(a.num_states(), 2);
        // the episode ends: the memory restarts at 0
        step(&mut a, [4.0, 4.0], 2, 0.0, [4.0, 5.0], true);
        assert_eq!(a.memory.returns, [0.0]);
        assert_eq!(a.values(&[4.0, 4.0, 1.0])[2], 0.0);
        step(&mut a, [4.0, 4.0], 3, 1.0, [4.0, 3.0], false);
        // greedy evaluation: at (4, 4) with nothing earned the best action is 1 (1.5); after a
        // reward its own memory makes (4, 4) the state whose action 2 was learned to be 0
        let mut out = ActionBuf::Discrete(vec![0]);
        a.eval_begin(1);
        a.act(&[4.0, 4.0], false, 0, &mut out).unwrap();
        assert!(matches!(&out, ActionBuf::Discrete(v) if v[0] == 1));
        a.eval_observe(&crate::eval::Feedback {
            actions: &out,
            rewards: &[1.0],
            terminated: &[false],
            truncated: &[false],
            next_obs: &[5.0, 4.0],
        });
        assert_eq!(a.eval_memory.returns, [1.0]);
        assert_eq!(a.memory.returns, [1.0]);
        let mut data = a.save(true).unwrap();
        assert_eq!(data.model["observations"].shape, vec![3, 3]);
        data.trainer_state = Some(serde_json::json!({ "agent": data.trainer_state }));
        let mut b = TabularQ::new(cfg, family.spec(), 7).unwrap();
        b.load(&data).unwrap();
        assert_eq!(b.memory.returns, [1.0]);
        assert_eq!(b.values(&[4.0, 4.0, 0.0]), a.values(&[4.0, 4.0, 0.0]));
        // a table without the memory column is refused by name
        let (plain, _) = agent(TabularQConfig::default());
        let e = b.load(&plain.save(false).unwrap()).unwrap_err().to_string();
        assert!(e.contains("[states, 3]"), "{e}");
    }

    /// Planning: after an episode ends, a reward found at the end of a path is worth its
    /// discounted value at every state of the path (one-step updates alone moved it back one
    /// state), untried actions keep the optimistic value, and the model survives a resume.
    #[test]
    fn planning_spreads_a_found_reward_along_the_path() {
        let cfg = TabularQConfig {
            gamma: 0.5,
            initial_value: 0.1,
            planning_sweeps: 50,
            ..Default::default()
        };
        let (mut a, family) = agent(cfg.clone());
        let mut plain = agent(TabularQConfig {
            planning_sweeps: 0,
            ..cfg.clone()
        })
        .0;
        // (2, 4) → (3, 4) → (4, 4) → goal paying 1, terminal
        for b in [&mut a, &mut plain] {
            step(b, [2.0, 4.0], 1, 0.0, [3.0, 4.0], false);
            step(b, [3.0, 4.0], 1, 0.0, [4.0, 4.0], false);
            step(b, [4.0, 4.0], 1, 1.0, [5.0, 4.0], true);
        }
        assert_eq!(a.values(&[4.0, 4.0])[1], 1.0);
        assert_eq!(a.values(&[3.0, 4.0])[1], 0.5);
        assert_eq!(a.values(&[2.0, 4.0])[1], 0.25);
        assert_eq!(a.values(&[2.0, 4.0])[0], 0.1);
        // without planning the first two steps bootstrapped from untried actions only
        assert_eq!(plain.values(&[3.0, 4.0])[1], 0.05);
        assert_eq!(plain.values(&[2.0, 4.0])[1], 0.05);
        // greedy acting from (2, 4) follows the path
        let mut out = ActionBuf::Discrete(vec![0]);
        a.act(&[2.0, 4.0], false, 0, &mut out).unwrap();
        assert!(matches!(&out, ActionBuf::Discrete(v) if v[0] == 1));
        // the model round-trips, and a resumed agent plans as the original does
        let mut data = a.save(true).unwrap();
        // three states: the terminal step's next state is never a row
        assert_eq!(data.model["outcomes"].shape, vec![3, 5, 2]);
        data.trainer_state = Some(serde_json::json!({ "agent": data.trainer_state }));
        let mut b = TabularQ::new(cfg, family.spec(), 3).unwrap();
        b.load(&data).unwrap();
        for x in [&mut a, &mut b] {
            step(x, [4.0, 4.0], 1, 0.0, [4.0, 4.0], true);
        }
        for st in [[2.0, 4.0], [3.0, 4.0], [4.0, 4.0]] {
            assert_eq!(a.values(&st), b.values(&st));
        }
        // the goal moved: the path's values follow it down (4, 4) → 0.1 (best untried)
        assert_eq!(a.values(&[3.0, 4.0])[1], 0.05);
        // a model naming a row the table does not have is refused by name
        let mut broken = a.save(false).unwrap();
        let mut o = vec![f64::NAN; 30];
        o[0] = 0.0;
        o[1] = 9.0;
        broken
            .model
            .insert("outcomes".into(), RawArray::f64(vec![3, 5, 2], &o));
        let e = b.load(&broken).unwrap_err().to_string();
        assert!(
            e.contains("`outcomes`") && e.contains("next state 9"),
            "{e}"
        );
    }

    /// Known moves: one step onto Dark Room Hard's goal (reward 1, the episode ends) is planned
    /// from every cell of the room: each one's best actions are exactly the moves that shorten
    /// the way to the goal, with value γ^(d − 1), cells never visited included.
    #[test]
    fn known_moves_plan_shortest_routes_to_a_found_reward() {
        use crate::envs::gridworld::apply_move;
        let family = TaskFamily::new(&EnvConfig::new("dark_room_hard")).unwrap();
        let cfg = TabularQConfig {
            gamma: 0.9,
            initial_value: 0.0,
            planning_sweeps: 100,
            known_moves: true,
            ..Default::default()
        };
        let mut a = TabularQ::new(cfg.clone(), family.spec(), 0).unwrap();
        step(&mut a, [5.0, 4.0], 1, 1.0, [6.0, 4.0], true);
        let dist = |p: (i32, i32)| (p.0 - 6).abs() + (p.1 - 4).abs();
        for (x, y) in [(0, 0), (16, 16), (6, 10), (12, 4), (5, 4), (7, 3)] {
            let v = a.values(&[x as f32, y as f32]);
            let shorter: Vec<usize> = (0..5)
                .filter(|&m| dist(apply_move(17, (x, y), m)) < dist((x, y)))
                .collect();
            assert_eq!(TabularQ::best(&v), shorter, "cell ({x}, {y}): {v:?}");
            let best = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert!(
                (best - 0.9f64.powi(dist((x, y)) - 1)).abs() < 1e-12,
                "{v:?}"
            );
        }
        assert_eq!(a.num_states(), 17 * 17);
        // A saved and reloaded agent plans the next episode as the original does: a second,
        // larger reward at (2, 8) becomes the best target of far cells such as (0, 0).
        let before = a.values(&[0.0, 0.0]);
        let mut data = a.save(true).unwrap();
        data.trainer_state = Some(serde_json::json!({ "agent": data.trainer_state }));
        let mut b = TabularQ::new(cfg.clone(), family.spec(), 0).unwrap();
        b.load(&data).unwrap();
        for x in [&mut a, &mut b] {
            step(x, [3.0, 9.0], 2, 0.0, [3.0, 8.0], false);
            step(x, [3.0, 8.0], 0, 2.0, [2.0, 8.0], true);
        }
        assert_ne!(a.values(&[0.0, 0.0]), before);
        for st in [[0.0, 0.0], [3.0, 8.0], [6.0, 5.0]] {
            assert_eq!(a.values(&st), b.values(&st));
        }
        // Without known moves only the tried step has a value.
        let mut plain = TabularQ::new(
            TabularQConfig {
                known_moves: false,
                ..cfg.clone()
            },
            family.spec(),
            0,
        )
        .unwrap();
        step(&mut plain, [5.0, 4.0], 1, 1.0, [6.0, 4.0], true);
        assert_eq!(plain.values(&[0.0, 0.0]), vec![0.0; 5]);
        // Refused where there are no known moves, or no planning to use them.
        let cartpole = TaskFamily::new(&EnvConfig::new("cartpole")).unwrap();
        let e = TabularQ::new(cfg.clone(), cartpole.spec(), 0)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("agent.known_moves") && e.contains("cartpole"),
            "{e}"
        );
        let no_plan = TabularQConfig {
            planning_sweeps: 0,
            ..cfg
        };
        let e = TabularQ::new(no_plan, family.spec(), 0)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("agent.planning_sweeps"), "{e}");
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
