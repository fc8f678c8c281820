//! Stable-Baselines3 `.zip` agents (`model.save(PATH)`), as the RL Zoo publishes them on the
//! Hugging Face Hub.
//!
//! The zip holds `data` (JSON: the constructor arguments, the spaces, `policy_kwargs`; values
//! that JSON cannot hold are pickled under `:serialized:`, which is never read here — the
//! readable copies beside them are), `policy.pth` (the policy's `state_dict`, a PyTorch archive
//! inside the zip), `pytorch_variables.pth` (SAC's `log_ent_coef`) and optimiser states (not
//! read). Supported: DQN, sb3-contrib's QR-DQN, SAC and TD3 with `MlpPolicy` (ReLU, flattened
//! observations, the default features extractor) and DQN / QR-DQN with `CnnPolicy`
//! (`NatureCNN` on channel-first uint8 frames, `normalize_images`), mapped onto the platform's
//! DQN (MLP or Nature CNN body) and SAC. QR-DQN's quantile head becomes a Q head by averaging
//! its rows over the quantiles ([`quantile_mean_layer`]; exact); TD3's deterministic actor
//! becomes a Gaussian with the same mean ([`super::actor_critic`]):
//!
//! | SB3 tensor                          | platform tensor          |
//! |-------------------------------------|--------------------------|
//! | `q_net.q_net.{0,2,4}`               | `q.{0,1,2}`              |
//! | `q_net.features_extractor.cnn.{0,2,4}`, `.linear.0`, `q_net.q_net.0` | `q.{0,1,2}`, `q.3`, `q.4` |
//! | `quantile_net.quantile_net.{0,2,4}` (QR-DQN; the last averaged) | `q.{0,1,2}` |
//! | `actor.mu.{0,2}`, `actor.mu.4` (TD3) | `actor.body.{0,1}`, `actor.mean` |
//! | `actor.latent_pi.{0,2}`             | `actor.body.{0,1}`       |
//! | `actor.mu`, `actor.log_std`         | `actor.mean`, `actor.log_std` (clipped to [−20, 2]) |
//! | `critic.qf{i}.{0,2,4}`              | `critic.{i}.{0,1,2}`     |
//!
//! Target networks (`q_net_target`, `critic_target`) are not read: a weights-only agent starts
//! its targets from its online networks. Refused with a message naming what: other algorithms,
//! custom features extractors, activations other than ReLU, gSDE, an agent
//! saved next to `vec_normalize.pkl` (its observation statistics are not in the zip).

use super::actor_critic::{ActorCritic, Layer, LogStd};
use crate::agents::sac::{LogStdBound, SacConfig};
use crate::envs::{EnvSpec, Space};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The most bytes the `data` JSON may hold.
const MAX_DATA_BYTES: u64 = 64 << 20;

/// The algorithms whose policies this reader maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algo {
    Dqn,
    /// sb3-contrib's QR-DQN.
    QrDqn,
    Sac,
    Td3,
}

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Dqn => "DQN",
            Algo::QrDqn => "QR-DQN",
            Algo::Sac => "SAC",
            Algo::Td3 => "TD3",
        }
    }
}

/// A Stable-Baselines3 agent read from its zip.
pub struct Sb3Agent {
    pub path: PathBuf,
    pub algo: Algo,
    /// `_stable_baselines3_version`.
    pub version: String,
    pub observation_space: Space,
    pub action_space: Space,
    /// `policy.pth`, in numeric-aware name order.
    pub policy: Vec<(String, Tensor)>,
    /// `pytorch_variables.pth` (SAC: `log_ent_coef`).
    pub variables: Vec<(String, Tensor)>,
    pub data: Value,
}

/// A temporary copy of an archive entry, removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reads an inner PyTorch archive (`policy.pth`) of the zip at `path` as a state dict.
fn read_inner_torch(path: &Path, entry: &str) -> Result<Vec<(String, Tensor)>> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let bytes = crate::archive::read_zip_entry(path, entry, crate::limits::memory_limit())?;
    let tmp = TempFile(std::env::temp_dir().join(format!(
        "reincarnate-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        entry
    )));
    crate::fs::write_atomic(&tmp.0, &bytes)?;
    crate::reincarnation::teacher::read_tensors(&tmp.0).map_err(|e| {
        // Name the entry in the user's file, not the temporary copy.
        let msg = e.to_string().replace(&tmp.0.display().to_string(), "");
        Error::data(
            path,
            format!("entry `{entry}`: {}", msg.trim_start_matches(": ")),
        )
    })
}

/// The readable field `key` of an SB3 `data` object: a JSON value, or the string SB3 stores
/// beside a pickled value.
fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn as_usize(v: &Value) -> Option<usize> {
    match v {
        Value::Number(n) => n.as_u64().map(|x| x as usize),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A Gymnasium space as SB3's `data` describes it.
pub fn parse_space(v: &Value, what: &str) -> std::result::Result<Space, String> {
    let ty = v
        .get(":type:")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{what}` has no `:type:`"))?;
    if ty.contains("spaces.discrete.Discrete") {
        let n = field(v, "n")
            .and_then(as_usize)
            .ok_or_else(|| format!("`{what}.n` is missing or not a count"))?;
        let start = field(v, "start").and_then(as_usize).unwrap_or(0);
        if start != 0 {
            return Err(format!(
                "`{what}` is Discrete({n}, start={start}); only start 0 is supported"
            ));
        }
        let space = Space::Discrete { n };
        space.validate(what).map_err(|e| e.to_string())?;
        return Ok(space);
    }
    if ty.contains("spaces.box.Box") {
        let shape: Vec<usize> = field(v, "_shape")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(as_usize).collect())
            .ok_or_else(|| format!("`{what}._shape` is missing or not a list of sizes"))?;
        let bound = |name: &str| -> std::result::Result<Vec<f32>, String> {
            let repr = [format!("{name}_repr"), name.to_string()]
                .iter()
                .find_map(|k| field(v, k).and_then(Value::as_str).map(str::to_string))
                .ok_or_else(|| format!("`{what}.{name}` is missing"))?;
            super::parse_numpy_repr(&repr).map_err(|e| format!("`{what}.{name}`: {e}"))
        };
        return super::box_space(shape, bound("low")?, bound("high")?)
            .map_err(|e| format!("`{what}`: {e}"));
    }
    Err(format!(
        "`{what}` is `{ty}`; only Box and Discrete spaces are supported"
    ))
}

impl Sb3Agent {
    /// Reads and checks the zip at `path` (see the module docs).
    pub fn read(path: &Path) -> Result<Self> {
        let names = crate::archive::check_zip(path)?;
        for need in ["data", "policy.pth"] {
            if !names.iter().any(|n| n == need) {
                return Err(Error::data(
                    path,
                    format!(
                        "no `{need}` entry: not a Stable-Baselines3 model zip (found {})",
                        names.join(", ")
                    ),
                ));
            }
        }
        let bytes = crate::archive::read_zip_entry(path, "data", MAX_DATA_BYTES)?;
        let data: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::data(path, format!("entry `data` is not JSON: {e}")))?;
        let bad = |m: String| Error::data(path, m);
        let module = data
            .get("policy_class")
            .and_then(|p| p.get("__module__"))
            .and_then(Value::as_str)
            .unwrap_or("(unknown)");
        let algo = match module {
            "stable_baselines3.dqn.policies" => Algo::Dqn,
            "sb3_contrib.qrdqn.policies" => Algo::QrDqn,
            "stable_baselines3.sac.policies" => Algo::Sac,
            "stable_baselines3.td3.policies" => Algo::Td3,
            other => {
                return Err(bad(format!(
                    "`data.policy_class` is from `{other}`; supported: Stable-Baselines3 DQN, SAC \
                     and TD3 (stable_baselines3.{{dqn,sac,td3}}.policies) and sb3-contrib's \
                     QR-DQN (sb3_contrib.qrdqn.policies)"
                )))
            }
        };
        let version = if names.iter().any(|n| n == "_stable_baselines3_version") {
            String::from_utf8_lossy(&crate::archive::read_zip_entry(
                path,
                "_stable_baselines3_version",
                1024,
            )?)
            .trim()
            .to_string()
        } else {
            "unknown".to_string()
        };
        let space = |key: &str| -> Result<Space> {
            let v = data
                .get(key)
                .ok_or_else(|| bad(format!("`data` has no `{key}`")))?;
            parse_space(v, &format!("data.{key}")).map_err(bad)
        };
        let (observation_space, action_space) =
            (space("observation_space")?, space("action_space")?);
        check_policy_kwargs(path, &data)?;
        let beside = path.with_file_name("vec_normalize.pkl");
        if beside.exists() {
            return Err(bad(format!(
                "saved with VecNormalize ({} is beside it): its observation statistics are a \
                 pickle of Python objects, which the platform does not read; use an agent \
                 trained without VecNormalize",
                beside.display()
            )));
        }
        let policy = read_inner_torch(path, "policy.pth")?;
        if policy.is_empty() {
            return Err(bad("`policy.pth` holds no tensors".into()));
        }
        let variables = if names.iter().any(|n| n == "pytorch_variables.pth") {
            read_inner_torch(path, "pytorch_variables.pth")?
        } else {
            Vec::new()
        };
        Ok(Self {
            path: path.to_path_buf(),
            algo,
            version,
            observation_space,
            action_space,
            policy,
            variables,
            data,
        })
    }

    fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.policy
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| Error::data(&self.path, format!("`policy.pth` has no tensor `{name}`")))
    }

    /// `(weight, bias)` pairs under `prefix` (`q_net.q_net.`), in layer order.
    fn layers(&self, prefix: &str) -> Result<Vec<(String, Tensor, Tensor)>> {
        let mut out = Vec::new();
        for (name, t) in &self.policy {
            if let Some(rest) = name.strip_prefix(prefix) {
                if let Some(layer) = rest.strip_suffix(".weight") {
                    let full = format!("{prefix}{layer}");
                    let b = self.tensor(&format!("{full}.bias"))?;
                    out.push((full, t.clone(), b.clone()));
                }
            }
        }
        Ok(out)
    }

    /// Refuses tensors of a features extractor other than `NatureCNN` (custom extractors,
    /// the actor-critic's).
    fn check_extractor(&self) -> Result<()> {
        if let Some((name, t)) = self.policy.iter().find(|(n, _)| {
            n.contains("features_extractor.")
                && !n.starts_with("q_net.features_extractor.cnn.")
                && !n.starts_with("q_net.features_extractor.linear.")
                && !n.starts_with("quantile_net.features_extractor.cnn.")
                && !n.starts_with("quantile_net.features_extractor.linear.")
                && !n.starts_with("q_net_target.")
                && !n.starts_with("quantile_net_target.")
        }) {
            return Err(Error::data(
                &self.path,
                format!(
                    "the policy has a features extractor with weights (`{name}`, {:?}) that is \
                     not NatureCNN: custom extractors are not supported; MlpPolicy and DQN \
                     CnnPolicy agents are",
                    t.dims()
                ),
            ));
        }
        Ok(())
    }

    /// The environment id SB3 recorded, if any (`data.env_id` is not saved; the spaces are).
    pub fn describe_env(&self) -> String {
        format!(
            "observation {}, action {}",
            self.observation_space, self.action_space
        )
    }

    /// Builds the platform agent for `env`, with the list of `(SB3 tensor, platform tensor,
    /// shape)` it mapped.
    pub fn to_agent(&self, env: &EnvSpec, device: &Device) -> Result<crate::formats::Imported> {
        super::check_spaces(
            &self.path,
            &format!("the SB3 {} agent's", self.algo.name()),
            &self.observation_space,
            &self.action_space,
            env,
        )?;
        self.check_extractor()?;
        match self.algo {
            Algo::Dqn | Algo::QrDqn => {
                let net = if self.algo == Algo::Dqn {
                    "q_net"
                } else {
                    "quantile_net"
                };
                // CnnPolicy: NatureCNN's convolutions and linear layer, then the Q head.
                let mut layers = self.layers(&format!("{net}.features_extractor.cnn."))?;
                if !layers.is_empty() {
                    let normalize = self
                        .data
                        .get("policy_kwargs")
                        .and_then(|k| k.get("normalize_images"))
                        .and_then(Value::as_bool);
                    if normalize == Some(false) {
                        return Err(Error::data(
                            &self.path,
                            "`policy_kwargs.normalize_images` is false: the platform's Nature CNN \
                             divides pixels by 255 as SB3 does by default",
                        ));
                    }
                }
                layers.extend(self.layers(&format!("{net}.features_extractor.linear."))?);
                layers.extend(self.layers(&format!("{net}.{net}."))?);
                if self.algo == Algo::QrDqn {
                    let n_actions = env.action_space.discrete_n().unwrap_or(1);
                    let last = layers.pop().ok_or_else(|| {
                        Error::data(&self.path, "`policy.pth` has no `quantile_net` layers")
                    })?;
                    layers.push(quantile_mean_layer(&self.path, last, n_actions)?);
                }
                super::torch_net::dqn_from_layers(&self.path, &layers, env, None, device)
            }
            Algo::Sac | Algo::Td3 => self.actor_critic()?.to_sac(&self.path, env, device),
        }
    }

    /// The actor's and critics' layers of a SAC or TD3 policy.
    fn actor_critic(&self) -> Result<ActorCritic> {
        let bad = |m: String| Error::data(&self.path, m);
        let mut critics = Vec::new();
        for i in 0.. {
            let layers = self.layers(&format!("critic.qf{i}."))?;
            if layers.is_empty() {
                break;
            }
            critics.push(layers);
        }
        let num = |k: &str| self.data.get(k).and_then(Value::as_f64);
        let what = format!("the SB3 {} agent", self.algo.name());
        if self.algo == Algo::Td3 {
            // `actor.mu`: Linear/ReLU pairs, then the output layer (tanh applied by SB3).
            let mut body = self.layers("actor.mu.")?;
            let mean = body
                .pop()
                .ok_or_else(|| bad("`policy.pth` has no `actor.mu.*` layers".into()))?;
            return Ok(ActorCritic {
                what,
                body,
                mean,
                log_std: LogStd::Deterministic,
                critics,
                critic_action_scale: None,
                ent_coef: SacConfig::default().initial_temperature,
                gamma: num("gamma"),
                tau: num("tau"),
            });
        }
        let ent_coef = match self.variables.iter().find(|(n, _)| n == "log_ent_coef") {
            Some((_, t)) => {
                f64::from(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?[0]).exp()
            }
            None => self
                .data
                .get("ent_coef")
                .and_then(|v| match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.parse().ok(),
                    _ => None,
                })
                .ok_or_else(|| {
                    bad(
                        "no `log_ent_coef` in pytorch_variables.pth and no numeric `data.ent_coef`"
                            .into(),
                    )
                })?,
        };
        let layer = |name: &str| -> Result<Layer> {
            Ok((
                format!("actor.{name}"),
                self.tensor(&format!("actor.{name}.weight"))?.clone(),
                self.tensor(&format!("actor.{name}.bias"))?.clone(),
            ))
        };
        Ok(ActorCritic {
            what,
            body: self.layers("actor.latent_pi.")?,
            mean: layer("mu")?,
            log_std: LogStd::Head {
                layer: layer("log_std")?,
                bound: LogStdBound::Clip,
                min: -20.0,
                max: 2.0,
            },
            critics,
            critic_action_scale: None,
            ent_coef,
            gamma: num("gamma"),
            tau: num("tau"),
        })
    }

    /// A person's summary: algorithm, version, spaces, architecture and tensors.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "Stable-Baselines3 {} agent ({}), SB3 {}\n  observation {}\n  action {}\n",
            self.algo.name(),
            self.path.display(),
            self.version,
            self.observation_space,
            self.action_space
        );
        match self.algo {
            Algo::QrDqn => {
                out += "  converted: the output layer's rows averaged over the quantiles (the Q-values QR-DQN acts on)\n"
            }
            Algo::Td3 => {
                out += &format!(
                    "  converted: the deterministic actor as a Gaussian with its mean and a fixed σ = {} before the tanh\n",
                    super::actor_critic::DETERMINISTIC_STD
                )
            }
            Algo::Dqn | Algo::Sac => {}
        }
        if let Some(k) = self.data.get("policy_kwargs") {
            let readable: serde_json::Map<String, Value> = k
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| !k.starts_with(':'))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            out += &format!("  policy_kwargs {}\n", Value::Object(readable));
        }
        out += "  tensors (policy.pth):\n";
        for (n, t) in &self.policy {
            out += &format!("    {n} {:?}\n", t.dims());
        }
        out
    }
}

/// QR-DQN's output layer (`n_quantiles × actions` rows, quantile-major as SB3-contrib views
/// them: row `j · actions + a`) as one that gives each action's mean over its quantiles, which
/// is the Q-value QR-DQN acts on. The mean of affine maps is the affine map of the means, so
/// the averaged layer is exact (summed in f64).
pub fn quantile_mean_layer(
    file: &Path,
    (name, w, b): (String, Tensor, Tensor),
    n_actions: usize,
) -> Result<(String, Tensor, Tensor)> {
    let rows = w.dims()[0];
    if w.rank() != 2 || n_actions == 0 || rows % n_actions != 0 {
        return Err(Error::data(
            file,
            format!(
                "`{name}.weight` {:?}: QR-DQN's output gives quantiles × actions rows, not a \
                 multiple of the env's {n_actions} actions",
                w.dims()
            ),
        ));
    }
    let n_quantiles = rows / n_actions;
    let w64 = w.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let b64 = b.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let cols = w.dims()[1];
    let mut wm = vec![0f32; n_actions * cols];
    let mut bm = vec![0f32; n_actions];
    for a in 0..n_actions {
        for c in 0..cols {
            let sum: f64 = (0..n_quantiles).map(|j| w64[j * n_actions + a][c]).sum();
            wm[a * cols + c] = (sum / n_quantiles as f64) as f32;
        }
        let sum: f64 = (0..n_quantiles).map(|j| b64[j * n_actions + a]).sum();
        bm[a] = (sum / n_quantiles as f64) as f32;
    }
    Ok((
        name,
        Tensor::from_vec(wm, (n_actions, cols), &Device::Cpu)?,
        Tensor::from_vec(bm, n_actions, &Device::Cpu)?,
    ))
}

/// Refuses `policy_kwargs` the mapping cannot honour.
fn check_policy_kwargs(path: &Path, data: &Value) -> Result<()> {
    let Some(kw) = data.get("policy_kwargs").and_then(Value::as_object) else {
        return Ok(());
    };
    let text = |k: &str| {
        kw.get(k)
            .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
    };
    if let Some(a) = text("activation_fn") {
        if !a.contains("ReLU") {
            return Err(Error::data(
                path,
                format!(
                    "`policy_kwargs.activation_fn` is {a}; the platform's networks use ReLU, \
                     so only ReLU agents convert exactly"
                ),
            ));
        }
    }
    if let Some(c) = text("features_extractor_class") {
        return Err(Error::data(
            path,
            format!(
                "`policy_kwargs.features_extractor_class` is {c}: custom features extractors are \
                 not supported"
            ),
        ));
    }
    if kw.get("use_sde").and_then(Value::as_bool) == Some(true)
        || data.get("use_sde").and_then(Value::as_bool) == Some(true)
    {
        return Err(Error::data(
            path,
            "the agent uses gSDE (`use_sde = true`): its exploration noise is not part of the \
             platform's SAC; agents trained without gSDE convert",
        ));
    }
    Ok(())
}
