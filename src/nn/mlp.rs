//! The multilayer perceptron of the platform's actor, critic and policy networks: linear layers
//! with an activation between them, parameters named as a PyTorch `nn.Sequential`
//! (`PREFIX.{k·stride}.weight`; stride 2 where the activations are modules of the sequence, as
//! CleanRL's PPO names them; stride 1 where they are not).

use super::dense::dense;
use super::hyperspherical::FeatureLog;
use super::{Activation, Init, Linear, ParamStore, SnMode};
use crate::error::Result;
use candle_core::{Tensor, Var, D};

/// How the layers are initialised.
#[derive(Clone, Copy, Debug)]
pub enum MlpInit {
    /// PyTorch's `nn.Linear` default (uniform in ±1/√fan_in, weight and bias).
    Torch,
    /// Orthogonal weights with `hidden_gain` (the last layer: `head_gain`) and zero biases, as
    /// CleanRL's PPO (`layer_init`).
    Orthogonal { hidden_gain: f64, head_gain: f64 },
}

/// Linear layers `sizes[0] → sizes[1] → … → sizes[n]` with `activation` after each but the last.
pub struct Mlp {
    layers: Vec<Linear>,
    activation: Activation,
}

impl Mlp {
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        sizes: &[usize],
        activation: Activation,
        init: MlpInit,
        stride: usize,
    ) -> Result<Self> {
        let n = sizes.len().saturating_sub(1);
        let mut layers = Vec::with_capacity(n);
        for (k, w) in sizes.windows(2).enumerate() {
            let mut base = store.pp(prefix);
            let p = base.pp(k * stride);
            layers.push(match init {
                MlpInit::Torch => Linear::new(p, w[0], w[1], SnMode::Off)?,
                MlpInit::Orthogonal {
                    hidden_gain,
                    head_gain,
                } => {
                    let gain = if k + 1 == n { head_gain } else { hidden_gain };
                    let mut p = p;
                    Linear::with_init(
                        &mut p,
                        w[0],
                        w[1],
                        Init::Orthogonal { gain },
                        Some(Init::Zeros),
                        SnMode::Off,
                    )?
                }
            });
        }
        Ok(Self { layers, activation })
    }

    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }

    /// The output for `x`, every parameter with its gradient.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (k, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if k + 1 < self.layers.len() {
                h = self.activation.apply(&h)?;
            }
        }
        Ok(h)
    }

    /// The output for `x` through the fused dense node (product, bias and ReLU in one pass on
    /// the CPU), with the activation after the last layer too when `act_last`. Without `grad` the
    /// parameters enter as detached aliases (gradients reach `x` only: an actor's loss through a
    /// critic). The mean L2 norm of each activated feature row is recorded (as `k`) in `log`.
    pub fn forward_fused(
        &self,
        x: &Tensor,
        grad: bool,
        log: &mut FeatureLog<'_>,
        act_last: bool,
    ) -> Result<Tensor> {
        let view = |v: &Var| {
            if grad {
                v.as_tensor().clone()
            } else {
                v.as_detached_tensor()
            }
        };
        let mut h = x.clone();
        let last = self.layers.len().saturating_sub(1);
        for (k, l) in self.layers.iter().enumerate() {
            let b = l.bias().map(view);
            let act = k < last || act_last;
            let relu = act && self.activation == Activation::Relu;
            h = dense(&h, &view(l.weight()), b.as_ref(), relu)?;
            if act && !relu {
                h = self.activation.apply(&h)?;
            }
            if act {
                if let Some(lg) = log.as_mut() {
                    let n = h.detach().sqr()?.sum(D::Minus1)?.sqrt()?.mean_all()?;
                    lg.push((format!("{k}"), n.to_scalar::<f32>()? as f64));
                }
            }
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn names_follow_the_stride_and_both_forwards_agree() {
        let mut store = ParamStore::new(&Device::Cpu, 3);
        let ortho = MlpInit::Orthogonal {
            hidden_gain: 2f64.sqrt(),
            head_gain: 0.01,
        };
        let m = Mlp::new(&mut store, "actor", &[3, 8, 2], Activation::Relu, ortho, 2).unwrap();
        let mut names: Vec<String> = store.state_dict().into_keys().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "actor.0.bias",
                "actor.0.weight",
                "actor.2.bias",
                "actor.2.weight"
            ]
        );
        // Orthogonal init with zero biases.
        let b: Vec<f32> = m.layers()[0].bias().unwrap().as_tensor().to_vec1().unwrap();
        assert!(b.iter().all(|&v| v == 0.0));
        let x = Tensor::new(&[[0.5f32, -1.0, 2.0], [1.0, 0.0, -0.5]], &Device::Cpu).unwrap();
        let a: Vec<f32> = m
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let f: Vec<f32> = m
            .forward_fused(&x, true, &mut None, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (u, v) in a.iter().zip(&f) {
            assert!((u - v).abs() < 1e-6, "{a:?} vs {f:?}");
        }
        // A tanh network: the activation bounds hidden features, so a large input saturates.
        let mut store = ParamStore::new(&Device::Cpu, 4);
        let t = Mlp::new(
            &mut store,
            "q",
            &[3, 4],
            Activation::Tanh,
            MlpInit::Torch,
            1,
        )
        .unwrap();
        let big = (x * 1e4).unwrap();
        let h: Vec<f32> = t
            .forward_fused(&big, false, &mut None, true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(h.iter().all(|v| v.abs() <= 1.0), "{h:?}");
        assert_eq!(store.state_dict().len(), 2);
    }
}
