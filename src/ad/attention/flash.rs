//! The CPU attention op: tiled, with an online softmax, never holding a `T × S` score matrix.
//!
//! **Forward**, per (window, head, tile of [`BR`] queries), in parallel: the keys the tile may
//! see, in tiles of [`BC`]; per key tile the scores `Q·Kᵀ` (a `BR × BC` block in L1), then per
//! query row the running maximum `m`, the running sum `l` of `e^{score − m}` (rescaling the
//! partial output when `m` grows) and `O += P·V`. At the end `O /= l` and the row's
//! log-sum-exp `m + ln l` is kept: `T` floats per head instead of `T × S` probabilities.
//! With fewer than [`TILED_MIN_QUERIES`] queries (incremental decoding against a KV cache) each
//! query is one pass over its keys instead, reading the cache's rows where they lie.
//!
//! **Backward**, per (window, head), in parallel, FlashAttention-2's order: for each key tile,
//! for each query tile that sees it, the probabilities are recomputed from the scores and the
//! kept log-sum-exp, and `dV += Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ∘ (dP − D)` with
//! `D = rowsum(dO ∘ O)`, `dQ += dS·K`, `dK += dSᵀ·Q`. With dropout mask `M` (see the module
//! above), `P` in the output is `P ∘ M`, so `dV` takes `(P ∘ M)ᵀ` and `dP` is multiplied by `M`;
//! `D` is unchanged, as `O` already holds the dropped weights.
//!
//! All products are small register-blocked tile products ([`super::tile::gemm_acc`]); the whole
//! kernel is compiled three times (portable, AVX2 + FMA, AVX-512) and the widest build the CPU
//! runs is chosen at run time.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::tile::{axpy, dot, exp_nonpositive, exp_shifted, gemm_acc, max, transpose};
use super::{kept, AttnDropout, AttnMask};
use crate::nn::host::{contiguous_f32, CpuF32};

/// Queries per tile.
pub(super) const BR: usize = 64;
/// Keys per tile.
pub(super) const BC: usize = 64;
/// From this many queries per call on, the forward runs in tiles; below it (decoding), row by
/// row.
pub(super) const TILED_MIN_QUERIES: usize = 8;

/// Whether `t` (B, H, S, hd) has contiguous rows, one after the other within each head, so that
/// the kernel can read it without a copy (a view of a preallocated KV cache is).
pub(super) fn rows_contiguous(t: &Tensor) -> bool {
    rows_layout(t.dims(), t.stride())
}

/// [`rows_contiguous`] on dimensions and strides.
fn rows_layout(dims: &[usize], stride: &[usize]) -> bool {
    dims.len() == 4 && stride[3] == 1 && (dims[2] <= 1 || stride[2] == dims[3])
}

/// Keys or values `(B, H, S, hd)` with rows as [`rows_contiguous`] requires.
struct HeadRows<'a> {
    data: &'a [f32],
    stride_b: usize,
    stride_h: usize,
    h: usize,
    len: usize,
}

impl<'a> HeadRows<'a> {
    fn new(storage: &'a CpuStorage, layout: &Layout, what: &str) -> candle_core::Result<Self> {
        let (b, h, s, hd) = layout.shape().dims4()?;
        let st = layout.stride();
        if !rows_layout(layout.dims(), st) {
            candle_core::bail!("attention: {what} rows are not contiguous (strides {st:?})")
        }
        let CpuStorage::F32(all) = storage else {
            candle_core::bail!("attention: {what} is not f32")
        };
        let data = &all[layout.start_offset().min(all.len())..];
        let fits = b > 0 && h > 0 && (b - 1) * st[0] + (h - 1) * st[1] + s * hd <= data.len();
        if !fits {
            candle_core::bail!(
                "attention: {what} of shape {:?} does not fit its storage",
                layout.dims()
            )
        }
        Ok(Self {
            data,
            stride_b: st[0],
            stride_h: st[1],
            h,
            len: s * hd,
        })
    }

    /// The `S × hd` rows of head `bh` (window `bh / H`, head `bh % H`).
    fn head(&self, bh: usize) -> &'a [f32] {
        let off = (bh / self.h) * self.stride_b + (bh % self.h) * self.stride_h;
        &self.data[off..off + self.len]
    }
}

/// Per-thread tiles.
struct Scratch {
    /// Scores, then probabilities (`BR × BC`).
    s: Vec<f32>,
    /// Output-probability gradients, then score gradients (`BR × BC`).
    dp: Vec<f32>,
    /// Probabilities after dropout (`BR × BC`).
    pd: Vec<f32>,
    /// A transposed `BR × BC` tile (`BC × BR`).
    pt: Vec<f32>,
    /// Keys and values of one key tile, transposed (`hd × BC`).
    kt: Vec<f32>,
    vt: Vec<f32>,
    /// Running maximum and sum per query row.
    m: Vec<f32>,
    l: Vec<f32>,
    /// One query's scores over all its keys (decoding), or `D` per query (backward).
    row: Vec<f32>,
}

impl Scratch {
    /// Tiles for the tiled forward (`tiles`) and the backward (`backward`), and a row of `row`
    /// floats. Decoding needs only the row: rayon builds a scratch per piece of work it splits
    /// off, so unused tiles would be allocated (and zeroed) many times per call.
    fn new(hd: usize, row: usize, tiles: bool, backward: bool) -> Self {
        let n = |on: bool, len: usize| vec![0.0; if on { len } else { 0 }];
        Self {
            s: n(tiles, BR * BC),
            dp: n(backward, BR * BC),
            pd: n(backward, BR * BC),
            pt: n(backward, BC * BR),
            kt: n(tiles, hd * BC),
            vt: n(backward, hd * BC),
            m: n(tiles, BR),
            l: n(tiles, BR),
            row: vec![0.0; row],
        }
    }
}

/// What every (window, head) of one call shares.
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

/// Head `bh`'s inputs for the backward: `q`, `k`, `v`, output `o`, output gradient `g`, and
/// the forward's log-sum-exp per query.
struct HeadGrads<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    o: &'a [f32],
    g: &'a [f32],
    lse: &'a [f32],
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

    /// Index of (head `bh`, query `i`, key 0) in the `(B, H, T, S)` dropout stream.
    #[inline(always)]
    fn drop_base(&self, bh: usize, i: usize) -> u64 {
        ((bh * self.t + i) * self.s) as u64
    }

    /// Masks `prow`, query `i`'s scores against keys `j0..j1` of window `w`: zeroes the keys it
    /// may not see and returns the offset within the tile of the first one it may see and the
    /// allowed scores, or `None` (the whole row zeroed) when it sees none of them.
    #[inline(always)]
    fn allowed<'p>(
        &self,
        w: usize,
        i: usize,
        j0: usize,
        j1: usize,
        prow: &'p mut [f32],
    ) -> Option<(usize, &'p mut [f32])> {
        let (lo, hi) = self.mask.range(w, i);
        if lo >= j1 || hi < j0 {
            prow.fill(0.0);
            return None;
        }
        let (a, z) = (lo.max(j0) - j0, hi.min(j1 - 1) - j0);
        prow[..a].fill(0.0);
        prow[z + 1..].fill(0.0);
        Some((a, &mut prow[a..=z]))
    }

    /// Queries `i0..` of head `bh` (as many as `o` has rows), row by row: `q` (T × hd), `k`,
    /// `v` (S × hd) → `o`, and `lse` per query.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn forward_rows<const FMA: bool>(
        &self,
        bh: usize,
        i0: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        o: &mut [f32],
        lse: &mut [f32],
        sc: &mut Scratch,
    ) {
        let hd = self.hd;
        for (r, (oi, lse_i)) in o.chunks_exact_mut(hd).zip(lse.iter_mut()).enumerate() {
            let i = i0 + r;
            let (lo, hi) = self.mask.range(bh / self.h, i);
            let qi = &q[i * hd..(i + 1) * hd];
            let scores = &mut sc.row[lo..=hi];
            for (x, kj) in scores.iter_mut().zip(k[lo * hd..].chunks_exact(hd)) {
                *x = dot::<FMA>(qi, kj);
            }
            let m = max(scores) * self.scale;
            let sum = exp_shifted(scores, self.scale, m);
            *lse_i = m + sum.ln();
            let inv = 1.0 / sum;
            let base = self.drop_base(bh, i);
            oi.fill(0.0);
            for (j, (&p, vj)) in scores.iter().zip(v[lo * hd..].chunks_exact(hd)).enumerate() {
                let w = if self.drop.is_some() {
                    p * inv * self.keep(base + (lo + j) as u64)
                } else {
                    p * inv
                };
                axpy::<FMA>(oi, w, vj);
            }
        }
    }

    /// Query tile `i0..i0 + rows` of head `bh` (`rows` = rows of `o`): `q` (T × hd), `k`, `v`
    /// (S × hd) → `o` (rows × hd), and `lse` per query.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn forward_tile<const FMA: bool>(
        &self,
        bh: usize,
        i0: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        o: &mut [f32],
        lse: &mut [f32],
        sc: &mut Scratch,
    ) {
        let (hd, w) = (self.hd, bh / self.h);
        let rows = o.len() / hd;
        sc.m[..rows].fill(f32::NEG_INFINITY);
        sc.l[..rows].fill(0.0);
        o.fill(0.0);
        let lo_min = (0..rows)
            .map(|r| self.mask.range(w, i0 + r).0)
            .min()
            .unwrap_or(0);
        let hi_max = self.mask.range(w, i0 + rows - 1).1;
        let mut j0 = lo_min / BC * BC;
        while j0 <= hi_max {
            let j1 = (j0 + BC).min(hi_max + 1);
            let nc = j1 - j0;
            transpose(&k[j0 * hd..], nc, hd, hd, &mut sc.kt, BC);
            let st = &mut sc.s[..rows * BC];
            st.fill(0.0);
            gemm_acc::<FMA>(rows, nc, hd, &q[i0 * hd..], hd, &sc.kt, BC, st, BC);
            for r in 0..rows {
                let prow = &mut st[r * BC..r * BC + nc];
                let Some((a, seg)) = self.allowed(w, i0 + r, j0, j1, prow) else {
                    continue;
                };
                let m_new = sc.m[r].max(max(seg) * self.scale);
                let sum = exp_shifted(seg, self.scale, m_new);
                let corr = exp_nonpositive(sc.m[r] - m_new);
                sc.l[r] = sc.l[r] * corr + sum;
                sc.m[r] = m_new;
                if corr != 1.0 {
                    o[r * hd..(r + 1) * hd].iter_mut().for_each(|x| *x *= corr);
                }
                if self.drop.is_some() {
                    let base = self.drop_base(bh, i0 + r) + (j0 + a) as u64;
                    for (jj, p) in seg.iter_mut().enumerate() {
                        *p *= self.keep(base + jj as u64);
                    }
                }
            }
            gemm_acc::<FMA>(rows, hd, nc, st, BC, &v[j0 * hd..], hd, o, hd);
            j0 = j1;
        }
        for r in 0..rows {
            let inv = 1.0 / sc.l[r];
            o[r * hd..(r + 1) * hd].iter_mut().for_each(|x| *x *= inv);
            lse[r] = sc.m[r] + sc.l[r].ln();
        }
    }

    /// Gradients of head `bh` into `dq` (T × hd), `dk` and `dv` (S × hd).
    #[inline(always)]
    fn backward_head<const FMA: bool>(
        &self,
        bh: usize,
        x: &HeadGrads<'_>,
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
        sc: &mut Scratch,
    ) {
        let (t, s, hd, w) = (self.t, self.s, self.hd, bh / self.h);
        for (i, d) in sc.row[..t].iter_mut().enumerate() {
            *d = dot::<FMA>(&x.g[i * hd..(i + 1) * hd], &x.o[i * hd..(i + 1) * hd]);
        }
        dq.fill(0.0);
        dk.fill(0.0);
        dv.fill(0.0);
        for j0 in (0..s).step_by(BC) {
            let j1 = (j0 + BC).min(s);
            let nc = j1 - j0;
            // Queries before `j0 − past` cannot see these keys (causality).
            let first = j0.saturating_sub(self.mask.past) / BR * BR;
            if first >= t {
                continue;
            }
            transpose(&x.k[j0 * hd..], nc, hd, hd, &mut sc.kt, BC);
            transpose(&x.v[j0 * hd..], nc, hd, hd, &mut sc.vt, BC);
            let (dk_j, dv_j) = (&mut dk[j0 * hd..j1 * hd], &mut dv[j0 * hd..j1 * hd]);
            for i0 in (first..t).step_by(BR) {
                let rows = (t - i0).min(BR);
                // P, recomputed from the scores and the forward's log-sum-exp.
                let p = &mut sc.s[..rows * BC];
                p.fill(0.0);
                gemm_acc::<FMA>(rows, nc, hd, &x.q[i0 * hd..], hd, &sc.kt, BC, p, BC);
                let mut seen = false;
                for r in 0..rows {
                    let prow = &mut p[r * BC..r * BC + nc];
                    let Some((_, seg)) = self.allowed(w, i0 + r, j0, j1, prow) else {
                        continue;
                    };
                    seen = true;
                    let shift = x.lse[i0 + r];
                    for v in seg {
                        *v = exp_nonpositive(*v * self.scale - shift);
                    }
                }
                if !seen {
                    continue;
                }
                // dP = dO·Vᵀ.
                let dp = &mut sc.dp[..rows * BC];
                dp.fill(0.0);
                gemm_acc::<FMA>(rows, nc, hd, &x.g[i0 * hd..], hd, &sc.vt, BC, dp, BC);
                // Through dropout: the output used P ∘ M; dP ∘= M.
                let pd: &[f32] = if self.drop.is_some() {
                    for r in 0..rows {
                        let base = self.drop_base(bh, i0 + r) + j0 as u64;
                        for jj in 0..nc {
                            let m = self.keep(base + jj as u64);
                            sc.pd[r * BC + jj] = p[r * BC + jj] * m;
                            dp[r * BC + jj] *= m;
                        }
                    }
                    &sc.pd[..rows * BC]
                } else {
                    p
                };
                // dV += (P ∘ M)ᵀ·dO.
                transpose(pd, rows, nc, BC, &mut sc.pt, BR);
                gemm_acc::<FMA>(nc, hd, rows, &sc.pt, BR, &x.g[i0 * hd..], hd, dv_j, hd);
                // dS = P ∘ (dP − D) · scale (the scale of the scores folded in).
                for r in 0..rows {
                    let d = sc.row[i0 + r];
                    let (pr, dr) = (&p[r * BC..r * BC + nc], &mut dp[r * BC..r * BC + nc]);
                    dr.iter_mut()
                        .zip(pr)
                        .for_each(|(g, &pj)| *g = pj * (*g - d) * self.scale);
                }
                // dQ += dS·K, dK += dSᵀ·Q.
                gemm_acc::<FMA>(
                    rows,
                    hd,
                    nc,
                    dp,
                    BC,
                    &x.k[j0 * hd..],
                    hd,
                    &mut dq[i0 * hd..],
                    hd,
                );
                transpose(dp, rows, nc, BC, &mut sc.pt, BR);
                gemm_acc::<FMA>(nc, hd, rows, &sc.pt, BR, &x.q[i0 * hd..], hd, dk_j, hd);
            }
        }
    }
}

/// The kernels compiled with wider vector extensions, chosen at run time: AVX2 + FMA, and
/// AVX-512 (the same code; the tile products' 16-wide blocks become one register).
macro_rules! fast_kernels {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            use super::{HeadGrads, Kernel, Scratch};

            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            pub(super) unsafe fn forward(
                kernel: &Kernel<'_>,
                tiled: bool,
                bh: usize,
                i0: usize,
                q: &[f32],
                k: &[f32],
                v: &[f32],
                o: &mut [f32],
                lse: &mut [f32],
                sc: &mut Scratch,
            ) {
                if tiled {
                    kernel.forward_tile::<true>(bh, i0, q, k, v, o, lse, sc)
                } else {
                    kernel.forward_rows::<true>(bh, i0, q, k, v, o, lse, sc)
                }
            }

            #[target_feature(enable = $features)]
            pub(super) unsafe fn backward(
                kernel: &Kernel<'_>,
                bh: usize,
                x: &HeadGrads<'_>,
                dq: &mut [f32],
                dk: &mut [f32],
                dv: &mut [f32],
                sc: &mut Scratch,
            ) {
                kernel.backward_head::<true>(bh, x, dq, dk, dv, sc)
            }
        }
    };
}

fast_kernels!(avx2, "avx2,fma");
fast_kernels!(avx512, "avx512f,avx2,fma");

/// Which build of the kernels runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Isa {
    Portable,
    Avx2,
    Avx512,
}

impl Isa {
    /// Every build this CPU can run.
    #[cfg(test)]
    pub(super) fn available() -> Vec<Isa> {
        let best = Self::detect();
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&i| i == Isa::Portable || i == Isa::Avx2 && best != Isa::Portable || i == best)
            .collect()
    }

    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                if std::is_x86_feature_detected!("avx512f") {
                    return Isa::Avx512;
                }
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// The build to run: the widest the CPU has (tests may pick another).
    fn current() -> Isa {
        #[cfg(test)]
        if let Some(isa) = FORCE_ISA.with(|f| f.get()) {
            return isa;
        }
        static DETECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(Self::detect)
    }
}

#[cfg(test)]
thread_local! {
    /// Tests set this to run a given build of the kernels.
    pub(super) static FORCE_ISA: std::cell::Cell<Option<Isa>> = const { std::cell::Cell::new(None) };
}

/// The CPU op. The forward keeps each query's log-sum-exp for the backward.
pub(super) struct FlashAttention {
    scale: f32,
    mask: AttnMask,
    dropout: Option<AttnDropout>,
    lse: Mutex<Option<Vec<f32>>>,
}

impl FlashAttention {
    pub(super) fn new(scale: f32, mask: AttnMask, dropout: Option<AttnDropout>) -> Self {
        Self {
            scale,
            mask,
            dropout,
            lse: Mutex::new(None),
        }
    }

    fn kernel(&self, q: &Shape, k: &Shape, v: &Shape) -> candle_core::Result<Kernel<'_>> {
        let (b, h, t, hd) = q.dims4()?;
        let (b2, h2, s, hd2) = k.dims4()?;
        if (b2, h2, hd2) != (b, h, hd) || v != k {
            candle_core::bail!("attention: q {q:?}, k {k:?} and v {v:?} do not match")
        }
        if self.mask.first_pos.len() != b || self.mask.past + t > s {
            candle_core::bail!(
                "attention: mask for {} windows and {} past tokens, inputs {b} windows, {t} queries, {s} keys",
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

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "tiled-causal-attention"
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
        let q = contiguous_f32(s1, l1, "attention: q")?;
        let (k, v) = (HeadRows::new(s2, l2, "k")?, HeadRows::new(s3, l3, "v")?);
        let heads = q.len() / (t * hd).max(1);
        if heads == 0 || t == 0 || hd == 0 {
            return Ok((CpuStorage::F32(vec![0f32; q.len()]), l1.shape().clone()));
        }
        let mut out = vec![0f32; heads * t * hd];
        let mut lse = vec![0f32; heads * t];
        let isa = Isa::current();
        let tiled = t >= TILED_MIN_QUERIES;
        // Work items: (head, tile of queries); decoding takes a head's queries in one item.
        let rows = if tiled { BR } else { t.max(1) };
        out.par_chunks_mut(t * hd)
            .zip(lse.par_chunks_mut(t))
            .enumerate()
            .flat_map(|(bh, (o, l))| {
                o.par_chunks_mut(rows * hd)
                    .zip(l.par_chunks_mut(rows))
                    .enumerate()
                    .map(move |(tile, x)| (bh, tile * rows, x))
            })
            .for_each_init(
                || Scratch::new(hd, if tiled { 0 } else { s }, tiled, false),
                |sc, (bh, i0, (o, l))| {
                    let (qh, kh, vh) = (&q[bh * t * hd..(bh + 1) * t * hd], k.head(bh), v.head(bh));
                    // SAFETY: `isa` names only extensions the CPU has (checked at run time).
                    #[cfg(target_arch = "x86_64")]
                    match isa {
                        Isa::Avx512 => {
                            return unsafe {
                                avx512::forward(&kn, tiled, bh, i0, qh, kh, vh, o, l, sc)
                            }
                        }
                        Isa::Avx2 => {
                            return unsafe {
                                avx2::forward(&kn, tiled, bh, i0, qh, kh, vh, o, l, sc)
                            }
                        }
                        Isa::Portable => {}
                    }
                    let _ = isa;
                    if tiled {
                        kn.forward_tile::<false>(bh, i0, qh, kh, vh, o, l, sc)
                    } else {
                        kn.forward_rows::<false>(bh, i0, qh, kh, vh, o, l, sc)
                    }
                },
            );
        if let Ok(mut slot) = self.lse.lock() {
            *slot = Some(lse);
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let kn = self.kernel(q.shape(), k.shape(), v.shape())?;
        let (t, s, hd) = (kn.t, kn.s, kn.hd);
        let lse = match self.lse.lock() {
            Ok(mut slot) => slot.take(),
            Err(_) => None,
        };
        let Some(lse) = lse else {
            candle_core::bail!("attention: backward without the forward's log-sum-exp")
        };
        let (k, v, res, grad) = (
            k.contiguous()?,
            v.contiguous()?,
            res.contiguous()?,
            grad.contiguous()?,
        );
        let read = |t| CpuF32::new(t, "attention backward");
        let (qr, kr, vr, or, gr) = (read(q)?, read(&k)?, read(&v)?, read(&res)?, read(&grad)?);
        let (qv, kv, vv, ov, gv) = (
            qr.as_slice(),
            kr.as_slice(),
            vr.as_slice(),
            or.as_slice(),
            gr.as_slice(),
        );
        let heads = qv.len() / (t * hd).max(1);
        let dev = q.device();
        if heads == 0 || t == 0 || hd == 0 {
            return Ok((
                Some(q.zeros_like()?),
                Some(k.zeros_like()?),
                Some(v.zeros_like()?),
            ));
        }
        let mut dq = vec![0f32; heads * t * hd];
        let mut dk = vec![0f32; heads * s * hd];
        let mut dv = vec![0f32; heads * s * hd];
        let isa = Isa::current();
        dq.par_chunks_mut(t * hd)
            .zip(dk.par_chunks_mut(s * hd))
            .zip(dv.par_chunks_mut(s * hd))
            .enumerate()
            .for_each_init(
                || Scratch::new(hd, t, true, true),
                |sc, (bh, ((dqh, dkh), dvh))| {
                    let (tq, sk) = (
                        bh * t * hd..(bh + 1) * t * hd,
                        bh * s * hd..(bh + 1) * s * hd,
                    );
                    let x = HeadGrads {
                        q: &qv[tq.clone()],
                        k: &kv[sk.clone()],
                        v: &vv[sk],
                        o: &ov[tq.clone()],
                        g: &gv[tq],
                        lse: &lse[bh * t..(bh + 1) * t],
                    };
                    // SAFETY: `isa` names only extensions the CPU has (checked at run time).
                    #[cfg(target_arch = "x86_64")]
                    match isa {
                        Isa::Avx512 => {
                            return unsafe { avx512::backward(&kn, bh, &x, dqh, dkh, dvh, sc) }
                        }
                        Isa::Avx2 => {
                            return unsafe { avx2::backward(&kn, bh, &x, dqh, dkh, dvh, sc) }
                        }
                        Isa::Portable => {}
                    }
                    let _ = isa;
                    kn.backward_head::<false>(bh, &x, dqh, dkh, dvh, sc);
                },
            );
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}
