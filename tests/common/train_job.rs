//! A training job for the learning tests: the CartPole DQN recipe they share, and a runner.

use std::path::PathBuf;

/// CartPole recipe (RL Zoo-like), 30k steps; `ENV`, `ALGO`, ` ATOMS` and `EXTRA` are filled in.
pub const CARTPOLE: &str = r#"
env = "ENV"
algo = "ALGO"
[agent]
learning_rate = 2.3e-3
network = { hidden = [128, 128] ATOMS }
buffer_size = 30000
batch_size = 64
learning_starts = 1000
train_frequency = 64
gradient_steps = 32
target_update_frequency = 10
epsilon = { start = 1.0, end = 0.04, decay_steps = 8000 }
EXTRA
[loop]
steps = 30000
eval_interval = 3000
eval_episodes = 5
checkpoint_interval = 0
progress = false
"#;

/// The plain DQN job of [`CARTPOLE`] on `env` (MSE loss), as `dqn_learns_cartpole` trains it.
pub fn cartpole_dqn(env: &str) -> String {
    CARTPOLE
        .replace("ENV", env)
        .replace("ALGO", "dqn")
        .replace(" ATOMS", "")
        .replace("EXTRA", "loss = \"mse\"")
}

/// Trains the job `text` (a train TOML) with `seed` in a temporary folder: the folder's guard,
/// the run folder and the summary.
pub fn train(
    text: &str,
    seed: u64,
) -> (tempfile::TempDir, PathBuf, reincarnate::train::TrainSummary) {
    let spec: reincarnate::train::TrainSpec =
        reincarnate::config::from_table(toml::from_str(text).unwrap(), "test").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let summary =
        reincarnate::train::run_train(&spec, seed, &candle_core::Device::Cpu, &out, false).unwrap();
    (tmp, out, summary)
}

/// The greedy evaluation returns `(step, return)` a run logged.
pub fn evals(out: &std::path::Path) -> Vec<(f64, f64)> {
    reincarnate::report::metrics::read_series(&out.join("metrics.jsonl"), "eval", "return").unwrap()
}
