//! The tanh-squashed Gaussian policy of SAC (Haarnoja et al., "Soft Actor-Critic Algorithms and
//! Applications", 2018, Appendix C): `u = μ + σ·ε`, `a = tanh(u)`, and
//! `log π(a|s) = Σ_i [log N(u_i; μ_i, σ_i) − log(1 − tanh²(u_i))]`.
//!
//! The Jacobian term uses the exact identity `log(1 − tanh²(u)) = 2(log 2 − u − softplus(−2u))`
//! (as TF-Agents and CleanRL's JAX SAC do) rather than PyTorch SAC's `log(1 − a² + 1e-6)`: it
//! stays finite and exact when `|u|` is large. Actions live in [−1, 1]; the agent rescales them
//! to the environment's bounds, as SB3 and SimbaV2's env wrappers do, so log-probabilities and
//! the entropy target refer to the normalised action space.

use candle_core::{Tensor, D};

use crate::error::Result;

const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_8;

/// `softplus(x) = log(1 + eˣ)`, written as `relu(x) + log(1 + e^{−|x|})` so it neither
/// overflows nor loses its gradient (candle has no fused softplus).
pub fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    let tail = x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    x.relu()? + tail
}

/// Maps an unbounded head output into `[min, max]` with tanh: `min + ½(max − min)(tanh(x) + 1)`
/// (CleanRL's SAC uses [−5, 2]; SimbaV2 [−10, 2]).
pub fn squash_log_std(raw: &Tensor, min: f64, max: f64) -> candle_core::Result<Tensor> {
    raw.tanh()?
        .affine(0.5 * (max - min), min + 0.5 * (max - min))
}

/// A reparameterised sample and its log-probability. `mean`, `log_std` and `noise` are
/// `(batch, actions)`; `noise` holds standard-normal draws (from the platform's seeded RNG).
/// Returns the squashed action `(batch, actions)` and `log π` `(batch,)`; gradients flow to
/// `mean` and `log_std`.
pub fn sample(mean: &Tensor, log_std: &Tensor, noise: &Tensor) -> Result<(Tensor, Tensor)> {
    let u = (mean + (log_std.exp()? * noise)?)?;
    let action = u.tanh()?;
    // log N(u; μ, σ) with (u − μ)/σ = ε exactly
    let gauss = ((noise.sqr()? * -0.5)? - log_std)?.affine(1.0, -HALF_LOG_2PI)?;
    // log(1 − tanh²u) = 2(log 2 − u − softplus(−2u))
    let log_det = (u.affine(-1.0, std::f64::consts::LN_2)? - softplus(&u.affine(-2.0, 0.0)?)?)?
        .affine(2.0, 0.0)?;
    let log_prob = (gauss - log_det)?.sum(D::Minus1)?;
    Ok((action, log_prob))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Backprop through the sample's log-probability and action against f64 central differences
    /// in `mean` and `log_std`, including a large |u| where the naive Jacobian term breaks.
    #[test]
    fn log_prob_gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let (b, a) = (3, 2);
        let mean = vec![0.3, -1.2, 2.0, 0.0, -4.5, 0.7];
        let log_std = vec![-0.5, 0.2, -1.0, 0.4, 0.1, -2.0];
        let noise = vec![0.5, -1.0, 1.5, 0.1, -2.0, 0.3];
        let w = Tensor::from_vec(vec![0.7, -0.4, 1.1, 0.2, -0.9, 0.5], (b, a), &dev).unwrap();
        let noise_t = Tensor::from_vec(noise.clone(), (b, a), &dev).unwrap();
        // loss = Σ log π + Σ w ⊙ action: touches both outputs
        let loss = |m: &Tensor, s: &Tensor| -> Tensor {
            let (act, lp) = sample(m, s, &noise_t).unwrap();
            (lp.sum_all().unwrap() + (act * &w).unwrap().sum_all().unwrap()).unwrap()
        };
        let mv = Var::from_vec(mean.clone(), (b, a), &dev).unwrap();
        let sv = Var::from_vec(log_std.clone(), (b, a), &dev).unwrap();
        let g = loss(mv.as_tensor(), sv.as_tensor()).backward().unwrap();
        let gm: Vec<f64> = g
            .get(mv.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let gs: Vec<f64> = g
            .get(sv.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let eval = |m: &[f64], s: &[f64]| -> f64 {
            let m = Tensor::from_vec(m.to_vec(), (b, a), &dev).unwrap();
            let s = Tensor::from_vec(s.to_vec(), (b, a), &dev).unwrap();
            loss(&m, &s).to_scalar::<f64>().unwrap()
        };
        let h = 1e-6;
        for i in 0..b * a {
            for (which, grad) in [(0, &gm), (1, &gs)] {
                let (mut p, mut q) = (
                    (mean.clone(), log_std.clone()),
                    (mean.clone(), log_std.clone()),
                );
                if which == 0 {
                    p.0[i] += h;
                    q.0[i] -= h;
                } else {
                    p.1[i] += h;
                    q.1[i] -= h;
                }
                let fd = (eval(&p.0, &p.1) - eval(&q.0, &q.1)) / (2.0 * h);
                assert!(
                    (fd - grad[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "d/d{}[{i}]: finite difference {fd} vs backprop {}",
                    ["mean", "log_std"][which],
                    grad[i]
                );
            }
        }
    }

    /// The log-probability equals the change-of-variables density computed directly.
    #[test]
    fn log_prob_matches_the_density_formula() {
        let dev = Device::Cpu;
        let (m, s, e) = (0.4f64, -0.3f64, 1.7f64);
        let t = |v: f64| Tensor::from_vec(vec![v], (1, 1), &dev).unwrap();
        let (act, lp) = sample(&t(m), &t(s), &t(e)).unwrap();
        let u = m + s.exp() * e;
        let want = -0.5 * e * e - s - HALF_LOG_2PI - (1.0 - u.tanh().powi(2)).ln();
        let got: Vec<f64> = lp.to_vec1().unwrap();
        assert!((got[0] - want).abs() < 1e-12, "{} vs {want}", got[0]);
        let a: Vec<Vec<f64>> = act.to_vec2().unwrap();
        assert!((a[0][0] - u.tanh()).abs() < 1e-15);
    }
}
