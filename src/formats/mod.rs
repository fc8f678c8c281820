//! Prior computation in the formats other libraries write, read as data and never executed:
//!
//! - [`sb3`]: Stable-Baselines3 `.zip` agents (DQN with `MlpPolicy` or `CnnPolicy`, SAC with
//!   `MlpPolicy`), built into the
//!   platform's agents without `--arch`;
//! - [`torch_net`]: a bare state dict of a `nn.Sequential` Q-network (an MLP such as CleanRL's
//!   `dqn.py` model, the Nature CNN of `dqn_atari.py`), recognised from its tensor shapes;
//! - [`flax`]: the Flax msgpack files of CleanRL's JAX scripts (the Nature CNN), converted
//!   from channel-last to the platform's channel-first layout;
//! - [`minari`] and [`d4rl`]: offline datasets (Minari's HDF5 and Arrow storage, D4RL's HDF5
//!   files) converted into the platform's transition-schema datasets ([`import`]).
//!
//! Each source records the environment it was made on (SB3's `data`, Minari's `env_spec`),
//! and [`check_spaces`] compares it with the `--env` of the command: a mismatch is an error
//! naming both.

pub mod actor_critic;
pub mod cleanrl;
pub mod d4rl;
pub mod flax;
pub mod hdf5;
pub mod import;
pub mod minari;
pub mod sb3;
pub mod torch_net;

use crate::envs::{Bounds, EnvSpec, Space};
use crate::error::{Error, Result};
use std::path::Path;

/// Where each tensor of an imported file went: `(their name, platform name, shape)`.
pub type Mapping = Vec<(String, String, Vec<usize>)>;

/// An agent built from another library's file, with its [`Mapping`].
pub type Imported = (Box<dyn crate::agents::Agent>, Mapping);

/// Gymnasium ids of environments the platform implements natively, with their ids here.
pub const GYMNASIUM_IDS: [(&str, &str); 8] = [
    ("CartPole-v1", "cartpole"),
    ("Pendulum-v1", "pendulum"),
    ("MountainCarContinuous-v0", "mountain_car_continuous"),
    ("MinAtar/Asterix-v1", "minatar/asterix"),
    ("MinAtar/Breakout-v1", "minatar/breakout"),
    ("MinAtar/Freeway-v1", "minatar/freeway"),
    ("MinAtar/Seaquest-v1", "minatar/seaquest"),
    ("MinAtar/SpaceInvaders-v1", "minatar/space_invaders"),
];

/// The native environment that implements Gymnasium's `gym_id`, if there is one.
pub fn native_env(gym_id: &str) -> Option<&'static str> {
    GYMNASIUM_IDS
        .iter()
        .find(|(g, _)| *g == gym_id)
        .map(|(_, n)| *n)
}

/// The model file of a Hub repo that follows a library's naming convention, as a single-file
/// `hf://` URL: `hf://sb3/NAME` holds `NAME.zip` (the RL Zoo's uploads), and
/// `hf://cleanrl/ENV-EXP-seedN` holds `EXP.cleanrl_model` (CleanRL's uploads, e.g.
/// `CartPole-v1-dqn-seed1` → `dqn.cleanrl_model`). Any other source is returned unchanged.
pub fn hub_convention(src: &str) -> String {
    let Ok(r) = crate::hub::HubRef::parse(src) else {
        return src.to_string();
    };
    if !r.path.is_empty() || r.kind != crate::hub::RepoKind::Model {
        return src.to_string();
    }
    let Some((org, name)) = r.repo.split_once('/') else {
        return src.to_string();
    };
    let base = src.trim_end_matches('/');
    match org {
        "sb3" => format!("{base}/{name}.zip"),
        "cleanrl" => match cleanrl_exp_name(name) {
            Some(exp) => format!("{base}/{exp}.cleanrl_model"),
            None => src.to_string(),
        },
        _ => src.to_string(),
    }
}

/// `EXP` of a CleanRL repo name `ENV-vN-EXP-seedS`.
fn cleanrl_exp_name(name: &str) -> Option<&str> {
    let stem = &name[..name.rfind("-seed")?];
    let parts: Vec<&str> = stem.split('-').collect();
    let v = parts.iter().rposition(|p| {
        p.len() > 1 && p.starts_with('v') && p[1..].chars().all(|c| c.is_ascii_digit())
    })?;
    let exp_start: usize = parts[..=v].iter().map(|p| p.len() + 1).sum();
    (exp_start < stem.len()).then(|| &stem[exp_start..])
}

/// The environment a source is imported or loaded for: `env` (the command's `--env`) if
/// given, else the native environment of the Gymnasium id the source recorded.
pub fn target_env(env: Option<&str>, recorded: Option<&str>, file: &Path) -> Result<EnvSpec> {
    let id = match (env, recorded) {
        (Some(e), _) => e.to_string(),
        (None, Some(g)) => native_env(g).map(str::to_string).ok_or_else(|| {
            Error::Config(format!(
                "{}: recorded on Gymnasium's `{g}`, which has no native environment here; pass --env with an environment of the same spaces (`reincarnate envs` lists them)",
                file.display()
            ))
        })?,
        (None, None) => {
            return Err(Error::Config(format!(
                "{}: no environment is recorded; pass --env (`reincarnate envs` lists them)",
                file.display()
            )))
        }
    };
    Ok(crate::envs::TaskFamily::from_id(&id)?.spec().clone())
}

/// The offline-dataset formats `reincarnate dataset import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetFormat {
    Minari,
    D4rl,
}

impl DatasetFormat {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "minari" => Ok(Self::Minari),
            "d4rl" => Ok(Self::D4rl),
            other => Err(Error::Config(format!(
                "unknown dataset format `{other}`; expected minari or d4rl"
            ))),
        }
    }

    /// The format of a `--teacher-data` path that is not a platform dataset: a Minari folder
    /// or a D4RL `.hdf5`/`.h5` file; `None` for anything else.
    pub fn detect(path: &Path) -> Option<Self> {
        if path.join("dataset.json").exists() {
            return None;
        }
        if path.join("data").join("metadata.json").is_file() || path.join("metadata.json").is_file()
        {
            return Some(Self::Minari);
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        (path.is_file() && matches!(ext, "hdf5" | "h5")).then_some(Self::D4rl)
    }
}

/// A local path for a dataset source: `hf://datasets/ORG/NAME[/PATH]` through the Hub cache (a
/// Minari folder, or for D4RL the `.hdf5` file the path names), anything else as given.
pub fn resolve_dataset_source(format: DatasetFormat, src: &str) -> Result<std::path::PathBuf> {
    use crate::hub::{is_hub_url, HubRef};
    if !is_hub_url(src) {
        return Ok(std::path::PathBuf::from(src));
    }
    let r = HubRef::parse(src)?;
    match format {
        DatasetFormat::Minari => crate::hub::resolve_dataset(&r),
        DatasetFormat::D4rl => crate::hub::resolve_file(&r),
    }
}

/// Imports `src` (a Minari dataset folder or a D4RL HDF5 file) as a transition dataset at
/// `out`, for `env` (or, for Minari, the native environment its `env_spec` names).
pub fn import_dataset(
    format: DatasetFormat,
    src: &Path,
    out: &Path,
    env: Option<&str>,
) -> Result<(crate::history::Manifest, import::ImportReport)> {
    let spec = match format {
        DatasetFormat::Minari => minari::MinariDataset::open(src)?.target_env(env)?,
        DatasetFormat::D4rl => target_env(env, None, src)?,
    };
    import_dataset_for(format, src, out, &spec)
}

/// [`import_dataset`] for a given environment spec (a run's own, with its overrides).
pub fn import_dataset_for(
    format: DatasetFormat,
    src: &Path,
    out: &Path,
    env: &EnvSpec,
) -> Result<(crate::history::Manifest, import::ImportReport)> {
    match format {
        DatasetFormat::Minari => minari::MinariDataset::open(src)?.import(out, env),
        DatasetFormat::D4rl => d4rl::import(src, out, env),
    }
}

/// `reincarnate inspect FILE` for a teacher file: what it is, its spaces and tensors, and —
/// on the first native environment whose spaces fit it — where each tensor goes.
pub fn describe_file(path: &Path) -> Result<String> {
    let device = candle_core::Device::Cpu;
    let (mut out, fits): (String, Vec<EnvSpec>) = match classify(path)? {
        TeacherFile::Sb3Zip => {
            let a = sb3::Sb3Agent::read(path)?;
            let fits = native_specs()
                .into_iter()
                .filter(|e| {
                    same_space(&a.observation_space, &e.observation_space)
                        && same_space(&a.action_space, &e.action_space)
                })
                .collect();
            (a.summary(), fits)
        }
        TeacherFile::FlaxMsgpack => {
            let arrays = flax::read_arrays(path)?;
            let mut out = format!("Flax msgpack {}\n  arrays:\n", path.display());
            for (n, t) in &arrays {
                out += &format!("    {n} {:?}\n", t.dims());
            }
            out += "  read as the Nature DQN network (Conv_0..2, Dense_0..N) for an environment of [C, H, W] frames\n";
            return Ok(out);
        }
        TeacherFile::Torch | TeacherFile::Safetensors => {
            let tensors = crate::reincarnation::teacher::read_state_dict(path)?;
            let mut out = format!("state dict {}\n  tensors:\n", path.display());
            for (n, t) in &tensors {
                out += &format!("    {n} {:?} {:?}\n", t.dims(), t.dtype());
            }
            let inferred = torch_net::layers(path, &tensors)
                .and_then(|l| torch_net::infer_config(path, &l).map(|c| (l, c)));
            match &inferred {
                Ok((layers, c)) if c.body == crate::nn::qnet::Body::Mlp => {
                    let sizes: Vec<usize> = std::iter::once(layers[0].1.dims()[1])
                        .chain(layers.iter().map(|l| l.1.dims()[0]))
                        .collect();
                    out += &format!("  MLP (ReLU) layer sizes {sizes:?}\n");
                }
                Ok((layers, c)) => {
                    out += &format!(
                        "  {:?} Q-network: fully connected {:?}, {} actions\n",
                        c.body,
                        c.hidden_sizes(),
                        layers[layers.len() - 1].1.dims()[0]
                    );
                }
                Err(_) => {}
            }
            if let Some(k) = cleanrl::kind(&tensors) {
                out += &format!("  {k}\n");
            }
            // The native environments it loads on (CleanRL's C51 and actor-critic files too).
            let fits: Vec<EnvSpec> = native_specs()
                .into_iter()
                .filter(|e| {
                    crate::reincarnation::teacher::import_file(path, None, e, &device).is_ok()
                })
                .collect();
            if fits.is_empty() {
                if let Err(e) = &inferred {
                    out += &format!("  not a network recognised without --arch: {e}\n");
                }
            }
            (out, fits)
        }
    };
    match fits.first() {
        Some(env) => {
            let (_, mapping) =
                crate::reincarnation::teacher::import_file(path, None, env, &device)?;
            out += &format!("  maps onto `{}` as:\n", env.id());
            for (theirs, ours, shape) in mapping {
                out += &format!("    {theirs} → {ours} {shape:?}\n");
            }
        }
        None => out += "  no native environment has these spaces\n",
    }
    Ok(out)
}

fn native_specs() -> Vec<EnvSpec> {
    GYMNASIUM_IDS
        .iter()
        .filter_map(|(_, id)| crate::envs::TaskFamily::from_id(id).ok())
        .map(|f| f.spec().clone())
        .collect()
}

/// Whether two bounds agree to float32 precision (infinities must match exactly).
/// The largest float32 counts as infinite: older Gymnasium spaces write
/// `np.finfo(np.float32).max` where newer ones write `inf`.
fn close(a: f32, b: f32) -> bool {
    let unbounded = |x: f32| {
        if x.abs() >= f32::MAX {
            x.signum() * f32::INFINITY
        } else {
            x
        }
    };
    let (a, b) = (unbounded(a), unbounded(b));
    if a.is_infinite() || b.is_infinite() {
        return a == b;
    }
    (a - b).abs() <= 1e-5 * (1.0 + a.abs().max(b.abs()))
}

/// Whether two spaces are the same up to float32 rounding of their bounds.
pub fn same_space(a: &Space, b: &Space) -> bool {
    match (a, b) {
        (Space::Discrete { n: x }, Space::Discrete { n: y }) => x == y,
        (
            Space::Box {
                shape: sa,
                low: la,
                high: ha,
            },
            Space::Box {
                shape: sb,
                low: lb,
                high: hb,
            },
        ) => {
            let d: usize = sa.iter().product();
            sa == sb && (0..d).all(|i| close(la.get(i), lb.get(i)) && close(ha.get(i), hb.get(i)))
        }
        _ => false,
    }
}

/// Checks that a source's spaces (`what`: "the SB3 agent", "the Minari dataset", with the
/// environment it names) are those of `env`; the error names both sides.
pub fn check_spaces(
    file: &Path,
    what: &str,
    observation: &Space,
    action: &Space,
    env: &EnvSpec,
) -> Result<()> {
    let mut problems = Vec::new();
    if !same_space(observation, &env.observation_space) {
        problems.push(format!(
            "observation space {} (bounds {}) does not match `{}`'s {} (bounds {})",
            observation,
            bounds_text(observation),
            env.id(),
            env.observation_space,
            bounds_text(&env.observation_space)
        ));
    }
    if !same_space(action, &env.action_space) {
        problems.push(format!(
            "action space {} (bounds {}) does not match `{}`'s {} (bounds {})",
            action,
            bounds_text(action),
            env.id(),
            env.action_space,
            bounds_text(&env.action_space)
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::data(
        file,
        format!("{what}: {}", problems.join("; ")),
    ))
}

fn bounds_text(s: &Space) -> String {
    match s {
        Space::Discrete { n } => format!("0..{n}"),
        Space::Box { shape, low, high } => {
            let d: usize = shape.iter().product();
            let show = |b: &Bounds| -> String {
                let v: Vec<String> = (0..d.min(6)).map(|i| format!("{:?}", b.get(i))).collect();
                format!("[{}{}]", v.join(", "), if d > 6 { ", …" } else { "" })
            };
            format!("{} to {}", show(low), show(high))
        }
    }
}

/// Bounds as the platform stores them: one value when every dimension has it.
pub fn bounds(values: Vec<f32>) -> Bounds {
    match values.first() {
        Some(&v) if values.iter().all(|&x| x == v || (x.is_nan() && v.is_nan())) => {
            Bounds::Scalar(v)
        }
        _ => Bounds::PerDim(values),
    }
}

/// What kind of file a teacher path is, from its name and first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TeacherFile {
    /// A Stable-Baselines3 `.zip` (entries `data` and `policy.pth`).
    Sb3Zip,
    /// A PyTorch archive: `.pt`, `.pth`, `.bin`, or a CleanRL `.cleanrl_model` written by
    /// `torch.save`.
    Torch,
    /// A Flax `.msgpack` (or a `.cleanrl_model` of CleanRL's JAX scripts).
    FlaxMsgpack,
    Safetensors,
}

/// Classifies `path` (an existing file).
pub fn classify(path: &Path) -> Result<TeacherFile> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    let mut head = [0u8; 4];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        f.read(&mut head).map_err(|e| Error::io(path, e))?
    };
    let is_zip = n == 4 && head == *b"PK\x03\x04";
    Ok(match ext.as_str() {
        "zip" => TeacherFile::Sb3Zip,
        "safetensors" => TeacherFile::Safetensors,
        "msgpack" => TeacherFile::FlaxMsgpack,
        "cleanrl_model" if is_zip => TeacherFile::Torch,
        "cleanrl_model" => TeacherFile::FlaxMsgpack,
        "pt" | "pth" | "bin" => TeacherFile::Torch,
        other => {
            return Err(Error::Config(format!(
                "{}: unknown teacher file type `.{other}`; expected a Stable-Baselines3 .zip, a \
                 CleanRL .cleanrl_model, a PyTorch .pt/.pth state dict or a .safetensors file",
                path.display()
            )))
        }
    })
}

/// Parses a NumPy array repr as Stable-Baselines3 stores a space's bounds
/// (`"[-4.8 -inf 0.41887903 inf]"`, `"-2.0"`, nested brackets for several dimensions).
pub fn parse_numpy_repr(s: &str) -> std::result::Result<Vec<f32>, String> {
    if s.contains("...") {
        return Err(format!(
            "`{}` is NumPy's summary of a large array, not its values",
            short(s)
        ));
    }
    s.split(|c: char| c == '[' || c == ']' || c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(|t| {
            let t = t.trim_end_matches('.');
            match t {
                "inf" => Ok(f32::INFINITY),
                "-inf" => Ok(f32::NEG_INFINITY),
                _ => t
                    .parse::<f64>()
                    .map(|v| v as f32)
                    .map_err(|_| format!("`{t}` in `{}` is not a number", short(s))),
            }
        })
        .collect()
}

fn short(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}

/// A `Box` space from a shape and bound values (one value for every dimension, or one each).
pub fn box_space(
    shape: Vec<usize>,
    low: Vec<f32>,
    high: Vec<f32>,
) -> std::result::Result<Space, String> {
    let d: usize = shape.iter().product();
    let fit = |v: Vec<f32>, name: &str| -> std::result::Result<Vec<f32>, String> {
        match v.len() {
            1 => Ok(vec![v[0]; d]),
            n if n == d => Ok(v),
            n => Err(format!(
                "`{name}` has {n} values for shape {shape:?} ({d} dimensions)"
            )),
        }
    };
    let space = Space::Box {
        shape: shape.clone(),
        low: bounds(fit(low, "low")?),
        high: bounds(fit(high, "high")?),
    };
    space.validate("space").map_err(|e| e.to_string())?;
    Ok(space)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_conventions_name_the_model_file() {
        assert_eq!(
            hub_convention("hf://sb3/dqn-CartPole-v1"),
            "hf://sb3/dqn-CartPole-v1/dqn-CartPole-v1.zip"
        );
        assert_eq!(
            hub_convention("hf://cleanrl/CartPole-v1-dqn-seed1"),
            "hf://cleanrl/CartPole-v1-dqn-seed1/dqn.cleanrl_model"
        );
        assert_eq!(
            hub_convention("hf://cleanrl/BreakoutNoFrameskip-v4-dqn_atari_jax-seed1"),
            "hf://cleanrl/BreakoutNoFrameskip-v4-dqn_atari_jax-seed1/dqn_atari_jax.cleanrl_model"
        );
        for same in [
            "hf://org/ckpt",
            "hf://sb3/x/other.zip",
            "runs/a",
            "hf://cleanrl/odd",
        ] {
            assert_eq!(hub_convention(same), same);
        }
    }

    #[test]
    fn numpy_reprs_parse_like_numpy_prints_them() {
        assert_eq!(
            parse_numpy_repr("[-4.8               -inf -0.41887903        -inf]").unwrap(),
            vec![-4.8, f32::NEG_INFINITY, -0.418_879_03, f32::NEG_INFINITY]
        );
        assert_eq!(
            parse_numpy_repr("[-1. -1. -8.]").unwrap(),
            vec![-1.0, -1.0, -8.0]
        );
        assert_eq!(parse_numpy_repr("-2.0").unwrap(), vec![-2.0]);
        assert_eq!(
            parse_numpy_repr("[[0 1]\n [2 3]]").unwrap(),
            vec![0.0, 1.0, 2.0, 3.0]
        );
        assert!(parse_numpy_repr("[0 0 ... 0 0]")
            .unwrap_err()
            .contains("summary"));
        assert!(parse_numpy_repr("[1 x]").unwrap_err().contains("`x`"));
    }

    #[test]
    fn spaces_compare_to_float32_rounding_and_name_both_sides() {
        let env = crate::envs::TaskFamily::from_id("cartpole").unwrap();
        let spec = env.spec().clone();
        let obs = box_space(
            vec![4],
            vec![-4.8, f32::NEG_INFINITY, -0.418_879_03, f32::NEG_INFINITY],
            vec![4.8, f32::INFINITY, 0.418_879_03, f32::INFINITY],
        )
        .unwrap();
        check_spaces(
            Path::new("x"),
            "agent",
            &obs,
            &Space::Discrete { n: 2 },
            &spec,
        )
        .unwrap();
        let e = check_spaces(
            Path::new("x.zip"),
            "the agent (trained on `CartPole-v1`)",
            &obs,
            &Space::Discrete { n: 3 },
            &spec,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("x.zip")
                && e.contains("Discrete(3)")
                && e.contains("`cartpole`'s Discrete(2)"),
            "{e}"
        );
    }
}
