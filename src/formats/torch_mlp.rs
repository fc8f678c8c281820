//! A PyTorch MLP Q-network read from its state dict alone: the `*.weight`/`*.bias` pairs in
//! numeric-aware name order are the linear layers of a `nn.Sequential` with ReLU between them
//! (CleanRL's `dqn.py`: `network.0` obs→120, `network.2` 120→84, `network.4` 84→actions; an
//! SB3 DQN's `q_net.q_net.{0,2,4}`). The hidden sizes come from the shapes, so no `--arch` is
//! needed; the input must be the environment's observation size and the output its number of
//! actions.

use crate::agents::dqn::{Dqn, DqnConfig};
use crate::agents::Agent;
use crate::checkpoint::{tensor_to_raw, CheckpointData};
use crate::envs::EnvSpec;
use crate::error::{Error, Result};
use crate::nn::qnet::{Body, QNetConfig};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

/// `(layer name, weight, bias)` triples of a state dict whose every tensor is a linear layer's
/// weight or bias; anything else is an error naming it.
pub fn linear_layers(
    file: &Path,
    tensors: &[(String, Tensor)],
) -> Result<Vec<(String, Tensor, Tensor)>> {
    let by_name: BTreeMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (name, t) in tensors {
        if let Some(layer) = name.strip_suffix(".weight") {
            if t.rank() != 2 {
                problems.push(format!(
                    "`{name}` has shape {:?}: only linear layers (2-D weights) are read without \
                     --arch (a convolution needs --arch minatar-conv:C,H...)",
                    t.dims()
                ));
                continue;
            }
            match by_name.get(format!("{layer}.bias").as_str()) {
                Some(b) => out.push((layer.to_string(), t.clone(), (*b).clone())),
                None => problems.push(format!("`{name}` has no `{layer}.bias`")),
            }
        } else if let Some(layer) = name.strip_suffix(".bias") {
            if !by_name.contains_key(format!("{layer}.weight").as_str()) {
                problems.push(format!("`{name}` has no `{layer}.weight`"));
            }
        } else {
            problems.push(format!(
                "`{name}` is neither a weight nor a bias of a linear layer"
            ));
        }
    }
    if out.is_empty() && problems.is_empty() {
        problems.push("no tensors".into());
    }
    if !problems.is_empty() {
        return Err(Error::data(
            file,
            format!("not an MLP state dict:\n  {}", problems.join("\n  ")),
        ));
    }
    Ok(out)
}

/// Builds a weights-only DQN agent from linear layers on `env`, with the list of
/// `(their tensor, platform tensor, shape)` it mapped.
pub fn dqn_from_layers(
    file: &Path,
    layers: &[(String, Tensor, Tensor)],
    env: &EnvSpec,
    device: &Device,
) -> Result<crate::formats::Imported> {
    let bad = |m: String| Error::data(file, m);
    let n_actions = env.action_space.discrete_n().ok_or_else(|| {
        bad(format!(
            "a Q-network needs discrete actions, but `{}` has {}",
            env.id(),
            env.action_space
        ))
    })?;
    let obs_dim = env.obs_dim();
    let mut problems = Vec::new();
    let mut fan_in = obs_dim;
    for (i, (name, w, b)) in layers.iter().enumerate() {
        let (rows, cols) = (w.dims()[0], w.dims()[1]);
        if cols != fan_in {
            problems.push(if i == 0 {
                format!(
                    "`{name}.weight` takes {cols} inputs, but `{}` has {obs_dim}-value observations ({})",
                    env.id(),
                    env.observation_space
                )
            } else {
                format!("`{name}.weight` takes {cols} inputs, but the layer before gives {fan_in}")
            });
        }
        if b.dims() != [rows] {
            problems.push(format!(
                "`{name}.bias` has shape {:?}, expected [{rows}]",
                b.dims()
            ));
        }
        fan_in = rows;
    }
    if fan_in != n_actions {
        problems.push(format!(
            "the last layer gives {fan_in} outputs, but `{}` has {n_actions} actions",
            env.id()
        ));
    }
    if !problems.is_empty() {
        return Err(bad(format!(
            "cannot load as a Q-network on `{}`:\n  {}",
            env.id(),
            problems.join("\n  ")
        )));
    }
    let hidden: Vec<usize> = layers[..layers.len() - 1]
        .iter()
        .map(|(_, w, _)| w.dims()[0])
        .collect();
    let cfg = DqnConfig {
        network: QNetConfig {
            body: Body::Mlp,
            hidden: Some(hidden),
            ..QNetConfig::default()
        },
        ..DqnConfig::default()
    };
    let mut agent = Dqn::new("dqn", cfg, env, device, 0, Some(0))?;
    let mut model = BTreeMap::new();
    let mut mapping = Vec::new();
    for (i, (name, w, b)) in layers.iter().enumerate() {
        for (leaf, t) in [("weight", w), ("bias", b)] {
            let ours = format!("q.{i}.{leaf}");
            mapping.push((format!("{name}.{leaf}"), ours.clone(), t.dims().to_vec()));
            model.insert(ours, tensor_to_raw(&t.to_dtype(DType::F32)?)?);
        }
    }
    agent.load(&CheckpointData {
        config: serde_json::Value::Null,
        model,
        ..Default::default()
    })?;
    Ok((Box::new(agent), mapping))
}
