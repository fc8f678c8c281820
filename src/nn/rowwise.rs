//! The row-wise steps of SimbaV2's hyperspherical blocks as single CPU passes.
//!
//! Written from tensor ops, `l2norm(x)` is five ops forward (square, row sum, square root,
//! floor at 1e-8, divide) and about ten backward, each a pass over the activations and a fresh
//! buffer; a per-dimension scaler `x ⊙ s` went through a rank-1 product `1 · sᵀ` so that its
//! gradient would be a product too. On the CPU [`l2norm`], [`scale_cols`] and [`lerp_l2norm`]
//! (the LERP residual with the normalisation after it) are one op each,
//! forward and backward written by hand (one or two passes); elsewhere (CUDA) the tensor-op
//! formulations run, and are what the ops are tested against.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor, D};

use crate::nn::host::{self, contiguous_f32, CpuF32};

/// The floor of SimbaV2's `l2norm` denominator.
const EPS: f32 = 1e-8;

/// `x / max(‖x‖, 1e-8)` over the last dimension.
pub fn l2norm(x: &Tensor) -> candle_core::Result<Tensor> {
    if host::is_host_f32(x) && x.rank() >= 1 && x.dim(D::Minus1)? > 0 {
        x.apply_op1(L2Norm)
    } else {
        reference_l2norm(x)
    }
}

/// [`l2norm`] from tensor ops (any device).
pub fn reference_l2norm(x: &Tensor) -> candle_core::Result<Tensor> {
    let n = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .maximum(EPS as f64)?;
    x.broadcast_div(&n)
}

/// `x ⊙ v` for `x` `(rows, d)` and `v` `[d]` (each column scaled), then ReLU if `relu`.
pub fn scale_cols(x: &Tensor, v: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
    let (_, d) = x.dims2()?;
    if v.dims() != [d] {
        candle_core::bail!(
            "scale_cols: a vector of {d} scales expected, found shape {:?}",
            v.dims()
        )
    }
    if host::is_host_f32(x) && host::is_host_f32(v) {
        x.apply_op2(v, ScaleCols { relu })
    } else {
        reference_scale_cols(x, v, relu)
    }
}

/// [`scale_cols`] from tensor ops (any device): `x ⊙ (1 · vᵀ)`, whose gradient in `v` is a
/// matrix product rather than candle's strided reduction.
pub fn reference_scale_cols(x: &Tensor, v: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
    let rows = x.dim(0)?;
    let ones = Tensor::ones((rows, 1), x.dtype(), x.device())?;
    let y = (x * ones.matmul(&v.reshape((1, v.elem_count()))?)?)?;
    if relu {
        y.relu()
    } else {
        Ok(y)
    }
}

/// `l2norm(x + a ⊙ (h − x))` for `x`, `h` `(rows, d)` and `a` `[d]`: SimbaV2's LERP residual
/// and the normalisation after it, one op on the CPU (four from tensor ops, each a pass and a
/// buffer, and about twice that backward).
pub fn lerp_l2norm(x: &Tensor, h: &Tensor, a: &Tensor) -> candle_core::Result<Tensor> {
    let (_, d) = x.dims2()?;
    if h.dims() != x.dims() || a.dims() != [d] {
        candle_core::bail!(
            "lerp_l2norm: x {:?}, h {:?} and a vector of {d} weights expected, found h {:?}, a {:?}",
            x.dims(),
            x.dims(),
            h.dims(),
            a.dims()
        )
    }
    if d > 0 && host::is_host_f32(x) && host::is_host_f32(h) && host::is_host_f32(a) {
        x.apply_op3(h, a, LerpL2Norm)
    } else {
        reference_lerp_l2norm(x, h, a)
    }
}

/// [`lerp_l2norm`] from tensor ops (any device).
pub fn reference_lerp_l2norm(x: &Tensor, h: &Tensor, a: &Tensor) -> candle_core::Result<Tensor> {
    reference_l2norm(&(x + reference_scale_cols(&(h - x)?, a, false)?)?)
}

/// `acc + a·b`, fused where the CPU has FMA (`mul_add` without hardware FMA is a library
/// call, so callers pass `FMA = true` only inside functions compiled with it).
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, acc: f32) -> f32 {
    if FMA {
        a.mul_add(b, acc)
    } else {
        acc + a * b
    }
}

/// `a · b` with eight partial sums added in a fixed order, so that it vectorises.
#[inline(always)]
pub(crate) fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] = madd::<FMA>(x[l], y[l], acc[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

struct L2Norm;

impl CustomOp1 for L2Norm {
    fn name(&self) -> &'static str {
        "l2norm-rows"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "l2norm")?;
        let d = l.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; x.len()];
        for (xr, yr) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let inv = 1.0 / dot::<false>(xr, xr).sqrt().max(EPS);
            yr.iter_mut().zip(xr).for_each(|(y, &x)| *y = x * inv);
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    /// With `n = max(‖x‖, ε)` and `y = x / n`: `dx = (g − y (g·y)) / n` where `‖x‖ > ε`, and
    /// `dx = g / ε` where the floor holds (`n` is then a constant).
    fn bwd(
        &self,
        arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (arg, res, grad) = (arg.contiguous()?, res.contiguous()?, grad.contiguous()?);
        let read = |t| CpuF32::new(t, "l2norm backward");
        let (xr, yr, gr) = (read(&arg)?, read(&res)?, read(&grad)?);
        let (x, y, g) = (xr.as_slice(), yr.as_slice(), gr.as_slice());
        let d = arg.dim(D::Minus1)?.max(1);
        let mut dx = vec![0f32; x.len()];
        for (((xr, yr), gr), dr) in x
            .chunks_exact(d)
            .zip(y.chunks_exact(d))
            .zip(g.chunks_exact(d))
            .zip(dx.chunks_exact_mut(d))
        {
            l2norm_row_grad(dr, dot::<false>(xr, xr).sqrt(), yr, gr);
        }
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// The gradient `dx` of one row of `y = x / max(‖x‖, ε)`, from `n = ‖x‖`, the output row `y` and
/// its gradient `g`: `(g − y (g·y)) / n` where `n > ε`, `g / ε` where the floor holds (`n` is
/// then a constant).
fn l2norm_row_grad(dx: &mut [f32], n: f32, y: &[f32], g: &[f32]) {
    if n > EPS {
        let (c, inv) = (dot::<false>(g, y), 1.0 / n);
        for ((dx, &g), &y) in dx.iter_mut().zip(g).zip(y) {
            *dx = (g - y * c) * inv;
        }
    } else {
        let inv = 1.0 / EPS;
        dx.iter_mut().zip(g).for_each(|(dx, &g)| *dx = g * inv);
    }
}

struct ScaleCols {
    relu: bool,
}

impl CustomOp2 for ScaleCols {
    fn name(&self) -> &'static str {
        "scale-cols"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "scale_cols: x")?;
        let v = contiguous_f32(s2, l2, "scale_cols: scales")?;
        let d = v.len().max(1);
        let mut out = vec![0f32; x.len()];
        for (xr, yr) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            if self.relu {
                for ((y, &x), &v) in yr.iter_mut().zip(xr).zip(v) {
                    *y = (x * v).max(0.0);
                }
            } else {
                for ((y, &x), &v) in yr.iter_mut().zip(xr).zip(v) {
                    *y = x * v;
                }
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    /// `dx = g ⊙ v ⊙ m`, `dv = Σ_rows g ⊙ x ⊙ m`, with `m` the ReLU's mask (`y > 0`) or 1.
    fn bwd(
        &self,
        x: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (x, v, res, grad) = (
            x.contiguous()?,
            v.contiguous()?,
            res.contiguous()?,
            grad.contiguous()?,
        );
        let read = |t| CpuF32::new(t, "scale_cols backward");
        let (xr, vr, yr, gr) = (read(&x)?, read(&v)?, read(&res)?, read(&grad)?);
        let (xs, vs, ys, gs) = (xr.as_slice(), vr.as_slice(), yr.as_slice(), gr.as_slice());
        let d = vs.len().max(1);
        let mut dx = vec![0f32; xs.len()];
        let mut dv = vec![0f32; d];
        for (((xr, yr), gr), dr) in xs
            .chunks_exact(d)
            .zip(ys.chunks_exact(d))
            .zip(gs.chunks_exact(d))
            .zip(dx.chunks_exact_mut(d))
        {
            // Zipped slices of equal length: no bounds checks, the loop vectorises.
            let relu = self.relu;
            for (((((dx, dv), &v), &x), &y), &g) in dr
                .iter_mut()
                .zip(dv.iter_mut())
                .zip(vs)
                .zip(xr)
                .zip(yr)
                .zip(gr)
            {
                let g = if !relu || y > 0.0 { g } else { 0.0 };
                *dx = g * v;
                *dv += g * x;
            }
        }
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dv, v.shape(), v.device())?),
        ))
    }
}

struct LerpL2Norm;

/// `m = x + a ⊙ (h − x)` of one row, into `m`.
fn lerp_row(m: &mut [f32], x: &[f32], h: &[f32], a: &[f32]) {
    for (((m, &x), &h), &a) in m.iter_mut().zip(x).zip(h).zip(a) {
        *m = x + a * (h - x);
    }
}

impl CustomOp3 for LerpL2Norm {
    fn name(&self) -> &'static str {
        "lerp-l2norm-rows"
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
        let x = contiguous_f32(s1, l1, "lerp_l2norm: x")?;
        let h = contiguous_f32(s2, l2, "lerp_l2norm: h")?;
        let a = contiguous_f32(s3, l3, "lerp_l2norm: a")?;
        let d = a.len().max(1);
        let mut out = vec![0f32; x.len()];
        for ((xr, hr), yr) in x
            .chunks_exact(d)
            .zip(h.chunks_exact(d))
            .zip(out.chunks_exact_mut(d))
        {
            lerp_row(yr, xr, hr, a);
            let inv = 1.0 / dot::<false>(yr, yr).sqrt().max(EPS);
            yr.iter_mut().for_each(|y| *y *= inv);
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    /// With `m = x + a ⊙ (h − x)`, `n = max(‖m‖, ε)`, `y = m / n`: `dm` by [`l2norm_row_grad`],
    /// then `dx = dm ⊙ (1 − a)`, `dh = dm ⊙ a`, `da = Σ_rows dm ⊙ (h − x)`; only the
    /// gradients of inputs that track one.
    fn bwd(
        &self,
        x: &Tensor,
        h: &Tensor,
        a: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let need = [x.track_op(), h.track_op(), a.track_op()];
        let (xc, hc, ac, res, grad) = (
            x.contiguous()?,
            h.contiguous()?,
            a.contiguous()?,
            res.contiguous()?,
            grad.contiguous()?,
        );
        let read = |t| CpuF32::new(t, "lerp_l2norm backward");
        let (xr, hr, ar, yr, gr) = (
            read(&xc)?,
            read(&hc)?,
            read(&ac)?,
            read(&res)?,
            read(&grad)?,
        );
        let (xs, hs, av, ys, gs) = (
            xr.as_slice(),
            hr.as_slice(),
            ar.as_slice(),
            yr.as_slice(),
            gr.as_slice(),
        );
        let d = av.len().max(1);
        let mut dx = vec![0f32; if need[0] { xs.len() } else { 0 }];
        let mut dh = vec![0f32; if need[1] { xs.len() } else { 0 }];
        let mut da = vec![0f32; d];
        let (mut m, mut dm) = (vec![0f32; d], vec![0f32; d]);
        for (i, (((xr, hr), yr), gr)) in xs
            .chunks_exact(d)
            .zip(hs.chunks_exact(d))
            .zip(ys.chunks_exact(d))
            .zip(gs.chunks_exact(d))
            .enumerate()
        {
            lerp_row(&mut m, xr, hr, av);
            l2norm_row_grad(&mut dm, dot::<false>(&m, &m).sqrt(), yr, gr);
            let rows = i * d..(i + 1) * d;
            if need[0] {
                for ((dx, &dm), &a) in dx[rows.clone()].iter_mut().zip(&dm).zip(av) {
                    *dx = dm * (1.0 - a);
                }
            }
            if need[1] {
                for ((dh, &dm), &a) in dh[rows].iter_mut().zip(&dm).zip(av) {
                    *dh = dm * a;
                }
            }
            if need[2] {
                for (((da, &dm), &x), &h) in da.iter_mut().zip(&dm).zip(xr).zip(hr) {
                    *da += dm * (h - x);
                }
            }
        }
        let dev = x.device();
        Ok((
            need[0]
                .then(|| Tensor::from_vec(dx, x.shape(), dev))
                .transpose()?,
            need[1]
                .then(|| Tensor::from_vec(dh, h.shape(), dev))
                .transpose()?,
            need[2]
                .then(|| Tensor::from_vec(da, a.shape(), dev))
                .transpose()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::grad_check::{gradient_mismatches, max_abs_diff, reference_differences};
    use crate::rng::Rng;
    use candle_core::{Device, Var};

    fn random(rows: usize, d: usize, rng: &mut Rng) -> Var {
        let v: Vec<f32> = (0..rows * d).map(|_| rng.normal() as f32).collect();
        Var::from_tensor(&Tensor::from_vec(v, (rows, d), &Device::Cpu).unwrap()).unwrap()
    }

    #[test]
    fn l2norm_matches_tensor_ops_with_a_zero_row() {
        let mut rng = Rng::seed_from_u64(1);
        let x = random(5, 19, &mut rng);
        let mut vals = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        vals[19..38].iter_mut().for_each(|v| *v = 0.0); // row 1 under the floor
        let x = Var::from_tensor(&Tensor::from_vec(vals, (5, 19), &Device::Cpu).unwrap()).unwrap();
        let w = random(5, 19, &mut rng);
        let fused = l2norm(&x).unwrap();
        let reference = reference_l2norm(&x).unwrap();
        let (out, grads) = reference_differences(&fused, &reference, w.as_tensor(), &[&x]).unwrap();
        assert!(out < 1e-6, "forward differs by {out}");
        assert!(grads[0] < 1e-4, "gradient differs by {}", grads[0]);
        let norms = fused
            .sqr()
            .unwrap()
            .sum(1)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (i, n) in norms.iter().enumerate() {
            let want = if i == 1 { 0.0 } else { 1.0 };
            assert!((n - want).abs() < 1e-5, "row {i}: squared norm {n}");
        }
    }

    #[test]
    fn scale_cols_matches_tensor_ops_with_and_without_relu() {
        let mut rng = Rng::seed_from_u64(2);
        for relu in [false, true] {
            let (x, w) = (random(7, 21, &mut rng), random(7, 21, &mut rng));
            let v = Var::from_tensor(&random(1, 21, &mut rng).flatten_all().unwrap()).unwrap();
            let fused = scale_cols(&x, &v, relu).unwrap();
            let reference = reference_scale_cols(&x, &v, relu).unwrap();
            let (out, grads) =
                reference_differences(&fused, &reference, w.as_tensor(), &[&x, &v]).unwrap();
            assert!(out < 1e-6, "relu {relu}: forward differs by {out}");
            for (name, d) in ["x", "v"].into_iter().zip(grads) {
                assert!(d < 1e-4, "relu {relu}: d{name} differs by {d}");
            }
        }
        let x = random(2, 3, &mut rng);
        let bad = Tensor::ones(4, candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(scale_cols(&x, &bad, false).is_err());
    }

    /// Every input with a gradient, then with only some tracked (a detached LERP weight, as in
    /// SAC's actor loss, and an untracked residual input).
    #[test]
    fn lerp_l2norm_matches_tensor_ops() {
        let mut rng = Rng::seed_from_u64(3);
        let (x, h, w) = (
            random(6, 17, &mut rng),
            random(6, 17, &mut rng),
            random(6, 17, &mut rng),
        );
        let a = Var::from_tensor(&random(1, 17, &mut rng).flatten_all().unwrap()).unwrap();
        let fused = lerp_l2norm(&x, &h, &a).unwrap();
        let reference = reference_lerp_l2norm(&x, &h, &a).unwrap();
        let (out, grads) =
            reference_differences(&fused, &reference, w.as_tensor(), &[&x, &h, &a]).unwrap();
        assert!(out < 1e-6, "forward differs by {out}");
        for (name, d) in ["x", "h", "a"].into_iter().zip(grads) {
            assert!(d < 1e-4, "d{name} differs by {d}");
        }
        // only h tracked: the others get no gradient, h's is unchanged
        let (xd, ad) = (x.as_detached_tensor(), a.as_detached_tensor());
        let g = (lerp_l2norm(&xd, &h, &ad).unwrap() * w.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(&xd).is_none() && g.get(&ad).is_none());
        let gr = (reference * w.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let diff = max_abs_diff(g.get(&h).unwrap(), gr.get(&h).unwrap()).unwrap();
        assert!(diff < 1e-4, "dh differs by {diff}");
        let bad = Tensor::ones(4, candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(lerp_l2norm(&x, &h, &bad).is_err());
    }

    /// The tensor-op formulations themselves against finite differences (f64), so the fused
    /// ops are checked against something known right.
    #[test]
    fn reference_formulations_match_finite_differences() {
        let dev = Device::Cpu;
        let x: Vec<f64> = vec![0.3, -1.2, 2.0, 0.5, 0.1, -0.7];
        let v: Vec<f64> = vec![1.5, -0.5, 2.0];
        let w = Tensor::new(&[[0.2f64, -1.0, 0.7], [1.1, 0.4, -0.3]], &dev).unwrap();
        let bad = gradient_mismatches(
            &[(x.clone(), &[2, 3][..])],
            |t| (reference_l2norm(&t[0])? * &w)?.sum_all(),
            1e-6,
            &dev,
        )
        .unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        let bad = gradient_mismatches(
            &[(x.clone(), &[2, 3][..]), (v, &[3][..])],
            |t| (reference_scale_cols(&t[0], &t[1], true)? * &w)?.sum_all(),
            1e-6,
            &dev,
        )
        .unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        let h: Vec<f64> = vec![-0.4, 0.9, 1.3, -2.1, 0.6, 0.8];
        let a: Vec<f64> = vec![0.3, 0.6, -0.2];
        let bad = gradient_mismatches(
            &[(x.clone(), &[2, 3][..]), (h, &[2, 3][..]), (a, &[3][..])],
            |t| (reference_lerp_l2norm(&t[0], &t[1], &t[2])? * &w)?.sum_all(),
            1e-6,
            &dev,
        )
        .unwrap();
        assert!(bad.is_empty(), "{bad:?}");
    }
}
