//! A batch of environments stepped together, each possibly of a different task, with
//! same-step auto-reset: when an episode ends, [`VecEnv::next_obs`] holds its true last
//! observation (for storage and bootstrapping) and [`VecEnv::obs`] already holds the first
//! observation of the next episode.

use super::{Action, Env, Space, TaskFamily};
use crate::error::{Error, Result};
use crate::rng::derive_seed;

/// A batch of actions, one per environment: discrete indices, or continuous rows of
/// `action_dim` values laid out one environment after another.
#[derive(Clone, Copy, Debug)]
pub enum ActionBatch<'a> {
    Discrete(&'a [usize]),
    Continuous(&'a [f32]),
}

/// An episode that finished during the last [`VecEnv::step`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpisodeEnd {
    pub env: usize,
    pub task: usize,
    pub ret: f64,
    pub length: u32,
    pub terminated: bool,
}

/// Where a [`BatchEnv`] writes one step of `n` environments.
pub struct BatchOut<'a> {
    /// The observations to act on next (a new episode's first where one ended).
    pub obs: &'a mut [f32],
    /// The true next observations (an ended episode's last).
    pub next_obs: &'a mut [f32],
    pub rewards: &'a mut [f32],
    pub terminated: &'a mut [bool],
    pub truncated: &'a mut [bool],
}

/// Environments that step together elsewhere (worker processes, `env.num_envs`):
/// one call steps them all, and an environment whose episode ends starts its next episode in
/// the same step, continuing its generator as `reset(None)` does.
pub trait BatchEnv: Send {
    /// Resets environment `i` with `seeds[i]`, writing every first observation.
    fn reset(&mut self, seeds: &[u64], obs: &mut [f32]) -> Result<()>;
    fn step(&mut self, actions: ActionBatch<'_>, out: BatchOut<'_>) -> Result<()>;
}

/// A slot of a [`BatchEnv`] in [`VecEnv`]'s list of environments: its spaces, nothing to step.
struct BatchSlot {
    id: String,
    observation_space: Space,
    action_space: Space,
    max_episode_steps: u32,
}

impl Env for BatchSlot {
    fn observation_space(&self) -> &Space {
        &self.observation_space
    }
    fn action_space(&self) -> &Space {
        &self.action_space
    }
    fn max_episode_steps(&self) -> u32 {
        self.max_episode_steps
    }
    fn reset(&mut self, _seed: Option<u64>, obs: &mut [f32]) {
        obs.fill(f32::NAN);
    }
    fn step(&mut self, _action: Action<'_>, _obs: &mut [f32]) -> Result<crate::envs::Step> {
        Err(Error::Env(format!(
            "`{}` steps in a worker process, with its batch",
            self.id
        )))
    }
    fn snapshot(&self) -> Result<serde_json::Value> {
        Ok(serde_json::json!({ "worker": self.id, "state": "not captured" }))
    }
    fn restore(&mut self, _state: &serde_json::Value) -> Result<()> {
        Err(Error::Env(format!(
            "`{}` runs in a worker process whose state is not saved in checkpoints, so the run \
             does not resume; start it again",
            self.id
        )))
    }
}

pub struct VecEnv {
    family: TaskFamily,
    envs: Vec<Box<dyn Env>>,
    /// `env.num_envs`: the environments step in worker processes (`envs` holds their slots).
    batch: Option<Box<dyn BatchEnv>>,
    /// An error of the batch's reset, returned by the next step.
    pending: Option<Error>,
    tasks: Vec<usize>,
    pending_tasks: Vec<Option<usize>>,
    seed: u64,
    remakes: u64,
    obs_dim: usize,
    action_dim: usize,
    obs: Vec<f32>,
    next_obs: Vec<f32>,
    rewards: Vec<f32>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    ep_return: Vec<f64>,
    ep_len: Vec<u32>,
    finished: Vec<EpisodeEnd>,
}

impl VecEnv {
    /// One environment per entry of `tasks`. Environment `i` is seeded with
    /// `derive_seed(seed, i)` at the first [`reset`](Self::reset).
    pub fn new(family: &TaskFamily, tasks: &[usize], seed: u64) -> Result<Self> {
        if tasks.is_empty() {
            return Err(Error::Config("a VecEnv needs at least one task".into()));
        }
        let spec = family.spec();
        let (envs, batch) = match spec.config.num_envs {
            Some(_) => {
                let batch = super::gym::make_batch(&spec.config, tasks.len())?;
                let slots = tasks
                    .iter()
                    .map(|_| {
                        Box::new(BatchSlot {
                            id: spec.id().to_string(),
                            observation_space: spec.observation_space.clone(),
                            action_space: spec.action_space.clone(),
                            max_episode_steps: spec.max_episode_steps,
                        }) as Box<dyn Env>
                    })
                    .collect();
                (slots, Some(batch))
            }
            None => (
                tasks
                    .iter()
                    .map(|&t| family.make(t))
                    .collect::<Result<Vec<_>>>()?,
                None,
            ),
        };
        let obs_dim = spec.observation_space.flat_dim();
        let action_dim = spec.action_space.flat_dim();
        let n = tasks.len();
        Ok(Self {
            family: family.clone(),
            envs,
            batch,
            pending: None,
            tasks: tasks.to_vec(),
            pending_tasks: vec![None; n],
            seed,
            remakes: 0,
            obs_dim,
            action_dim,
            obs: vec![0.0; n * obs_dim],
            next_obs: vec![0.0; n * obs_dim],
            rewards: vec![0.0; n],
            terminated: vec![false; n],
            truncated: vec![false; n],
            ep_return: vec![0.0; n],
            ep_len: vec![0; n],
            finished: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.envs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.envs.is_empty()
    }
    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }
    pub fn tasks(&self) -> &[usize] {
        &self.tasks
    }
    pub fn env(&self, i: usize) -> &dyn Env {
        self.envs[i].as_ref()
    }

    /// Resets every environment (seeding each from the batch seed) and returns the observations.
    pub fn reset(&mut self) -> &[f32] {
        let d = self.obs_dim;
        if let Some(batch) = self.batch.as_mut() {
            let seeds: Vec<u64> = (0..self.envs.len())
                .map(|i| derive_seed(self.seed, i as u64))
                .collect();
            if let Err(e) = batch.reset(&seeds, &mut self.obs) {
                self.obs.fill(f32::NAN);
                self.pending = Some(e);
            }
            self.ep_return.fill(0.0);
            self.ep_len.fill(0);
            self.next_obs.copy_from_slice(&self.obs);
            return &self.obs;
        }
        for (i, env) in self.envs.iter_mut().enumerate() {
            env.reset(
                Some(derive_seed(self.seed, i as u64)),
                &mut self.obs[i * d..(i + 1) * d],
            );
            self.ep_return[i] = 0.0;
            self.ep_len[i] = 0;
        }
        self.next_obs.copy_from_slice(&self.obs);
        &self.obs
    }

    /// Switches environment `i` to `task` at its next episode boundary.
    pub fn set_task_on_reset(&mut self, i: usize, task: usize) {
        self.pending_tasks[i] = Some(task);
    }

    /// Steps every environment once. Environments whose episode ended are reset in place.
    pub fn step(&mut self, actions: ActionBatch<'_>) -> Result<()> {
        let n = self.envs.len();
        match actions {
            ActionBatch::Discrete(a) if a.len() != n => {
                return Err(Error::Env(format!(
                    "VecEnv of {n} environments got {} actions",
                    a.len()
                )))
            }
            ActionBatch::Continuous(a) if a.len() != n * self.action_dim => {
                return Err(Error::Env(format!(
                    "VecEnv of {n} environments with action dim {} got {} values (expected {})",
                    self.action_dim,
                    a.len(),
                    n * self.action_dim
                )))
            }
            _ => {}
        }
        self.finished.clear();
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        if let Some(batch) = self.batch.as_mut() {
            batch.step(
                actions,
                BatchOut {
                    obs: &mut self.obs,
                    next_obs: &mut self.next_obs,
                    rewards: &mut self.rewards,
                    terminated: &mut self.terminated,
                    truncated: &mut self.truncated,
                },
            )?;
            for i in 0..n {
                self.ep_return[i] += f64::from(self.rewards[i]);
                self.ep_len[i] += 1;
                if self.terminated[i] || self.truncated[i] {
                    self.finished.push(EpisodeEnd {
                        env: i,
                        task: self.tasks[i],
                        ret: self.ep_return[i],
                        length: self.ep_len[i],
                        terminated: self.terminated[i],
                    });
                    self.ep_return[i] = 0.0;
                    self.ep_len[i] = 0;
                    // One task per Gymnasium env: a pending switch is to the same task.
                    self.pending_tasks[i] = None;
                }
            }
            return Ok(());
        }
        let d = self.obs_dim;
        for i in 0..n {
            let action = match actions {
                ActionBatch::Discrete(a) => Action::Discrete(a[i]),
                ActionBatch::Continuous(a) => {
                    Action::Continuous(&a[i * self.action_dim..(i + 1) * self.action_dim])
                }
            };
            let next = &mut self.next_obs[i * d..(i + 1) * d];
            let step = self.envs[i].step(action, next)?;
            self.rewards[i] = step.reward;
            self.terminated[i] = step.terminated;
            self.truncated[i] = step.truncated;
            self.ep_return[i] += step.reward as f64;
            self.ep_len[i] += 1;
            let obs = &mut self.obs[i * d..(i + 1) * d];
            if step.done() {
                self.finished.push(EpisodeEnd {
                    env: i,
                    task: self.tasks[i],
                    ret: self.ep_return[i],
                    length: self.ep_len[i],
                    terminated: step.terminated,
                });
                self.ep_return[i] = 0.0;
                self.ep_len[i] = 0;
                if let Some(task) = self.pending_tasks[i].take() {
                    self.envs[i] = self.family.make(task)?;
                    self.tasks[i] = task;
                    self.remakes += 1;
                    let s = derive_seed(self.seed, n as u64 + self.remakes);
                    self.envs[i].reset(Some(s), obs);
                } else {
                    self.envs[i].reset(None, obs);
                }
            } else {
                obs.copy_from_slice(next);
            }
        }
        Ok(())
    }

    /// Everything needed to continue this batch exactly: every environment's state, the
    /// current observations and the running episode statistics.
    pub fn snapshot(&self) -> Result<serde_json::Value> {
        let envs = self
            .envs
            .iter()
            .map(|e| e.snapshot())
            .collect::<Result<Vec<_>>>()?;
        Ok(serde_json::json!({
            "envs": envs,
            "tasks": self.tasks,
            "pending_tasks": self.pending_tasks,
            "seed": self.seed,
            "remakes": self.remakes,
            "obs": self.obs,
            "ep_return": self.ep_return,
            "ep_len": self.ep_len,
        }))
    }

    /// Restores a [`snapshot`](Self::snapshot) into a batch built from the same family.
    pub fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Saved {
            envs: Vec<serde_json::Value>,
            tasks: Vec<usize>,
            pending_tasks: Vec<Option<usize>>,
            seed: u64,
            remakes: u64,
            obs: Vec<f32>,
            ep_return: Vec<f64>,
            ep_len: Vec<u32>,
        }
        let s: Saved = serde_json::from_value(state.clone())
            .map_err(|e| Error::Env(format!("VecEnv snapshot is malformed: {e}")))?;
        let n = self.envs.len();
        let lengths = [
            ("envs", s.envs.len(), n),
            ("tasks", s.tasks.len(), n),
            ("pending_tasks", s.pending_tasks.len(), n),
            ("ep_return", s.ep_return.len(), n),
            ("ep_len", s.ep_len.len(), n),
            ("obs", s.obs.len(), self.obs.len()),
        ];
        if let Some((field, found, want)) = lengths.iter().find(|(_, f, w)| f != w) {
            return Err(Error::Env(format!(
                "VecEnv snapshot: `{field}` holds {found} values, this batch of {n} environments needs {want}"
            )));
        }
        let tasks = self.family.num_tasks();
        if let Some(t) = s
            .tasks
            .iter()
            .chain(s.pending_tasks.iter().flatten())
            .find(|&&t| t >= tasks)
        {
            return Err(Error::Env(format!(
                "VecEnv snapshot: task {t} does not exist (the family has {tasks})"
            )));
        }
        // The observations the agent acts on next: numbers inside the observation space.
        let space = &self.family.spec().observation_space;
        if let crate::envs::Space::Box { low, high, .. } = space {
            let d = space.flat_dim().max(1);
            if let Some((i, v)) = s
                .obs
                .iter()
                .enumerate()
                .find(|(i, v)| !v.is_finite() || **v < low.get(i % d) || **v > high.get(i % d))
            {
                return Err(Error::Env(format!(
                    "VecEnv snapshot: observation value {v} (index {i}) is outside the observation space"
                )));
            }
        }
        for (i, st) in s.envs.iter().enumerate() {
            if s.tasks[i] != self.tasks[i] {
                self.envs[i] = self.family.make(s.tasks[i])?;
            }
            self.envs[i].restore(st)?;
        }
        self.tasks = s.tasks;
        self.pending_tasks = s.pending_tasks;
        self.seed = s.seed;
        self.remakes = s.remakes;
        self.next_obs.copy_from_slice(&s.obs);
        self.obs = s.obs;
        self.ep_return = s.ep_return;
        self.ep_len = s.ep_len;
        Ok(())
    }

    /// Current observations (after auto-reset), `len() × obs_dim()`.
    pub fn obs(&self) -> &[f32] {
        &self.obs
    }
    /// True next observations of the last step (before auto-reset).
    pub fn next_obs(&self) -> &[f32] {
        &self.next_obs
    }
    pub fn rewards(&self) -> &[f32] {
        &self.rewards
    }
    pub fn terminated(&self) -> &[bool] {
        &self.terminated
    }
    pub fn truncated(&self) -> &[bool] {
        &self.truncated
    }
    /// Episodes that ended in the last step.
    pub fn finished(&self) -> &[EpisodeEnd] {
        &self.finished
    }
}

/// Actions for a batch of environments.
#[derive(Clone, Debug)]
pub enum ActionBuf {
    Discrete(Vec<usize>),
    /// `n_envs × action_dim`, row-major.
    Continuous(Vec<f32>),
}

impl ActionBuf {
    pub fn for_space(space: &Space, n: usize) -> Self {
        match space {
            Space::Discrete { .. } => ActionBuf::Discrete(vec![0; n]),
            Space::Box { .. } => ActionBuf::Continuous(vec![0.0; n * space.flat_dim()]),
        }
    }
    pub fn as_batch(&self) -> ActionBatch<'_> {
        match self {
            ActionBuf::Discrete(a) => ActionBatch::Discrete(a),
            ActionBuf::Continuous(a) => ActionBatch::Continuous(a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_reset_keeps_true_next_obs_and_counts_episodes() {
        let fam = TaskFamily::from_id("dark_room").unwrap();
        let tasks = [0, 44, 80];
        let mut v = VecEnv::new(&fam, &tasks, 0).unwrap();
        v.reset();
        let mut ends = 0;
        for t in 0..40 {
            v.step(ActionBatch::Discrete(&[1, 1, 1])).unwrap();
            if (t + 1) % 20 == 0 {
                assert_eq!(v.finished().len(), 3);
                assert!(v.truncated().iter().all(|&x| x));
                // true next obs: walked right until the wall at x = 8
                assert_eq!(v.next_obs()[0], 8.0);
                // after reset: back at the centre
                assert_eq!(&v.obs()[..2], &[4.0, 4.0]);
                // goal 44 = (8, 4) is reached at step 4 and held; 0 and 80 are off the walked row
                let by_task: Vec<(usize, f64)> =
                    v.finished().iter().map(|e| (e.task, e.ret)).collect();
                assert_eq!(by_task, vec![(0, 0.0), (44, 17.0), (80, 0.0)]);
                ends += 3;
            } else {
                assert!(v.finished().is_empty());
            }
        }
        assert_eq!(ends, 6);
    }

    #[test]
    fn set_task_takes_effect_at_the_boundary() {
        let fam = TaskFamily::from_id("dark_room").unwrap();
        let mut v = VecEnv::new(&fam, &[0], 0).unwrap();
        v.reset();
        v.set_task_on_reset(0, 41); // goal (5, 4), one step right of the centre
        for _ in 0..20 {
            v.step(ActionBatch::Discrete(&[1])).unwrap();
        }
        assert_eq!(v.tasks(), &[41]);
        let mut ret = 0.0;
        for _ in 0..20 {
            v.step(ActionBatch::Discrete(&[4])).unwrap();
            ret += v.rewards()[0];
        }
        assert_eq!(ret, 0.0); // no-op at the centre never reaches (5, 4)
        v.step(ActionBatch::Discrete(&[1])).unwrap();
        assert_eq!(v.rewards()[0], 1.0);
    }

    #[test]
    fn snapshot_restore_continues_identically() {
        for id in ["cartpole", "dark_key_to_door", "pendulum", "bandit"] {
            let fam = TaskFamily::from_id(id).unwrap();
            let tasks: Vec<usize> = (0..4)
                .map(|i| fam.tasks(crate::envs::TaskSet::All)[i % fam.num_tasks()])
                .collect();
            let mut a = VecEnv::new(&fam, &tasks, 3).unwrap();
            a.reset();
            let mut rng = crate::rng::Rng::seed_from_u64(0);
            let n_act = fam.spec().action_space.discrete_n();
            let step = |v: &mut VecEnv, rng: &mut crate::rng::Rng| match n_act {
                Some(n) => {
                    let acts: Vec<usize> = (0..4).map(|_| rng.below(n)).collect();
                    v.step(ActionBatch::Discrete(&acts)).unwrap();
                }
                None => {
                    let acts: Vec<f32> = (0..4).map(|_| rng.uniform_f32() * 2.0 - 1.0).collect();
                    v.step(ActionBatch::Continuous(&acts)).unwrap();
                }
            };
            for _ in 0..37 {
                step(&mut a, &mut rng);
            }
            let snap = a.snapshot().unwrap();
            let rng_at_snap = rng.clone();
            let mut trace_a = Vec::new();
            for _ in 0..300 {
                step(&mut a, &mut rng);
                trace_a.push((
                    a.obs().to_vec(),
                    a.rewards().to_vec(),
                    a.finished().to_vec(),
                ));
            }
            let mut b = VecEnv::new(&fam, &tasks, 99).unwrap();
            b.reset();
            b.restore(&snap).unwrap();
            let mut rng = rng_at_snap;
            for (i, expected) in trace_a.iter().enumerate() {
                step(&mut b, &mut rng);
                let got = (
                    b.obs().to_vec(),
                    b.rewards().to_vec(),
                    b.finished().to_vec(),
                );
                assert_eq!(&got, expected, "{id}: step {i} after restore differs");
            }
        }
    }

    #[test]
    fn wrong_batch_size_is_an_error() {
        let fam = TaskFamily::from_id("cartpole").unwrap();
        let mut v = VecEnv::new(&fam, &[0, 0], 0).unwrap();
        v.reset();
        assert!(v.step(ActionBatch::Discrete(&[0])).is_err());
    }
}
