//! Q-networks for the DQN family: an MLP body (CartPole) or the MinAtar convolutional body,
//! a linear output of `n_actions × atoms` (atoms = 1: DQN; > 1: C51 logits), and spectral
//! normalisation on chosen layers (Gogianu et al. 2021).
//!
//! Layers are numbered in order under the caller's prefix, counting only linear/conv layers:
//! the MinAtar network (Young & Tian 2019: Conv2d(C, 16, 3×3) → ReLU → flatten → Linear(1024,
//! 128) → ReLU → Linear(128, A)) is `q.0` (conv), `q.1` (hidden fc), `q.2` (output). PyTorch's
//! `nn.Sequential` would number the ReLUs too (`network.0`, `.2`, `.4`); checkpoint import maps
//! those names. The Nature DQN network (Mnih et al. 2015: Conv 32×8×8 stride 4, Conv 64×4×4
//! stride 2, Conv 64×3×3 stride 1, FC 512, output) is `q.0`–`q.2` (convs), `q.3` (fc), `q.4`.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::nn::conv::{conv_out_size, Conv2d};
use crate::nn::grad;
use crate::nn::linear::Linear;
use crate::nn::optim::Adam;
use crate::nn::params::ParamPath;
use crate::nn::spectral_norm::{SnMode, SpectralNorm};

/// The network body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// Fully connected layers with ReLU over the flattened observation.
    #[default]
    Mlp,
    /// MinAtar: one 3×3 stride-1 unpadded convolution, ReLU, flatten, fully connected layers.
    /// Observations are `[10, 10, C]` channel-last (as MinAtar emits them), flattened or not.
    MinatarConv,
    /// The Nature DQN network (Mnih et al. 2015) over channel-first `[C, H, W]` frames with pixel
    /// values 0–255 (divided by 255 inside, as the paper and the Atari ports do; H, W ≥ 36):
    /// three convolutions (32×8×8 stride 4, 64×4×4 stride 2, 64×3×3 stride 1), ReLU, flatten
    /// in (c, h, w) order, then the fully connected layers (`hidden`, default `[512]`).
    NatureCnn,
}

/// The Nature CNN's convolutions: `(out channels, kernel, stride)`.
pub const NATURE_CONVS: [(usize, usize, usize); 3] = [(32, 8, 4), (64, 4, 2), (64, 3, 1)];

/// Which layers get spectral normalisation: Python-style indices over the ordered linear/conv
/// layers (`-1` = output, `-2` = penultimate), or all of them. In TOML: `sn_layers = [-2]` or
/// `sn_layers = "all"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnLayers {
    All,
    Indices(Vec<i64>),
}

impl Default for SnLayers {
    fn default() -> Self {
        SnLayers::Indices(Vec::new())
    }
}

impl SnLayers {
    /// Which of `n_layers` layers are normalised, as a mask. Out-of-range indices are an error
    /// naming the index and the number of layers.
    pub fn resolve(&self, n_layers: usize) -> Result<Vec<bool>> {
        let mut mask = vec![false; n_layers];
        match self {
            SnLayers::All => mask.iter_mut().for_each(|m| *m = true),
            SnLayers::Indices(idx) => {
                let n = n_layers as i64;
                for &i in idx {
                    let j = if i < 0 { i + n } else { i };
                    if !(0..n).contains(&j) {
                        return Err(Error::Config(format!(
                            "sn_layers: index {i} is out of range for a network with {n_layers} \
                             linear/conv layers (valid: {} to {})",
                            -n,
                            n - 1
                        )));
                    }
                    mask[j as usize] = true;
                }
            }
        }
        Ok(mask)
    }
}

impl Serialize for SnLayers {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            SnLayers::All => s.serialize_str("all"),
            SnLayers::Indices(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for SnLayers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SnLayers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of layer indices such as [-2] or the string \"all\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<SnLayers, E> {
                if v == "all" {
                    Ok(SnLayers::All)
                } else {
                    Err(E::custom(format!(
                        "sn_layers: expected a list of layer indices such as [-2] or the string \
                         \"all\", found \"{v}\""
                    )))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<SnLayers, A::Error> {
                let mut v = Vec::new();
                while let Some(i) = seq.next_element::<i64>()? {
                    v.push(i);
                }
                Ok(SnLayers::Indices(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Q-network architecture. Defaults: CartPole's MLP (120, 84) from CleanRL's DQN, one atom,
/// no spectral normalisation (mode `forward` once layers are chosen).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QNetConfig {
    pub body: Body,
    /// Hidden fully connected sizes. Default: `[120, 84]` for `mlp`, `[128]` for
    /// `minatar_conv` (the FC layers after the convolution).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden: Option<Vec<usize>>,
    /// Output channels of the MinAtar convolution (16 in Young & Tian 2019).
    pub conv_channels: usize,
    /// Atoms per action: 1 for DQN, 51 for C51.
    pub atoms: usize,
    pub sn_layers: SnLayers,
    pub sn_mode: SnMode,
}

impl Default for QNetConfig {
    fn default() -> Self {
        Self {
            body: Body::Mlp,
            hidden: None,
            conv_channels: 16,
            atoms: 1,
            sn_layers: SnLayers::default(),
            sn_mode: SnMode::Forward,
        }
    }
}

impl QNetConfig {
    /// The MinAtar DQN network (Young & Tian 2019).
    pub fn minatar() -> Self {
        Self {
            body: Body::MinatarConv,
            ..Self::default()
        }
    }

    /// The hidden sizes in effect (the body's default when not set).
    pub fn hidden_sizes(&self) -> Vec<usize> {
        match (&self.hidden, self.body) {
            (Some(h), _) => h.clone(),
            (None, Body::Mlp) => vec![120, 84],
            (None, Body::MinatarConv) => vec![128],
            (None, Body::NatureCnn) => vec![512],
        }
    }

    /// Convolutions before the fully connected layers.
    pub fn n_convs(&self) -> usize {
        match self.body {
            Body::Mlp => 0,
            Body::MinatarConv => 1,
            Body::NatureCnn => NATURE_CONVS.len(),
        }
    }

    /// Number of linear/conv layers.
    pub fn n_layers(&self) -> usize {
        self.hidden_sizes().len() + 1 + self.n_convs()
    }
}

enum Layer {
    Linear(Linear),
    Conv(Conv2d),
}

impl Layer {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Layer::Linear(l) => l.forward_t(x, train),
            Layer::Conv(c) => c.forward_t(x, train),
        }
    }
    fn name(&self) -> &str {
        match self {
            Layer::Linear(l) => l.name(),
            Layer::Conv(c) => c.name(),
        }
    }
    fn weight(&self) -> &candle_core::Var {
        match self {
            Layer::Linear(l) => l.weight(),
            Layer::Conv(c) => c.weight(),
        }
    }
    fn bias(&self) -> Option<&candle_core::Var> {
        match self {
            Layer::Linear(l) => l.bias(),
            Layer::Conv(c) => Some(c.bias()),
        }
    }
    fn spectral_norm(&self) -> Option<&SpectralNorm> {
        match self {
            Layer::Linear(l) => l.spectral_norm(),
            Layer::Conv(c) => c.spectral_norm(),
        }
    }
}

/// A Q-network (or C51 logit network) built from a [`QNetConfig`].
pub struct QNetwork {
    config: QNetConfig,
    /// Observation shape as given (`[D]` or `[10, 10, C]`).
    obs_shape: Vec<usize>,
    n_actions: usize,
    layers: Vec<Layer>,
}

impl QNetwork {
    /// Builds the network under path `p` (e.g. `store.pp("q")`). `obs_shape` is the
    /// environment's observation shape: any shape for `mlp` (flattened), `[H, W, C]` for
    /// `minatar_conv`.
    pub fn new(
        config: &QNetConfig,
        obs_shape: &[usize],
        n_actions: usize,
        mut p: ParamPath<'_>,
    ) -> Result<Self> {
        if n_actions == 0 || config.atoms == 0 {
            return Err(Error::Config(format!(
                "q-network: expected at least one action and one atom, found {n_actions} action(s), atoms = {}",
                config.atoms
            )));
        }
        let hidden = config.hidden_sizes();
        if hidden.contains(&0) {
            return Err(Error::Config(format!(
                "q-network: hidden sizes must be positive, found {hidden:?}"
            )));
        }
        let sn = config.sn_layers.resolve(config.n_layers())?;
        let mode = |i: usize| if sn[i] { config.sn_mode } else { SnMode::Off };
        let mut layers = Vec::new();
        let mut width = match config.body {
            Body::Mlp => obs_shape.iter().product::<usize>(),
            Body::MinatarConv => {
                let &[h, w, c] = obs_shape else {
                    return Err(Error::Config(format!(
                        "q-network body minatar_conv: expected a [height, width, channels] observation, found {obs_shape:?}"
                    )));
                };
                let (oh, ow) = match (conv_out_size(h, 3, 1, 0), conv_out_size(w, 3, 1, 0)) {
                    (Some(oh), Some(ow)) if config.conv_channels > 0 => (oh, ow),
                    _ => {
                        return Err(Error::Config(format!(
                            "q-network body minatar_conv: observation {obs_shape:?} is smaller than the 3×3 kernel, or conv_channels = 0"
                        )))
                    }
                };
                layers.push(Layer::Conv(Conv2d::new(
                    p.pp(0),
                    c,
                    config.conv_channels,
                    3,
                    1,
                    0,
                    mode(0),
                )?));
                config.conv_channels * oh * ow
            }
            Body::NatureCnn => {
                let &[c, h, w] = obs_shape else {
                    return Err(Error::Config(format!(
                        "q-network body nature_cnn: expected [channels, height, width] frames, found {obs_shape:?}"
                    )));
                };
                let (mut ch, mut oh, mut ow) = (c, h, w);
                for (i, &(out, k, stride)) in NATURE_CONVS.iter().enumerate() {
                    let (Some(nh), Some(nw)) = (
                        conv_out_size(oh, k, stride, 0),
                        conv_out_size(ow, k, stride, 0),
                    ) else {
                        return Err(Error::Config(format!(
                            "q-network body nature_cnn: frames {obs_shape:?} are too small for its convolutions (at least 36×36)"
                        )));
                    };
                    layers.push(Layer::Conv(Conv2d::new(
                        p.pp(i),
                        ch,
                        out,
                        k,
                        stride,
                        0,
                        mode(i),
                    )?));
                    (ch, oh, ow) = (out, nh, nw);
                }
                ch * oh * ow
            }
        };
        if width == 0 {
            return Err(Error::Config(format!(
                "q-network: observation shape {obs_shape:?} has no elements"
            )));
        }
        for h in hidden.iter().copied().chain([n_actions * config.atoms]) {
            let i = layers.len();
            layers.push(Layer::Linear(Linear::new(p.pp(i), width, h, mode(i))?));
            width = h;
        }
        Ok(Self {
            config: config.clone(),
            obs_shape: obs_shape.to_vec(),
            n_actions,
            layers,
        })
    }

    pub fn config(&self) -> &QNetConfig {
        &self.config
    }
    pub fn n_actions(&self) -> usize {
        self.n_actions
    }
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }
    /// Layer paths in order (`q.0`, `q.1`, …).
    pub fn layer_names(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.name().to_string()).collect()
    }

    /// Q-values `(batch, actions)` for `atoms = 1`, logits `(batch, actions, atoms)` otherwise.
    /// `obs` is `(batch, …)` with the observation flattened or in its own shape; any dtype (it
    /// is cast to f32). `train = true` advances spectral-norm power iterations; use `false`
    /// for acting, targets and evaluation.
    pub fn forward(&self, obs: &Tensor, train: bool) -> Result<Tensor> {
        let batch = obs.dim(0)?;
        let obs_len: usize = self.obs_shape.iter().product();
        if obs.elem_count() != batch * obs_len {
            return Err(Error::Training(format!(
                "q-network: expected observations of shape (batch, {:?}), found {:?}",
                self.obs_shape,
                obs.dims()
            )));
        }
        let obs = if obs.dtype() == DType::F32 {
            obs.clone()
        } else {
            obs.to_dtype(DType::F32)?
        };
        let mut x = match self.config.body {
            Body::Mlp => obs.reshape((batch, obs_len))?,
            Body::MinatarConv => {
                let (h, w, c) = (self.obs_shape[0], self.obs_shape[1], self.obs_shape[2]);
                // channel-last [10, 10, C] in, the conv output flattened as (c, h, w)
                let y = match &self.layers[0] {
                    Layer::Conv(conv) => {
                        conv.forward_relu_nhwc_t(&obs.reshape((batch, h, w, c))?, train)?
                    }
                    Layer::Linear(_) => {
                        return Err(Error::Training(
                            "q-network: the MinAtar body starts with a convolution".into(),
                        ))
                    }
                };
                y.flatten_from(1)?
            }
            Body::NatureCnn => {
                let s = &self.obs_shape;
                let frames = obs
                    .reshape((batch, s[0], s[1], s[2]))?
                    .affine(1.0 / 255.0, 0.0)?;
                // The first convolution reads observations, which carry no gradient: channel
                // last, it runs as one matrix product over im2col rows (forward and backward).
                let mut y = match &self.layers[0] {
                    Layer::Conv(conv) => conv
                        .forward_relu_nhwc_t(&frames.permute((0, 2, 3, 1))?.contiguous()?, train)?,
                    Layer::Linear(_) => {
                        return Err(Error::Training(
                            "q-network: the Nature CNN body starts with a convolution".into(),
                        ))
                    }
                };
                for layer in &self.layers[1..NATURE_CONVS.len()] {
                    y = layer.forward_t(&y, train)?.relu()?;
                }
                y.flatten_from(1)?
            }
        };
        let first_fc = self.config.n_convs();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate().skip(first_fc) {
            x = match layer {
                Layer::Linear(l) if i < last => l.forward_relu_t(&x, train)?,
                _ if i < last => layer.forward_t(&x, train)?.relu()?,
                _ => layer.forward_t(&x, train)?,
            };
        }
        if self.config.atoms > 1 {
            x = x.reshape((batch, self.n_actions, self.config.atoms))?;
        }
        Ok(x)
    }

    /// The tracked spectral norm σ = uᵀWv of every spectrally normalised layer, by layer path.
    pub fn sigmas(&self) -> Result<Vec<(String, f64)>> {
        self.layers
            .iter()
            .filter_map(|l| l.spectral_norm().map(|sn| (l, sn)))
            .map(|(l, sn)| Ok((l.name().to_string(), sn.sigma(l.weight().as_tensor())?)))
            .collect()
    }

    /// The l2 norm of every parameter of the network, by parameter name, for metrics.
    pub fn param_norms(&self) -> Result<Vec<(String, f64)>> {
        let mut out = Vec::new();
        for l in &self.layers {
            let named = [("weight", Some(l.weight())), ("bias", l.bias())];
            for (leaf, var) in named {
                if let Some(v) = var {
                    let n = v
                        .to_dtype(DType::F64)?
                        .sqr()?
                        .sum_all()?
                        .sqrt()?
                        .to_scalar::<f64>()?;
                    out.push((format!("{}.{leaf}", l.name()), n));
                }
            }
        }
        Ok(out)
    }

    /// The network's trainable parameters as (name, Var), in name order.
    pub fn vars(&self) -> Vec<(String, candle_core::Var)> {
        let mut v: Vec<(String, candle_core::Var)> = Vec::new();
        for l in &self.layers {
            v.push((format!("{}.weight", l.name()), l.weight().clone()));
            if let Some(b) = l.bias() {
                v.push((format!("{}.bias", l.name()), b.clone()));
            }
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Applies the optimiser-side spectral-norm variants between `backward` and the optimiser
    /// step: divGrad divides each chosen layer's weight gradient by `max(σ, 1)`; mulEps sets
    /// the optimiser's ε multiplier of each chosen layer's weight to σ. Other modes: nothing.
    /// σ is the estimate from the last training forward pass (the weights have not moved since).
    pub fn sn_before_step(&self, grads: &mut GradStore, opt: &mut Adam) -> Result<()> {
        for l in &self.layers {
            let Some(sn) = l.spectral_norm() else {
                continue;
            };
            match sn.mode() {
                SnMode::DivGrad => {
                    let sigma = sn.sigma(l.weight().as_tensor())?;
                    grad::div_grad_by_sigma(grads, l.weight(), sigma)?;
                }
                SnMode::MulEps => {
                    let sigma = sn.sigma(l.weight().as_tensor())?;
                    opt.set_eps_scale(&format!("{}.weight", l.name()), sigma)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::optim::AdamConfig;
    use crate::nn::params::ParamStore;
    use candle_core::Device;
    use std::collections::HashMap;

    fn parse(s: &str) -> std::result::Result<QNetConfig, String> {
        toml::from_str::<QNetConfig>(s).map_err(|e| e.to_string())
    }

    fn obs(batch: usize, len: usize, seed: u64) -> Tensor {
        let mut rng = crate::rng::Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..batch * len).map(|_| rng.normal() as f32).collect();
        Tensor::from_vec(v, (batch, len), &Device::Cpu).unwrap()
    }

    #[test]
    fn output_shapes_and_names_for_both_bodies() {
        let mut s = ParamStore::new(&Device::Cpu, 0);
        let q = QNetwork::new(&QNetConfig::default(), &[4], 2, s.pp("q")).unwrap();
        assert_eq!(q.forward(&obs(5, 4, 0), false).unwrap().dims(), &[5, 2]);
        assert_eq!(
            s.vars().keys().cloned().collect::<Vec<_>>(),
            [
                "q.0.bias",
                "q.0.weight",
                "q.1.bias",
                "q.1.weight",
                "q.2.bias",
                "q.2.weight"
            ]
        );
        assert_eq!(s.get("q.1.weight").unwrap().dims(), &[84, 120]);
        assert_eq!(s.num_params(), 4 * 120 + 120 + 120 * 84 + 84 + 84 * 2 + 2);

        let mut s = ParamStore::new(&Device::Cpu, 0);
        let cfg = QNetConfig {
            atoms: 51,
            ..QNetConfig::minatar()
        };
        let q = QNetwork::new(&cfg, &[10, 10, 4], 6, s.pp("q")).unwrap();
        assert_eq!(q.layer_names(), ["q.0", "q.1", "q.2"]);
        assert_eq!(s.get("q.0.weight").unwrap().dims(), &[16, 4, 3, 3]);
        assert_eq!(s.get("q.1.weight").unwrap().dims(), &[128, 1024]);
        assert_eq!(s.get("q.2.weight").unwrap().dims(), &[6 * 51, 128]);
        let o = obs(3, 400, 1);
        assert_eq!(q.forward(&o, false).unwrap().dims(), &[3, 6, 51]);
        // the unflattened observation gives the same result
        let o3 = o.reshape((3, 10, 10, 4)).unwrap();
        let a = q
            .forward(&o, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = q
            .forward(&o3, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(a, b);
        assert!(q.forward(&obs(3, 399, 1), false).is_err());
        let mut s = ParamStore::new(&Device::Cpu, 0);
        assert!(QNetwork::new(&QNetConfig::minatar(), &[400], 6, s.pp("q")).is_err());
    }

    #[test]
    fn nature_cnn_has_the_papers_layers_and_every_tensor_gets_a_gradient() {
        let mut s = ParamStore::new(&Device::Cpu, 0);
        let cfg = QNetConfig {
            body: Body::NatureCnn,
            ..QNetConfig::default()
        };
        assert_eq!(cfg.n_layers(), 5);
        let q = QNetwork::new(&cfg, &[4, 84, 84], 6, s.pp("q")).unwrap();
        let dims = |n: &str| s.get(n).unwrap().dims().to_vec();
        assert_eq!(dims("q.0.weight"), [32, 4, 8, 8]);
        assert_eq!(dims("q.1.weight"), [64, 32, 4, 4]);
        assert_eq!(dims("q.2.weight"), [64, 64, 3, 3]);
        assert_eq!(
            dims("q.3.weight"),
            [512, 3136],
            "7×7×64 after the convolutions"
        );
        assert_eq!(dims("q.4.weight"), [6, 512]);
        // Pixel values 0–255 (the network divides by 255).
        let frames = obs(2, 4 * 84 * 84, 3)
            .abs()
            .unwrap()
            .affine(100.0, 0.0)
            .unwrap();
        let y = q.forward(&frames, true).unwrap();
        assert_eq!(y.dims(), &[2, 6]);
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in q.vars() {
            let g = grads.get(v.as_tensor()).unwrap();
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{name}: gradient norm² {norm}"
            );
        }
        let mut s = ParamStore::new(&Device::Cpu, 0);
        let e = QNetwork::new(&cfg, &[4, 30, 30], 6, s.pp("q"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("too small"), "{e}");
    }

    #[test]
    fn channel_last_input_is_permuted_to_nchw() {
        // Only channel 2 of pixel (row 4, col 7) is on. With a conv kernel that is 1 only at
        // input channel 2, centre tap, output channel 0 at (3, 6) must be 1 and all else 0
        // (bias 0): checks the [H, W, C] → NCHW permutation and the (c, h, w) flattening.
        let mut s = ParamStore::new(&Device::Cpu, 0);
        let cfg = QNetConfig {
            hidden: Some(vec![]),
            conv_channels: 2,
            ..QNetConfig::minatar()
        };
        let q = QNetwork::new(&cfg, &[10, 10, 3], 128, s.pp("q")).unwrap();
        let mut w = vec![0f32; 2 * 3 * 9];
        w[2 * 9 + 4] = 1.0; // out 0, in 2, (1, 1)
        let mut sd: HashMap<String, Tensor> = s.state_dict();
        let dev = Device::Cpu;
        sd.insert(
            "q.0.weight".into(),
            Tensor::from_vec(w, (2, 3, 3, 3), &dev).unwrap(),
        );
        sd.insert(
            "q.0.bias".into(),
            Tensor::zeros(2, DType::F32, &dev).unwrap(),
        );
        // output layer = identity on the first 128 features, so Q = flattened conv features
        let eye: Vec<f32> = (0..128 * 128)
            .map(|k| f32::from(k / 128 == k % 128))
            .collect();
        sd.insert(
            "q.1.weight".into(),
            Tensor::from_vec(eye, (128, 128), &dev).unwrap(),
        );
        sd.insert(
            "q.1.bias".into(),
            Tensor::zeros(128, DType::F32, &dev).unwrap(),
        );
        s.load_state_dict(&sd, std::path::Path::new("test"))
            .unwrap();
        let mut x = vec![0f32; 300];
        x[(4 * 10 + 7) * 3 + 2] = 1.0;
        let y = q
            .forward(&Tensor::from_vec(x, (1, 300), &dev).unwrap(), false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let hot: Vec<usize> = y
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0.0)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(hot, vec![3 * 8 + 6]);
        assert_eq!(y[3 * 8 + 6], 1.0);
    }

    #[test]
    fn sn_layers_parse_resolve_and_errors() {
        let c = parse("sn_layers = [-2]").unwrap();
        assert_eq!(c.sn_layers, SnLayers::Indices(vec![-2]));
        assert_eq!(c.sn_layers.resolve(3).unwrap(), [false, true, false]);
        let c = parse("sn_layers = [-2, -3]\nsn_mode = \"div_grad\"").unwrap();
        assert_eq!(c.sn_layers.resolve(3).unwrap(), [true, true, false]);
        assert_eq!(c.sn_mode, SnMode::DivGrad);
        assert_eq!(
            parse("sn_layers = [0, 2]")
                .unwrap()
                .sn_layers
                .resolve(3)
                .unwrap(),
            [true, false, true]
        );
        let c = parse("sn_layers = \"all\"").unwrap();
        assert_eq!(c.sn_layers.resolve(3).unwrap(), [true, true, true]);
        let e = parse("sn_layers = \"some\"").unwrap_err();
        assert!(e.contains("\"all\""), "{e}");
        let e = SnLayers::Indices(vec![-4])
            .resolve(3)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("index -4") && e.contains("3 linear/conv layers"),
            "{e}"
        );
        assert!(SnLayers::Indices(vec![3]).resolve(3).is_err());
        let e = parse("sn_layer = [-2]").unwrap_err();
        assert!(e.contains("sn_layer"), "{e}");
        // the error surfaces when building the network
        let mut s = ParamStore::new(&Device::Cpu, 0);
        let cfg = QNetConfig {
            sn_layers: SnLayers::Indices(vec![5]),
            ..QNetConfig::default()
        };
        let e = QNetwork::new(&cfg, &[4], 2, s.pp("q"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("index 5"), "{e}");
        // TOML round trip
        let c = parse("body = \"minatar_conv\"\natoms = 51\nsn_layers = \"all\"").unwrap();
        assert_eq!(parse(&toml::to_string(&c).unwrap()).unwrap(), c);
        assert_eq!(c.hidden_sizes(), vec![128]);
    }

    #[test]
    fn same_seed_same_weights_different_seed_differs() {
        let build = |seed| {
            let mut s = ParamStore::new(&Device::Cpu, seed);
            let cfg = QNetConfig {
                sn_layers: SnLayers::Indices(vec![-2]),
                ..QNetConfig::minatar()
            };
            QNetwork::new(&cfg, &[10, 10, 4], 6, s.pp("q")).unwrap();
            let sd = s.state_dict();
            let mut names: Vec<&String> = sd.keys().collect();
            names.sort();
            names
                .iter()
                .map(|n| sd[*n].flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(build(7), build(7));
        let (a, b) = (build(7), build(8));
        assert!(a.iter().zip(&b).all(|(x, y)| x != y));
    }

    #[test]
    fn div_grad_divides_only_the_chosen_weight_gradient() {
        let cfg = QNetConfig {
            sn_layers: SnLayers::Indices(vec![-3]),
            sn_mode: SnMode::DivGrad,
            ..QNetConfig::default()
        };
        let mut s = ParamStore::new(&Device::Cpu, 3);
        let q = QNetwork::new(&cfg, &[4], 2, s.pp("q")).unwrap();
        let mut opt = Adam::new(s.trainable(), AdamConfig::default()).unwrap();
        let x = obs(16, 4, 2);
        // the mode leaves the forward pass alone
        let mut plain_s = ParamStore::new(&Device::Cpu, 3);
        let plain = QNetwork::new(&QNetConfig::default(), &[4], 2, plain_s.pp("q")).unwrap();
        plain_s
            .load_state_dict(
                &s.vars()
                    .iter()
                    .map(|(n, v)| (n.clone(), v.as_detached_tensor()))
                    .collect(),
                std::path::Path::new("x"),
            )
            .unwrap();
        let y = q.forward(&x, true).unwrap();
        let y_plain = plain.forward(&x, true).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            y_plain.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let mut grads = y.sqr().unwrap().mean_all().unwrap().backward().unwrap();
        let before: Vec<(String, Vec<f32>)> = s
            .trainable()
            .iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    grads
                        .get(v.as_tensor())
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap(),
                )
            })
            .collect();
        let sigma = q.sigmas().unwrap();
        assert_eq!(sigma.len(), 1);
        assert_eq!(sigma[0].0, "q.0");
        assert!(
            sigma[0].1 > 1.5,
            "4→120 with U(±1/2) init has σ well above 1: {}",
            sigma[0].1
        );
        q.sn_before_step(&mut grads, &mut opt).unwrap();
        for ((name, b), (_, v)) in before.iter().zip(s.trainable()) {
            let a: Vec<f32> = grads
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            if name == "q.0.weight" {
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        (x - y / sigma[0].1 as f32).abs() <= 1e-6 * y.abs().max(1e-6),
                        "{x} vs {y}"
                    );
                }
            } else {
                assert_eq!(&a, b, "{name} must be untouched");
            }
        }
        // the optimiser's ε is untouched in this mode
        assert!(s
            .vars()
            .keys()
            .all(|n| opt.options(n).unwrap().eps_scale == 1.0));
    }

    #[test]
    fn mul_eps_sets_eps_scale_to_sigma_and_leaves_gradients() {
        let cfg = QNetConfig {
            sn_layers: SnLayers::Indices(vec![-2]),
            sn_mode: SnMode::MulEps,
            ..QNetConfig::default()
        };
        let mut s = ParamStore::new(&Device::Cpu, 4);
        let q = QNetwork::new(&cfg, &[4], 2, s.pp("q")).unwrap();
        let mut opt = Adam::new(s.trainable(), AdamConfig::adam(1e-3)).unwrap();
        let y = q.forward(&obs(8, 4, 5), true).unwrap();
        let mut grads = y.sqr().unwrap().mean_all().unwrap().backward().unwrap();
        let g_before: Vec<f32> = grads
            .get(s.vars()["q.1.weight"].as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        q.sn_before_step(&mut grads, &mut opt).unwrap();
        let g_after: Vec<f32> = grads
            .get(s.vars()["q.1.weight"].as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(g_before, g_after);
        let sigma = q.sigmas().unwrap()[0].1;
        for n in s.vars().keys() {
            let want = if n == "q.1.weight" { sigma } else { 1.0 };
            assert_eq!(opt.options(n).unwrap().eps_scale, want, "{n}");
        }
    }

    #[test]
    fn forward_sn_normalises_and_div_out_scales_the_output() {
        let x = obs(4, 4, 9);
        let run = |mode: SnMode| {
            let cfg = QNetConfig {
                sn_layers: SnLayers::Indices(vec![0]),
                sn_mode: mode,
                ..QNetConfig::default()
            };
            let mut s = ParamStore::new(&Device::Cpu, 11);
            let q = QNetwork::new(&cfg, &[4], 2, s.pp("q")).unwrap();
            for _ in 0..30 {
                q.forward(&x, true).unwrap();
            }
            let y: Vec<f32> = q
                .forward(&x, false)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            (y, q.sigmas().unwrap()[0].1, s)
        };
        let (y_fwd, sigma, s) = run(SnMode::Forward);
        let w: Vec<f32> = s
            .get("q.0.weight")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let reference = crate::nn::spectral_norm::largest_singular_value(&w, 120, 4);
        assert!(
            (sigma - reference).abs() / reference < 1e-4,
            "{sigma} vs {reference}"
        );
        let (y_plain, _, _) = run(SnMode::DivGrad);
        let (y_out, _, _) = run(SnMode::DivOut);
        assert_ne!(y_fwd, y_plain);
        assert_ne!(y_fwd, y_out, "divOut also divides the bias");
    }
}

/// Ad-hoc timing of one DQN update (forward + loss + backward + Adam step), printed, not
/// asserted: `cargo test --release --lib nn::qnet::timing -- --ignored --nocapture`.
#[cfg(test)]
mod timing {
    use super::*;
    use crate::nn::optim::AdamConfig;
    use crate::nn::params::ParamStore;
    use candle_core::Device;
    use std::time::Instant;

    /// This process's user+system CPU seconds (Linux), so that the figures mean something on a
    /// shared, loaded machine: wall time there counts other people's work too.
    fn cpu_seconds() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<f64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        // fields 14 and 15 of stat (utime, stime) are 11 and 12 after the name; 100 ticks/s
        (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
    }

    fn measure(name: &str, cfg: QNetConfig, obs_shape: &[usize], actions: usize, batch: usize) {
        let dev = Device::Cpu;
        let mut s = ParamStore::new(&dev, 0);
        let q = QNetwork::new(&cfg, obs_shape, actions, s.pp("q")).unwrap();
        let mut opt = Adam::new(s.trainable(), AdamConfig::default()).unwrap();
        let len: usize = obs_shape.iter().product();
        let mut rng = crate::rng::Rng::seed_from_u64(0);
        let x: Vec<f32> = (0..batch * len).map(|_| rng.uniform_f32()).collect();
        let x = Tensor::from_vec(x, (batch, len), &dev).unwrap();
        let (iters, warm) = (300, 30);
        let (mut t_fb, mut t_opt) = (0.0, 0.0);
        let mut cpu0 = 0.0;
        for i in 0..iters + warm {
            if i == warm {
                cpu0 = cpu_seconds();
            }
            let t0 = Instant::now();
            let y = q.forward(&x, true).unwrap();
            let mut grads = y.sqr().unwrap().mean_all().unwrap().backward().unwrap();
            q.sn_before_step(&mut grads, &mut opt).unwrap();
            let t1 = Instant::now();
            opt.step(&grads, 1e-4).unwrap();
            let t2 = Instant::now();
            if i >= warm {
                t_fb += (t1 - t0).as_secs_f64();
                t_opt += (t2 - t1).as_secs_f64();
            }
        }
        let n = iters as f64;
        let cpu = (cpu_seconds() - cpu0) / n;
        println!(
            "{name}: wall: forward+backward {:.1} µs, adam step {:.1} µs, total {:.1} µs; \
             process CPU time per update {:.1} µs ({} params)",
            t_fb / n * 1e6,
            t_opt / n * 1e6,
            (t_fb + t_opt) / n * 1e6,
            cpu * 1e6,
            s.num_params()
        );
    }

    #[test]
    #[ignore]
    fn timing() {
        measure(
            "cartpole mlp 4-120-84-2, batch 128",
            QNetConfig::default(),
            &[4],
            2,
            128,
        );
        let sn = QNetConfig {
            sn_layers: SnLayers::Indices(vec![-2]),
            ..QNetConfig::default()
        };
        measure("cartpole mlp, SN[-2], batch 128", sn, &[4], 2, 128);
        measure(
            "minatar conv (4 ch), batch 32",
            QNetConfig::minatar(),
            &[10, 10, 4],
            6,
            32,
        );
        measure(
            "minatar conv (10 ch), batch 32",
            QNetConfig::minatar(),
            &[10, 10, 10],
            6,
            32,
        );
        let c51 = QNetConfig {
            atoms: 51,
            sn_layers: SnLayers::Indices(vec![-2]),
            ..QNetConfig::minatar()
        };
        measure(
            "minatar conv C51 SN[-2] (4 ch), batch 32",
            c51,
            &[10, 10, 4],
            6,
            32,
        );
    }
}
