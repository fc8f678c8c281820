//! CleanRL's PyTorch model files (`.cleanrl_model`), recognised from what they hold:
//!
//! | file (`torch.save` of)                               | script                          | platform agent |
//! |------------------------------------------------------|---------------------------------|----------------|
//! | `q_network.state_dict()`                             | `dqn.py`, `dqn_atari.py`        | DQN (MLP or Nature CNN, from the shapes) |
//! | `{"model_weights": state_dict, "args": vars(args)}`  | `c51.py`, `c51_atari.py`        | C51: support from the `atoms` buffer |
//! | `(actor, qf1, qf2)` state dicts, actor with `fc_mean`/`fc_logstd` | `sac_continuous_action.py` | SAC |
//! | `(actor, qf1[, qf2])`, actor with `fc_mu`            | `td3_continuous_action.py`, `ddpg_continuous_action.py` | SAC with a fixed σ ([`super::actor_critic`]) |
//!
//! CleanRL's SAC bounds its log-std with `tanh` on [−5, 2] (the platform's default) and its
//! critics take actions on the environment's scale; the actor's `action_scale`/`action_bias`
//! buffers must equal the environment's and the critics are rewritten for unit actions. The
//! entropy coefficient is not saved by the scripts: the platform's default initial temperature
//! stands in (it matters only when the agent goes on training).

use super::actor_critic::{action_scale, ActorCritic, Layer, LogStd};
use super::torch_net::Support;
use crate::agents::sac::{LogStdBound, SacConfig};
use crate::envs::EnvSpec;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::path::Path;

/// A weights-only agent for the CleanRL file at `path` whose tensors are `tensors` (named by
/// their path in the pickled object, see [`crate::archive::read_torch_tensors`]).
pub fn import(
    path: &Path,
    tensors: &[(String, Tensor)],
    env: &EnvSpec,
    device: &Device,
) -> Result<crate::formats::Imported> {
    // C51: the state dict under `model_weights`, with the support buffer `atoms`.
    if !tensors.is_empty()
        && tensors
            .iter()
            .all(|(n, _)| n.starts_with("model_weights.") || n.starts_with("args."))
    {
        let inner: Vec<(String, Tensor)> = tensors
            .iter()
            .filter_map(|(n, t)| {
                n.strip_prefix("model_weights.")
                    .map(|s| (s.to_string(), t.clone()))
            })
            .collect();
        return q_network(path, &inner, env, device);
    }
    // A tuple of state dicts: an actor, then one or two critics.
    if tensors.iter().any(|(n, _)| n.starts_with("0."))
        && tensors.iter().all(|(n, _)| {
            n.split_once('.')
                .is_some_and(|(i, _)| i.parse::<usize>().is_ok())
        })
    {
        return actor_critic(path, tensors, env)?.to_sac(path, env, device);
    }
    q_network(path, tensors, env, device)
}

/// What a CleanRL file holds beyond a plain Q-network's state dict, in a person's words
/// (`inspect`); `None` for a plain state dict.
pub fn kind(tensors: &[(String, Tensor)]) -> Option<String> {
    let has = |name: &str| tensors.iter().any(|(n, _)| n == name);
    if let Some((_, atoms)) = tensors.iter().find(|(n, _)| n.ends_with("atoms")) {
        let z: Vec<f32> = atoms.flatten_all().ok()?.to_vec1().ok()?;
        return Some(format!(
            "CleanRL C51 Q-network: {} atoms on [{}, {}]",
            z.len(),
            z.first()?,
            z.last()?
        ));
    }
    if has("0.fc_mean.weight") {
        return Some(
            "CleanRL SAC (actor, critics) tuple: log-std tanh-bounded on [-5, 2], critics \
             rewritten for unit actions"
                .into(),
        );
    }
    has("0.fc_mu.weight").then(|| {
        format!(
            "CleanRL TD3/DDPG (actor, critics) tuple: the deterministic actor as a Gaussian with \
             a fixed σ = {}, critics rewritten for unit actions",
            super::actor_critic::DETERMINISTIC_STD
        )
    })
}

/// A DQN or (with an `atoms` buffer) C51 Q-network from a state dict.
fn q_network(
    path: &Path,
    tensors: &[(String, Tensor)],
    env: &EnvSpec,
    device: &Device,
) -> Result<crate::formats::Imported> {
    let (atoms, rest): (Vec<_>, Vec<_>) = tensors.iter().cloned().partition(|(n, _)| n == "atoms");
    let support = match atoms.first() {
        None => None,
        Some((_, t)) => Some(support_of(path, t)?),
    };
    let layers = super::torch_net::layers(path, &rest)?;
    super::torch_net::dqn_from_layers(path, &layers, env, support, device)
}

/// The support a C51 `atoms` buffer holds: evenly spaced values, at least two.
fn support_of(path: &Path, atoms: &Tensor) -> Result<Support> {
    let z: Vec<f64> = atoms
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let bad = |m: String| Error::data(path, format!("`atoms`: {m}"));
    if atoms.rank() != 1 || z.len() < 2 {
        return Err(bad(format!(
            "shape {:?}; expected a vector of at least 2 values",
            atoms.dims()
        )));
    }
    let (v_min, v_max) = (z[0], z[z.len() - 1]);
    let step = (v_max - v_min) / (z.len() - 1) as f64;
    let uneven = z
        .iter()
        .enumerate()
        .find(|(i, &x)| (x - (v_min + step * *i as f64)).abs() > 1e-4 * (1.0 + x.abs()));
    if !(v_min < v_max && v_min.is_finite() && v_max.is_finite()) || uneven.is_some() {
        return Err(bad(format!(
            "{} values from {v_min} to {v_max} are not evenly spaced and increasing \
             (torch.linspace(v_min, v_max, n_atoms) was expected)",
            z.len()
        )));
    }
    Ok(Support {
        atoms: z.len(),
        v_min,
        v_max,
    })
}

/// The actor and critics of a `(actor, qf1[, qf2])` tuple.
fn actor_critic(path: &Path, tensors: &[(String, Tensor)], env: &EnvSpec) -> Result<ActorCritic> {
    let bad = |m: String| Error::data(path, m);
    let get = |name: &str| -> Result<Tensor> {
        tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| {
                bad(format!(
                    "no tensor `{name}` (the tuple's actor and critics)"
                ))
            })
    };
    let layer = |name: &str| -> Result<Layer> {
        Ok((
            name.to_string(),
            get(&format!("{name}.weight"))?,
            get(&format!("{name}.bias"))?,
        ))
    };
    let has = |name: &str| tensors.iter().any(|(n, _)| n == name);
    let Some((scale, bias)) = action_scale(env) else {
        return Err(bad(format!(
            "an actor-critic model needs continuous actions, but `{}` has {}",
            env.id(),
            env.action_space
        )));
    };
    for (buffer, want) in [("0.action_scale", &scale), ("0.action_bias", &bias)] {
        let got: Vec<f32> = get(buffer)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let same = got.len() == want.len()
            && got
                .iter()
                .zip(want.iter())
                .all(|(a, b)| (a - b).abs() <= 1e-6 * (1.0 + b.abs()));
        if !same {
            return Err(bad(format!(
                "`{buffer}` is {got:?}, but `{}`'s action box {} gives {want:?}: the model was \
                 trained on another action range",
                env.id(),
                env.action_space
            )));
        }
    }
    let mut critics = Vec::new();
    for i in 1..=2 {
        if has(&format!("{i}.fc1.weight")) {
            critics.push(vec![
                layer(&format!("{i}.fc1"))?,
                layer(&format!("{i}.fc2"))?,
                layer(&format!("{i}.fc3"))?,
            ]);
        }
    }
    let body = vec![layer("0.fc1")?, layer("0.fc2")?];
    let defaults = SacConfig::default();
    let (what, mean, log_std) = if has("0.fc_mean.weight") {
        (
            "the CleanRL SAC model",
            layer("0.fc_mean")?,
            LogStd::Head {
                layer: layer("0.fc_logstd")?,
                bound: LogStdBound::Tanh,
                min: -5.0,
                max: 2.0,
            },
        )
    } else if has("0.fc_mu.weight") {
        (
            "the CleanRL TD3/DDPG model",
            layer("0.fc_mu")?,
            LogStd::Deterministic,
        )
    } else {
        return Err(bad(
            "a tuple of state dicts whose actor (`0.*`) has neither `fc_mean`/`fc_logstd` \
             (sac_continuous_action.py) nor `fc_mu` (td3/ddpg_continuous_action.py)"
                .into(),
        ));
    };
    Ok(ActorCritic {
        what: what.into(),
        body,
        mean,
        log_std,
        critics,
        critic_action_scale: Some((scale, bias)),
        ent_coef: defaults.initial_temperature,
        gamma: None,
        tau: None,
    })
}
