//! In-context reinforcement learning beyond Dark Room (whose test is in `tests/ad.rs`) at a
//! small size with a bar at or below the experiment file's: the source's histories on training
//! tasks → a small AD model → frozen evaluation on held-out tasks. Dark Room Hard and
//! Key-to-Door run in smaller rooms (`env.size`): at their full size, models a test can afford
//! did not learn in context (0.04 → 0.04 success, 0.17 → 0.23 return).

use candle_core::Device;
use reincarnate::ad::{distill, Activation, DistillConfig, GptConfig, Mode, Positions, Target};
use reincarnate::collect::{collect, CollectSpec};
use reincarnate::envs::{EnvConfig, EnvRef, TaskFamily, TaskSet};
use reincarnate::eval::{evaluate, EvalReport, RandomPolicy};
use std::path::Path;

fn histories(out: &Path, env: EnvRef, algo: &str, agent: &str, runs: usize, steps: u64) {
    let spec = CollectSpec {
        env,
        algo: algo.into(),
        agent: toml::from_str(agent).unwrap(),
        tasks: TaskSet::Train,
        runs,
        steps,
        threads: None,
        policy: None,
        epsilon: 0.0,
    };
    collect(&spec, 0, None, out, &Device::Cpu).unwrap();
}

fn model(n_layer: usize, d_model: usize, context: usize, dropout: f64) -> GptConfig {
    GptConfig {
        n_layer,
        n_head: 2,
        d_model,
        d_ff: 2 * d_model,
        context,
        positions: Positions::Learned,
        activation: Activation::Relu,
        dropout,
        attn_dropout: dropout,
        ..GptConfig::default()
    }
}

fn distill_and_eval(
    data: &Path,
    out: &Path,
    cfg: DistillConfig,
    episodes: usize,
    seed: u64,
) -> EvalReport {
    distill(&cfg, data, out, 0, &Device::Cpu, false).unwrap();
    let ck = reincarnate::checkpoint::load(out).unwrap();
    reincarnate::ad::curves::eval_in_context(&ck, None, TaskSet::Test, episodes, seed, &Device::Cpu)
        .unwrap()
}

/// The adversarial bandit: UCB histories where odd arms pay, evaluation where even arms pay
/// (out of distribution). AD's normalised score (r − r_random) / (r_UCB − r_random) over the
/// last 5 of 10 episodes, sampling the model's distribution: 0.95 in `experiments/bandit-ad.toml`
/// (context 500); here ≥ 0.6. Taking its most likely action: below.
#[test]
fn ad_learns_out_of_distribution_bandits_in_context() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("histories");
    histories(&data, EnvRef::Id("bandit".into()), "ucb", "", 100, 1000);
    let cfg = DistillConfig {
        mode: Mode::Ad,
        model: model(2, 32, 200, 0.0),
        steps: 1500,
        batch: 16,
        lr: 1e-3,
        warmup_steps: 100,
        log_interval: 500,
        ..DistillConfig::default()
    };
    let out = tmp.path().join("ad");
    let r = distill_and_eval(&data, &out, cfg, 10, 0);
    let n = r.normalised_score_by_episode.clone().unwrap();
    let last = n[5..].iter().sum::<f64>() / 5.0;
    eprintln!("bandit AD normalised score by episode {n:.2?}");
    assert!(
        last >= 0.6,
        "normalised score over the last 5 episodes {last:.3}: {n:?}"
    );
    // UCB chooses deterministically: the model's most likely action is its best guess of UCB's
    // choice. Taken, it reaches UCB's final level (over its last 5 episodes on the same tasks
    // and seeds) at episode 2 in the experiment file, where UCB needs 8. Here, with a context of
    // two episodes (five there), it levels off below UCB's final level (at about 76 against
    // 82.5); the bar is 90% of that level, reached before UCB reaches it.
    let ck = reincarnate::checkpoint::load(&out).unwrap();
    let greedy = reincarnate::ad::curves::eval_in_context_at(
        &ck,
        None,
        TaskSet::Test,
        10,
        0,
        &Device::Cpu,
        0.0,
        None,
    )
    .unwrap();
    let ucb = &greedy.baselines["ucb"];
    let level = 0.9 * mean(&ucb[5..]);
    let first = |c: &[f64]| c.iter().position(|&r| r >= level).map(|i| i + 1);
    let (ad_at, ucb_at) = (first(&greedy.returns_by_episode), first(ucb));
    eprintln!(
        "bandit AD (most likely action) returns {:.1?}, UCB {ucb:.1?}: 90% of UCB's final level ({level:.2}) at episode {ad_at:?} against {ucb_at:?}",
        greedy.returns_by_episode
    );
    assert!(
        ad_at.is_some() && ad_at < ucb_at,
        "most likely action: returns {:?} reach 90% of UCB's final level ({level:.2}) at {ad_at:?}, UCB at {ucb_at:?} ({ucb:?})",
        greedy.returns_by_episode
    );
}

/// A gridworld of side `size` holding out `test_fraction` of its tasks.
fn small_room(id: &str, size: usize, test_fraction: f64) -> EnvRef {
    let mut cfg = EnvConfig::new(id);
    cfg.size = Some(size);
    cfg.test_fraction = Some(test_fraction);
    EnvRef::Config(cfg)
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// AD training of the small gridworld tests: batch 16, peak learning rate 2e-3 after 50 steps.
fn small_ad(model: GptConfig, steps: u64, every_kth_episode: usize) -> DistillConfig {
    DistillConfig {
        mode: Mode::Ad,
        model,
        steps,
        batch: 16,
        lr: 2e-3,
        warmup_steps: 50,
        every_kth_episode,
        log_interval: 500,
        ..DistillConfig::default()
    }
}

/// The mean return of uniformly random actions on the held-out tasks of `env`.
fn random_return(env: &EnvRef, episodes: usize) -> f64 {
    let family = TaskFamily::new(&env.config()).unwrap();
    let mut p = RandomPolicy::new(family.spec().action_space.clone(), 0);
    let r = evaluate(&family, TaskSet::Test, episodes, 0, &mut p).unwrap();
    mean(&r.returns_by_episode)
}

/// Dark Room Hard in a 9 × 9 room (81 goals, 16 held out; reward once, on reaching the goal):
/// optimistic tabular-Q histories → AD with the final-observation block → frozen evaluation,
/// where the success rate must start near random's (within 0.2 over the first 5 episodes;
/// random walks succeed about 7% of the time), rise by 0.3 and end at least 0.35 above random
/// over the last 20 of 100 episodes (measured: 0.19 → 0.60).
#[test]
fn ad_learns_small_dark_room_hard_in_context() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("histories");
    let env = small_room("dark_room_hard", 9, 0.2);
    let q = "gamma = 0.9\ninitial_value = 0.15";
    let random = random_return(&env, 100);
    histories(&data, env, "tabular_q", q, DRH_RUNS, DRH_STEPS);
    let model = GptConfig {
        final_obs: true,
        ..model(2, 32, 200, 0.0)
    };
    let cfg = small_ad(model, DRH_DISTILL_STEPS, 10);
    let r = distill_and_eval(&data, &tmp.path().join("ad"), cfg, 100, 0);
    let s = &r.returns_by_episode;
    let (first, last) = (mean(&s[..5]), mean(&s[80..]));
    eprintln!(
        "small Dark Room Hard: AD success {first:.2} (episodes 1-5) -> {last:.2} (81-100), random {random:.2}"
    );
    assert!(
        first <= random + 0.2 && last >= first + 0.3 && last >= random + 0.35,
        "success {first:.3} over episodes 1-5, {last:.3} over 81-100, random {random:.3}: {s:.2?}"
    );
}

/// Dark Key-to-Door in a 7 × 7 room (2,401 tasks, 48 held out): histories of tabular Q planning
/// over the room's known moves with an episode memory (the source of
/// `experiments/key-to-door-ad.toml`) → AD with the episode-start, return-so-far and
/// final-observation features, trained on the source's action probabilities → frozen
/// evaluation. AD's first episode must score near random (within 0.25; random scores about 0.4
/// of 2 here) and its last 10 of 60 at least 1.6 of 2, the full-size bar (measured: 0.31 / 0.40
/// on evaluation seeds 0 / 1 → 2.00).
#[test]
fn ad_learns_small_key_to_door_in_context() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("histories");
    let env = small_room("dark_key_to_door", 7, 0.02);
    let q = "gamma = 0.9\ninitial_value = 0.0\nmemory = \"episode_return\"\n\
             planning_sweeps = 100\nknown_moves = true";
    let random = random_return(&env, 60);
    histories(&data, env, "tabular_q", q, K2D_RUNS, K2D_STEPS);
    let model = GptConfig {
        episode_start: true,
        episode_return: true,
        final_obs: true,
        ..model(2, 32, 200, 0.0)
    };
    let cfg = DistillConfig {
        target: Target::Policy,
        ..small_ad(model, K2D_DISTILL_STEPS, 1)
    };
    let r = distill_and_eval(&data, &tmp.path().join("ad"), cfg, 60, 0);
    let s = &r.returns_by_episode;
    let (first, last) = (s[0], mean(&s[50..]));
    eprintln!(
        "small Key-to-Door: AD return {first:.2} (episode 1) -> {last:.2} (51-60), random {random:.2}"
    );
    assert!(
        first <= random + 0.25 && last >= 1.6,
        "return {first:.3} over episode 1, {last:.3} over 51-60, random {random:.3}: {s:.2?}"
    );
}

const DRH_RUNS: usize = 65;
const DRH_STEPS: u64 = 5000;
const DRH_DISTILL_STEPS: u64 = 2500;
const K2D_RUNS: usize = 400;
const K2D_STEPS: u64 = 1000;
const K2D_DISTILL_STEPS: u64 = 2000;
