//! `collect`: learning histories over a task family — they show learning, survive SIGKILL, and
//! shard and merge.

use reincarnate::collect::{collect, CollectSpec, Shard};
use reincarnate::envs::{EnvRef, TaskSet};
use reincarnate::history::{summarize, validate_or_error, Manifest};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn spec(env: &str, algo: &str, runs: usize, steps: u64) -> CollectSpec {
    CollectSpec {
        env: EnvRef::Id(env.into()),
        algo: algo.into(),
        agent: toml::Table::new(),
        tasks: TaskSet::Train,
        runs,
        steps,
        threads: Some(2),
        policy: None,
        epsilon: 0.0,
    }
}

fn run_ids(dir: &Path) -> Vec<u32> {
    let mut ids: Vec<u32> = Manifest::load(dir)
        .unwrap()
        .runs
        .iter()
        .map(|r| r.summary.run)
        .collect();
    ids.sort_unstable();
    ids
}

#[test]
fn dark_room_ppo_histories_rise_from_random_to_near_optimal() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dr");
    let s = collect(
        &spec("dark_room", "ppo", 4, 4000),
        0,
        None,
        &out,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!((s.runs_done_now, s.runs_in_dataset), (4, 4));
    validate_or_error(&out).unwrap();
    let m = Manifest::load(&out).unwrap();
    let tasks: Vec<u32> = m.runs.iter().map(|r| r.summary.task).collect();
    assert_eq!(tasks.len(), 4);
    let sum = summarize(&out).unwrap();
    let (first, last) = (
        sum.mean_first_return.unwrap(),
        sum.mean_last_return.unwrap(),
    );
    // Random play on Dark Room scores ~0.15; the optimum averages ~16.5 over goals.
    assert!(first < 3.0 && last > 11.0, "first {first}, last {last}");
    check_behaviour_probs(&out);
    // Re-running a finished collection does nothing.
    let again = collect(
        &spec("dark_room", "ppo", 4, 4000),
        0,
        None,
        &out,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!((again.runs_done_now, again.runs_skipped), (0, 4));
}

/// PPO's and tabular Q's histories carry, per transition, the probabilities the action was
/// drawn from: each row a distribution, the actions' counts those the probabilities predict
/// (per action, within 5 standard deviations), and the logged action as probable on average as
/// a draw from the row (E p(a) = E Σ p²): rows logged beside the wrong actions would fail both.
fn check_behaviour_probs(out: &Path) {
    use reincarnate::history::{Actions, PolicyKind};
    let (m, t) = reincarnate::ad::train::load_dataset(out).unwrap();
    let p = m.layout.policy.expect("the histories have a policy column");
    assert_eq!((p.kind, p.dim), (PolicyKind::Probs, 5));
    let Actions::Discrete(actions) = &t.action else {
        panic!("dark_room actions are discrete")
    };
    let (mut count, mut expect, mut var) = ([0.0f64; 5], [0.0f64; 5], [0.0f64; 5]);
    let (mut p_logged, mut p_draw) = (0.0f64, 0.0f64);
    for (row, &a) in t.policy.chunks(5).zip(actions) {
        let sum: f32 = row.iter().sum();
        assert!(
            (sum - 1.0).abs() < 1e-4 && row.iter().all(|&x| x >= 0.0),
            "{row:?}"
        );
        count[a as usize] += 1.0;
        for k in 0..5 {
            let q = f64::from(row[k]);
            expect[k] += q;
            var[k] += q * (1.0 - q);
            p_draw += q * q;
        }
        p_logged += f64::from(row[a as usize]);
    }
    for k in 0..5 {
        assert!(
            (count[k] - expect[k]).abs() < 5.0 * var[k].sqrt() + 1.0,
            "action {k}: {} taken, {} expected",
            count[k],
            expect[k]
        );
    }
    let n = actions.len() as f64;
    let (p_logged, p_draw) = (p_logged / n, p_draw / n);
    assert!(
        (p_logged - p_draw).abs() < 0.01,
        "mean p(logged action) {p_logged} vs mean Σp² {p_draw}"
    );
}

#[test]
fn bandit_ucb_histories_improve() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bandit");
    collect(
        &spec("bandit", "ucb", 6, 2000),
        0,
        None,
        &out,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    validate_or_error(&out).unwrap();
    let sum = summarize(&out).unwrap();
    let (first, last) = (
        sum.mean_first_return.unwrap(),
        sum.mean_last_return.unwrap(),
    );
    assert!(last > first + 10.0, "first {first}, last {last}");
}

#[test]
fn shards_fill_one_folder_or_merge_from_several() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = candle_core::Device::Cpu;
    let s = spec("dark_room", "ppo", 5, 400);
    // Two shards into one folder.
    let shared = tmp.path().join("shared");
    collect(&s, 1, Some(Shard { index: 0, count: 2 }), &shared, &dev).unwrap();
    assert_eq!(run_ids(&shared), vec![0, 2, 4]);
    collect(&s, 1, Some(Shard { index: 1, count: 2 }), &shared, &dev).unwrap();
    assert_eq!(run_ids(&shared), vec![0, 1, 2, 3, 4]);
    validate_or_error(&shared).unwrap();
    // Two shards into separate folders, merged by manifest.
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    collect(&s, 1, Some(Shard { index: 0, count: 2 }), &a, &dev).unwrap();
    collect(&s, 1, Some(Shard { index: 1, count: 2 }), &b, &dev).unwrap();
    let merged = tmp.path().join("merged");
    let m = reincarnate::history::merge(&[a, b], &merged).unwrap();
    assert_eq!(m.runs.len(), 5);
    assert_eq!(m.total_rows(), 5 * 400);
    validate_or_error(&merged).unwrap();
    assert!("2/2".parse::<Shard>().is_err() && "x".parse::<Shard>().is_err());
}

#[test]
fn a_collection_killed_with_sigkill_stays_readable_and_a_rerun_finishes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("killed");
    let args = [
        "collect",
        "--env",
        "dark_room",
        "--algo",
        "ppo",
        "--runs",
        "16",
        "--steps",
        "3000",
        "--threads",
        "1",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_reincarnate"))
        .args(args)
        .arg("--out")
        .arg(&out)
        .spawn()
        .unwrap();
    // Kill it as soon as the first run has landed.
    let start = Instant::now();
    while !out.join("dataset.json").exists() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    validate_or_error(&out).unwrap();
    let partial = run_ids(&out).len();
    assert!((1..16).contains(&partial), "{partial} runs before the kill");
    let status = Command::new(env!("CARGO_BIN_EXE_reincarnate"))
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    validate_or_error(&out).unwrap();
    assert_eq!(run_ids(&out), (0..16).collect::<Vec<u32>>());
}

#[test]
fn teacher_mode_logs_the_checkpoints_greedy_actions() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = candle_core::Device::Cpu;
    let ck = tmp.path().join("teacher");
    let job: reincarnate::train::TrainSpec = reincarnate::config::from_table(
        toml::from_str(
            "env = \"cartpole\"\nalgo = \"dqn\"\n[agent]\nlearning_starts = 100\ntrain_frequency = 1\n\
             [loop]\nsteps = 1500\neval_interval = 0\nprogress = false\n",
        )
        .unwrap(),
        "test",
    )
    .unwrap();
    reincarnate::train::run_train(&job, 0, &dev, &ck, false).unwrap();
    let mut s = spec("cartpole", "dqn", 2, 400);
    s.policy = Some(ck.clone());
    let out = tmp.path().join("teacher-data");
    collect(&s, 5, None, &out, &dev).unwrap();
    validate_or_error(&out).unwrap();
    let m = Manifest::load(&out).unwrap();
    assert_eq!(m.source.name, "policy:dqn");
    assert_eq!(m.total_rows(), 800);
    // Every logged action is the teacher's greedy action at the logged observation.
    let data = reincarnate::checkpoint::load(&ck).unwrap();
    let teacher = reincarnate::agents::from_checkpoint(&data, &dev).unwrap();
    for run in &m.runs {
        let t = reincarnate::history::TransitionReader::open(&out.join(&run.file))
            .unwrap()
            .read_all()
            .unwrap();
        let reincarnate::agents::PolicyOutput::QValues(q) = teacher.policy_output(&t.obs).unwrap()
        else {
            panic!("a DQN teacher outputs Q-values")
        };
        let reincarnate::history::Actions::Discrete(actions) = &t.action else {
            panic!("discrete actions")
        };
        for (i, &a) in actions.iter().enumerate() {
            let best = if q[2 * i + 1] > q[2 * i] { 1 } else { 0 };
            assert_eq!(a, best, "row {i}");
        }
    }
    // A teacher for another environment is refused with both spaces named.
    let mut wrong = spec("dark_room", "dqn", 1, 10);
    wrong.policy = Some(ck);
    let e = collect(&wrong, 0, None, &tmp.path().join("wrong"), &dev)
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not fit"), "{e}");
}

/// A collection on held-out tasks says so in its manifest (`split = "test"`), runs only those
/// tasks, and tabular Q-learning's Dark Room Hard histories rise from never reaching the goal
/// to reaching it every episode. Re-running it removes a killed writer's manifest temp file.
#[test]
fn held_out_collections_say_test_and_tabular_q_histories_rise() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("drh");
    let mut s = spec("dark_room_hard", "tabular_q", 4, 16_000);
    s.tasks = TaskSet::Test;
    s.agent = toml::from_str("gamma = 0.9\ninitial_value = 0.15").unwrap();
    collect(&s, 0, None, &out, &candle_core::Device::Cpu).unwrap();
    let m = Manifest::load(&out).unwrap();
    assert_eq!(m.split, "test");
    let family =
        reincarnate::envs::TaskFamily::new(&reincarnate::envs::EnvConfig::new("dark_room_hard"))
            .unwrap();
    let test = family.tasks(TaskSet::Test);
    assert!(m
        .runs
        .iter()
        .all(|r| test.contains(&(r.summary.task as usize))));
    let sum = summarize(&out).unwrap();
    let (first, last) = (
        sum.mean_first_return.unwrap(),
        sum.mean_last_return.unwrap(),
    );
    assert!(first < 0.5 && last == 1.0, "first {first}, last {last}");
    // Tabular Q-learning logs the distribution it drew each action from: ε-uniform plus the
    // rest shared by the best actions.
    check_behaviour_probs(&out);
    // A manifest temp file left by a writer killed mid-rename is removed by the next run.
    let stale = out.join(".dataset.json.tmp-999999");
    std::fs::write(&stale, b"{").unwrap();
    let again = collect(&s, 0, None, &out, &candle_core::Device::Cpu).unwrap();
    assert_eq!(again.runs_skipped, 4);
    assert!(!stale.exists());
}
