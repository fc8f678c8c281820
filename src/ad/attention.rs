//! Causal scaled-dot-product attention with padding, attention dropout and a fused CPU kernel.
//!
//! Written from tensor ops, one attention layer makes a dozen passes over the `(B, H, T, S)`
//! score tensor (mask add, the softmax's max/sub/exp/sum/div, the dropout mask and its product,
//! and as many again backward), each allocating a fresh buffer; at the contexts algorithm
//! distillation uses (hundreds of transitions) that is most of a training step. On the CPU
//! [`attention`] therefore runs one fused op: per (window, head) it computes the allowed scores,
//! their softmax and dropout in one row buffer, and its backward is written by hand from the
//! probabilities kept by the forward. Elsewhere (CUDA) the same function runs the tensor-op
//! formulation, which is also the reference the fused kernel is tested against.
//!
//! **Mask.** Query `q` of a window (absolute slot `past + q`) may attend key `k` iff
//! `k <= past + q` and (`k >= first_pos` or `k == past + q`): causal, with the left padding of a
//! training window (slots before `first_pos`) hidden; a padded query attends only to itself, so
//! no row is empty. The allowed keys of a query are therefore one contiguous range.
//!
//! **Dropout** on the attention probabilities keeps element `i` of the `(B, H, T, S)` tensor iff
//! the `i`-th output of the SplitMix64 stream seeded with the call's seed is below
//! `keep · 2^32`: a counter-based mask, the same on every thread and in the backward pass, so a
//! run stays a pure function of its seed.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use crate::error::Result;
use crate::nn::host::{contiguous_f32, CpuF32};
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
    fn range(&self, b: usize, q: usize) -> (usize, usize) {
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
    fn threshold(&self) -> (u64, f32) {
        let keep = 1.0 - self.p;
        ((keep * 4_294_967_296.0) as u64, (1.0 / keep) as f32)
    }
}

/// Whether element `idx` of the attention tensor survives dropout.
#[inline]
fn kept(seed: u64, idx: u64, threshold: u64) -> bool {
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
        let op = FusedAttention {
            scale: scale as f32,
            mask: mask.clone(),
            dropout,
            probs: Mutex::new(None),
        };
        Ok(q.contiguous()?
            .apply_op3(&k.contiguous()?, &v.contiguous()?, op)?)
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

/// From this many queries per call on, the forward transposes keys and values first.
const TRANSPOSE_MIN_QUERIES: usize = 8;

/// `xt` (hd × S) ← `x` (S × hd) transposed.
#[inline(always)]
fn transpose_into(x: &[f32], s: usize, hd: usize, xt: &mut [f32]) {
    for (j, row) in x.chunks_exact(hd).enumerate().take(s) {
        for (d, &val) in row.iter().enumerate() {
            xt[d * s + j] = val;
        }
    }
}

/// `x` (S × hd) ← `xt` (hd × S) transposed.
#[inline(always)]
fn transpose_back(xt: &[f32], s: usize, hd: usize, x: &mut [f32]) {
    for (j, row) in x.chunks_exact_mut(hd).enumerate().take(s) {
        for (d, val) in row.iter_mut().enumerate() {
            *val = xt[d * s + j];
        }
    }
}

/// The reductions below keep eight partial sums and add them in a fixed order, so they
/// vectorise and give the same bits whatever the SIMD width.
const LANES: usize = 8;

/// `y += a·x`.
#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += a * x);
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let c = a.chunks_exact(LANES);
    let tail = c
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for x in c {
        for l in 0..LANES {
            acc[l] = acc[l].max(x[l]);
        }
    }
    acc.iter().fold(tail, |m, &x| m.max(x))
}

/// `e^x` for `x ≤ 0` (the shifted scores of a softmax), relative error ≈ 2e-7: `x = n·ln 2 + r`
/// with `|r| ≤ ln 2 / 2`, a degree-6 Taylor polynomial for `e^r`, and `2^n` put in the exponent
/// bits. Branch-free, so loops over it vectorise (libm's `expf` is a scalar call).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
    let x = x.max(-87.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4; // ln 2 split in a high and a low part
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let shift = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32) << 23;
    f32::from_bits((p.to_bits() as i32).wrapping_add(shift) as u32)
}

/// `x ← e^{(x − shift)·scale}`; returns the sum.
#[inline(always)]
fn exp_shifted(x: &mut [f32], shift: f32, scale: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut c = x.chunks_exact_mut(LANES);
    for chunk in c.by_ref() {
        for l in 0..LANES {
            chunk[l] = exp_nonpositive((chunk[l] - shift) * scale);
            acc[l] += chunk[l];
        }
    }
    let mut tail = 0f32;
    for v in c.into_remainder() {
        *v = exp_nonpositive((*v - shift) * scale);
        tail += *v;
    }
    acc.iter().sum::<f32>() + tail
}

/// Per-thread rows: keys, values and their gradients transposed (hd × S), and two score rows.
struct Scratch {
    kt: Vec<f32>,
    vt: Vec<f32>,
    dkt: Vec<f32>,
    dvt: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Scratch {
    fn new(s: usize, hd: usize, backward: bool) -> Self {
        let g = if backward { hd * s } else { 0 };
        Self {
            kt: vec![0.0; hd * s],
            vt: vec![0.0; hd * s],
            dkt: vec![0.0; g],
            dvt: vec![0.0; g],
            a: vec![0.0; s],
            b: vec![0.0; s],
        }
    }
}

/// One head's `q` (T × hd), `k`, `v` (S × hd), output gradient (T × hd) and probabilities (T × S).
type HeadInputs<'a> = (&'a [f32], &'a [f32], &'a [f32], &'a [f32], &'a [f32]);

/// What every (window, head) of one call shares. All inner loops run over a contiguous range
/// of keys, with keys and values transposed once per head.
struct Kernel<'a> {
    mask: &'a AttnMask,
    scale: f32,
    /// Seed, `keep · 2^32` and `1 / keep`.
    drop: Option<(u64, u64, f32)>,
    h: usize,
    t: usize,
    s: usize,
    hd: usize,
}

impl Kernel<'_> {
    /// Dropout multiplier of element `idx` (0 or `1 / keep`; 1 without dropout).
    #[inline(always)]
    fn keep(&self, idx: u64) -> f32 {
        match self.drop {
            Some((seed, threshold, scale)) if kept(seed, idx, threshold) => scale,
            Some(_) => 0.0,
            None => 1.0,
        }
    }

    /// Head `bh`: `q` (T × hd), `k`, `v` (S × hd) → `o` (T × hd) and probabilities `p` (T × S).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn forward_head(
        &self,
        bh: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        o: &mut [f32],
        p: &mut [f32],
        sc: &mut Scratch,
    ) {
        let (t, s, hd) = (self.t, self.s, self.hd);
        // Few queries (incremental decoding): transposing the keys and values would cost as
        // much as the attention itself, so rows of keys and values are used as they are.
        let transposed = t >= TRANSPOSE_MIN_QUERIES;
        if transposed {
            transpose_into(k, s, hd, &mut sc.kt);
            transpose_into(v, s, hd, &mut sc.vt);
        }
        for i in 0..t {
            let (lo, hi) = self.mask.range(bh / self.h, i);
            let qi = &q[i * hd..(i + 1) * hd];
            let scores = &mut p[i * s + lo..=i * s + hi];
            if transposed {
                scores.fill(0.0);
                for (d, &qd) in qi.iter().enumerate() {
                    axpy(scores, qd, &sc.kt[d * s + lo..=d * s + hi]);
                }
            } else {
                for (x, kj) in scores.iter_mut().zip(k[lo * hd..].chunks_exact(hd)) {
                    *x = dot(qi, kj);
                }
            }
            let sum = exp_shifted(scores, max(scores), self.scale);
            let inv = 1.0 / sum;
            scores.iter_mut().for_each(|x| *x *= inv);
            let w: &[f32] = if self.drop.is_some() {
                let base = ((bh * t + i) * s) as u64;
                for j in lo..=hi {
                    sc.a[j] = scores[j - lo] * self.keep(base + j as u64);
                }
                &sc.a[lo..=hi]
            } else {
                scores
            };
            let oi = &mut o[i * hd..(i + 1) * hd];
            if transposed {
                for (d, x) in oi.iter_mut().enumerate() {
                    *x = dot(w, &sc.vt[d * s + lo..=d * s + hi]);
                }
            } else {
                oi.fill(0.0);
                for (&wj, vj) in w.iter().zip(v[lo * hd..].chunks_exact(hd)) {
                    axpy(oi, wj, vj);
                }
            }
        }
    }

    /// Gradients of head `bh` from the output gradient `g` (T × hd) and the forward's `p`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn backward_head(
        &self,
        bh: usize,
        (q, k, v, g, p): HeadInputs<'_>,
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
        sc: &mut Scratch,
    ) {
        let (t, s, hd) = (self.t, self.s, self.hd);
        transpose_into(k, s, hd, &mut sc.kt);
        transpose_into(v, s, hd, &mut sc.vt);
        sc.dkt.fill(0.0);
        sc.dvt.fill(0.0);
        for i in 0..t {
            let (lo, hi) = self.mask.range(bh / self.h, i);
            let (qi, gi) = (&q[i * hd..(i + 1) * hd], &g[i * hd..(i + 1) * hd]);
            let pr = &p[i * s + lo..=i * s + hi];
            // dPd = g·vᵀ over the allowed keys.
            let dp = &mut sc.a[lo..=hi];
            dp.fill(0.0);
            for (d, &gd) in gi.iter().enumerate() {
                axpy(dp, gd, &sc.vt[d * s + lo..=d * s + hi]);
            }
            // Through dropout: weights Pd = P·m give dV += Pd·g; dP = dPd·m.
            let w: &[f32] = if self.drop.is_some() {
                let base = ((bh * t + i) * s) as u64;
                let w = &mut sc.b[lo..=hi];
                for (jj, (w, dp)) in w.iter_mut().zip(dp.iter_mut()).enumerate() {
                    let m = self.keep(base + (lo + jj) as u64);
                    *w = pr[jj] * m;
                    *dp *= m;
                }
                w
            } else {
                pr
            };
            for (d, &gd) in gi.iter().enumerate() {
                axpy(&mut sc.dvt[d * s + lo..=d * s + hi], gd, w);
            }
            // Through softmax and the score scale: dS = P·(dP − Σ P·dP)·scale.
            let c = dot(pr, dp);
            dp.iter_mut()
                .zip(pr)
                .for_each(|(x, &pj)| *x = pj * (*x - c) * self.scale);
            for (d, x) in dq[i * hd..(i + 1) * hd].iter_mut().enumerate() {
                *x = dot(dp, &sc.kt[d * s + lo..=d * s + hi]);
            }
            for (d, &qd) in qi.iter().enumerate() {
                axpy(&mut sc.dkt[d * s + lo..=d * s + hi], qd, dp);
            }
        }
        transpose_back(&sc.dkt, s, hd, dk);
        transpose_back(&sc.dvt, s, hd, dv);
    }
}

/// The same kernels compiled for AVX2 (chosen at run time): the loops above vectorise eight
/// wide instead of SSE2's four. The fixed-order reductions make both give the same bits.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Kernel, Scratch};

    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn forward_head(
        kernel: &Kernel<'_>,
        bh: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        o: &mut [f32],
        p: &mut [f32],
        sc: &mut Scratch,
    ) {
        kernel.forward_head(bh, q, k, v, o, p, sc)
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn backward_head(
        kernel: &Kernel<'_>,
        bh: usize,
        inputs: super::HeadInputs<'_>,
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
        sc: &mut Scratch,
    ) {
        kernel.backward_head(bh, inputs, dq, dk, dv, sc)
    }
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Probability buffers handed back by finished backward passes, for the next forwards to
/// reuse: a training step needs one `(B, H, T, S)` buffer per layer (tens of MB at long
/// contexts), and a fresh one each time costs more in page faults than the kernel's arithmetic.
static PROBS_POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// At most this many buffers are kept (a few models' layers).
const PROBS_POOL_MAX: usize = 16;

/// A buffer of `n` elements. Its contents are not cleared: the kernels write every probability
/// they later read (the allowed range of each row) before reading it.
fn take_probs_buffer(n: usize) -> Vec<f32> {
    let reused = PROBS_POOL.lock().ok().and_then(|mut pool| {
        let i = pool.iter().position(|b| b.len() == n)?;
        Some(pool.swap_remove(i))
    });
    reused.unwrap_or_else(|| vec![0f32; n])
}

fn give_back_probs_buffer(buf: Vec<f32>) {
    if let Ok(mut pool) = PROBS_POOL.lock() {
        if pool.len() >= PROBS_POOL_MAX {
            pool.remove(0);
        }
        pool.push(buf);
    }
}

/// The fused CPU op. The forward keeps the softmax probabilities (before dropout) for the
/// backward.
struct FusedAttention {
    scale: f32,
    mask: AttnMask,
    dropout: Option<AttnDropout>,
    probs: Mutex<Option<Vec<f32>>>,
}

impl FusedAttention {
    fn kernel(&self, q: &Shape, k: &Shape, v: &Shape) -> candle_core::Result<Kernel<'_>> {
        let (b, h, t, hd) = q.dims4()?;
        let (b2, h2, s, hd2) = k.dims4()?;
        if (b2, h2, hd2) != (b, h, hd) || v != k {
            candle_core::bail!("fused attention: q {q:?}, k {k:?} and v {v:?} do not match")
        }
        if self.mask.first_pos.len() != b || self.mask.past + t > s {
            candle_core::bail!(
                "fused attention: mask for {} windows and {} past tokens, inputs {b} windows, {t} queries, {s} keys",
                self.mask.first_pos.len(),
                self.mask.past
            )
        }
        Ok(Kernel {
            mask: &self.mask,
            scale: self.scale,
            drop: self.dropout.map(|d| {
                let (threshold, scale) = d.threshold();
                (d.seed, threshold, scale)
            }),
            h,
            t,
            s,
            hd,
        })
    }
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-causal-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let kn = self.kernel(l1.shape(), l2.shape(), l3.shape())?;
        let (t, s, hd) = (kn.t, kn.s, kn.hd);
        let (q, k, v) = (
            contiguous_f32(s1, l1, "fused attention: q")?,
            contiguous_f32(s2, l2, "fused attention: k")?,
            contiguous_f32(s3, l3, "fused attention: v")?,
        );
        let heads = q.len() / (t * hd);
        let mut out = vec![0f32; heads * t * hd];
        let mut probs = take_probs_buffer(heads * t * s);
        let avx2 = has_avx2();
        out.par_chunks_mut(t * hd)
            .zip(probs.par_chunks_mut(t * s))
            .enumerate()
            .for_each_init(
                || Scratch::new(s, hd, false),
                |sc, (bh, (o, p))| {
                    let qh = &q[bh * t * hd..(bh + 1) * t * hd];
                    let (kh, vh) = (
                        &k[bh * s * hd..(bh + 1) * s * hd],
                        &v[bh * s * hd..(bh + 1) * s * hd],
                    );
                    #[cfg(target_arch = "x86_64")]
                    if avx2 {
                        // SAFETY: the CPU supports AVX2 (checked at run time above).
                        unsafe { avx2::forward_head(&kn, bh, qh, kh, vh, o, p, sc) };
                        return;
                    }
                    let _ = avx2;
                    kn.forward_head(bh, qh, kh, vh, o, p, sc);
                },
            );
        if let Ok(mut slot) = self.probs.lock() {
            *slot = Some(probs);
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let kn = self.kernel(q.shape(), k.shape(), v.shape())?;
        let (t, s, hd) = (kn.t, kn.s, kn.hd);
        let probs = match self.probs.lock() {
            Ok(mut slot) => slot.take(),
            Err(_) => None,
        };
        let Some(probs) = probs else {
            candle_core::bail!("fused attention: backward without the forward's probabilities")
        };
        let grad = grad.contiguous()?;
        let read = |t| CpuF32::new(t, "fused attention backward");
        let (qr, kr, vr, gr) = (read(q)?, read(k)?, read(v)?, read(&grad)?);
        let (qv, kv, vv, gv) = (qr.as_slice(), kr.as_slice(), vr.as_slice(), gr.as_slice());
        let heads = qv.len() / (t * hd);
        let mut dq = vec![0f32; heads * t * hd];
        let mut dk = vec![0f32; heads * s * hd];
        let mut dv = vec![0f32; heads * s * hd];
        let avx2 = has_avx2();
        dq.par_chunks_mut(t * hd)
            .zip(dk.par_chunks_mut(s * hd))
            .zip(dv.par_chunks_mut(s * hd))
            .enumerate()
            .for_each_init(
                || Scratch::new(s, hd, true),
                |sc, (bh, ((dqh, dkh), dvh))| {
                    let (tq, sk) = (
                        bh * t * hd..(bh + 1) * t * hd,
                        bh * s * hd..(bh + 1) * s * hd,
                    );
                    let inputs = (
                        &qv[tq.clone()],
                        &kv[sk.clone()],
                        &vv[sk],
                        &gv[tq],
                        &probs[bh * t * s..(bh + 1) * t * s],
                    );
                    #[cfg(target_arch = "x86_64")]
                    if avx2 {
                        // SAFETY: the CPU supports AVX2 (checked at run time above).
                        unsafe { avx2::backward_head(&kn, bh, inputs, dqh, dkh, dvh, sc) };
                        return;
                    }
                    let _ = avx2;
                    kn.backward_head(bh, inputs, dqh, dkh, dvh, sc);
                },
            );
        give_back_probs_buffer(probs);
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
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
        let scale = 1.0 / (hd as f64).sqrt();
        // A fixed random weighting of the outputs, so every output element gets its own gradient.
        let w = random((b, h, t, hd), &mut rng);
        let fused = attention(&q, &k, &v, scale, &mask, drop).unwrap();
        let reference = reference_attention(&q, &k, &v, scale, &mask, drop).unwrap();
        let (output, grads) =
            reference_differences(&fused, &reference, w.as_tensor(), &[&q, &k, &v]).unwrap();
        assert!(output < 1e-5, "forward differs by {output}");
        for (name, d) in ["q", "k", "v"].into_iter().zip(grads) {
            assert!(d < 1e-4, "d{name} differs by {d}");
        }
    }

    #[test]
    fn fused_matches_tensor_ops_without_dropout() {
        check(3, 2, 7, 0, 4, None);
        check(3, 2, TRANSPOSE_MIN_QUERIES + 3, 0, 4, None);
    }

    #[test]
    fn fused_matches_tensor_ops_with_cache_offset_and_dropout() {
        check(2, 3, 5, 4, 8, Some(0.3));
        check(2, 2, TRANSPOSE_MIN_QUERIES + 4, 3, 8, Some(0.2));
        check(1, 1, 1, 6, 16, Some(0.5));
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
