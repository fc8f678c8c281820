//! `reincarnate run`: stages run once, finished ones are skipped on re-run, comparisons redraw.

use reincarnate::experiment::{load_experiment, run_experiment};

#[test]
fn finished_stages_are_skipped_and_summary_maps_stage_names_to_results() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("tiny.toml");
    let runs = tmp.path().join("runs");
    std::fs::write(
        &file,
        format!(
            r#"
runs_dir = "{}"
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
agent = {{ learning_starts = 50, train_frequency = 4 }}
loop = {{ steps = 300, eval_interval = 100, eval_episodes = 2, progress = false }}
[[stage]]
name = "plot"
kind = "compare"
stages = ["dqn"]
"#,
            runs.display()
        ),
    )
    .unwrap();
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
    let skipped: Vec<bool> = second.iter().map(|o| o.skipped).collect();
    assert_eq!(skipped, vec![true, true, false]);
    // A changed stage runs again.
    let exp = load_experiment(&file, &["stage.0.episodes=3".into()]).unwrap();
    let (_, third) = run_experiment(&exp, "tiny", &dev).unwrap();
    assert!(!third[0].skipped && third[1].skipped);
    // A compare stage that names a non-train stage is refused.
    let exp = load_experiment(&file, &["stage.2.stages=[\"random\"]".into()]).unwrap();
    let e = run_experiment(&exp, "tiny", &dev).unwrap_err().to_string();
    assert!(e.contains("not a train stage"), "{e}");
}
