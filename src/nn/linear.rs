//! Fully connected layer with PyTorch's parameter names and default initialisation.

use candle_core::{Tensor, Var, D};

use crate::error::Result;
use crate::nn::dense;
use crate::nn::init::Init;
use crate::nn::params::ParamPath;
use crate::nn::spectral_norm::{SnMode, SpectralNorm};

/// `y = x Wᵀ + b` for `x` of shape `(…, in)`, `w` `[out, in]`, `b` `[out]`. On the CPU with a
/// rank-2 input this is one fused node ([`dense`]); elsewhere tensor ops.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    match dense::on_host(x, w, b, false)? {
        Some(y) => Ok(y),
        None => linear_ops(x, w, b),
    }
}

/// [`linear`] as tensor ops on any device (the reference the fused node is tested against).
pub(crate) fn linear_ops(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let dims = x.dims();
    let y = if dims.len() == 2 {
        x.matmul(&w.t()?)?
    } else {
        let inp = dims.last().copied().unwrap_or(1);
        let rows = x.elem_count() / inp.max(1);
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = w.dim(0)?;
        }
        x.reshape((rows, inp))?.matmul(&w.t()?)?.reshape(out_dims)?
    };
    match b {
        // The bias enters as the rank-1 product `1 · bᵀ` (ones over the rows) rather than a
        // broadcast add: the value is the same, but its gradient `1ᵀ · dY` is then a matrix
        // product, where candle's backward of a broadcast add sums over the batch dimension with
        // a strided reduction that costs several times more on the CPU (measured on the DQN
        // update, see `reincarnate bench updates`).
        Some(b) if y.rank() == 2 => {
            let rows = y.dim(0)?;
            let ones = Tensor::ones((rows, 1), y.dtype(), y.device())?;
            y + ones.matmul(&b.reshape((1, b.elem_count()))?)?
        }
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// A linear layer: parameters `<path>.weight` `[out, in]` and `<path>.bias` `[out]`, both
/// initialised U(-1/√in, 1/√in) as PyTorch's `nn.Linear`; optionally spectrally normalised.
pub struct Linear {
    name: String,
    weight: Var,
    bias: Option<Var>,
    sn: Option<SpectralNorm>,
}

impl Linear {
    /// A layer with bias, PyTorch default init, and spectral norm `sn` (`SnMode::Off`: none).
    pub fn new(
        mut p: ParamPath<'_>,
        in_features: usize,
        out_features: usize,
        sn: SnMode,
    ) -> Result<Self> {
        let init = Init::torch_default(in_features);
        Self::with_init(&mut p, in_features, out_features, init, Some(init), sn)
    }

    /// A layer with explicit initialisers; `bias: None` leaves the bias out.
    pub fn with_init(
        p: &mut ParamPath<'_>,
        in_features: usize,
        out_features: usize,
        weight_init: Init,
        bias: Option<Init>,
        sn: SnMode,
    ) -> Result<Self> {
        let weight = p.var("weight", &[out_features, in_features], weight_init)?;
        let bias = match bias {
            Some(init) => Some(p.var("bias", &[out_features], init)?),
            None => None,
        };
        let sn = match sn {
            SnMode::Off => None,
            mode => Some(SpectralNorm::new(p, &weight, mode)?),
        };
        Ok(Self {
            name: p.prefix().to_string(),
            weight,
            bias,
            sn,
        })
    }

    /// Forward pass; `train` runs the spectral-norm power iteration (if any).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let bias = self.bias.as_ref().map(|b| b.as_tensor());
        let Some(sn) = &self.sn else {
            return Ok(linear(x, self.weight.as_tensor(), bias)?);
        };
        let applied = sn.apply(self.weight.as_tensor(), train)?;
        let w = self.weight.as_tensor();
        let y = match &applied.weight_divisor {
            // (x Wᵀ)/σ + b equals x (W/σ)ᵀ + b; divide whichever tensor is smaller
            Some(d) if x.elem_count() / x.dim(D::Minus1)? * w.dim(0)? < w.elem_count() => {
                let y = linear(x, w, None)?.broadcast_div(d)?;
                match bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                }
            }
            _ => linear(x, &applied.weight(w)?, bias)?,
        };
        Ok(match applied.output_divisor {
            Some(s) => y.broadcast_div(&s)?,
            None => y,
        })
    }

    /// `relu(forward_t(x, train))`; one fused node on the CPU when the layer has no spectral
    /// norm (see [`dense`]).
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match &self.sn {
            None => Ok(dense::dense(
                x,
                self.weight.as_tensor(),
                self.bias.as_ref().map(|b| b.as_tensor()),
                true,
            )?),
            Some(_) => Ok(self.forward_t(x, train)?.relu()?),
        }
    }

    /// Evaluation forward pass.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }

    /// The layer's path (`q.1`).
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn weight(&self) -> &Var {
        &self.weight
    }
    pub fn bias(&self) -> Option<&Var> {
        self.bias.as_ref()
    }
    pub fn spectral_norm(&self) -> Option<&SpectralNorm> {
        self.sn.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::params::ParamStore;
    use candle_core::Device;

    #[test]
    fn names_shapes_and_init_bounds() {
        let mut store = ParamStore::new(&Device::Cpu, 0);
        let l = Linear::new(store.pp("q").pp(1), 16, 5, SnMode::Off).unwrap();
        assert_eq!(l.name(), "q.1");
        assert_eq!(store.get("q.1.weight").unwrap().dims(), &[5, 16]);
        assert_eq!(store.get("q.1.bias").unwrap().dims(), &[5]);
        assert!(store.buffers().is_empty());
        let w: Vec<f32> = store
            .get("q.1.weight")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(w.iter().all(|x| x.abs() <= 0.25));
        let x = Tensor::ones((7, 3, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(l.forward(&x).unwrap().dims(), &[7, 3, 5]);
    }

    /// The SN layer divides its output (small batch) or its weight (large batch) by σ; both
    /// must give `x (W/σ)ᵀ + b` and the same weight gradient through σ.
    #[test]
    fn sn_output_and_weight_division_agree() {
        let dev = Device::Cpu;
        let mut store = ParamStore::new(&dev, 2);
        let l = Linear::new(store.pp("l"), 12, 6, SnMode::Forward).unwrap();
        let w = l.weight().clone();
        let sn = l.spectral_norm().unwrap();
        for batch in [2usize, 40] {
            let mut rng = crate::rng::Rng::seed_from_u64(batch as u64);
            let x: Vec<f32> = (0..batch * 12).map(|_| rng.normal() as f32).collect();
            let x = Tensor::from_vec(x, (batch, 12), &dev).unwrap();
            let r: Vec<f32> = (0..batch * 6).map(|_| rng.normal() as f32).collect();
            let r = Tensor::from_vec(r, (batch, 6), &dev).unwrap();
            let y = l.forward(&x).unwrap();
            let eff = sn.effective_weight(w.as_tensor()).unwrap();
            let y_ref = linear(&x, &eff, l.bias().map(|b| b.as_tensor())).unwrap();
            let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g_ref = (&y_ref * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let close = |a: &Tensor, b: &Tensor| {
                let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
                d.to_scalar::<f32>().unwrap() < 1e-5
            };
            assert!(close(&l.forward(&x).unwrap(), &y_ref), "batch {batch}");
            let gw = g.get(w.as_tensor()).unwrap();
            assert!(
                close(gw, g_ref.get(w.as_tensor()).unwrap()),
                "batch {batch}"
            );
        }
    }

    /// f64 central differences against backprop for the input, weight and bias gradients.
    #[test]
    fn gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::seed_from_u64(9);
        let mut draw = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.normal()).collect() };
        let (batch, inp, out) = (3, 4, 2);
        let vals = [draw(batch * inp), draw(out * inp), draw(out)];
        let r = Tensor::from_vec(draw(batch * out), (batch, out), &dev).unwrap();
        let shapes: [&[usize]; 3] = [&[batch, inp], &[out, inp], &[out]];
        let inputs: Vec<(Vec<f64>, &[usize])> = vals.into_iter().zip(shapes).collect();
        let bad = crate::nn::grad_check::gradient_mismatches(
            &inputs,
            |t| (linear(&t[0], &t[1], Some(&t[2]))?.tanh()? * &r)?.sum_all(),
            1e-7,
            &dev,
        )
        .unwrap();
        assert!(bad.is_empty(), "{bad:#?}");
    }
}
