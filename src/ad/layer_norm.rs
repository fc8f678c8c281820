//! Layer norm over the last dimension (eps 1e-5, as PyTorch), differentiable.
//!
//! candle's fused layer-norm kernel (`candle_nn::ops::layer_norm`) has no backward, and the same norm
//! from tensor ops costs about ten broadcast ops forward and more backward, each allocating a
//! buffer of the activations' size. On the CPU [`layer_norm`] runs one op whose backward is
//! written by hand; elsewhere it runs the tensor-op formulation [`reference_layer_norm`], which
//! the CPU op is tested against.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use crate::nn::host::{contiguous_f32, CpuF32};

const EPS: f32 = 1e-5;

/// Rows per parallel block; the weight and bias gradients are summed per block, then over the
/// blocks in order, so the result does not depend on the thread count.
const BLOCK_ROWS: usize = 64;

/// `(x − mean) / sqrt(var + 1e-5) · gamma + beta` over the last dimension of `x`.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> candle_core::Result<Tensor> {
    let fused = x.device().is_cpu()
        && crate::device::host_kernels()
        && [x, gamma, beta].iter().all(|t| t.dtype() == DType::F32);
    if fused {
        x.contiguous()?
            .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, FusedLayerNorm)
    } else {
        reference_layer_norm(x, gamma, beta)
    }
}

/// The same norm from tensor ops (any device, differentiable through candle's autograd).
pub fn reference_layer_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
) -> candle_core::Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + f64::from(EPS))?.sqrt()?)?;
    xn.broadcast_mul(gamma)?.broadcast_add(beta)
}

/// Mean and `1 / sqrt(var + eps)` of one row.
#[inline]
fn moments(row: &[f32]) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|&x| (x - mean) * (x - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + EPS).sqrt())
}

struct FusedLayerNorm;

fn check(x: &Shape, gamma: &Shape, beta: &Shape) -> candle_core::Result<usize> {
    let d = x.dims().last().copied().unwrap_or(0);
    if d == 0 || gamma.dims() != [d] || beta.dims() != [d] {
        candle_core::bail!("layer norm: input {x:?} with weight {gamma:?} and bias {beta:?}")
    }
    Ok(d)
}

impl CustomOp3 for FusedLayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
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
        let d = check(l1.shape(), l2.shape(), l3.shape())?;
        let (x, g, b) = (
            contiguous_f32(s1, l1, "layer norm: input")?,
            contiguous_f32(s2, l2, "layer norm: weight")?,
            contiguous_f32(s3, l3, "layer norm: bias")?,
        );
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(d * BLOCK_ROWS)
            .zip(x.par_chunks(d * BLOCK_ROWS))
            .for_each(|(yb, xb)| {
                for (yr, xr) in yb.chunks_exact_mut(d).zip(xb.chunks_exact(d)) {
                    let (mean, rstd) = moments(xr);
                    for (((y, &x), &g), &b) in yr.iter_mut().zip(xr).zip(g).zip(b) {
                        *y = (x - mean) * rstd * g + b;
                    }
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = check(x.shape(), gamma.shape(), beta.shape())?;
        let grad = grad.contiguous()?;
        let read = |t| CpuF32::new(t, "layer norm backward");
        let (xr, gr, dyr) = (read(x)?, read(gamma)?, read(&grad)?);
        let (xv, gv, dy) = (xr.as_slice(), gr.as_slice(), dyr.as_slice());
        let mut dx = vec![0f32; xv.len()];
        // Per block: (dγ, dβ) partial sums.
        let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(d * BLOCK_ROWS)
            .zip(xv.par_chunks(d * BLOCK_ROWS))
            .zip(dy.par_chunks(d * BLOCK_ROWS))
            .map(|((dxb, xb), dyb)| {
                let (mut dg, mut db) = (vec![0f32; d], vec![0f32; d]);
                let mut xhat = vec![0f32; d];
                for ((dxr, xr), dyr) in dxb
                    .chunks_exact_mut(d)
                    .zip(xb.chunks_exact(d))
                    .zip(dyb.chunks_exact(d))
                {
                    let (mean, rstd) = moments(xr);
                    let (mut m1, mut m2) = (0f32, 0f32);
                    for i in 0..d {
                        xhat[i] = (xr[i] - mean) * rstd;
                        let gy = dyr[i] * gv[i];
                        m1 += gy;
                        m2 += gy * xhat[i];
                        dg[i] += dyr[i] * xhat[i];
                        db[i] += dyr[i];
                    }
                    let (m1, m2) = (m1 / d as f32, m2 / d as f32);
                    for i in 0..d {
                        dxr[i] = rstd * (dyr[i] * gv[i] - m1 - xhat[i] * m2);
                    }
                }
                (dg, db)
            })
            .collect();
        let (mut dg, mut db) = (vec![0f32; d], vec![0f32; d]);
        for (pg, pb) in &partial {
            dg.iter_mut().zip(pg).for_each(|(a, b)| *a += b);
            db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
        }
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dg, d, dev)?),
            Some(Tensor::from_vec(db, d, dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::grad_check::reference_differences;
    use crate::rng::Rng;
    use candle_core::{Device, Var};

    fn var(shape: &[usize], rng: &mut Rng, offset: f64) -> Var {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (rng.normal() + offset) as f32).collect();
        Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// Forward and all three gradients equal the tensor-op formulation, over more rows than
    /// one block.
    #[test]
    fn fused_matches_tensor_ops() {
        let mut rng = Rng::seed_from_u64(3);
        let (rows, d) = (3 * BLOCK_ROWS + 5, 12);
        let x = var(&[rows, d], &mut rng, 2.0);
        let g = var(&[d], &mut rng, 1.0);
        let b = var(&[d], &mut rng, 0.0);
        let w = var(&[rows, d], &mut rng, 0.0);
        let fused = layer_norm(&x, &g, &b).unwrap();
        let reference = reference_layer_norm(&x, &g, &b).unwrap();
        let (output, grads) =
            reference_differences(&fused, &reference, w.as_tensor(), &[&x, &g, &b]).unwrap();
        assert!(output < 1e-5, "forward differs by {output}");
        for (name, d) in ["x", "gamma", "beta"].into_iter().zip(grads) {
            assert!(d < 2e-4, "d{name} differs by {d}");
        }
    }
}
