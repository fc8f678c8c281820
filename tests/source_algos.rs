//! The source algorithms of learning histories: PPO learns the dark gridworlds, UCB1 and
//! Thompson sampling have sub-linear regret on the bandits, runs resume bit for bit, and bad
//! config keys are named with a suggestion.

mod common;
use common::{assert_same_tensors, tensors};
use reincarnate::agents::{self, Experience, PolicyOutput};
use reincarnate::checkpoint;
use reincarnate::envs::{Action, EnvConfig, TaskFamily};
use reincarnate::eval::ActionBuf;
use reincarnate::train::{run_train, TrainSpec, TrainSummary};
use std::path::Path;

fn spec(toml_text: &str) -> TrainSpec {
    reincarnate::config::from_table(toml::from_str(toml_text).unwrap(), "test").unwrap()
}

/// `env` is a TOML value: a quoted id or an inline table with options.
fn ppo_spec(env: &str, task: usize, steps: u64, eval_episodes: usize) -> TrainSpec {
    spec(&format!(
        r#"
env = {env}
algo = "ppo"
[loop]
steps = {steps}
task = {task}
eval_interval = 0
eval_episodes = {eval_episodes}
checkpoint_interval = 0
log_interval = 200
progress = false
"#
    ))
}

/// Trains `s` and reads back its (step, return) per training episode.
fn train_with_returns(s: &TrainSpec, seed: u64) -> (TrainSummary, Vec<(f64, f64)>) {
    let tmp = tempfile::tempdir().unwrap();
    let summary = run_train(s, seed, &candle_core::Device::Cpu, tmp.path(), false).unwrap();
    let returns = reincarnate::report::metrics::read_series(
        &tmp.path().join("metrics.jsonl"),
        "episode",
        "return",
    )
    .unwrap();
    (summary, returns)
}

fn train(s: &TrainSpec, seed: u64) -> TrainSummary {
    let tmp = tempfile::tempdir().unwrap();
    run_train(s, seed, &candle_core::Device::Cpu, tmp.path(), false).unwrap()
}

fn optimal_return(env: &str, task: usize) -> f64 {
    let family = TaskFamily::new(&EnvConfig::new(env)).unwrap();
    family.make(task).unwrap().optimal_return().unwrap()
}

/// Greedy return of PPO trained on one dark-room goal (start and goal fixed: one greedy
/// evaluation episode is the greedy policy's exact return).
fn dark_room_return(task: usize, steps: u64, seed: u64) -> f64 {
    let s = ppo_spec("\"dark_room\"", task, steps, 1);
    train(&s, seed).final_eval.unwrap().mean_return
}

#[test]
fn ppo_reaches_most_of_the_optimal_return_on_dark_room_goals() {
    // goal (1, 1): 6 steps from the centre; goal (7, 6): 5 steps, in another quadrant.
    for (task, seed) in [(9 + 1, 0), (6 * 9 + 7, 1)] {
        let opt = optimal_return("dark_room", task);
        let ret = dark_room_return(task, 4_000, seed);
        assert!(
            ret >= 0.8 * opt,
            "goal {task}: greedy return {ret} after 4000 steps (200 episodes), optimal {opt}"
        );
    }
}

/// Dark Key-to-Door is not Markov in the position alone (the same cell calls for "fetch the
/// key" or "go to the door" depending on whether the key is held): a memoryless PPO learns to
/// collect the key but its argmax policy gets trapped before the door. With an episode memory
/// (the return so far, which says whether the key was found) it learns both, from the position
/// alone: the observation, and so the logged history, holds nothing else.
#[test]
fn ppo_with_episode_memory_solves_a_fixed_key_to_door_task() {
    // key (2, 6), door (6, 1); random starts, 50-step episodes.
    let task = (9 + 6) * 81 + (6 * 9 + 2);
    let mut s = ppo_spec("\"dark_key_to_door\"", task, 24_000, 20);
    s.agent = toml::from_str(r#"memory = "episode_return""#).unwrap();
    let (summary, returns) = train_with_returns(&s, 0);
    let n = returns.len() / 5;
    let mean = |r: &[(f64, f64)]| r.iter().map(|p| p.1).sum::<f64>() / r.len() as f64;
    let first = mean(&returns[..n]);
    let greedy = summary.final_eval.unwrap().mean_return;
    assert!(
        first < 1.5 && greedy >= 1.5,
        "mean training return {first:.2} in the first fifth; greedy return {greedy:.2} (max 2)"
    );
}

/// Tabular Q-learning with optimistic initial values sweeps Dark Room Hard systematically and
/// finds the far corner goals that a random walk of 20 steps from the centre almost never
/// reaches (PPO's greedy return there stays 0 after 10,000 steps), then goes straight to them.
#[test]
fn optimistic_tabular_q_finds_far_dark_room_hard_goals() {
    for task in [0, 16, 288] {
        let mut s = ppo_spec("\"dark_room_hard\"", task, 20_000, 1);
        s.algo = "tabular_q".into();
        s.agent = toml::from_str("gamma = 0.9\ninitial_value = 0.15").unwrap();
        let (summary, returns) = train_with_returns(&s, 0);
        let first_success = returns.iter().position(|p| p.1 > 0.0);
        let greedy = summary.final_eval.unwrap().mean_return;
        let tail = &returns[returns.len() - 20..];
        assert!(
            first_success.is_some_and(|e| e >= 10)
                && greedy == 1.0
                && tail.iter().all(|p| p.1 == 1.0),
            "task {task}: first success at episode {first_success:?}, greedy {greedy}, last 20 {tail:?}"
        );
    }
}

/// Tabular Q-learning keyed by (position, return so far) solves a fixed Key-to-Door task from
/// the position alone; with planning sweeps over its model of the room it settles on key-then-
/// door in fewer episodes than with one-step updates, which move a found reward back one state
/// per visit.
#[test]
fn tabular_q_with_episode_memory_solves_key_to_door_and_planning_settles_sooner() {
    // key (2, 6), door (6, 1); random starts, 50-step episodes.
    let task = (9 + 6) * 81 + (6 * 9 + 2);
    let settled = |planning: usize| {
        let mut s = ppo_spec("\"dark_key_to_door\"", task, 6_000, 1);
        s.algo = "tabular_q".into();
        s.agent = toml::from_str(&format!(
            "gamma = 0.9\ninitial_value = 0.15\nmemory = \"episode_return\"\nplanning_sweeps = {planning}"
        ))
        .unwrap();
        let (summary, returns) = train_with_returns(&s, 0);
        // the first episode from which every later one collects key and door
        let from = returns.iter().rposition(|p| p.1 < 2.0).map_or(0, |e| e + 1);
        let greedy = summary.final_eval.unwrap().mean_return;
        (from, returns.len(), greedy)
    };
    let (one_step, n1, g1) = settled(0);
    let (planned, n2, g2) = settled(100);
    eprintln!("key-to-door tabular Q: 2s from episode {one_step} of {n1} (one-step), {planned} of {n2} (planning)");
    assert!(
        g1 == 2.0 && g2 == 2.0 && one_step < n1 && planned < one_step,
        "greedy {g1} / {g2}; every episode returns 2 from episode {one_step} of {n1} (one-step) \
         and {planned} of {n2} (planning)"
    );
}

/// Pseudo-regret `Σ (μ* − μ_a)` after each pull of `algo` on one bandit task, statistics kept
/// across the 100-pull episodes.
fn regret_curve(algo: &str, env: &str, task: usize, pulls: usize, seed: u64) -> Vec<f64> {
    let family = TaskFamily::new(&EnvConfig::new(env)).unwrap();
    let mut agent = agents::build(
        algo,
        &toml::Table::new(),
        family.spec(),
        &candle_core::Device::Cpu,
        seed,
        pulls as u64,
    )
    .unwrap();
    let mut bandit = family.make(task).unwrap();
    let desc = family.describe_task(task);
    let means: Vec<f64> = desc["means"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_f64().unwrap())
        .collect();
    let best = means.iter().cloned().fold(f64::MIN, f64::max);
    let (mut obs, mut next) = (vec![0f32], vec![0f32]);
    bandit.reset(Some(seed), &mut obs);
    let mut actions = ActionBuf::Discrete(vec![0]);
    let (mut regret, mut curve) = (0.0, Vec::with_capacity(pulls));
    for step in 0..pulls {
        agent.act(&obs, true, step as u64, &mut actions).unwrap();
        let ActionBuf::Discrete(a) = &actions else {
            unreachable!()
        };
        let s = bandit.step(Action::Discrete(a[0]), &mut next).unwrap();
        regret += best - means[a[0]];
        curve.push(regret);
        agent
            .observe(&Experience {
                obs: &obs,
                actions: &actions,
                rewards: &[s.reward],
                next_obs: &next,
                terminated: &[s.terminated],
                truncated: &[s.truncated],
            })
            .unwrap();
        agent.update(step as u64 + 1).unwrap();
        if s.done() {
            bandit.reset(None, &mut obs);
        }
    }
    curve
}

#[test]
fn ucb_and_thompson_regret_grows_sublinearly() {
    let n = 1000;
    for algo in ["ucb", "thompson"] {
        for env in ["bandit", "bandit/uniform"] {
            // Summed over tasks and seeds so one lucky or unlucky run does not decide.
            let mut total = vec![0.0; 4 * n];
            for (task, seed) in [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)] {
                for (t, r) in regret_curve(algo, env, task, 4 * n, seed)
                    .iter()
                    .enumerate()
                {
                    total[t] += r;
                }
            }
            let ratio = total[4 * n - 1] / total[n - 1];
            let first_quarter = total[n - 1] / n as f64;
            let last_quarter = (total[4 * n - 1] - total[3 * n - 1]) / n as f64;
            println!(
                "{algo} on {env}: regret(N) {:.1}, regret(4N) {:.1} (ratio {ratio:.2}); \
                 per-pull regret first quarter {first_quarter:.4}, last {last_quarter:.4}",
                total[n - 1] / 6.0,
                total[4 * n - 1] / 6.0
            );
            assert!(
                ratio < 2.3,
                "{algo} on {env}: regret(4N)/regret(N) = {ratio:.2} (N = {n})"
            );
            assert!(
                last_quarter < 0.3 * first_quarter,
                "{algo} on {env}: per-pull regret {first_quarter:.4} in the first quarter, \
                 {last_quarter:.4} in the last"
            );
        }
    }
}

/// Bandit learning histories improve across episodes: the statistics persist through the
/// training loop's episode resets.
#[test]
fn bandit_runs_improve_across_episodes() {
    for algo in ["ucb", "thompson"] {
        let s = spec(&format!(
            r#"
env = "bandit/uniform"
algo = "{algo}"
[loop]
steps = 3000
task = 7
eval_interval = 0
eval_episodes = 5
checkpoint_interval = 0
log_interval = 100
progress = false
"#
        ));
        let (summary, returns) = train_with_returns(&s, 3);
        assert_eq!(returns.len(), 30);
        let first: f64 = returns[..5].iter().map(|p| p.1).sum::<f64>() / 5.0;
        let last: f64 = returns[25..].iter().map(|p| p.1).sum::<f64>() / 5.0;
        let opt = optimal_return("bandit/uniform", 7);
        assert!(
            last > first && last > 0.9 * opt,
            "{algo}: mean return {first:.1} in the first 5 episodes, {last:.1} in the last 5 (optimal {opt:.1})"
        );
        let greedy = summary.final_eval.unwrap().mean_return;
        assert!(
            greedy > 0.9 * opt,
            "{algo}: greedy return {greedy:.1} vs optimal {opt:.1}"
        );
    }
}

#[test]
fn policy_outputs_are_distributions_and_ucb_is_one_hot() {
    let family = TaskFamily::from_id("bandit").unwrap();
    let dev = candle_core::Device::Cpu;
    for algo in ["ucb", "thompson"] {
        let mut agent =
            agents::build(algo, &toml::Table::new(), family.spec(), &dev, 0, 4).unwrap();
        // a few observed pulls so the distribution is not trivial
        for (arm, r) in [(1usize, 1f32), (2, 0.0), (1, 1.0), (3, 1.0)] {
            let actions = ActionBuf::Discrete(vec![arm]);
            agent
                .observe(&Experience {
                    obs: &[0.0],
                    actions: &actions,
                    rewards: &[r],
                    next_obs: &[0.0],
                    terminated: &[false],
                    truncated: &[false],
                })
                .unwrap();
        }
        let PolicyOutput::Probs(p) = agent.policy_output(&[0.0, 0.0]).unwrap() else {
            panic!("{algo} gives probabilities")
        };
        assert_eq!(p.len(), 20);
        assert!((p[..10].iter().sum::<f32>() - 1.0).abs() < 1e-5, "{p:?}");
        assert_eq!(p[..10], p[10..]);
        if algo == "ucb" {
            assert_eq!(p.iter().filter(|&&x| x == 1.0).count(), 2);
        } else {
            assert!(p[1] > p[2], "arm 1 won twice, arm 2 lost: {p:?}");
        }
    }
    let family = TaskFamily::from_id("dark_room").unwrap();
    let agent = agents::build("ppo", &toml::Table::new(), family.spec(), &dev, 0, 1).unwrap();
    let PolicyOutput::Probs(p) = agent.policy_output(&[4.0, 4.0, 0.0, 8.0]).unwrap() else {
        panic!("ppo gives probabilities")
    };
    assert_eq!(p.len(), 10);
    // orthogonal init with gain 0.01 on the head: close to uniform
    assert!(p.iter().all(|&x| (x - 0.2).abs() < 0.05), "{p:?}");
}

fn metric_lines(dir: &Path, skip_eval_at: u64) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            !(v["kind"] == "eval" && v["step"] == skip_eval_at)
        })
        .map(String::from)
        .collect()
}

/// Runs `full` uninterrupted into `a`, and stopped at `cut` then resumed into `b`; both must
/// end with identical files.
fn check_resume(
    full: &TrainSpec,
    cut: u64,
    files: &[&str],
    tmp: &Path,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let dev = candle_core::Device::Cpu;
    let a = tmp.join("a");
    run_train(full, 7, &dev, &a, false).unwrap();
    let mut first = full.clone();
    first.train_loop.steps = cut;
    let b = tmp.join("b");
    run_train(&first, 7, &dev, &b, false).unwrap();
    run_train(full, 7, &dev, &b, true).unwrap();
    for f in files {
        assert_same_tensors(&a, &b, f);
    }
    let (la, lb) = (metric_lines(&a, cut), metric_lines(&b, cut));
    assert!(la.len() > 10);
    if let Some(i) = (0..la.len().max(lb.len())).find(|&i| la.get(i) != lb.get(i)) {
        panic!(
            "metrics differ after resume at line {i}:\n  {:?}\n  {:?}",
            la.get(i),
            lb.get(i)
        );
    }
    (a, b)
}

#[test]
fn ppo_resumed_run_equals_uninterrupted_run_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let full = spec(
        r#"
env = "dark_key_to_door"
algo = "ppo"
[agent]
rollout_steps = 64
hidden = [32, 32]
[loop]
steps = 400
task = 100
eval_interval = 100
eval_episodes = 2
checkpoint_interval = 0
log_interval = 64
progress = false
"#,
    );
    // Logging at update steps only: the loop's last train metrics are not checkpointed, so a
    // run resumed mid-rollout has none to log until its next update.
    // step 150: mid-rollout (64 · 2 = 128 < 150 < 192) and mid-episode
    let (a, _) = check_resume(
        &full,
        150,
        &[
            checkpoint::MODEL_FILE,
            checkpoint::OPTIMIZER_FILE,
            checkpoint::REPLAY_FILE,
        ],
        tmp.path(),
    );
    // the checkpoint reloads into the same policy
    let data = checkpoint::load(&a).unwrap();
    let agent = agents::from_checkpoint(&data, &candle_core::Device::Cpu).unwrap();
    let PolicyOutput::Probs(p) = agent.policy_output(&[1.0, 2.0]).unwrap() else {
        panic!("probabilities")
    };
    assert_eq!(p.len(), 5);
    // a different seed gives a different run
    let c = tmp.path().join("c");
    run_train(&full, 8, &candle_core::Device::Cpu, &c, false).unwrap();
    assert!(tensors(&a, checkpoint::MODEL_FILE) != tensors(&c, checkpoint::MODEL_FILE));
}

#[test]
fn bandit_resumed_runs_equal_uninterrupted_runs() {
    for algo in ["ucb", "thompson"] {
        let tmp = tempfile::tempdir().unwrap();
        let full = spec(&format!(
            r#"
env = "bandit"
algo = "{algo}"
[loop]
steps = 1000
task = 3
eval_interval = 250
eval_episodes = 2
checkpoint_interval = 0
log_interval = 50
progress = false
"#
        ));
        let (a, _) = check_resume(&full, 430, &[checkpoint::MODEL_FILE], tmp.path());
        let data = checkpoint::load(&a).unwrap();
        let agent = agents::from_checkpoint(&data, &candle_core::Device::Cpu).unwrap();
        assert_eq!(agent.algorithm(), algo);
    }
}

#[test]
fn unknown_agent_keys_are_named_with_a_suggestion() {
    let tmp = tempfile::tempdir().unwrap();
    for (env, algo, key, want) in [
        ("dark_room", "ppo", "entropy_coeff", "entropy_coef"),
        ("dark_room", "ppo", "gae_lamda", "gae_lambda"),
        ("bandit", "ucb", "exploraton", "exploration"),
        ("bandit", "thompson", "prior_alfa", "prior_alpha"),
    ] {
        let mut s = ppo_spec(&format!("{env:?}"), 0, 10, 1);
        s.algo = algo.into();
        s.agent.insert(key.into(), toml::Value::Float(0.1));
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
            e.contains(key) && e.contains(&format!("did you mean `{want}`")),
            "{e}"
        );
    }
    // PPO refuses a continuous action space, naming the env
    let mut s = ppo_spec("\"pendulum\"", 0, 10, 1);
    s.train_loop.task = None;
    let e = run_train(
        &s,
        0,
        &candle_core::Device::Cpu,
        &tmp.path().join("y"),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("discrete") && e.contains("pendulum"), "{e}");
}

/// Not part of the suite: PPO's greedy return over many dark-room goals and key-to-door tasks,
/// to check that the defaults learn for most tasks (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn sweep_ppo_over_tasks() {
    let steps: u64 = std::env::var("SWEEP_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4_000);
    // SWEEP_ENV: an id, or a TOML inline table such as `{ id = "dark_key_to_door", observe_key = true }`.
    let env = std::env::var("SWEEP_ENV").unwrap_or_else(|_| "dark_room".into());
    let env_value = if env.starts_with('{') {
        env.clone()
    } else {
        format!("{env:?}")
    };
    let tasks: Vec<usize> = std::env::var("SWEEP_TASKS")
        .ok()
        .map(|s| s.split(',').map(|t| t.parse().unwrap()).collect())
        .unwrap_or_else(|| (0..81).step_by(4).collect());
    let mut ok = 0;
    for (i, &task) in tasks.iter().enumerate() {
        let episodes = if env == "dark_room" { 1 } else { 20 };
        let mut s = ppo_spec(&env_value, task, steps, episodes);
        if let Ok(agent) = std::env::var("SWEEP_AGENT") {
            s.agent = toml::from_str(&agent).unwrap();
        }
        let (summary, returns) = train_with_returns(&s, i as u64);
        let ret = summary.final_eval.unwrap().mean_return;
        let k = returns.len().div_ceil(10).max(1);
        let curve: Vec<String> = returns
            .chunks(k)
            .map(|c| format!("{:.1}", c.iter().map(|p| p.1).sum::<f64>() / c.len() as f64))
            .collect();
        let target = if env == "dark_room" {
            0.8 * optimal_return(&env, task)
        } else {
            1.5
        };
        ok += usize::from(ret >= target);
        println!(
            "task {task:5}: greedy return {ret:6.2} (target {target:5.2}); training returns by tenth: {}",
            curve.join(" ")
        );
    }
    println!(
        "{ok}/{} tasks reached the target in {steps} steps",
        tasks.len()
    );
}
