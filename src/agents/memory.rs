//! What an agent remembers within an episode beside the observation, built from its own
//! experience: made from rewards it has received, never from hidden environment state, so the
//! learning histories it logs hold exactly the observations an in-context learner sees, while
//! the agent itself can solve tasks that are not Markov in the observation (Dark Key-to-Door:
//! the same cell calls for "fetch the key" before the first reward and "go to the door" after
//! it). PPO appends it to its network input; tabular Q-learning keys its table by it too.

use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The kind of episode memory an agent keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Memory {
    /// The observation only.
    #[default]
    None,
    /// One more input: the undiscounted return of the episode so far (0 at its start).
    EpisodeReturn,
}

impl Memory {
    /// Inputs the memory adds.
    pub fn width(self) -> usize {
        match self {
            Memory::None => 0,
            Memory::EpisodeReturn => 1,
        }
    }

    pub fn is_none(&self) -> bool {
        *self == Memory::None
    }
}

/// Per-environment memory of the episode so far: [`Memory::EpisodeReturn`]'s running return.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct EpisodeMemory {
    pub returns: Vec<f32>,
}

impl EpisodeMemory {
    /// The memory of `n` environments, fresh episodes if it held another count.
    pub fn ensure(&mut self, n: usize) {
        if self.returns.len() != n {
            self.returns = vec![0.0; n];
        }
    }

    /// Fresh episodes in `n` environments (a greedy evaluation's start).
    pub fn fresh(n: usize) -> Self {
        Self {
            returns: vec![0.0; n],
        }
    }

    /// After an evaluation step: [`record`](Self::record) its feedback.
    pub fn observe(&mut self, feedback: &crate::eval::Feedback<'_>) {
        self.record(feedback.rewards, feedback.terminated, feedback.truncated);
    }

    /// After a step: add its rewards, forget the episodes that ended.
    pub fn record(&mut self, rewards: &[f32], terminated: &[bool], truncated: &[bool]) {
        self.ensure(rewards.len());
        for (i, m) in self.returns.iter_mut().enumerate() {
            *m = if terminated[i] || truncated[i] {
                0.0
            } else {
                *m + rewards[i]
            };
        }
    }

    /// The memory after a step, before its episode ends are forgotten: the state a step ended
    /// in (a truncation's bootstrap, a rollout's last state) remembers the step's reward.
    pub fn after(&self, rewards: &[f32]) -> Self {
        let mut next = self.clone();
        for (m, r) in next.returns.iter_mut().zip(rewards) {
            *m += r;
        }
        next
    }

    /// Rows of `obs` (`B·obs_dim`) each followed by its environment's memory of kind `kind`
    /// (0 where this memory holds another number of environments: a bare batch of
    /// observations carries no episode). Without a memory the rows are `obs` itself, not a
    /// copy.
    pub fn rows<'o>(
        &self,
        who: &str,
        obs: &'o [f32],
        obs_dim: usize,
        kind: Memory,
    ) -> Result<Cow<'o, [f32]>> {
        let n = super::batch_rows(who, obs, obs_dim)?;
        if kind.is_none() {
            return Ok(Cow::Borrowed(obs));
        }
        let mut rows = Vec::with_capacity(n * (obs_dim + kind.width()));
        for (i, o) in obs.chunks_exact(obs_dim).enumerate() {
            rows.extend_from_slice(o);
            rows.push(if self.returns.len() == n {
                self.returns[i]
            } else {
                0.0
            });
        }
        Ok(Cow::Owned(rows))
    }
}
