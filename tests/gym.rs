//! The Gymnasium bridge (feature `gym`) against Gymnasium itself: the same observations,
//! rewards and flags as a Python loop, the same returns as the native environments, learning,
//! and clear errors. Needs the project's `.venv/` (`scripts/python-env.sh`, which the test
//! command runs first); outside CI a missing venv skips these tests with the reason, in CI it
//! fails them.
#![cfg(feature = "gym")]

#[path = "common/train_job.rs"]
mod train_job;

use reincarnate::envs::{Action, EnvConfig, TaskFamily};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn venv_python() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if p.is_file() {
        return Some(p);
    }
    let why = "the Gymnasium bridge tests need .venv/ (run scripts/python-env.sh)";
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    None
}

/// Runs `code` with the venv's Python and parses the JSON it prints last.
fn python(py: &Path, code: &str) -> Value {
    let o = Command::new(py).arg("-c").arg(code).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// The actions both loops take: a fixed pseudo-random sequence.
fn action_at(t: usize, discrete: Option<usize>, dim: usize) -> (usize, Vec<f32>) {
    let x = (t as u64)
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        >> 33;
    let a = discrete.map_or(0, |n| (x as usize) % n);
    let v = (0..dim)
        .map(|j| (((x >> (j * 7)) % 201) as f32 - 100.0) / 100.0)
        .collect();
    (a, v)
}

/// `steps` steps of `id` under the fixed actions, reset with `seed` and then continuing:
/// per step, the CRC-32 of the float32 observation bytes, the reward and the two flags.
fn rust_trace(id: &str, seed: u64, steps: usize) -> Vec<(u32, f64, bool, bool)> {
    rust_trace_of(&EnvConfig::new(id), seed, steps)
}

fn rust_trace_of(cfg: &EnvConfig, seed: u64, steps: usize) -> Vec<(u32, f64, bool, bool)> {
    let fam = TaskFamily::new(cfg).unwrap();
    let spec = fam.spec().clone();
    let mut env = fam.make(0).unwrap();
    let mut obs = vec![0f32; spec.obs_dim()];
    let crc = |o: &[f32]| {
        let bytes: Vec<u8> = o.iter().flat_map(|x| x.to_le_bytes()).collect();
        crc32fast::hash(&bytes)
    };
    env.reset(Some(seed), &mut obs);
    let mut out = vec![(crc(&obs), 0.0, false, false)];
    let n = spec.action_space.discrete_n();
    let dim = spec.action_space.flat_dim();
    for t in 0..steps {
        let (a, v) = action_at(t, n, dim);
        let action = if n.is_some() {
            Action::Discrete(a)
        } else {
            Action::Continuous(&v)
        };
        let s = env.step(action, &mut obs).unwrap();
        out.push((crc(&obs), f64::from(s.reward), s.terminated, s.truncated));
        if s.terminated || s.truncated {
            env.reset(None, &mut obs);
            out.push((crc(&obs), 0.0, false, false));
        }
    }
    out
}

/// The same loop in Python, with Gymnasium directly.
fn python_trace(py: &Path, gym_id: &str, seed: u64, steps: usize) -> Vec<(u32, f64, bool, bool)> {
    python_trace_of(py, &format!("gym.make({gym_id:?})"), seed, steps)
}

/// The loop in Python on the env `make` (a Python expression) builds.
fn python_trace_of(py: &Path, make: &str, seed: u64, steps: usize) -> Vec<(u32, f64, bool, bool)> {
    let code = format!(
        r#"
import json, zlib
import numpy as np, gymnasium as gym
try:
    import ale_py; gym.register_envs(ale_py)
except ImportError:
    pass
env = {make}
n = env.action_space.n if isinstance(env.action_space, gym.spaces.Discrete) else None
dim = 1 if n else int(np.prod(env.action_space.shape))
def crc(o): return zlib.crc32(np.ascontiguousarray(o, dtype=np.float32).tobytes())
def action_at(t):
    x = ((t * 6364136223846793005 + 1442695040888963407) % 2**64) >> 33
    if n: return x % n
    return np.array([((x >> (j * 7)) % 201) - 100 for j in range(dim)], dtype=np.float32) / np.float32(100.0)
obs, _ = env.reset(seed={seed})
out = [[crc(obs), 0.0, False, False]]
for t in range({steps}):
    obs, r, term, trunc, _ = env.step(action_at(t))
    out.append([crc(obs), float(np.float32(r)), bool(term), bool(trunc)])
    if term or trunc:
        obs, _ = env.reset()
        out.append([crc(obs), 0.0, False, False])
print(json.dumps(out))
"#
    );
    python(py, &code)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_u64().unwrap() as u32,
                r[1].as_f64().unwrap(),
                r[2].as_bool().unwrap(),
                r[3].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_bridge_steps_exactly_as_gymnasium_does() {
    let Some(py) = venv_python() else { return };
    for (gym_id, steps) in [
        ("CartPole-v1", 1000),
        ("Pendulum-v1", 1000),
        ("Hopper-v5", 1000),
        ("ALE/Breakout-v5", 1000),
    ] {
        let ours = rust_trace(&format!("gym:{gym_id}"), 7, steps);
        let theirs = python_trace(&py, gym_id, 7, steps);
        assert_eq!(ours.len(), theirs.len(), "{gym_id}: episode ends differ");
        for (t, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(
                a, b,
                "{gym_id}: record {t} (obs CRC, reward, terminated, truncated)"
            );
        }
        let ends = ours.iter().filter(|r| r.2 || r.3).count();
        assert!(
            ends >= 1 || gym_id == "ALE/Breakout-v5",
            "{gym_id}: no episode ended"
        );
    }
}

#[test]
fn the_atari_preset_is_gymnasiums_wrappers_and_keeps_game_scores() {
    let Some(py) = venv_python() else { return };
    let cfg = EnvConfig::new("gym:ALE/Breakout-v5")
        .with_overrides(&["preset=\"atari\"".to_string()])
        .unwrap();
    let fam = TaskFamily::new(&cfg).unwrap();
    let spec = fam.spec();
    assert_eq!(
        spec.observation_space.to_string(),
        "Box(0, 255, [4, 84, 84])",
        "4 stacked 84x84 grayscale frames"
    );
    assert_eq!(
        spec.max_episode_steps,
        reincarnate::envs::gym::ATARI_MAX_STEPS
    );
    let make = "gym.wrappers.TimeLimit(gym.wrappers.FrameStackObservation(\
        gym.wrappers.AtariPreprocessing(gym.make('ALE/Breakout-v5', frameskip=1, \
        repeat_action_probability=0.25), noop_max=30, frame_skip=4, screen_size=84, \
        terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False), 4), 27000)";
    let ours = rust_trace_of(&cfg, 3, 600);
    let theirs = python_trace_of(&py, make, 3, 600);
    assert_eq!(
        ours, theirs,
        "the preset's trace differs from Gymnasium's wrappers"
    );
    assert!(
        ours.iter().any(|r| r.1 > 0.0),
        "600 random steps of Breakout should score"
    );
    // An unknown preset is refused by name.
    let bad = EnvConfig::new("gym:ALE/Breakout-v5")
        .with_overrides(&["preset=\"atari2600\"".to_string()])
        .unwrap();
    let e = TaskFamily::new(&bad).err().unwrap().to_string();
    assert!(e.contains("atari2600") && e.contains("atari"), "{e}");
}

#[test]
fn atari_frames_stay_bytes_and_the_replay_keeps_one_frame_per_step() {
    if venv_python().is_none() {
        return;
    }
    use reincarnate::replay::ReplayBuffer;
    let cfg = EnvConfig::new("gym:ALE/Pong-v5")
        .with_overrides(&["preset=\"atari\"".to_string()])
        .unwrap();
    let fam = TaskFamily::new(&cfg).unwrap();
    let spec = fam.spec();
    assert_eq!(spec.observation_dtype, reincarnate::envs::ObsDtype::U8);
    // A small buffer that wraps, fed by the real preset (episodes, no-op starts, sticky
    // actions), against an f32 buffer of the same transitions.
    let capacity = 700;
    let mut bytes = ReplayBuffer::for_spec(capacity, spec, None, "test").unwrap();
    let mut floats = ReplayBuffer::new(capacity, spec.obs_dim(), None);
    let mut venv = reincarnate::envs::VecEnv::new(&fam, &[0], 5).unwrap();
    venv.reset();
    let mut episodes = 0;
    for t in 0..1_000 {
        let obs = venv.obs().to_vec();
        let a = (t * 7 + t / 5) % 6;
        venv.step(reincarnate::envs::vec_env::ActionBatch::Discrete(&[a]))
            .unwrap();
        let (r, term, trunc) = (venv.rewards()[0], venv.terminated()[0], venv.truncated()[0]);
        for rb in [&mut bytes, &mut floats] {
            rb.push(&obs, a as i64, &[], r, venv.next_obs(), term, trunc)
                .unwrap();
        }
        episodes += usize::from(term || trunc);
    }
    let a: Vec<_> = bytes.iter_ordered().map(|t| (t.0, t.4)).collect();
    let b: Vec<_> = floats.iter_ordered().map(|t| (t.0, t.4)).collect();
    assert!(
        a == b,
        "the byte replay does not rebuild the preset's observations"
    );
    // Whole observations only where an episode starts and for the oldest transition; every
    // next observation is its observation shifted by one new frame.
    let (obs_full, next_full) = bytes.byte_side_entries().unwrap();
    assert!(
        obs_full <= episodes + 1,
        "{obs_full} whole observations, {episodes} episodes"
    );
    assert_eq!(next_full, 0);
    let per_step = bytes.heap_bytes() as f64 / capacity as f64;
    assert!(
        per_step < 84.0 * 84.0 * 1.1,
        "{per_step} bytes per transition"
    );
}

#[test]
fn dqn_with_the_nature_cnn_trains_on_the_atari_preset() {
    if venv_python().is_none() {
        return;
    }
    let text = r#"
env = { id = "gym:ALE/Breakout-v5", preset = "atari" }
algo = "dqn"
[agent]
network = { body = "nature_cnn" }
reward_clip = 1.0
buffer_size = 2000
batch_size = 32
learning_starts = 200
train_frequency = 4
target_update_frequency = 200
[loop]
steps = 600
eval_interval = 600
eval_episodes = 1
checkpoint_interval = 0
progress = false
"#;
    let (_tmp, out, summary) = train_job::train(text, 0);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["agent"]["reward_clip"], 1.0);
    assert_eq!(config["env"]["config"]["preset"], "atari");
    assert_eq!(config["env"]["observation_dtype"], "uint8");
    assert!(summary.final_eval.is_some());
    // The checkpointed replay holds bytes, a frame per transition, not f32 observations.
    let replay = std::fs::read(out.join("replay.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&replay).unwrap();
    let names: Vec<String> = st.names().into_iter().map(String::from).collect();
    let frames = names
        .iter()
        .find(|n| n.ends_with("next_frame"))
        .unwrap_or_else(|| panic!("{names:?}"));
    let t = st.tensor(frames).unwrap();
    assert_eq!(
        (t.dtype(), t.shape()),
        (safetensors::Dtype::U8, &[2000, 84 * 84][..])
    );
    assert!(
        !names.iter().any(|n| n.ends_with(".obs") || n == "obs"),
        "{names:?}"
    );
    assert!(replay.len() < 2000 * 84 * 84 * 2, "{} bytes", replay.len());
}

fn random_returns(id: &str, episodes: usize) -> (f64, f64) {
    let out = Command::new(env!("CARGO_BIN_EXE_reincarnate"))
        .args(["eval", "--policy", "random", "--env", id, "--episodes"])
        .arg(episodes.to_string())
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    (
        v["mean_return"].as_f64().unwrap(),
        v["stderr"].as_f64().unwrap(),
    )
}

#[test]
fn random_returns_agree_with_the_native_environments() {
    if venv_python().is_none() {
        return;
    }
    for (gym_id, native) in [
        ("gym:CartPole-v1", "cartpole"),
        ("gym:Pendulum-v1", "pendulum"),
    ] {
        let (a, sa) = random_returns(gym_id, 300);
        let (b, sb) = random_returns(native, 300);
        let se = (sa * sa + sb * sb).sqrt();
        assert!(
            (a - b).abs() < 2.0 * se,
            "{gym_id} {a:.1} ± {sa:.1} vs {native} {b:.1} ± {sb:.1}"
        );
    }
}

#[test]
fn dqn_learns_gymnasium_cartpole_as_it_learns_the_native_one() {
    if venv_python().is_none() {
        return;
    }
    // The native test's recipe and threshold (tests/learning_dqn.rs), on gym:CartPole-v1.
    let (_tmp, out, _) = train_job::train(&train_job::cartpole_dqn("gym:CartPole-v1"), 0);
    let evals = train_job::evals(&out);
    let best = evals.iter().map(|e| e.1).fold(f64::MIN, f64::max);
    assert!(best >= 200.0, "best greedy return {best}: {evals:?}");
}

#[test]
fn bad_gymnasium_environments_exit_1_with_the_name_and_the_python_message() {
    if venv_python().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("user_envs.py"),
        r#"
import gymnasium as gym
import numpy as np

class Raising(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)
    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}
    def step(self, action):
        raise RuntimeError("the simulator exploded at step 0")

class DictObs(Raising):
    observation_space = gym.spaces.Dict({"a": gym.spaces.Discrete(3)})

def raising(**kwargs):
    return Raising()

def dict_obs(**kwargs):
    return DictObs()
"#,
    )
    .unwrap();
    let run_with = |env: &str, extra: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_reincarnate"))
            .args([
                "eval",
                "--policy",
                "random",
                "--env",
                env,
                "--episodes",
                "1",
            ])
            .args(extra)
            .env("PYTHONPATH", dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(1), "{env}: {err}");
        assert!(!err.contains("panicked"), "{env}: {err}");
        err
    };
    let run = |env: &str| run_with(env, &[]);
    let e = run("gym:NoSuchEnv-v0");
    assert!(
        e.contains("gym:NoSuchEnv-v0") && e.contains("NoSuchEnv"),
        "{e}"
    );
    assert!(
        e.contains("NameNotFound") || e.contains("doesn't exist"),
        "{e}"
    );
    let e = run("gym:user_envs:raising");
    assert!(
        e.contains("gym:user_envs:raising") && e.contains("the simulator exploded at step 0"),
        "{e}"
    );
    assert!(e.contains("Traceback") && e.contains("user_envs.py"), "{e}");
    // The same exception raised in an AsyncVectorEnv worker process.
    let e = run_with("gym:user_envs:raising", &["--set", "env.num_envs=2"]);
    assert!(
        e.contains("gym:user_envs:raising") && e.contains("the simulator exploded at step 0"),
        "{e}"
    );
    // num_envs is a Gymnasium option only.
    let o = Command::new(env!("CARGO_BIN_EXE_reincarnate"))
        .args(["eval", "--policy", "random", "--env", "cartpole"])
        .args(["--set", "env.num_envs=2"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("num_envs") && e.contains("does not apply"),
        "{e}"
    );
    let e = run("gym:user_envs:dict_obs");
    assert!(
        e.contains("gym:user_envs:dict_obs") && e.contains("Dict"),
        "{e}"
    );
    let e = run("gym:no_such_module:factory");
    assert!(e.contains("no_such_module"), "{e}");
    let e = run("gym:");
    assert!(e.contains("expected gym:ID"), "{e}");
}

/// Every step of a batch of environments, as the platform's VecEnv reports it.
type BatchTrace = Vec<(Vec<f32>, Vec<f32>, Vec<f32>, Vec<bool>, Vec<bool>)>;

fn batch_trace(cfg: &EnvConfig, n: usize, steps: usize) -> BatchTrace {
    use reincarnate::envs::vec_env::ActionBatch;
    let fam = TaskFamily::new(cfg).unwrap();
    let spec = fam.spec().clone();
    let mut venv = reincarnate::envs::VecEnv::new(&fam, &vec![0; n], 11).unwrap();
    venv.reset();
    let k = spec.action_space.discrete_n();
    let dim = spec.action_space.flat_dim();
    let mut out = vec![(venv.obs().to_vec(), vec![], vec![], vec![], vec![])];
    for t in 0..steps {
        let picks: Vec<(usize, Vec<f32>)> = (0..n).map(|i| action_at(t + 7 * i, k, dim)).collect();
        let discrete: Vec<usize> = picks.iter().map(|p| p.0).collect();
        let cont: Vec<f32> = picks.iter().flat_map(|p| p.1.clone()).collect();
        venv.step(match k {
            Some(_) => ActionBatch::Discrete(&discrete),
            None => ActionBatch::Continuous(&cont),
        })
        .unwrap();
        out.push((
            venv.obs().to_vec(),
            venv.next_obs().to_vec(),
            venv.rewards().to_vec(),
            venv.terminated().to_vec(),
            venv.truncated().to_vec(),
        ));
    }
    out
}

#[test]
fn worker_processes_step_exactly_as_envs_in_this_process() {
    if venv_python().is_none() {
        return;
    }
    // CartPole (episodes end often: same-step resets, true last observations), Pendulum
    // (continuous actions, truncation at 200), Hopper (3 envs over 2 workers, actions of 3
    // values) and the Atari preset (uint8 frames).
    for (id, overrides, steps, n) in [
        ("gym:CartPole-v1", vec![], 300, 2),
        ("gym:Pendulum-v1", vec![], 230, 2),
        ("gym:Hopper-v5", vec![], 80, 3),
        (
            "gym:ALE/Pong-v5",
            vec!["preset=\"atari\"".to_string()],
            120,
            2,
        ),
    ] {
        let local = EnvConfig::new(id).with_overrides(&overrides).unwrap();
        let mut workers = local.clone();
        workers.num_envs = Some(2);
        let a = batch_trace(&local, n, steps);
        let b = batch_trace(&workers, n, steps);
        let ends = a
            .iter()
            .flat_map(|r| r.3.iter().chain(&r.4))
            .filter(|&&e| e)
            .count();
        assert!(a == b, "{id}: worker processes differ from in-process envs");
        if id == "gym:CartPole-v1" || id == "gym:Pendulum-v1" {
            assert!(ends >= 2, "{id}: {ends} episode ends in {steps} steps");
        }
    }
    // Evaluation spreads its episodes over the workers: 5 episodes on 2 envs run 3 each.
    let mut cfg = EnvConfig::new("gym:CartPole-v1");
    cfg.num_envs = Some(2);
    let fam = TaskFamily::new(&cfg).unwrap();
    let mut random = reincarnate::eval::RandomPolicy::new(fam.spec().action_space.clone(), 0);
    let report =
        reincarnate::eval::evaluate(&fam, reincarnate::envs::TaskSet::All, 5, 0, &mut random)
            .unwrap();
    assert_eq!(report.episodes, 6, "{report:?}");
}

#[test]
fn envs_json_lists_the_importable_gymnasium_ids() {
    if venv_python().is_none() {
        return;
    }
    let o = Command::new(env!("CARGO_BIN_EXE_reincarnate"))
        .args(["envs", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    let gym = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "gym:ID")
        .expect("a gym:ID entry");
    assert_eq!(gym["bridge"], true);
    let ids: Vec<&str> = gym["importable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    for id in ["CartPole-v1", "Hopper-v5", "ALE/Breakout-v5"] {
        assert!(ids.contains(&id), "{id} is not listed");
    }
}

#[test]
fn an_sb3_teacher_scores_through_the_bridge_what_it_scored_in_its_library() {
    use reincarnate::agents::PolicyOutput;
    if venv_python().is_none() {
        return;
    }
    // The returns make.py measured with SB3's own predict(), episodes reset with seeds 1000 + i.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("expected.json")).unwrap())
            .unwrap();
    let theirs: Vec<f64> = expected["sb3_sac_pendulum"]["greedy_returns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let fam = TaskFamily::from_id("gym:Pendulum-v1").unwrap();
    let a =
        reincarnate::formats::sb3::Sb3Agent::read(&fixtures.join("sb3_sac_pendulum.zip")).unwrap();
    let (agent, _) = a.to_agent(fam.spec(), &candle_core::Device::Cpu).unwrap();
    let mut env = fam.make(0).unwrap();
    let mut obs = vec![0f32; 3];
    for (i, want) in theirs.iter().enumerate() {
        env.reset(Some(1000 + i as u64), &mut obs);
        let mut total = 0.0f64;
        loop {
            let PolicyOutput::GaussianMeanLogStd { mean, .. } = agent.policy_output(&obs).unwrap()
            else {
                panic!("a Gaussian policy")
            };
            let action = [2.0 * mean[0].tanh()];
            let s = env.step(Action::Continuous(&action), &mut obs).unwrap();
            total += f64::from(s.reward);
            if s.terminated || s.truncated {
                break;
            }
        }
        // float32 network arithmetic in two libraries: the same trajectory up to rounding.
        assert!(
            (total - want).abs() <= 1e-3 * want.abs().max(1.0),
            "episode {i}: {total} through the bridge, {want} in Stable-Baselines3"
        );
    }
}

#[test]
fn kwargs_reach_gymnasium_make() {
    if venv_python().is_none() {
        return;
    }
    let mut cfg = EnvConfig::new("gym:CartPole-v1");
    cfg = cfg
        .with_overrides(&["kwargs.max_episode_steps=7".to_string()])
        .unwrap();
    let fam = TaskFamily::new(&cfg).unwrap();
    assert_eq!(fam.spec().max_episode_steps, 7);
    let mut env = fam.make(0).unwrap();
    let mut obs = vec![0f32; 4];
    env.reset(Some(0), &mut obs);
    let mut steps = 0;
    loop {
        steps += 1;
        let s = env.step(Action::Discrete(steps % 2), &mut obs).unwrap();
        if s.terminated || s.truncated {
            assert!(s.truncated && steps == 7, "step {steps}: {s:?}");
            break;
        }
    }
}
