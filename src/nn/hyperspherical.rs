//! SimbaV2's hyperspherical network blocks (Lee et al., "Hyperspherical Normalization for
//! Scalable Deep Reinforcement Learning", ICML 2025, §3–4): every hidden feature and every dense
//! kernel's per-output-unit weight vector lives on the unit sphere.
//!
//! - [`HyperDense`]: a linear map without bias, orthogonal init, whose rows (PyTorch layout
//!   `[out, in]`: one row per output unit) are re-projected to unit l2 norm at init and after
//!   every optimiser step ([`HyperDense::project`]).
//! - [`Scaler`]: a learnable per-dimension vector stored as `scale` and multiplied by
//!   `init/scale` in the forward pass, so its effective value starts at `init` while Adam sees a
//!   parameter of magnitude `scale` (the paper's "init/scale trick").
//! - [`HyperEmbedding`]: append the shift `c = 3`, l2-normalise, dense, scaler, l2-normalise.
//! - [`HyperLerpBlock`]: `h = l2norm(W₂ relu(Scaler(W₁ x)))`, `x ← l2norm(x + α ⊙ (h − x))`.
//! - [`HyperHead`]: dense(d_h) → scaler(init 1, scale 1) → dense(out) + bias.
//! - [`HyperNet`]: embedding + L blocks, the body of SimbaV2's actor and critic.
//!
//! `l2norm` and the per-dimension scalers are single CPU ops ([`crate::nn::rowwise`], the
//! scaler before a ReLU fused with it); off the CPU, per-dimension products are written as
//! `x ⊙ (1ₙ · sᵀ)` (a rank-1 matmul) rather than a broadcast multiply, for the same reason
//! [`crate::nn::linear::linear`] adds biases that way: the gradient of `s` is then a matrix
//! product instead of candle's slow strided reduction.

use candle_core::{Tensor, Var, D};

use crate::error::Result;
use crate::nn::dense::dense;
use crate::nn::host;
use crate::nn::init::Init;
use crate::nn::params::ParamPath;

/// `x / max(‖x‖, 1e-8)` over the last dimension (SimbaV2's `l2norm`).
pub fn l2norm(x: &Tensor) -> candle_core::Result<Tensor> {
    crate::nn::rowwise::l2norm(x)
}

/// `x ⊙ v` for `x` `(rows, d)` and a vector `v` `[d]`.
pub fn mul_rows(x: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
    crate::nn::rowwise::scale_cols(x, v, false)
}

/// A parameter as the forward pass should see it: itself, or a detached alias (shared storage,
/// no gradient) when the caller only needs gradients with respect to the inputs (SAC's actor
/// loss differentiates the critic with respect to the action, not its weights).
fn view(v: &Var, grad: bool) -> Tensor {
    if grad {
        v.as_tensor().clone()
    } else {
        v.as_detached_tensor()
    }
}

/// Rescales each row of a `[rows, cols]` f32 matrix to unit l2 norm (rows of norm below 1e-8
/// are left alone).
pub fn normalize_rows(data: &mut [f32], cols: usize) {
    for row in data.chunks_mut(cols.max(1)) {
        // eight f32 partial sums, so that it vectorises (a serial f64 sum took 5.5 ms of
        // SimbaV2's ~100 ms update)
        let n = crate::nn::rowwise::dot::<false>(row, row).sqrt();
        if n > 1e-8 {
            let inv = 1.0 / n;
            row.iter_mut().for_each(|x| *x *= inv);
        }
    }
}

/// A bias-free dense layer with unit-norm rows: parameter `<path>.weight` `[out, in]`.
pub struct HyperDense {
    name: String,
    weight: Var,
}

impl HyperDense {
    /// `init` (SimbaV2: orthogonal, gain 1), then projected to unit rows. A network that will
    /// be overwritten at once (a target copy) passes [`Init::Zeros`] to skip the orthogonal
    /// factorisation, which dominates construction time at the paper's sizes.
    pub fn new(
        p: &mut ParamPath<'_>,
        in_features: usize,
        out_features: usize,
        init: Init,
    ) -> Result<Self> {
        let weight = p.var("weight", &[out_features, in_features], init)?;
        let layer = Self {
            name: p.name("weight"),
            weight,
        };
        layer.project()?;
        Ok(layer)
    }

    pub fn forward(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        Ok(dense(x, &view(&self.weight, grad), None, false)?)
    }

    /// Re-projects every row (output unit) onto the unit sphere, in place on the CPU.
    pub fn project(&self) -> Result<()> {
        let w = self.weight.as_tensor();
        let cols = w.dim(1)?;
        if host::is_host_f32(w) {
            host::update_in_place(w, "hyperdense-project", |d| normalize_rows(d, cols))?;
        } else {
            let n = w.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-8)?;
            self.weight.set(&w.broadcast_div(&n)?)?;
        }
        Ok(())
    }

    /// The kernel's full name (`critic.0.blocks.0.w1.weight`).
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn weight(&self) -> &Var {
        &self.weight
    }
}

/// A learnable per-dimension scale: parameter `<path>.scale` `[d]` initialised to `scale`,
/// applied as `x ⊙ scale_param · (init/scale)`.
pub struct Scaler {
    param: Var,
    factor: f64,
}

impl Scaler {
    pub fn new(p: &mut ParamPath<'_>, dim: usize, init: f64, scale: f64) -> Result<Self> {
        Ok(Self {
            param: p.var("scale", &[dim], Init::Const(scale as f32))?,
            factor: init / scale,
        })
    }

    /// The effective per-dimension values `scale_param · init/scale`.
    pub fn value(&self, grad: bool) -> Result<Tensor> {
        Ok(view(&self.param, grad).affine(self.factor, 0.0)?)
    }

    pub fn forward(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        Ok(mul_rows(x, &self.value(grad)?)?)
    }

    /// `relu(x ⊙ value)` in one op.
    pub fn forward_relu(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        Ok(crate::nn::rowwise::scale_cols(x, &self.value(grad)?, true)?)
    }
}

/// Records the mean l2 norm of a batch of features under `name` (diagnostics only).
pub type FeatureLog<'a> = Option<&'a mut Vec<(String, f64)>>;

fn record(log: &mut FeatureLog<'_>, name: impl FnOnce() -> String, x: &Tensor) -> Result<()> {
    if let Some(l) = log.as_mut() {
        let n = x.detach().sqr()?.sum(D::Minus1)?.sqrt()?.mean_all()?;
        l.push((
            name(),
            n.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?,
        ));
    }
    Ok(())
}

/// Shift + l2 input embedding (SimbaV2 §3.1): `l2norm(Scaler(W · l2norm([x, c])))`.
pub struct HyperEmbedding {
    shift: f64,
    dense: HyperDense,
    scaler: Scaler,
}

impl HyperEmbedding {
    pub fn new(
        p: &mut ParamPath<'_>,
        in_dim: usize,
        hidden: usize,
        shift: f64,
        init: Init,
    ) -> Result<Self> {
        let s = (2.0 / hidden as f64).sqrt();
        Ok(Self {
            shift,
            dense: HyperDense::new(&mut p.pp("dense"), in_dim + 1, hidden, init)?,
            scaler: Scaler::new(&mut p.pp("scaler"), hidden, s, s)?,
        })
    }

    pub fn forward(&self, x: &Tensor, grad: bool, log: &mut FeatureLog<'_>) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let c = Tensor::full(self.shift as f32, (rows, 1), x.device())?.to_dtype(x.dtype())?;
        let x = l2norm(&Tensor::cat(&[x, &c], 1)?)?;
        let h = self.scaler.forward(&self.dense.forward(&x, grad)?, grad)?;
        record(log, || "embedding".into(), &h)?;
        Ok(l2norm(&h)?)
    }
}

/// SimbaV2's LERP residual block (§3.3) with MLP expansion 4.
pub struct HyperLerpBlock {
    w1: HyperDense,
    scaler: Scaler,
    w2: HyperDense,
    alpha: Scaler,
}

impl HyperLerpBlock {
    /// `n_blocks` is the network's L (α starts at 1/(L+1)).
    pub fn new(p: &mut ParamPath<'_>, hidden: usize, n_blocks: usize, init: Init) -> Result<Self> {
        let s = (2.0 / hidden as f64).sqrt();
        Ok(Self {
            w1: HyperDense::new(&mut p.pp("w1"), hidden, 4 * hidden, init)?,
            scaler: Scaler::new(&mut p.pp("scaler"), 4 * hidden, s, s)?,
            w2: HyperDense::new(&mut p.pp("w2"), 4 * hidden, hidden, init)?,
            alpha: Scaler::new(
                &mut p.pp("alpha"),
                hidden,
                1.0 / (n_blocks as f64 + 1.0),
                1.0 / (hidden as f64).sqrt(),
            )?,
        })
    }

    pub fn forward(
        &self,
        x: &Tensor,
        grad: bool,
        log: &mut FeatureLog<'_>,
        name: &str,
    ) -> Result<Tensor> {
        let h = self.scaler.forward_relu(&self.w1.forward(x, grad)?, grad)?;
        let h = self.w2.forward(&h, grad)?;
        record(log, || format!("{name}.mlp"), &h)?;
        let h = l2norm(&h)?;
        Ok(crate::nn::rowwise::lerp_l2norm(
            x,
            &h,
            &self.alpha.value(grad)?,
        )?)
    }

    fn kernels(&self) -> [&HyperDense; 2] {
        [&self.w1, &self.w2]
    }
}

/// Output head: `W₂ · Scaler(W₁ x) + b` with a unit-row `W₁` `[d_h, d_h]`, scaler init 1 /
/// scale 1, unit-row `W₂` `[out, d_h]` and a zero-initialised bias `<path>.bias`.
pub struct HyperHead {
    w1: HyperDense,
    scaler: Scaler,
    w2: HyperDense,
    bias: Var,
}

impl HyperHead {
    pub fn new(p: &mut ParamPath<'_>, hidden: usize, out: usize, init: Init) -> Result<Self> {
        Ok(Self {
            w1: HyperDense::new(&mut p.pp("w1"), hidden, hidden, init)?,
            scaler: Scaler::new(&mut p.pp("scaler"), hidden, 1.0, 1.0)?,
            w2: HyperDense::new(&mut p.pp("w2"), hidden, out, init)?,
            bias: p.var("bias", &[out], Init::Zeros)?,
        })
    }

    pub fn forward(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        let h = self.scaler.forward(&self.w1.forward(x, grad)?, grad)?;
        Ok(dense(
            &h,
            &view(self.w2.weight(), grad),
            Some(&view(&self.bias, grad)),
            false,
        )?)
    }

    fn kernels(&self) -> [&HyperDense; 2] {
        [&self.w1, &self.w2]
    }
}

/// SimbaV2 body: embedding then `n_blocks` LERP blocks of width `hidden`, followed by one
/// head per entry of `outputs` (the actor's mean and log-std heads, the critic's logits).
pub struct HyperNet {
    embedding: HyperEmbedding,
    blocks: Vec<HyperLerpBlock>,
    heads: Vec<HyperHead>,
}

/// SimbaV2's kernel initialisation: orthogonal with gain 1.
pub const ORTHOGONAL: Init = Init::Orthogonal { gain: 1.0 };

/// SimbaV2's input shift `c` (§3.1).
pub const INPUT_SHIFT: f64 = 3.0;

impl HyperNet {
    /// Parameters `<p>.embedding.*`, `<p>.blocks.<i>.*`, `<p>.<head name>.*`; kernels drawn
    /// from `init` ([`ORTHOGONAL`] as in the paper, or zeros for a copy about to be overwritten).
    pub fn new(
        p: &mut ParamPath<'_>,
        in_dim: usize,
        hidden: usize,
        n_blocks: usize,
        outputs: &[(&str, usize)],
        init: Init,
    ) -> Result<Self> {
        let embedding =
            HyperEmbedding::new(&mut p.pp("embedding"), in_dim, hidden, INPUT_SHIFT, init)?;
        let blocks = (0..n_blocks)
            .map(|i| HyperLerpBlock::new(&mut p.pp("blocks").pp(i), hidden, n_blocks, init))
            .collect::<Result<Vec<_>>>()?;
        let heads = outputs
            .iter()
            .map(|(name, out)| HyperHead::new(&mut p.pp(name), hidden, *out, init))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embedding,
            blocks,
            heads,
        })
    }

    /// One output per head. `grad = false` detaches the parameters (gradients still flow to `x`).
    pub fn forward(&self, x: &Tensor, grad: bool, mut log: FeatureLog<'_>) -> Result<Vec<Tensor>> {
        let mut h = self.embedding.forward(x, grad, &mut log)?;
        for (i, b) in self.blocks.iter().enumerate() {
            h = b.forward(&h, grad, &mut log, &format!("blocks.{i}"))?;
        }
        self.heads
            .iter()
            .map(|head| head.forward(&h, grad))
            .collect()
    }

    /// Every hyperspherical kernel (projected after each step).
    pub fn kernels(&self) -> Vec<&HyperDense> {
        let mut k = vec![&self.embedding.dense];
        for b in &self.blocks {
            k.extend(b.kernels());
        }
        for h in &self.heads {
            k.extend(h.kernels());
        }
        k
    }

    /// Re-projects every kernel onto unit rows.
    pub fn project(&self) -> Result<()> {
        self.kernels().into_iter().try_for_each(|k| k.project())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::params::ParamStore;
    use candle_core::{DType, Device};

    fn row_norms(w: &Tensor) -> Vec<f32> {
        w.sqr()
            .unwrap()
            .sum(1)
            .unwrap()
            .sqrt()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn shapes_names_unit_rows_and_unit_features() {
        let dev = Device::Cpu;
        let mut store = ParamStore::new(&dev, 0);
        let net = HyperNet::new(
            &mut store.pp("critic"),
            5,
            16,
            2,
            &[("head", 101)],
            ORTHOGONAL,
        )
        .unwrap();
        for name in [
            "critic.embedding.dense.weight",
            "critic.embedding.scaler.scale",
            "critic.blocks.1.w1.weight",
            "critic.blocks.1.alpha.scale",
            "critic.head.w2.weight",
            "critic.head.bias",
        ] {
            assert!(store.get(name).is_some(), "{name} missing");
        }
        assert_eq!(
            store.get("critic.blocks.0.w1.weight").unwrap().dims(),
            &[64, 16]
        );
        assert_eq!(
            store.get("critic.embedding.dense.weight").unwrap().dims(),
            &[16, 6]
        );
        assert_eq!(net.kernels().len(), 1 + 2 * 2 + 2);
        for k in net.kernels() {
            for n in row_norms(k.weight().as_tensor()) {
                assert!((n - 1.0).abs() < 1e-5, "{}: row norm {n}", k.name());
            }
        }
        // the effective scaler value starts at init
        let alpha = store.get("critic.blocks.0.alpha.scale").unwrap();
        let v: Vec<f32> = alpha.to_vec1().unwrap();
        assert!((v[0] - 0.25).abs() < 1e-6, "stored as scale = 1/√16");
        let x = Tensor::randn(0f32, 3.0, (7, 5), &dev).unwrap();
        let mut log = Vec::new();
        let out = net.forward(&x, true, Some(&mut log)).unwrap();
        assert_eq!(out[0].dims(), &[7, 101]);
        assert_eq!(log.len(), 3, "{log:?}");
        // a scaled-down weight is projected back
        let w = store.get("critic.head.w1.weight").unwrap();
        net.kernels()[5].weight().set(&(w * 3.0).unwrap()).unwrap();
        net.project().unwrap();
        for n in row_norms(net.kernels()[5].weight().as_tensor()) {
            assert!((n - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn l2norm_rows_and_zero_row() {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(vec![3f32, 4.0, 0.0, 0.0], (2, 2), &dev).unwrap();
        let y: Vec<Vec<f32>> = l2norm(&x).unwrap().to_vec2().unwrap();
        assert_eq!(y, vec![vec![0.6, 0.8], vec![0.0, 0.0]]);
        let v = Tensor::from_vec(vec![2f32, -1.0], 2, &dev).unwrap();
        let m: Vec<Vec<f32>> = mul_rows(&x, &v).unwrap().to_vec2().unwrap();
        assert_eq!(m, vec![vec![6.0, -4.0], vec![0.0, 0.0]]);
        let _ = DType::F32;
    }
}
