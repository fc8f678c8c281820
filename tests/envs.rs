//! Environment suite: random-policy statistics against the reference implementations, and
//! determinism of every registered environment.

use reincarnate::envs::vec_env::ActionBatch;
use reincarnate::envs::{registry, TaskFamily, TaskSet, VecEnv};
use reincarnate::eval::{evaluate, RandomPolicy};

/// Mean of a random policy over `episodes` episodes and its standard error.
fn random_stats(id: &str, episodes: usize, seed: u64) -> (f64, f64, f64) {
    let fam = TaskFamily::from_id(id).unwrap();
    let mut p = RandomPolicy::new(fam.spec().action_space.clone(), seed);
    let r = evaluate(&fam, TaskSet::All, episodes, seed, &mut p).unwrap();
    (r.mean_return, r.stderr, r.mean_length)
}

/// |ours − reference| within 2.5 combined standard errors.
fn assert_matches(what: &str, ours: (f64, f64), reference: (f64, f64)) {
    let se = (ours.1.powi(2) + reference.1.powi(2)).sqrt();
    assert!(
        (ours.0 - reference.0).abs() < 2.5 * se,
        "{what}: ours {:.3} ± {:.3}, reference {:.3} ± {:.3}",
        ours.0,
        ours.1,
        reference.0,
        reference.1
    );
}

#[test]
fn cartpole_random_episode_length_matches_gymnasium() {
    // Gymnasium 1.4.0 CartPole-v1, uniform random actions, 5,000 episodes: 22.144 ± 0.167.
    // (A pole limit of 15° instead of 12°, or force 15 N, moves this by far more than 2.5 s.e.)
    let (ret, se, len) = random_stats("cartpole", 5_000, 11);
    assert_eq!(ret, len, "reward is 1 per step");
    assert_matches("CartPole-v1 length", (len, se), (22.144, 0.167));
}

#[test]
fn pendulum_random_return_matches_gymnasium() {
    // Gymnasium 1.4.0 Pendulum-v1, uniform random torques, 2,000 episodes: −1225.5 ± 6.4.
    let (ret, se, len) = random_stats("pendulum", 2_000, 12);
    assert_eq!(len, 200.0);
    assert_matches("Pendulum-v1 return", (ret, se), (-1225.53, 6.38));
}

#[test]
fn mountain_car_random_never_reaches_the_flag_and_pays_for_force() {
    // Uniform forces in [−1, 1] cost 0.1·E[a²] = 1/30 per step over 999 steps ≈ −33.3; a random
    // walk never climbs the hill within the limit.
    let (ret, se, len) = random_stats("mountain_car_continuous", 50, 13);
    assert_eq!(len, 999.0);
    assert!(
        (ret + 999.0 / 30.0).abs() < 4.0 * se.max(0.05),
        "{ret} ± {se}"
    );
}

/// Steps a batch of three tasks of `id`, seeded with `seed`, under a fixed random action
/// sequence, and returns the trace.
fn trace(id: &str, seed: u64) -> Vec<(Vec<f32>, Vec<f32>, Vec<bool>)> {
    let fam = TaskFamily::from_id(id).unwrap();
    let tasks: Vec<usize> = fam.tasks(TaskSet::Train).into_iter().take(3).collect();
    let mut v = VecEnv::new(&fam, &tasks, seed).unwrap();
    v.reset();
    // The same action sequence for every seed: only the environments' own randomness varies.
    let mut rng = reincarnate::rng::Rng::seed_from_u64(0);
    let spec = fam.spec().clone();
    let mut out = vec![(v.obs().to_vec(), vec![], vec![])];
    for _ in 0..300 {
        match spec.action_space.discrete_n() {
            Some(n) => {
                let a: Vec<usize> = (0..tasks.len()).map(|_| rng.below(n)).collect();
                v.step(ActionBatch::Discrete(&a)).unwrap();
            }
            None => {
                let d = spec.action_space.flat_dim();
                let a: Vec<f32> = (0..tasks.len() * d)
                    .map(|_| rng.uniform_f32() * 2.0 - 1.0)
                    .collect();
                v.step(ActionBatch::Continuous(&a)).unwrap();
            }
        }
        let done: Vec<bool> = (0..tasks.len())
            .map(|i| v.terminated()[i] || v.truncated()[i])
            .collect();
        out.push((v.obs().to_vec(), v.rewards().to_vec(), done));
    }
    out
}

#[test]
fn every_env_is_deterministic_per_seed_and_seeds_differ() {
    for e in registry() {
        let a = trace(e.id, 1);
        assert_eq!(
            a,
            trace(e.id, 1),
            "{}: same seed, different trajectory",
            e.id
        );
        // Deterministic environments (fixed start, fixed goal) cannot differ by seed.
        if matches!(e.id, "dark_room" | "dark_room_hard") {
            continue;
        }
        assert_ne!(
            a,
            trace(e.id, 2),
            "{}: different seeds gave the same trajectory",
            e.id
        );
    }
}
