//! The DQN family learns: small budgets that still separate learning from chance. (Full-size
//! figures come from experiments/cartpole-dqn.toml and experiments/minatar-breakout-sn.toml.)

#[path = "common/train_job.rs"]
mod train_job;

use train_job::CARTPOLE;

fn train(toml_text: &str, seed: u64) -> (Vec<(f64, f64)>, f64) {
    let (_tmp, out, summary) = train_job::train(toml_text, seed);
    (
        train_job::evals(&out),
        summary.final_eval.unwrap().mean_return,
    )
}

#[test]
fn dqn_learns_cartpole() {
    let (evals, _) = train(&train_job::cartpole_dqn("cartpole"), 0);
    let best = evals.iter().map(|e| e.1).fold(f64::MIN, f64::max);
    // A random policy lasts ~22 steps; 200 needs a policy that balances.
    assert!(best >= 200.0, "best greedy return {best}: {evals:?}");
}

#[test]
fn c51_learns_cartpole() {
    // Returns of up to 500 at γ = 0.99 put Q below 100: support [0, 100].
    let cfg = CARTPOLE
        .replace("ENV", "cartpole")
        .replace("ALGO", "c51")
        .replace(" ATOMS", ", atoms = 51")
        .replace("EXTRA", "v_min = 0.0\nv_max = 100.0");
    let (evals, _) = train(&cfg, 0);
    let best = evals.iter().map(|e| e.1).fold(f64::MIN, f64::max);
    assert!(best >= 150.0, "best greedy return {best}: {evals:?}");
}

/// MinAtar Breakout, 10k steps with the MinAtar DQN network; `SN` is replaced by the SN options.
const BREAKOUT: &str = r#"
env = "minatar/breakout"
algo = "dqn"
[agent]
network = { body = "minatar_conv" SN }
learning_rate = 2.5e-4
optimizer = { eps = 3.125e-4 }
buffer_size = 10000
batch_size = 32
learning_starts = 1000
train_frequency = 2
target_update_frequency = 500
loss = "huber"
epsilon = { start = 1.0, end = 0.1, decay_steps = 5000 }
[loop]
steps = 10000
eval_interval = 5000
eval_episodes = 20
checkpoint_interval = 0
progress = false
"#;

/// Random play scores 0.51 ± 0.01 in Breakout (the Python package, full action set).
const BREAKOUT_RANDOM: f64 = 0.51;

#[test]
fn dqn_learns_minatar_breakout_well_above_random() {
    let (evals, last) = train(&BREAKOUT.replace(" SN", ""), 0);
    assert!(
        last >= 3.0 * BREAKOUT_RANDOM,
        "final greedy return {last}: {evals:?}"
    );
}

#[test]
fn dqn_with_spectral_norm_learns_minatar_breakout_well_above_random() {
    let (evals, last) = train(&BREAKOUT.replace(" SN", ", sn_layers = [-2]"), 0);
    assert!(
        last >= 3.0 * BREAKOUT_RANDOM,
        "final greedy return {last}: {evals:?}"
    );
}
