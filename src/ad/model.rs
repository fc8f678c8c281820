//! The algorithm-distillation transformer (Laskin et al. 2023, §4; nanoGPT layout): token
//! embedding → (dropout) → `n_layer` pre-norm blocks (causal self-attention + GELU or ReLU MLP) → final
//! layer norm → action logits.
//!
//! Laskin et al. (2023) fix no token layout; two are offered ([`TokenLayout`]):
//!
//! - `transition` (default): one token per transition, the features `[encoded obs,
//!   one_hot(previous action), previous reward, has_previous]` through one linear embedding
//!   `wte`; the common, three-times-shorter choice. The action is predicted at every token.
//! - `sar`: three tokens per transition, s_t, a_t, r_t in that order, each kind with its own
//!   linear embedding (`wte_s` of the encoded obs, `wte_a` of the one-hot action, `wte_r` of the
//!   reward). Token slot j (counting cached tokens) is of kind j mod 3, so every sequence starts
//!   at an s token; a_t is predicted from the output at s_t, which has seen everything up to
//!   r_{t−1} but not a_t. Each token's embedding also reads the features of the two tokens
//!   before it (`short_conv`, a causal convolution of width 3 over the token features, as the
//!   short convolutions of H3/Hyena), so the s token of step t+1 carries r_t: with attention
//!   alone, binding "this reward came on arriving at this cell" across neighbouring tokens had
//!   to be learned through absolute positions, and on Dark Room it was not (measured: the
//!   model matched the transition layout's loss but never learned in context; see README).
//!
//! Positions are counted from the first token of the window the model sees (a training window's
//! first real token, or the first token of the evaluation context), so training windows
//! and the sliding evaluation context (see [`super::kv_cache`]) agree.
//!
//! candle's fused layer-norm and softmax kernels have no backward (the gradient would be silently cut):
//! attention ([`super::attention`]) and layer norm ([`super::layer_norm`]) are one custom op
//! each with a hand-written backward on the CPU, and differentiable tensor ops elsewhere.
//! Dropout masks are drawn from the project's [`Rng`] (attention dropout from a seed it draws),
//! so a CPU run is reproducible from its seed and resumes bit-exactly.

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

use super::attention::{attention, AttnDropout, AttnMask};
use super::kv_cache::KvCache;
use crate::envs::obs_encoding::{ObsEncoder, ObsEncoding};
use crate::envs::Space;
use crate::error::{Error, Result};
use crate::nn::init::Init;
use crate::nn::linear::Linear;
use crate::nn::params::{ParamPath, ParamStore};
use crate::nn::spectral_norm::SnMode;
pub use crate::nn::Activation;
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

/// How transitions become tokens (Laskin et al. 2023 fix no layout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum TokenLayout {
    /// One token per transition: `[encoded obs_t, one_hot(a_{t−1}), r_{t−1}, has_previous]`.
    #[default]
    Transition,
    /// Three tokens per transition, s_t, a_t, r_t, each kind with its own embedding; a_t is
    /// predicted from the output at s_t.
    Sar,
}

impl TokenLayout {
    /// Tokens each transition takes: 1 or 3.
    pub fn tokens_per_transition(self) -> usize {
        match self {
            TokenLayout::Transition => 1,
            TokenLayout::Sar => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenLayout::Transition => "transition",
            TokenLayout::Sar => "sar",
        }
    }

    fn is_transition(&self) -> bool {
        *self == TokenLayout::Transition
    }
}

/// Parses `"transition"` or `"sar"`; the error names the field, whatever the config's format.
impl TryFrom<String> for TokenLayout {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        match s.as_str() {
            "transition" => Ok(TokenLayout::Transition),
            "sar" => Ok(TokenLayout::Sar),
            _ => Err(format!(
                "model.layout must be \"transition\" or \"sar\", found \"{s}\""
            )),
        }
    }
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
    /// Maximum number of transitions the model attends over, in either layout: in the `sar`
    /// layout the model attends over `3 · context` tokens (and the learned position table has
    /// `3 · context` rows). See [`GptConfig::max_tokens`].
    pub context: usize,
    /// Token layout (`"transition"` by default, or `"sar"`). Configs written before the option
    /// existed have no `layout` and load as `transition`; it is left out of written configs when
    /// `transition`, so those stay byte-identical (and resumable) across the change.
    #[serde(skip_serializing_if = "TokenLayout::is_transition")]
    pub layout: TokenLayout,
    pub positions: Positions,
    pub activation: Activation,
    /// Dropout on the embeddings, after attention and after the MLP.
    pub dropout: f64,
    /// Dropout on the attention probabilities.
    pub attn_dropout: f64,
    /// How many preceding tokens each token's embedding reads directly: token j's embedding
    /// adds `Σ_k W_k · features(j − k)` for k = 1..=short_conv (none before the window's first
    /// token). Unset: 2 in the `sar` layout (a token sees its whole transition), 0 in the
    /// `transition` layout (left out of written configs when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short_conv: Option<usize>,
    /// One more token feature (transition layout): 1 on the first transition of each episode.
    /// The model then sees episode boundaries directly rather than inferring them from the
    /// observations (Key-to-Door starts each episode at a random cell, and whether the key is
    /// held is "a reward since the episode began"). Left out of written configs when off.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub episode_start: bool,
    /// One more token feature (transition layout): the return of the episode so far, before
    /// the token's observation (0 on an episode's first transition). The agent always knows
    /// its own rewards; with the feature the model reads "has this episode paid yet" (in
    /// Key-to-Door: is the key held) from the token itself instead of attending back to the
    /// episode's start and every reward since. Left out of written configs when off.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub episode_return: bool,
    /// One more block of token features (transition layout), as wide as an encoded
    /// observation: on the first token of each episode but the history's first, the encoded
    /// final observation of the episode before it; zeros elsewhere. Where an episode ends on
    /// reaching something (Dark Room Hard's goal, Key-to-Door's door), that cell is otherwise in
    /// no token: the next token already holds the reset's observation. Left out of written
    /// configs when off.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub final_obs: bool,
}

impl Default for GptConfig {
    fn default() -> Self {
        Self {
            n_layer: 4,
            n_head: 4,
            d_model: 64,
            d_ff: 2048,
            context: 80,
            layout: TokenLayout::Transition,
            positions: Positions::Learned,
            activation: Activation::Gelu,
            dropout: 0.1,
            attn_dropout: 0.5,
            short_conv: None,
            episode_start: false,
            episode_return: false,
            final_obs: false,
        }
    }
}

impl GptConfig {
    /// Tokens the model attends over: `context` transitions × tokens per transition.
    pub fn max_tokens(&self) -> usize {
        self.context * self.layout.tokens_per_transition()
    }

    /// Preceding tokens each token embedding reads (see `short_conv`).
    pub fn short_conv(&self) -> usize {
        self.short_conv.unwrap_or(match self.layout {
            TokenLayout::Transition => 0,
            TokenLayout::Sar => 2,
        })
    }

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
        if self.short_conv() > 8 {
            return bad(format!(
                "short_conv must be at most 8 preceding tokens, found {}",
                self.short_conv()
            ));
        }
        if self.context < 2 {
            return bad(format!(
                "context must be at least 2, found {}",
                self.context
            ));
        }
        if (self.episode_start || self.episode_return || self.final_obs)
            && self.layout != TokenLayout::Transition
        {
            return bad(
                "episode_start, episode_return and final_obs apply to the transition layout".into(),
            );
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

/// Turns transitions into token features (built once from a [`TokenSpec`] and a layout).
#[derive(Clone, Debug)]
pub struct Tokenizer {
    encoder: ObsEncoder,
    obs_dim: usize,
    num_actions: usize,
    layout: TokenLayout,
    /// The transition layout's episode-start feature (see [`GptConfig::episode_start`]).
    episode_start: bool,
    /// The transition layout's return-so-far feature (see [`GptConfig::episode_return`]).
    episode_return: bool,
    /// The transition layout's previous-final-observation block (see [`GptConfig::final_obs`]).
    final_obs: bool,
}

impl TokenSpec {
    /// The tokenizer of the default (one token per transition) layout.
    pub fn tokenizer(&self) -> Tokenizer {
        self.tokenizer_for(TokenLayout::Transition)
    }

    pub fn tokenizer_for(&self, layout: TokenLayout) -> Tokenizer {
        Tokenizer {
            encoder: ObsEncoder::new(self.obs_encoding, &self.obs_space),
            obs_dim: self.obs_space.flat_dim(),
            num_actions: self.num_actions,
            layout,
            episode_start: false,
            episode_return: false,
            final_obs: false,
        }
    }

    /// The tokenizer of a model with `config`.
    pub fn tokenizer_of(&self, config: &GptConfig) -> Tokenizer {
        Tokenizer {
            episode_start: config.episode_start,
            episode_return: config.episode_return,
            final_obs: config.final_obs,
            ..self.tokenizer_for(config.layout)
        }
    }
}

impl Tokenizer {
    /// Features per token. Transition layout: encoded obs, one-hot previous action, previous
    /// reward, has-previous [, episode start] [, episode return so far] [, encoded final
    /// observation of the previous episode]. Sar layout: encoded obs, one-hot action, reward, of which a token
    /// fills only its own kind's part (the rest is 0).
    pub fn features(&self) -> usize {
        let (e, a) = (self.encoder.input_dim(), self.num_actions);
        match self.layout {
            TokenLayout::Transition => {
                e + a
                    + 2
                    + usize::from(self.episode_start)
                    + usize::from(self.episode_return)
                    + if self.final_obs { e } else { 0 }
            }
            TokenLayout::Sar => e + a + 1,
        }
    }

    pub fn layout(&self) -> TokenLayout {
        self.layout
    }

    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    /// Width of an encoded observation.
    pub fn obs_features(&self) -> usize {
        self.encoder.input_dim()
    }

    pub fn num_actions(&self) -> usize {
        self.num_actions
    }

    /// Transition layout: writes the tokens of `rows` transitions into `out` (`rows ×
    /// features()`): `obs` holds `rows × obs_dim` raw observations, `prev[i]` the previous
    /// action and reward of the same history (`None` at its first transition), `starts[i]`
    /// whether it begins an episode, `returns[i]` the return of its episode before it and
    /// `finals` (`rows × obs_dim`) the previous episode's final observation, read where a
    /// transition begins an episode and has a previous one (each read only with its feature).
    pub fn write(
        &self,
        obs: &[f32],
        prev: &[Option<(usize, f32)>],
        starts: &[bool],
        returns: &[f32],
        finals: &[f32],
        out: &mut [f32],
    ) {
        let enc = self.encoder.encode(obs);
        let enc_finals = if self.final_obs {
            self.encoder.encode(finals)
        } else {
            Vec::new()
        };
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
            if self.episode_start && starts.get(i).copied().unwrap_or(false) {
                tok[e + a + 2] = 1.0;
            }
            if self.episode_return {
                tok[e + a + 2 + usize::from(self.episode_start)] =
                    returns.get(i).copied().unwrap_or(0.0);
            }
            let begins_after_another = prev[i].is_some() && starts.get(i) == Some(&true);
            if self.final_obs && begins_after_another {
                if let Some(x) = enc_finals.get(i * e..(i + 1) * e) {
                    let at = e
                        + a
                        + 2
                        + usize::from(self.episode_start)
                        + usize::from(self.episode_return);
                    tok[at..at + e].copy_from_slice(x);
                }
            }
        }
    }

    /// Sar layout: one s token per observation of `obs` (`rows × obs_dim`) into `out` (`rows ×
    /// features()`).
    pub fn write_states(&self, obs: &[f32], out: &mut [f32]) {
        let enc = self.encoder.encode(obs);
        let (e, f) = (self.encoder.input_dim(), self.features());
        for (tok, x) in out.chunks_mut(f).zip(enc.chunks(e)) {
            tok[..e].copy_from_slice(x);
            tok[e..].iter_mut().for_each(|v| *v = 0.0);
        }
    }

    /// Sar layout: one a token per action into `out` (an action outside the space, or `None`,
    /// gives an all-zero token).
    pub fn write_actions(&self, actions: &[Option<usize>], out: &mut [f32]) {
        let (e, f, na) = (self.encoder.input_dim(), self.features(), self.num_actions);
        for (tok, a) in out.chunks_mut(f).zip(actions) {
            tok.iter_mut().for_each(|v| *v = 0.0);
            if let Some(a) = a.filter(|&a| a < na) {
                tok[e + a] = 1.0;
            }
        }
    }

    /// Sar layout: one r token per reward into `out`.
    pub fn write_rewards(&self, rewards: &[f32], out: &mut [f32]) {
        let (e, f, na) = (self.encoder.input_dim(), self.features(), self.num_actions);
        for (tok, &r) in out.chunks_mut(f).zip(rewards) {
            tok.iter_mut().for_each(|v| *v = 0.0);
            tok[e + na] = r;
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

/// The token embedding of each layout.
enum TokenEmbedding {
    /// One linear over the transition token's features.
    Transition { wte: Linear },
    /// One linear per kind, over its part of the token (encoded obs, one-hot action, reward).
    Sar {
        wte_s: Linear,
        wte_a: Linear,
        wte_r: Linear,
    },
}

/// Sar layout: the kind of token slot `slot` (counting cached tokens): 0 = s, 1 = a, 2 = r.
fn sar_kind(slot: usize) -> usize {
    slot % 3
}

/// Features `(B·T, F)` of the token `k` slots before each of the `t` new tokens of every window:
/// from `feats` (`B·T·F`, this call's tokens), or for the first tokens from `held` (per window,
/// the features of the newest cached tokens, oldest first), or zero before the window's start.
fn shift_features(
    feats: &[f32],
    held: &[Vec<f32>],
    b: usize,
    t: usize,
    f: usize,
    k: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; b * t * f];
    for i in 0..b {
        for j in 0..t {
            let dst = &mut out[(i * t + j) * f..(i * t + j + 1) * f];
            if j >= k {
                dst.copy_from_slice(&feats[(i * t + j - k) * f..(i * t + j - k + 1) * f]);
            } else if let Some(h) = held.get(i) {
                // Cached token `k − j` slots back from the first new one.
                let (n, back) = (h.len() / f, k - j);
                if back <= n {
                    dst.copy_from_slice(&h[(n - back) * f..(n - back + 1) * f]);
                }
            }
        }
    }
    out
}

/// The decoder-only transformer with its action head.
pub struct Gpt {
    pub config: GptConfig,
    pub tokens: TokenSpec,
    pub tokenizer: Tokenizer,
    wte: TokenEmbedding,
    /// `wte_prev[k − 1]` maps the features of the token k slots back (see `short_conv`).
    wte_prev: Vec<Linear>,
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
        let tokenizer = tokens.tokenizer_of(config);
        let wte = match config.layout {
            TokenLayout::Transition => TokenEmbedding::Transition {
                wte: gpt_linear(&mut tr.pp("wte"), tokenizer.features(), d, 0.02)?,
            },
            TokenLayout::Sar => {
                let obs = tokenizer.obs_features();
                TokenEmbedding::Sar {
                    wte_s: gpt_linear(&mut tr.pp("wte_s"), obs, d, 0.02)?,
                    wte_a: gpt_linear(&mut tr.pp("wte_a"), tokens.num_actions, d, 0.02)?,
                    wte_r: gpt_linear(&mut tr.pp("wte_r"), 1, d, 0.02)?,
                }
            }
        };
        let mut wte_prev = Vec::with_capacity(config.short_conv());
        for k in 1..=config.short_conv() {
            let mut pp = tr.pp("wte_prev");
            wte_prev.push(Linear::with_init(
                &mut pp.pp(k),
                tokenizer.features(),
                d,
                Init::Normal { std: 0.02 },
                None,
                SnMode::Off,
            )?);
        }
        let max_tokens = config.max_tokens();
        let wpe = match config.positions {
            Positions::Learned => tr
                .var("wpe.weight", &[max_tokens, d], Init::Normal { std: 0.02 })?
                .as_tensor()
                .clone(),
            Positions::Sinusoidal => sinusoidal(max_tokens, d, &device)?,
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
            wte_prev,
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

    /// Token embeddings `(B·T, d)` of features `x` `(B·T, F)`; in the sar layout slot j of
    /// each window is of kind `sar_kind(past + j)`.
    fn embed(&self, x: &Tensor, b: usize, t: usize, past: usize) -> Result<Tensor> {
        match &self.wte {
            TokenEmbedding::Transition { wte } => wte.forward(x),
            TokenEmbedding::Sar {
                wte_s,
                wte_a,
                wte_r,
            } => {
                // Each kind's linear reads its part of the features; a 0/1 column keeps its
                // output on the tokens of that kind only.
                let part = |lin: &Linear, kind: usize, start: usize, len: usize| {
                    let is_kind: Vec<f32> = (0..b * t)
                        .map(|i| f32::from(u8::from(sar_kind(past + i % t) == kind)))
                        .collect();
                    let is_kind = Tensor::from_vec(is_kind, (b * t, 1), &self.device)?;
                    let y = lin.forward(&x.narrow(1, start, len)?.contiguous()?)?;
                    Ok::<_, Error>(y.broadcast_mul(&is_kind)?)
                };
                let (e, na) = (self.tokenizer.obs_features(), self.tokens.num_actions);
                let s = part(wte_s, 0, 0, e)?;
                let a = part(wte_a, 1, e, na)?;
                let r = part(wte_r, 2, e + na, 1)?;
                Ok(((s + a)? + r)?)
            }
        }
    }

    /// Rows of the model's output that predict an action, as indices into `(B·T)`: every token
    /// in the transition layout, the s tokens in the sar layout.
    fn prediction_rows(&self, b: usize, t: usize, past: usize) -> Option<Vec<u32>> {
        match self.config.layout {
            TokenLayout::Transition => None,
            TokenLayout::Sar => Some(
                (0..b * t)
                    .filter(|&i| sar_kind(past + i % t) == 0)
                    .map(|i| i as u32)
                    .collect(),
            ),
        }
    }

    /// Action logits `(B·S, A)` for token features `(B, T, F)` given as a flat vector, one row
    /// per transition whose action the tokens predict: S = T in the transition layout; in the
    /// sar layout S is the number of s tokens among the T slots (slot j, counting cached
    /// tokens, is an s token when `(past + j) mod 3 = 0`).
    ///
    /// `first_pos[b]` is the slot of window b's first real token (left padding before it):
    /// positions count from there and padded keys are masked out. In the sar layout it must be
    /// a multiple of 3 (padding is whole transitions). `cache`, when given, must be
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
        if past + t > self.config.max_tokens() {
            return Err(Error::Config(format!(
                "model input: {} tokens exceed the context of {} tokens",
                past + t,
                self.config.max_tokens()
            )));
        }
        let tpt = self.config.layout.tokens_per_transition();
        if let Some(fp) = first_pos.iter().find(|&&fp| fp % tpt != 0) {
            return Err(Error::Config(format!(
                "model input: a window starts at token slot {fp}, expected a multiple of {tpt} (whole transitions)"
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
        // Short causal convolution: the features of the tokens 1..=short_conv slots back.
        let mut conv = Vec::with_capacity(self.wte_prev.len());
        if !self.wte_prev.is_empty() {
            let held = cache.as_ref().map(|c| c.prev_features()).unwrap_or(&[]);
            for (k, lin) in (1..).zip(&self.wte_prev) {
                let shifted = shift_features(&feats, held, b, t, f, k);
                let shifted = Tensor::from_vec(shifted, (b * t, f), &self.device)?;
                conv.push(lin.forward(&shifted)?);
            }
            if let Some(c) = cache.as_mut() {
                c.keep_features(&feats, b, t, f, self.wte_prev.len());
            }
        }
        let x = Tensor::from_vec(feats, (b * t, f), &self.device)?;
        let mut tok = self.embed(&x, b, t, past)?; // (B·T, d)
        for c in conv {
            tok = (tok + c)?;
        }

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
            let h = self.config.activation.apply(&h)?;
            let h = block.c_proj.forward(&h)?;
            x = (x + dropout(&h, self.config.dropout, &mut train)?)?;
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        if let Some(rows) = self.prediction_rows(b, t, past) {
            let n = rows.len();
            x = x.index_select(&Tensor::from_vec(rows, n, &self.device)?, 0)?; // (B·S, d)
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
    masked_mean(&per, mask)
}

/// The mean of `per` (N) over the slots where `mask` is 1.
fn masked_mean(per: &Tensor, mask: &[f32]) -> Result<Tensor> {
    let m = Tensor::from_vec(mask.to_vec(), mask.len(), per.device())?;
    let count: f32 = mask.iter().sum();
    Ok((per * m)?
        .sum_all()?
        .affine(1.0 / count.max(1.0) as f64, 0.0)?)
}

/// Masked mean cross-entropy of `logits` (N, A) against target distributions `probs` (N·A,
/// row-major; each row sums to 1), with label smoothing ε mixing each row with the uniform one:
/// `−Σ_a ((1 − ε)·p_a + ε/A)·log q_a`. A one-hot row gives [`action_loss`]'s value.
pub fn soft_action_loss(
    logits: &Tensor,
    probs: &[f32],
    mask: &[f32],
    label_smoothing: f64,
) -> Result<Tensor> {
    let dev = logits.device();
    let (n, a) = logits.dims2()?;
    if probs.len() != n * a || mask.len() != n {
        return Err(Error::Config(format!(
            "soft targets: expected {n}×{a} probabilities and {n} mask entries, found {} and {}",
            probs.len(),
            mask.len()
        )));
    }
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let p = Tensor::from_vec(probs.to_vec(), (n, a), dev)?
        .affine(1.0 - label_smoothing, label_smoothing / a as f64)?;
    let per = (logp * p)?.sum(D::Minus1)?.neg()?; // (N)
    masked_mean(&per, mask)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envs::TaskFamily;

    /// Soft targets by hand: logits (0, ln 2) give q = (1/3, 2/3); against p = (1/2, 1/2) the
    /// loss is ln 3 − ½ ln 2; a masked row does not count; one-hot rows give `action_loss`,
    /// label smoothing included; a wrong length is refused.
    #[test]
    fn soft_action_loss_by_hand_and_against_hard_targets() {
        let dev = Device::Cpu;
        let logits = Tensor::from_vec(vec![0.0f32, 2f32.ln(), 5.0, -1.0], (2, 2), &dev).unwrap();
        let l = soft_action_loss(&logits, &[0.5, 0.5, 1.0, 0.0], &[1.0, 0.0], 0.0).unwrap();
        let want = 3f64.ln() - 0.5 * 2f64.ln();
        assert!((f64::from(l.to_scalar::<f32>().unwrap()) - want).abs() < 1e-6);

        let logits = Tensor::from_vec(
            vec![0.3f32, -1.2, 2.0, 0.1, 0.0, -0.5, 1.5, 0.7, -2.0],
            (3, 3),
            &dev,
        )
        .unwrap();
        let (targets, mask) = ([2u32, 0, 1], [1.0f32, 1.0, 0.0]);
        let mut onehot = vec![0.0f32; 9];
        for (i, &t) in targets.iter().enumerate() {
            onehot[i * 3 + t as usize] = 1.0;
        }
        for eps in [0.0, 0.1] {
            let hard = action_loss(&logits, &targets, &mask, eps).unwrap();
            let soft = soft_action_loss(&logits, &onehot, &mask, eps).unwrap();
            let (h, s) = (
                hard.to_scalar::<f32>().unwrap(),
                soft.to_scalar::<f32>().unwrap(),
            );
            assert!((h - s).abs() < 1e-6, "ε {eps}: {h} vs {s}");
        }
        let e = soft_action_loss(&logits, &onehot[..6], &mask, 0.0)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("3×3"), "{e}");
    }

    fn tokens() -> TokenSpec {
        let Ok(family) = TaskFamily::from_id("dark_room") else {
            panic!("dark_room is a built-in task family");
        };
        TokenSpec {
            obs_space: family.spec().observation_space.clone(),
            obs_encoding: ObsEncoding::OneHot,
            num_actions: 5,
        }
    }

    fn sar(context: usize) -> GptConfig {
        GptConfig {
            n_layer: 2,
            n_head: 2,
            d_model: 16,
            d_ff: 32,
            context,
            layout: TokenLayout::Sar,
            dropout: 0.0,
            attn_dropout: 0.0,
            ..GptConfig::default()
        }
    }

    #[test]
    fn configs_without_a_layout_load_as_transition_and_write_none() {
        let mut old = serde_json::to_value(GptConfig::default()).unwrap();
        assert!(old.get("layout").is_none(), "{old}");
        old["context"] = serde_json::json!(40);
        let c: GptConfig = serde_json::from_value(old).unwrap();
        assert_eq!(c.layout, TokenLayout::Transition);
        assert_eq!(c.context, 40);
        assert_eq!(c.max_tokens(), 40);
    }

    #[test]
    fn sar_layout_round_trips_through_json_and_toml() {
        let c = sar(10);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["layout"], "sar");
        assert_eq!(serde_json::from_value::<GptConfig>(v).unwrap(), c);
        let t: toml::Table = toml::from_str("layout = \"sar\"\ncontext = 10\n").unwrap();
        let c: GptConfig = crate::config::from_table(t, "x.toml").unwrap();
        assert_eq!(c.layout, TokenLayout::Sar);
        assert_eq!(c.max_tokens(), 30);
    }

    #[test]
    fn unknown_layout_is_an_error_naming_the_field() {
        let e = serde_json::from_value::<GptConfig>(serde_json::json!({"layout": "sra"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.layout") && e.contains("\"sra\""), "{e}");
        let t: toml::Table = toml::from_str("layout = \"sra\"\n").unwrap();
        let e = crate::config::from_table::<GptConfig>(t, "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml") && e.contains("model.layout"), "{e}");
        assert!(e.contains("\"transition\" or \"sar\""), "{e}");
    }

    /// Random sar tokens for `b` windows of `c` transitions, with the kinds' parts filled.
    fn random_sar_features(tk: &Tokenizer, b: usize, c: usize, rng: &mut Rng) -> Vec<f32> {
        let obs: Vec<f32> = (0..b * c * 2).map(|_| rng.below(9) as f32).collect();
        let acts: Vec<Option<usize>> = (0..b * c).map(|_| Some(rng.below(5))).collect();
        let rews: Vec<f32> = (0..b * c).map(|_| rng.normal() as f32).collect();
        let f = tk.features();
        let (mut s, mut a, mut r) = (
            vec![0.0; b * c * f],
            vec![0.0; b * c * f],
            vec![0.0; b * c * f],
        );
        tk.write_states(&obs, &mut s);
        tk.write_actions(&acts, &mut a);
        tk.write_rewards(&rews, &mut r);
        let mut out = Vec::with_capacity(3 * b * c * f);
        for i in 0..b * c {
            for part in [&s, &a, &r] {
                out.extend_from_slice(&part[i * f..(i + 1) * f]);
            }
        }
        out
    }

    /// a_t is predicted at s_t: its logits do not change with the tokens a_t and r_t (which come
    /// after s_t), but the next transition's do.
    #[test]
    fn sar_predicts_each_action_at_its_state_token_without_seeing_it() {
        let mut store = ParamStore::new(&Device::Cpu, 3);
        let model = Gpt::new(&sar(4), &tokens(), &mut store).unwrap();
        let names: Vec<String> = store.vars().keys().cloned().collect();
        for n in ["transformer.wte_s.weight", "transformer.wte_a.weight"] {
            assert!(names.iter().any(|x| x == n), "{n} not in {names:?}");
        }
        assert!(!names.iter().any(|x| x == "transformer.wte.weight"));
        let wpe = store.vars()["transformer.wpe.weight"]
            .as_tensor()
            .dims()
            .to_vec();
        assert_eq!(wpe, vec![12, 16]);
        let tk = &model.tokenizer;
        let f = tk.features();
        let mut rng = Rng::seed_from_u64(1);
        let feats = random_sar_features(tk, 2, 4, &mut rng);
        let logits = |x: &[f32]| -> Vec<Vec<f32>> {
            let l = model.forward(x, 2, 12, &[0, 3], None, None).unwrap();
            l.to_vec2().unwrap()
        };
        let base = logits(&feats);
        assert_eq!(base.len(), 2 * 4, "one row per transition");
        // Change a_1 and r_1 of window 0 (token slots 4 and 5).
        let mut changed = feats.clone();
        for x in &mut changed[4 * f..6 * f] {
            *x = if *x == 0.0 { 1.0 } else { 0.0 };
        }
        let after = logits(&changed);
        let diff = |i: usize| -> f32 {
            base[i]
                .iter()
                .zip(&after[i])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max)
        };
        assert_eq!(diff(0), 0.0);
        assert_eq!(diff(1), 0.0, "the prediction of a_1 saw a_1 or r_1");
        assert!(diff(2) > 1e-4, "s_2 should attend to a_1 and r_1");
        for i in 4..8 {
            assert_eq!(diff(i), 0.0, "window 1 changed");
        }
        // Padding is whole transitions.
        let e = model
            .forward(&feats, 2, 12, &[0, 2], None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("multiple of 3"), "{e}");
    }
}
