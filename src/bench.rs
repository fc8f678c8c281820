//! `reincarnate bench ...`: performance figures, printed as a table or as JSON lines
//! (`{"name", "value", "unit"}`). Benchmarks measure; tests never time themselves.

use crate::envs::vec_env::ActionBatch;
use crate::envs::{registry, Action, EnvConfig, Space, TaskFamily, VecEnv};
use crate::error::Result;
use crate::report::Figure;
use crate::rng::Rng;
use std::time::{Duration, Instant};

/// The run length `bench updates` builds its agents for (their schedules resolve against it;
/// the timed updates do not depend on it).
const BENCH_BUDGET: u64 = 100_000;

/// Starts a new peak of resident memory for [`peak_rss_mb`]: freed heap memory goes back to
/// the system first (glibc keeps some), then the kernel's high-water mark is reset to what the
/// process holds now. Linux only; elsewhere nothing happens.
pub fn reset_peak_rss() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    #[cfg(target_os = "linux")]
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The most resident memory the process has held since [`reset_peak_rss`] (or since it
/// started), in MB: Linux's `VmHWM`. `None` where that is not available.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs `f` in growing batches until at least `budget` has elapsed; returns calls per second.
fn rate(budget: Duration, mut f: impl FnMut(usize) -> Result<usize>) -> Result<f64> {
    let start = Instant::now();
    let mut done = 0usize;
    let mut chunk = 1_000usize;
    loop {
        done += f(chunk)?;
        let el = start.elapsed();
        if el >= budget {
            return Ok(done as f64 / el.as_secs_f64());
        }
        chunk = (chunk * 2).min(1 << 22);
    }
}

/// Steps/s of every environment, a single env and a `VecEnv` of 64, one thread, random actions;
/// with the Gymnasium bridge also `gym:` envs alone and in batches of 16 and 256 over 1 or 2
/// worker processes, and Breakout with the `atari` preset (agent steps: 4 frames each).
pub fn bench_envs(budget: Duration, filter: Option<&str>) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let mut configs: Vec<(String, EnvConfig)> = registry()
        .iter()
        .map(|e| (e.id.to_string(), EnvConfig::new(e.id)))
        .collect();
    if cfg!(feature = "gym") {
        // Through the bridge: one env in this process, and batches in 1 or 2 worker processes.
        for id in [
            "gym:CartPole-v1",
            "gym:Pendulum-v1",
            "gym:Hopper-v5",
            "gym:ALE/Breakout-v5",
        ] {
            configs.push((id.to_string(), EnvConfig::new(id)));
        }
        let mut atari = EnvConfig::new("gym:ALE/Breakout-v5");
        atari.preset = Some("atari".into());
        configs.push(("gym:ALE/Breakout-v5+atari".into(), atari));
    }
    for (id, config) in configs {
        let id = id.as_str();
        if filter.is_some_and(|f| !id.contains(f)) {
            continue;
        }
        let family = TaskFamily::new(&config)?;
        let spec = family.spec().clone();
        let d = spec.obs_dim();
        let tasks = family.tasks(crate::envs::TaskSet::All);
        let mut rng = Rng::seed_from_u64(0);

        // single environment
        let mut env = family.make(tasks[0])?;
        let mut obs = vec![0.0f32; d];
        env.reset(Some(0), &mut obs);
        let n_act = spec.action_space.discrete_n();
        let act_dim = spec.action_space.flat_dim();
        let (lo, hi) = match &spec.action_space {
            Space::Box { low, high, .. } => (low.get(0), high.get(0)),
            Space::Discrete { .. } => (0.0, 0.0),
        };
        let mut cont = vec![0.0f32; act_dim];
        let single = rate(budget, |k| {
            for _ in 0..k {
                let step = match n_act {
                    Some(n) => env.step(Action::Discrete(rng.below(n)), &mut obs)?,
                    None => {
                        for c in cont.iter_mut() {
                            *c = lo + (hi - lo) * rng.uniform_f32();
                        }
                        env.step(Action::Continuous(&cont), &mut obs)?
                    }
                };
                if step.done() {
                    env.reset(None, &mut obs);
                }
            }
            Ok(k)
        })?;
        figures.push(Figure {
            name: format!("envs/{id}/single"),
            value: single,
            unit: "steps/s".into(),
        });
        if id.starts_with(crate::envs::gym::PREFIX) {
            // N envs in 1 and 2 worker processes (`env.num_envs`), N / workers each: one
            // message per worker per batched step, whose cost the larger batch spreads thinner
            // (Atari: 16 only, each ALE instance holds its own emulator).
            let sizes: &[usize] = if id.contains("ALE/") {
                &[16]
            } else {
                &[16, 256]
            };
            for &n in sizes {
                for workers in [1, 2] {
                    let mut cfg = spec.config.clone();
                    cfg.num_envs = Some(workers);
                    let fam = TaskFamily::new(&cfg)?;
                    let mut venv = VecEnv::new(&fam, &vec![tasks[0]; n], 0)?;
                    figures.push(Figure {
                        name: format!("envs/{id}/{n}-envs-{workers}-workers"),
                        value: vec_step_rate(&mut venv, &spec.action_space, budget, &mut rng)?,
                        unit: "steps/s".into(),
                    });
                }
            }
            continue;
        }

        // VecEnv of 64 (tasks cycled)
        let n = 64;
        let vt: Vec<usize> = (0..n).map(|i| tasks[i % tasks.len()]).collect();
        let mut venv = VecEnv::new(&family, &vt, 0)?;
        figures.push(Figure {
            name: format!("envs/{id}/vec64"),
            value: vec_step_rate(&mut venv, &spec.action_space, budget, &mut rng)?,
            unit: "steps/s".into(),
        });
    }
    Ok(figures)
}

/// Environment steps/s of `venv` (reset first) under uniformly random actions.
fn vec_step_rate(venv: &mut VecEnv, space: &Space, budget: Duration, rng: &mut Rng) -> Result<f64> {
    let n = venv.len();
    let n_act = space.discrete_n();
    let act_dim = space.flat_dim();
    let (lo, hi) = match space {
        Space::Box { low, high, .. } => (low.get(0), high.get(0)),
        Space::Discrete { .. } => (0.0, 0.0),
    };
    venv.reset();
    let mut da = vec![0usize; n];
    let mut ca = vec![0.0f32; n * act_dim];
    rate(budget, |k| {
        let iters = (k / n).max(1);
        for _ in 0..iters {
            match n_act {
                Some(m) => {
                    for a in da.iter_mut() {
                        *a = rng.below(m);
                    }
                    venv.step(ActionBatch::Discrete(&da))?;
                }
                None => {
                    for c in ca.iter_mut() {
                        *c = lo + (hi - lo) * rng.uniform_f32();
                    }
                    venv.step(ActionBatch::Continuous(&ca))?;
                }
            }
        }
        Ok(iters * n)
    })
}

/// Updates/s of the DQN family on the reference sizes: CartPole MLP 120-84 at batch 128,
/// the MinAtar conv net (16 3×3 filters, FC 128, 10×10×4 input, 6 actions) at batch 32, and the
/// Nature DQN CNN on 4×84×84 byte frames at batch 32.
/// Each update = sample a minibatch, forward online and target nets, loss, backward, Adam step.
pub fn bench_updates(
    budget: Duration,
    device: &candle_core::Device,
    filter: Option<&str>,
) -> Result<Vec<Figure>> {
    use crate::agents::Experience;
    use crate::envs::{Bounds, EnvConfig, EnvSpec};
    use crate::eval::ActionBuf;
    let cases: [(&str, Vec<usize>, usize, usize, toml::Table); 4] = [
        (
            "dqn/cartpole-mlp-120-84/b128",
            vec![4],
            2,
            128,
            toml::toml! { batch_size = 128 },
        ),
        (
            "dqn/minatar-conv/b32",
            vec![10, 10, 4],
            6,
            32,
            toml::toml! { batch_size = 32
            [network]
            body = "minatar_conv" },
        ),
        (
            "dqn-sn[-2]/minatar-conv/b32",
            vec![10, 10, 4],
            6,
            32,
            toml::toml! { batch_size = 32
            [network]
            body = "minatar_conv"
            sn_layers = [-2] },
        ),
        (
            "dqn/nature-cnn/b32",
            vec![4, 84, 84],
            6,
            32,
            toml::toml! { batch_size = 32
            [network]
            body = "nature_cnn" },
        ),
    ];
    let mut figures = Vec::new();
    for (name, shape, n_actions, _batch, mut agent_cfg) in cases {
        if filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let obs_dim: usize = shape.iter().product();
        let spec = EnvSpec {
            config: EnvConfig::new("bench"),
            observation_space: Space::Box {
                shape: shape.clone(),
                low: Bounds::Scalar(0.0),
                high: Bounds::Scalar(1.0),
            },
            action_space: Space::Discrete { n: n_actions },
            max_episode_steps: 1000,
            num_tasks: 1,
            // Atari frames are bytes (and stored as such in the replay).
            observation_dtype: if shape.len() == 3 && shape[1] == 84 {
                crate::envs::ObsDtype::U8
            } else {
                crate::envs::ObsDtype::F32
            },
        };
        for (k, v) in toml::toml! { learning_starts = 0
        train_frequency = 1
        target_update_frequency = 1000
        buffer_size = 10000 }
        {
            agent_cfg.insert(k, v);
        }
        let mut agent = crate::agents::build("dqn", &agent_cfg, &spec, device, 0, BENCH_BUDGET)?;
        let mut rng = Rng::seed_from_u64(0);
        for _ in 0..2_000 {
            let obs: Vec<f32> = (0..obs_dim)
                .map(|_| f32::from(u8::from(rng.bernoulli(0.3))))
                .collect();
            let next: Vec<f32> = (0..obs_dim)
                .map(|_| f32::from(u8::from(rng.bernoulli(0.3))))
                .collect();
            let actions = ActionBuf::Discrete(vec![rng.below(n_actions)]);
            agent.observe(&Experience {
                obs: &obs,
                actions: &actions,
                rewards: &[rng.uniform_f32()],
                next_obs: &next,
                terminated: &[rng.bernoulli(0.05)],
                truncated: &[false],
            })?;
        }
        let mut step = 1u64;
        // warm-up
        for _ in 0..20 {
            agent.update(step)?;
            step += 1;
        }
        let ups = rate(budget, |k| {
            let k = (k / 100).max(1);
            for _ in 0..k {
                agent.update(step)?;
                step += 1;
            }
            Ok(k)
        })?;
        figures.push(Figure {
            name: format!("updates/{name}"),
            value: ups,
            unit: "updates/s".into(),
        });
    }
    figures.extend(bench_sac_updates(budget, device, filter)?);
    Ok(figures)
}

/// Updates/s of the SAC family on the reference sizes (obs 17, 6 actions, batch 256,
/// HalfCheetah-like): `sac` with 256-256 MLPs and `simbav2` at the paper's sizes (actor 1 block
/// × 128, critic 2 blocks × 512, 101 atoms). One update = sample, critic step, actor step and
/// temperature step (SAC's actor runs twice every second update: one per update on average),
/// Polyak target. Per-layer diagnostics are off (`diagnostics_interval = 0`).
pub fn bench_sac_updates(
    budget: Duration,
    device: &candle_core::Device,
    filter: Option<&str>,
) -> Result<Vec<Figure>> {
    use crate::agents::Experience;
    use crate::envs::{Bounds, EnvConfig, EnvSpec};
    use crate::eval::ActionBuf;
    let (obs_dim, act_dim) = (17usize, 6usize);
    let cases = [
        ("sac/mlp-256-256/b256", "sac"),
        ("simbav2/actor-1x128-critic-2x512/b256", "simbav2"),
    ];
    let mut figures = Vec::new();
    for (name, algo) in cases {
        if filter.is_some_and(|f| !name.contains(f) && !format!("updates/{name}").contains(f)) {
            continue;
        }
        let spec = EnvSpec {
            config: EnvConfig::new("bench"),
            observation_space: Space::Box {
                shape: vec![obs_dim],
                low: Bounds::Scalar(f32::NEG_INFINITY),
                high: Bounds::Scalar(f32::INFINITY),
            },
            action_space: Space::Box {
                shape: vec![act_dim],
                low: Bounds::Scalar(-1.0),
                high: Bounds::Scalar(1.0),
            },
            max_episode_steps: 1000,
            num_tasks: 1,
            observation_dtype: Default::default(),
        };
        let cfg = toml::toml! { learning_starts = 0
        batch_size = 256
        buffer_size = 10000
        diagnostics_interval = 0 };
        let mut agent = crate::agents::build(algo, &cfg, &spec, device, 0, BENCH_BUDGET)?;
        let mut rng = Rng::seed_from_u64(0);
        for _ in 0..2_000 {
            let obs: Vec<f32> = (0..obs_dim).map(|_| rng.normal() as f32).collect();
            let next: Vec<f32> = (0..obs_dim).map(|_| rng.normal() as f32).collect();
            let a: Vec<f32> = (0..act_dim)
                .map(|_| rng.uniform_range(-1.0, 1.0) as f32)
                .collect();
            agent.observe(&Experience {
                obs: &obs,
                actions: &ActionBuf::Continuous(a),
                rewards: &[rng.normal() as f32],
                next_obs: &next,
                terminated: &[false],
                truncated: &[false],
            })?;
        }
        let mut step = 1u64;
        for _ in 0..3 {
            agent.update(step)?;
            step += 1;
        }
        let ups = rate(budget, |_| {
            agent.update(step)?;
            step += 1;
            Ok(1)
        })?;
        figures.push(Figure {
            name: format!("updates/{name}"),
            value: ups,
            unit: "updates/s".into(),
        });
    }
    Ok(figures)
}

/// What `reincarnate bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// Environment steps/s ([`bench_envs`]).
    Envs,
    /// Agent updates/s ([`bench_updates`]).
    Updates,
    /// Transition-format write/read throughput ([`crate::history::bench_io`]).
    Io,
    /// AD transformer training and in-context evaluation ([`crate::ad::bench::bench_ad`]).
    Ad,
}

impl Suite {
    /// The environment and update suites measure small networks and single environments,
    /// which run fastest one core per op; the others split ops over the cores.
    pub fn cpu_parallelism(self) -> crate::device::CpuParallelism {
        match self {
            Suite::Envs | Suite::Updates => crate::device::CpuParallelism::AcrossOps,
            Suite::Io | Suite::Ad => crate::device::CpuParallelism::WithinOps,
        }
    }
}

/// Rows `bench io` writes and reads: `REINCARNATE_BENCH_ROWS`, default 10 million.
fn bench_io_rows() -> Result<usize> {
    match std::env::var("REINCARNATE_BENCH_ROWS") {
        Err(_) => Ok(10_000_000),
        Ok(v) => v.trim().parse().map_err(|_| {
            crate::Error::Config(format!(
                "REINCARNATE_BENCH_ROWS={v}: expected a number of rows, e.g. 1000000"
            ))
        }),
    }
}

/// Runs one suite, `budget` per measurement, keeping the figures whose name contains `filter`.
pub fn run_suite(
    suite: Suite,
    budget: Duration,
    filter: Option<&str>,
    device: &candle_core::Device,
    ad: &[crate::ad::bench::AdBenchSizes],
) -> Result<Vec<Figure>> {
    match suite {
        Suite::Envs => bench_envs(budget, filter),
        Suite::Updates => bench_updates(budget, device, filter),
        Suite::Ad => {
            let mut figures = Vec::new();
            for sizes in ad {
                figures.extend(crate::ad::bench::bench_ad(sizes, budget, device, filter)?);
            }
            Ok(figures)
        }
        Suite::Io => {
            let rows = bench_io_rows()?;
            // A scratch folder in the system temp dir, removed afterwards.
            let dir =
                std::env::temp_dir().join(format!("reincarnate-bench-io-{}", std::process::id()));
            crate::fs::create_dir_all(&dir)?;
            let r = crate::history::bench_io(rows, &dir);
            let _ = std::fs::remove_dir_all(&dir);
            r
        }
    }
}

/// Figures as a table, or as one JSON object per line.
pub fn render(figures: &[Figure], json: bool) -> Result<String> {
    if json {
        let mut out = String::new();
        for f in figures {
            let line = serde_json::to_string(f).map_err(|e| {
                crate::Error::Config(format!("figure `{}` does not serialise: {e}", f.name))
            })?;
            out.push_str(&line);
            out.push('\n');
        }
        return Ok(out);
    }
    let rows: Vec<Vec<String>> = figures
        .iter()
        .map(|f| vec![f.name.clone(), crate::report::si(f.value), f.unit.clone()])
        .collect();
    Ok(format!(
        "{}\n",
        crate::report::table(&["figure", "value", "unit"], &rows)
    ))
}
