//! Multi-armed Bernoulli bandits (Algorithm Distillation, Laskin et al. 2023, §5).
//!
//! 10 arms, 100 pulls an episode, a constant observation (a single 0). Each task is a vector
//! of arm means generated from `split_seed` and the task index, so a family is reproducible.
//!
//! Adversarial family (`bandit`): the first `(1 − test_fraction)·n` tasks are training tasks,
//! the rest test tasks. In a training task, with probability 0.95 the odd arms are the good ones
//! (means uniform in [0.5, 1]) and the even arms the bad ones (uniform in [0, 0.5]); with
//! probability 0.05 the roles swap. Test tasks reverse it: even arms are good 95% of the time.
//! The paper says only that odd arms pay more 95% of the time in training; the two uniform
//! halves are this platform's reading of "pay more".
//!
//! Uniform family (`bandit/uniform`): means uniform in [0, 1], random split.

use super::{discrete_action, Action, Bounds, Env, EnvConfig, Space, Step};
use crate::error::Result;
use crate::rng::{derive_seed, Rng};
use serde::{Deserialize, Serialize};

pub const ARMS: usize = 10;
pub const PULLS: u32 = 100;
const DEFAULT_TASKS: usize = 1000;
const DEFAULT_TEST_FRACTION: f64 = 0.2;

pub fn num_tasks(cfg: &EnvConfig) -> usize {
    cfg.num_tasks.unwrap_or(DEFAULT_TASKS)
}

fn num_train(cfg: &EnvConfig) -> usize {
    let n = num_tasks(cfg);
    let f = cfg.test_fraction.unwrap_or(DEFAULT_TEST_FRACTION);
    if n <= 1 {
        return n;
    }
    n - ((n as f64 * f).round() as usize).clamp(usize::from(f > 0.0), n - 1)
}

/// Train tasks come first (odd arms favoured), test tasks last (even arms favoured).
pub fn adversarial_split(cfg: &EnvConfig, n: usize) -> (Vec<usize>, Vec<usize>) {
    let k = num_train(cfg);
    if k == n {
        let all: Vec<usize> = (0..n).collect();
        return (all.clone(), all);
    }
    ((0..k).collect(), (k..n).collect())
}

#[derive(Serialize, Deserialize)]
pub struct Bandit {
    means: [f64; ARMS],
    t: u32,
    limit: u32,
    rng: Rng,
    obs_space: Space,
    act_space: Space,
}

impl Bandit {
    fn with_means(means: [f64; ARMS], cfg: &EnvConfig, task: usize) -> Self {
        Self {
            means,
            t: 0,
            limit: cfg.max_episode_steps.unwrap_or(PULLS),
            rng: Rng::seed_from_u64(task as u64),
            obs_space: Space::Box {
                shape: vec![1],
                low: Bounds::Scalar(0.0),
                high: Bounds::Scalar(0.0),
            },
            act_space: Space::Discrete { n: ARMS },
        }
    }

    fn task_rng(cfg: &EnvConfig, task: usize) -> Rng {
        Rng::seed_from_u64(derive_seed(cfg.split_seed.unwrap_or(0), task as u64))
    }

    pub fn adversarial(cfg: &EnvConfig, task: usize) -> Self {
        let mut rng = Self::task_rng(cfg, task);
        let is_test = task >= num_train(cfg) && num_train(cfg) < num_tasks(cfg);
        let odd_good = rng.bernoulli(0.95) != is_test;
        let mut means = [0.0; ARMS];
        for (arm, m) in means.iter_mut().enumerate() {
            let good = (arm % 2 == 1) == odd_good;
            *m = if good {
                rng.uniform_range(0.5, 1.0)
            } else {
                rng.uniform_range(0.0, 0.5)
            };
        }
        Self::with_means(means, cfg, task)
    }

    pub fn uniform(cfg: &EnvConfig, task: usize) -> Self {
        let mut rng = Self::task_rng(cfg, task);
        let mut means = [0.0; ARMS];
        for m in &mut means {
            *m = rng.uniform();
        }
        Self::with_means(means, cfg, task)
    }

    pub fn means(&self) -> &[f64; ARMS] {
        &self.means
    }

    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "means": self.means })
    }
}

impl Env for Bandit {
    crate::serde_snapshot!("bandit");

    fn observation_space(&self) -> &Space {
        &self.obs_space
    }
    fn action_space(&self) -> &Space {
        &self.act_space
    }
    fn max_episode_steps(&self) -> u32 {
        self.limit
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
        if let Some(s) = seed {
            self.rng = Rng::seed_from_u64(s);
        }
        self.t = 0;
        obs[0] = 0.0;
    }

    #[inline]
    fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> Result<Step> {
        let a = discrete_action("bandit", action, ARMS)?;
        self.t += 1;
        obs[0] = 0.0;
        Ok(Step {
            reward: f32::from(u8::from(self.rng.bernoulli(self.means[a]))),
            terminated: false,
            truncated: self.t >= self.limit,
        })
    }

    /// Expected return of always pulling the best arm.
    fn optimal_return(&self) -> Option<f64> {
        let best = self.means.iter().cloned().fold(f64::MIN, f64::max);
        Some(best * self.limit as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adversarial_train_tasks_favour_odd_arms_test_tasks_even() {
        let cfg = EnvConfig::new("bandit");
        let (train, test) = adversarial_split(&cfg, num_tasks(&cfg));
        assert_eq!((train.len(), test.len()), (800, 200));
        let odd_best = |t: usize| {
            let m = Bandit::adversarial(&cfg, t).means;
            let best = (0..ARMS).max_by(|&a, &b| m[a].total_cmp(&m[b])).unwrap();
            best % 2 == 1
        };
        let train_odd = train.iter().filter(|&&t| odd_best(t)).count() as f64 / 800.0;
        let test_odd = test.iter().filter(|&&t| odd_best(t)).count() as f64 / 200.0;
        assert!((train_odd - 0.95).abs() < 0.03, "{train_odd}");
        assert!((test_odd - 0.05).abs() < 0.04, "{test_odd}");
    }

    #[test]
    fn pulls_pay_their_mean_and_episode_lasts_100() {
        let cfg = EnvConfig::new("bandit/uniform");
        let mut env = Bandit::uniform(&cfg, 3);
        let m = env.means[2];
        let mut obs = [0.0];
        env.reset(Some(0), &mut obs);
        let mut total = 0.0;
        let mut pulls = 0;
        for ep in 0..200 {
            env.reset(None, &mut obs);
            for t in 0..PULLS {
                let s = env.step(Action::Discrete(2), &mut obs).unwrap();
                total += s.reward as f64;
                pulls += 1;
                assert_eq!(s.truncated, t == PULLS - 1, "episode {ep} step {t}");
            }
        }
        let est = total / pulls as f64;
        let se = (m * (1.0 - m) / pulls as f64).sqrt();
        assert!((est - m).abs() < 4.0 * se + 1e-9, "{est} vs {m}");
    }
}
