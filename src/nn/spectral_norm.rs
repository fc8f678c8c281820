//! Spectral normalisation of a layer's weight (Miyato et al., 2018), as used for value networks
//! by Gogianu et al., "Spectral Normalisation for Deep Reinforcement Learning: an Optimisation
//! Perspective" (ICML 2021).
//!
//! The weight is viewed as a matrix `W` of shape `[out, in]` (a conv kernel `[out, in, k, k]` as
//! `[out, in·k·k]`). Its largest singular value σ is tracked by power iteration with persistent
//! vectors `u` (length `out`) and `v` (length `in`), stored as buffers `<layer>.weight_u` and
//! `<layer>.weight_v` (PyTorch's names). Each *training* forward pass runs one iteration, without
//! gradient; evaluation passes run none, so acting never changes the network. Then
//! `σ = uᵀ W v`, with the gradient flowing through `W` (Miyato et al., eq. 12–13).
//!
//! The raw weight keeps the name `<layer>.weight` in every mode, so a checkpoint moves between
//! normalised and plain networks by dropping or adding the two buffers.

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::nn::init::Init;
use crate::nn::params::ParamPath;

/// How a layer uses its tracked σ (Gogianu et al. 2021, §2 and §5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnMode {
    /// No spectral normalisation; no buffers are created.
    Off,
    /// Forward pass with `W / σ` (the paper's SN). The default when layers are chosen.
    #[default]
    Forward,
    /// Forward pass with `W / max(σ, 1)`: only layers whose norm exceeds 1 are scaled down
    /// (Miyato et al.'s "leave smaller" option, studied by Gogianu et al.).
    ForwardLeaveSmaller,
    /// Plain forward pass; before the optimiser step the layer's weight gradient is divided by
    /// `max(σ, 1)` (the paper's divGrad: SN seen as a per-layer step size).
    DivGrad,
    /// Plain forward pass; the optimiser's ε for the layer's weight is multiplied by σ (mulEps:
    /// Adam is nearly invariant to gradient scale, so scaling ε approximates divGrad).
    MulEps,
    /// The layer's whole output (bias included) is divided by σ, with σ treated as a constant
    /// (no gradient through it): `y = (W x + b) / sg(σ)`. The paper names this variant without a
    /// formula; this choice isolates the forward rescaling from SN's gradient through σ, which
    /// is the contrast the variant exists to test (with the bias divided because it is part of
    /// the layer's output).
    DivOut,
}

impl SnMode {
    /// Whether the forward pass differs from the plain layer.
    pub fn changes_forward(self) -> bool {
        matches!(
            self,
            SnMode::Forward | SnMode::ForwardLeaveSmaller | SnMode::DivOut
        )
    }
}

/// Power iterations run at construction, so an evaluation pass before the first training pass
/// divides by a sensible σ rather than by `uᵀWv` for random `u`, `v` (which can be near zero or
/// negative). PyTorch's `parametrizations.spectral_norm` does the same (15 iterations).
pub const INIT_POWER_ITERATIONS: usize = 15;

/// Guards the normalisation of a zero vector (PyTorch's `F.normalize` default).
const NORMALIZE_EPS: f64 = 1e-12;

/// `x / max(‖x‖, 1e-12)` for a 1-d tensor.
fn normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x.sqr()?.sum_all()?.sqrt()?.maximum(NORMALIZE_EPS)?;
    x.broadcast_div(&norm)
}

/// One power-iteration step on `w` (`[out, in]`): `v ← normalize(Wᵀu)`, `u ← normalize(W v)`.
/// Returns the new `(u, v)`, detached from any graph.
pub fn power_step(w: &Tensor, u: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let w = w.detach();
    let v = normalize(&u.unsqueeze(0)?.matmul(&w)?.squeeze(0)?)?;
    let u = normalize(&w.matmul(&v.unsqueeze(1)?)?.squeeze(1)?)?;
    Ok((u, v))
}

/// `σ = uᵀ W v` as a 0-d tensor; differentiable in `w` (u and v are constants).
pub fn sigma_of(w: &Tensor, u: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
    let (u, v) = (u.detach(), v.detach());
    u.unsqueeze(0)?
        .matmul(&w.matmul(&v.unsqueeze(1)?)?)?
        .reshape(())
}

/// What a layer's forward pass does after spectral normalisation.
pub struct SnApplied {
    /// Forward modes: σ (or `max(σ, 1)`), carrying the gradient through σ; the layer's weight
    /// is divided by it. The layer is linear in its weight, so it may equally divide its output
    /// before the bias, `(x Wᵀ)/σ + b`: same value, same gradients, and cheaper when the output
    /// is smaller than the weight (a 1024→128 layer at batch 32). See [`SnApplied::weight`].
    pub weight_divisor: Option<Tensor>,
    /// [`SnMode::DivOut`]: the detached σ dividing the layer's whole output, bias included.
    pub output_divisor: Option<Tensor>,
}

impl SnApplied {
    /// The weight divided by [`Self::weight_divisor`] (the weight itself when there is none).
    pub fn weight(&self, weight: &Tensor) -> candle_core::Result<Tensor> {
        match &self.weight_divisor {
            Some(d) => weight.broadcast_div(d),
            None => Ok(weight.clone()),
        }
    }
}

/// The spectral-norm state of one layer: its mode and its power-iteration vectors.
pub struct SpectralNorm {
    mode: SnMode,
    u: Var,
    v: Var,
}

impl SpectralNorm {
    /// Creates buffers `weight_u` (`[out]`) and `weight_v` (`[in]`) under the layer's path `p`,
    /// each drawn from N(0, 1) and normalised, then runs [`INIT_POWER_ITERATIONS`] on `weight`.
    /// `mode` must not be [`SnMode::Off`] (a layer without SN holds no `SpectralNorm`).
    pub fn new(p: &mut ParamPath<'_>, weight: &Var, mode: SnMode) -> Result<Self> {
        let dims = weight.dims();
        let out = dims.first().copied().unwrap_or(1);
        let inp = weight.elem_count() / out.max(1);
        let normal = Init::Normal { std: 1.0 };
        let u = p.buffer("weight_u", &[out], normal)?;
        let v = p.buffer("weight_v", &[inp], normal)?;
        u.set(&normalize(u.as_tensor())?)?;
        v.set(&normalize(v.as_tensor())?)?;
        let sn = Self { mode, u, v };
        sn.power_iterations(weight.as_tensor(), INIT_POWER_ITERATIONS)?;
        Ok(sn)
    }

    pub fn mode(&self) -> SnMode {
        self.mode
    }

    fn matrix(w: &Tensor) -> candle_core::Result<Tensor> {
        let out = w.dim(0)?;
        w.reshape((out, w.elem_count() / out))
    }

    /// Runs `n` power iterations on `weight` (any shape; flattened to `[out, rest]`) and stores
    /// the new `u`, `v`.
    pub fn power_iterations(&self, weight: &Tensor, n: usize) -> Result<()> {
        let w = Self::matrix(weight)?;
        let mut u = self.u.as_detached_tensor().to_dtype(w.dtype())?;
        let mut v = None;
        for _ in 0..n {
            let (nu, nv) = power_step(&w, &u)?;
            u = nu;
            v = Some(nv);
        }
        if let Some(v) = v {
            self.u.set(&u.to_dtype(self.u.dtype())?)?;
            self.v.set(&v.to_dtype(self.v.dtype())?)?;
        }
        Ok(())
    }

    /// The current estimate `σ = uᵀ W v` of `weight`'s spectral norm, without gradient (for
    /// metrics and for the optimiser-side variants).
    pub fn sigma(&self, weight: &Tensor) -> Result<f64> {
        let s = self.sigma_tensor(&weight.detach())?;
        Ok(s.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
    }

    fn sigma_tensor(&self, weight: &Tensor) -> candle_core::Result<Tensor> {
        let w = Self::matrix(weight)?;
        let dt = w.dtype();
        sigma_of(
            &w,
            &self.u.as_tensor().to_dtype(dt)?,
            &self.v.as_tensor().to_dtype(dt)?,
        )
    }

    /// What a forward pass does with `weight`. With `train`, one power iteration runs first;
    /// the optimiser-side modes ([`SnMode::DivGrad`], [`SnMode::MulEps`]) only track σ and
    /// leave the forward pass alone.
    pub fn apply(&self, weight: &Tensor, train: bool) -> Result<SnApplied> {
        if train {
            self.power_iterations(weight, 1)?;
        }
        let (weight_divisor, output_divisor) = match self.mode {
            SnMode::Off | SnMode::DivGrad | SnMode::MulEps => (None, None),
            SnMode::Forward => (Some(self.sigma_tensor(weight)?), None),
            SnMode::ForwardLeaveSmaller => (Some(self.sigma_tensor(weight)?.maximum(1.0)?), None),
            SnMode::DivOut => (None, Some(self.sigma_tensor(&weight.detach())?)),
        };
        Ok(SnApplied {
            weight_divisor,
            output_divisor,
        })
    }

    /// The weight the forward pass effectively uses (`W/σ`, `W/max(σ, 1)` or `W`), with the
    /// current vectors and no power iteration: for inspection and tests.
    pub fn effective_weight(&self, weight: &Tensor) -> Result<Tensor> {
        Ok(self.apply(weight, false)?.weight(weight)?)
    }
}

/// The largest singular value of a row-major `rows × cols` matrix, computed in f64 by power
/// iteration on `WᵀW` until it settles: an independent reference for tests and diagnostics.
pub fn largest_singular_value(w: &[f32], rows: usize, cols: usize) -> f64 {
    let mut x = vec![1.0f64; cols];
    // a fixed non-symmetric start avoids starting orthogonal to the top singular vector
    for (i, xi) in x.iter_mut().enumerate() {
        *xi += (i as f64 * 0.618).sin();
    }
    let mut sigma = 0.0;
    for _ in 0..10_000 {
        let wx: Vec<f64> = (0..rows)
            .map(|r| (0..cols).map(|c| w[r * cols + c] as f64 * x[c]).sum())
            .collect();
        let mut y: Vec<f64> = (0..cols)
            .map(|c| (0..rows).map(|r| w[r * cols + c] as f64 * wx[r]).sum())
            .collect();
        let norm = y.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        y.iter_mut().for_each(|a| *a /= norm);
        let next = norm.sqrt();
        x = y;
        if (next - sigma).abs() <= 1e-13 * next {
            return next;
        }
        sigma = next;
    }
    sigma
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::params::ParamStore;
    use candle_core::{DType, Device};

    #[test]
    fn effective_spectral_norm_is_one_after_power_iterations() {
        let mut store = ParamStore::new(&Device::Cpu, 5);
        let mut p = store.pp("layer");
        let w = p
            .var("weight", &[24, 40], Init::Uniform { bound: 0.7 })
            .unwrap();
        let sn = SpectralNorm::new(&mut p, &w, SnMode::Forward).unwrap();
        for _ in 0..40 {
            sn.apply(w.as_tensor(), true).unwrap();
        }
        let data: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let reference = largest_singular_value(&data, 24, 40);
        assert!(
            reference > 1.5,
            "test needs a norm well above 1: {reference}"
        );
        let tracked = sn.sigma(w.as_tensor()).unwrap();
        assert!((tracked - reference).abs() / reference < 1e-4);
        // the normalised weight the forward pass uses has spectral norm 1
        let eff = sn.effective_weight(w.as_tensor()).unwrap();
        let eff: Vec<f32> = eff.flatten_all().unwrap().to_vec1().unwrap();
        let norm = largest_singular_value(&eff, 24, 40);
        assert!((norm - 1.0).abs() < 1e-3, "effective norm {norm}");
        // leave-smaller leaves a small matrix alone
        let small = (w.as_tensor() * (0.5 / reference)).unwrap();
        let mut store2 = ParamStore::new(&Device::Cpu, 6);
        let mut p2 = store2.pp("s");
        let w2 = p2.var("weight", &[24, 40], Init::Zeros).unwrap();
        w2.set(&small).unwrap();
        let sn2 = SpectralNorm::new(&mut p2, &w2, SnMode::ForwardLeaveSmaller).unwrap();
        sn2.apply(w2.as_tensor(), true).unwrap();
        let eff2 = sn2.effective_weight(w2.as_tensor()).unwrap();
        let diff = crate::nn::grad_check::max_abs_diff(&eff2, &small).unwrap();
        assert_eq!(diff, 0.0);
    }

    #[test]
    fn evaluation_passes_do_not_move_the_vectors() {
        let mut store = ParamStore::new(&Device::Cpu, 1);
        let mut p = store.pp("c");
        let w = p
            .var("weight", &[4, 2, 3, 3], Init::torch_default(18))
            .unwrap();
        let sn = SpectralNorm::new(&mut p, &w, SnMode::Forward).unwrap();
        assert_eq!(
            store.buffers().keys().collect::<Vec<_>>(),
            ["c.weight_u", "c.weight_v"]
        );
        assert_eq!(store.get("c.weight_v").unwrap().dims(), &[18]);
        let before = store.get("c.weight_u").unwrap().to_vec1::<f32>().unwrap();
        sn.apply(w.as_tensor(), false).unwrap();
        let after = store.get("c.weight_u").unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(before, after);
        // a training pass moves them (the iteration has not converged to f32 precision)
        let w_new = (w.as_tensor() * 2.0).unwrap().sin().unwrap();
        w.set(&w_new).unwrap();
        sn.apply(w.as_tensor(), true).unwrap();
        let moved = store.get("c.weight_u").unwrap().to_vec1::<f32>().unwrap();
        assert_ne!(before, moved);
        let norm: f32 = moved.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }

    /// f64 central differences of `L = Σ R ⊙ (x (W/σ(W))ᵀ + b)` against backprop, with u, v
    /// held fixed: checks the gradient through σ (`∂σ/∂W = u vᵀ`).
    #[test]
    fn forward_sn_gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::seed_from_u64(3);
        let mut draw = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.normal()).collect() };
        let (out, inp, batch) = (3, 4, 2);
        let x = Tensor::from_vec(draw(batch * inp), (batch, inp), &dev).unwrap();
        let r = Tensor::from_vec(draw(batch * out), (batch, out), &dev).unwrap();
        let u = normalize(&Tensor::from_vec(draw(out), out, &dev).unwrap()).unwrap();
        let v = normalize(&Tensor::from_vec(draw(inp), inp, &dev).unwrap()).unwrap();
        let w0 = draw(out * inp);
        let loss = |w: &Tensor| -> Tensor {
            let s = sigma_of(w, &u, &v).unwrap();
            let wn = w.broadcast_div(&s).unwrap();
            let y = x.matmul(&wn.t().unwrap()).unwrap();
            (y * &r).unwrap().sum_all().unwrap()
        };
        let w = Var::from_vec(w0.clone(), (out, inp), &dev).unwrap();
        let grads = loss(w.as_tensor()).backward().unwrap();
        let g: Vec<f64> = grads
            .get(w.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let h = 1e-6;
        for i in 0..w0.len() {
            let eval = |d: f64| {
                let mut wp = w0.clone();
                wp[i] += d;
                let t = Tensor::from_vec(wp, (out, inp), &dev).unwrap();
                loss(&t).to_scalar::<f64>().unwrap()
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                "{i}: {fd} vs {}",
                g[i]
            );
        }
        assert_eq!(sigma_of(w.as_tensor(), &u, &v).unwrap().dtype(), DType::F64);
    }
}
