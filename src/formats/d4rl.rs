//! D4RL's HDF5 files: flat columns at the root, one row per step, episodes back to back —
//! `observations (N, d)`, `actions (N, k)` (or `(N,)` integers), `rewards (N,)`,
//! `terminals (N,)`, and optionally `timeouts (N,)` and `next_observations (N, d)`.
//!
//! An episode ends at a row with `terminals` or `timeouts` set (or at the end of the file).
//! Inside an episode the next observation is the next row's; an episode's last next
//! observation is `next_observations` when the file has it. Without it, a terminal row keeps
//! its own observation as the (never bootstrapped) next one, and a timed-out row has no next
//! observation at all: it is dropped, counted in the report, and the row before it ends the
//! episode as truncated (as D4RL's own `qlearning_dataset` drops it). Rows are read in blocks,
//! so memory stays bounded by the longest episode.

use super::hdf5::{Column, H5};
use super::import::{Episode, ImportReport, Importer};
use crate::envs::EnvSpec;
use crate::error::{Error, Result};
use crate::history::{Manifest, SourceAlgo};
use std::path::Path;

/// Rows read per block.
const BLOCK: u64 = 1 << 16;

#[derive(Default)]
struct Pending {
    obs: Vec<f32>,
    discrete: Vec<i64>,
    continuous: Vec<f32>,
    rewards: Vec<f32>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    /// `next_observations` of the last row pushed.
    next: Option<Vec<f32>>,
    first_row: u64,
}

impl Pending {
    fn steps(&self) -> usize {
        self.rewards.len()
    }
}

/// Converts the D4RL file at `path` into a dataset at `out` for `env`.
pub fn import(path: &Path, out: &Path, env: &EnvSpec) -> Result<(Manifest, ImportReport)> {
    let h5 = H5::open(path)?;
    let obs = h5.require("/observations")?;
    let actions = h5.require("/actions")?;
    let rewards = h5.require("/rewards")?;
    let terminals = h5.require("/terminals")?;
    let timeouts = h5.column("/timeouts")?;
    let next = h5.column("/next_observations")?;
    let n = rewards.rows();
    let mut columns: Vec<&Column> = vec![&obs, &actions, &terminals];
    columns.extend(timeouts.iter());
    columns.extend(next.iter());
    for c in columns {
        if c.rows() != n {
            return Err(Error::data(
                path,
                format!("`{}` has {} rows but `rewards` has {n}", c.name, c.rows()),
            ));
        }
    }
    let d = env.obs_dim();
    for c in std::iter::once(&obs).chain(next.iter()) {
        if c.row_len() != d {
            return Err(Error::data(
                path,
                format!(
                    "`{}` rows hold {} values, but `{}` has {d}-value observations ({})",
                    c.name,
                    c.row_len(),
                    env.id(),
                    env.observation_space
                ),
            ));
        }
    }
    let discrete = env.action_space.is_discrete();
    let int_actions = actions.dtype_name().contains("int");
    if discrete != int_actions || (!discrete && actions.row_len() != env.action_space.flat_dim()) {
        return Err(Error::data(
            path,
            format!(
                "`actions` is {} with {} values per row, but `{}` has {} actions",
                actions.dtype_name(),
                actions.row_len(),
                env.id(),
                env.action_space
            ),
        ));
    }
    let source = SourceAlgo {
        name: format!(
            "d4rl:{}",
            path.file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default()
        ),
        config: serde_json::json!({
            "format": "d4rl",
            "path": path.display().to_string(),
            "next_observations": next.is_some(),
            "timeouts": timeouts.is_some(),
        }),
    };
    let mut imp = Importer::create(out, env, path, source)?;
    for c in [&obs, &rewards].into_iter().chain(next.iter()) {
        if c.dtype_name() == "float64" {
            imp.note_conversion(format!(
                "{}: float64 → float32",
                c.name.trim_start_matches('/')
            ));
        }
    }
    let mut ep = Pending::default();
    let mut start = 0;
    while start < n {
        let end = (start + BLOCK).min(n);
        let o = obs.read_f32(start, end)?;
        let (ad, ac) = if discrete {
            (actions.read_i64(start, end)?, Vec::new())
        } else {
            (Vec::new(), actions.read_f32(start, end)?)
        };
        let k = if discrete { 1 } else { actions.row_len() };
        let r = rewards.read_f32(start, end)?;
        let t = terminals.read_bool(start, end)?;
        let to = match &timeouts {
            Some(c) => c.read_bool(start, end)?,
            None => vec![false; (end - start) as usize],
        };
        let no = next.as_ref().map(|c| c.read_f32(start, end)).transpose()?;
        for i in 0..(end - start) as usize {
            let row = start + i as u64;
            let this_obs = &o[i * d..(i + 1) * d];
            if ep.steps() == 0 {
                ep.first_row = row;
            } else if let Some(prev_next) = &ep.next {
                if prev_next.as_slice() != this_obs {
                    return Err(Error::data(
                        path,
                        format!(
                            "row {row}: `observations` differs from row {}'s `next_observations`, \
                             but neither `terminals` nor `timeouts` ends an episode between them",
                            row - 1
                        ),
                    ));
                }
            }
            ep.obs.extend_from_slice(this_obs);
            if discrete {
                ep.discrete.push(ad[i]);
            } else {
                ep.continuous.extend_from_slice(&ac[i * k..(i + 1) * k]);
            }
            ep.rewards.push(r[i]);
            ep.terminated.push(t[i]);
            ep.truncated.push(to[i] && !t[i]);
            ep.next = no.as_ref().map(|no| no[i * d..(i + 1) * d].to_vec());
            if t[i] || to[i] || row + 1 == n {
                finish_episode(&mut imp, &mut ep, path, discrete, k, d)?;
            }
        }
        start = end;
    }
    imp.finish()
}

/// Writes the pending episode, closing it with its last next observation (see the module
/// docs), and clears it.
fn finish_episode(
    imp: &mut Importer,
    ep: &mut Pending,
    path: &Path,
    discrete: bool,
    k: usize,
    d: usize,
) -> Result<()> {
    let mut p = std::mem::take(ep);
    let last_terminal = p.terminated.last().copied().unwrap_or(false);
    match p.next.take() {
        Some(next) => p.obs.extend_from_slice(&next),
        None if last_terminal => {
            let own = p.obs[p.obs.len() - d..].to_vec();
            p.obs.extend_from_slice(&own);
        }
        None => {
            // No next observation for the last row: drop it; its observation closes the row before.
            p.rewards.pop();
            p.terminated.pop();
            p.truncated.pop();
            if discrete {
                p.discrete.pop();
            } else {
                p.continuous.truncate(p.continuous.len() - k);
            }
            imp.report.dropped_rows += 1;
            if p.rewards.is_empty() {
                return Ok(());
            }
        }
    }
    let label = format!(
        "{} rows {}..{}",
        path.display(),
        p.first_row,
        p.first_row + p.rewards.len() as u64
    );
    imp.push_episode(
        &label,
        Episode {
            obs: p.obs,
            discrete: p.discrete,
            continuous: p.continuous,
            rewards: p.rewards,
            terminated: p.terminated,
            truncated: p.truncated,
        },
    )
}
