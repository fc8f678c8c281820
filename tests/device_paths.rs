//! The tensor-op path a GPU runs, exercised on the CPU: with `REINCARNATE_HOST_KERNELS=0` the
//! fused host kernels (dense layers, convolutions, attention, layer norm, in-place optimiser
//! updates) are off and every op goes through candle's generic tensor ops, as on a CUDA device.
//! Both paths must train the same models to the same losses within float tolerance.

use std::path::Path;
use std::process::Command;

/// Runs the CLI with the host kernels on or off; panics on failure.
fn run(args: &[&str], out: &Path, host_kernels: bool) {
    let o = Command::new(env!("CARGO_BIN_EXE_reincarnate"))
        .args(args)
        .arg("--out")
        .arg(out)
        .env(
            "REINCARNATE_HOST_KERNELS",
            if host_kernels { "1" } else { "0" },
        )
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `field` of every `kind` line of `metrics.jsonl`, in order.
fn series(dir: &Path, kind: &str, field: &str) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .filter_map(|v| v[field].as_f64())
        .collect()
}

/// The two paths give the same series within `rel` relative tolerance. With `differ`, not bit
/// for bit either: convolutions, attention and layer norm sum in other orders on the two
/// paths, so equal bits would mean the switch did nothing (plain dense layers and Adam may
/// agree to the bit).
fn assert_close(what: &str, a: &[f64], b: &[f64], rel: f64, differ: bool) {
    assert!(
        !a.is_empty() && a.len() == b.len(),
        "{what}: {a:?} vs {b:?}"
    );
    assert!(
        !differ || a != b,
        "{what}: both runs are bitwise equal; were the host kernels switched off?"
    );
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = rel * x.abs().max(y.abs()).max(1e-3);
        assert!(
            (x - y).abs() <= tol,
            "{what}[{i}]: host kernels {x} vs tensor ops {y} (tolerance {tol})"
        );
    }
}

fn both(args: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (fused, ops) = (tmp.path().join("fused"), tmp.path().join("ops"));
    run(args, &fused, true);
    run(args, &ops, false);
    (tmp, fused, ops)
}

#[test]
fn dqn_and_its_conv_network_train_alike_on_both_paths() {
    // MinAtar's conv network and an MLP: the first updates' losses.
    for (env, body) in [("minatar/breakout", "minatar_conv"), ("cartpole", "mlp")] {
        let set_body = format!("agent.network.body=\"{body}\"");
        let (_tmp, fused, ops) = both(&[
            "train",
            "--env",
            env,
            "--algo",
            "dqn",
            "--steps",
            "300",
            "--set",
            "agent.learning_starts=100",
            "--set",
            "agent.batch_size=32",
            "--set",
            &set_body,
            "--set",
            "loop.log_interval=20",
            "--set",
            "loop.eval_interval=0",
            "--set",
            "loop.eval_episodes=1",
        ]);
        let (a, b) = (
            series(&fused, "train", "loss"),
            series(&ops, "train", "loss"),
        );
        assert_close(
            &format!("{env} dqn loss"),
            &a,
            &b,
            1e-3,
            body == "minatar_conv",
        );
    }
}

#[test]
fn sac_and_simbav2_train_alike_on_both_paths() {
    for algo in ["sac", "simbav2"] {
        let (_tmp, fused, ops) = both(&[
            "train",
            "--env",
            "pendulum",
            "--algo",
            algo,
            "--steps",
            "260",
            "--set",
            "agent.learning_starts=200",
            "--set",
            "agent.batch_size=32",
            "--set",
            "loop.log_interval=20",
            "--set",
            "loop.eval_interval=0",
            "--set",
            "loop.eval_episodes=1",
        ]);
        for field in ["critic_loss", "actor_loss"] {
            let (a, b) = (series(&fused, "train", field), series(&ops, "train", field));
            assert_close(&format!("{algo} {field}"), &a, &b, 1e-3, false);
        }
    }
}

#[test]
fn the_ad_transformer_distils_alike_on_both_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let o = Command::new(env!("CARGO_BIN_EXE_reincarnate"))
        .args([
            "collect",
            "--env",
            "dark_room",
            "--algo",
            "ppo",
            "--runs",
            "2",
            "--steps",
            "600",
            "--threads",
            "1",
            "--out",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = data.display().to_string();
    let (_t, fused, ops) = both(&[
        "distill",
        "--data",
        &d,
        "--steps",
        "60",
        "--set",
        "batch=4",
        "--set",
        "warmup_steps=5",
        "--set",
        "log_interval=5",
        "--set",
        "model.n_layer=2",
        "--set",
        "model.n_head=2",
        "--set",
        "model.d_model=32",
        "--set",
        "model.d_ff=64",
        "--set",
        "model.context=40",
    ]);
    let (a, b) = (
        series(&fused, "train", "loss"),
        series(&ops, "train", "loss"),
    );
    assert!(a.len() >= 10, "{a:?}");
    assert_close("ad loss", &a, &b, 1e-3, true);
}
