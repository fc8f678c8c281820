//! `reincarnate run`: stages run once, finished ones are skipped on re-run, comparisons redraw.

mod common;

use reincarnate::experiment::{load_experiment, run_experiment, StageOutcome};
use std::path::{Path, PathBuf};

/// `DIR/NAME.toml` holding `stages`, with its runs under `DIR/runs`.
fn experiment_file(dir: &Path, name: &str, stages: &str) -> PathBuf {
    let file = dir.join(format!("{name}.toml"));
    let runs = dir.join("runs");
    std::fs::write(
        &file,
        format!("runs_dir = \"{}\"\n{stages}", runs.display()),
    )
    .unwrap();
    file
}

/// Which stages of a run were skipped as finished earlier.
fn skipped(outcomes: &[StageOutcome]) -> Vec<bool> {
    outcomes.iter().map(|o| o.skipped).collect()
}

#[test]
fn finished_stages_are_skipped_and_summary_maps_stage_names_to_results() {
    let tmp = tempfile::tempdir().unwrap();
    let file = experiment_file(
        tmp.path(),
        "tiny",
        r#"
[[stage]]
name = "random"
kind = "eval"
env = "dark_room"
episodes = 2
[[stage]]
name = "dqn"
kind = "train"
env = "cartpole"
algo = "dqn"
seeds = [0, 1]
agent = { learning_starts = 50, train_frequency = 4 }
loop = { steps = 300, eval_interval = 100, eval_episodes = 2, progress = false }
[[stage]]
name = "plot"
kind = "compare"
stages = ["dqn"]
"#,
    );
    let exp = load_experiment(&file, &[]).unwrap();
    let dev = candle_core::Device::Cpu;
    let (root, first) = run_experiment(&exp, "tiny", &dev).unwrap();
    assert!(first.iter().all(|o| !o.skipped));
    assert!(root.join("plot/compare.svg").exists());
    assert!(root.join("dqn/seed-1/model.safetensors").exists());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["random"]["env"], "dark_room");
    assert!(summary["dqn"]["final_return_mean"].as_f64().is_some());
    let (_, second) = run_experiment(&exp, "tiny", &dev).unwrap();
    assert_eq!(skipped(&second), vec![true, true, false]);
    // A changed stage runs again.
    let exp = load_experiment(&file, &["stage.0.episodes=3".into()]).unwrap();
    let (_, third) = run_experiment(&exp, "tiny", &dev).unwrap();
    assert!(!third[0].skipped && third[1].skipped);
    // A compare stage that names a non-train stage is refused.
    let exp = load_experiment(&file, &["stage.2.stages=[\"random\"]".into()]).unwrap();
    let e = run_experiment(&exp, "tiny", &dev).unwrap_err().to_string();
    assert!(e.contains("not a train stage"), "{e}");
}

/// A stage that reads another reruns when that one's spec changes: a new collection is
/// distilled afresh (not resumed from the old model) and the evaluation scores the new model.
#[test]
fn changing_a_stage_reruns_the_stages_that_read_it() {
    let tmp = tempfile::tempdir().unwrap();
    let file = experiment_file(
        tmp.path(),
        "chain",
        r#"
[[stage]]
name = "histories"
kind = "collect"
env = "dark_room"
algo = "ppo"
runs = 2
steps = 400
[[stage]]
name = "ad"
kind = "distill"
data = "histories"
[stage.config]
steps = 20
batch = 4
warmup_steps = 2
model = { n_layer = 1, d_model = 16, d_ff = 16, context = 40 }
[[stage]]
name = "ad-eval"
kind = "icl_eval"
policy = "ad"
episodes = 2
[[stage]]
name = "random"
kind = "eval"
env = "dark_room"
episodes = 2
"#,
    );
    let dev = candle_core::Device::Cpu;
    let model = |root: &Path| std::fs::read(root.join("ad/model.safetensors")).unwrap();
    let exp = load_experiment(&file, &[]).unwrap();
    let (root, first) = run_experiment(&exp, "chain", &dev).unwrap();
    assert!(first.iter().all(|o| !o.skipped));
    let before = model(&root);
    let (_, again) = run_experiment(&exp, "chain", &dev).unwrap();
    assert!(again.iter().all(|o| o.skipped));
    // More collection steps: the old runs are not passed off as runs of the new spec.
    let exp = load_experiment(&file, &["stage.0.steps=600".into()]).unwrap();
    let e = run_experiment(&exp, "chain", &dev).unwrap_err().to_string();
    assert!(e.contains("another spec") && e.contains("histories"), "{e}");
    // Once the folder is removed: collected again, and the distill and the evaluation of its
    // model run again (afresh, not resumed); the unrelated evaluation does not.
    std::fs::remove_dir_all(root.join("histories")).unwrap();
    let (_, third) = run_experiment(&exp, "chain", &dev).unwrap();
    assert_eq!(skipped(&third), vec![false, false, false, true]);
    assert!(
        model(&root) != before,
        "the distill kept the model of the old data"
    );
    let metrics = std::fs::read_to_string(root.join("ad/metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "train")
        .filter_map(|v| v["step"].as_u64())
        .collect();
    assert!(
        !steps.is_empty() && steps.windows(2).all(|w| w[0] < w[1]),
        "{steps:?}"
    );
    // A changed distill reruns the evaluation that reads it, not the collection.
    let exp = load_experiment(
        &file,
        &["stage.0.steps=600".into(), "stage.1.config.steps=30".into()],
    )
    .unwrap();
    let (_, fourth) = run_experiment(&exp, "chain", &dev).unwrap();
    assert_eq!(skipped(&fourth), vec![true, false, false, true]);
    // A validation set given to the distill rescores its model rather than training it again.
    let trained = tmp.path().join("trained");
    std::fs::create_dir(&trained).unwrap();
    std::fs::copy(
        root.join("ad/model.safetensors"),
        trained.join("model.safetensors"),
    )
    .unwrap();
    let validated: Vec<String> = [
        "stage.0.steps=600",
        "stage.1.config.steps=30",
        "stage.1.config.validation=\"histories\"",
    ]
    .map(String::from)
    .to_vec();
    let exp = load_experiment(&file, &validated).unwrap();
    let (_, fifth) = run_experiment(&exp, "chain", &dev).unwrap();
    assert_eq!(skipped(&fifth), vec![true, false, false, true]);
    common::assert_same_tensors(&trained, &root.join("ad"), "model.safetensors");
    let metrics = std::fs::read_to_string(root.join("ad/metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert!(
        last["kind"] == "val" && last["step"] == 30 && last["loss"].as_f64().unwrap() > 0.0,
        "{metrics}"
    );
    // Three evaluation seeds: the evaluation alone runs again; seed 0's curve is the one-seed
    // evaluation's and the reported curve is the mean of the three.
    let eval = |root: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(root.join("ad-eval/result.json")).unwrap())
            .unwrap()
    };
    let one = eval(&root);
    let three_seeds = [validated, vec!["stage.2.seeds=3".into()]].concat();
    let exp = load_experiment(&file, &three_seeds).unwrap();
    let (_, sixth) = run_experiment(&exp, "chain", &dev).unwrap();
    assert_eq!(skipped(&sixth), vec![true, true, false, true]);
    let three = eval(&root);
    assert_eq!(three["seeds"], serde_json::json!([0, 1, 2]));
    let by_seed: Vec<Vec<f64>> = serde_json::from_value(three["returns_by_seed"].clone()).unwrap();
    assert_eq!(serde_json::json!(by_seed[0]), one["returns_by_episode"]);
    let mean: Vec<f64> = serde_json::from_value(three["returns_by_episode"].clone()).unwrap();
    for (e, m) in mean.iter().enumerate() {
        let want = by_seed.iter().map(|c| c[e]).sum::<f64>() / 3.0;
        assert!((m - want).abs() < 1e-9, "episode {e}: {m} vs {want}");
    }
}

/// Reincarnation runs whose teacher stage is retrained under another spec run again (their
/// own spec, which names the teacher's folder, is unchanged); unchanged, they are skipped.
#[test]
fn retraining_the_teacher_stage_reruns_the_reincarnation_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let file = experiment_file(
        tmp.path(),
        "teach",
        r#"
[[stage]]
name = "teacher"
kind = "train"
env = "cartpole"
algo = "dqn"
agent = { learning_rate = 2.3e-3, buffer_size = 30000, batch_size = 64, learning_starts = 1000, train_frequency = 64, gradient_steps = 32, target_update_frequency = 10, epsilon = { start = 1.0, end = 0.04, decay_steps = 8000 } }
loop = { steps = 24000, eval_interval = 0, progress = false }
[[stage]]
name = "students"
kind = "reincarnate"
env = "cartpole"
teacher = "stage:teacher"
student = "dqn"
methods = ["qdagger"]
seeds = [0]
agent = { learning_starts = 50 }
loop = { steps = 200, eval_interval = 100, eval_episodes = 1, progress = false }
"#,
    );
    let dev = candle_core::Device::Cpu;
    let exp = load_experiment(&file, &[]).unwrap();
    let (root, first) = run_experiment(&exp, "teach", &dev).unwrap();
    assert!(first.iter().all(|o| !o.skipped));
    let student = || std::fs::read(root.join("students/qdagger/seed-0/model.safetensors")).unwrap();
    let before = student();
    let (_, again) = run_experiment(&exp, "teach", &dev).unwrap();
    assert!(again.iter().all(|o| o.skipped));
    let exp = load_experiment(&file, &["stage.0.agent.learning_rate=2.0e-3".into()]).unwrap();
    let (_, third) = run_experiment(&exp, "teach", &dev).unwrap();
    assert_eq!(skipped(&third), vec![false, false]);
    assert!(
        student() != before,
        "the student of the old teacher was kept"
    );
    let (_, fourth) = run_experiment(&exp, "teach", &dev).unwrap();
    assert!(fourth.iter().all(|o| o.skipped));
}
