//! Byte observations (`uint8`, e.g. Atari's 4 × 84 × 84 frame stacks) stored as one new frame per
//! transition, exactly.
//!
//! An observation is `k` frames (`k` = the leading dimension of an image shape of three or more
//! dimensions, else 1). A frame-stacked stream repeats itself: a transition's `next_obs` is its
//! `obs` shifted by one frame plus one new frame, and the next transition's `obs` is that
//! `next_obs`. The store therefore keeps, per slot, only the newest frame of `next_obs`, and
//! reconstructs the rest by walking back through earlier slots. Where the stream does not
//! repeat itself (the first transition of an episode, a `next_obs` that is not a shift, the
//! oldest stored transition whose predecessor was overwritten) the whole observation is kept
//! in a side table. Every push is checked against what the store would reconstruct, so any
//! sequence round-trips exactly; a frame-stacked stream costs one frame per transition (7,056
//! bytes for Atari instead of 2 × 4 × 28,224 bytes of `f32` observations).

use crate::error::{Error, Result};
use std::collections::BTreeMap;

pub(super) struct FrameStore {
    capacity: usize,
    /// Values per observation.
    dim: usize,
    /// Frames per observation.
    frames: usize,
    /// Values per frame.
    frame: usize,
    /// The newest frame of each slot's `next_obs`.
    next_frame: Vec<u8>,
    /// Whole observations of slots whose `obs` is not the previous slot's `next_obs`.
    obs_full: BTreeMap<usize, Box<[u8]>>,
    /// Whole next observations of slots whose `next_obs` is not their `obs` shifted by a frame.
    next_full: BTreeMap<usize, Box<[u8]>>,
    /// Scratch for the bytes of one push.
    scratch: (Vec<u8>, Vec<u8>),
}

/// Frames per observation of `shape`: the leading dimension of an image of 3 or more
/// dimensions (a frame stack `[k, H, W]` or `[k, H, W, C]`), else 1.
pub fn frames_of(shape: &[usize]) -> usize {
    if shape.len() >= 3 && shape[0] > 0 {
        shape[0]
    } else {
        1
    }
}

/// `frames` when `dim` values split into that many frames, else 1.
fn whole_frames(dim: usize, frames: usize) -> usize {
    if frames > 0 && dim.is_multiple_of(frames) {
        frames
    } else {
        1
    }
}

/// `v` as bytes; a value that is not an integer in 0..=255 is an error naming it.
fn to_bytes(v: &[f32], what: &str, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    for (i, &x) in v.iter().enumerate() {
        if !(0.0..=255.0).contains(&x) || x.fract() != 0.0 {
            return Err(Error::Env(format!(
                "{what} value {x} at index {i} is not a byte (an integer in 0..=255), but the \
                 environment declares uint8 observations"
            )));
        }
        out.push(x as u8);
    }
    Ok(())
}

impl FrameStore {
    pub fn new(capacity: usize, dim: usize, frames: usize) -> Self {
        let frames = whole_frames(dim, frames);
        let frame = dim / frames;
        Self {
            capacity,
            dim,
            frames,
            frame,
            next_frame: vec![0; capacity * frame],
            obs_full: BTreeMap::new(),
            next_full: BTreeMap::new(),
            scratch: (Vec::new(), Vec::new()),
        }
    }

    /// Bytes a store of `capacity` frame-stacked transitions holds (without side entries).
    pub fn bytes_for(capacity: usize, dim: usize, frames: usize) -> Option<usize> {
        let frames = whole_frames(dim, frames);
        capacity.checked_mul(dim / frames)
    }

    /// Bytes held now: the frame ring and every side entry.
    pub fn heap_bytes(&self) -> usize {
        self.next_frame.len() + (self.obs_full.len() + self.next_full.len()) * self.dim
    }

    /// Side entries: (whole observations, whole next observations).
    pub fn side_entries(&self) -> (usize, usize) {
        (self.obs_full.len(), self.next_full.len())
    }

    fn prev(&self, p: usize) -> usize {
        (p + self.capacity - 1) % self.capacity
    }

    /// Frame `j` (0 oldest, `frames − 1` newest) of slot `p`'s `next_obs` (`next = true`) or
    /// `obs`.
    fn frame_at(&self, mut p: usize, mut j: usize, mut next: bool) -> &[u8] {
        let f = self.frame;
        loop {
            if next {
                if let Some(v) = self.next_full.get(&p) {
                    return &v[j * f..(j + 1) * f];
                }
                if j + 1 == self.frames {
                    return &self.next_frame[p * f..(p + 1) * f];
                }
                // The next observation is the observation shifted by one frame.
                j += 1;
                next = false;
            } else {
                if let Some(v) = self.obs_full.get(&p) {
                    return &v[j * f..(j + 1) * f];
                }
                // The observation is the previous slot's next observation.
                p = self.prev(p);
                next = true;
            }
        }
    }

    fn gather(&self, p: usize, next: bool) -> Box<[u8]> {
        let mut v = Vec::with_capacity(self.dim);
        for j in 0..self.frames {
            v.extend_from_slice(self.frame_at(p, j, next));
        }
        v.into_boxed_slice()
    }

    /// Appends slot `p`'s observation (or next observation) to `out` as `f32`.
    pub fn write(&self, p: usize, next: bool, out: &mut Vec<f32>) {
        for j in 0..self.frames {
            out.extend(self.frame_at(p, j, next).iter().map(|&b| f32::from(b)));
        }
    }

    /// Stores a transition's observations in slot `p`; `len` is the number of stored
    /// transitions before this push (the ring's oldest slot is `p` when it is full).
    pub fn push(&mut self, p: usize, len: usize, obs: &[f32], next_obs: &[f32]) -> Result<()> {
        let (mut o, mut n) = std::mem::take(&mut self.scratch);
        let r = to_bytes(obs, "observation", &mut o)
            .and_then(|()| to_bytes(next_obs, "next observation", &mut n));
        if r.is_ok() {
            self.store(p, len, &o, &n);
        }
        self.scratch = (o, n);
        r
    }

    fn store(&mut self, p: usize, len: usize, o: &[u8], n: &[u8]) {
        let f = self.frame;
        if len == self.capacity && self.capacity > 1 {
            // Slot `p` is the oldest and about to be overwritten: the slot after it becomes
            // the oldest and must not lean on it.
            let q = (p + 1) % self.capacity;
            if !self.obs_full.contains_key(&q) {
                let whole = self.gather(q, false);
                self.obs_full.insert(q, whole);
            }
        }
        self.obs_full.remove(&p);
        self.next_full.remove(&p);
        let continues = len > 0
            && self.capacity > 1
            && (0..self.frames)
                .all(|j| self.frame_at(self.prev(p), j, true) == &o[j * f..(j + 1) * f]);
        if !continues {
            self.obs_full.insert(p, o.into());
        }
        let k = self.frames;
        if n[..(k - 1) * f] == o[f..] {
            self.next_frame[p * f..(p + 1) * f].copy_from_slice(&n[(k - 1) * f..]);
        } else {
            self.next_full.insert(p, n.into());
        }
    }

    /// The store as named arrays (checkpoints): the frame ring and the side tables.
    pub fn export(&self, m: &mut BTreeMap<String, super::RawArray>) {
        use super::RawArray;
        let n = self.capacity;
        m.insert(
            "next_frame".into(),
            RawArray::u8(vec![n, self.frame], &self.next_frame),
        );
        for (name, table) in [("obs_full", &self.obs_full), ("next_full", &self.next_full)] {
            let slots: Vec<i64> = table.keys().map(|&k| k as i64).collect();
            let values: Vec<u8> = table.values().flat_map(|v| v.iter().copied()).collect();
            m.insert(
                format!("{name}_slot"),
                RawArray::i64(vec![slots.len()], &slots),
            );
            m.insert(
                name.into(),
                RawArray::u8(vec![slots.len(), self.dim], &values),
            );
        }
    }

    /// Restores [`export`](Self::export)ed arrays; `oldest` is the ring's oldest slot when
    /// `len > 0`, which must hold a whole observation.
    pub fn import(
        &mut self,
        arrays: &BTreeMap<String, super::RawArray>,
        len: usize,
        oldest: usize,
    ) -> Result<()> {
        let bad = |m: String| Error::data(crate::checkpoint::REPLAY_FILE, m);
        let get = |k: &str| {
            arrays.get(k).ok_or_else(|| {
                bad(format!(
                    "the replay snapshot lacks `{k}` (this agent stores uint8 observations as frames)"
                ))
            })
        };
        self.next_frame = get("next_frame")?.to_u8("next_frame", self.capacity * self.frame)?;
        let mut tables = Vec::new();
        for name in ["obs_full", "next_full"] {
            let slot_name = format!("{name}_slot");
            let slots_raw = get(&slot_name)?;
            let count = slots_raw.shape.first().copied().unwrap_or(0);
            let slots = slots_raw.to_i64(&slot_name, count)?;
            let values = get(name)?.to_u8(name, count * self.dim)?;
            let mut table = BTreeMap::new();
            for (i, &s) in slots.iter().enumerate() {
                if s < 0 || s as usize >= self.capacity {
                    return Err(bad(format!(
                        "`{slot_name}` holds slot {s}, outside the buffer of {}",
                        self.capacity
                    )));
                }
                let v: Box<[u8]> = values[i * self.dim..(i + 1) * self.dim].into();
                if table.insert(s as usize, v).is_some() {
                    return Err(bad(format!("`{slot_name}` holds slot {s} twice")));
                }
            }
            tables.push(table);
        }
        self.next_full = tables.pop().expect("two tables");
        self.obs_full = tables.pop().expect("two tables");
        if len > 0 && !self.obs_full.contains_key(&oldest) {
            return Err(bad(format!(
                "the oldest stored transition (slot {oldest}) has no whole observation in \
                 `obs_full`, so the frames before it cannot be rebuilt"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::envs::{Bounds, EnvConfig, EnvSpec, ObsDtype, Space};
    use crate::replay::ReplayBuffer;
    use crate::rng::Rng;

    fn byte_spec(shape: Vec<usize>) -> EnvSpec {
        EnvSpec {
            config: EnvConfig::new("frames"),
            observation_space: Space::Box {
                shape,
                low: Bounds::Scalar(0.0),
                high: Bounds::Scalar(255.0),
            },
            action_space: Space::Discrete { n: 3 },
            max_episode_steps: 100,
            num_tasks: 1,
            observation_dtype: ObsDtype::U8,
        }
    }

    /// A frame-stacked stream as Gymnasium's `FrameStackObservation` makes it (a reset
    /// observation repeats its first frame), with now and then a next observation that is no
    /// shift at all (a wrapper that rewrites frames), pushed into a byte buffer and an `f32`
    /// buffer alike.
    fn fill(bytes: &mut ReplayBuffer, floats: &mut ReplayBuffer, steps: usize, k: usize, f: usize) {
        let mut rng = Rng::seed_from_u64(3);
        let frame = |rng: &mut Rng| -> Vec<f32> { (0..f).map(|_| rng.below(256) as f32).collect() };
        let reset = |first: &[f32]| first.repeat(k);
        let mut obs = reset(&frame(&mut rng));
        for t in 0..steps {
            let mut next: Vec<f32> = obs[f..].to_vec();
            next.extend(frame(&mut rng));
            if rng.below(17) == 0 {
                next = (0..k * f).map(|_| rng.below(256) as f32).collect();
            }
            let (terminated, truncated) = (rng.below(23) == 0, rng.below(41) == 0);
            let r = t as f32;
            for rb in [&mut *bytes, &mut *floats] {
                rb.push(&obs, (t % 3) as i64, &[], r, &next, terminated, truncated)
                    .unwrap();
            }
            obs = if terminated || truncated {
                reset(&frame(&mut rng))
            } else {
                next
            };
        }
    }

    #[test]
    fn byte_frames_reproduce_every_observation_through_wraps_and_episode_starts() {
        let (k, f) = (4, 6);
        let spec = byte_spec(vec![k, 2, 3]);
        for (capacity, steps) in [(1, 5), (2, 9), (50, 30), (50, 237), (64, 64)] {
            let mut bytes = ReplayBuffer::for_spec(capacity, &spec, None, "test").unwrap();
            let mut floats = ReplayBuffer::new(capacity, k * f, None);
            fill(&mut bytes, &mut floats, steps, k, f);
            let a: Vec<_> = bytes.iter_ordered().map(|t| (t.0, t.1, t.3, t.4)).collect();
            let b: Vec<_> = floats
                .iter_ordered()
                .map(|t| (t.0, t.1, t.3, t.4))
                .collect();
            assert_eq!(a, b, "capacity {capacity}, {steps} pushes");
            let x = bytes.sample(200, 3, 0.9, &mut Rng::seed_from_u64(9));
            let y = floats.sample(200, 3, 0.9, &mut Rng::seed_from_u64(9));
            assert_eq!(
                (x.obs, x.next_obs, x.returns),
                (y.obs, y.next_obs, y.returns)
            );
        }
    }

    #[test]
    fn a_frame_stacked_stream_costs_one_frame_per_transition() {
        // Atari's stacks: 1M transitions in about 7 GB, against 226 GB as f32 pairs.
        let atari = 4 * 84 * 84;
        let bytes = ReplayBuffer::bytes_for(1_000_000, atari, Some(4), None).unwrap();
        assert!(bytes > 7_000_000_000 && bytes < 7_200_000_000, "{bytes}");
        let floats = ReplayBuffer::bytes_for(1_000_000, atari, None, None).unwrap();
        assert!(floats > 225_000_000_000, "{floats}");
        // A filled buffer holds what the formula says, plus one whole observation per episode
        // start and per non-shifting next observation.
        let (k, f, capacity) = (4, 84 * 84, 2_000);
        let spec = byte_spec(vec![k, 84, 84]);
        let mut rb = ReplayBuffer::for_spec(capacity, &spec, None, "test").unwrap();
        let mut floats = ReplayBuffer::new(capacity, k * f, None);
        fill(&mut rb, &mut floats, 3 * capacity, k, f);
        let (obs_full, next_full) = rb.byte_side_entries().unwrap();
        let formula = ReplayBuffer::bytes_for(capacity, k * f, Some(k), None).unwrap();
        assert_eq!(rb.heap_bytes(), formula + (obs_full + next_full) * k * f);
        // Episodes end every ~15 steps and 1 in 17 next observations is no shift here, so
        // side entries stay a fraction of the transitions; an Atari stream (episodes of
        // thousands of steps, every next observation a shift) has a handful.
        assert!(
            obs_full + next_full < capacity / 4,
            "{obs_full} + {next_full}"
        );
        assert!(rb.heap_bytes() * 3 < floats.heap_bytes() / 4);
    }

    #[test]
    fn a_value_that_is_not_a_byte_is_refused_by_name() {
        let spec = byte_spec(vec![2, 1, 2]);
        let mut rb = ReplayBuffer::for_spec(4, &spec, None, "test").unwrap();
        let e = rb
            .push(&[0.0, 1.0, 2.5, 3.0], 0, &[], 0.0, &[0.0; 4], false, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2.5 at index 2") && e.contains("uint8"), "{e}");
        let e = rb
            .push(
                &[0.0; 4],
                0,
                &[],
                0.0,
                &[0.0, 0.0, 0.0, 256.0],
                false,
                false,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("next observation value 256"), "{e}");
        assert!(rb.is_empty());
    }

    #[test]
    fn byte_buffers_export_and_import_exactly() {
        let (k, f) = (4, 6);
        let spec = byte_spec(vec![k, 2, 3]);
        let mut rb = ReplayBuffer::for_spec(40, &spec, None, "test").unwrap();
        let mut floats = ReplayBuffer::new(40, k * f, None);
        fill(&mut rb, &mut floats, 97, k, f);
        let (arrays, state) = rb.export();
        assert!(!arrays.contains_key("obs"));
        let mut back = ReplayBuffer::for_spec(40, &spec, None, "test").unwrap();
        back.import(&arrays, &state).unwrap();
        let a: Vec<_> = rb.iter_ordered().map(|t| (t.0, t.4)).collect();
        let b: Vec<_> = back.iter_ordered().map(|t| (t.0, t.4)).collect();
        assert_eq!(a, b);
        // A float buffer's snapshot does not fill a byte buffer, and the oldest transition
        // must carry its whole observation.
        let (float_arrays, float_state) = floats.export();
        let e = back
            .import(&float_arrays, &float_state)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lacks `next_frame`"), "{e}");
        let mut broken = arrays.clone();
        let oldest = state["pos"].as_u64().unwrap() as i64;
        let n = broken["obs_full_slot"].shape[0];
        let slots = broken["obs_full_slot"].to_i64("slots", n).unwrap();
        let values = broken["obs_full"].to_u8("values", n * k * f).unwrap();
        let keep: Vec<usize> = (0..n).filter(|&i| slots[i] != oldest).collect();
        assert_eq!(
            keep.len(),
            n - 1,
            "the oldest slot holds a whole observation"
        );
        let kept_slots: Vec<i64> = keep.iter().map(|&i| slots[i]).collect();
        let kept_values: Vec<u8> = keep
            .iter()
            .flat_map(|&i| values[i * k * f..(i + 1) * k * f].to_vec())
            .collect();
        use crate::replay::RawArray;
        broken.insert(
            "obs_full_slot".into(),
            RawArray::i64(vec![n - 1], &kept_slots),
        );
        broken.insert(
            "obs_full".into(),
            RawArray::u8(vec![n - 1, k * f], &kept_values),
        );
        let e = back.import(&broken, &state).unwrap_err().to_string();
        assert!(e.contains("oldest stored transition"), "{e}");
    }
}
