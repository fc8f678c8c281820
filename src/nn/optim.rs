//! Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019) with per-parameter options.
//!
//! Written here rather than taken from candle-nn because the platform needs: a learning rate
//! given at every step (schedules), a per-parameter ε multiplier (spectral normalisation's
//! mulEps variant, Gogianu et al. 2021), per-parameter learning-rate scale and weight decay, an
//! explicit weight decay of 0 by default (candle's AdamW defaults to 0.01), and state that can
//! be saved and restored so a resumed run equals an uninterrupted one bit for bit.
//!
//! Update, as PyTorch's `Adam`/`AdamW` (`t` = step count after increment, `g` the gradient):
//! ```text
//! Adam (L2 decay):  g ← g + wd·θ
//! AdamW:            θ ← θ · (1 − lr·wd)
//! m ← β₁ m + (1 − β₁) g          v ← β₂ v + (1 − β₂) g²
//! θ ← θ − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
//! ```
//! On the CPU the update runs in place over the f32 data (one pass per parameter, no tensor
//! allocations), which keeps the per-step overhead of small networks low; elsewhere it uses
//! tensor ops.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::host;
use crate::nn::params::check_tensors;

/// Hyperparameters shared by all parameters. Defaults are PyTorch's Adam: β = (0.9, 0.999),
/// ε = 1e-8, no weight decay. Set `decoupled_weight_decay = true` for AdamW.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Weight-decay coefficient; 0 unless the algorithm's paper says otherwise.
    pub weight_decay: f64,
    /// `false`: Adam's L2 penalty added to the gradient; `true`: AdamW's decoupled decay.
    pub decoupled_weight_decay: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
        }
    }
}

impl AdamConfig {
    /// Adam with ε set (e.g. C51's ε = 3.125e-4 = 0.01 / 32).
    pub fn adam(eps: f64) -> Self {
        Self {
            eps,
            ..Self::default()
        }
    }

    /// AdamW with an explicit decoupled weight decay.
    pub fn adamw(weight_decay: f64) -> Self {
        Self {
            weight_decay,
            decoupled_weight_decay: true,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let ok = (0.0..1.0).contains(&self.beta1)
            && (0.0..1.0).contains(&self.beta2)
            && self.eps >= 0.0
            && self.weight_decay >= 0.0;
        if ok {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "optimizer: expected 0 ≤ beta1, beta2 < 1 and eps, weight_decay ≥ 0, found {self:?}"
            )))
        }
    }
}

/// Per-parameter adjustments.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamOptions {
    /// Multiplies the learning rate given to `step`.
    pub lr_scale: f64,
    /// Multiplies ε (mulEps sets it to the layer's σ).
    pub eps_scale: f64,
    /// Overrides the config's weight decay for this parameter (e.g. 0 for biases and scalers).
    pub weight_decay: Option<f64>,
}

impl Default for ParamOptions {
    fn default() -> Self {
        Self {
            lr_scale: 1.0,
            eps_scale: 1.0,
            weight_decay: None,
        }
    }
}

/// A first or second moment: host vector on the CPU, tensor elsewhere.
enum Moment {
    Host(Vec<f32>),
    Device(Tensor),
}

impl Moment {
    fn zeros_like(var: &Var) -> Result<Self> {
        Ok(if host::is_host_f32(var) {
            Moment::Host(vec![0.0; var.elem_count()])
        } else {
            Moment::Device(var.zeros_like()?)
        })
    }

    fn to_tensor(&self, like: &Var) -> Result<Tensor> {
        Ok(match self {
            Moment::Host(v) => Tensor::from_slice(v, like.dims(), like.device())?,
            Moment::Device(t) => t.copy()?,
        })
    }

    fn set(&mut self, t: &Tensor) -> Result<()> {
        match self {
            Moment::Host(v) => *v = host::to_vec_f32(t)?,
            Moment::Device(d) => *d = t.to_device(d.device())?.to_dtype(d.dtype())?,
        }
        Ok(())
    }
}

struct Slot {
    name: String,
    var: Var,
    options: ParamOptions,
    m: Moment,
    v: Moment,
}

/// The optimiser's state for a checkpoint (`optimizer.safetensors`): moments named
/// `<param>.exp_avg` / `<param>.exp_avg_sq` (PyTorch's names) and the step count.
pub struct AdamState {
    pub step: u64,
    pub tensors: HashMap<String, Tensor>,
}

/// Adam / AdamW over a fixed set of named parameters, updated in name order.
pub struct Adam {
    config: AdamConfig,
    slots: Vec<Slot>,
    step: u64,
}

impl Adam {
    /// An optimiser for `params` (e.g. `store.trainable()`); they are sorted by name.
    pub fn new(params: Vec<(String, Var)>, config: AdamConfig) -> Result<Self> {
        config.validate()?;
        let mut params = params;
        params.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = params.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::Config(format!(
                "optimizer: parameter `{}` is listed twice",
                w[0].0
            )));
        }
        let slots = params
            .into_iter()
            .map(|(name, var)| {
                Ok(Slot {
                    name,
                    m: Moment::zeros_like(&var)?,
                    v: Moment::zeros_like(&var)?,
                    var,
                    options: ParamOptions::default(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            slots,
            step: 0,
        })
    }

    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Number of steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    fn slot_mut(&mut self, name: &str) -> Result<&mut Slot> {
        let known = || crate::error::did_you_mean(name, self.slots.iter().map(|s| s.name.as_str()));
        match self.slots.binary_search_by(|s| s.name.as_str().cmp(name)) {
            Ok(i) => Ok(&mut self.slots[i]),
            Err(_) => Err(Error::Config(format!(
                "optimizer: no parameter named `{name}`{}",
                known()
            ))),
        }
    }

    /// Mutable per-parameter options of `name`.
    pub fn options_mut(&mut self, name: &str) -> Result<&mut ParamOptions> {
        Ok(&mut self.slot_mut(name)?.options)
    }

    /// Per-parameter options of `name`.
    pub fn options(&self, name: &str) -> Option<&ParamOptions> {
        self.slots
            .binary_search_by(|s| s.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.slots[i].options)
    }

    /// Sets the ε multiplier of parameter `name` (mulEps).
    pub fn set_eps_scale(&mut self, name: &str, scale: f64) -> Result<()> {
        self.options_mut(name)?.eps_scale = scale;
        Ok(())
    }

    /// One update with learning rate `lr` (times each parameter's `lr_scale`). Parameters
    /// without a gradient in `grads` are left alone (their moments do not decay), as PyTorch does.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        // β^t is 0 in f64 long before t leaves i32 (a restored count may be anything).
        let t = self.step.min(i32::MAX as u64) as i32;
        let c = &self.config;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let lr = lr * slot.options.lr_scale;
            let wd = slot.options.weight_decay.unwrap_or(c.weight_decay);
            let eps = c.eps * slot.options.eps_scale;
            let k = StepConsts {
                beta1: c.beta1,
                beta2: c.beta2,
                step_size: lr / bc1,
                bc2_sqrt,
                eps,
                l2: if c.decoupled_weight_decay { 0.0 } else { wd },
                decay: if c.decoupled_weight_decay {
                    1.0 - lr * wd
                } else {
                    1.0
                },
            };
            match (&mut slot.m, &mut slot.v) {
                (Moment::Host(m), Moment::Host(v)) if host::is_host_f32(g) => {
                    host_step(&slot.var, g, m, v, &k)?
                }
                _ => tensor_step(slot, g, &k)?,
            }
        }
        Ok(())
    }

    /// The moments and step count, for `optimizer.safetensors`.
    pub fn state(&self) -> Result<AdamState> {
        let mut tensors = HashMap::new();
        for s in &self.slots {
            tensors.insert(format!("{}.exp_avg", s.name), s.m.to_tensor(&s.var)?);
            tensors.insert(format!("{}.exp_avg_sq", s.name), s.v.to_tensor(&s.var)?);
        }
        Ok(AdamState {
            step: self.step,
            tensors,
        })
    }

    /// Restores a state written by [`Adam::state`], after checking every name, shape and dtype
    /// (all mismatches reported at once, naming `source`). Nothing changes on error.
    pub fn load_state(&mut self, state: &AdamState, source: &Path) -> Result<()> {
        // A count no run reaches (and one that would wrap at the next step).
        if state.step > 1 << 48 {
            return Err(Error::data(
                source,
                format!(
                    "the optimiser's step count {} is not one a run reaches",
                    state.step
                ),
            ));
        }
        let expected: Vec<(String, &Tensor)> = self
            .slots
            .iter()
            .flat_map(|s| {
                [
                    (format!("{}.exp_avg", s.name), s.var.as_tensor()),
                    (format!("{}.exp_avg_sq", s.name), s.var.as_tensor()),
                ]
            })
            .collect();
        let problems = check_tensors(
            expected.iter().map(|(n, t)| (n.as_str(), *t)),
            &state.tensors,
        );
        if !problems.is_empty() {
            return Err(Error::data(
                source,
                format!(
                    "optimizer state does not match the parameters ({} problem(s)):\n  {}",
                    problems.len(),
                    problems.join("\n  ")
                ),
            ));
        }
        for s in &mut self.slots {
            // presence checked above
            if let (Some(m), Some(v)) = (
                state.tensors.get(&format!("{}.exp_avg", s.name)),
                state.tensors.get(&format!("{}.exp_avg_sq", s.name)),
            ) {
                s.m.set(m)?;
                s.v.set(v)?;
            }
        }
        self.step = state.step;
        Ok(())
    }
}

struct StepConsts {
    beta1: f64,
    beta2: f64,
    step_size: f64,
    bc2_sqrt: f64,
    eps: f64,
    /// Adam's L2 coefficient (0 for AdamW).
    l2: f64,
    /// AdamW's multiplicative decay `1 − lr·wd` (1 for Adam).
    decay: f64,
}

fn host_step(var: &Var, g: &Tensor, m: &mut [f32], v: &mut [f32], k: &StepConsts) -> Result<()> {
    let (b1, b2) = (k.beta1 as f32, k.beta2 as f32);
    // 1 − β in f64 before rounding: 1 − 0.999f32 is off by 5e-5 relative.
    let (one_b1, one_b2) = ((1.0 - k.beta1) as f32, (1.0 - k.beta2) as f32);
    let step_size = k.step_size as f32;
    let inv_bc2 = (1.0 / k.bc2_sqrt) as f32;
    let (eps, l2, decay) = (k.eps as f32, k.l2 as f32, k.decay as f32);
    let k = HostConsts {
        b1,
        b2,
        one_b1,
        one_b2,
        step_size,
        inv_bc2,
        eps,
        l2,
        decay,
    };
    host::update_in_place_from(var, g, "adam", |theta, grad| {
        adam_host_kernel(theta, grad, m, v, &k)
    })?;
    Ok(())
}

/// The per-element constants of one host step, in f32.
struct HostConsts {
    b1: f32,
    b2: f32,
    one_b1: f32,
    one_b2: f32,
    step_size: f32,
    inv_bc2: f32,
    eps: f32,
    l2: f32,
    decay: f32,
}

/// Elements per task when a parameter's update is split over threads: large enough that a task
/// outweighs its scheduling, small enough that a 128k-element layer gives every core work.
const ADAM_CHUNK: usize = 16 * 1024;

/// [`adam_host_kernel_serial`] over chunks on rayon's pool for large parameters. Each element's
/// update depends on that element alone, so the result is the same on any number of threads.
fn adam_host_kernel(theta: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], k: &HostConsts) {
    use rayon::prelude::*;
    if theta.len() < 2 * ADAM_CHUNK || rayon::current_num_threads() < 2 {
        return adam_host_kernel_serial(theta, grad, m, v, k);
    }
    theta
        .par_chunks_mut(ADAM_CHUNK)
        .zip(grad.par_chunks(ADAM_CHUNK))
        .zip(m.par_chunks_mut(ADAM_CHUNK))
        .zip(v.par_chunks_mut(ADAM_CHUNK))
        .for_each(|(((p, g), m), v)| adam_host_kernel_serial(p, g, m, v, k));
}

/// The Adam update over host slices on the calling thread. Its divide and square root are
/// throughput-bound (a fifth of a MinAtar DQN update under SSE2, the default target), so on
/// x86-64 the same loop is also compiled for AVX2 and AVX-512 and chosen at run time. Each lane
/// does the same IEEE operations in the same order (no fused multiply-add), so every path gives
/// the same bits.
fn adam_host_kernel_serial(
    theta: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    k: &HostConsts,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { adam_avx512(theta, grad, m, v, k) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { adam_avx2(theta, grad, m, v, k) };
        }
    }
    adam_loop(theta, grad, m, v, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn adam_avx512(theta: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], k: &HostConsts) {
    adam_loop(theta, grad, m, v, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn adam_avx2(theta: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], k: &HostConsts) {
    adam_loop(theta, grad, m, v, k)
}

#[inline(always)]
fn adam_loop(theta: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], k: &HostConsts) {
    for (((p, &gi), mi), vi) in theta
        .iter_mut()
        .zip(grad)
        .zip(m.iter_mut())
        .zip(v.iter_mut())
    {
        let gi = gi + k.l2 * *p;
        *mi = k.b1 * *mi + k.one_b1 * gi;
        *vi = k.b2 * *vi + k.one_b2 * gi * gi;
        let denom = vi.sqrt() * k.inv_bc2 + k.eps;
        *p = *p * k.decay - k.step_size * *mi / denom;
    }
}

fn tensor_step(slot: &mut Slot, g: &Tensor, k: &StepConsts) -> Result<()> {
    let theta = slot.var.as_tensor();
    let g = g.to_dtype(theta.dtype())?;
    let g = if k.l2 != 0.0 {
        (g + theta.affine(k.l2, 0.0)?)?
    } else {
        g
    };
    let (Moment::Device(m), Moment::Device(v)) = (&mut slot.m, &mut slot.v) else {
        return Err(Error::Training(format!(
            "optimizer: parameter `{}` moved between devices after the optimizer was built",
            slot.name
        )));
    };
    *m = (m.affine(k.beta1, 0.0)? + g.affine(1.0 - k.beta1, 0.0)?)?;
    *v = (v.affine(k.beta2, 0.0)? + g.sqr()?.affine(1.0 - k.beta2, 0.0)?)?;
    let denom = v.sqrt()?.affine(1.0 / k.bc2_sqrt, k.eps)?;
    let update = (m.div(&denom)?).affine(k.step_size, 0.0)?;
    let next = (theta.affine(k.decay, 0.0)? - update)?;
    slot.var.set(&next)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// A GradStore in which `var`'s gradient is exactly `g` (from L = Σ g ⊙ θ).
    fn grads(vars: &[&Var], gs: &[&[f32]]) -> GradStore {
        let mut loss = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
        for (v, g) in vars.iter().zip(gs) {
            let g = Tensor::from_slice(g, v.dims(), &Device::Cpu).unwrap();
            loss = (loss + (v.as_tensor() * g).unwrap().sum_all().unwrap()).unwrap();
        }
        loss.backward().unwrap()
    }

    fn vals(v: &Var) -> Vec<f32> {
        v.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn adam_matches_a_hand_computed_two_step_update() {
        let theta = Var::new(&[1f32, -2.], &Device::Cpu).unwrap();
        let mut opt = Adam::new(vec![("p".into(), theta.clone())], AdamConfig::default()).unwrap();
        opt.step(&grads(&[&theta], &[&[0.5, 0.1]]), 0.1).unwrap();
        // step 1: m̂ = g, v̂ = g², so θ moves by lr·g/(|g| + ε) ≈ lr·sign(g)
        let s1 = vals(&theta);
        assert!(
            (s1[0] - 0.9).abs() < 1e-6 && (s1[1] + 2.1).abs() < 1e-6,
            "{s1:?}"
        );
        opt.step(&grads(&[&theta], &[&[-0.3, 0.2]]), 0.1).unwrap();
        // step 2, element 0: m = 0.9·0.05 − 0.1·0.3 = 0.015, v = 0.999·2.5e-4 + 0.001·0.09
        // = 3.3975e-4, m̂ = 0.015/0.19, v̂ = 3.3975e-4/0.001999 → θ = 0.9 − 0.1·m̂/√v̂
        let s2 = vals(&theta);
        assert!((s2[0] - 0.880_850_2).abs() < 1e-6, "{s2:?}");
        assert!((s2[1] + 2.196_518_2).abs() < 1e-6, "{s2:?}");
        assert_eq!(opt.step_count(), 2);
    }

    #[test]
    fn adamw_decay_is_decoupled_and_adam_decay_is_l2() {
        // With a zero gradient, AdamW shrinks θ by exactly (1 − lr·wd) and the Adam part does
        // nothing (m = v = 0); Adam's L2 decay instead feeds wd·θ through the moments, giving a
        // step of ≈ lr regardless of wd.
        let (lr, wd) = (0.1, 0.5);
        let a = Var::new(&[2f32, -4.], &Device::Cpu).unwrap();
        let mut opt = Adam::new(vec![("a".into(), a.clone())], AdamConfig::adamw(wd)).unwrap();
        opt.step(&grads(&[&a], &[&[0.0, 0.0]]), lr).unwrap();
        assert_eq!(vals(&a), vec![2.0 * 0.95, -4.0 * 0.95]);
        let b = Var::new(&[2f32, -4.], &Device::Cpu).unwrap();
        let cfg = AdamConfig {
            weight_decay: wd,
            ..AdamConfig::default()
        };
        let mut opt = Adam::new(vec![("b".into(), b.clone())], cfg).unwrap();
        opt.step(&grads(&[&b], &[&[0.0, 0.0]]), lr).unwrap();
        let got = vals(&b);
        assert!(
            (got[0] - 1.9).abs() < 1e-6 && (got[1] + 3.9).abs() < 1e-6,
            "{got:?}"
        );
        // the default has no weight decay at all
        assert_eq!(AdamConfig::default().weight_decay, 0.0);
        assert_eq!(AdamConfig::adamw(0.0).weight_decay, 0.0);
    }

    #[test]
    fn eps_scale_acts_exactly_as_a_larger_eps() {
        let g: &[f32] = &[1e-3, -2e-4, 5e-5];
        let run = |cfg: AdamConfig, scale: f64| {
            let w = Var::new(&[0.5f32, 0.1, -0.3], &Device::Cpu).unwrap();
            let o = Var::new(&[1f32], &Device::Cpu).unwrap();
            let mut opt =
                Adam::new(vec![("w".into(), w.clone()), ("o".into(), o.clone())], cfg).unwrap();
            opt.set_eps_scale("w", scale).unwrap();
            for _ in 0..3 {
                opt.step(&grads(&[&w, &o], &[g, &[1e-4]]), 1e-2).unwrap();
            }
            (vals(&w), vals(&o))
        };
        let base = run(AdamConfig::adam(1e-4), 1.0);
        let scaled = run(AdamConfig::adam(1e-4), 7.0);
        let big_eps = run(AdamConfig::adam(7e-4), 1.0);
        assert_eq!(scaled.0, big_eps.0);
        assert_ne!(scaled.0, base.0);
        assert_eq!(
            scaled.1, base.1,
            "another parameter's update must not change"
        );
        assert!(Adam::new(vec![], AdamConfig::default())
            .unwrap()
            .set_eps_scale("nope", 2.0)
            .is_err());
    }

    #[test]
    fn exported_state_resumes_bit_for_bit() {
        let gs = |i: usize| -> Vec<f32> {
            (0..4)
                .map(|j| ((i * 7 + j * 3) as f32 * 0.37).sin())
                .collect()
        };
        let fresh = || Var::new(&[[0.2f32, -0.7], [1.1, 0.05]], &Device::Cpu).unwrap();
        let cfg = AdamConfig::adamw(0.01);
        let w = fresh();
        let mut opt = Adam::new(vec![("w".into(), w.clone())], cfg.clone()).unwrap();
        for i in 0..6 {
            opt.step(&grads(&[&w], &[&gs(i)]), 3e-3).unwrap();
        }
        let w2 = fresh();
        let mut opt2 = Adam::new(vec![("w".into(), w2.clone())], cfg.clone()).unwrap();
        for i in 0..3 {
            opt2.step(&grads(&[&w2], &[&gs(i)]), 3e-3).unwrap();
        }
        let state = opt2.state().unwrap();
        let saved = w2.as_tensor().copy().unwrap();
        let w3 = fresh();
        w3.set(&saved).unwrap();
        let mut opt3 = Adam::new(vec![("w".into(), w3.clone())], cfg).unwrap();
        opt3.load_state(&state, Path::new("optimizer.safetensors"))
            .unwrap();
        assert_eq!(opt3.step_count(), 3);
        for i in 3..6 {
            opt3.step(&grads(&[&w3], &[&gs(i)]), 3e-3).unwrap();
        }
        let (a, b) = (vals(&w), vals(&w3));
        assert_eq!(
            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        // a state for other parameters is refused with every problem named
        let mut bad = opt3.state().unwrap();
        bad.tensors.remove("w.exp_avg");
        bad.tensors.insert(
            "x.exp_avg".into(),
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        );
        let e = opt3
            .load_state(&bad, Path::new("opt.st"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("opt.st")
                && e.contains("missing `w.exp_avg`")
                && e.contains("unexpected `x.exp_avg`"),
            "{e}"
        );
    }

    #[test]
    fn tensor_path_matches_host_path() {
        // The off-CPU code path, exercised on the CPU through a non-contiguous-free route: a
        // slot with device moments.
        let g: &[f32] = &[0.3, -0.1, 0.02, 0.7];
        let a = Var::new(&[1f32, 2., 3., 4.], &Device::Cpu).unwrap();
        let b = Var::new(&[1f32, 2., 3., 4.], &Device::Cpu).unwrap();
        let cfg = AdamConfig {
            weight_decay: 0.1,
            ..AdamConfig::default()
        };
        let mut oa = Adam::new(vec![("p".into(), a.clone())], cfg.clone()).unwrap();
        let mut ob = Adam::new(vec![("p".into(), b.clone())], cfg).unwrap();
        ob.slots[0].m = Moment::Device(b.zeros_like().unwrap());
        ob.slots[0].v = Moment::Device(b.zeros_like().unwrap());
        for _ in 0..3 {
            oa.step(&grads(&[&a], &[g]), 0.05).unwrap();
            ob.step(&grads(&[&b], &[g]), 0.05).unwrap();
        }
        for (x, y) in vals(&a).iter().zip(vals(&b)) {
            assert!((x - y).abs() < 2e-6 * x.abs().max(1.0), "{x} vs {y}");
        }
    }
}
