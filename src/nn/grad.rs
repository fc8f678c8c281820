//! Gradient norms, clipping by global norm, and per-parameter gradient scaling over a candle
//! `GradStore` (candle has none of these).

use candle_core::backprop::GradStore;
use candle_core::{DType, Var};

use crate::error::Result;
use crate::nn::host;

/// Σ g² of one gradient in f64.
fn sum_sq(g: &candle_core::Tensor) -> Result<f64> {
    if let Some(s) = host::with_cpu_f32(g, sum_sq_host)? {
        return Ok(s);
    }
    Ok(g.to_dtype(DType::F64)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f64>()?)
}

/// Σ x² in f64 over eight interleaved partial sums (element i into sum i mod 8), added in a
/// fixed order at the end: a single running sum is one long chain of dependent additions
/// (latency-bound, about 6% of a MinAtar DQN update); eight independent chains overlap. The
/// order is fixed, so the result does not depend on the machine.
fn sum_sq_host(xs: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += (x as f64) * (x as f64);
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a += (x as f64) * (x as f64);
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// The l2 norm of all gradients of `vars` taken together, `sqrt(Σ_vars Σ g²)`, summed in the
/// order given (use a store's name order for determinism). Vars without a gradient count as 0.
pub fn global_norm<'a>(grads: &GradStore, vars: impl IntoIterator<Item = &'a Var>) -> Result<f64> {
    let mut total = 0.0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            total += sum_sq(g)?;
        }
    }
    Ok(total.sqrt())
}

/// Scales the gradients of `vars` so that their global norm is at most `max_norm`, as PyTorch's
/// `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when `norm > max_norm`. Returns the norm
/// before clipping (a non-finite norm is returned as is and nothing is scaled; the caller
/// decides whether that ends training).
pub fn clip_global_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads, vars)?;
    if norm.is_finite() && norm > max_norm {
        let factor = max_norm / (norm + 1e-6);
        for v in vars {
            scale_grad(grads, v, factor)?;
        }
    }
    Ok(norm)
}

/// Multiplies `var`'s gradient by `factor` (no-op when it has none).
pub fn scale_grad(grads: &mut GradStore, var: &Var, factor: f64) -> Result<()> {
    if let Some(g) = grads.get(var.as_tensor()) {
        let scaled = g.affine(factor, 0.0)?;
        grads.insert(var.as_tensor(), scaled);
    }
    Ok(())
}

/// divGrad (Gogianu et al. 2021): divides `var`'s gradient by `max(σ, 1)`, the step-size
/// reduction that spectral normalisation implies, without normalising the forward pass.
pub fn div_grad_by_sigma(grads: &mut GradStore, var: &Var, sigma: f64) -> Result<()> {
    scale_grad(grads, var, 1.0 / sigma.max(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn grads_for(vars: &[Var], coeffs: &[Vec<f32>]) -> GradStore {
        // L = Σ_k Σ_i c_ki · θ_ki, so ∂L/∂θ_k = c_k
        let mut loss = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
        for (v, c) in vars.iter().zip(coeffs) {
            let c = Tensor::new(c.as_slice(), &Device::Cpu).unwrap();
            loss = (loss + (v.as_tensor() * c).unwrap().sum_all().unwrap()).unwrap();
        }
        loss.backward().unwrap()
    }

    #[test]
    fn norm_clip_and_scale() {
        let a = Var::new(&[1f32, 2.], &Device::Cpu).unwrap();
        let b = Var::new(&[0f32, 0., 0.], &Device::Cpu).unwrap();
        let vars = [a.clone(), b.clone()];
        let mut g = grads_for(&vars, &[vec![3., 0.], vec![0., 4., 0.]]);
        assert!((global_norm(&g, &vars).unwrap() - 5.0).abs() < 1e-12);
        let before = clip_global_norm(&mut g, &vars, 1.0).unwrap();
        assert!((before - 5.0).abs() < 1e-12);
        let after = global_norm(&g, &vars).unwrap();
        assert!((after - 1.0).abs() < 1e-6, "{after}");
        let ga: Vec<f32> = g.get(a.as_tensor()).unwrap().to_vec1().unwrap();
        assert!((ga[0] - 0.6).abs() < 1e-6);
        // below the threshold nothing changes
        let n = clip_global_norm(&mut g, &vars, 10.0).unwrap();
        assert!((n - after).abs() < 1e-12);
        // divGrad: only the chosen var, by max(σ, 1)
        div_grad_by_sigma(&mut g, &b, 4.0).unwrap();
        let gb: Vec<f32> = g.get(b.as_tensor()).unwrap().to_vec1().unwrap();
        assert!((gb[1] - 0.8 / 4.0).abs() < 1e-6);
        assert_eq!(g.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), ga);
        div_grad_by_sigma(&mut g, &b, 0.5).unwrap();
        assert_eq!(g.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), gb);
    }
}
