//! A PyTorch Q-network read from its state dict alone: the `*.weight`/`*.bias` pairs in
//! numeric-aware name order are the layers of a `nn.Sequential` with ReLU between them, and
//! the network is recognised from their shapes, so no `--arch` is needed:
//!
//! - only linear layers: an MLP (CleanRL's `dqn.py`: `network.0` obs→120, `network.2` 120→84,
//!   `network.4` 84→actions; an SB3 DQN's `q_net.q_net.{0,2,4}`);
//! - three convolutions of 8×8, 4×4 and 3×3 kernels with 32, 64, 64 filters, then linear
//!   layers: the Nature DQN network (CleanRL's `dqn_atari.py`, SB3's `NatureCNN`), strides
//!   4, 2, 1 as the paper's, pixels divided by 255;
//! - one 3×3 convolution, then linear layers: the MinAtar network.
//!
//! The input must fit the environment's observations and the output its number of actions;
//! every mismatch is an error naming the tensor and both shapes.

use crate::agents::dqn::{Dqn, DqnConfig};
use crate::agents::Agent;
use crate::checkpoint::{tensor_to_raw, CheckpointData};
use crate::envs::EnvSpec;
use crate::error::{Error, Result};
use crate::nn::qnet::{Body, QNetConfig, NATURE_CONVS};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

/// `(layer name, weight, bias)` triples of a state dict whose every tensor is a linear or
/// convolution layer's weight or bias; anything else is an error naming it.
pub fn layers(file: &Path, tensors: &[(String, Tensor)]) -> Result<Vec<(String, Tensor, Tensor)>> {
    let by_name: BTreeMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (name, t) in tensors {
        if let Some(layer) = name.strip_suffix(".weight") {
            if !matches!(t.rank(), 2 | 4) {
                problems.push(format!(
                    "`{name}` has shape {:?}: a linear (2-D) or convolution (4-D) weight was expected",
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
                "`{name}` is neither a weight nor a bias of a layer"
            ));
        }
    }
    if out.is_empty() && problems.is_empty() {
        problems.push("no tensors".into());
    }
    if !problems.is_empty() {
        return Err(Error::data(
            file,
            format!("not a Q-network state dict:\n  {}", problems.join("\n  ")),
        ));
    }
    Ok(out)
}

/// The Q-network the layers' shapes describe (see the module docs).
pub fn infer_config(file: &Path, layers: &[(String, Tensor, Tensor)]) -> Result<QNetConfig> {
    let convs: Vec<&(String, Tensor, Tensor)> =
        layers.iter().take_while(|l| l.1.rank() == 4).collect();
    let linears = &layers[convs.len()..];
    if let Some((name, w, _)) = linears.iter().find(|l| l.1.rank() != 2) {
        return Err(Error::data(
            file,
            format!(
                "`{name}.weight` {:?} is a convolution after a linear layer: not a network the platform has",
                w.dims()
            ),
        ));
    }
    if linears.is_empty() {
        return Err(Error::data(file, "no linear output layer"));
    }
    let hidden: Vec<usize> = linears[..linears.len() - 1]
        .iter()
        .map(|(_, w, _)| w.dims()[0])
        .collect();
    let shape = |i: usize| -> (usize, usize) {
        let d = convs[i].1.dims();
        (d[0], d[2])
    };
    let (body, conv_channels) = match convs.len() {
        0 => (Body::Mlp, 16),
        1 if convs[0].1.dims()[2..] == [3, 3] => (Body::MinatarConv, shape(0).0),
        3 if (0..3).all(|i| shape(i) == (NATURE_CONVS[i].0, NATURE_CONVS[i].1)) => {
            (Body::NatureCnn, 16)
        }
        _ => {
            let found: Vec<String> = convs
                .iter()
                .map(|(n, w, _)| format!("`{n}` {:?}", w.dims()))
                .collect();
            return Err(Error::data(
                file,
                format!(
                    "convolutions {} are neither the Nature DQN network's (32×8×8, 64×4×4, \
                     64×3×3) nor the MinAtar network's (one 3×3)",
                    found.join(", ")
                ),
            ));
        }
    };
    Ok(QNetConfig {
        body,
        hidden: Some(hidden),
        conv_channels,
        ..QNetConfig::default()
    })
}

/// A C51 network's return distribution support: `atoms` values evenly spaced on
/// `[v_min, v_max]`; the output layer gives `actions × atoms` logits, action-major.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Support {
    pub atoms: usize,
    pub v_min: f64,
    pub v_max: f64,
}

/// Builds a weights-only DQN agent from the layers on `env` (network from [`infer_config`];
/// a C51 agent when `support` is given), with the list of `(their tensor, platform tensor,
/// shape)` it mapped.
pub fn dqn_from_layers(
    file: &Path,
    layers: &[(String, Tensor, Tensor)],
    env: &EnvSpec,
    support: Option<Support>,
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
    let mut network = infer_config(file, layers)?;
    let atoms = support.map_or(1, |s| s.atoms);
    network.atoms = atoms;
    let mut problems = Vec::new();
    if network.body == Body::Mlp {
        // The most common mistakes, said in the user's terms before the shape list.
        let obs_dim = env.obs_dim();
        let (first, w, _) = &layers[0];
        if w.dims()[1] != obs_dim {
            problems.push(format!(
                "`{first}.weight` takes {} inputs, but `{}` has {obs_dim}-value observations ({})",
                w.dims()[1],
                env.id(),
                env.observation_space
            ));
        }
    }
    let (last, w, _) = &layers[layers.len() - 1];
    if w.dims()[0] != n_actions * atoms {
        let per = if atoms > 1 {
            format!(" × {atoms} atoms = {}", n_actions * atoms)
        } else {
            String::new()
        };
        problems.push(format!(
            "the last layer `{last}` gives {} outputs, but `{}` has {n_actions} actions{per}",
            w.dims()[0],
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
    let mut cfg = DqnConfig {
        network,
        ..DqnConfig::default()
    };
    if let Some(s) = support {
        (cfg.v_min, cfg.v_max) = (s.v_min, s.v_max);
    }
    let algorithm = if atoms > 1 { "c51" } else { "dqn" };
    let mut agent = Dqn::new(algorithm, cfg, env, device, 0, Some(0)).map_err(|e| {
        bad(format!(
            "the network it holds does not fit `{}`: {e}",
            env.id()
        ))
    })?;
    let expected = agent.store().state_dict();
    let mut model = BTreeMap::new();
    let mut mapping = Vec::new();
    for (i, (name, w, b)) in layers.iter().enumerate() {
        for (leaf, t) in [("weight", w), ("bias", b)] {
            let ours = format!("q.{i}.{leaf}");
            let theirs = format!("{name}.{leaf}");
            match expected.get(&ours) {
                Some(e) if e.dims() == t.dims() => {}
                Some(e) => problems.push(format!(
                    "`{theirs}` has shape {:?}, but `{}` needs {:?} there",
                    t.dims(),
                    env.id(),
                    e.dims()
                )),
                None => problems.push(format!("`{theirs}`: the network has no layer {i}")),
            }
            mapping.push((theirs, ours.clone(), t.dims().to_vec()));
            model.insert(ours, tensor_to_raw(&t.to_dtype(DType::F32)?)?);
        }
    }
    if !problems.is_empty() {
        return Err(bad(format!(
            "cannot load as a Q-network on `{}`:\n  {}",
            env.id(),
            problems.join("\n  ")
        )));
    }
    agent.load(&CheckpointData {
        config: serde_json::Value::Null,
        model,
        ..Default::default()
    })?;
    Ok((Box::new(agent), mapping))
}
