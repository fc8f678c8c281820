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
