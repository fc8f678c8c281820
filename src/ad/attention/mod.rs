//! Causal scaled-dot-product attention with padding, attention dropout and a tiled CPU kernel.
//!
//! Written from tensor ops, one attention layer makes a dozen passes over the `(B, H, T, S)`
//! score tensor (mask add, the softmax's max/sub/exp/sum/div, the dropout mask and its product,
//! and as many again backward), each allocating a fresh buffer: at a context of 4,096 tokens that
//! tensor is 256 MB per window and layer. On the CPU [`attention`] therefore runs one op that
//! never materialises it ([`flash`]): per (window, head, tile of 64 queries) it walks the keys in
//! tiles of 64 with an online softmax (FlashAttention-2's forward), keeping only each query's
//! log-sum-exp for the backward, which recomputes the scores tile by tile. Elsewhere (CUDA) the
//! same function runs the tensor-op formulation, which is also the reference the kernel is
//! tested against.
//!
//! **Mask.** Query `q` of a window (absolute slot `past + q`) may attend key `k` iff
//! `k <= past + q` and (`k >= first_pos` or `k == past + q`): causal, with the left padding of a
//! training window (slots before `first_pos`) hidden; a padded query attends only to itself, so
//! no row is empty. The allowed keys of a query are therefore one contiguous range.
//!
//! **Dropout** on the attention probabilities keeps element `i` of the `(B, H, T, S)` tensor iff
//! the `i`-th output of the SplitMix64 stream seeded with the call's seed is below
//! `keep · 2^32`: a counter-based mask, the same on every thread, in every tile and in the
//! backward pass, so a run stays a pure function of its seed.

mod flash;
mod tile;

use candle_core::{DType, Tensor, D};

use crate::error::Result;
use crate::rng::splitmix64;

/// Which keys each query may see (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttnMask {
    /// Tokens already cached before this call's `T` queries.
    pub past: usize,
    /// Per window: the slot of its first real token (0 without padding).
    pub first_pos: Vec<usize>,
}

impl AttnMask {
    /// The allowed keys `lo..=hi` of query `q` in window `b`.
    #[inline]
    pub(super) fn range(&self, b: usize, q: usize) -> (usize, usize) {
        let hi = self.past + q;
        (self.first_pos[b].min(hi), hi)
    }

    /// The additive mask `(B, H, T, S)`: 0 where allowed, −1e9 elsewhere.
    fn bias(&self, b: usize, h: usize, t: usize, s: usize) -> Vec<f32> {
        let mut m = vec![-1e9f32; b * h * t * s];
        for (i, rows) in m.chunks_mut(h * t * s).enumerate() {
            for (r, row) in rows.chunks_mut(s).enumerate() {
                let (lo, hi) = self.range(i, r % t);
                row[lo..=hi].iter_mut().for_each(|x| *x = 0.0);
            }
        }
        m
    }
}

/// Attention dropout of one call: probability `p`, mask seed `seed`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnDropout {
    pub p: f64,
    pub seed: u64,
}

impl AttnDropout {
    /// `keep · 2^32` and the inverted-dropout scale `1 / keep`.
    pub(super) fn threshold(&self) -> (u64, f32) {
        let keep = 1.0 - self.p;
        ((keep * 4_294_967_296.0) as u64, (1.0 / keep) as f32)
    }
}

/// Whether element `idx` of the attention tensor survives dropout.
#[inline]
pub(super) fn kept(seed: u64, idx: u64, threshold: u64) -> bool {
    let mut s = seed.wrapping_add(idx.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (splitmix64(&mut s) >> 32) < threshold
}

/// The dropout mask as multipliers (0 or `1 / keep`), `n` elements.
fn dropout_mask(d: &AttnDropout, n: usize) -> Vec<f32> {
    let (threshold, scale) = d.threshold();
    (0..n as u64)
        .map(|i| {
            if kept(d.seed, i, threshold) {
                scale
            } else {
                0.0
            }
        })
        .collect()
}

/// `softmax(q·kᵀ·scale + mask)` (with dropout) `· v` for `q` `(B, H, T, hd)` and `k`, `v`
/// `(B, H, S, hd)`; returns `(B, H, T, hd)`. Differentiable in `q`, `k` and `v`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: &AttnMask,
    dropout: Option<AttnDropout>,
) -> Result<Tensor> {
    let dropout = dropout.filter(|d| d.p > 0.0);
    let fused = q.device().is_cpu()
        && crate::device::host_kernels()
        && [q, k, v].iter().all(|t| t.dtype() == DType::F32);
    if fused {
        // Keys and values may be a view of the preallocated KV cache (rows contiguous, heads
        // strided): the kernel reads them in place instead of copying the cache every step.
        let rows = |t: &Tensor| -> Result<Tensor> {
            Ok(if flash::rows_contiguous(t) {
                t.clone()
            } else {
                t.contiguous()?
            })
        };
        let op = flash::FlashAttention::new(scale as f32, mask.clone(), dropout);
        Ok(q.contiguous()?.apply_op3(&rows(k)?, &rows(v)?, op)?)
    } else {
        reference_attention(q, k, v, scale, mask, dropout)
    }
}

/// The tensor-op formulation (any device, differentiable through candle's autograd).
pub fn reference_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: &AttnMask,
    dropout: Option<AttnDropout>,
) -> Result<Tensor> {
    let (b, h, t, _) = q.dims4()?;
    let s = k.dim(2)?;
    let q = (q * scale)?;
    let mut att = q.matmul(&k.t()?)?; // (B, H, T, S)
    if t > 1 || mask.first_pos.iter().any(|&fp| fp > 0) {
        let bias = Tensor::from_vec(mask.bias(b, h, t, s), (b, h, t, s), q.device())?;
        att = att.broadcast_add(&bias.to_dtype(q.dtype())?)?;
    }
    let mut att = candle_nn::ops::softmax(&att, D::Minus1)?;
    if let Some(d) = dropout.filter(|d| d.p > 0.0) {
        let m = Tensor::from_vec(dropout_mask(&d, b * h * t * s), (b, h, t, s), q.device())?;
        att = (att * m.to_dtype(q.dtype())?)?;
    }
    Ok(att.matmul(v)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::grad_check::reference_differences;
    use crate::rng::Rng;
    use candle_core::{Device, Var};

    fn random(shape: (usize, usize, usize, usize), rng: &mut Rng) -> Var {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// Fused forward and gradients equal the tensor-op formulation, with padding, a cache
    /// offset and dropout.
    fn check(b: usize, h: usize, t: usize, past: usize, hd: usize, dropout: Option<f64>) {
        let mut rng = Rng::seed_from_u64(7);
        let s = past + t;
        let (q, k, v) = (
            random((b, h, t, hd), &mut rng),
            random((b, h, s, hd), &mut rng),
            random((b, h, s, hd), &mut rng),
        );
        let first_pos: Vec<usize> = (0..b).map(|i| (i * 3) % (s + 2)).collect();
        let mask = AttnMask { past, first_pos };
        let drop = dropout.map(|p| AttnDropout { p, seed: 11 });
        // A fixed random weighting of the outputs, so every output element gets its own gradient.
        let w = random((b, h, t, hd), &mut rng);
        compare(&q, &k, &v, &w, 1.0 / (hd as f64).sqrt(), &mask, drop);
    }

    /// Every build of the kernel this CPU runs (portable, AVX2 + FMA, AVX-512) against the
    /// tensor-op formulation: outputs and the gradients of Σ output ⊙ `w` to 1e-5.
    fn compare(
        q: &Var,
        k: &Var,
        v: &Var,
        w: &Var,
        scale: f64,
        mask: &AttnMask,
        drop: Option<AttnDropout>,
    ) {
        let reference = reference_attention(q, k, v, scale, mask, drop).unwrap();
        for isa in flash::Isa::available() {
            flash::FORCE_ISA.with(|f| f.set(Some(isa)));
            let tiled = attention(q, k, v, scale, mask, drop).unwrap();
            flash::FORCE_ISA.with(|f| f.set(None));
            let (output, grads) =
                reference_differences(&tiled, &reference, w.as_tensor(), &[q, k, v]).unwrap();
            assert!(output < 1e-5, "{isa:?}: forward differs by {output}");
            for (name, d) in ["q", "k", "v"].into_iter().zip(grads) {
                assert!(d < 1e-5, "{isa:?}: d{name} differs by {d}");
            }
        }
    }

    /// The kernel's gradients against central finite differences of its own forward (f32, step
    /// 1e-2), through the tiled path, padding and dropout.
    #[test]
    fn tiled_gradients_match_finite_differences() {
        let (b, h, t, hd) = (2, 1, flash::TILED_MIN_QUERIES + 2, 4);
        let mut rng = Rng::seed_from_u64(21);
        let mut vals: Vec<Vec<f32>> = (0..3)
            .map(|_| (0..b * h * t * hd).map(|_| rng.normal() as f32).collect())
            .collect();
        let w: Vec<f32> = (0..b * h * t * hd).map(|_| rng.normal() as f32).collect();
        let mask = AttnMask {
            past: 0,
            first_pos: vec![0, 3],
        };
        let drop = Some(AttnDropout { p: 0.25, seed: 3 });
        let dev = Device::Cpu;
        let wt = Tensor::from_vec(w, (b, h, t, hd), &dev).unwrap();
        let loss = |vals: &[Vec<f32>]| -> (f32, Vec<Var>, Tensor) {
            let vars: Vec<Var> = vals
                .iter()
                .map(|v| {
                    Var::from_tensor(&Tensor::from_vec(v.clone(), (b, h, t, hd), &dev).unwrap())
                        .unwrap()
                })
                .collect();
            let out = attention(&vars[0], &vars[1], &vars[2], 0.5, &mask, drop).unwrap();
            let l = (out * &wt).unwrap().sum_all().unwrap();
            (l.to_scalar::<f32>().unwrap(), vars, l)
        };
        let (_, vars, l) = loss(&vals);
        let grads = l.backward().unwrap();
        let eps = 1e-2f32;
        for (x, name) in ["q", "k", "v"].into_iter().enumerate() {
            let g = grads
                .get(&vars[x])
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for i in 0..g.len() {
                let keep = vals[x][i];
                vals[x][i] = keep + eps;
                let up = loss(&vals).0;
                vals[x][i] = keep - eps;
                let down = loss(&vals).0;
                vals[x][i] = keep;
                let fd = (up - down) / (2.0 * eps);
                assert!(
                    (fd - g[i]).abs() < 5e-3 * (1.0 + fd.abs()),
                    "d{name}[{i}]: finite difference {fd}, backward {}",
                    g[i]
                );
            }
        }
    }

    #[test]
    fn tiled_matches_tensor_ops_without_dropout() {
        check(3, 2, 7, 0, 4, None);
        check(3, 2, flash::TILED_MIN_QUERIES + 3, 0, 4, None);
        // Several query and key tiles, ragged at both ends, head sizes on and off the
        // register blocks' widths.
        check(2, 2, 2 * flash::BR + 5, 0, 32, None);
        check(1, 3, flash::BR + 1, flash::BC + 9, 12, None);
    }

    #[test]
    fn tiled_matches_tensor_ops_with_cache_offset_and_dropout() {
        check(2, 3, 5, 4, 8, Some(0.3));
        check(2, 2, flash::TILED_MIN_QUERIES + 4, 3, 8, Some(0.2));
        check(1, 1, 1, 6, 16, Some(0.5));
        check(2, 2, flash::BR + 7, 70, 16, Some(0.1));
    }

    /// Padding that covers whole key tiles, and windows padded all the way to their last slot.
    #[test]
    fn tiled_matches_tensor_ops_with_long_padding() {
        let mut rng = Rng::seed_from_u64(9);
        let (b, h, t, hd) = (3, 2, 2 * flash::BR + 3, 8);
        let (q, k, v) = (
            random((b, h, t, hd), &mut rng),
            random((b, h, t, hd), &mut rng),
            random((b, h, t, hd), &mut rng),
        );
        let mask = AttnMask {
            past: 0,
            first_pos: vec![flash::BC + 3, t - 1, 0],
        };
        let w = random((b, h, t, hd), &mut rng);
        assert!(flash::BC + 3 < t - 1, "padding must cover a whole key tile");
        compare(&q, &k, &v, &w, 0.3, &mask, None);
    }

    /// Keys and values read in place from a view of a preallocated cache (heads strided, as
    /// candle-nn's KV cache hands them out) give what contiguous copies give.
    #[test]
    fn strided_cache_views_are_read_in_place() {
        let mut rng = Rng::seed_from_u64(4);
        let (b, h, hd, cap, s) = (3, 2, 8, 40, 23);
        let full_k = random((b, h, cap, hd), &mut rng);
        let full_v = random((b, h, cap, hd), &mut rng);
        let (k, v) = (
            full_k.as_tensor().narrow(2, 0, s).unwrap(),
            full_v.as_tensor().narrow(2, 0, s).unwrap(),
        );
        assert!(!k.is_contiguous() && flash::rows_contiguous(&k));
        for t in [1, 2, flash::TILED_MIN_QUERIES + 1] {
            let q = random((b, h, t, hd), &mut rng);
            let mask = AttnMask {
                past: s - t,
                first_pos: vec![0, 3, s - t],
            };
            let viewed = attention(&q, &k, &v, 0.35, &mask, None).unwrap();
            let copied = reference_attention(
                &q,
                &k.contiguous().unwrap(),
                &v.contiguous().unwrap(),
                0.35,
                &mask,
                None,
            )
            .unwrap();
            let diff = crate::nn::grad_check::max_abs_diff(&viewed, &copied).unwrap();
            assert!(diff < 1e-5, "{t} queries: cache view differs by {diff}");
        }
    }

    #[test]
    fn dropout_keeps_about_keep_of_the_probabilities() {
        let d = AttnDropout { p: 0.3, seed: 5 };
        let m = dropout_mask(&d, 100_000);
        let kept = m.iter().filter(|&&x| x > 0.0).count() as f64 / m.len() as f64;
        assert!((kept - 0.7).abs() < 0.01, "kept {kept}");
        let other = dropout_mask(&AttnDropout { p: 0.3, seed: 6 }, 100_000);
        assert_ne!(m, other, "the seed must change the mask");
    }
}
