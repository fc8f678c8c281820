//! MinAtar (Young & Tian 2019, "MinAtar: An Atari-inspired testbed for thorough and reproducible
//! reinforcement learning experiments"): five miniature Atari games on a 10×10 grid whose
//! observation is a stack of boolean channels.
//!
//! The rules follow the reference Python package (`minatar` 1.0.15) step for step: spawn rules,
//! timers, speeds, difficulty ramping, rewards and terminal conditions, including the package's
//! quirks (noted in each game's file), so that returns and learning curves are comparable with
//! published MinAtar results. Only the random number generator differs (ours is [`Rng`]), so
//! trajectories match the package in distribution, not draw for draw.
//!
//! Common to all games ([`MinAtar`] does this part):
//! - Actions: `Discrete(6)` in MinAtar's order, no-op, left, up, right, down, fire, for every game
//!   (the package's `num_actions()`; actions a game ignores are no-ops there).
//! - Sticky actions: with probability `sticky_action_prob` (default 0.1) the previous action is
//!   repeated instead of the chosen one, as the package's `Environment.act` does (Machado et al.
//!   2018). The previous action is reset to no-op at every `reset`; the package carries it over
//!   from the last episode, which would make an episode depend on the one before it.
//! - Observation: `Box(0, 1, [10, 10, C])`, flattened channel-last like the package's
//!   `state()` array, index `(row · 10 + col) · C + channel`, values 0.0 / 1.0.
//! - Time limit: the package has none besides Freeway's internal 2,500-frame timer. We truncate
//!   at [`DEFAULT_MAX_EPISODE_STEPS`] (10,000) unless `max_episode_steps` is set; a random policy
//!   never gets close (its longest episodes are Freeway's 2,501 steps).

mod asterix;
mod breakout;
mod freeway;
mod seaquest;
mod space_invaders;

pub use asterix::Asterix;
pub use breakout::Breakout;
pub use freeway::Freeway;
pub use seaquest::Seaquest;
pub use space_invaders::SpaceInvaders;

use super::{discrete_action, Action, Bounds, Env, EnvConfig, Space, Step};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Grid side: every MinAtar observation is 10×10.
pub const SIZE: usize = 10;
/// Number of actions of every game: no-op, left, up, right, down, fire.
pub const NUM_ACTIONS: usize = 6;
/// Truncation horizon when `max_episode_steps` is not set (the package has none).
pub const DEFAULT_MAX_EPISODE_STEPS: u32 = 10_000;
/// Default probability of repeating the previous action (the package's default).
pub const DEFAULT_STICKY_ACTION_PROB: f64 = 0.1;

/// Action indices, in MinAtar's `action_map` order `['n','l','u','r','d','f']`.
pub(crate) const NOOP: usize = 0;
pub(crate) const LEFT: usize = 1;
pub(crate) const UP: usize = 2;
pub(crate) const RIGHT: usize = 3;
pub(crate) const DOWN: usize = 4;
pub(crate) const FIRE: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Game {
    Asterix,
    Breakout,
    Freeway,
    Seaquest,
    SpaceInvaders,
}

impl Game {
    pub const ALL: [Game; 5] = [
        Game::Asterix,
        Game::Breakout,
        Game::Freeway,
        Game::Seaquest,
        Game::SpaceInvaders,
    ];

    /// Number of observation channels `C`.
    pub fn channels(self) -> usize {
        match self {
            Game::Asterix => Asterix::CHANNELS,
            Game::Breakout => Breakout::CHANNELS,
            Game::Freeway => Freeway::CHANNELS,
            Game::Seaquest => Seaquest::CHANNELS,
            Game::SpaceInvaders => SpaceInvaders::CHANNELS,
        }
    }
}

/// Builds the environment of `game` with the MinAtar options of `cfg` (sticky-action
/// probability, difficulty ramping, time limit).
pub fn make(game: Game, cfg: &EnvConfig) -> Result<Box<dyn Env>> {
    let sticky = cfg.sticky_action_prob.unwrap_or(DEFAULT_STICKY_ACTION_PROB);
    if !(0.0..=1.0).contains(&sticky) {
        return Err(Error::Config(format!(
            "env.sticky_action_prob of `{}` must be in [0, 1], got {sticky}",
            cfg.id
        )));
    }
    if cfg.max_episode_steps == Some(0) {
        return Err(Error::Config(format!(
            "env.max_episode_steps of `{}` must be at least 1",
            cfg.id
        )));
    }
    let ramping = cfg.difficulty_ramping.unwrap_or(true);
    let limit = cfg.max_episode_steps.unwrap_or(DEFAULT_MAX_EPISODE_STEPS);
    Ok(match game {
        Game::Asterix => Box::new(MinAtar::new(Asterix::new(ramping), sticky, limit)),
        Game::Breakout => Box::new(MinAtar::new(Breakout::new(), sticky, limit)),
        Game::Freeway => Box::new(MinAtar::new(Freeway::new(), sticky, limit)),
        Game::Seaquest => Box::new(MinAtar::new(Seaquest::new(ramping), sticky, limit)),
        Game::SpaceInvaders => Box::new(MinAtar::new(SpaceInvaders::new(ramping), sticky, limit)),
    })
}

/// The rules of one game: what the package's per-game `Env` class does, minus sticky actions.
pub trait Rules: Send + serde::Serialize + serde::de::DeserializeOwned {
    /// Registered id, for error messages.
    const ID: &'static str;
    /// Observation channels `C`.
    const CHANNELS: usize;
    /// Starts a new episode (the package's `reset`).
    fn reset(&mut self, rng: &mut Rng);
    /// Advances one frame under `action` (already validated, sticky already applied) and returns
    /// `(reward, terminal)` (the package's `act` on a non-terminal state).
    fn act(&mut self, action: usize, rng: &mut Rng) -> (f32, bool);
    /// Sets the active cells of the observation; `obs` is all zeros on entry (the package's
    /// `state`).
    fn write_obs(&self, obs: &mut [f32]);
}

/// Marks cell `(row, col)` of channel `ch` in a channel-last `[10, 10, C]` observation.
#[inline(always)]
pub(crate) fn set<const C: usize>(obs: &mut [f32], row: usize, col: usize, ch: usize) {
    obs[(row * SIZE + col) * C + ch] = 1.0;
}

/// Marks, in channel `ch`, every cell of a 10×10 bitmap stored as one `u16` per row (bit `c` =
/// column `c`).
#[inline]
pub(crate) fn set_rows<const C: usize>(obs: &mut [f32], rows: &[u16; SIZE], ch: usize) {
    for (r, &bits) in rows.iter().enumerate() {
        let mut b = bits;
        while b != 0 {
            let c = b.trailing_zeros() as usize;
            set::<C>(obs, r, c, ch);
            b &= b - 1;
        }
    }
}

/// A MinAtar game behind the [`Env`] interface: sticky actions, time limit, the environment's own
/// [`Rng`], and the observation written on every reset and step.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(bound = "R: Rules")]
pub struct MinAtar<R: Rules> {
    rules: R,
    rng: Rng,
    sticky_action_prob: f64,
    last_action: usize,
    terminal: bool,
    t: u32,
    limit: u32,
    obs_space: Space,
    act_space: Space,
}

impl<R: Rules> MinAtar<R> {
    pub fn new(rules: R, sticky_action_prob: f64, limit: u32) -> Self {
        Self {
            rules,
            rng: Rng::seed_from_u64(0),
            sticky_action_prob,
            last_action: NOOP,
            terminal: false,
            t: 0,
            limit,
            obs_space: Space::Box {
                shape: vec![SIZE, SIZE, R::CHANNELS],
                low: Bounds::Scalar(0.0),
                high: Bounds::Scalar(1.0),
            },
            act_space: Space::Discrete { n: NUM_ACTIONS },
        }
    }

    /// The game state, for inspection.
    pub fn rules(&self) -> &R {
        &self.rules
    }

    fn write_obs(&self, obs: &mut [f32]) {
        debug_assert_eq!(obs.len(), SIZE * SIZE * R::CHANNELS);
        obs.fill(0.0);
        self.rules.write_obs(obs);
    }
}

impl<R: Rules> Env for MinAtar<R> {
    crate::serde_snapshot!("minatar");

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
        self.rules.reset(&mut self.rng);
        self.last_action = NOOP;
        self.terminal = false;
        self.t = 0;
        self.write_obs(obs);
    }

    fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> Result<Step> {
        let mut a = discrete_action(R::ID, action, NUM_ACTIONS)?;
        if self.terminal {
            // As the package: acting in a terminal state changes nothing and gives no reward.
            self.write_obs(obs);
            return Ok(Step {
                reward: 0.0,
                terminated: true,
                truncated: false,
            });
        }
        if self.sticky_action_prob > 0.0 && self.rng.bernoulli(self.sticky_action_prob) {
            a = self.last_action;
        }
        self.last_action = a;
        let (reward, terminal) = self.rules.act(a, &mut self.rng);
        self.terminal = terminal;
        self.t += 1;
        self.write_obs(obs);
        Ok(Step {
            reward,
            terminated: terminal,
            truncated: !terminal && self.t >= self.limit,
        })
    }
}

/// Shared helpers for the games' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn env(game: Game, sticky: f64, ramping: bool) -> Box<dyn Env> {
        let mut cfg = EnvConfig::new("minatar/test");
        cfg.sticky_action_prob = Some(sticky);
        cfg.difficulty_ramping = Some(ramping);
        make(game, &cfg).expect("valid config")
    }

    /// Observation and reward sequence of `steps` steps from `reset(Some(seed))` under a fixed
    /// pseudo-random action sequence, resetting (with `None`) at episode ends.
    pub fn rollout(game: Game, seed: u64, steps: usize) -> (Vec<f32>, Vec<f32>) {
        let mut e = env(game, 0.1, true);
        let d = SIZE * SIZE * game.channels();
        let mut obs = vec![0.0; d];
        let mut all_obs = Vec::with_capacity(d * (steps + 1));
        let mut rewards = Vec::with_capacity(steps);
        let mut actions = Rng::seed_from_u64(12_345);
        e.reset(Some(seed), &mut obs);
        all_obs.extend_from_slice(&obs);
        for _ in 0..steps {
            let s = e
                .step(Action::Discrete(actions.below(NUM_ACTIONS)), &mut obs)
                .expect("valid action");
            all_obs.extend_from_slice(&obs);
            rewards.push(s.reward);
            if s.done() {
                e.reset(None, &mut obs);
                all_obs.extend_from_slice(&obs);
            }
        }
        (all_obs, rewards)
    }

    /// Same seed gives the same trajectory; different seeds give different ones; observations
    /// are 0/1 with exactly the advertised shape.
    pub fn check_determinism(game: Game) {
        let (o1, r1) = rollout(game, 7, 3_000);
        let (o2, r2) = rollout(game, 7, 3_000);
        assert!(
            o1 == o2 && r1 == r2,
            "{game:?}: same seed must replay exactly"
        );
        let (o3, _) = rollout(game, 8, 3_000);
        assert!(o1 != o3, "{game:?}: different seeds should differ");
        assert!(o1.iter().all(|&v| v == 0.0 || v == 1.0));
    }

    /// Mean return and its standard error over `episodes` episodes of a uniformly random policy
    /// over all six actions, sticky actions 0.1, ramping on (the reference protocol).
    pub fn random_policy_return(game: Game, episodes: usize, seed: u64) -> (f64, f64) {
        let mut e = env(game, 0.1, true);
        let mut obs = vec![0.0; SIZE * SIZE * game.channels()];
        let mut policy = Rng::seed_from_u64(seed ^ 0xA5A5);
        let mut returns = Vec::with_capacity(episodes);
        e.reset(Some(seed), &mut obs);
        for _ in 0..episodes {
            let mut ret = 0.0f64;
            loop {
                let s = e
                    .step(Action::Discrete(policy.below(NUM_ACTIONS)), &mut obs)
                    .expect("valid action");
                ret += f64::from(s.reward);
                assert!(
                    !s.truncated,
                    "{game:?}: a random episode hit the time limit"
                );
                if s.done() {
                    break;
                }
            }
            returns.push(ret);
            e.reset(None, &mut obs);
        }
        let n = returns.len() as f64;
        let mean = returns.iter().sum::<f64>() / n;
        let var = returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, (var / n).sqrt())
    }

    /// Asserts that our random-policy mean lies within 2 combined standard errors of the
    /// package's.
    pub fn check_random_policy(game: Game, episodes: usize, ref_mean: f64, ref_se: f64) {
        let (mean, se) = random_policy_return(game, episodes, 2024);
        let combined = (se * se + ref_se * ref_se).sqrt();
        assert!(
            (mean - ref_mean).abs() <= 2.0 * combined,
            "{game:?}: random-policy return {mean:.4} ± {se:.4} vs package {ref_mean:.4} ± {ref_se:.4} \
             (|diff| {:.4} > 2 × combined s.e. {combined:.4})",
            (mean - ref_mean).abs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_match_the_package() {
        for game in Game::ALL {
            let e = testing::env(game, 0.1, true);
            assert_eq!(
                e.observation_space(),
                &Space::Box {
                    shape: vec![10, 10, game.channels()],
                    low: Bounds::Scalar(0.0),
                    high: Bounds::Scalar(1.0)
                }
            );
            assert_eq!(e.action_space(), &Space::Discrete { n: 6 });
            assert_eq!(e.max_episode_steps(), DEFAULT_MAX_EPISODE_STEPS);
        }
        let chans: Vec<usize> = Game::ALL.iter().map(|g| g.channels()).collect();
        assert_eq!(chans, vec![4, 4, 7, 10, 6]);
    }

    #[test]
    fn bad_actions_and_options_are_rejected_with_names() {
        let mut e = testing::env(Game::Breakout, 0.1, true);
        let mut obs = vec![0.0; 400];
        e.reset(Some(0), &mut obs);
        let err = e
            .step(Action::Discrete(6), &mut obs)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("minatar/breakout") && err.contains("0..6"),
            "{err}"
        );
        let mut cfg = EnvConfig::new("minatar/breakout");
        cfg.sticky_action_prob = Some(1.5);
        let err = make(Game::Breakout, &cfg)
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains("sticky_action_prob"), "{err}");
    }

    #[test]
    fn time_limit_truncates() {
        let mut cfg = EnvConfig::new("minatar/freeway");
        cfg.max_episode_steps = Some(5);
        let mut e = make(Game::Freeway, &cfg).unwrap();
        let mut obs = vec![0.0; 700];
        e.reset(Some(1), &mut obs);
        for t in 1..=5 {
            let s = e.step(Action::Discrete(NOOP), &mut obs).unwrap();
            assert_eq!(s.truncated, t == 5);
            assert!(!s.terminated);
        }
    }

    #[test]
    fn sticky_actions_repeat_the_previous_action() {
        // With probability 1 the first action (previous = no-op) repeats forever: the Breakout
        // paddle never moves although the agent always presses right.
        let mut e = testing::env(Game::Breakout, 1.0, true);
        let mut obs = vec![0.0; 400];
        e.reset(Some(3), &mut obs);
        for _ in 0..3 {
            e.step(Action::Discrete(RIGHT), &mut obs).unwrap();
            assert_eq!(obs[(9 * 10 + 4) * 4], 1.0, "paddle must stay at column 4");
        }
        // With probability 0 it moves at once.
        let mut e = testing::env(Game::Breakout, 0.0, true);
        e.reset(Some(3), &mut obs);
        e.step(Action::Discrete(RIGHT), &mut obs).unwrap();
        assert_eq!(obs[(9 * 10 + 5) * 4], 1.0, "paddle must move to column 5");
    }

    #[test]
    fn stepping_after_termination_is_inert() {
        let mut e = testing::env(Game::Breakout, 0.0, true);
        let mut obs = vec![0.0; 400];
        e.reset(Some(0), &mut obs);
        let mut steps = 0;
        while !e.step(Action::Discrete(NOOP), &mut obs).unwrap().terminated {
            steps += 1;
            assert!(steps < 1_000);
        }
        let before = obs.clone();
        let s = e.step(Action::Discrete(LEFT), &mut obs).unwrap();
        assert_eq!((s.reward, s.terminated), (0.0, true));
        assert_eq!(obs, before);
    }
}
