//! Teachers: where a reincarnated student's prior computation comes from (Agarwal et al. 2022,
//! §3: "policy-to-value reincarnation" starts from a trained teacher policy and its data).
//!
//! A teacher is loaded from
//! - a checkpoint folder of this platform (any agent with a `policy_output`, rebuilt by
//!   [`crate::agents::from_checkpoint`]);
//! - a single state dict, `.safetensors` or PyTorch `.pt`/`.pth`, with an architecture spec
//!   (`--arch mlp:120,84`, `--arch minatar-conv:16,128`) that names the Q-network it holds:
//!   its linear/conv layers are the file's `*.weight`/`*.bias` pairs in order (PyTorch
//!   `nn.Sequential` naming such as CleanRL's `network.0`, `network.2`, `network.4`), input and
//!   output sizes taken from the environment. The PyTorch file is read as data through
//!   candle's pickle reader (`candle_core::pickle`), never executed, and only after its zip
//!   entries and the globals its pickle names pass [`crate::archive::check_torch_archive`]. "In order" is the
//!   numeric-aware name order (`network.2` before `network.10`), which is the registration
//!   order of `nn.Sequential`: a safetensors header keeps no order, and candle's pickle reader
//!   does not keep the pickled dict's order either;
//! - `hf://ORG/NAME` (a checkpoint folder) or `hf://ORG/NAME/FILE.pt` (a state dict), resolved
//!   cache-first by [`crate::hub`].
//!
//! An imported state dict becomes a weights-only DQN agent, so it evaluates, rolls out and
//! fine-tunes like any platform checkpoint. Every mismatch with the environment is an error
//! naming the tensor, the expected and the found shape, and which space disagrees.
//!
//! Continuous teachers (a SAC or SimbaV2 checkpoint folder, or `hf://` to one) expose the
//! pre-tanh Gaussian of their policy through the same [`crate::agents::PolicyOutput`]
//! ([`Teacher::gaussian`]); they act greedily as `tanh(mean)` mapped onto the environment's
//! action box, and roll out by sampling their Gaussian. The DQN-family methods use Q-values or
//! action probabilities and refuse a continuous teacher with a named error.

use crate::agents::{Agent, PolicyOutput};
use crate::checkpoint::{tensor_to_raw, CheckpointData};
use crate::envs::{EnvSpec, Space, TaskFamily};
use crate::error::{Error, Result};
use crate::eval::{ActionBuf, Policy};
use crate::nn::qnet::{Body, QNetConfig};
use crate::replay::{RawArray, ReplayBuffer};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// An architecture spec for a bare state dict (`--arch`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arch {
    pub body: Body,
    pub conv_channels: usize,
    pub hidden: Vec<usize>,
}

impl Arch {
    /// `mlp:H1,H2,...`, `minatar-conv:C,H1,...` (C conv filters, then the hidden FC sizes) or
    /// `nature-cnn:H1,...` (the Nature DQN convolutions, then the hidden FC sizes).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: String| {
            Error::Config(format!(
                "--arch {s}: {why}; expected mlp:H1,H2,... (e.g. mlp:120,84) or \
                 minatar-conv:C,H1,... (e.g. minatar-conv:16,128) or nature-cnn:H1,... (e.g. nature-cnn:512)"
            ))
        };
        let (kind, sizes) = s
            .split_once(':')
            .ok_or_else(|| bad("missing `:` after the network kind".into()))?;
        let sizes: Vec<usize> = sizes
            .split(',')
            .map(|x| x.trim().parse::<usize>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad(format!("sizes must be positive integers ({e})")))?;
        if sizes.contains(&0) {
            return Err(bad("sizes must be positive".into()));
        }
        match kind {
            "mlp" => Ok(Self {
                body: Body::Mlp,
                conv_channels: 16,
                hidden: sizes,
            }),
            "minatar-conv" | "minatar_conv" => {
                let (&c, hidden) = sizes
                    .split_first()
                    .ok_or_else(|| bad("no conv channel count".into()))?;
                Ok(Self {
                    body: Body::MinatarConv,
                    conv_channels: c,
                    hidden: hidden.to_vec(),
                })
            }
            "nature-cnn" | "nature_cnn" => Ok(Self {
                body: Body::NatureCnn,
                conv_channels: 16,
                hidden: sizes,
            }),
            other => Err(bad(format!("unknown network kind `{other}`"))),
        }
    }

    /// The Q-network config this spec names.
    pub fn qnet_config(&self) -> QNetConfig {
        QNetConfig {
            body: self.body,
            hidden: Some(self.hidden.clone()),
            conv_channels: self.conv_channels,
            ..QNetConfig::default()
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h: Vec<String> = self.hidden.iter().map(|x| x.to_string()).collect();
        match self.body {
            Body::Mlp => write!(f, "mlp:{}", h.join(",")),
            Body::MinatarConv if h.is_empty() => write!(f, "minatar-conv:{}", self.conv_channels),
            Body::MinatarConv => write!(f, "minatar-conv:{},{}", self.conv_channels, h.join(",")),
            Body::NatureCnn => write!(f, "nature-cnn:{}", h.join(",")),
        }
    }
}

/// A loaded teacher: an agent queried for its policy output, and where it came from.
pub struct Teacher {
    pub agent: Box<dyn Agent>,
    pub source: String,
    /// Discrete actions: their number; continuous: the action box's width.
    n_actions: usize,
    /// Continuous actions: the box's per-dimension `(scale, bias)` from [−1, 1].
    action_box: Option<Vec<(f32, f32)>>,
}

impl Teacher {
    /// Loads `src` (see the module docs) as a teacher for `env`.
    pub fn load(src: &str, arch: Option<&str>, env: &EnvSpec, device: &Device) -> Result<Self> {
        let path = resolve(src)?;
        let is_file = path.is_file();
        let agent = if is_file {
            import_file(&path, arch, env, device)?.0
        } else {
            if let Some(a) = arch {
                return Err(Error::Config(format!(
                    "--arch {a} applies to a single state-dict file, but {src} is a checkpoint folder (its config.json names the network)"
                )));
            }
            load_checkpoint_teacher(&path, env, device)?
        };
        Ok(Self::from_agent(agent, src.to_string(), env))
    }

    /// A teacher around an agent already built for `env` (`source` names it in messages).
    pub fn from_agent(agent: Box<dyn Agent>, source: String, env: &EnvSpec) -> Self {
        let (n_actions, action_box) = match &env.action_space {
            Space::Discrete { n } => (*n, None),
            Space::Box { shape, low, high } => {
                let k: usize = shape.iter().product();
                let b = (0..k)
                    .map(|i| {
                        let (lo, hi) = (low.get(i), high.get(i));
                        ((hi - lo) / 2.0, (hi + lo) / 2.0)
                    })
                    .collect();
                (k, Some(b))
            }
        };
        Self {
            agent,
            source,
            n_actions,
            action_box,
        }
    }

    pub fn n_actions(&self) -> usize {
        self.n_actions
    }

    /// Whether the teacher acts in a continuous action box (a SAC-family policy).
    pub fn is_continuous(&self) -> bool {
        self.action_box.is_some()
    }

    /// The teacher's pre-tanh Gaussian `(mean, log_std)`, `(batch, actions)` each, in the
    /// normalised action space [−1, 1]; an error for a Q-value or probability teacher.
    pub fn gaussian(&self, obs: &[f32], device: &Device) -> Result<(Tensor, Tensor)> {
        match self.output(obs)? {
            PolicyOutput::GaussianMeanLogStd { mean, log_std } => {
                let rows = mean.len() / self.n_actions.max(1);
                Ok((
                    Tensor::from_vec(mean, (rows, self.n_actions), device)?,
                    Tensor::from_vec(log_std, (rows, self.n_actions), device)?,
                ))
            }
            _ => Err(Error::Config(format!(
                "teacher {}: actor distillation for a SAC-family student needs a Gaussian \
                 (SAC/SimbaV2) teacher, found one with Q-values or action probabilities",
                self.source
            ))),
        }
    }

    /// Greedy continuous actions `tanh(mean)` mapped onto the environment's box.
    fn greedy_continuous(&self, obs: &[f32], out: &mut [f32]) -> Result<()> {
        let (mean, _) = self.gaussian(obs, &Device::Cpu)?;
        let unit: Vec<f32> = mean.tanh()?.flatten_all()?.to_vec1()?;
        self.to_env_actions(&unit, out)
    }

    fn to_env_actions(&self, unit: &[f32], out: &mut [f32]) -> Result<()> {
        let b = self.action_box.as_ref().ok_or_else(continuous_teacher)?;
        if unit.len() != out.len() {
            return Err(Error::Env(format!(
                "teacher {}: {} action values for a buffer of {}",
                self.source,
                unit.len(),
                out.len()
            )));
        }
        for (i, (o, u)) in out.iter_mut().zip(unit).enumerate() {
            let (s, c) = b[i % b.len()];
            *o = u * s + c;
        }
        Ok(())
    }

    /// The teacher's Q-values or action probabilities for a batch of observations.
    pub fn output(&self, obs: &[f32]) -> Result<PolicyOutput> {
        self.agent.policy_output(obs)
    }

    /// The teacher's target distribution for distillation, `(batch, actions)`:
    /// `softmax(Q/τ)` for a Q-value teacher (QDagger's temperature), its own probabilities for
    /// a policy teacher.
    pub fn soft_targets(&self, obs: &[f32], tau: f64, device: &Device) -> Result<Tensor> {
        let n = self.n_actions;
        match self.output(obs)? {
            PolicyOutput::QValues(q) => {
                let rows = q.len() / n;
                let q = Tensor::from_vec(q, (rows, n), device)?;
                Ok(candle_nn::ops::softmax(&(q / tau)?, 1)?)
            }
            PolicyOutput::Probs(p) => {
                let rows = p.len() / n;
                Ok(Tensor::from_vec(p, (rows, n), device)?)
            }
            PolicyOutput::GaussianMeanLogStd { .. } => Err(continuous_teacher()),
        }
    }

    /// The teacher's greedy actions for a batch of observations.
    pub fn greedy(&self, obs: &[f32]) -> Result<Vec<usize>> {
        let v = match self.output(obs)? {
            PolicyOutput::QValues(v) | PolicyOutput::Probs(v) => v,
            PolicyOutput::GaussianMeanLogStd { .. } => return Err(continuous_teacher()),
        };
        Ok(v.chunks(self.n_actions)
            .map(|row| {
                row.iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
                        if x > best.1 {
                            (i, x)
                        } else {
                            best
                        }
                    })
                    .0
            })
            .collect())
    }

    /// Rolls the teacher out for `steps` environment steps on `task`, storing every transition —
    /// the teacher data when none is given. With probability `epsilon` an action is uniform;
    /// otherwise a discrete teacher acts greedily and a Gaussian teacher samples from its
    /// tanh-Gaussian (its own exploration, as its replay held). Continuous actions are stored as
    /// the environment receives them.
    pub fn rollout(
        &self,
        family: &TaskFamily,
        task: usize,
        steps: usize,
        epsilon: f64,
        seed: u64,
    ) -> Result<ReplayBuffer> {
        let continuous = self.is_continuous();
        let k = self.n_actions;
        let mut replay = ReplayBuffer::for_spec(
            steps.max(1),
            family.spec(),
            continuous.then_some(k),
            "method_config.teacher_data_steps",
        )?;
        let mut venv = crate::envs::VecEnv::new(family, &[task], seed)?;
        venv.reset();
        let mut rng = crate::rng::Rng::seed_from_u64(crate::rng::derive_seed(seed, 0x7EAC));
        let mut obs = venv.obs().to_vec();
        let mut action = vec![0f32; if continuous { k } else { 0 }];
        let bar = crate::report::progress_bar(steps as u64, "teacher rollout");
        for i in 0..steps {
            let explore = rng.uniform() < epsilon;
            let discrete = if continuous {
                let unit: Vec<f32> = if explore {
                    (0..k)
                        .map(|_| rng.uniform_range(-1.0, 1.0) as f32)
                        .collect()
                } else {
                    let (mean, log_std) = self.gaussian(&obs, &Device::Cpu)?;
                    let m: Vec<f32> = mean.flatten_all()?.to_vec1()?;
                    let s: Vec<f32> = log_std.flatten_all()?.to_vec1()?;
                    m.iter()
                        .zip(&s)
                        .map(|(m, s)| (m + s.exp() * rng.normal() as f32).tanh())
                        .collect()
                };
                self.to_env_actions(&unit, &mut action)?;
                venv.step(crate::envs::vec_env::ActionBatch::Continuous(&action))?;
                0
            } else {
                let a = if explore {
                    rng.below(k)
                } else {
                    self.greedy(&obs)?[0]
                };
                venv.step(crate::envs::vec_env::ActionBatch::Discrete(&[a]))?;
                a as i64
            };
            replay.push(
                &obs,
                discrete,
                &action,
                venv.rewards()[0],
                venv.next_obs(),
                venv.terminated()[0],
                venv.truncated()[0],
            )?;
            obs.copy_from_slice(venv.obs());
            if i % 1000 == 0 {
                bar.set_position(i as u64);
            }
        }
        bar.finish_and_clear();
        Ok(replay)
    }
}

/// The teacher acting greedily, as a [`Policy`] (evaluation, teacher-normalised scores).
pub struct TeacherPolicy<'a>(pub &'a Teacher);

impl Policy for TeacherPolicy<'_> {
    fn name(&self) -> String {
        format!("teacher {}", self.0.source)
    }
    fn act(&mut self, obs: &[f32], actions: &mut ActionBuf) -> Result<()> {
        match actions {
            ActionBuf::Discrete(out) => {
                out.copy_from_slice(&self.0.greedy(obs)?);
                Ok(())
            }
            ActionBuf::Continuous(out) => self.0.greedy_continuous(obs, out),
        }
    }
}

/// Builds the agent a teacher file holds (see [`crate::formats`]): a Stable-Baselines3 zip,
/// a state dict with `--arch`, or without it an MLP state dict whose sizes its shapes give.
/// Returns the agent and the `(their tensor, platform tensor, shape)` mapping.
pub fn import_file(
    path: &Path,
    arch: Option<&str>,
    env: &EnvSpec,
    device: &Device,
) -> Result<crate::formats::Imported> {
    use crate::formats::TeacherFile;
    let kind = crate::formats::classify(path)?;
    match (kind, arch) {
        (TeacherFile::Sb3Zip | TeacherFile::FlaxMsgpack, Some(a)) => Err(Error::Config(format!(
            "--arch {a} applies to a bare state dict, but {} names its own network",
            path.display()
        ))),
        (TeacherFile::Sb3Zip, None) => {
            crate::formats::sb3::Sb3Agent::read(path)?.to_agent(env, device)
        }
        (TeacherFile::FlaxMsgpack, None) => {
            let frame = match &env.observation_space {
                Space::Box { shape, .. } => shape.clone(),
                other => vec![other.flat_dim()],
            };
            let layers = crate::formats::flax::nature_cnn_layers(path, &frame)?;
            crate::formats::torch_net::dqn_from_layers(path, &layers, env, None, device)
        }
        (_, Some(a)) => Ok((
            import_state_dict(path, &Arch::parse(a)?, env, device)?,
            Vec::new(),
        )),
        (_, None) => {
            let tensors = read_state_dict(path)?;
            crate::formats::cleanrl::import(path, &tensors, env, device)
        }
    }
}

/// A local path for `src`: `hf://` resolved through the Hub cache (with the naming conventions
/// of [`crate::formats::hub_convention`]), anything else as given.
pub fn resolve(src: &str) -> Result<PathBuf> {
    use crate::hub::{is_hub_url, resolve_checkpoint, resolve_file, HubRef};
    if is_hub_url(src) {
        let r = HubRef::parse(&crate::formats::hub_convention(src))?;
        return if r.is_single_file() {
            resolve_file(&r)
        } else {
            resolve_checkpoint(&r)
        };
    }
    let p = PathBuf::from(src);
    if !p.exists() {
        return Err(Error::Config(format!(
            "teacher `{src}` does not exist (expected a checkpoint folder, a Stable-Baselines3 .zip, a CleanRL .cleanrl_model, a .safetensors/.pt/.pth state dict, or hf://ORG/NAME)"
        )));
    }
    Ok(p)
}

fn load_checkpoint_teacher(dir: &Path, env: &EnvSpec, device: &Device) -> Result<Box<dyn Agent>> {
    let data = crate::checkpoint::load_weights(dir)?;
    let trained: EnvSpec = serde_json::from_value(data.config["env"].clone()).map_err(|e| {
        Error::data(
            dir.join(crate::checkpoint::CONFIG_FILE),
            format!("`env` is not an env spec: {e}"),
        )
    })?;
    if trained.observation_space != env.observation_space {
        return Err(Error::Config(format!(
            "teacher {}: observation space does not match: expected {} (`{}`), found {} (trained on `{}`)",
            dir.display(),
            env.observation_space,
            env.id(),
            trained.observation_space,
            trained.id()
        )));
    }
    if trained.action_space != env.action_space {
        return Err(Error::Config(format!(
            "teacher {}: action space does not match: expected {} (`{}`), found {} (trained on `{}`)",
            dir.display(),
            env.action_space,
            env.id(),
            trained.action_space,
            trained.id()
        )));
    }
    crate::agents::from_checkpoint(&data, device)
}

/// Reads a state dict: `(name, tensor)` in numeric-aware name order (see the module docs).
/// An empty state dict is an error.
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let out = read_tensors(path)?;
    if out.is_empty() {
        return Err(Error::data(
            path,
            "no tensors found: expected a state dict saved with torch.save(model.state_dict(), PATH)",
        ));
    }
    Ok(out)
}

/// The tensors of a `.pt`/`.pth`/`.safetensors` file, in numeric-aware name order (possibly none).
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pt" | "pth" | "bin" | "cleanrl_model" => {
            let mut out = crate::archive::read_torch_tensors(path)?;
            out.sort_by(|a, b| natural_cmp(&a.0, &b.0));
            Ok(out)
        }
        "safetensors" => {
            let (arrays, _) = crate::checkpoint::read_safetensors(path)?;
            let mut out: Vec<(String, Tensor)> = arrays
                .iter()
                .map(|(k, a)| {
                    Ok((
                        k.clone(),
                        crate::checkpoint::raw_to_tensor(k, a, &Device::Cpu)?,
                    ))
                })
                .collect::<Result<_>>()?;
            out.sort_by(|a, b| natural_cmp(&a.0, &b.0));
            Ok(out)
        }
        _ => Err(Error::Config(format!(
            "{}: unknown state-dict format `.{ext}`; expected .safetensors, .pt or .pth",
            path.display()
        ))),
    }
}

/// Name order that compares digit runs as numbers (`network.2` < `network.10`).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, run)) if *d == digit => run.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let o = match (x.0, y.0) {
            (true, true) => x.1.len().cmp(&y.1.len()).then_with(|| x.1.cmp(&y.1)),
            _ => x.1.cmp(&y.1),
        };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// Maps a state dict onto the platform's Q-network (`q.0`, `q.1`, …) for `arch` on `env` and
/// returns it as a weights-only DQN agent.
pub fn import_state_dict(
    path: &Path,
    arch: &Arch,
    env: &EnvSpec,
    device: &Device,
) -> Result<Box<dyn Agent>> {
    let tensors = read_state_dict(path)?;
    // Layers: the prefixes of `*.weight` in order, each with its `*.bias`.
    let mut layers: Vec<String> = Vec::new();
    let mut by_name: BTreeMap<String, Tensor> = BTreeMap::new();
    for (name, t) in &tensors {
        if let Some(prefix) = name.strip_suffix(".weight") {
            layers.push(prefix.to_string());
        } else if !name.ends_with(".bias") {
            return Err(Error::data(
                path,
                format!(
                    "unexpected tensor `{name}`: --arch {arch} maps only `*.weight`/`*.bias` pairs"
                ),
            ));
        }
        by_name.insert(name.clone(), t.clone());
    }
    let mut problems = Vec::new();
    for name in by_name.keys() {
        if let Some(prefix) = name.strip_suffix(".bias") {
            if !layers.iter().any(|l| l == prefix) {
                problems.push(format!(
                    "missing key `{prefix}.weight` (found `{name}` alone)"
                ));
            }
        }
    }
    for l in &layers {
        if !by_name.contains_key(&format!("{l}.bias")) {
            problems.push(format!(
                "missing key `{l}.bias` (layer `{l}` has a weight but no bias)"
            ));
        }
    }
    let cfg = crate::agents::dqn::DqnConfig {
        network: arch.qnet_config(),
        ..crate::agents::dqn::DqnConfig::default()
    };
    // An imported teacher only acts: its training schedules resolve against an empty run.
    let mut agent = crate::agents::dqn::Dqn::new("dqn", cfg, env, device, 0, Some(0))?;
    let expected = agent.store().state_dict();
    let n_layers = arch.qnet_config().n_layers();
    if layers.len() != n_layers {
        problems.push(format!(
            "--arch {arch} has {n_layers} weight/bias layers, the file has {} ({})",
            layers.len(),
            if layers.is_empty() {
                "none".to_string()
            } else {
                layers.join(", ")
            }
        ));
    }
    let (obs_desc, act_desc) = (
        format!("observation {} of `{}`", env.observation_space, env.id()),
        format!("action {} of `{}`", env.action_space, env.id()),
    );
    let mut model = BTreeMap::new();
    if problems.is_empty() {
        for (i, l) in layers.iter().enumerate() {
            for leaf in ["weight", "bias"] {
                let ours = format!("q.{i}.{leaf}");
                let theirs = format!("{l}.{leaf}");
                let t = &by_name[&theirs];
                let want = expected[&ours].dims().to_vec();
                if t.dims() != want.as_slice() {
                    let why = if i == 0 && leaf == "weight" && t.dims().first() == want.first() {
                        format!(" — the input does not fit the {obs_desc}")
                    } else if i + 1 == n_layers {
                        format!(" — the output does not fit the {act_desc}")
                    } else {
                        format!(" — hidden sizes differ from --arch {arch}")
                    };
                    problems.push(format!(
                        "tensor `{theirs}` (layer {i}): expected shape {want:?}, found {:?}{why}",
                        t.dims()
                    ));
                    continue;
                }
                let t = if t.dtype() == DType::F32 {
                    t.clone()
                } else {
                    t.to_dtype(DType::F32)?
                };
                model.insert(ours, tensor_to_raw(&t)?);
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::data(
            path,
            format!(
                "cannot load as teacher with --arch {arch} on `{}`:\n  {}",
                env.id(),
                problems.join("\n  ")
            ),
        ));
    }
    // Buffers the platform keeps (spectral-norm vectors) do not exist here: none with SN off.
    let data = CheckpointData {
        config: serde_json::Value::Null,
        model: model.into_iter().collect::<BTreeMap<String, RawArray>>(),
        ..Default::default()
    };
    agent.load(&data)?;
    Ok(Box::new(agent))
}

/// The discrete-action methods meet a continuous (SAC-family) teacher.
fn continuous_teacher() -> Error {
    Error::Config(
        "the teacher is a continuous-action (tanh-Gaussian) policy; the DQN-family methods need a \
         teacher with Q-values or action probabilities over discrete actions"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_specs_parse_and_print() {
        let a = Arch::parse("mlp:120,84").unwrap();
        assert_eq!(a.hidden, vec![120, 84]);
        assert_eq!(a.to_string(), "mlp:120,84");
        let c = Arch::parse("minatar-conv:16,128").unwrap();
        assert_eq!(
            (c.body, c.conv_channels, c.hidden.clone()),
            (Body::MinatarConv, 16, vec![128])
        );
        assert_eq!(c.qnet_config().n_layers(), 3);
        for bad in ["mlp", "mlp:a", "cnn:3", "mlp:0"] {
            let e = Arch::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--arch") && e.contains("expected"), "{e}");
        }
    }

    #[test]
    fn natural_order_puts_layer_ten_after_two() {
        let mut v = vec!["network.10.weight", "network.2.weight", "network.0.bias"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            ["network.0.bias", "network.2.weight", "network.10.weight"]
        );
    }
}
