//! Other libraries' files read as the libraries themselves read them. The fixtures in
//! `tests/fixtures/formats/` were written by Stable-Baselines3, PyTorch, Flax, Minari and h5py
//! (`scripts/fixtures/make.sh`), and `expected.json` holds what those libraries computed on
//! fixed inputs; every test compares against those numbers.

#[path = "common/torch_pt.rs"]
#[allow(dead_code)]
mod torch_pt;

use candle_core::Device;
use reincarnate::agents::PolicyOutput;
use reincarnate::envs::{EnvConfig, TaskFamily, TaskSet};
use reincarnate::formats::{self, sb3::Sb3Agent, DatasetFormat};
use reincarnate::history::{Actions, Manifest, TransitionReader, Transitions};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats")
}

fn expected(key: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v[key].clone()
}

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn flat(v: &Value) -> Vec<f32> {
    matrix(v).concat()
}

/// Every value within 1e-5 of the library's, relative to its size (float32 arithmetic).
fn assert_close(ours: &[f32], theirs: &[f32], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
            "{what}[{i}]: ours {a}, the library's {b}"
        );
    }
}

fn spec(id: &str) -> reincarnate::envs::EnvSpec {
    TaskFamily::from_id(id).unwrap().spec().clone()
}

/// A teacher file imported without `--arch` on `env`, as `--teacher FILE` does.
fn import(path: &Path, env: &reincarnate::envs::EnvSpec) -> formats::Imported {
    reincarnate::reincarnation::teacher::import_file(path, None, env, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The error importing `path` on `env` gives.
fn import_err(path: &Path, env: &reincarnate::envs::EnvSpec) -> String {
    match reincarnate::reincarnation::teacher::import_file(path, None, env, &Device::Cpu) {
        Ok(_) => panic!("{} imported on `{}`", path.display(), env.id()),
        Err(e) => e.to_string(),
    }
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_reincarnate"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

fn cli_err(args: &[&str]) -> String {
    let o = cli(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    err
}

#[test]
fn sb3_dqn_q_values_and_greedy_returns_equal_the_librarys() {
    let e = expected("sb3_dqn_cartpole");
    let zip = fixtures().join("sb3_dqn_cartpole.zip");
    let a = Sb3Agent::read(&zip).unwrap();
    assert_eq!(a.version, "2.6.0");
    let (agent, mapping) = a.to_agent(&spec("cartpole"), &Device::Cpu).unwrap();
    assert_eq!(mapping.len(), 6);
    let PolicyOutput::QValues(q) = agent.policy_output(&flat(&e["obs"])).unwrap() else {
        panic!("a DQN teacher gives Q-values");
    };
    assert_close(&q, &flat(&e["q_values"]), "Q-values");
    // The library's greedy returns (10 Gymnasium episodes) against the native CartPole's.
    let theirs: Vec<f64> = e["greedy_returns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let report = reincarnate::reincarnation::eval_teacher(
        &zip.display().to_string(),
        None,
        &EnvConfig::new("cartpole"),
        TaskSet::Test,
        10,
        3,
        &Device::Cpu,
    )
    .unwrap();
    let mean = theirs.iter().sum::<f64>() / theirs.len() as f64;
    assert_eq!(
        mean, 500.0,
        "the fixture's teacher balances to the time limit"
    );
    assert_eq!(report.mean_return, mean);
}

#[test]
fn sb3_sac_gaussian_critics_and_entropy_coefficient_equal_the_librarys() {
    let e = expected("sb3_sac_pendulum");
    let zip = fixtures().join("sb3_sac_pendulum.zip");
    let a = Sb3Agent::read(&zip).unwrap();
    let (mut agent, _) = a.to_agent(&spec("pendulum"), &Device::Cpu).unwrap();
    let obs = flat(&e["obs"]);
    let PolicyOutput::GaussianMeanLogStd { mean, log_std } = agent.policy_output(&obs).unwrap()
    else {
        panic!("a SAC teacher gives a Gaussian");
    };
    assert_close(&mean, &flat(&e["mean"]), "mean");
    assert_close(&log_std, &flat(&e["log_std"]), "log_std");
    // Deterministic actions: tanh(mean) on Pendulum's [-2, 2] box.
    let actions: Vec<f32> = mean.iter().map(|m| 2.0 * m.tanh()).collect();
    assert_close(&actions, &flat(&e["actions"]), "actions");
    let sac = agent.as_sac_mut().unwrap();
    let q = sac
        .critic_values(&obs, &flat(&e["critic_actions"]))
        .unwrap();
    assert_close(&q[0], &flat(&e["q1"]), "critic 0");
    assert_close(&q[1], &flat(&e["q2"]), "critic 1");
    let alpha = sac.alpha().unwrap();
    let want = e["ent_coef"].as_f64().unwrap();
    assert!(
        (alpha - want).abs() < 1e-6 * want.max(1.0),
        "{alpha} vs {want}"
    );
}

#[test]
fn sb3_sac_greedy_return_on_native_pendulum_matches_gymnasiums() {
    let e = expected("sb3_sac_pendulum");
    let theirs: Vec<f64> = e["greedy_returns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let report = reincarnate::reincarnation::eval_teacher(
        &fixtures()
            .join("sb3_sac_pendulum.zip")
            .display()
            .to_string(),
        None,
        &EnvConfig::new("pendulum"),
        TaskSet::Test,
        30,
        5,
        &Device::Cpu,
    )
    .unwrap();
    let n = theirs.len() as f64;
    let mean = theirs.iter().sum::<f64>() / n;
    let var = theirs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    // Different start states (seeds): the means agree within 3 combined standard errors.
    let se = (var / n + report.stderr.powi(2)).sqrt();
    assert!(
        (report.mean_return - mean).abs() < 3.0 * se,
        "native {} ± {}, Gymnasium {mean} ± {}",
        report.mean_return,
        report.stderr,
        (var / n).sqrt()
    );
    assert!(
        report.mean_return > -400.0,
        "a trained swing-up, not random (~-1200)"
    );
}

#[test]
fn cleanrl_dqn_model_loads_without_arch_and_gives_the_same_q_values() {
    let e = expected("cleanrl_dqn_cartpole");
    let path = fixtures().join("cleanrl_dqn_cartpole.cleanrl_model");
    let (agent, mapping) = import(&path, &spec("cartpole"));
    assert_eq!(
        mapping.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
        [
            "network.0.weight",
            "network.0.bias",
            "network.2.weight",
            "network.2.bias",
            "network.4.weight",
            "network.4.bias"
        ]
    );
    let PolicyOutput::QValues(q) = agent.policy_output(&flat(&e["obs"])).unwrap() else {
        panic!("Q-values");
    };
    assert_close(&q, &flat(&e["q_values"]), "Q-values");
    // On an env whose spaces do not fit, the error names the layer and both sizes.
    let err = import_err(&path, &spec("minatar/breakout"));
    assert!(
        err.contains("`network.0.weight` takes 4 inputs") && err.contains("400"),
        "{err}"
    );
}

#[test]
fn sb3_qrdqn_and_td3_agents_give_their_librarys_q_values_actions_and_critics() {
    // QR-DQN: the mean over quantiles, through one averaged output layer.
    let e = expected("sb3_qrdqn_cartpole");
    let a = Sb3Agent::read(&fixtures().join("sb3_qrdqn_cartpole.zip")).unwrap();
    assert!(a.summary().contains("averaged over the quantiles"));
    let (agent, mapping) = a.to_agent(&spec("cartpole"), &Device::Cpu).unwrap();
    assert_eq!(mapping[4].0, "quantile_net.quantile_net.4.weight");
    assert_eq!(
        mapping[4].2,
        [2, 64],
        "25 quantiles x 2 actions averaged to 2 rows"
    );
    let PolicyOutput::QValues(q) = agent.policy_output(&flat(&e["obs"])).unwrap() else {
        panic!("a QR-DQN teacher gives Q-values");
    };
    assert_close(&q, &flat(&e["q_values"]), "QR-DQN Q-values");
    let greedy: Vec<i64> = q.chunks(2).map(|r| i64::from(r[1] > r[0])).collect();
    let theirs: Vec<i64> = e["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    assert_eq!(greedy, theirs, "QR-DQN's greedy actions");

    // TD3: the deterministic actor's actions and both critics.
    let e = expected("sb3_td3_pendulum");
    let a = Sb3Agent::read(&fixtures().join("sb3_td3_pendulum.zip")).unwrap();
    let (mut agent, _) = a.to_agent(&spec("pendulum"), &Device::Cpu).unwrap();
    let obs = flat(&e["obs"]);
    let PolicyOutput::GaussianMeanLogStd { mean, log_std } = agent.policy_output(&obs).unwrap()
    else {
        panic!("a TD3 teacher gives a Gaussian");
    };
    let actions: Vec<f32> = mean.iter().map(|m| 2.0 * m.tanh()).collect();
    assert_close(&actions, &flat(&e["actions"]), "TD3 actions");
    assert!(log_std.iter().all(|&l| (l - 0.1f32.ln()).abs() < 1e-6));
    let sac = agent.as_sac_mut().unwrap();
    let q = sac
        .critic_values(&obs, &flat(&e["critic_actions"]))
        .unwrap();
    assert_close(&q[0], &flat(&e["q1"]), "TD3 critic 0");
    assert_close(&q[1], &flat(&e["q2"]), "TD3 critic 1");
}

#[test]
fn cleanrl_c51_and_sac_models_give_their_librarys_values() {
    // c51.py: {"model_weights": ..., "args": ...}; the support comes from the `atoms` buffer.
    let e = expected("cleanrl_c51_cartpole");
    let path = fixtures().join("cleanrl_c51_cartpole.cleanrl_model");
    let (agent, mapping) = import(&path, &spec("cartpole"));
    assert_eq!(mapping[4].0, "network.4.weight");
    assert_eq!(mapping[4].2, [202, 84], "2 actions x 101 atoms");
    let PolicyOutput::QValues(q) = agent.policy_output(&flat(&e["obs"])).unwrap() else {
        panic!("a C51 teacher gives Q-values");
    };
    assert_close(&q, &flat(&e["q_values"]), "C51 Q-values");
    let err = import_err(&path, &spec("minatar/breakout"));
    assert!(err.contains("101 atoms"), "{err}");

    // sac_continuous_action.py's networks saved as (actor, qf1, qf2).
    let e = expected("cleanrl_sac_pendulum");
    let path = fixtures().join("cleanrl_sac_pendulum.cleanrl_model");
    let (mut agent, mapping) = import(&path, &spec("pendulum"));
    assert!(mapping
        .iter()
        .any(|m| m.0 == "2.fc3.weight" && m.1 == "critic.1.2.weight"));
    let obs = flat(&e["obs"]);
    let PolicyOutput::GaussianMeanLogStd { mean, log_std } = agent.policy_output(&obs).unwrap()
    else {
        panic!("a SAC teacher gives a Gaussian");
    };
    assert_close(&mean, &flat(&e["mean"]), "mean");
    assert_close(
        &log_std,
        &flat(&e["log_std"]),
        "log_std (tanh-bounded on [-5, 2])",
    );
    let actions: Vec<f32> = mean.iter().map(|m| 2.0 * m.tanh()).collect();
    assert_close(&actions, &flat(&e["actions"]), "actions");
    // CleanRL's critics take Pendulum's actions in [-2, 2]; the platform's take them in [-1, 1].
    let unit: Vec<f32> = flat(&e["critic_env_actions"])
        .iter()
        .map(|a| a / 2.0)
        .collect();
    let q = agent
        .as_sac_mut()
        .unwrap()
        .critic_values(&obs, &unit)
        .unwrap();
    assert_close(&q[0], &flat(&e["q1"]), "critic 0");
    assert_close(&q[1], &flat(&e["q2"]), "critic 1");
    let err = import_err(&path, &spec("cartpole"));
    assert!(err.contains("continuous actions"), "{err}");
}

/// An environment of 4 stacked 44×44 uint8 frames and 4 actions (the fixtures' image size).
fn frames_spec() -> reincarnate::envs::EnvSpec {
    use reincarnate::envs::{Bounds, Space};
    reincarnate::envs::EnvSpec {
        config: EnvConfig::new("frames"),
        observation_space: Space::Box {
            shape: vec![4, 44, 44],
            low: Bounds::Scalar(0.0),
            high: Bounds::Scalar(255.0),
        },
        action_space: Space::Discrete { n: 4 },
        max_episode_steps: 100,
        num_tasks: 1,
        observation_dtype: reincarnate::envs::ObsDtype::U8,
    }
}

/// The Nature DQN network from SB3's CnnPolicy, CleanRL's PyTorch `dqn_atari.py` layout and
/// the Flax file of CleanRL's JAX scripts (HWIO kernels, channel-last flattening): each gives
/// its library's Q-values on the same uint8 frames.
#[test]
fn nature_cnn_teachers_from_sb3_cleanrl_and_flax_give_their_librarys_q_values() {
    for (file, key, obs_file) in [
        ("sb3_dqn_cnn.zip", "sb3_dqn_cnn", "sb3_dqn_cnn_obs.u8"),
        (
            "cleanrl_dqn_atari.cleanrl_model",
            "cleanrl_dqn_atari",
            "cleanrl_dqn_atari_obs.u8",
        ),
        (
            "flax_nature_cnn.cleanrl_model",
            "flax_nature_cnn",
            "flax_nature_cnn_obs.u8",
        ),
    ] {
        let e = expected(key);
        let obs: Vec<f32> = std::fs::read(fixtures().join(obs_file))
            .unwrap()
            .into_iter()
            .map(f32::from)
            .collect();
        assert_eq!(obs.len(), 3 * 4 * 44 * 44);
        let (agent, mapping) = import(&fixtures().join(file), &frames_spec());
        assert_eq!(
            mapping.len(),
            10,
            "{file}: 3 convolutions and 2 linear layers"
        );
        assert_eq!(mapping[0].2, [32, 4, 8, 8], "{file}: OIHW");
        let PolicyOutput::QValues(q) = agent.policy_output(&obs).unwrap() else {
            panic!("Q-values");
        };
        assert_close(&q, &flat(&e["q_values"]), file);
    }
    // The same network on observations it does not fit: an error naming the file, no panic.
    let e = import_err(
        &fixtures().join("flax_nature_cnn.cleanrl_model"),
        &spec("cartpole"),
    );
    assert!(
        e.contains("flax_nature_cnn") && e.contains("[channels, height, width]"),
        "{e}"
    );
}

fn read_dataset(folder: &Path) -> (Manifest, Transitions) {
    let m = Manifest::load(folder).unwrap();
    assert_eq!(m.runs.len(), 1);
    let t = TransitionReader::open(&folder.join(&m.runs[0].file))
        .unwrap()
        .read_all()
        .unwrap();
    (m, t)
}

/// Steps of each episode, in order.
fn episode_lengths(t: &Transitions) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for (i, &ep) in t.episode.iter().enumerate() {
        if ep as usize == out.len() {
            out.push(0);
        }
        assert_eq!(t.step[i] as u64, out[ep as usize], "steps count from 0");
        out[ep as usize] += 1;
    }
    out
}

#[test]
fn minari_datasets_in_both_backends_import_with_the_librarys_counts_and_sums() {
    let dir = tempfile::tempdir().unwrap();
    for backend in ["hdf5", "arrow"] {
        let e = expected(&format!("minari_{backend}"));
        let out = dir.path().join(backend);
        let (_, report) = formats::import_dataset(
            DatasetFormat::Minari,
            &fixtures().join(format!("minari_{backend}")),
            &out,
            None,
        )
        .unwrap();
        assert_eq!(report.dropped_rows, 0);
        let (m, t) = read_dataset(&out);
        assert_eq!(m.env.id(), "cartpole", "CartPole-v1 maps to the native env");
        let steps: Vec<u64> = e["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(episode_lengths(&t), steps, "{backend}: episode boundaries");
        // Σ observations over each episode's steps + 1 observations, as Minari iterates them.
        let d = 4;
        let mut obs_sum: f64 = t.obs.iter().map(|&x| f64::from(x)).sum();
        for (i, (&term, &trunc)) in t.terminated.iter().zip(&t.truncated).enumerate() {
            if term || trunc {
                obs_sum += t.next_obs[i * d..(i + 1) * d]
                    .iter()
                    .map(|&x| f64::from(x))
                    .sum::<f64>();
            }
        }
        let want = e["obs_sum"].as_f64().unwrap();
        assert!(
            (obs_sum - want).abs() < 1e-3,
            "{backend}: {obs_sum} vs {want}"
        );
        let rewards: f64 = t.reward.iter().map(|&x| f64::from(x)).sum();
        assert_eq!(rewards, e["reward_sum"].as_f64().unwrap());
        let Actions::Discrete(a) = &t.action else {
            panic!("discrete actions")
        };
        assert_eq!(a.iter().sum::<i64>(), e["action_sum"].as_i64().unwrap());
        let count = |v: &[bool]| v.iter().filter(|&&x| x).count() as i64;
        assert_eq!(count(&t.terminated), e["terminations"].as_i64().unwrap());
        assert_eq!(count(&t.truncated), e["truncations"].as_i64().unwrap());
        let n = t.reward.len();
        assert_close(
            &t.next_obs[(n - 1) * d..],
            &flat(&Value::Array(vec![e["last_next_obs"].clone()])),
            "the last next observation",
        );
        // Inside an episode each next observation is the following row's observation.
        for i in 0..n - 1 {
            if t.episode[i] == t.episode[i + 1] {
                assert_eq!(
                    t.next_obs[i * d..(i + 1) * d],
                    t.obs[(i + 1) * d..(i + 2) * d]
                );
            }
        }
    }
}

#[test]
fn d4rl_files_import_with_h5pys_sums_and_timeouts_without_next_observations_are_dropped() {
    let e = expected("d4rl_pendulum");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d4rl");
    let (_, report) = formats::import_dataset(
        DatasetFormat::D4rl,
        &fixtures().join("d4rl_pendulum.hdf5"),
        &out,
        Some("pendulum"),
    )
    .unwrap();
    let (_, t) = read_dataset(&out);
    let rows = e["rows"].as_u64().unwrap() as usize;
    assert_eq!(t.reward.len(), rows);
    let sum = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>();
    let near = |a: f64, b: &Value| (a - b.as_f64().unwrap()).abs() < 1e-3;
    assert!(near(sum(&t.obs), &e["obs_sum"]));
    assert!(near(sum(&t.next_obs), &e["next_obs_sum"]));
    assert!(near(sum(&t.reward), &e["reward_sum"]));
    let Actions::Continuous(a) = &t.action else {
        panic!("continuous actions")
    };
    assert!(near(sum(a), &e["action_sum"]));
    assert_eq!(
        t.truncated.iter().filter(|&&x| x).count() as u64,
        e["timeouts"].as_u64().unwrap()
    );
    assert_eq!(episode_lengths(&t), vec![200; 4]);
    assert_eq!(report.dropped_rows, 0);

    // Without `next_observations`, each timed-out last step has no next observation: it is
    // dropped and counted, and the step before it ends the episode, truncated.
    let out2 = dir.path().join("d4rl-no-next");
    let (_, report) = formats::import_dataset(
        DatasetFormat::D4rl,
        &fixtures().join("d4rl_pendulum_no_next.hdf5"),
        &out2,
        Some("pendulum"),
    )
    .unwrap();
    assert_eq!(report.dropped_rows, 4);
    assert_eq!(report.conversions, ["rewards: float64 → float32"]);
    let (_, t2) = read_dataset(&out2);
    assert_eq!(episode_lengths(&t2), vec![199; 4]);
    assert_eq!(t2.truncated.iter().filter(|&&x| x).count(), 4);
    // The same transitions as the full file's, less each episode's last.
    for ep in 0..4 {
        for s in 0..199 {
            let (i, j) = (ep * 199 + s, ep * 200 + s);
            assert_eq!(t2.obs[i * 3..(i + 1) * 3], t.obs[j * 3..(j + 1) * 3]);
            assert_eq!(
                t2.next_obs[i * 3..(i + 1) * 3],
                t.next_obs[j * 3..(j + 1) * 3]
            );
        }
    }
}

#[test]
fn the_sb3_teacher_needs_no_arch_and_qdagger_ends_at_teacher_level() {
    let dir = tempfile::tempdir().unwrap();
    let zip = fixtures().join("sb3_dqn_cartpole.zip");
    let minari = fixtures().join("minari_arrow");
    for (method, data, out) in [
        ("qdagger", None, "q"),
        ("qdagger", Some(&minari), "qm"),
        ("pretrain", Some(&minari), "pm"),
    ] {
        let out = dir.path().join(out);
        let mut args = vec![
            "reincarnate".to_string(),
            "--teacher".into(),
            zip.display().to_string(),
            "--method".into(),
            method.into(),
            "--student".into(),
            "dqn".into(),
            "--env".into(),
            "cartpole".into(),
            "--steps".into(),
            "8000".into(),
            "--out".into(),
            out.display().to_string(),
        ];
        if let Some(d) = data {
            args.extend(["--teacher-data".into(), d.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = cli(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let s: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("reincarnation.json")).unwrap())
                .unwrap();
        assert_eq!(s["teacher_return"], 500.0);
        // QDagger distils the teacher: it must end at its level. Pretraining on 2,929 teacher
        // transitions only has to run on the imported data.
        let score = s["final_normalised"].as_f64().unwrap();
        if method == "qdagger" {
            assert!(score >= 0.9, "{method} with {data:?}: final score {score}");
        }
        if data.is_some() {
            let steps: u64 = expected("minari_arrow")["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .sum();
            assert_eq!(s["teacher_data_transitions"], steps, "the Minari episodes");
        }
    }
}

#[test]
fn inspect_shows_where_each_tensor_of_an_sb3_agent_goes() {
    let o = cli(&[
        "inspect",
        &fixtures()
            .join("sb3_sac_pendulum.zip")
            .display()
            .to_string(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for want in [
        "Stable-Baselines3 SAC agent",
        "SB3 2.6.0",
        "maps onto `pendulum`",
        "actor.mu.weight → actor.mean.weight [1, 64]",
        "critic.qf1.4.bias → critic.1.2.bias [1]",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
}

/// Copies the SB3 DQN zip with `replace` entries swapped in (and `drop` left out).
fn sb3_variant(out: &Path, replace: &[(&str, Vec<u8>)], drop: &[&str]) {
    use std::io::Read;
    let src = std::fs::File::open(fixtures().join("sb3_dqn_cartpole.zip")).unwrap();
    let mut zip = zip::ZipArchive::new(src).unwrap();
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        let name = f.name().unwrap().to_string();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        if drop.contains(&name.as_str()) {
            continue;
        }
        match replace.iter().find(|(n, _)| *n == name) {
            Some((_, b)) => entries.push((name, b.clone())),
            None => entries.push((name, bytes)),
        }
    }
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    torch_pt::write_archive(out, &refs);
}

fn sb3_data() -> Value {
    use std::io::Read;
    let f = std::fs::File::open(fixtures().join("sb3_dqn_cartpole.zip")).unwrap();
    let mut z = zip::ZipArchive::new(f).unwrap();
    let mut s = String::new();
    z.by_name("data").unwrap().read_to_string(&mut s).unwrap();
    serde_json::from_str(&s).unwrap()
}

#[test]
fn bad_sb3_zips_are_refused_naming_file_and_field_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let eval = |path: &Path, env: &str| {
        cli_err(&[
            "eval",
            "--policy",
            &path.display().to_string(),
            "--env",
            env,
        ])
    };
    // A policy.pth whose pickle would call os.system("touch PWNED") under Python.
    let mut pkl = vec![0x80, 2, b'c'];
    pkl.extend_from_slice(b"os\nsystem\n");
    pkl.push(b'X');
    let cmd = format!("touch {}", p("PWNED").display());
    pkl.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    pkl.extend_from_slice(cmd.as_bytes());
    pkl.extend_from_slice(&[0x85, b'R', b'.']);
    torch_pt::write_archive(
        &p("evil.pth"),
        &[("archive/data.pkl", &pkl), ("archive/version", b"3\n")],
    );
    sb3_variant(
        &p("evil.zip"),
        &[("policy.pth", std::fs::read(p("evil.pth")).unwrap())],
        &[],
    );
    let e = eval(&p("evil.zip"), "cartpole");
    assert!(
        e.contains("evil.zip") && e.contains("`os.system`") && e.contains("policy.pth"),
        "{e}"
    );
    assert!(!p("PWNED").exists());
    // Truncated at several lengths.
    let bytes = std::fs::read(fixtures().join("sb3_dqn_cartpole.zip")).unwrap();
    for cut in [10, 1000, bytes.len() / 2, bytes.len() - 30] {
        std::fs::write(p("cut.zip"), &bytes[..cut]).unwrap();
        let e = eval(&p("cut.zip"), "cartpole");
        assert!(e.contains("cut.zip"), "{e}");
    }
    // Spaces of another environment: both named.
    let e = eval(&fixtures().join("sb3_dqn_cartpole.zip"), "pendulum");
    assert!(
        e.contains("Box([4])") && e.contains("`pendulum`'s Box([3])") && e.contains("Discrete(2)"),
        "{e}"
    );
    // What the mapping cannot honour is refused by name.
    let mut data = sb3_data();
    data["policy_kwargs"]["activation_fn"] =
        Value::String("<class 'torch.nn.modules.activation.Tanh'>".into());
    sb3_variant(
        &p("tanh.zip"),
        &[("data", data.to_string().into_bytes())],
        &[],
    );
    assert!(eval(&p("tanh.zip"), "cartpole")
        .contains("activation_fn` is <class 'torch.nn.modules.activation.Tanh'>"));
    let mut data = sb3_data();
    data["policy_class"]["__module__"] = Value::String("stable_baselines3.common.policies".into());
    sb3_variant(
        &p("ppo.zip"),
        &[("data", data.to_string().into_bytes())],
        &[],
    );
    assert!(eval(&p("ppo.zip"), "cartpole").contains("`stable_baselines3.common.policies`"));
    let mut data = sb3_data();
    data["observation_space"] =
        serde_json::json!({":type:": "<class 'gymnasium.spaces.dict.Dict'>"});
    sb3_variant(
        &p("dict.zip"),
        &[("data", data.to_string().into_bytes())],
        &[],
    );
    assert!(eval(&p("dict.zip"), "cartpole").contains("only Box and Discrete"));
    sb3_variant(&p("nopolicy.zip"), &[], &["policy.pth"]);
    assert!(eval(&p("nopolicy.zip"), "cartpole").contains("no `policy.pth` entry"));
    sb3_variant(&p("notjson.zip"), &[("data", b"{not json".to_vec())], &[]);
    assert!(eval(&p("notjson.zip"), "cartpole").contains("entry `data` is not JSON"));
    // A VecNormalize agent: its statistics are not in the zip.
    let vn = dir.path().join("vn");
    std::fs::create_dir(&vn).unwrap();
    std::fs::copy(fixtures().join("sb3_dqn_cartpole.zip"), vn.join("a.zip")).unwrap();
    std::fs::write(vn.join("vec_normalize.pkl"), b"x").unwrap();
    assert!(eval(&vn.join("a.zip"), "cartpole").contains("VecNormalize"));
    // --arch is for bare state dicts.
    let e = cli_err(&[
        "eval",
        "--policy",
        &fixtures()
            .join("sb3_dqn_cartpole.zip")
            .display()
            .to_string(),
        "--arch",
        "mlp:64,64",
        "--env",
        "cartpole",
    ]);
    assert!(e.contains("names its own network"), "{e}");
}

/// Truncated or corrupted HDF5, Arrow and msgpack files, and datasets that do not fit the
/// environment: exit 1 naming the file, never a panic.
#[test]
fn bad_datasets_and_model_files_exit_1_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let import = |format: &str, src: &Path, env: Option<&str>| {
        let out = p("out");
        let mut args = vec![
            "dataset".to_string(),
            "import".into(),
            format.into(),
            src.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        if let Some(e) = env {
            args.extend(["--env".into(), e.into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = cli_err(&args);
        assert!(!out.exists(), "a failed import leaves no dataset");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("importing"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "a failed import leaves no temporary folder"
        );
        e
    };
    let d4rl = std::fs::read(fixtures().join("d4rl_pendulum.hdf5")).unwrap();
    for cut in [0, 100, 2000, d4rl.len() / 2, d4rl.len() - 100] {
        std::fs::write(p("cut.hdf5"), &d4rl[..cut]).unwrap();
        let e = import("d4rl", &p("cut.hdf5"), Some("pendulum"));
        assert!(e.contains("cut.hdf5"), "{e}");
    }
    // Flipped bytes through the file: an error or a clean import, never a panic or a hang.
    let mut rng = 12345u64;
    for _ in 0..40 {
        let mut b = d4rl.clone();
        for _ in 0..8 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (rng >> 33) as usize % b.len();
            b[i] ^= (rng >> 13) as u8 | 1;
        }
        std::fs::write(p("flip.hdf5"), &b).unwrap();
        let out = p("flip-out");
        let o = cli(&[
            "dataset",
            "import",
            "d4rl",
            &p("flip.hdf5").display().to_string(),
            "--out",
            &out.display().to_string(),
            "--env",
            "pendulum",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(matches!(o.status.code(), Some(0 | 1)), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        let _ = std::fs::remove_dir_all(&out);
    }
    // D4RL columns that do not fit the env, named with both sides.
    let e = import(
        "d4rl",
        &fixtures().join("d4rl_pendulum.hdf5"),
        Some("cartpole"),
    );
    assert!(
        e.contains("`/observations` rows hold 3 values") && e.contains("`cartpole`"),
        "{e}"
    );
    let e = import("d4rl", &fixtures().join("d4rl_pendulum.hdf5"), None);
    assert!(e.contains("pass --env"), "{e}");
    // A Minari dataset whose spaces do not match the env.
    let e = import("minari", &fixtures().join("minari_hdf5"), Some("pendulum"));
    assert!(
        e.contains("metadata.json")
            && e.contains("recorded on `CartPole-v1`")
            && e.contains("`pendulum`'s"),
        "{e}"
    );
    // A Minari folder with a truncated episode file, and with broken metadata.
    let copy = |name: &str| {
        let to = p(name);
        let _ = std::fs::remove_dir_all(&to);
        std::fs::create_dir_all(to.join("data")).unwrap();
        to
    };
    let m = copy("m-hdf5");
    std::fs::copy(
        fixtures().join("minari_hdf5/data/metadata.json"),
        m.join("data/metadata.json"),
    )
    .unwrap();
    let h5 = std::fs::read(fixtures().join("minari_hdf5/data/main_data.hdf5")).unwrap();
    std::fs::write(m.join("data/main_data.hdf5"), &h5[..h5.len() / 3]).unwrap();
    assert!(import("minari", &m, None).contains("main_data.hdf5"));
    let a = copy("m-arrow");
    for entry in std::fs::read_dir(fixtures().join("minari_arrow/data")).unwrap() {
        let entry = entry.unwrap();
        let to = a.join("data").join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(entry.path()).unwrap() {
                let f = f.unwrap();
                let mut bytes = std::fs::read(f.path()).unwrap();
                if f.file_name() == "part-0.arrow" {
                    bytes.truncate(bytes.len() / 2);
                }
                std::fs::write(to.join(f.file_name()), bytes).unwrap();
            }
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
    assert!(import("minari", &a, None).contains("part-0.arrow"));
    let b = copy("m-meta");
    std::fs::write(b.join("data/metadata.json"), b"{\"data_format\": \"hdf5\"").unwrap();
    assert!(import("minari", &b, None).contains("metadata.json"));
    std::fs::write(
        b.join("data/metadata.json"),
        br#"{"data_format": "hdf5", "observation_space": "{\"type\": \"Dict\"}", "action_space": "{}"}"#,
    )
    .unwrap();
    assert!(import("minari", &b, None).contains("Dict space"));
    // Truncated Flax msgpack files name the file and the offset.
    let flax = std::fs::read(fixtures().join("flax_nature_cnn.cleanrl_model")).unwrap();
    for cut in [0, 1, 20, 1000, flax.len() / 2, flax.len() - 1] {
        std::fs::write(p("cut.msgpack"), &flax[..cut]).unwrap();
        let e = cli_err(&[
            "eval",
            "--policy",
            &p("cut.msgpack").display().to_string(),
            "--env",
            "minatar/breakout",
        ]);
        assert!(
            e.contains("cut.msgpack") && e.contains("not a Flax msgpack file"),
            "{e}"
        );
    }
    // CleanRL's nested files: truncated copies, and a C51 support that is not a linspace.
    let eval = |path: &Path, env: &str| {
        cli_err(&[
            "eval",
            "--policy",
            &path.display().to_string(),
            "--env",
            env,
        ])
    };
    for (name, env) in [
        ("cleanrl_c51_cartpole.cleanrl_model", "cartpole"),
        ("cleanrl_sac_pendulum.cleanrl_model", "pendulum"),
    ] {
        let bytes = std::fs::read(fixtures().join(name)).unwrap();
        for cut in [0, 100, bytes.len() / 2, bytes.len() - 10] {
            let cut_path = p(&format!("cut-{cut}-{name}"));
            std::fs::write(&cut_path, &bytes[..cut]).unwrap();
            let e = eval(&cut_path, env);
            assert!(e.contains(&cut_path.display().to_string()), "{e}");
        }
    }
    let mut zip = zip::ZipArchive::new(
        std::fs::File::open(fixtures().join("cleanrl_c51_cartpole.cleanrl_model")).unwrap(),
    )
    .unwrap();
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..zip.len() {
        use std::io::Read;
        let mut f = zip.by_index(i).unwrap();
        let mut b = Vec::new();
        f.read_to_end(&mut b).unwrap();
        // The `atoms` storage: 101 float32 values starting at -100.
        if b.len() == 404 && b[..4] == (-100f32).to_le_bytes() {
            b[200..204].copy_from_slice(&7.5f32.to_le_bytes());
        }
        entries.push((f.name().unwrap().to_string(), b));
    }
    let entries: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    torch_pt::write_archive(&p("uneven.cleanrl_model"), &entries);
    let e = eval(&p("uneven.cleanrl_model"), "cartpole");
    assert!(
        e.contains("uneven.cleanrl_model") && e.contains("`atoms`") && e.contains("evenly spaced"),
        "{e}"
    );
}

/// A repo folder (`models--ORG--NAME`, `datasets--ORG--NAME`) in the Hub cache at `cache`, laid
/// out as hf-hub writes it with `refs/main` pointing at one commit; returns its snapshot folder.
fn hub_snapshot(cache: &Path, repo: &str) -> PathBuf {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.join(repo);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    snap
}

/// The CLI, offline, reading the Hub cache at `cache`.
fn cli_cached(args: &[&str], cache: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_reincarnate"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", cache)
        .output()
        .unwrap()
}

#[test]
fn hub_repos_of_sb3_and_cleanrl_resolve_their_model_file_offline_from_the_cache() {
    // A local Hub cache laid out as hf-hub writes it, holding the RL Zoo's file name.
    let dir = tempfile::tempdir().unwrap();
    let snap = hub_snapshot(dir.path(), "models--sb3--dqn-CartPole-v1");
    std::fs::copy(
        fixtures().join("sb3_dqn_cartpole.zip"),
        snap.join("dqn-CartPole-v1.zip"),
    )
    .unwrap();
    let o = cli_cached(
        &[
            "eval",
            "--policy",
            "hf://sb3/dqn-CartPole-v1",
            "--env",
            "cartpole",
            "--episodes",
            "2",
            "--json",
        ],
        dir.path(),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["mean_return"], 500.0);
    // CleanRL's uploads: `ENV-EXP-seedN` holds `EXP.cleanrl_model`.
    let snap = hub_snapshot(dir.path(), "models--cleanrl--CartPole-v1-dqn-seed1");
    std::fs::copy(
        fixtures().join("cleanrl_dqn_cartpole.cleanrl_model"),
        snap.join("dqn.cleanrl_model"),
    )
    .unwrap();
    let o = cli_cached(
        &["inspect", "hf://cleanrl/CartPole-v1-dqn-seed1"],
        dir.path(),
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("MLP (ReLU) layer sizes [4, 120, 84, 2]")
            && text.contains("network.4.weight → q.2.weight [2, 84]"),
        "{text}"
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn minari_datasets_on_the_hub_import_and_teach_offline_from_the_cache() {
    // Minari's Hugging Face remote: dataset repo ORG/NAMESPACE, one folder per dataset.
    let cache = tempfile::tempdir().unwrap();
    let snap = hub_snapshot(cache.path(), "datasets--farama-minari--cartpole");
    copy_tree(&fixtures().join("minari_arrow"), &snap.join("random-v0"));
    copy_tree(
        &fixtures().join("minari_hdf5"),
        &snap.join("random-hdf5-v0"),
    );
    let run = |args: &[&str]| cli_cached(args, cache.path());
    let out = tempfile::tempdir().unwrap();
    for (name, backend) in [("random-v0", "arrow"), ("random-hdf5-v0", "hdf5")] {
        let dest = out.path().join(name);
        let o = run(&[
            "dataset",
            "import",
            "minari",
            &format!("hf://datasets/farama-minari/cartpole/{name}"),
            "--out",
            dest.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (local, _) = formats::import_dataset(
            DatasetFormat::Minari,
            &snap.join(name),
            &out.path().join(format!("{name}-local")),
            None,
        )
        .unwrap();
        let (m, t) = read_dataset(&dest);
        assert_eq!(m.total_rows(), local.total_rows());
        let steps: Vec<u64> = expected(&format!("minari_{backend}"))["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(episode_lengths(&t), steps, "{name}: episode boundaries");
    }
    // As --teacher-data straight from the Hub: the pretrain stage trains on it.
    let run_dir = out.path().join("pre");
    let o = run(&[
        "reincarnate",
        "--teacher",
        fixtures().join("sb3_dqn_cartpole.zip").to_str().unwrap(),
        "--teacher-data",
        "hf://datasets/farama-minari/cartpole/random-v0",
        "--method",
        "pretrain",
        "--student",
        "dqn",
        "--env",
        "cartpole",
        "--steps",
        "1000",
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("reincarnation.json")).unwrap())
            .unwrap();
    let steps: u64 = expected("minari_arrow")["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .sum();
    assert_eq!(
        s["teacher_data_transitions"], steps,
        "the Hub's Minari episodes"
    );
    // An episode missing from the cache is named, with the repo and revision; nothing is written.
    std::fs::remove_file(snap.join("random-v0/data/3/part-0.arrow")).unwrap();
    let dest = out.path().join("partial");
    let o = run(&[
        "dataset",
        "import",
        "minari",
        "hf://datasets/farama-minari/cartpole/random-v0",
        "--out",
        dest.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`random-v0/data/3/part-0.arrow`") && err.contains("farama-minari/cartpole"),
        "{err}"
    );
    assert!(!dest.exists());
}

#[test]
fn numpy_and_python_json_quirks_parse() {
    let v = formats::minari::python_json(r#"{"low": [-Infinity, 1.5], "s": "NaN in a string"}"#)
        .unwrap();
    assert_eq!(v["low"][0], "-inf");
    assert_eq!(v["s"], "NaN in a string");
}
