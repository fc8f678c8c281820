//! The training core end to end: exact resume, DQN/C51 learning CartPole, checkpoints that
//! reload, and clear failures.

mod common;
use common::{assert_same_tensors, tensors};
use reincarnate::checkpoint;
use reincarnate::train::{run_train, TrainSpec};
use std::path::Path;

fn spec(toml_text: &str) -> TrainSpec {
    reincarnate::config::from_table(toml::from_str(toml_text).unwrap(), "test").unwrap()
}

const SMALL_CARTPOLE: &str = r#"
env = "cartpole"
algo = "dqn"
[agent]
learning_rate = 1e-3
buffer_size = 2000
batch_size = 32
learning_starts = 200
train_frequency = 1
target_update_frequency = 100
double_q = true
n_step = 3
epsilon = { start = 1.0, end = 0.05, decay_steps = { fraction = 0.4 } }
[loop]
eval_interval = 500
eval_episodes = 2
checkpoint_interval = 0
log_interval = 100
progress = false
"#;

#[test]
fn resumed_run_equals_uninterrupted_run_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = candle_core::Device::Cpu;
    let mut full = spec(SMALL_CARTPOLE);
    full.train_loop.steps = 2_400;
    let a = tmp.path().join("a");
    run_train(&full, 7, &dev, &a, false).unwrap();

    // ε decays over 40% of the 2,400-step budget in both runs: the interrupted one stops
    // mid-episode and mid-schedule, as a job whose time ran out.
    let config: serde_json::Value = reincarnate::fs::read_json(&a.join("config.json")).unwrap();
    assert_eq!(config["agent"]["epsilon"]["decay_steps"], 960);
    let mut first = full.clone();
    first.train_loop.stop_at = Some(1_100);
    let b = tmp.path().join("b");
    run_train(&first, 7, &dev, &b, false).unwrap();
    run_train(&full, 7, &dev, &b, true).unwrap();

    assert_same_tensors(&a, &b, checkpoint::MODEL_FILE);
    assert_same_tensors(&a, &b, checkpoint::OPTIMIZER_FILE);
    assert_same_tensors(&a, &b, checkpoint::REPLAY_FILE);
    // Every metrics line matches, but for the interrupted run's own final evaluation.
    let train_lines = |d: &Path| -> Vec<String> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                !(v["kind"] == "eval" && v["step"] == 1100)
            })
            .map(String::from)
            .collect()
    };
    let (la, lb) = (train_lines(&a), train_lines(&b));
    assert!(la.len() > 20);
    if let Some(i) = (0..la.len().max(lb.len())).find(|&i| la.get(i) != lb.get(i)) {
        panic!(
            "metrics differ after resume at line {i}:\n  {:?}\n  {:?}",
            la.get(i),
            lb.get(i)
        );
    }

    // Extending a finished run with a larger --steps keeps the schedules it started with.
    let mut longer = full.clone();
    longer.train_loop.steps = 3_000;
    run_train(&longer, 7, &dev, &b, true).unwrap();
    let config: serde_json::Value = reincarnate::fs::read_json(&b.join("config.json")).unwrap();
    assert_eq!(config["agent"]["epsilon"]["decay_steps"], 960);

    // A different seed gives a different run.
    let c = tmp.path().join("c");
    run_train(&full, 8, &dev, &c, false).unwrap();
    assert!(tensors(&a, checkpoint::MODEL_FILE) != tensors(&c, checkpoint::MODEL_FILE));
}

#[test]
fn resume_without_trainer_state_or_past_the_end_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = candle_core::Device::Cpu;
    let mut s = spec(SMALL_CARTPOLE);
    s.train_loop.steps = 300;
    let out = tmp.path().join("r");
    run_train(&s, 0, &dev, &out, false).unwrap();
    let e = run_train(&s, 0, &dev, &out, true).unwrap_err().to_string();
    assert!(e.contains("already at step 300"), "{e}");
    std::fs::remove_file(out.join(checkpoint::TRAINER_STATE_FILE)).unwrap();
    s.train_loop.steps = 600;
    let e = run_train(&s, 0, &dev, &out, true).unwrap_err().to_string();
    assert!(e.contains("cannot be resumed"), "{e}");
}

#[test]
fn unknown_agent_key_is_named_with_a_suggestion() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = spec(SMALL_CARTPOLE);
    s.agent
        .insert("learning_rat".into(), toml::Value::Float(1e-3));
    let e = run_train(
        &s,
        0,
        &candle_core::Device::Cpu,
        &tmp.path().join("x"),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("learning_rat") && e.contains("did you mean `learning_rate`"),
        "{e}"
    );
}

#[test]
fn log_history_records_every_transition_and_matches_the_episode_log() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = spec(SMALL_CARTPOLE);
    s.train_loop.steps = 700;
    let hist = tmp.path().join("hist");
    s.train_loop.log_history = Some(hist.clone());
    let out = tmp.path().join("run");
    let summary = run_train(&s, 3, &candle_core::Device::Cpu, &out, false).unwrap();
    reincarnate::history::validate_or_error(&hist).unwrap();
    let manifest = reincarnate::history::Manifest::load(&hist).unwrap();
    assert_eq!(manifest.total_rows(), 700);
    let file = hist.join(&manifest.runs[0].file);
    let reader = reincarnate::history::TransitionReader::open(&file).unwrap();
    let complete: Vec<f64> = reader
        .episodes()
        .unwrap()
        .iter()
        .filter(|e| e.complete)
        .map(|e| e.ret)
        .collect();
    assert_eq!(complete.len() as u64, summary.episodes);
    let logged: Vec<f64> =
        reincarnate::report::metrics::read_series(&out.join("metrics.jsonl"), "episode", "return")
            .unwrap()
            .into_iter()
            .map(|p| p.1)
            .collect();
    assert_eq!(complete, logged);
    // A second log into the same folder is refused rather than overwriting it.
    let e = run_train(
        &s,
        3,
        &candle_core::Device::Cpu,
        &tmp.path().join("run2"),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("already exists"), "{e}");
}
