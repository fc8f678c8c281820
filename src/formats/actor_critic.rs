//! Other libraries' actor-critic agents (SAC, TD3) as the platform's SAC.
//!
//! Each reader gathers its file's layers into [`ActorCritic`] under the library's names; one
//! builder maps them onto `actor.body.{k}`, `actor.mean`, `actor.log_std`, `critic.{i}.{k}`
//! and `log_alpha`, checks every shape against the environment and loads them.
//!
//! Two conversions keep the network exact:
//! - A deterministic actor (TD3's `mu`) becomes a Gaussian with the same mean and a fixed
//!   standard deviation of [`DETERMINISTIC_STD`] before the tanh: its greedy actions,
//!   `tanh(mean)` on the action box, are the original's, and its samples explore as TD3's
//!   Gaussian action noise (σ = 0.1, Fujimoto et al. 2018) does.
//! - A critic that takes actions on the environment's scale (CleanRL's: `cat(obs, action)` with
//!   `action = scale · u + bias`) is rewritten to take the platform's unit actions `u`: the
//!   first layer's action columns are multiplied by `scale` and `W_a · bias` is added to its
//!   bias, the same affine map folded into the weights.

use crate::agents::sac::{LogStdBound, Sac, SacConfig, SacNetConfig};
use crate::agents::Agent;
use crate::checkpoint::{tensor_to_raw, CheckpointData};
use crate::envs::{EnvSpec, Space};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The pre-tanh standard deviation given to a deterministic actor.
pub const DETERMINISTIC_STD: f64 = 0.1;

/// A linear layer: `(name in the file, weight, bias)`.
pub type Layer = (String, Tensor, Tensor);

/// How the actor's log-std is produced.
pub enum LogStd {
    /// A layer whose output is bounded as `bound` says on `[min, max]`.
    Head {
        layer: Layer,
        bound: LogStdBound,
        min: f64,
        max: f64,
    },
    /// None: a deterministic actor (see the module docs).
    Deterministic,
}

/// An actor-critic agent as a library stores it, under the library's names.
pub struct ActorCritic {
    /// "the SB3 TD3 agent", "the CleanRL SAC model": the start of error messages.
    pub what: String,
    /// The actor's hidden layers, then its mean (or `mu`) layer.
    pub body: Vec<Layer>,
    pub mean: Layer,
    pub log_std: LogStd,
    /// Each critic's layers, the first taking `cat(obs, action)`.
    pub critics: Vec<Vec<Layer>>,
    /// `Some((scale, bias))` when the critics take actions on the environment's scale.
    pub critic_action_scale: Option<(Vec<f32>, Vec<f32>)>,
    /// The entropy coefficient α (a temperature for fine-tuning; TD3 has none).
    pub ent_coef: f64,
    pub gamma: Option<f64>,
    pub tau: Option<f64>,
}

/// `(scale, bias)` of a Box action space: `(high − low)/2`, `(high + low)/2`.
pub fn action_scale(env: &EnvSpec) -> Option<(Vec<f32>, Vec<f32>)> {
    let Space::Box { low, high, .. } = &env.action_space else {
        return None;
    };
    let n = env.action_space.flat_dim();
    Some((
        (0..n).map(|i| (high.get(i) - low.get(i)) / 2.0).collect(),
        (0..n).map(|i| (high.get(i) + low.get(i)) / 2.0).collect(),
    ))
}

/// The first critic layer rewritten to take unit actions (see the module docs).
fn unit_action_layer(
    file: &Path,
    (name, w, b): &Layer,
    obs_dim: usize,
    (scale, bias): &(Vec<f32>, Vec<f32>),
) -> Result<Layer> {
    let dims = w.dims().to_vec();
    let act_dim = scale.len();
    if dims.len() != 2 || dims[1] != obs_dim + act_dim {
        return Err(Error::data(
            file,
            format!(
                "`{name}.weight` {dims:?} should take {obs_dim} observation + {act_dim} action values"
            ),
        ));
    }
    let w64 = w.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let mut b64 = b.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let mut out = w64.clone();
    for (r, row) in w64.iter().enumerate() {
        for j in 0..act_dim {
            let wa = row[obs_dim + j];
            out[r][obs_dim + j] = wa * f64::from(scale[j]);
            b64[r] += wa * f64::from(bias[j]);
        }
    }
    let flat: Vec<f32> = out.concat().iter().map(|&x| x as f32).collect();
    let b32: Vec<f32> = b64.iter().map(|&x| x as f32).collect();
    Ok((
        name.clone(),
        Tensor::from_vec(flat, (dims[0], dims[1]), &Device::Cpu)?,
        Tensor::new(b32.as_slice(), &Device::Cpu)?,
    ))
}

impl ActorCritic {
    /// The platform's SAC holding these networks on `env`, with the list of `(their tensor,
    /// platform tensor, shape)` it mapped.
    pub fn to_sac(
        &self,
        file: &Path,
        env: &EnvSpec,
        device: &Device,
    ) -> Result<crate::formats::Imported> {
        let bad = |m: String| Error::data(file, m);
        let hidden: Vec<usize> = self.body.iter().map(|(_, w, _)| w.dims()[0]).collect();
        if !(1..=2).contains(&self.critics.len()) {
            return Err(bad(format!(
                "{}: {} critics; the platform's SAC has one or two",
                self.what,
                self.critics.len()
            )));
        }
        for (i, c) in self.critics.iter().enumerate() {
            let h: Vec<usize> = c
                .iter()
                .take(c.len().saturating_sub(1))
                .map(|(_, w, _)| w.dims()[0])
                .collect();
            if h != hidden {
                return Err(bad(format!(
                    "{}: critic {i} has hidden sizes {h:?} but the actor {hidden:?}: the \
                     platform's SAC uses one set of hidden sizes for both",
                    self.what
                )));
            }
        }
        if !(self.ent_coef.is_finite() && self.ent_coef > 0.0) {
            return Err(bad(format!(
                "{}: entropy coefficient {} is not a positive number",
                self.what, self.ent_coef
            )));
        }
        let (bound, lo, hi) = match &self.log_std {
            LogStd::Head {
                bound, min, max, ..
            } => (*bound, *min, *max),
            LogStd::Deterministic => (LogStdBound::Clip, -20.0, 2.0),
        };
        let defaults = SacConfig::default();
        let cfg = SacConfig {
            network: SacNetConfig {
                hidden: hidden.clone(),
                ..SacNetConfig::default()
            },
            gamma: self.gamma.or(defaults.gamma),
            tau: self.tau.unwrap_or(defaults.tau),
            clipped_double_q: self.critics.len() == 2,
            initial_temperature: self.ent_coef,
            log_std_min: lo,
            log_std_max: hi,
            log_std_bound: bound,
            ..defaults
        };
        let mut agent = Sac::new("sac", cfg, env, device, 0, Some(0))?;
        let mut model = BTreeMap::new();
        let mut mapping = Vec::new();
        let mut put = |theirs: &str, ours: String, t: &Tensor| -> Result<()> {
            mapping.push((theirs.to_string(), ours.clone(), t.dims().to_vec()));
            model.insert(ours, tensor_to_raw(&t.to_dtype(DType::F32)?)?);
            Ok(())
        };
        let mut layer = |(name, w, b): &Layer, ours: String| -> Result<()> {
            put(&format!("{name}.weight"), format!("{ours}.weight"), w)?;
            put(&format!("{name}.bias"), format!("{ours}.bias"), b)
        };
        for (k, l) in self.body.iter().enumerate() {
            layer(l, format!("actor.body.{k}"))?;
        }
        layer(&self.mean, "actor.mean".into())?;
        match &self.log_std {
            LogStd::Head { layer: l, .. } => layer(l, "actor.log_std".into())?,
            LogStd::Deterministic => {
                let (_, w, b) = &self.mean;
                let zeros = Tensor::zeros(w.dims(), DType::F32, &Device::Cpu)?;
                let fixed = Tensor::full(DETERMINISTIC_STD.ln() as f32, b.dims(), &Device::Cpu)?;
                let what = format!("(fixed σ = {DETERMINISTIC_STD})");
                layer(&(what, zeros, fixed), "actor.log_std".into())?;
            }
        }
        for (i, critic) in self.critics.iter().enumerate() {
            for (k, l) in critic.iter().enumerate() {
                let converted;
                let l = match (&self.critic_action_scale, k) {
                    (Some(sb), 0) => {
                        converted = unit_action_layer(file, l, env.obs_dim(), sb)?;
                        &converted
                    }
                    _ => l,
                };
                layer(l, format!("critic.{i}.{k}"))?;
            }
        }
        let log_alpha = Tensor::new(&[self.ent_coef.ln() as f32], &Device::Cpu)?;
        model.insert("log_alpha".to_string(), tensor_to_raw(&log_alpha)?);
        let expected = agent.save(false)?.model;
        let mut problems = Vec::new();
        for (k, v) in &model {
            match expected.get(k) {
                Some(e) if e.shape == v.shape => {}
                Some(e) => problems.push(format!(
                    "`{}` → `{k}`: expected shape {:?}, found {:?}",
                    mapping
                        .iter()
                        .find(|m| &m.1 == k)
                        .map_or("log_alpha", |m| m.0.as_str()),
                    e.shape,
                    v.shape
                )),
                None => problems.push(format!("`{k}` is not part of the platform's SAC")),
            }
        }
        if !problems.is_empty() {
            return Err(bad(format!(
                "cannot map {} onto `{}`:\n  {}",
                self.what,
                env.id(),
                problems.join("\n  ")
            )));
        }
        agent.load(&CheckpointData {
            config: Value::Null,
            model,
            ..Default::default()
        })?;
        Ok((Box::new(agent), mapping))
    }
}
