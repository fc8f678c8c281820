//! The algorithm-distillation transformer (Laskin et al. 2023, §4; nanoGPT layout): token
//! embedding → (dropout) → `n_layer` pre-norm blocks (causal self-attention + GELU or ReLU MLP) → final
//! layer norm → action logits.
//!
//! One token per transition: the features `[encoded obs, one_hot(previous action),
//! previous reward, has_previous]` go through one linear embedding. The paper fixes no layout;
//! this is the common, three-times-shorter choice (PAPERS.md §4). The `(s, a, r)` three-token
//! layout is not implemented.
//!
//! Positions are counted from the first token of the window the model sees (a training window's
//! first real transition, or the first token of the evaluation context), so training windows
//! and the sliding evaluation context (see [`super::kv_cache`]) agree.
//!
//! Layer norm and softmax are written from differentiable tensor ops: candle's fused kernels
//! have no backward (DESIGN.md, candle notes). Dropout masks are drawn from the project's
//! [`Rng`] on the host, so a CPU run is reproducible from its seed and resumes bit-exactly.

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

use super::attention::{attention, AttnDropout, AttnMask};
use super::kv_cache::KvCache;
use crate::agents::ppo::{ObsEncoder, ObsEncoding};
use crate::envs::Space;
use crate::error::{Error, Result};
use crate::nn::init::Init;
use crate::nn::linear::Linear;
use crate::nn::params::{ParamPath, ParamStore};
use crate::nn::spectral_norm::SnMode;
use crate::rng::Rng;

/// How token positions enter the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    /// A learned table `wpe` of `context` vectors (GPT-2).
    Learned,
    /// Fixed sines and cosines (Vaswani et al. 2017); no parameters.
    Sinusoidal,
}

/// The MLP's nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// GELU, tanh approximation (GPT-2, nanoGPT).
    Gelu,
    /// ReLU: on the CPU GELU's forward and backward take about a quarter of a training step of
    /// the small models used here (measured with perf on `distill`), ReLU almost nothing.
    Relu,
}

/// Transformer sizes and regularisation. Defaults are the paper's Dark Room model
/// (embedding 64, 4 layers, 4 heads, feed-forward 2048, dropout 0.1, attention dropout 0.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GptConfig {
    pub n_layer: usize,
    pub n_head: usize,
    pub d_model: usize,
    pub d_ff: usize,
    /// Maximum number of tokens (transitions) the model attends over.
    pub context: usize,
    pub positions: Positions,
    pub activation: Activation,
    /// Dropout on the embeddings, after attention and after the MLP.
    pub dropout: f64,
    /// Dropout on the attention probabilities.
    pub attn_dropout: f64,
}

impl Default for GptConfig {
    fn default() -> Self {
        Self {
            n_layer: 4,
            n_head: 4,
            d_model: 64,
            d_ff: 2048,
            context: 80,
            positions: Positions::Learned,
            activation: Activation::Gelu,
            dropout: 0.1,
            attn_dropout: 0.5,
        }
    }
}

impl GptConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("model: {m}")));
        if self.n_layer == 0 || self.n_head == 0 || self.d_model == 0 || self.d_ff == 0 {
            return bad(format!(
                "n_layer, n_head, d_model and d_ff must be at least 1, found {self:?}"
            ));
        }
        if !self.d_model.is_multiple_of(self.n_head) {
            return bad(format!(
                "d_model = {} must be a multiple of n_head = {}",
                self.d_model, self.n_head
            ));
        }
        if self.positions == Positions::Sinusoidal && !self.d_model.is_multiple_of(2) {
            return bad(format!(
                "sinusoidal positions need an even d_model, found {}",
                self.d_model
            ));
        }
        if self.context < 2 {
            return bad(format!(
                "context must be at least 2, found {}",
                self.context
            ));
        }
        for (name, p) in [
            ("dropout", self.dropout),
            ("attn_dropout", self.attn_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} must be in [0, 1), found {p}"));
            }
        }
        Ok(())
    }
}

/// What a token is made of: the observation space and its encoding, and the action count.
///
/// The observation is encoded as the PPO source agent encodes it ([`ObsEncoder`]): one-hot
/// per integer coordinate by default (Dark Room's (x, y) → 9 + 9 inputs), so attention can
/// match "the cell I am on" against "the cell where a reward came" with one dot product.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenSpec {
    pub obs_space: Space,
    pub obs_encoding: ObsEncoding,
    pub num_actions: usize,
}

/// Turns transitions into token features (built once from a [`TokenSpec`]).
#[derive(Clone, Debug)]
pub struct Tokenizer {
    encoder: ObsEncoder,
    obs_dim: usize,
    num_actions: usize,
}

impl TokenSpec {
    pub fn tokenizer(&self) -> Tokenizer {
        Tokenizer {
            encoder: ObsEncoder::new(self.obs_encoding, &self.obs_space),
            obs_dim: self.obs_space.flat_dim(),
            num_actions: self.num_actions,
        }
    }
}

impl Tokenizer {
    /// Features per token: encoded obs, one-hot previous action, previous reward, has-previous.
    pub fn features(&self) -> usize {
        self.encoder.input_dim() + self.num_actions + 2
    }

    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    pub fn num_actions(&self) -> usize {
        self.num_actions
    }

    /// Writes the tokens of `rows` transitions into `out` (`rows × features()`): `obs` holds
    /// `rows × obs_dim` raw observations, `prev[i]` the previous action and reward of the same
    /// history (`None` at its first transition).
    pub fn write(&self, obs: &[f32], prev: &[Option<(usize, f32)>], out: &mut [f32]) {
        let enc = self.encoder.encode(obs);
        let (e, f, a) = (self.encoder.input_dim(), self.features(), self.num_actions);
        for (i, tok) in out.chunks_mut(f).enumerate().take(prev.len()) {
            tok[..e].copy_from_slice(&enc[i * e..(i + 1) * e]);
            tok[e..].iter_mut().for_each(|x| *x = 0.0);
            if let Some((act, r)) = prev[i] {
                if act < a {
                    tok[e + act] = 1.0;
                }
                tok[e + a] = r;
                tok[e + a + 1] = 1.0;
            }
        }
    }
}

/// Randomness and switches of one forward pass.
pub struct Train<'a> {
    pub rng: &'a mut Rng,
    /// Probability of zeroing a whole input token (random token masking).
    pub token_mask: f64,
}

/// Inverted dropout with a host-drawn mask (`None` at evaluation or p = 0).
fn dropout(x: &Tensor, p: f64, train: &mut Option<Train<'_>>) -> Result<Tensor> {
    match train {
        Some(t) if p > 0.0 => {
            let keep = 1.0 - p;
            let scale = (1.0 / keep) as f32;
            let mask: Vec<f32> = (0..x.elem_count())
                .map(|_| if t.rng.uniform() < keep { scale } else { 0.0 })
                .collect();
            let m = Tensor::from_vec(mask, x.shape(), x.device())?;
            Ok((x * m)?)
        }
        _ => Ok(x.clone()),
    }
}

pub use super::layer_norm::layer_norm;

/// `weight` (ones) and `bias` (zeros) of a layer norm.
pub struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
}

impl LayerNorm {
    fn new(p: &mut ParamPath<'_>, d: usize) -> Result<Self> {
        Ok(Self {
            gamma: p.var("weight", &[d], Init::Const(1.0))?.as_tensor().clone(),
            beta: p.var("bias", &[d], Init::Const(0.0))?.as_tensor().clone(),
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(layer_norm(x, &self.gamma, &self.beta)?)
    }
}

/// GPT-2 initialisation: N(0, 0.02) weights, zero biases; residual projections scaled by
/// 1/√(2·n_layer).
fn gpt_linear(p: &mut ParamPath<'_>, inp: usize, out: usize, std: f64) -> Result<Linear> {
    Linear::with_init(
        p,
        inp,
        out,
        Init::Normal { std },
        Some(Init::Const(0.0)),
        SnMode::Off,
    )
}

/// Multi-head causal self-attention with one fused q/k/v projection.
struct Attention {
    c_attn: Linear,
    c_proj: Linear,
    n_head: usize,
    d_model: usize,
}

impl Attention {
    /// `x` (B·T, d) → (B·T, d). With a cache, the new keys and values are appended to it and
    /// the queries attend over everything cached.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        b: usize,
        t: usize,
        mask: &AttnMask,
        cache: Option<&mut candle_nn::kv_cache::KvCache>,
        attn_p: f64,
        train: &mut Option<Train<'_>>,
    ) -> Result<Tensor> {
        let (h, d) = (self.n_head, self.d_model);
        let hd = d / h;
        let qkv = self.c_attn.forward(x)?; // (B·T, 3d)
        let split = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(1, i * d, d)?
                .reshape((b, t, h, hd))?
                .transpose(1, 2)?
                .contiguous()?) // (B, H, T, hd)
        };
        let (q, mut k, mut v) = (split(0)?, split(1)?, split(2)?);
        if let Some(c) = cache {
            (k, v) = c.append(&k, &v)?;
        }
        let dropout = match train {
            Some(tr) if attn_p > 0.0 => Some(AttnDropout {
                p: attn_p,
                seed: tr.rng.next_u64(),
            }),
            _ => None,
        };
        let y = attention(&q, &k, &v, 1.0 / (hd as f64).sqrt(), mask, dropout)?; // (B, H, T, hd)
        let y = y.transpose(1, 2)?.contiguous()?.reshape((b * t, d))?;
        self.c_proj.forward(&y)
    }
}

struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    c_fc: Linear,
    c_proj: Linear,
}

/// The decoder-only transformer with its action head.
pub struct Gpt {
    pub config: GptConfig,
    pub tokens: TokenSpec,
    pub tokenizer: Tokenizer,
    wte: Linear,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Linear,
    device: Device,
}

/// Sinusoidal table (context, d): sin on even, cos on odd dimensions.
fn sinusoidal(context: usize, d: usize, device: &Device) -> Result<Tensor> {
    let mut v = vec![0f32; context * d];
    for pos in 0..context {
        for i in 0..d / 2 {
            let freq = 1.0 / 10000f64.powf(2.0 * i as f64 / d as f64);
            v[pos * d + 2 * i] = (pos as f64 * freq).sin() as f32;
            v[pos * d + 2 * i + 1] = (pos as f64 * freq).cos() as f32;
        }
    }
    Ok(Tensor::from_vec(v, (context, d), device)?)
}

impl Gpt {
    /// Creates the parameters under `p` (names like `transformer.h.0.attn.c_attn.weight`).
    pub fn new(config: &GptConfig, tokens: &TokenSpec, store: &mut ParamStore) -> Result<Self> {
        config.validate()?;
        let (d, l) = (config.d_model, config.n_layer);
        let device = store.device().clone();
        let resid_std = 0.02 / (2.0 * l as f64).sqrt();
        let mut tr = store.pp("transformer");
        let tokenizer = tokens.tokenizer();
        let wte = gpt_linear(&mut tr.pp("wte"), tokenizer.features(), d, 0.02)?;
        let wpe = match config.positions {
            Positions::Learned => tr
                .var(
                    "wpe.weight",
                    &[config.context, d],
                    Init::Normal { std: 0.02 },
                )?
                .as_tensor()
                .clone(),
            Positions::Sinusoidal => sinusoidal(config.context, d, &device)?,
        };
        let mut blocks = Vec::with_capacity(l);
        for i in 0..l {
            let mut hp = tr.pp("h");
            let mut bp = hp.pp(i);
            blocks.push(Block {
                ln_1: LayerNorm::new(&mut bp.pp("ln_1"), d)?,
                attn: Attention {
                    c_attn: gpt_linear(&mut bp.pp("attn").pp("c_attn"), d, 3 * d, 0.02)?,
                    c_proj: gpt_linear(&mut bp.pp("attn").pp("c_proj"), d, d, resid_std)?,
                    n_head: config.n_head,
                    d_model: d,
                },
                ln_2: LayerNorm::new(&mut bp.pp("ln_2"), d)?,
                c_fc: gpt_linear(&mut bp.pp("mlp").pp("c_fc"), d, config.d_ff, 0.02)?,
                c_proj: gpt_linear(&mut bp.pp("mlp").pp("c_proj"), config.d_ff, d, resid_std)?,
            });
        }
        let ln_f = LayerNorm::new(&mut tr.pp("ln_f"), d)?;
        let head = gpt_linear(&mut store.pp("head"), d, tokens.num_actions, 0.02)?;
        Ok(Self {
            config: config.clone(),
            tokens: tokens.clone(),
            tokenizer,
            wte,
            wpe,
            blocks,
            ln_f,
            head,
            device,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Logits `(B·T, A)` for token features `(B, T, F)` given as a flat vector.
    ///
    /// `first_pos[b]` is the slot of window b's first real token (left padding before it):
    /// positions count from there and padded keys are masked out. `cache`, when given, must be
    /// empty or hold earlier tokens of the same windows (then `first_pos` must be all 0 and
    /// positions continue from the cached length).
    pub fn forward(
        &self,
        features: &[f32],
        b: usize,
        t: usize,
        first_pos: &[usize],
        mut cache: Option<&mut KvCache>,
        mut train: Option<Train<'_>>,
    ) -> Result<Tensor> {
        let f = self.tokenizer.features();
        if features.len() != b * t * f || first_pos.len() != b {
            return Err(Error::Config(format!(
                "model input: expected {b}×{t}×{f} features and {b} start positions, found {} and {}",
                features.len(),
                first_pos.len()
            )));
        }
        let past = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        if past + t > self.config.context {
            return Err(Error::Config(format!(
                "model input: {} tokens exceed the context of {}",
                past + t,
                self.config.context
            )));
        }
        let mut feats = features.to_vec();
        if let Some(tr) = train.as_mut() {
            if tr.token_mask > 0.0 {
                for tok in feats.chunks_mut(f) {
                    if tr.rng.uniform() < tr.token_mask {
                        tok.iter_mut().for_each(|x| *x = 0.0);
                    }
                }
            }
        }
        let x = Tensor::from_vec(feats, (b * t, f), &self.device)?;
        let tok = self.wte.forward(&x)?; // (B·T, d)
                                         // Position of slot j of window i: past + j − first_pos[i] (clamped at 0 for padding).
        let mut pos_idx = Vec::with_capacity(b * t);
        for &fp in first_pos {
            for j in 0..t {
                pos_idx.push((past + j).saturating_sub(fp) as u32);
            }
        }
        let pos_idx = Tensor::from_vec(pos_idx, b * t, &self.device)?;
        let pos = self.wpe.index_select(&pos_idx, 0)?; // (B·T, d)
        let mut x = dropout(&(tok + pos)?, self.config.dropout, &mut train)?;
        // Causal, padded keys hidden; every query may attend to itself (see `super::attention`).
        let mask = AttnMask {
            past,
            first_pos: first_pos.to_vec(),
        };
        for (li, block) in self.blocks.iter().enumerate() {
            let h = block.ln_1.forward(&x)?;
            let layer_cache = cache.as_mut().map(|c| c.layer(li));
            let a = block.attn.forward(
                &h,
                b,
                t,
                &mask,
                layer_cache,
                self.config.attn_dropout,
                &mut train,
            )?;
            x = (x + dropout(&a, self.config.dropout, &mut train)?)?;
            let h = block.ln_2.forward(&x)?;
            let h = block.c_fc.forward(&h)?;
            let h = match self.config.activation {
                Activation::Gelu => h.gelu()?,
                Activation::Relu => h.relu()?,
            };
            let h = block.c_proj.forward(&h)?;
            x = (x + dropout(&h, self.config.dropout, &mut train)?)?;
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        self.head.forward(&self.ln_f.forward(&x)?)
    }
}

/// Masked mean cross-entropy of `logits` (N, A) against `targets` (N), with label smoothing ε:
/// `(1 − ε)·(−log p_target) + ε·mean_a(−log p_a)`. Slots with `mask` 0 do not count.
pub fn action_loss(
    logits: &Tensor,
    targets: &[u32],
    mask: &[f32],
    label_smoothing: f64,
) -> Result<Tensor> {
    let dev = logits.device();
    let n = targets.len();
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let idx = Tensor::from_vec(targets.to_vec(), (n, 1), dev)?;
    let nll = logp.gather(&idx, 1)?.squeeze(1)?.neg()?; // (N)
    let per = if label_smoothing > 0.0 {
        let uniform = logp.mean(D::Minus1)?.neg()?;
        ((nll * (1.0 - label_smoothing))? + (uniform * label_smoothing)?)?
    } else {
        nll
    };
    let m = Tensor::from_vec(mask.to_vec(), n, dev)?;
    let count: f32 = mask.iter().sum();
    Ok((per * m)?
        .sum_all()?
        .affine(1.0 / count.max(1.0) as f64, 0.0)?)
}

/// Accuracy of the argmax action on masked slots (for metrics).
pub fn accuracy(logits: &Tensor, targets: &[u32], mask: &[f32]) -> Result<f64> {
    let pred: Vec<u32> = logits.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1()?;
    let (mut hit, mut n) = (0.0, 0.0);
    for ((p, t), m) in pred.iter().zip(targets).zip(mask) {
        if *m > 0.0 {
            n += 1.0;
            if p == t {
                hit += 1.0;
            }
        }
    }
    Ok(if n > 0.0 { hit / n } else { f64::NAN })
}
