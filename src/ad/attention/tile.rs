//! The dense pieces the tiled attention is built from: `C += A·B` on tiles that sit in cache,
//! blocked in registers, and the vector loops of the online softmax.
//!
//! Everything is `#[inline(always)]` and generic over `FMA`, so that [`super::flash`] compiles
//! each kernel twice: once as written (any x86-64 or other CPU) and once inside a function with
//! AVX2 and FMA enabled, where the fixed-size accumulator blocks below become eight-wide fused
//! multiply-adds. The two give results equal to rounding, not bit for bit (a fused
//! multiply-add rounds once).

pub(super) use crate::nn::rowwise::{dot, madd};

/// Rows of `A` per register block.
const MR: usize = 4;
/// Columns of `B` per register block (two AVX registers).
const NR: usize = 16;

/// One `rows × W` block of `C += A·B`: `rows ≤ MR` rows of `A` from `a` (stride `lda`), columns
/// `j..j + W` of `B` (stride `ldb`), depth `k`.
///
/// # Safety
/// Every index read or written must be in bounds; [`gemm_acc`] checks that once per call.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block<const FMA: bool, const R: usize, const W: usize>(
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    j: usize,
    c: &mut [f32],
    ldc: usize,
) {
    let mut acc = [[0f32; W]; R];
    for p in 0..k {
        let brow: [f32; W] =
            std::ptr::read_unaligned(b.as_ptr().add(p * ldb + j) as *const [f32; W]);
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let av = *a.get_unchecked(r * lda + p);
            for x in 0..W {
                acc_r[x] = madd::<FMA>(av, brow[x], acc_r[x]);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        let row = c.get_unchecked_mut(r * ldc + j..r * ldc + j + W);
        for x in 0..W {
            row[x] += acc_r[x];
        }
    }
}

/// `C += A·B` for row-major `A` (`m × k`, row stride `lda`), `B` (`k × n`, `ldb`) and `C`
/// (`m × n`, `ldc`): blocks of 4 rows × 16 columns held in registers over the whole depth, then
/// 8 columns, then single columns at the right edge. Tiles are small (at most 64 × 64 here), so
/// no packing: the operands stay in L1.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::int_plus_one)] // `j + W <= n` for every width W
pub(super) fn gemm_acc<const FMA: bool>(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(
        lda >= k && ldb >= n && ldc >= n,
        "tile gemm: strides {lda}, {ldb}, {ldc} for {m} × {k} · {k} × {n}"
    );
    assert!(
        (m - 1) * lda + k <= a.len()
            && (k - 1) * ldb + n <= b.len()
            && (m - 1) * ldc + n <= c.len(),
        "tile gemm: operands of {}, {}, {} elements for {m} × {k} · {k} × {n}",
        a.len(),
        b.len(),
        c.len()
    );
    let mut i = 0;
    while i < m {
        let rows = (m - i).min(MR);
        let (ai, ci) = (&a[i * lda..], &mut c[i * ldc..]);
        // SAFETY: rows `i..i + rows` of A and C and columns `j..j + W ≤ n` of B and C are in
        // bounds by the checks above; every block reads `k` rows of B.
        unsafe {
            let mut j = 0;
            macro_rules! blocks {
                ($w:expr) => {
                    while j + $w <= n {
                        match rows {
                            4 => block::<FMA, 4, $w>(k, ai, lda, b, ldb, j, ci, ldc),
                            3 => block::<FMA, 3, $w>(k, ai, lda, b, ldb, j, ci, ldc),
                            2 => block::<FMA, 2, $w>(k, ai, lda, b, ldb, j, ci, ldc),
                            _ => block::<FMA, 1, $w>(k, ai, lda, b, ldb, j, ci, ldc),
                        }
                        j += $w;
                    }
                };
            }
            blocks!(NR);
            blocks!(8);
            blocks!(1);
        }
        i += rows;
    }
}

/// The reductions below keep eight partial sums and add them in a fixed order, so they
/// vectorise.
const LANES: usize = 8;

/// `y += a·x`.
#[inline(always)]
pub(super) fn axpy<const FMA: bool>(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut()
        .zip(x)
        .for_each(|(y, &x)| *y = madd::<FMA>(a, x, *y));
}

#[inline(always)]
pub(super) fn max(a: &[f32]) -> f32 {
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
/// bits. Branch-free, so loops over it vectorise (libm's `expf` is a scalar call). Below −87
/// (and at −∞) it returns e^−87 ≈ 1.6e-38 rather than 0.
#[inline(always)]
pub(super) fn exp_nonpositive(x: f32) -> f32 {
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

/// `x ← e^{x·scale − shift}`; returns the sum. `shift` is at least the largest `x·scale`.
#[inline(always)]
pub(super) fn exp_shifted(x: &mut [f32], scale: f32, shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut c = x.chunks_exact_mut(LANES);
    for chunk in c.by_ref() {
        for l in 0..LANES {
            chunk[l] = exp_nonpositive(chunk[l] * scale - shift);
            acc[l] += chunk[l];
        }
    }
    let mut tail = 0f32;
    for v in c.into_remainder() {
        *v = exp_nonpositive(*v * scale - shift);
        tail += *v;
    }
    acc.iter().sum::<f32>() + tail
}

/// `dst` (`cols × rows`, row stride `ld_dst`) ← `src` (`rows × cols`, row stride `ld_src`)
/// transposed.
#[inline(always)]
pub(super) fn transpose(
    src: &[f32],
    rows: usize,
    cols: usize,
    ld_src: usize,
    dst: &mut [f32],
    ld_dst: usize,
) {
    for r in 0..rows {
        for (c, &x) in src[r * ld_src..r * ld_src + cols].iter().enumerate() {
            dst[c * ld_dst + r] = x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    /// Every block shape and edge (rows 1–4 left over, 16/8/1-wide column blocks), with strides
    /// wider than the operands and accumulation into what C held.
    #[test]
    fn gemm_matches_the_definition_on_every_edge() {
        let mut rng = crate::rng::Rng::seed_from_u64(3);
        for (m, n, k) in [
            (1, 1, 1),
            (4, 16, 3),
            (5, 17, 7),
            (7, 25, 32),
            (64, 64, 32),
            (3, 9, 1),
        ] {
            let (lda, ldb, ldc) = (k + 2, n + 3, n + 1);
            let a: Vec<f32> = (0..m * lda).map(|_| rng.normal() as f32).collect();
            let b: Vec<f32> = (0..k * ldb).map(|_| rng.normal() as f32).collect();
            let c0: Vec<f32> = (0..m * ldc).map(|_| rng.normal() as f32).collect();
            let dense = |x: &[f32], rows: usize, cols: usize, ld: usize| -> Vec<f32> {
                (0..rows)
                    .flat_map(|r| x[r * ld..r * ld + cols].to_vec())
                    .collect()
            };
            let want = naive(m, n, k, &dense(&a, m, k, lda), &dense(&b, k, n, ldb));
            for fma in [false, true] {
                let mut c = c0.clone();
                if fma {
                    gemm_acc::<true>(m, n, k, &a, lda, &b, ldb, &mut c, ldc);
                } else {
                    gemm_acc::<false>(m, n, k, &a, lda, &b, ldb, &mut c, ldc);
                }
                for i in 0..m {
                    for j in 0..ldc {
                        let got = c[i * ldc + j];
                        let expect = if j < n {
                            c0[i * ldc + j] + want[i * n + j]
                        } else {
                            c0[i * ldc + j]
                        };
                        assert!(
                            (got - expect).abs() < 1e-4,
                            "{m}×{n}×{k} fma {fma}: C[{i},{j}] = {got}, expected {expect}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn exp_is_accurate_on_the_softmax_range() {
        for i in 0..=2000 {
            let x = -(i as f32) * 0.04;
            let (got, want) = (exp_nonpositive(x), x.exp());
            assert!(
                (got - want).abs() <= 3e-7 * want + 1e-38,
                "exp({x}) = {got}, expected {want}"
            );
        }
        assert!(exp_nonpositive(f32::NEG_INFINITY) < 1e-37);
    }
}
