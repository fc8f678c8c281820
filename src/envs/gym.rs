//! Gymnasium environments, `gym:ID`, through an embedded Python interpreter (cargo feature
//! `gym`): `gym:CartPole-v1`, `gym:Hopper-v5`, `gym:ALE/Breakout-v5`, or `gym:module:factory`
//! for a user's callable that returns a `gymnasium.Env`. `--set env.kwargs.KEY=V` passes
//! keyword arguments to `gymnasium.make` (or to the factory).
//!
//! - Python: the interpreter the binary was built against, with the packages of the
//!   project's `.venv/` (made by `scripts/python-env.sh`) or of `$VIRTUAL_ENV` when set. Every
//!   call into Python runs on one dedicated thread, which the env handles talk to through
//!   channels (a short spin, then a blocking wait); one call crosses per reset and per step,
//!   and the observation comes back as one contiguous vector copied straight out of its
//!   buffer into a buffer that travels between the two threads: `uint8` observations (Atari
//!   frames) cross as bytes, the spec records `observation_dtype = "uint8"`, and replay
//!   buffers keep them as bytes, a frame per transition; every other dtype crosses as float32.
//! - Semantics: `terminated` and `truncated` are Gymnasium's own (the `TimeLimit` wrapper of
//!   the env's spec truncates); the platform resets an environment itself when an episode
//!   ends, so the stored next observation of a final step is the episode's last one, never a
//!   reset observation; `reset(seed)` is `env.reset(seed=seed)`, and `reset(None)` continues
//!   the env's generator, as in Gymnasium.
//! - Spaces: `Box` (observations of any numeric dtype; `uint8` stays bytes up to the agent's
//!   network input, others are converted to float32; the spec records the shape, bounds and
//!   whether the values are bytes) and `Discrete` (actions offset by its `start`). `Dict`, `Tuple`,
//!   `MultiDiscrete` and the rest are refused by name.
//! - Errors: a Python exception in `make`, `reset` or `step` becomes an error carrying the
//!   exception and its traceback. `reset` cannot fail in the [`Env`] trait, so an exception
//!   there is returned by the next `step`.
//! - `env.preset = "atari"`: the set-up of the DQN papers on an `ALE/*-v5` id, as Gymnasium's
//!   own wrappers do it: the env made with `frameskip = 1` and sticky actions 0.25 (ALE v5's
//!   `repeat_action_probability`), then `AtariPreprocessing` (up to 30 no-op starts, frame skip
//!   4 with the max over the last two frames, 84×84 grayscale, `uint8`, no terminal on life
//!   loss), then a 4-frame stack: observations `[4, 84, 84]` in 0..255 (the Nature CNN divides
//!   by 255). Rewards are not clipped in the env, so evaluation reports game scores; DQN clips
//!   them in the learner with `agent.reward_clip = 1`. Episodes are truncated after
//!   27,000 agent steps (108,000 frames).
//! - Snapshots: the env's state lives in Python and is not captured, so a checkpoint of a
//!   `gym:` run records that and `--resume` refuses it by name instead of continuing from a
//!   different state.

use super::{Env, EnvConfig};
use crate::error::{Error, Result};

/// The id prefix of Gymnasium environments.
pub const PREFIX: &str = "gym:";

/// What to install when the bridge is missing.
pub const INSTALL_HINT: &str = "build with `cargo build --release --features gym` and install \
     the Python side with `scripts/python-env.sh` (Gymnasium, MuJoCo and ale-py into .venv/)";

/// The Gymnasium id (or `module:factory`) of `gym:ID`.
pub fn gym_id(id: &str) -> Result<&str> {
    match id.strip_prefix(PREFIX) {
        Some(rest) if !rest.trim().is_empty() => Ok(rest),
        _ => Err(Error::Config(format!(
            "`{id}`: expected gym:ID (e.g. gym:CartPole-v1, gym:ALE/Breakout-v5) or gym:module:factory"
        ))),
    }
}

/// The wrapper presets `env.preset` takes.
pub const PRESETS: [&str; 1] = ["atari"];

/// Episodes of the `atari` preset end after 27,000 agent steps (108,000 frames, Machado et
/// al. 2018), where ALE itself truncates them.
pub const ATARI_MAX_STEPS: u32 = 27_000;

/// A fresh `gym:` environment for `cfg`.
pub fn make(cfg: &EnvConfig, _task: usize) -> Result<Box<dyn Env>> {
    let id = gym_id(&cfg.id)?;
    if let Some(p) = cfg.preset.as_deref() {
        if !PRESETS.contains(&p) {
            return Err(Error::Config(format!(
                "env.preset `{p}` is not a preset; valid: {}",
                PRESETS.join(", ")
            )));
        }
    }
    #[cfg(feature = "gym")]
    {
        Ok(Box::new(bridge::GymEnv::new(cfg, id)?))
    }
    #[cfg(not(feature = "gym"))]
    {
        let _ = id;
        Err(Error::Config(format!(
            "`{}` is a Gymnasium environment, but this binary was built without the Gymnasium \
             bridge: {INSTALL_HINT}",
            cfg.id
        )))
    }
}

/// `n` `gym:` environments stepped in `env.num_envs` worker processes (at most `n`), each
/// running its share in Gymnasium's `SyncVectorEnv`.
pub fn make_batch(cfg: &EnvConfig, n: usize) -> Result<Box<dyn super::vec_env::BatchEnv>> {
    let id = gym_id(&cfg.id)?;
    #[cfg(feature = "gym")]
    {
        let workers = cfg.num_envs.unwrap_or(1).clamp(1, n.max(1));
        Ok(Box::new(bridge::GymBatch::new(cfg, id, n, workers)?))
    }
    #[cfg(not(feature = "gym"))]
    {
        let _ = (id, n);
        Err(Error::Config(format!(
            "`{}` is a Gymnasium environment, but this binary was built without the Gymnasium \
             bridge: {INSTALL_HINT}",
            cfg.id
        )))
    }
}

/// `envs --json`'s entry for `gym:ID`: whether this binary has the bridge and, when it does,
/// every Gymnasium id importable from its Python environment.
pub fn registry_entry() -> serde_json::Value {
    #[cfg(feature = "gym")]
    {
        match bridge::registered_ids() {
            Ok(ids) => serde_json::json!({ "id": "gym:ID", "bridge": true, "importable": ids }),
            Err(e) => serde_json::json!({ "id": "gym:ID", "bridge": true, "error": e.to_string() }),
        }
    }
    #[cfg(not(feature = "gym"))]
    {
        serde_json::json!({ "id": "gym:ID", "bridge": false, "install": INSTALL_HINT })
    }
}

/// A description of a `gym:` env for `envs` and task descriptions.
pub fn describe(cfg: &EnvConfig, _task: usize) -> serde_json::Value {
    serde_json::json!({ "gymnasium_id": cfg.id.strip_prefix(PREFIX), "kwargs": cfg.kwargs })
}

#[cfg(feature = "gym")]
mod bridge {
    use super::super::{Action, Env, EnvConfig, ObsDtype, Space, Step};
    use crate::error::{Error, Result};
    use pyo3::prelude::*;
    use pyo3::sync::PyOnceLock;
    use pyo3::types::PyModule;
    use serde_json::Value;
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::sync::{Mutex, OnceLock};

    /// The bridge module, loaded once per process (or the reason it could not be). A
    /// `PyOnceLock`, not a `std` one: importing releases the GIL, and another thread waiting
    /// on a `std` lock while holding the GIL would deadlock with the importing one.
    static MODULE: PyOnceLock<std::result::Result<Py<PyModule>, String>> = PyOnceLock::new();

    /// The exception and its traceback, as Python prints them.
    pub fn describe_err(py: Python<'_>, e: &PyErr) -> String {
        let tb = e
            .traceback(py)
            .and_then(|t| t.format().ok())
            .unwrap_or_default();
        format!("{tb}{e}")
    }

    /// The virtual environment whose packages the bridge uses.
    fn venv() -> PathBuf {
        match std::env::var_os("VIRTUAL_ENV") {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"),
        }
    }

    fn load(py: Python<'_>) -> std::result::Result<Py<PyModule>, String> {
        let venv = venv();
        let sys = py.import("sys").map_err(|e| describe_err(py, &e))?;
        let version: (u32, u32) = sys
            .getattr("version_info")
            .and_then(|v| {
                Ok((
                    v.getattr("major")?.extract()?,
                    v.getattr("minor")?.extract()?,
                ))
            })
            .map_err(|e| describe_err(py, &e))?;
        let site_packages = venv
            .join("lib")
            .join(format!("python{}.{}", version.0, version.1))
            .join("site-packages");
        if !site_packages.is_dir() {
            return Err(format!(
                "no Python packages at {} (the embedded Python is {}.{}): {}",
                site_packages.display(),
                version.0,
                version.1,
                super::INSTALL_HINT
            ));
        }
        py.import("site")
            .and_then(|site| site.call_method1("addsitedir", (site_packages.to_string_lossy(),)))
            .map_err(|e| describe_err(py, &e))?;
        // The module is imported from a file, not from a string: the worker processes of vector
        // envs import it by name to build their envs.
        let source = include_str!("gym_bridge.py");
        let dir = std::env::temp_dir().join(format!(
            "reincarnate-gym-bridge-{:08x}",
            crc32fast::hash(source.as_bytes())
        ));
        let file = dir.join("reincarnate_gym_bridge.py");
        std::fs::create_dir_all(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                crate::fs::write_atomic(&file, source.as_bytes()).map_err(|e| e.to_string())
            })
            .map_err(|e| format!("cannot write the bridge module {}: {e}", file.display()))?;
        sys.getattr("path")
            .and_then(|p| p.call_method1("insert", (0, dir.to_string_lossy())))
            .map_err(|e| describe_err(py, &e))?;
        py.import("reincarnate_gym_bridge")
            .map(Bound::unbind)
            .map_err(|e| {
                format!(
                    "cannot import Gymnasium from {}: {}\n{}",
                    venv.display(),
                    describe_err(py, &e),
                    super::INSTALL_HINT
                )
            })
    }

    fn module(py: Python<'_>) -> Result<Bound<'_, PyModule>> {
        match MODULE.get_or_init(py, || load(py)) {
            Ok(m) => Ok(m.bind(py).clone()),
            Err(msg) => Err(Error::Config(format!("the Gymnasium bridge: {msg}"))),
        }
    }

    /// A platform space from the bridge's description; unsupported spaces are refused by name.
    fn space(id: &str, what: &str, v: &Value) -> Result<Space> {
        let bad = |m: String| Error::Config(format!("`{id}`: {what} space {m}"));
        match v.get("type").and_then(Value::as_str) {
            Some("Discrete") => {
                let n = v.get("n").and_then(Value::as_u64).unwrap_or(0) as usize;
                let s = Space::Discrete { n };
                s.validate(what)?;
                Ok(s)
            }
            // The bridge describes a Box as Minari serialises one (shape, flat low/high).
            Some("Box") => crate::formats::minari::parse_space(v, what).map_err(bad),
            Some(other) => Err(bad(format!(
                "is {} ({other}); the platform supports Box and Discrete spaces",
                v.get("repr").and_then(Value::as_str).unwrap_or(other)
            ))),
            None => Err(bad("is not described".into())),
        }
    }

    /// An action, owned, to send to the Python thread.
    enum Act {
        Discrete(usize),
        Box(Vec<f32>),
    }

    /// A step's reward, `terminated` and `truncated`, or the exception.
    type StepAnswer = std::result::Result<(f64, bool, bool), String>;

    /// A batch of actions, owned: discrete indices or continuous rows laid end to end.
    enum VecAct {
        Discrete(Vec<usize>),
        Box(Vec<f32>),
    }

    /// A batched step's rewards, `terminated` and `truncated` flags, or the exception.
    type VecStepAnswer = std::result::Result<(Vec<f64>, Vec<bool>, Vec<bool>), String>;

    /// The two observation buffers of a batched step (to act on, true next).
    type ObsPair = (Vec<f32>, Vec<f32>);

    /// What `vector_step` returns: both observation arrays, rewards and flags.
    type VecStepTuple<'py> = (
        Bound<'py, PyAny>,
        Bound<'py, PyAny>,
        Vec<f64>,
        Vec<bool>,
        Vec<bool>,
    );

    /// Work for the Python thread; each request carries the channel its answer goes back on.
    /// Observations travel in the caller's buffer, which comes back filled.
    enum Request {
        /// One env, or with `vector = Some((n, workers))` a batch in worker processes.
        Make {
            id: String,
            gym_id: String,
            kwargs: String,
            max_episode_steps: Option<u32>,
            preset: Option<String>,
            vector: Option<(usize, usize)>,
            reply: Sender<std::result::Result<(u64, String), String>>,
        },
        /// `env.reset(seed=...)` of one env (`seeds[0]`), or of a batch with one seed each.
        Reset {
            env: u64,
            vector: bool,
            seeds: Vec<Option<u64>>,
            bytes: bool,
            obs: Vec<f32>,
            reply: Sender<(Vec<f32>, std::result::Result<(), String>)>,
        },
        Step {
            env: u64,
            action: Act,
            bytes: bool,
            obs: Vec<f32>,
            reply: Sender<(Vec<f32>, StepAnswer)>,
        },
        VecStep {
            env: u64,
            actions: VecAct,
            bytes: bool,
            bufs: ObsPair,
            reply: Sender<(ObsPair, VecStepAnswer)>,
        },
        /// Closes an env; a vector env's caller waits for its workers to stop (`done`).
        Close { env: u64, done: Option<Sender<()>> },
        Registry {
            reply: Sender<std::result::Result<String, String>>,
        },
    }

    /// The one thread that runs Python. Every call into Python happens on it: extension modules
    /// that release and re-take the GIL in their destructors (MuJoCo's) deadlock when Python is
    /// entered from several threads, and one thread also keeps the order of calls obvious.
    fn python_thread() -> Result<&'static Mutex<Sender<Request>>> {
        static THREAD: OnceLock<std::result::Result<Mutex<Sender<Request>>, String>> =
            OnceLock::new();
        THREAD
            .get_or_init(|| {
                let (tx, rx) = channel::<Request>();
                std::thread::Builder::new()
                    .name("python".into())
                    .spawn(move || serve(rx))
                    .map(|_| Mutex::new(tx))
                    .map_err(|e| format!("cannot start the Python thread: {e}"))
            })
            .as_ref()
            .map_err(|e| Error::Env(e.clone()))
    }

    /// Receives from `rx`, spinning briefly before blocking: a blocked thread takes tens of
    /// microseconds to wake, more than a classic-control step costs, and every step crosses
    /// between the caller and the Python thread twice.
    fn recv_soon<T>(rx: &Receiver<T>) -> std::result::Result<T, std::sync::mpsc::RecvError> {
        let start = std::time::Instant::now();
        let mut spins = 0u32;
        loop {
            match rx.try_recv() {
                Ok(v) => return Ok(v),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    return Err(std::sync::mpsc::RecvError)
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else if start.elapsed() > SPIN {
                return rx.recv();
            } else {
                // Yield rather than spin: with more runnable threads than cores, the thread
                // being waited for may need this core.
                std::thread::yield_now();
            }
        }
    }

    /// How long a waiting side spins before it blocks.
    const SPIN: std::time::Duration = std::time::Duration::from_micros(500);

    fn send(req: Request) -> Result<()> {
        python_thread()?
            .lock()
            .map_err(|_| Error::Env("the Python thread's queue is poisoned".into()))?
            .send(req)
            .map_err(|_| Error::Env("the Python thread has stopped".into()))
    }

    fn serve(rx: Receiver<Request>) {
        let mut envs: HashMap<u64, Py<PyAny>> = HashMap::new();
        let mut next = 0u64;
        let mut scratch: Vec<u8> = Vec::new();
        while let Ok(req) = recv_soon(&rx) {
            Python::attach(|py| match req {
                Request::Make {
                    id,
                    gym_id,
                    kwargs,
                    max_episode_steps,
                    preset,
                    vector,
                    reply,
                } => {
                    let python = venv().join("bin").join("python");
                    let made = module(py).map_err(|e| e.to_string()).and_then(|m| {
                        match vector {
                            None => m
                                .getattr("make")
                                .and_then(|f| f.call1((gym_id, kwargs, max_episode_steps, preset))),
                            Some((n, workers)) => m.getattr("make_vector").and_then(|f| {
                                let python = python.to_string_lossy();
                                let args = (gym_id, kwargs, max_episode_steps, preset);
                                f.call1((args.0, args.1, args.2, args.3, n, workers, python))
                            }),
                        }
                        .and_then(|r| r.extract::<(Py<PyAny>, String)>())
                        .map_err(|e| {
                            let what = match vector {
                                None => format!("`{id}`"),
                                Some((n, w)) => format!("{n} `{id}` in {w} worker processes"),
                            };
                            format!("cannot make {what}: {}", describe_err(py, &e))
                        })
                    });
                    let _ = reply.send(made.map(|(env, info)| {
                        next += 1;
                        envs.insert(next, env);
                        (next, info)
                    }));
                }
                Request::Reset {
                    env,
                    vector,
                    seeds,
                    bytes,
                    mut obs,
                    reply,
                } => {
                    let name = if vector { "vector_reset" } else { "reset" };
                    let r = target(py, &envs, env, name)
                        .and_then(|(f, e)| {
                            match vector {
                                true => f.call1((e, seeds)),
                                false => f.call1((e, seeds.first().copied().flatten())),
                            }
                            .map_err(|x| raised(py, "reset", &x))
                        })
                        .and_then(|arr| {
                            copy_obs(py, &arr, bytes.then_some(&mut scratch), &mut obs)
                        });
                    let _ = reply.send((obs, r));
                }
                Request::Step {
                    env,
                    action,
                    bytes,
                    mut obs,
                    reply,
                } => {
                    let out = match action {
                        Act::Discrete(a) => target(py, &envs, env, "step_discrete")
                            .and_then(|(f, e)| f.call1((e, a)).map_err(|x| raised(py, "step", &x))),
                        Act::Box(v) => target(py, &envs, env, "step_box")
                            .and_then(|(f, e)| f.call1((e, v)).map_err(|x| raised(py, "step", &x))),
                    };
                    let r = out.and_then(|out| {
                        let (arr, reward, terminated, truncated): (
                            Bound<'_, PyAny>,
                            f64,
                            bool,
                            bool,
                        ) = out.extract().map_err(|e| describe_err(py, &e))?;
                        copy_obs(py, &arr, bytes.then_some(&mut scratch), &mut obs)?;
                        Ok((reward, terminated, truncated))
                    });
                    let _ = reply.send((obs, r));
                }
                Request::VecStep {
                    env,
                    actions,
                    bytes,
                    mut bufs,
                    reply,
                } => {
                    let out = target(py, &envs, env, "vector_step").and_then(|(f, e)| {
                        match actions {
                            VecAct::Discrete(a) => f.call1((e, a)),
                            VecAct::Box(v) => f.call1((e, v)),
                        }
                        .map_err(|x| raised(py, "step", &x))
                    });
                    let r = out.and_then(|out| {
                        let (obs, next, rewards, terminated, truncated): VecStepTuple<'_> =
                            out.extract().map_err(|e| describe_err(py, &e))?;
                        copy_obs(py, &obs, bytes.then_some(&mut scratch), &mut bufs.0)?;
                        copy_obs(py, &next, bytes.then_some(&mut scratch), &mut bufs.1)?;
                        Ok((rewards, terminated, truncated))
                    });
                    let _ = reply.send((bufs, r));
                }
                Request::Registry { reply } => {
                    let ids = module(py).map_err(|e| e.to_string()).and_then(|m| {
                        m.getattr("registered_ids")
                            .and_then(|f| f.call0())
                            .and_then(|r| r.extract::<String>())
                            .map_err(|e| describe_err(py, &e))
                    });
                    let _ = reply.send(ids);
                }
                Request::Close { env, done } => {
                    if let Some(e) = envs.remove(&env) {
                        let _ = e.bind(py).call_method0("close");
                    }
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
            });
        }
    }

    /// The bridge's function `name` and the env with handle `env`.
    fn target<'py>(
        py: Python<'py>,
        envs: &HashMap<u64, Py<PyAny>>,
        env: u64,
        name: &str,
    ) -> std::result::Result<(Bound<'py, PyAny>, Bound<'py, PyAny>), String> {
        let m = module(py).map_err(|e| e.to_string())?;
        let e = envs
            .get(&env)
            .ok_or_else(|| format!("environment handle {env} is closed"))?
            .bind(py)
            .clone();
        let f = m.getattr(name).map_err(|e| describe_err(py, &e))?;
        Ok((f, e))
    }

    fn raised(py: Python<'_>, name: &str, e: &PyErr) -> String {
        format!("{name} raised\n{}", describe_err(py, e))
    }

    /// Copies an observation vector out of its buffer into `obs` (lengths must agree): a
    /// uint8 one through `bytes` when given, else a float32 one.
    fn copy_obs(
        py: Python<'_>,
        arr: &Bound<'_, PyAny>,
        bytes: Option<&mut Vec<u8>>,
        obs: &mut [f32],
    ) -> std::result::Result<(), String> {
        let count_err = |n: usize| {
            format!(
                "the observation has {n} values, but the observation space has {}",
                obs.len()
            )
        };
        let Some(scratch) = bytes else {
            let buf = pyo3::buffer::PyBuffer::<f32>::get(arr).map_err(|e| describe_err(py, &e))?;
            if buf.item_count() != obs.len() {
                return Err(count_err(buf.item_count()));
            }
            return buf.copy_to_slice(py, obs).map_err(|e| describe_err(py, &e));
        };
        let buf = pyo3::buffer::PyBuffer::<u8>::get(arr).map_err(|e| {
            format!(
                "the observation space is uint8, but an observation is not: {}",
                describe_err(py, &e)
            )
        })?;
        if buf.item_count() != obs.len() {
            return Err(count_err(buf.item_count()));
        }
        scratch.resize(obs.len(), 0);
        buf.copy_to_slice(py, scratch)
            .map_err(|e| describe_err(py, &e))?;
        for (o, &b) in obs.iter_mut().zip(scratch.iter()) {
            *o = f32::from(b);
        }
        Ok(())
    }

    /// Every id `gymnasium.make` accepts in the bridge's Python environment.
    pub fn registered_ids() -> Result<Vec<String>> {
        let (tx, rx) = channel();
        send(Request::Registry { reply: tx })?;
        let text = recv_soon(&rx)
            .map_err(|_| Error::Env("the Python thread has stopped".into()))?
            .map_err(Error::Env)?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Env(format!("the bridge's id list is not JSON: {e}")))
    }

    /// An env, or a batch of them, living on the Python thread; closed when dropped.
    struct Remote {
        handle: u64,
        /// A batch's drop waits until its workers have stopped: a process that exits with them
        /// still running leaves them writing into closed pipes.
        wait_on_close: bool,
    }

    impl Drop for Remote {
        fn drop(&mut self) {
            let (tx, rx) = channel();
            let done = self.wait_on_close.then_some(tx);
            if send(Request::Close {
                env: self.handle,
                done,
            })
            .is_ok()
                && self.wait_on_close
            {
                let _ = rx.recv();
            }
        }
    }

    /// What the bridge says of an env: its spaces, whether observations are bytes, its limit.
    struct Described {
        observation_space: Space,
        action_space: Space,
        bytes: bool,
        max_episode_steps: u32,
    }

    /// Makes `cfg`'s env on the Python thread (with `vector = Some((n, workers))` a batch of
    /// `n` in worker processes) and reads its description.
    fn open(
        cfg: &EnvConfig,
        gym_id: &str,
        vector: Option<(usize, usize)>,
    ) -> Result<(Remote, Described)> {
        let kwargs = serde_json::to_string(&cfg.kwargs.clone().unwrap_or_default())
            .map_err(|e| Error::Config(format!("env.kwargs: {e}")))?;
        let (tx, rx) = channel();
        send(Request::Make {
            id: cfg.id.clone(),
            gym_id: gym_id.to_string(),
            kwargs,
            max_episode_steps: cfg.max_episode_steps,
            preset: cfg.preset.clone(),
            vector,
            reply: tx,
        })?;
        let (handle, info) = rx
            .recv()
            .map_err(|_| Error::Env("the Python thread has stopped".into()))?
            .map_err(Error::Env)?;
        // From here on, dropping the handle closes the env on the Python thread.
        let remote = Remote {
            handle,
            wait_on_close: vector.is_some(),
        };
        let info = crate::formats::minari::python_json(&info)
            .map_err(|e| Error::Env(format!("`{}`: bridge answer: {e}", cfg.id)))?;
        let described = Described {
            observation_space: space(&cfg.id, "observation", &info["observation_space"])?,
            action_space: space(&cfg.id, "action", &info["action_space"])?,
            bytes: info["observation_space"]["dtype"].as_str() == Some("uint8"),
            max_episode_steps: info["max_episode_steps"]
                .as_u64()
                .map_or(u32::MAX, |s| s.min(u64::from(u32::MAX)) as u32),
        };
        Ok((remote, described))
    }

    /// `n` environments in `workers` worker processes (`env.num_envs`), each stepping its share
    /// in Gymnasium's `SyncVectorEnv`: one crossing into Python per batched step, one message
    /// per worker, the workers stepping in parallel.
    pub struct GymBatch {
        id: String,
        remote: Remote,
        n: usize,
        bytes: bool,
        action_dim: usize,
        /// The buffers observations travel in (to act on, true next).
        bufs: ObsPair,
    }

    impl GymBatch {
        pub fn new(cfg: &EnvConfig, gym_id: &str, n: usize, workers: usize) -> Result<Self> {
            let (remote, d) = open(cfg, gym_id, Some((n, workers)))?;
            let dim = d.observation_space.flat_dim();
            Ok(Self {
                id: cfg.id.clone(),
                remote,
                n,
                bytes: d.bytes,
                action_dim: d.action_space.flat_dim(),
                bufs: (vec![0.0; n * dim], vec![0.0; n * dim]),
            })
        }
    }

    impl crate::envs::vec_env::BatchEnv for GymBatch {
        fn reset(&mut self, seeds: &[u64], obs: &mut [f32]) -> Result<()> {
            let (tx, rx) = channel();
            send(Request::Reset {
                env: self.remote.handle,
                vector: true,
                seeds: seeds.iter().map(|&s| Some(s)).collect(),
                bytes: self.bytes,
                obs: std::mem::take(&mut self.bufs.0),
                reply: tx,
            })?;
            let (buf, r) =
                recv_soon(&rx).map_err(|_| Error::Env("the Python thread has stopped".into()))?;
            self.bufs.0 = buf;
            r.map_err(|m| Error::Env(format!("`{}`: {m}", self.id)))?;
            obs.copy_from_slice(&self.bufs.0);
            Ok(())
        }

        fn step(
            &mut self,
            actions: crate::envs::vec_env::ActionBatch<'_>,
            out: crate::envs::vec_env::BatchOut<'_>,
        ) -> Result<()> {
            use crate::envs::vec_env::ActionBatch;
            let actions = match actions {
                ActionBatch::Discrete(a) => VecAct::Discrete(a.to_vec()),
                ActionBatch::Continuous(a) if a.len() == self.n * self.action_dim => {
                    VecAct::Box(a.to_vec())
                }
                ActionBatch::Continuous(a) => {
                    return Err(Error::Env(format!(
                        "`{}`: {} action values for {} environments of {} each",
                        self.id,
                        a.len(),
                        self.n,
                        self.action_dim
                    )))
                }
            };
            let (tx, rx) = channel();
            send(Request::VecStep {
                env: self.remote.handle,
                actions,
                bytes: self.bytes,
                bufs: std::mem::take(&mut self.bufs),
                reply: tx,
            })?;
            // A blocking wait: the workers need the cores more than a spinning caller does.
            let (bufs, r) = rx
                .recv()
                .map_err(|_| Error::Env("the Python thread has stopped".into()))?;
            self.bufs = bufs;
            let (rewards, terminated, truncated) =
                r.map_err(|m| Error::Env(format!("`{}`: {m}", self.id)))?;
            if rewards.len() != self.n || terminated.len() != self.n || truncated.len() != self.n {
                return Err(Error::Env(format!(
                    "`{}`: the vector env answered for {} environments, not {}",
                    self.id,
                    rewards.len(),
                    self.n
                )));
            }
            out.obs.copy_from_slice(&self.bufs.0);
            out.next_obs.copy_from_slice(&self.bufs.1);
            for i in 0..self.n {
                out.rewards[i] = rewards[i] as f32;
                out.terminated[i] = terminated[i];
                out.truncated[i] = truncated[i];
            }
            Ok(())
        }
    }

    pub struct GymEnv {
        id: String,
        remote: Remote,
        observation_space: Space,
        observation_dtype: ObsDtype,
        action_space: Space,
        max_episode_steps: u32,
        /// The buffer observations travel in to and from the Python thread.
        buf: Vec<f32>,
        /// An exception raised by `reset`, returned by the next `step`.
        pending: Option<String>,
    }

    impl GymEnv {
        pub fn new(cfg: &EnvConfig, gym_id: &str) -> Result<Self> {
            let (remote, d) = open(cfg, gym_id, None)?;
            Ok(Self {
                id: cfg.id.clone(),
                remote,
                buf: vec![0.0; d.observation_space.flat_dim()],
                observation_space: d.observation_space,
                observation_dtype: if d.bytes { ObsDtype::U8 } else { ObsDtype::F32 },
                action_space: d.action_space,
                max_episode_steps: d.max_episode_steps,
                pending: None,
            })
        }
    }

    impl Env for GymEnv {
        fn observation_space(&self) -> &Space {
            &self.observation_space
        }
        fn observation_dtype(&self) -> ObsDtype {
            self.observation_dtype
        }
        fn action_space(&self) -> &Space {
            &self.action_space
        }
        fn max_episode_steps(&self) -> u32 {
            self.max_episode_steps
        }

        fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
            let (tx, rx) = channel();
            let sent = send(Request::Reset {
                env: self.remote.handle,
                vector: false,
                seeds: vec![seed],
                bytes: self.observation_dtype == ObsDtype::U8,
                obs: std::mem::take(&mut self.buf),
                reply: tx,
            });
            let result = sent.and_then(|()| {
                let (buf, r) = recv_soon(&rx)
                    .map_err(|_| Error::Env("the Python thread has stopped".into()))?;
                self.buf = buf;
                r.map_err(|m| Error::Env(format!("`{}`: {m}", self.id)))
            });
            match result {
                Ok(()) if self.buf.len() == obs.len() => obs.copy_from_slice(&self.buf),
                Ok(()) => {
                    obs.fill(f32::NAN);
                    self.pending = Some(format!(
                        "`{}`: an observation buffer of {} values for a space of {}",
                        self.id,
                        obs.len(),
                        self.buf.len()
                    ));
                }
                Err(e) => {
                    obs.fill(f32::NAN);
                    self.buf = vec![0.0; self.observation_space.flat_dim()];
                    self.pending = Some(e.to_string());
                }
            }
        }

        fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> Result<Step> {
            if let Some(msg) = self.pending.take() {
                return Err(Error::Env(msg));
            }
            let act = match (action, &self.action_space) {
                (Action::Discrete(a), Space::Discrete { n }) => {
                    super::super::discrete_action(&self.id, action, *n)?;
                    Act::Discrete(a)
                }
                (Action::Continuous(v), Space::Box { .. }) => {
                    super::super::continuous_action(
                        &self.id,
                        action,
                        self.action_space.flat_dim(),
                    )?;
                    Act::Box(v.to_vec())
                }
                (Action::Discrete(a), _) => {
                    return Err(Error::Env(format!(
                        "`{}` has continuous actions but was given the discrete action {a}",
                        self.id
                    )))
                }
                (Action::Continuous(v), _) => {
                    return Err(Error::Env(format!(
                        "`{}` has discrete actions but was given a continuous action of length {}",
                        self.id,
                        v.len()
                    )))
                }
            };
            if obs.len() != self.buf.len() {
                return Err(Error::Env(format!(
                    "`{}`: an observation buffer of {} values for a space of {}",
                    self.id,
                    obs.len(),
                    self.buf.len()
                )));
            }
            let (tx, rx) = channel();
            send(Request::Step {
                env: self.remote.handle,
                action: act,
                bytes: self.observation_dtype == ObsDtype::U8,
                obs: std::mem::take(&mut self.buf),
                reply: tx,
            })?;
            let (buf, r) =
                recv_soon(&rx).map_err(|_| Error::Env("the Python thread has stopped".into()))?;
            self.buf = buf;
            let (reward, terminated, truncated) =
                r.map_err(|m| Error::Env(format!("`{}`: {m}", self.id)))?;
            obs.copy_from_slice(&self.buf);
            Ok(Step {
                reward: reward as f32,
                terminated,
                truncated,
            })
        }

        fn snapshot(&self) -> Result<serde_json::Value> {
            Ok(serde_json::json!({ "gymnasium": self.id, "state": "not captured" }))
        }

        fn restore(&mut self, _state: &serde_json::Value) -> Result<()> {
            Err(Error::Env(format!(
                "`{}` cannot continue mid-episode: a Gymnasium environment's state lives in Python \
                 and is not saved in checkpoints, so a `gym:` run does not resume; start it again",
                self.id
            )))
        }
    }
}
