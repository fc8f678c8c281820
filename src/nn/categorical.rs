//! Categorical (distributional) value heads: a fixed support of atoms, the projection of a
//! shifted and scaled distribution back onto it, and the cross-entropy loss.
//!
//! C51 (Bellemare, Dabney & Munos, "A Distributional Perspective on Reinforcement Learning",
//! 2017, Algorithm 1) uses 51 atoms on [−10, 10]; SimbaV2's critic (Lee et al. 2025) uses 101
//! atoms on [−5, 5] with the same projection, its entropy bonus folded into the shift.

use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::host;

/// Atoms `z_i = v_min + i·Δz`, `Δz = (v_max − v_min)/(n_atoms − 1)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoricalSupport {
    pub n_atoms: usize,
    pub v_min: f64,
    pub v_max: f64,
}

impl Default for CategoricalSupport {
    /// C51's support: 51 atoms on [−10, 10].
    fn default() -> Self {
        Self {
            n_atoms: 51,
            v_min: -10.0,
            v_max: 10.0,
        }
    }
}

impl CategoricalSupport {
    pub fn new(n_atoms: usize, v_min: f64, v_max: f64) -> Result<Self> {
        let s = Self {
            n_atoms,
            v_min,
            v_max,
        };
        s.validate()?;
        Ok(s)
    }

    /// Checks `n_atoms ≥ 2` and finite `v_min < v_max` (call after deserialising).
    pub fn validate(&self) -> Result<()> {
        if self.n_atoms < 2
            || !(self.v_min.is_finite() && self.v_max.is_finite())
            || self.v_min >= self.v_max
        {
            return Err(Error::Config(format!(
                "categorical support: expected n_atoms ≥ 2 and finite v_min < v_max, found \
                 n_atoms = {}, v_min = {}, v_max = {}",
                self.n_atoms, self.v_min, self.v_max
            )));
        }
        Ok(())
    }

    pub fn delta(&self) -> f64 {
        (self.v_max - self.v_min) / (self.n_atoms - 1) as f64
    }

    /// The atoms as f64.
    pub fn atoms(&self) -> Vec<f64> {
        let d = self.delta();
        (0..self.n_atoms)
            .map(|i| self.v_min + i as f64 * d)
            .collect()
    }

    /// The atoms as a f32 tensor of shape `[n_atoms]`.
    pub fn atoms_tensor(&self, device: &Device) -> Result<Tensor> {
        let a: Vec<f32> = self.atoms().iter().map(|&x| x as f32).collect();
        Ok(Tensor::from_vec(a, self.n_atoms, device)?)
    }

    /// Projects, row by row, the distribution putting probability `next_probs[b, j]` on
    /// `rewards[b] + discounts[b] · z_j` onto the support (Bellemare et al. 2017, Algorithm 1),
    /// writing `(batch, n_atoms)` probabilities into `out`.
    ///
    /// `discounts[b]` is `γⁿ · (1 − terminated_b)` for an n-step return, so a terminal transition
    /// puts all its mass at `r`. Values beyond the support are clipped to its end atoms. Each
    /// shifted atom splits its mass between the two neighbouring atoms in proportion to
    /// closeness; one landing exactly on an atom gives it all its mass.
    pub fn project(
        &self,
        rewards: &[f32],
        discounts: &[f32],
        next_probs: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        let n = self.n_atoms;
        let batch = rewards.len();
        if discounts.len() != batch || next_probs.len() != batch * n || out.len() != batch * n {
            return Err(Error::Training(format!(
                "categorical projection: expected {batch} discounts and {batch}×{n} probabilities \
                 and output, found {} discounts, {} probabilities, {} output slots",
                discounts.len(),
                next_probs.len(),
                out.len()
            )));
        }
        let atoms = self.atoms();
        let dz = self.delta();
        out.fill(0.0);
        for b in 0..batch {
            let (r, g) = (rewards[b] as f64, discounts[b] as f64);
            let row = &mut out[b * n..(b + 1) * n];
            for (j, &p) in next_probs[b * n..(b + 1) * n].iter().enumerate() {
                let tz = (r + g * atoms[j]).clamp(self.v_min, self.v_max);
                let pos = ((tz - self.v_min) / dz).clamp(0.0, (n - 1) as f64);
                let lo = pos.floor() as usize;
                let hi = pos.ceil() as usize;
                if lo == hi {
                    row[lo] += p;
                } else {
                    let w_hi = (pos - lo as f64) as f32;
                    row[lo] += p * (1.0 - w_hi);
                    row[hi] += p * w_hi;
                }
            }
        }
        Ok(())
    }

    /// [`Self::project`] for tensors: `rewards` and `discounts` of shape `(batch,)`,
    /// `next_probs` `(batch, n_atoms)`. Returns a detached `(batch, n_atoms)` f32 tensor on
    /// `next_probs`'s device. On the CPU (with the host kernels on) it runs [`Self::project`]
    /// on the data in place; elsewhere [`Self::project_tensor_ops`], so that a GPU update makes
    /// no host round trip.
    pub fn project_tensor(
        &self,
        rewards: &Tensor,
        discounts: &Tensor,
        next_probs: &Tensor,
    ) -> Result<Tensor> {
        let dims = next_probs.dims();
        if dims.len() != 2 || dims[1] != self.n_atoms {
            return Err(Error::Training(format!(
                "categorical projection: next-state probabilities must be (batch, {}), found {:?}",
                self.n_atoms, dims
            )));
        }
        if !host::is_host_f32(next_probs) {
            return self.project_tensor_ops(rewards, discounts, next_probs);
        }
        let r = host::to_vec_f32(&rewards.detach())?;
        let d = host::to_vec_f32(&discounts.detach())?;
        let p = host::to_vec_f32(&next_probs.detach())?;
        let mut out = vec![0f32; p.len()];
        self.project(&r, &d, &p, &mut out)?;
        Ok(Tensor::from_vec(out, dims, next_probs.device())?)
    }

    /// [`Self::project`] as tensor ops on any device, with the scatter written as a product:
    /// source atom `j` of row `b` lands at the fractional index
    /// `pos = (clamp(r_b + γ_b z_j) − v_min)/Δz` and gives atom `k` the weight
    /// `max(0, 1 − |pos − k|)` (its two neighbours in proportion to closeness, all of it to an
    /// atom it hits exactly), so `out[b] = p[b] · W_b` with `W_b` `(n_atoms, n_atoms)`.
    pub fn project_tensor_ops(
        &self,
        rewards: &Tensor,
        discounts: &Tensor,
        next_probs: &Tensor,
    ) -> Result<Tensor> {
        let (batch, n) = next_probs.dims2()?;
        if n != self.n_atoms || rewards.dims() != [batch] || discounts.dims() != [batch] {
            return Err(Error::Training(format!(
                "categorical projection: expected rewards and discounts ({batch},) and \
                 probabilities ({batch}, {}), found {:?}, {:?} and {:?}",
                self.n_atoms,
                rewards.dims(),
                discounts.dims(),
                next_probs.dims()
            )));
        }
        let dev = next_probs.device();
        let f32 = candle_core::DType::F32;
        let (r, g, p) = (
            rewards.detach().to_dtype(f32)?.reshape((batch, 1))?,
            discounts.detach().to_dtype(f32)?.reshape((batch, 1))?,
            next_probs.detach().to_dtype(f32)?,
        );
        let z = self.atoms_tensor(dev)?.reshape((1, n))?;
        let tz = r
            .broadcast_add(&g.broadcast_mul(&z)?)?
            .clamp(self.v_min as f32, self.v_max as f32)?;
        let pos = tz.affine(1.0 / self.delta(), -self.v_min / self.delta())?; // (B, n)
        let k: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let k = Tensor::from_vec(k, (1, 1, n), dev)?;
        let w = (1.0 - pos.unsqueeze(2)?.broadcast_sub(&k)?.abs()?)?.relu()?; // (B, n, n)
        Ok(p.unsqueeze(1)?.matmul(&w)?.squeeze(1)?.detach())
    }

    /// Expected value `Σ_i softmax(logits)_i · z_i` over the last dimension, e.g. Q-values
    /// `(batch, actions)` from logits `(batch, actions, n_atoms)`.
    pub fn expected_value(&self, logits: &Tensor) -> Result<Tensor> {
        let probs = candle_nn::ops::softmax(logits, D::Minus1)?;
        let atoms = self
            .atoms_tensor(logits.device())?
            .to_dtype(logits.dtype())?;
        Ok(probs.broadcast_mul(&atoms)?.sum(D::Minus1)?)
    }
}

/// Cross-entropy `−Σ_i target_i · log softmax(logits)_i` over the last dimension, one value
/// per row (e.g. `(batch,)` for `(batch, n_atoms)` logits). The target is treated as a constant.
/// Uses `log_softmax` built from differentiable ops (candle's fused softmax has no backward).
pub fn cross_entropy(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let target = target.detach().to_dtype(logits.dtype())?;
    Ok((logp * target)?.sum(D::Minus1)?.neg()?)
}

/// `γⁿ · (1 − terminated)` per transition, the `discounts` argument of the projection.
pub fn discounts(gamma_n: f64, terminated: &[bool]) -> Vec<f32> {
    terminated
        .iter()
        .map(|&t| if t { 0.0 } else { gamma_n as f32 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Var};

    #[test]
    fn projection_matches_a_hand_computed_example() {
        // atoms −1, 0, 1
        let s = CategoricalSupport::new(3, -1.0, 1.0).unwrap();
        let probs = [0.2f32, 0.5, 0.3, 0.2, 0.5, 0.3];
        let mut out = [0f32; 6];
        // row 0: r = 0.5, γ = 0.5 → atoms move to 0, 0.5, 1:
        //   0.2 on 0; 0.5 split 0.25/0.25 between 0 and 1; 0.3 on 1 → [0, 0.45, 0.55]
        // row 1: terminal, r = −0.25 → all mass at −0.25: 0.25 on −1, 0.75 on 0
        s.project(&[0.5, -0.25], &[0.5, 0.0], &probs, &mut out)
            .unwrap();
        let expect = [0.0, 0.45, 0.55, 0.25, 0.75, 0.0];
        for (o, e) in out.iter().zip(expect) {
            assert!((o - e).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn projection_conserves_mass_and_clips_to_the_end_atoms() {
        let s = CategoricalSupport::default();
        let n = s.n_atoms;
        let mut rng = crate::rng::Rng::seed_from_u64(2);
        let batch = 16;
        let mut probs = vec![0f32; batch * n];
        for row in probs.chunks_mut(n) {
            row.iter_mut().for_each(|p| *p = rng.uniform_f32() + 1e-3);
            let z: f32 = row.iter().sum();
            row.iter_mut().for_each(|p| *p /= z);
        }
        let rewards: Vec<f32> = (0..batch).map(|_| (rng.normal() * 4.0) as f32).collect();
        let disc = discounts(
            0.99f64.powi(3),
            &(0..batch).map(|i| i % 5 == 0).collect::<Vec<_>>(),
        );
        let mut out = vec![0f32; batch * n];
        s.project(&rewards, &disc, &probs, &mut out).unwrap();
        for row in out.chunks(n) {
            let total: f32 = row.iter().sum();
            assert!((total - 1.0).abs() < 1e-5, "{total}");
            assert!(row.iter().all(|&p| p >= 0.0));
        }
        // far beyond the support: everything on the end atom
        let mut out = vec![0f32; 2 * n];
        let two = [probs[..n].to_vec(), probs[..n].to_vec()].concat();
        s.project(&[50.0, -50.0], &[0.99, 0.99], &two, &mut out)
            .unwrap();
        assert!((out[n - 1] - 1.0).abs() < 1e-5 && out[..n - 1].iter().all(|&p| p == 0.0));
        assert!((out[n] - 1.0).abs() < 1e-5 && out[n + 1..].iter().all(|&p| p == 0.0));
        // the tensor wrapper agrees
        let t = s
            .project_tensor(
                &Tensor::new(&[50f32, -50.], &Device::Cpu).unwrap(),
                &Tensor::new(&[0.99f32, 0.99], &Device::Cpu).unwrap(),
                &Tensor::from_vec(two, (2, n), &Device::Cpu).unwrap(),
            )
            .unwrap();
        assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), out);
        assert!(CategoricalSupport::new(1, 0.0, 1.0).is_err());
        assert!(CategoricalSupport::new(5, 1.0, 1.0).is_err());
    }

    /// The tensor-op projection (what a GPU runs) equals the host scatter: random rows,
    /// terminal rows, rewards far outside the support and shifts landing exactly on atoms.
    #[test]
    fn tensor_op_projection_equals_the_host_scatter() {
        for s in [
            CategoricalSupport::default(),
            CategoricalSupport::new(101, -5.0, 5.0).unwrap(),
        ] {
            let n = s.n_atoms;
            let mut rng = crate::rng::Rng::seed_from_u64(8);
            let batch = 12;
            let mut probs = vec![0f32; batch * n];
            for row in probs.chunks_mut(n) {
                row.iter_mut().for_each(|p| *p = rng.uniform_f32());
                let z: f32 = row.iter().sum();
                row.iter_mut().for_each(|p| *p /= z);
            }
            let mut rewards: Vec<f32> = (0..batch).map(|_| (rng.normal() * 3.0) as f32).collect();
            rewards[1] = 1e3;
            rewards[2] = -1e3;
            rewards[3] = s.delta() as f32; // γ = 1 below: every atom shifts onto the next
            let mut disc = discounts(0.97, &(0..batch).map(|i| i % 4 == 0).collect::<Vec<_>>());
            disc[3] = 1.0;
            let mut host = vec![0f32; batch * n];
            s.project(&rewards, &disc, &probs, &mut host).unwrap();
            let dev = Device::Cpu;
            let ops = s
                .project_tensor_ops(
                    &Tensor::new(rewards.as_slice(), &dev).unwrap(),
                    &Tensor::new(disc.as_slice(), &dev).unwrap(),
                    &Tensor::from_vec(probs.clone(), (batch, n), &dev).unwrap(),
                )
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (i, (a, b)) in ops.iter().zip(&host).enumerate() {
                assert!((a - b).abs() < 1e-5, "{n} atoms, [{i}]: ops {a}, host {b}");
            }
            // The shift by one atom moved every probability up by one slot (the top one stays).
            assert!((host[3 * n + 1] - probs[3 * n]).abs() < 1e-6);
            // Off the host path, `project_tensor` takes the tensor ops.
            let via = crate::device::with_host_kernels(false, || {
                s.project_tensor(
                    &Tensor::new(rewards.as_slice(), &dev).unwrap(),
                    &Tensor::new(disc.as_slice(), &dev).unwrap(),
                    &Tensor::from_vec(probs.clone(), (batch, n), &dev).unwrap(),
                )
            })
            .unwrap();
            assert_eq!(via.flatten_all().unwrap().to_vec1::<f32>().unwrap(), ops);
        }
    }

    #[test]
    fn expected_value_of_a_point_mass_is_its_atom() {
        let s = CategoricalSupport::new(5, -2.0, 2.0).unwrap();
        let mut logits = vec![-1e4f32; 5];
        logits[3] = 0.0;
        let q = s
            .expected_value(&Tensor::from_vec(logits, (1, 1, 5), &Device::Cpu).unwrap())
            .unwrap();
        assert_eq!(q.dims(), &[1, 1]);
        assert!((q.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] - 1.0).abs() < 1e-6);
    }

    /// f64 central differences of the C51 loss `mean_b CE(logits_b, Φ(target))` against backprop.
    #[test]
    fn cross_entropy_gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let s = CategoricalSupport::new(7, -3.0, 3.0).unwrap();
        let mut rng = crate::rng::Rng::seed_from_u64(8);
        let batch = 3;
        let next: Vec<f32> = (0..batch * 7).map(|_| rng.uniform_f32() + 0.05).collect();
        let next = Tensor::from_vec(next, (batch, 7), &dev).unwrap();
        let next = next.broadcast_div(&next.sum_keepdim(1).unwrap()).unwrap();
        let target = s
            .project_tensor(
                &Tensor::new(&[0.3f32, -1.2, 2.5], &dev).unwrap(),
                &Tensor::new(&[0.9f32, 0.0, 0.81], &dev).unwrap(),
                &next,
            )
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let l0: Vec<f64> = (0..batch * 7).map(|_| rng.normal() * 2.0).collect();
        let loss = |l: &Tensor| cross_entropy(l, &target).unwrap().mean_all().unwrap();
        let var = Var::from_vec(l0.clone(), (batch, 7), &dev).unwrap();
        let g: Vec<f64> = loss(var.as_tensor())
            .backward()
            .unwrap()
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for i in 0..l0.len() {
            let eval = |d: f64| {
                let mut l = l0.clone();
                l[i] += d;
                loss(&Tensor::from_vec(l, (batch, 7), &dev).unwrap())
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let fd = (eval(1e-6) - eval(-1e-6)) / 2e-6;
            assert!((fd - g[i]).abs() < 1e-7, "{i}: {fd} vs {}", g[i]);
        }
        // and the analytic form: ∂/∂logits = (softmax · Σtarget − target) / batch (Σtarget is 1
        // up to f32 rounding of the projection)
        let sm = candle_nn::ops::softmax(var.as_tensor(), 1)
            .unwrap()
            .broadcast_mul(&target.sum_keepdim(1).unwrap())
            .unwrap();
        let analytic: Vec<f64> = ((sm - &target).unwrap() / batch as f64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (a, b) in analytic.iter().zip(&g) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }
}
