//! In-context evaluation: the frozen transformer acts in many environments at once, its context
//! filled only by its own interaction (AD §4). In the transition layout, one token per step per
//! environment: the token of step t holds (obs_t, a_{t−1}, r_{t−1}) and its output is the
//! distribution of a_t. In the sar layout, step t appends the tokens a_{t−1}, r_{t−1}, s_t (only
//! s_0 at the first step) and a_t is read at s_t. The history runs on across episode boundaries,
//! as in the training histories.
//!
//! The context is a window of the newest transitions that grows to `context` and then drops
//! all but the newest `keep` whole transitions, so that it starts at a transition's first
//! token as training windows do (see [`super::kv_cache`] for why). With the KV cache each step
//! encodes only its new tokens; without it each step re-encodes the whole window (the reference
//! the cache is tested against, and the baseline of `bench ad`).

use std::path::Path;

use candle_core::Device;

use super::kv_cache::KvCache;
use super::model::{Gpt, TokenLayout};
use crate::checkpoint::{raw_to_tensors, CheckpointData};
use crate::error::{Error, Result};
use crate::eval::{ActionBuf, Feedback, Policy};
use crate::nn::params::ParamStore;
use crate::rng::Rng;

/// A checkpoint's config names an in-context learner (`algorithm` = `ad` or `ed`).
pub fn is_in_context(config: &serde_json::Value) -> bool {
    matches!(
        config.get("algorithm").and_then(|a| a.as_str()),
        Some("ad") | Some("ed")
    )
}

pub struct InContextPolicy {
    model: Gpt,
    _store: ParamStore,
    name: String,
    /// Encode one token per step against cached keys/values (`false`: recompute the window).
    pub use_cache: bool,
    /// Transitions kept when the window is full.
    pub keep: usize,
    /// Take the most likely action instead of sampling (sampling is AD's default).
    pub greedy: bool,
    /// Sampling temperature: actions are drawn from softmax(logits / temperature). 1 samples
    /// the learned distribution (AD's evaluation); lower values exploit more of what the
    /// context already shows.
    pub temperature: f64,
    rng: Rng,
    n: usize,
    /// Token features of the window, one `n × F` block per token slot, oldest first.
    window: Vec<Vec<f32>>,
    cache: KvCache,
    prev: Vec<Option<(usize, f32)>>,
    /// Whether each environment's next transition begins an episode.
    starts: Vec<bool>,
    /// Each environment's return of its current episode so far.
    returns: Vec<f32>,
    /// Each environment's last observation of its previous episode (`n × obs_dim`).
    finals: Vec<f32>,
    last_logits: Vec<Vec<f32>>,
}

impl InContextPolicy {
    pub fn new(model: Gpt, store: ParamStore, name: String, seed: u64) -> Self {
        let keep = model.config.context / 2;
        let (n_layer, tokens) = (model.config.n_layer, model.config.max_tokens());
        Self {
            model,
            _store: store,
            name,
            use_cache: true,
            temperature: 1.0,
            keep: keep.max(1),
            greedy: false,
            rng: Rng::seed_from_u64(seed ^ 0xAD),
            n: 0,
            window: Vec::new(),
            cache: KvCache::new(n_layer, tokens),
            prev: Vec::new(),
            starts: Vec::new(),
            returns: Vec::new(),
            finals: Vec::new(),
            last_logits: Vec::new(),
        }
    }

    /// Rebuilds the model of an AD/ED checkpoint (weights only).
    pub fn from_checkpoint(data: &CheckpointData, device: &Device, seed: u64) -> Result<Self> {
        let cfg = crate::ad::train::AdCheckpointConfig::decode(&data.config)?;
        let mut store = ParamStore::new(device, 0);
        let model = Gpt::new(&cfg.model, &cfg.tokens, &mut store)?;
        store.load_state_dict(
            &raw_to_tensors(&data.model, device)?,
            Path::new("model.safetensors"),
        )?;
        Ok(Self::new(
            model,
            store,
            cfg.algorithm.as_str().to_string(),
            seed,
        ))
    }

    pub fn model(&self) -> &Gpt {
        &self.model
    }

    /// The action logits of the last `act`, one row per environment.
    pub fn last_logits(&self) -> &[Vec<f32>] {
        &self.last_logits
    }

    /// Transitions in the context window now (the last one's action is still to be chosen).
    pub fn window_len(&self) -> usize {
        self.window
            .len()
            .div_ceil(self.model.config.layout.tokens_per_transition())
    }

    /// Action logits `(n, A)` at the newest token of every environment, of which the newest
    /// `new` token slots of the window are not in the cache yet.
    fn logits(&mut self, new: usize) -> Result<Vec<Vec<f32>>> {
        let (n, f) = (self.n, self.model.tokenizer.features());
        let first = vec![0usize; n];
        let len = self.window.len();
        let rows = if self.use_cache {
            if self.cache.len() + new != len {
                // The window was cut (or this is the first step): encode all but the newest.
                self.cache.clear();
                if len > new {
                    let feats = interleave(&self.window[..len - new], n, f);
                    self.model.forward(
                        &feats,
                        n,
                        len - new,
                        &first,
                        Some(&mut self.cache),
                        None,
                    )?;
                }
            }
            let newest = interleave(&self.window[len - new..], n, f);
            self.model
                .forward(&newest, n, new, &first, Some(&mut self.cache), None)?
        } else {
            let feats = interleave(&self.window, n, f);
            self.model.forward(&feats, n, len, &first, None, None)?
        };
        // Rows are (env, prediction); keep each env's last one (the newest token's).
        let per_env = rows.dim(0)? / n.max(1);
        let idx: Vec<u32> = (0..n).map(|i| (i * per_env + per_env - 1) as u32).collect();
        let idx = candle_core::Tensor::from_vec(idx, n, self.model.device())?;
        let rows = rows.index_select(&idx, 0)?;
        Ok(rows.to_dtype(candle_core::DType::F32)?.to_vec2()?)
    }
}

/// Per-step blocks `[step][env][F]` → `[env][step][F]`.
fn interleave(steps: &[Vec<f32>], n: usize, f: usize) -> Vec<f32> {
    let t = steps.len();
    let mut out = vec![0f32; n * t * f];
    for (s, block) in steps.iter().enumerate() {
        for i in 0..n {
            out[(i * t + s) * f..(i * t + s + 1) * f].copy_from_slice(&block[i * f..(i + 1) * f]);
        }
    }
    out
}

impl Policy for InContextPolicy {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn begin(&mut self, n_envs: usize) -> Result<()> {
        self.n = n_envs;
        self.window.clear();
        self.cache.clear();
        self.prev = vec![None; n_envs];
        self.starts = vec![true; n_envs];
        self.returns = vec![0.0; n_envs];
        self.finals = vec![0.0; n_envs * self.model.tokenizer.obs_dim()];
        Ok(())
    }

    fn act(&mut self, obs: &[f32], actions: &mut ActionBuf) -> Result<()> {
        let tk = &self.model.tokenizer;
        let (n, f, d) = (self.n, tk.features(), tk.obs_dim());
        if obs.len() != n * d {
            return Err(Error::Env(format!(
                "{}: expected {n}×{d} observation values, found {}",
                self.name,
                obs.len()
            )));
        }
        let ActionBuf::Discrete(out) = actions else {
            return Err(Error::Env(format!(
                "{}: the model chooses discrete actions",
                self.name
            )));
        };
        let context = self.model.config.context;
        if self.window_len() == context {
            // Keep the newest `keep` transitions, from the first token of the oldest of them.
            let tpt = self.model.config.layout.tokens_per_transition();
            let cut = (context - self.keep.min(context - 1)) * tpt;
            self.window.drain(..cut);
        }
        let new = match tk.layout() {
            TokenLayout::Transition => {
                let mut tok = vec![0f32; n * f];
                tk.write(
                    obs,
                    &self.prev,
                    &self.starts,
                    &self.returns,
                    &self.finals,
                    &mut tok,
                );
                self.window.push(tok);
                1
            }
            TokenLayout::Sar => {
                // a_{t−1} and r_{t−1} (a missing one is an all-zero token), then s_t.
                let mut new = 0;
                if !self.window.is_empty() {
                    let acts: Vec<Option<usize>> =
                        self.prev.iter().map(|p| p.map(|(a, _)| a)).collect();
                    let rews: Vec<f32> = self
                        .prev
                        .iter()
                        .map(|p| p.map_or(0.0, |(_, r)| r))
                        .collect();
                    let (mut a_tok, mut r_tok) = (vec![0f32; n * f], vec![0f32; n * f]);
                    tk.write_actions(&acts, &mut a_tok);
                    tk.write_rewards(&rews, &mut r_tok);
                    self.window.push(a_tok);
                    self.window.push(r_tok);
                    new += 2;
                }
                let mut s_tok = vec![0f32; n * f];
                tk.write_states(obs, &mut s_tok);
                self.window.push(s_tok);
                new + 1
            }
        };
        let logits = self.logits(new)?;
        for (i, row) in logits.iter().enumerate() {
            out[i] = if self.greedy {
                argmax(row)
            } else {
                sample(row, self.temperature, &mut self.rng)
            };
        }
        self.last_logits = logits;
        self.starts.iter_mut().for_each(|s| *s = false);
        Ok(())
    }

    fn observe(&mut self, fb: &Feedback<'_>) -> Result<()> {
        if let ActionBuf::Discrete(a) = fb.actions {
            for (i, p) in self.prev.iter_mut().enumerate() {
                *p = Some((a[i], fb.rewards[i]));
            }
            for (i, (s, r)) in self.starts.iter_mut().zip(&mut self.returns).enumerate() {
                *s = fb.terminated[i] || fb.truncated[i];
                *r = if *s { 0.0 } else { *r + fb.rewards[i] };
            }
            if self.model.config.final_obs {
                let d = self.model.tokenizer.obs_dim();
                if fb.next_obs.len() != self.finals.len() {
                    return Err(Error::Env(format!(
                        "{}: the model reads each episode's final observation; feedback holds {} \
                         next-observation values for {} environments of {d}",
                        self.name,
                        fb.next_obs.len(),
                        self.n
                    )));
                }
                for (i, &ended) in self.starts.iter().enumerate() {
                    if ended {
                        self.finals[i * d..(i + 1) * d]
                            .copy_from_slice(&fb.next_obs[i * d..(i + 1) * d]);
                    }
                }
            }
        }
        Ok(())
    }
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Draws from softmax(row / temperature).
fn sample(row: &[f32], temperature: f64, rng: &mut Rng) -> usize {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let p: Vec<f64> = row
        .iter()
        .map(|&v| ((v - m) as f64 / temperature).exp())
        .collect();
    let total: f64 = p.iter().sum();
    let mut u = rng.uniform() * total;
    for (i, &pi) in p.iter().enumerate() {
        if u < pi {
            return i;
        }
        u -= pi;
    }
    row.len() - 1
}
