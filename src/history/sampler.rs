//! Cross-episode context windows for algorithm distillation (Laskin et al. 2022, "In-context
//! reinforcement learning with algorithm distillation", §4): the model sees the last `c`
//! transitions of one learning history, across episode boundaries, and predicts each action.
//!
//! A window ends at a position drawn uniformly over every transition of every run, so long runs
//! are sampled in proportion to their length. A window that would reach back before its run's
//! first transition is left-padded and masked. Optional history subsampling keeps only every
//! k-th episode of each run (episodes 0, k, 2k, ...) before windowing, so one context spans
//! k times as much of the learning history (AD §5, "subsampled histories").

use super::transitions::{Actions, Transitions};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// A batch of windows as flat row-major arrays, ready to become tensors.
///
/// Shapes (B = `batch`, C = `context`, D = `obs_dim`, A = `action_dim`):
/// `obs` (B, C, D); `prev_action` (B, C) discrete or (B, C, A) continuous; `prev_reward`,
/// `has_prev`, `mask` (B, C); `target_action` like `prev_action`; `rows` (B, C).
/// Padding slots are zero everywhere with `mask` 0; `has_prev` is 0 where the transition is the
/// first of its run (there is no previous action or reward: the fields hold 0).
#[derive(Clone, Debug, PartialEq)]
pub struct WindowBatch {
    pub batch: usize,
    pub context: usize,
    pub obs_dim: usize,
    /// 1 for discrete actions.
    pub action_dim: usize,
    pub obs: Vec<f32>,
    pub prev_action: Actions,
    pub prev_reward: Vec<f32>,
    pub has_prev: Vec<f32>,
    /// 1 where the slot's transition is the first of its episode (step 0).
    pub episode_start: Vec<f32>,
    /// The return of the slot's episode before its transition (0 at step 0).
    pub episode_return: Vec<f32>,
    /// (B, C, D): where a slot begins an episode and has a previous kept transition, that
    /// transition's `next_obs` (the final observation of the episode before); 0 elsewhere.
    pub prev_final_obs: Vec<f32>,
    pub target_action: Actions,
    /// 1 for a real transition, 0 for left padding.
    pub mask: Vec<f32>,
    /// Source row in the dataset of each slot, -1 for padding (for debugging and tests).
    pub rows: Vec<i64>,
}

/// Samples windows of `context` transitions from the runs of an in-memory dataset.
pub struct WindowSampler<'a> {
    data: &'a Transitions,
    context: usize,
    /// Kept row indices, run after run, in order.
    kept: Vec<usize>,
    /// `kept[run_offsets[r]..run_offsets[r + 1]]` are run r's rows (r counts runs in order).
    run_offsets: Vec<usize>,
    /// Per dataset row: the return of its episode before it.
    return_so_far: Vec<f32>,
}

impl<'a> WindowSampler<'a> {
    /// Indexes `data` (sorted by (run, episode, step), as files are). `every_kth_episode` = 1
    /// keeps every episode. Needs the `obs`, `action` and `reward` columns.
    pub fn new(data: &'a Transitions, context: usize, every_kth_episode: usize) -> Result<Self> {
        if context == 0 {
            return Err(Error::Config("context length must be at least 1".into()));
        }
        if every_kth_episode == 0 {
            return Err(Error::Config(
                "history subsampling must keep every k-th episode with k ≥ 1 (1 keeps all)".into(),
            ));
        }
        let n = data.len();
        let s = &data.schema;
        let action_len = match &data.action {
            Actions::Discrete(v) => v.len(),
            Actions::Continuous(v) => v.len(),
        };
        for (name, found, want) in [
            ("obs", data.obs.len(), n * s.obs_dim),
            ("action", action_len, n * s.action_dim()),
            ("reward", data.reward.len(), n),
            ("episode", data.episode.len(), n),
            ("task", data.task.len(), n),
            ("terminated", data.terminated.len(), n),
            ("truncated", data.truncated.len(), n),
        ] {
            if found != want {
                return Err(Error::Config(format!(
                    "the window sampler needs column `{name}` ({want} values for {n} rows), found {found}: read it with the dataset"
                )));
            }
        }
        let episodes = data.episodes();
        let runs = data.runs(&episodes);
        let mut return_so_far = vec![0f32; n];
        for e in &episodes {
            let mut acc = 0f32;
            for row in e.rows.clone() {
                return_so_far[row] = acc;
                acc += data.reward[row];
            }
        }
        let mut kept = Vec::with_capacity(n / every_kth_episode + 1);
        let mut run_offsets = vec![0];
        for r in &runs {
            for (p, e) in episodes[r.episodes.clone()].iter().enumerate() {
                if p % every_kth_episode == 0 {
                    kept.extend(e.rows.clone());
                }
            }
            if kept.len() > *run_offsets.last().unwrap_or(&0) {
                run_offsets.push(kept.len());
            }
        }
        if kept.is_empty() {
            return Err(Error::Config(
                "the window sampler was given no transitions".into(),
            ));
        }
        Ok(Self {
            data,
            context,
            kept,
            run_offsets,
            return_so_far,
        })
    }

    /// The dataset the windows are cut from (their `rows` index it).
    pub fn data(&self) -> &'a Transitions {
        self.data
    }

    /// Number of possible window end positions (kept transitions).
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// `batch` windows ending at uniformly random kept positions.
    pub fn sample(&self, batch: usize, rng: &mut Rng) -> WindowBatch {
        let ends: Vec<usize> = (0..batch).map(|_| rng.below(self.kept.len())).collect();
        self.windows_ending_at(&ends)
    }

    /// The windows ending at the given kept positions (each `< len()`; larger ones are clamped).
    pub fn windows_ending_at(&self, ends: &[usize]) -> WindowBatch {
        let d = self.data;
        let (c, od, ad) = (self.context, d.schema.obs_dim, d.schema.action_dim());
        let b = ends.len();
        let discrete = matches!(d.action, Actions::Discrete(_));
        let zeros_actions = || {
            if discrete {
                Actions::Discrete(vec![0; b * c])
            } else {
                Actions::Continuous(vec![0.0; b * c * ad])
            }
        };
        let mut out = WindowBatch {
            batch: b,
            context: c,
            obs_dim: od,
            action_dim: ad,
            obs: vec![0.0; b * c * od],
            prev_action: zeros_actions(),
            prev_reward: vec![0.0; b * c],
            has_prev: vec![0.0; b * c],
            episode_start: vec![0.0; b * c],
            episode_return: vec![0.0; b * c],
            prev_final_obs: vec![0.0; b * c * od],
            target_action: zeros_actions(),
            mask: vec![0.0; b * c],
            rows: vec![-1; b * c],
        };
        let last = self.kept.len() - 1;
        for (i, &end) in ends.iter().enumerate() {
            let end = end.min(last);
            // Run containing `end`: the last offset ≤ end.
            let r = self.run_offsets.partition_point(|&o| o <= end) - 1;
            let run_start = self.run_offsets[r];
            for j in 0..c {
                // Slot j holds kept position end - (c - 1 - j); earlier than run_start is padding.
                let back = c - 1 - j;
                if end < run_start + back {
                    continue;
                }
                let pos = end - back;
                let row = self.kept[pos];
                let slot = i * c + j;
                out.mask[slot] = 1.0;
                out.rows[slot] = row as i64;
                out.obs[slot * od..(slot + 1) * od]
                    .copy_from_slice(&d.obs[row * od..(row + 1) * od]);
                copy_action(&d.action, row, ad, &mut out.target_action, slot);
                if d.step.get(row) == Some(&0) {
                    out.episode_start[slot] = 1.0;
                }
                out.episode_return[slot] = self.return_so_far[row];
                if pos > run_start {
                    let prev = self.kept[pos - 1];
                    out.has_prev[slot] = 1.0;
                    out.prev_reward[slot] = d.reward[prev];
                    copy_action(&d.action, prev, ad, &mut out.prev_action, slot);
                    if out.episode_start[slot] > 0.0 && d.next_obs.len() == d.obs.len() {
                        out.prev_final_obs[slot * od..(slot + 1) * od]
                            .copy_from_slice(&d.next_obs[prev * od..(prev + 1) * od]);
                    }
                }
            }
        }
        out
    }
}

fn copy_action(src: &Actions, row: usize, ad: usize, dst: &mut Actions, slot: usize) {
    match (src, dst) {
        (Actions::Discrete(s), Actions::Discrete(t)) => t[slot] = s[row],
        (Actions::Continuous(s), Actions::Continuous(t)) => {
            t[slot * ad..(slot + 1) * ad].copy_from_slice(&s[row * ad..(row + 1) * ad])
        }
        _ => {}
    }
}
