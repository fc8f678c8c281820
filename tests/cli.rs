//! The command line as a user meets it: exit codes, JSON output, error messages, and a
//! train → inspect → eval round trip, also through a local Hugging Face Hub cache.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reincarnate"));
    c.args(args).env("HF_HUB_OFFLINE", "1");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn envs_lists_every_environment() {
    let o = run(&["envs", "--json"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    for id in [
        "dark_room",
        "cartpole",
        "pendulum",
        "minatar/seaquest",
        "bandit",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
}

#[test]
fn eval_random_prints_json_on_the_last_line() {
    let o = run(
        &["eval", "--env", "dark_room", "--episodes", "3", "--json"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let last = stdout(&o).lines().last().unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    for key in [
        "env",
        "policy",
        "episodes",
        "mean_return",
        "stderr",
        "mean_length",
        "returns_by_episode",
        "optimal_return",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {last}");
    }
    assert_eq!(v["returns_by_episode"].as_array().unwrap().len(), 3);
    // `--seeds 2 --seed 4`: seed 4's curve is the one-seed evaluation's, pooled with seed 5's.
    let json = |args: &[&str]| -> serde_json::Value {
        let o = run(args, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap()
    };
    let base = [
        "eval",
        "--env",
        "dark_room",
        "--episodes",
        "3",
        "--json",
        "--seed",
        "4",
    ];
    let one = json(&base);
    let two = json(&[&base[..], &["--seeds", "2"]].concat());
    assert_eq!(two["seeds"], serde_json::json!([4, 5]));
    assert_eq!(two["returns_by_seed"][0], one["returns_by_episode"]);
    assert!(one.get("seeds").is_none());
    let o = run(&[&base[..], &["--seeds", "0"]].concat(), &[]);
    assert!(
        !o.status.success() && stderr(&o).contains("--seeds"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn user_errors_exit_1_with_a_clear_message() {
    let o = run(&["eval", "--env", "cartpol"], &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("did you mean `cartpole`") && e.contains("valid environments"),
        "{e}"
    );
    let o = run(
        &[
            "eval",
            "--env",
            "minatar/breakout",
            "--set",
            "env.sticky_actions=0",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("did you mean `sticky_action_prob`"),
        "{}",
        stderr(&o)
    );
    let o = run(&["train", "--env", "cartpole", "--algo", "dqm"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("did you mean `dqn`"), "{}", stderr(&o));
    let o = run(
        &["eval", "--policy", "/nonexistent/ckpt", "--env", "cartpole"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nonexistent/ckpt"), "{}", stderr(&o));
    let o = run(&["eval", "--env", "cartpole", "--device", "tpu"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!stderr(&o).contains("panicked"));
}

#[test]
fn train_inspect_and_eval_a_checkpoint_locally_and_through_a_hub_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let ck_s = ck.to_str().unwrap();
    let o = run(
        &[
            "train",
            "--env",
            "cartpole",
            "--algo",
            "dqn",
            "--steps",
            "600",
            "--out",
            ck_s,
            "--set",
            "agent.learning_starts=100",
            "--set",
            "loop.eval_interval=0",
            "--set",
            "loop.progress=false",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(ck.join("learning_curve.svg").exists());
    let o = run(&["inspect", ck_s], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("q.1.weight") && stdout(&o).contains("step: 600"),
        "{}",
        stdout(&o)
    );
    let local = run(
        &["eval", "--policy", ck_s, "--episodes", "3", "--json"],
        &[],
    );
    assert!(local.status.success(), "{}", stderr(&local));
    // The wrong environment for this network is refused with both spaces named.
    let o = run(&["eval", "--policy", ck_s, "--env", "dark_room"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not fit"), "{}", stderr(&o));

    // The same checkpoint as hf://org/cartpole-dqn in a local hub cache, offline.
    let cache = tmp.path().join("hub");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.join("models--org--cartpole-dqn");
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(ck.join(f), snap.join(f)).unwrap();
    }
    let hub = run(
        &[
            "eval",
            "--policy",
            "hf://org/cartpole-dqn",
            "--episodes",
            "3",
            "--json",
        ],
        &[("HF_HUB_CACHE", &cache)],
    );
    assert!(hub.status.success(), "{}", stderr(&hub));
    let last = |o: &Output| stdout(o).lines().last().unwrap().to_string();
    let (a, b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&last(&local)).unwrap(),
        serde_json::from_str(&last(&hub)).unwrap(),
    );
    assert_eq!(a["returns_by_episode"], b["returns_by_episode"]);
    // Not cached and offline: a clear error naming the repo.
    let o = run(
        &["eval", "--policy", "hf://org/other"],
        &[("HF_HUB_CACHE", &cache)],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("org/other"), "{}", stderr(&o));
}

/// `--cpu-split passes` runs independent passes side by side (the target network beside the
/// online one, SAC's twin critics, Adam's parameter chunks) on two threads; `ops` runs them one
/// after the other. The trained weights must not depend on it, bit for bit. Sizes are large
/// enough that the passes are split (`device::MIN_SPLIT_WORK`).
#[test]
fn splitting_passes_over_threads_leaves_training_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &[&str]); 3] = [
        (
            "minatar/breakout",
            "dqn",
            &["agent.network.body=\"minatar_conv\"", "agent.batch_size=32"],
        ),
        (
            "minatar/breakout",
            "dqn",
            &[
                "agent.network.body=\"minatar_conv\"",
                "agent.batch_size=32",
                "agent.double_q=true",
            ],
        ),
        ("pendulum", "sac", &["agent.batch_size=256"]),
    ];
    for (i, (env, algo, sets)) in cases.iter().enumerate() {
        let mut weights = Vec::new();
        for split in ["ops", "passes"] {
            let out = tmp.path().join(format!("{i}-{split}"));
            let mut args = vec![
                "train",
                "--env",
                env,
                "--algo",
                algo,
                "--steps",
                "400",
                "--cpu-split",
                split,
                "--out",
                out.to_str().unwrap(),
                "--set",
                "agent.learning_starts=200",
                "--set",
                "loop.eval_interval=0",
                "--set",
                "loop.progress=false",
            ];
            for s in *sets {
                args.extend(["--set", s]);
            }
            let mut c = Command::new(env!("CARGO_BIN_EXE_reincarnate"));
            c.args(&args).env("RAYON_NUM_THREADS", "2");
            let o = c.output().expect("binary runs");
            assert!(o.status.success(), "{env} {algo} {split}: {}", stderr(&o));
            weights.push(tensors(&out.join("model.safetensors")));
        }
        assert_eq!(weights[0].len(), weights[1].len());
        for (name, a) in &weights[0] {
            assert!(
                weights[1].get(name) == Some(a),
                "{env} {algo} {sets:?}: `{name}` differs between --cpu-split ops and passes"
            );
        }
    }
}

/// Every tensor of a safetensors file as raw bits (the file's bytes also hold a header whose
/// key order is not fixed).
fn tensors(path: &Path) -> std::collections::BTreeMap<String, Vec<u32>> {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t)| {
            let bits = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (k, bits.into_iter().map(f32::to_bits).collect())
        })
        .collect()
}

#[test]
fn writing_to_the_hub_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &[
            "collect",
            "--env",
            "dark_room",
            "--algo",
            "ppo",
            "--runs",
            "1",
            "--steps",
            "10",
        ][..],
        &[
            "train", "--env", "cartpole", "--algo", "dqn", "--steps", "10",
        ][..],
    ] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_reincarnate"));
        let o = c
            .args(args)
            .args(["--out", "hf://datasets/org/name"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("read-only") && err.contains("hf upload"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
