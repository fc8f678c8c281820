//! Transitions in memory: one borrowed row ([`TransitionRef`]) for streaming writes, and a
//! struct-of-arrays batch ([`Transitions`]) whose flat vectors become tensors or Arrow buffers
//! without reshaping.

use std::ops::Range;

use super::schema::{ActionSpec, TransitionSchema};

/// One action, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ActionRef<'a> {
    Discrete(i64),
    Continuous(&'a [f32]),
}

/// One transition, borrowed: what a training loop hands to the writer each step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransitionRef<'a> {
    pub run: u32,
    pub task: u32,
    pub episode: u32,
    pub step: u32,
    pub obs: &'a [f32],
    pub action: ActionRef<'a>,
    pub reward: f32,
    pub terminated: bool,
    pub truncated: bool,
    pub next_obs: &'a [f32],
    pub policy: Option<&'a [f32]>,
}

/// Actions of many transitions: one `i64` each, or `dim` floats each, flat.
#[derive(Clone, Debug, PartialEq)]
pub enum Actions {
    Discrete(Vec<i64>),
    Continuous(Vec<f32>),
}

impl Actions {
    fn empty_like(spec: ActionSpec) -> Self {
        match spec {
            ActionSpec::Discrete => Actions::Discrete(Vec::new()),
            ActionSpec::Continuous { .. } => Actions::Continuous(Vec::new()),
        }
    }
}

/// Many transitions as struct-of-arrays. `obs`, `next_obs`, continuous actions and `policy` are
/// flat, row-major: row `i` is `obs[i * obs_dim..(i + 1) * obs_dim]`. A column that was not read
/// (see [`crate::history::TransitionReader::read_columns`]) is empty.
#[derive(Clone, Debug, PartialEq)]
pub struct Transitions {
    pub schema: TransitionSchema,
    pub run: Vec<u32>,
    pub task: Vec<u32>,
    pub episode: Vec<u32>,
    pub step: Vec<u32>,
    pub obs: Vec<f32>,
    pub action: Actions,
    pub reward: Vec<f32>,
    pub terminated: Vec<bool>,
    pub truncated: Vec<bool>,
    pub next_obs: Vec<f32>,
    pub policy: Vec<f32>,
}

/// Mutable column slices over a block of rows of a [`Transitions`] (empty where a column is not
/// held), so that disjoint blocks can be filled in parallel.
pub struct RowsMut<'a> {
    obs_dim: usize,
    action_dim: usize,
    policy_dim: usize,
    pub discrete: bool,
    pub run: &'a mut [u32],
    pub task: &'a mut [u32],
    pub episode: &'a mut [u32],
    pub step: &'a mut [u32],
    pub obs: &'a mut [f32],
    pub action_i64: &'a mut [i64],
    pub action_f32: &'a mut [f32],
    pub reward: &'a mut [f32],
    pub terminated: &'a mut [bool],
    pub truncated: &'a mut [bool],
    pub next_obs: &'a mut [f32],
    pub policy: &'a mut [f32],
}

impl<'a> RowsMut<'a> {
    /// The first `rows` rows and the rest. Panics if a held column is shorter than `rows`
    /// (callers split by lengths taken from the same data).
    pub fn split_at(self, rows: usize) -> (RowsMut<'a>, RowsMut<'a>) {
        fn cut<T>(s: &mut [T], at: usize) -> (&mut [T], &mut [T]) {
            if s.is_empty() {
                (&mut [], &mut [])
            } else {
                s.split_at_mut(at)
            }
        }
        let (d, a, p) = (self.obs_dim, self.action_dim, self.policy_dim);
        let (run, run2) = cut(self.run, rows);
        let (task, task2) = cut(self.task, rows);
        let (episode, episode2) = cut(self.episode, rows);
        let (step, step2) = cut(self.step, rows);
        let (obs, obs2) = cut(self.obs, rows * d);
        let (action_i64, action_i642) = cut(self.action_i64, rows);
        let (action_f32, action_f322) = cut(self.action_f32, rows * a);
        let (reward, reward2) = cut(self.reward, rows);
        let (terminated, terminated2) = cut(self.terminated, rows);
        let (truncated, truncated2) = cut(self.truncated, rows);
        let (next_obs, next_obs2) = cut(self.next_obs, rows * d);
        let (policy, policy2) = cut(self.policy, rows * p);
        let head = RowsMut {
            obs_dim: d,
            action_dim: a,
            policy_dim: p,
            discrete: self.discrete,
            run,
            task,
            episode,
            step,
            obs,
            action_i64,
            action_f32,
            reward,
            terminated,
            truncated,
            next_obs,
            policy,
        };
        let tail = RowsMut {
            run: run2,
            task: task2,
            episode: episode2,
            step: step2,
            obs: obs2,
            action_i64: action_i642,
            action_f32: action_f322,
            reward: reward2,
            terminated: terminated2,
            truncated: truncated2,
            next_obs: next_obs2,
            policy: policy2,
            ..head.shape()
        };
        (head, tail)
    }

    fn shape(&self) -> RowsMut<'a> {
        RowsMut {
            obs_dim: self.obs_dim,
            action_dim: self.action_dim,
            policy_dim: self.policy_dim,
            discrete: self.discrete,
            run: &mut [],
            task: &mut [],
            episode: &mut [],
            step: &mut [],
            obs: &mut [],
            action_i64: &mut [],
            action_f32: &mut [],
            reward: &mut [],
            terminated: &mut [],
            truncated: &mut [],
            next_obs: &mut [],
            policy: &mut [],
        }
    }
}

/// The rows of one episode of one run within a [`Transitions`], with its return and length.
#[derive(Clone, Debug, PartialEq)]
pub struct EpisodeSpan {
    pub run: u32,
    pub task: u32,
    pub episode: u32,
    pub rows: Range<usize>,
    /// Undiscounted sum of rewards.
    pub ret: f64,
    /// The last row is terminated or truncated (a history may end mid-episode).
    pub complete: bool,
}

impl EpisodeSpan {
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The rows of one run within a [`Transitions`] and the index range of its episodes in
/// [`Transitions::episodes`].
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpan {
    pub run: u32,
    pub task: u32,
    pub rows: Range<usize>,
    pub episodes: Range<usize>,
}

impl Transitions {
    /// No rows, ready to be filled.
    pub fn new(schema: TransitionSchema) -> Self {
        Self {
            schema,
            run: Vec::new(),
            task: Vec::new(),
            episode: Vec::new(),
            step: Vec::new(),
            obs: Vec::new(),
            action: Actions::empty_like(schema.action),
            reward: Vec::new(),
            terminated: Vec::new(),
            truncated: Vec::new(),
            next_obs: Vec::new(),
            policy: Vec::new(),
        }
    }

    /// Number of rows (by the `run` column, which every read includes).
    pub fn len(&self) -> usize {
        self.run.len()
    }

    pub fn is_empty(&self) -> bool {
        self.run.is_empty()
    }

    /// Appends one row. The caller checks slice lengths (the writer does).
    pub fn push(&mut self, t: &TransitionRef<'_>) {
        self.run.push(t.run);
        self.task.push(t.task);
        self.episode.push(t.episode);
        self.step.push(t.step);
        self.obs.extend_from_slice(t.obs);
        match (&mut self.action, t.action) {
            (Actions::Discrete(v), ActionRef::Discrete(a)) => v.push(a),
            (Actions::Continuous(v), ActionRef::Continuous(a)) => v.extend_from_slice(a),
            // Kind mismatches are rejected by the writer before they get here.
            _ => {}
        }
        self.reward.push(t.reward);
        self.terminated.push(t.terminated);
        self.truncated.push(t.truncated);
        self.next_obs.extend_from_slice(t.next_obs);
        if let Some(p) = t.policy {
            self.policy.extend_from_slice(p);
        }
    }

    /// Reserves room for `n` more rows in every column.
    pub fn reserve(&mut self, n: usize) {
        let s = self.schema;
        self.run.reserve(n);
        self.task.reserve(n);
        self.episode.reserve(n);
        self.step.reserve(n);
        self.obs.reserve(n * s.obs_dim);
        match &mut self.action {
            Actions::Discrete(v) => v.reserve(n),
            Actions::Continuous(v) => v.reserve(n * s.action_dim()),
        }
        self.reward.reserve(n);
        self.terminated.reserve(n);
        self.truncated.reserve(n);
        self.next_obs.reserve(n * s.obs_dim);
        self.policy.reserve(n * s.policy_dim());
    }

    /// Sets every column for which `read(name)` holds to `n` rows of zeros (allocated zeroed,
    /// so untouched pages cost nothing) and empties the others.
    pub fn resize_columns(&mut self, n: usize, read: impl Fn(&str) -> bool) {
        use super::schema as col;
        let s = self.schema;
        fn set<T: Clone + Default>(v: &mut Vec<T>, len: usize, on: bool) {
            *v = if on {
                vec![T::default(); len]
            } else {
                Vec::new()
            };
        }
        set(&mut self.run, n, read(col::RUN));
        set(&mut self.task, n, read(col::TASK));
        set(&mut self.episode, n, read(col::EPISODE));
        set(&mut self.step, n, read(col::STEP));
        set(&mut self.obs, n * s.obs_dim, read(col::OBS));
        match &mut self.action {
            Actions::Discrete(v) => set(v, n, read(col::ACTION)),
            Actions::Continuous(v) => set(v, n * s.action_dim(), read(col::ACTION)),
        }
        set(&mut self.reward, n, read(col::REWARD));
        set(&mut self.terminated, n, read(col::TERMINATED));
        set(&mut self.truncated, n, read(col::TRUNCATED));
        set(&mut self.next_obs, n * s.obs_dim, read(col::NEXT_OBS));
        set(&mut self.policy, n * s.policy_dim(), read(col::POLICY));
    }

    /// Mutable views of every column, to be split into disjoint blocks of rows.
    pub fn rows_mut(&mut self) -> RowsMut<'_> {
        let s = self.schema;
        let (discrete, action_i64, action_f32): (bool, &mut [i64], &mut [f32]) =
            match &mut self.action {
                Actions::Discrete(v) => (true, v, &mut []),
                Actions::Continuous(v) => (false, &mut [], v),
            };
        RowsMut {
            obs_dim: s.obs_dim,
            action_dim: s.action_dim(),
            policy_dim: s.policy_dim(),
            discrete,
            run: &mut self.run,
            task: &mut self.task,
            episode: &mut self.episode,
            step: &mut self.step,
            obs: &mut self.obs,
            action_i64,
            action_f32,
            reward: &mut self.reward,
            terminated: &mut self.terminated,
            truncated: &mut self.truncated,
            next_obs: &mut self.next_obs,
            policy: &mut self.policy,
        }
    }

    /// Appends rows `rows` of `other` (same layout), column by column.
    pub fn extend_from(&mut self, other: &Transitions, rows: Range<usize>) {
        let (d, a, p) = (
            self.schema.obs_dim,
            self.schema.action_dim(),
            self.schema.policy_dim(),
        );
        let (s, e) = (rows.start, rows.end);
        self.run.extend_from_slice(&other.run[s..e]);
        self.task.extend_from_slice(&other.task[s..e]);
        self.episode.extend_from_slice(&other.episode[s..e]);
        self.step.extend_from_slice(&other.step[s..e]);
        self.obs.extend_from_slice(&other.obs[s * d..e * d]);
        match (&mut self.action, &other.action) {
            (Actions::Discrete(v), Actions::Discrete(o)) => v.extend_from_slice(&o[s..e]),
            (Actions::Continuous(v), Actions::Continuous(o)) => {
                v.extend_from_slice(&o[s * a..e * a])
            }
            _ => {}
        }
        self.reward.extend_from_slice(&other.reward[s..e]);
        self.terminated.extend_from_slice(&other.terminated[s..e]);
        self.truncated.extend_from_slice(&other.truncated[s..e]);
        self.next_obs
            .extend_from_slice(&other.next_obs[s * d..e * d]);
        self.policy.extend_from_slice(&other.policy[s * p..e * p]);
    }

    /// Row `i`, borrowed. Panics if `i` is out of range or a column was not read.
    pub fn row(&self, i: usize) -> TransitionRef<'_> {
        let d = self.schema.obs_dim;
        let action = match &self.action {
            Actions::Discrete(v) => ActionRef::Discrete(v[i]),
            Actions::Continuous(v) => {
                let a = self.schema.action_dim();
                ActionRef::Continuous(&v[i * a..(i + 1) * a])
            }
        };
        let policy = self
            .schema
            .policy
            .map(|p| &self.policy[i * p.dim..(i + 1) * p.dim]);
        TransitionRef {
            run: self.run[i],
            task: self.task[i],
            episode: self.episode[i],
            step: self.step[i],
            obs: &self.obs[i * d..(i + 1) * d],
            action,
            reward: self.reward[i],
            terminated: self.terminated[i],
            truncated: self.truncated[i],
            next_obs: &self.next_obs[i * d..(i + 1) * d],
            policy,
        }
    }

    /// Consecutive rows sharing (run, episode), in order. Needs `run`, `task`, `episode`,
    /// `reward`, `terminated`, `truncated`.
    pub fn episodes(&self) -> Vec<EpisodeSpan> {
        let mut out: Vec<EpisodeSpan> = Vec::new();
        for i in 0..self.len() {
            let (run, ep) = (self.run[i], self.episode[i]);
            match out.last_mut() {
                Some(e) if e.run == run && e.episode == ep => {
                    e.rows.end = i + 1;
                    e.ret += f64::from(self.reward[i]);
                }
                _ => out.push(EpisodeSpan {
                    run,
                    task: self.task[i],
                    episode: ep,
                    rows: i..i + 1,
                    ret: f64::from(self.reward[i]),
                    complete: false,
                }),
            }
            if let Some(e) = out.last_mut() {
                e.complete = self.terminated[i] || self.truncated[i];
            }
        }
        out
    }

    /// Consecutive rows sharing `run`, with their episodes (index range into `episodes`).
    pub fn runs(&self, episodes: &[EpisodeSpan]) -> Vec<RunSpan> {
        let mut out: Vec<RunSpan> = Vec::new();
        for (k, e) in episodes.iter().enumerate() {
            match out.last_mut() {
                Some(r) if r.run == e.run => {
                    r.rows.end = e.rows.end;
                    r.episodes.end = k + 1;
                }
                _ => out.push(RunSpan {
                    run: e.run,
                    task: e.task,
                    rows: e.rows.clone(),
                    episodes: k..k + 1,
                }),
            }
        }
        out
    }
}
