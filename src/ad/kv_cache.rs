//! Key/value cache for incremental decoding over a sliding context window.
//!
//! With learned (absolute) positions a cached key stays valid only while its position does; a
//! FIFO that drops one token per step would shift every position and invalidate the whole cache.
//! The choice made here: the context grows one token per step, and when it is full the oldest
//! tokens are dropped in one go, keeping the newest `keep` (half the context by default), which
//! are re-encoded from position 0 ([`super::policy::InContextPolicy`] does this). Re-encoding
//! `keep` tokens once every `context − keep` steps costs O(1) amortised per step, so a step is
//! one token against at most `context` cached keys, instead of a full forward over the window.
//! The window the model sees therefore holds between `keep` and `context` transitions (always
//! at least `keep`, i.e. several episodes); full recomputation over the same window gives the
//! same actions (tested in `tests/ad.rs`). In the sar layout the same holds in whole
//! transitions: a step appends three tokens (a_{t−1}, r_{t−1}, s_t), the cache holds up to
//! `3 · context` tokens, and a cut keeps the newest `keep` transitions from an s token. A model
//! whose embeddings read preceding tokens (`short_conv`) also finds their input features here,
//! so the first new token of a step sees the same neighbours as in a full forward.

/// Per layer: keys and values `(B, H, S, head_dim)` of the `len` tokens seen so far, in
/// candle-nn's preallocated cache (appending writes in place instead of copying the whole
/// cache every step).
pub struct KvCache {
    layers: Vec<candle_nn::kv_cache::KvCache>,
    len: usize,
    /// Per window: the input features of the newest cached tokens (as many as the model's
    /// `short_conv` reads), oldest first.
    prev_features: Vec<Vec<f32>>,
}

impl KvCache {
    /// A cache for `n_layer` layers and up to `context` tokens.
    pub fn new(n_layer: usize, context: usize) -> Self {
        Self {
            layers: (0..n_layer)
                .map(|_| candle_nn::kv_cache::KvCache::new(2, context))
                .collect(),
            len: 0,
            prev_features: Vec::new(),
        }
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| l.reset());
        self.len = 0;
        self.prev_features.clear();
    }

    /// Layer `i`'s keys and values, which its attention appends to.
    pub(crate) fn layer(&mut self, i: usize) -> &mut candle_nn::kv_cache::KvCache {
        &mut self.layers[i]
    }

    pub(crate) fn prev_features(&self) -> &[Vec<f32>] {
        &self.prev_features
    }

    /// Appends the features `(B, T, F)` of the tokens being cached, keeping the newest `n` per
    /// window.
    pub(crate) fn keep_features(&mut self, feats: &[f32], b: usize, t: usize, f: usize, n: usize) {
        self.prev_features.resize(b, Vec::new());
        for (i, h) in self.prev_features.iter_mut().enumerate() {
            h.extend_from_slice(&feats[i * t * f..(i + 1) * t * f]);
            let drop = h.len().saturating_sub(n * f);
            h.drain(..drop);
        }
    }

    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
