//! Uniform experience replay (Mnih et al. 2015) with optional n-step returns (Sutton 1988;
//! Hessel et al. 2018). Transitions are stored in flat ring buffers; sampling draws indices from
//! the platform [`Rng`], so a run is reproducible and a saved buffer resumes exactly.
//!
//! n-step targets assume the transitions of one environment are stored consecutively (one
//! environment per buffer, as in CleanRL's and Dopamine's DQN): for a sampled index `i` the
//! return is `Σ_{k<m} γᵏ r_{i+k}` where `m ≤ n` stops at the first terminated or truncated
//! transition or at the newest stored one; the bootstrap observation is `next_obs_{i+m−1}` with
//! discount `γᵐ`, or 0 if that transition terminated.

use crate::error::{Error, Result};
use crate::rng::Rng;
use std::collections::BTreeMap;
use std::path::Path;

mod frames;
use frames::FrameStore;

/// Where observations live: `f32` rows, or byte frames for `uint8` environments.
enum ObsStore {
    F32 { obs: Vec<f32>, next_obs: Vec<f32> },
    Bytes(FrameStore),
}

/// Stored actions: discrete indices, or continuous rows of `dim` values.
#[derive(Clone, Debug, PartialEq)]
pub enum ActionStore {
    Discrete(Vec<i64>),
    Continuous { dim: usize, values: Vec<f32> },
}

/// Rows of a `batch` drawn from teacher data when a `fraction` of each batch rehearses it
/// (rehearsal, DQfD; Agarwal et al. 2022, §4): `round(fraction · batch)`, at most `batch`.
pub fn rehearsal_rows(fraction: f64, batch: usize) -> usize {
    ((fraction * batch as f64).round() as usize).min(batch)
}

/// A sampled minibatch, as flat row-major arrays.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub size: usize,
    pub obs: Vec<f32>,
    pub actions_discrete: Vec<i64>,
    pub actions_continuous: Vec<f32>,
    /// n-step discounted reward sums.
    pub returns: Vec<f32>,
    /// Observation to bootstrap from.
    pub next_obs: Vec<f32>,
    /// `γᵐ` for the bootstrap, or 0 where the episode terminated.
    pub discounts: Vec<f32>,
    /// Indices of the sampled transitions (for diagnostics and tests).
    pub indices: Vec<usize>,
}

impl Batch {
    /// Appends `other`'s rows after this batch's (e.g. the agent's own rows after teacher rows
    /// in rehearsal).
    pub fn append(&mut self, other: &Batch) {
        self.size += other.size;
        self.obs.extend_from_slice(&other.obs);
        self.actions_discrete
            .extend_from_slice(&other.actions_discrete);
        self.actions_continuous
            .extend_from_slice(&other.actions_continuous);
        self.returns.extend_from_slice(&other.returns);
        self.next_obs.extend_from_slice(&other.next_obs);
        self.discounts.extend_from_slice(&other.discounts);
        self.indices.extend_from_slice(&other.indices);
    }
}

pub struct ReplayBuffer {
    capacity: usize,
    obs_dim: usize,
    store: ObsStore,
    actions: ActionStore,
    rewards: Vec<f32>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    /// Next write position.
    pos: usize,
    len: usize,
}

impl ReplayBuffer {
    /// [`new`](Self::new) after checking that the buffer fits in memory; `what` names the
    /// setting that sized it (`agent.buffer_size`).
    pub fn try_new(
        capacity: usize,
        obs_dim: usize,
        action_dim: Option<usize>,
        what: &str,
    ) -> crate::error::Result<Self> {
        Self::check_fits(capacity, obs_dim, None, action_dim, what)?;
        Ok(Self::new(capacity, obs_dim, action_dim))
    }

    /// An error unless a buffer of [`bytes_for`](Self::bytes_for) these sizes fits in memory.
    fn check_fits(
        capacity: usize,
        obs_dim: usize,
        frames: Option<usize>,
        action_dim: Option<usize>,
        what: &str,
    ) -> Result<()> {
        crate::limits::check_memory(
            || format!("a replay buffer of {capacity} transitions ({what})"),
            Self::bytes_for(capacity, obs_dim, frames, action_dim).map(|b| b as u64),
        )
    }

    /// A buffer for `spec`'s observations: `uint8` observations are stored as bytes, one new
    /// frame per transition for frame stacks (a 1M-transition Atari buffer holds about 7 GB;
    /// see [`frames`]), others as `f32`. Checks that it fits in memory first; `what` names the
    /// setting that sized it.
    pub fn for_spec(
        capacity: usize,
        spec: &crate::envs::EnvSpec,
        action_dim: Option<usize>,
        what: &str,
    ) -> Result<Self> {
        let dim = spec.obs_dim();
        if spec.observation_dtype.is_f32() {
            return Self::try_new(capacity, dim, action_dim, what);
        }
        let frames = match &spec.observation_space {
            crate::envs::Space::Box { shape, .. } => frames::frames_of(shape),
            crate::envs::Space::Discrete { .. } => 1,
        };
        Self::check_fits(capacity, dim, Some(frames), action_dim, what)?;
        let store = ObsStore::Bytes(FrameStore::new(capacity, dim, frames));
        Ok(Self::with_store(capacity, dim, store, action_dim))
    }

    /// Bytes a buffer of `capacity` transitions holds: `f32` observations (`frames = None`),
    /// or byte observations stored a frame per transition (`Some(frames)`, without the few
    /// whole observations kept at episode starts). Actions, rewards and flags included.
    pub fn bytes_for(
        capacity: usize,
        obs_dim: usize,
        frames: Option<usize>,
        action_dim: Option<usize>,
    ) -> Option<usize> {
        let obs = match frames {
            None => capacity.checked_mul(obs_dim)?.checked_mul(8)?,
            Some(k) => FrameStore::bytes_for(capacity, obs_dim, k)?,
        };
        let action = action_dim.map_or(8, |d| d * 4);
        capacity.checked_mul(action + 4 + 2)?.checked_add(obs)
    }

    /// Bytes the buffer holds now (its arrays and side entries).
    pub fn heap_bytes(&self) -> usize {
        let obs = match &self.store {
            ObsStore::F32 { obs, next_obs } => 4 * (obs.len() + next_obs.len()),
            ObsStore::Bytes(f) => f.heap_bytes(),
        };
        let actions = match &self.actions {
            ActionStore::Discrete(a) => 8 * a.len(),
            ActionStore::Continuous { values, .. } => 4 * values.len(),
        };
        obs + actions + 4 * self.rewards.len() + self.terminated.len() + self.truncated.len()
    }

    /// Whether observations are stored as bytes, and then how many whole observations and
    /// next observations the side tables hold.
    pub fn byte_side_entries(&self) -> Option<(usize, usize)> {
        match &self.store {
            ObsStore::Bytes(f) => Some(f.side_entries()),
            ObsStore::F32 { .. } => None,
        }
    }

    /// `action_dim = None` for discrete actions.
    pub fn new(capacity: usize, obs_dim: usize, action_dim: Option<usize>) -> Self {
        let store = ObsStore::F32 {
            obs: vec![0.0; capacity * obs_dim],
            next_obs: vec![0.0; capacity * obs_dim],
        };
        Self::with_store(capacity, obs_dim, store, action_dim)
    }

    fn with_store(
        capacity: usize,
        obs_dim: usize,
        store: ObsStore,
        action_dim: Option<usize>,
    ) -> Self {
        let actions = match action_dim {
            None => ActionStore::Discrete(vec![0; capacity]),
            Some(dim) => ActionStore::Continuous {
                dim,
                values: vec![0.0; capacity * dim],
            },
        };
        Self {
            capacity,
            obs_dim,
            store,
            actions,
            rewards: vec![0.0; capacity],
            terminated: vec![false; capacity],
            truncated: vec![false; capacity],
            pos: 0,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    /// Stores one transition. `action_continuous` is used when the buffer holds continuous
    /// actions. A byte buffer refuses an observation value that is not a byte.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        obs: &[f32],
        action_discrete: i64,
        action_continuous: &[f32],
        reward: f32,
        next_obs: &[f32],
        terminated: bool,
        truncated: bool,
    ) -> Result<()> {
        let d = self.obs_dim;
        let p = self.pos;
        match &mut self.store {
            ObsStore::F32 {
                obs: o,
                next_obs: n,
            } => {
                o[p * d..(p + 1) * d].copy_from_slice(obs);
                n[p * d..(p + 1) * d].copy_from_slice(next_obs);
            }
            ObsStore::Bytes(f) => f.push(p, self.len, obs, next_obs)?,
        }
        match &mut self.actions {
            ActionStore::Discrete(a) => a[p] = action_discrete,
            ActionStore::Continuous { dim, values } => {
                values[p * *dim..(p + 1) * *dim].copy_from_slice(action_continuous)
            }
        }
        self.rewards[p] = reward;
        self.terminated[p] = terminated;
        self.truncated[p] = truncated;
        self.pos = (p + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
        Ok(())
    }

    /// Appends slot `i`'s observation (`next = false`) or next observation to `out`.
    fn write_obs(&self, i: usize, next: bool, out: &mut Vec<f32>) {
        let d = self.obs_dim;
        match &self.store {
            ObsStore::F32 { obs, next_obs } => {
                let v = if next { next_obs } else { obs };
                out.extend_from_slice(&v[i * d..(i + 1) * d]);
            }
            ObsStore::Bytes(f) => f.write(i, next, out),
        }
    }

    /// Samples `batch` transitions uniformly with replacement, with `n`-step returns.
    pub fn sample(&self, batch: usize, n: usize, gamma: f32, rng: &mut Rng) -> Batch {
        let mut b = Batch::default();
        self.sample_into(batch, n, gamma, rng, &mut b);
        b
    }

    /// As [`sample`](Self::sample), reusing `out`'s allocations.
    pub fn sample_into(&self, batch: usize, n: usize, gamma: f32, rng: &mut Rng, out: &mut Batch) {
        assert!(self.len > 0, "sampling from an empty replay buffer");
        out.size = batch;
        out.obs.clear();
        out.next_obs.clear();
        out.actions_discrete.clear();
        out.actions_continuous.clear();
        out.returns.clear();
        out.discounts.clear();
        out.indices.clear();
        let newest = (self.pos + self.capacity - 1) % self.capacity;
        for _ in 0..batch {
            let i = rng.below(self.len);
            // With a full ring the oldest entry sits at `pos`; map the draw onto stored slots.
            let i = if self.len == self.capacity {
                (self.pos + i) % self.capacity
            } else {
                i
            };
            out.indices.push(i);
            self.write_obs(i, false, &mut out.obs);
            match &self.actions {
                ActionStore::Discrete(a) => out.actions_discrete.push(a[i]),
                ActionStore::Continuous { dim, values } => out
                    .actions_continuous
                    .extend_from_slice(&values[i * dim..(i + 1) * dim]),
            }
            let mut ret = 0.0f32;
            let mut disc = 1.0f32;
            let mut j = i;
            let mut terminal = false;
            for k in 0..n.max(1) {
                ret += disc * self.rewards[j];
                disc *= gamma;
                if self.terminated[j] {
                    terminal = true;
                    break;
                }
                if self.truncated[j] || j == newest || k + 1 == n.max(1) {
                    break;
                }
                j = (j + 1) % self.capacity;
            }
            out.returns.push(ret);
            self.write_obs(j, true, &mut out.next_obs);
            out.discounts.push(if terminal { 0.0 } else { disc });
        }
    }

    /// The buffer's contents and position as named arrays (for checkpoints; resume only).
    pub fn export(&self) -> (BTreeMap<String, RawArray>, serde_json::Value) {
        let mut m = BTreeMap::new();
        let n = self.capacity;
        match &self.store {
            ObsStore::F32 { obs, next_obs } => {
                m.insert("obs".into(), RawArray::f32(vec![n, self.obs_dim], obs));
                m.insert(
                    "next_obs".into(),
                    RawArray::f32(vec![n, self.obs_dim], next_obs),
                );
            }
            ObsStore::Bytes(f) => f.export(&mut m),
        }
        match &self.actions {
            ActionStore::Discrete(a) => m.insert("action".into(), RawArray::i64(vec![n], a)),
            ActionStore::Continuous { dim, values } => {
                m.insert("action".into(), RawArray::f32(vec![n, *dim], values))
            }
        };
        m.insert("reward".into(), RawArray::f32(vec![n], &self.rewards));
        m.insert(
            "terminated".into(),
            RawArray::bool(vec![n], &self.terminated),
        );
        m.insert("truncated".into(), RawArray::bool(vec![n], &self.truncated));
        let state = serde_json::json!({ "pos": self.pos, "len": self.len, "capacity": n });
        (m, state)
    }

    /// Restores [`export`](Self::export)ed contents into a buffer of the same shape.
    pub fn import(
        &mut self,
        arrays: &BTreeMap<String, RawArray>,
        state: &serde_json::Value,
    ) -> Result<()> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Snapshot {
            pos: usize,
            len: usize,
            capacity: usize,
        }
        let state_file = Path::new(crate::checkpoint::TRAINER_STATE_FILE);
        let s: Snapshot = crate::checkpoint::decode_strict(state, state_file, "agent.replay")?;
        let get = |k: &str| {
            arrays.get(k).ok_or_else(|| {
                Error::data(
                    crate::checkpoint::REPLAY_FILE,
                    format!("the replay snapshot lacks `{k}`"),
                )
            })
        };
        if s.capacity != self.capacity || s.pos >= s.capacity.max(1) || s.len > s.capacity {
            return Err(Error::data(
                state_file,
                format!(
                    "agent.replay: capacity {}, pos {}, len {} do not describe the agent's buffer of {} (expected pos < capacity and len ≤ capacity)",
                    s.capacity, s.pos, s.len, self.capacity
                ),
            ));
        }
        let elems = self.capacity * self.obs_dim;
        match &mut self.store {
            ObsStore::F32 { obs, next_obs } => {
                *obs = get("obs")?.to_f32("obs", elems)?;
                *next_obs = get("next_obs")?.to_f32("next_obs", elems)?;
            }
            ObsStore::Bytes(f) => {
                let oldest = if s.len == s.capacity { s.pos } else { 0 };
                f.import(arrays, s.len, oldest)?
            }
        }
        match &mut self.actions {
            ActionStore::Discrete(a) => *a = get("action")?.to_i64("action", self.capacity)?,
            ActionStore::Continuous { dim, values } => {
                *values = get("action")?.to_f32("action", self.capacity * *dim)?
            }
        }
        self.rewards = get("reward")?.to_f32("reward", self.capacity)?;
        self.terminated = get("terminated")?.to_bool("terminated", self.capacity)?;
        self.truncated = get("truncated")?.to_bool("truncated", self.capacity)?;
        self.pos = s.pos;
        self.len = s.len;
        Ok(())
    }

    /// Iterates stored transitions oldest first: (obs, discrete action, continuous action,
    /// reward, next_obs, terminated, truncated). Used to dump the buffer as a dataset.
    pub fn iter_ordered(
        &self,
    ) -> impl Iterator<Item = (Vec<f32>, i64, &[f32], f32, Vec<f32>, bool, bool)> {
        let start = if self.len == self.capacity {
            self.pos
        } else {
            0
        };
        let d = self.obs_dim;
        (0..self.len).map(move |k| {
            let (mut obs, mut next) = (Vec::with_capacity(d), Vec::with_capacity(d));
            let i = (start + k) % self.capacity;
            let (ad, ac): (i64, &[f32]) = match &self.actions {
                ActionStore::Discrete(a) => (a[i], &[]),
                ActionStore::Continuous { dim, values } => (0, &values[i * dim..(i + 1) * dim]),
            };
            self.write_obs(i, false, &mut obs);
            self.write_obs(i, true, &mut next);
            (
                obs,
                ad,
                ac,
                self.rewards[i],
                next,
                self.terminated[i],
                self.truncated[i],
            )
        })
    }
}

/// A named array of raw little-endian bytes, the unit of safetensors files.
#[derive(Clone, Debug, PartialEq)]
pub struct RawArray {
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl RawArray {
    pub fn f32(shape: Vec<usize>, v: &[f32]) -> Self {
        Self {
            dtype: safetensors::Dtype::F32,
            shape,
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
    pub fn f64(shape: Vec<usize>, v: &[f64]) -> Self {
        Self {
            dtype: safetensors::Dtype::F64,
            shape,
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
    pub fn i64(shape: Vec<usize>, v: &[i64]) -> Self {
        Self {
            dtype: safetensors::Dtype::I64,
            shape,
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
    pub fn u8(shape: Vec<usize>, v: &[u8]) -> Self {
        Self {
            dtype: safetensors::Dtype::U8,
            shape,
            bytes: v.to_vec(),
        }
    }
    pub fn bool(shape: Vec<usize>, v: &[bool]) -> Self {
        Self {
            dtype: safetensors::Dtype::BOOL,
            shape,
            bytes: v.iter().map(|&b| u8::from(b)).collect(),
        }
    }
    fn check(
        &self,
        name: &str,
        dtype: safetensors::Dtype,
        elems: usize,
        width: usize,
    ) -> Result<()> {
        if self.dtype != dtype || self.bytes.len() != elems * width {
            return Err(Error::Training(format!(
                "replay snapshot `{name}`: expected {elems} values of {dtype:?}, found {:?} with {} bytes",
                self.dtype,
                self.bytes.len()
            )));
        }
        Ok(())
    }
    pub fn to_f32(&self, name: &str, elems: usize) -> Result<Vec<f32>> {
        self.check(name, safetensors::Dtype::F32, elems, 4)?;
        Ok(self
            .bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
    pub fn to_f64(&self, name: &str, elems: usize) -> Result<Vec<f64>> {
        self.check(name, safetensors::Dtype::F64, elems, 8)?;
        Ok(self
            .bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }
    pub fn to_i64(&self, name: &str, elems: usize) -> Result<Vec<i64>> {
        self.check(name, safetensors::Dtype::I64, elems, 8)?;
        Ok(self
            .bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }
    pub fn to_u8(&self, name: &str, elems: usize) -> Result<Vec<u8>> {
        self.check(name, safetensors::Dtype::U8, elems, 1)?;
        Ok(self.bytes.clone())
    }
    pub fn to_bool(&self, name: &str, elems: usize) -> Result<Vec<bool>> {
        self.check(name, safetensors::Dtype::BOOL, elems, 1)?;
        Ok(self.bytes.iter().map(|&b| b != 0).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rehearsal_rows_round_the_fraction_of_the_batch() {
        // 0.25 · 32 = 8; 0.3 · 10 = 3; 0.55 · 10 = 5.5 rounds to 6; beyond 1 caps at the batch.
        assert_eq!(rehearsal_rows(0.25, 32), 8);
        assert_eq!(rehearsal_rows(0.3, 10), 3);
        assert_eq!(rehearsal_rows(0.55, 10), 6);
        assert_eq!(rehearsal_rows(0.0, 10), 0);
        assert_eq!(rehearsal_rows(1.5, 10), 10);
    }

    fn filled(rewards: &[f32], ends: &[(usize, bool)]) -> ReplayBuffer {
        let mut rb = ReplayBuffer::new(16, 1, None);
        for (i, &r) in rewards.iter().enumerate() {
            let term = ends.iter().any(|&(j, t)| j == i && t);
            let trunc = ends.iter().any(|&(j, t)| j == i && !t);
            rb.push(
                &[i as f32],
                i as i64,
                &[],
                r,
                &[(i + 1) as f32],
                term,
                trunc,
            )
            .unwrap();
        }
        rb
    }

    #[test]
    fn n_step_returns_stop_at_terminal_truncation_and_newest() {
        // transitions 0..6, terminal at 2, truncation at 4
        let rb = filled(&[1.0, 2.0, 4.0, 8.0, 16.0, 32.0], &[(2, true), (4, false)]);
        let g = 0.5f32;
        let mut rng = Rng::seed_from_u64(0);
        let b = rb.sample(400, 3, g, &mut rng);
        for k in 0..b.size {
            let i = b.indices[k];
            let (ret, next, disc) = match i {
                0 => (1.0 + g * 2.0 + g * g * 4.0, 3.0, 0.0), // hits the terminal at 2
                1 => (2.0 + g * 4.0, 3.0, 0.0),
                2 => (4.0, 3.0, 0.0),
                3 => (8.0 + g * 16.0, 5.0, g * g), // truncation at 4: bootstrap from next_obs(4)
                4 => (16.0, 5.0, g),
                5 => (32.0, 6.0, g), // newest transition
                _ => unreachable!(),
            };
            assert!(
                (b.returns[k] - ret).abs() < 1e-6,
                "index {i}: {} vs {ret}",
                b.returns[k]
            );
            assert_eq!(b.next_obs[k], next, "index {i}");
            assert!((b.discounts[k] - disc).abs() < 1e-7, "index {i}");
            assert_eq!(b.obs[k], i as f32);
            assert_eq!(b.actions_discrete[k], i as i64);
        }
        let mut seen: Vec<usize> = b.indices.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn ring_overwrites_oldest_and_one_step_is_plain_td() {
        let mut rb = ReplayBuffer::new(4, 1, None);
        for i in 0..10 {
            rb.push(
                &[i as f32],
                0,
                &[],
                i as f32,
                &[i as f32 + 1.0],
                false,
                false,
            )
            .unwrap();
        }
        assert_eq!(rb.len(), 4);
        let ordered: Vec<f32> = rb.iter_ordered().map(|t| t.0[0]).collect();
        assert_eq!(ordered, vec![6.0, 7.0, 8.0, 9.0]);
        let b = rb.sample(100, 1, 0.9, &mut Rng::seed_from_u64(1));
        for k in 0..b.size {
            assert!(b.obs[k] >= 6.0);
            assert_eq!(b.returns[k], b.obs[k]);
            assert_eq!(b.next_obs[k], b.obs[k] + 1.0);
            assert!((b.discounts[k] - 0.9).abs() < 1e-7);
        }
    }

    #[test]
    fn export_import_round_trips() {
        let mut rb = ReplayBuffer::new(8, 2, Some(1));
        for i in 0..11 {
            let x = i as f32;
            rb.push(
                &[x, -x],
                0,
                &[x * 0.1],
                x,
                &[x + 1.0, -x - 1.0],
                i % 5 == 4,
                false,
            )
            .unwrap();
        }
        let (arrays, state) = rb.export();
        let mut other = ReplayBuffer::new(8, 2, Some(1));
        other.import(&arrays, &state).unwrap();
        let a = rb.sample(32, 3, 0.99, &mut Rng::seed_from_u64(5));
        let b = other.sample(32, 3, 0.99, &mut Rng::seed_from_u64(5));
        assert_eq!(a.obs, b.obs);
        assert_eq!(a.returns, b.returns);
        assert_eq!(a.actions_continuous, b.actions_continuous);
        let mut wrong = ReplayBuffer::new(4, 2, Some(1));
        assert!(wrong.import(&arrays, &state).is_err());
    }
}

/// Replay buffers as datasets in the one transition schema ([`crate::history::schema`]): a teacher's replay
/// dumps to the same Parquet files that QDagger reads, and any dataset fills a buffer.
pub mod dataset {
    use super::{ActionStore, ReplayBuffer};
    use crate::envs::EnvSpec;
    use crate::error::{Error, Result};
    use crate::history::{
        ActionRef, Actions, DatasetWriter, Manifest, SourceAlgo, TaskEntry, TransitionReader,
        TransitionRef, TransitionSchema,
    };
    use std::path::Path;

    /// Writes the buffer's transitions, oldest first, as run 0 of a new dataset at `folder`.
    /// Episodes and steps are numbered by walking the stored stream (a wrapped buffer's first
    /// episode may start mid-way).
    pub fn dump(
        replay: &ReplayBuffer,
        folder: &Path,
        env: &EnvSpec,
        task: usize,
        task_params: serde_json::Value,
        source: SourceAlgo,
    ) -> Result<Manifest> {
        let schema = TransitionSchema::for_env(env);
        let tasks = vec![TaskEntry {
            index: task as u32,
            params: task_params,
        }];
        let mut w = DatasetWriter::create(
            folder,
            Manifest::new(env.clone(), schema, tasks, "replay", source),
        )?;
        let (mut episode, mut step) = (0u32, 0u32);
        for (obs, ad, ac, reward, next_obs, terminated, truncated) in replay.iter_ordered() {
            let action = match replay.actions {
                ActionStore::Discrete(_) => ActionRef::Discrete(ad),
                ActionStore::Continuous { .. } => ActionRef::Continuous(ac),
            };
            w.push(&TransitionRef {
                run: 0,
                task: task as u32,
                episode,
                step,
                obs: &obs,
                action,
                reward,
                terminated,
                truncated,
                next_obs: &next_obs,
                policy: None,
            })?;
            step += 1;
            if terminated || truncated {
                episode += 1;
                step = 0;
            }
        }
        w.finish()
    }

    /// Appends every transition of the dataset at `folder` (runs in manifest order) to `replay`
    /// and returns how many were read. Observation size and action kind must match the buffer.
    pub fn load(replay: &mut ReplayBuffer, folder: &Path) -> Result<usize> {
        let manifest = Manifest::load(folder)?;
        let d = manifest.layout.obs_dim;
        if d != replay.obs_dim {
            return Err(Error::data(
                folder.join("dataset.json"),
                format!(
                    "observations have {d} values, the replay buffer expects {}",
                    replay.obs_dim
                ),
            ));
        }
        let mut n = 0;
        for run in &manifest.runs {
            let path = crate::history::manifest::resolve_data_path(folder, &run.file)
                .map_err(|m| Error::data(folder.join("dataset.json"), m))?;
            let t = TransitionReader::open(&path)?.read_all()?;
            let rows = t.reward.len();
            for i in 0..rows {
                let (ad, ac): (i64, &[f32]) = match (&t.action, &replay.actions) {
                    (Actions::Discrete(a), ActionStore::Discrete(_)) => (a[i], &[]),
                    (Actions::Continuous(a), ActionStore::Continuous { dim, .. }) => {
                        (0, &a[i * dim..(i + 1) * dim])
                    }
                    _ => return Err(Error::data(
                        &path,
                        "action column kind (discrete/continuous) does not match the replay buffer",
                    )),
                };
                replay
                    .push(
                        &t.obs[i * d..(i + 1) * d],
                        ad,
                        ac,
                        t.reward[i],
                        &t.next_obs[i * d..(i + 1) * d],
                        t.terminated[i],
                        t.truncated[i],
                    )
                    .map_err(|e| Error::data(&path, e.to_string()))?;
            }
            n += rows;
        }
        Ok(n)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::envs::{Action, TaskFamily};

        #[test]
        fn dump_then_load_round_trips_a_wrapped_buffer() {
            let fam = TaskFamily::from_id("cartpole").unwrap();
            let mut env = fam.make(0).unwrap();
            let mut rb = ReplayBuffer::new(300, 4, None);
            let (mut obs, mut next) = (vec![0.0f32; 4], vec![0.0f32; 4]);
            env.reset(Some(0), &mut obs);
            let mut rng = crate::rng::Rng::seed_from_u64(0);
            for _ in 0..1000 {
                let a = rng.below(2);
                let s = env.step(Action::Discrete(a), &mut next).unwrap();
                rb.push(
                    &obs,
                    a as i64,
                    &[],
                    s.reward,
                    &next,
                    s.terminated,
                    s.truncated,
                )
                .unwrap();
                if s.done() {
                    env.reset(None, &mut obs);
                } else {
                    obs.copy_from_slice(&next);
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let folder = dir.path().join("replay");
            let src = SourceAlgo {
                name: "dqn".into(),
                config: serde_json::json!({}),
            };
            let m = dump(&rb, &folder, fam.spec(), 0, serde_json::json!({}), src).unwrap();
            assert_eq!(m.total_rows(), 300);
            crate::history::validate_or_error(&folder).unwrap();
            let mut back = ReplayBuffer::new(300, 4, None);
            assert_eq!(load(&mut back, &folder).unwrap(), 300);
            let a: Vec<_> = rb
                .iter_ordered()
                .map(|t| (t.0.to_vec(), t.1, t.3, t.4.to_vec(), t.5, t.6))
                .collect();
            let b: Vec<_> = back
                .iter_ordered()
                .map(|t| (t.0.to_vec(), t.1, t.3, t.4.to_vec(), t.5, t.6))
                .collect();
            assert_eq!(a, b);
            let mut wrong = ReplayBuffer::new(10, 3, None);
            let e = load(&mut wrong, &folder).unwrap_err().to_string();
            assert!(e.contains("4 values") && e.contains("expects 3"), "{e}");
        }
    }
}
