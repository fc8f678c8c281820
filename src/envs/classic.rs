//! Classic control, with the dynamics, rewards, start distributions and time limits of
//! Gymnasium's CartPole-v1, Pendulum-v1 and MountainCarContinuous-v0. State is kept in f64 as
//! Gymnasium does; observations are emitted as f32.

use super::{continuous_action, discrete_action, Action, Bounds, Env, Space, Step};
use crate::error::{Error, Result};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// CartPole-v1: push a cart left (0) or right (1) to keep a pole upright. +1 per step (also on
/// the terminal step); terminates when |x| > 2.4 or |θ| > 12°; truncates at 500 steps. Start
/// state uniform in [−0.05, 0.05]⁴. Euler integration with τ = 0.02.
#[derive(Serialize, Deserialize)]
pub struct CartPole {
    state: [f64; 4],
    t: u32,
    limit: u32,
    rng: Rng,
    obs_space: Space,
    act_space: Space,
}

impl CartPole {
    const GRAVITY: f64 = 9.8;
    const MASS_CART: f64 = 1.0;
    const MASS_POLE: f64 = 0.1;
    const TOTAL_MASS: f64 = Self::MASS_CART + Self::MASS_POLE;
    const HALF_LENGTH: f64 = 0.5;
    const POLE_MASS_LENGTH: f64 = Self::MASS_POLE * Self::HALF_LENGTH;
    const FORCE: f64 = 10.0;
    const TAU: f64 = 0.02;
    const THETA_LIMIT: f64 = 12.0 * 2.0 * PI / 360.0;
    const X_LIMIT: f64 = 2.4;

    pub fn new(max_steps: Option<u32>) -> Self {
        Self {
            state: [0.0; 4],
            t: 0,
            limit: max_steps.unwrap_or(500),
            rng: Rng::seed_from_u64(0),
            obs_space: Space::Box {
                shape: vec![4],
                low: Bounds::PerDim(vec![
                    -4.8,
                    -f32::MAX,
                    -(Self::THETA_LIMIT * 2.0) as f32,
                    -f32::MAX,
                ]),
                high: Bounds::PerDim(vec![
                    4.8,
                    f32::MAX,
                    (Self::THETA_LIMIT * 2.0) as f32,
                    f32::MAX,
                ]),
            },
            act_space: Space::Discrete { n: 2 },
        }
    }

    fn write_obs(&self, obs: &mut [f32]) {
        for (o, s) in obs.iter_mut().zip(self.state) {
            *o = s as f32;
        }
    }
}

impl Env for CartPole {
    crate::serde_snapshot!("cartpole");

    fn check_state(&self) -> Result<()> {
        finite_state("cartpole", &self.state, 1e6)
    }

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
        for s in &mut self.state {
            *s = self.rng.uniform_range(-0.05, 0.05);
        }
        self.t = 0;
        self.write_obs(obs);
    }

    #[inline]
    fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> Result<Step> {
        let a = discrete_action("cartpole", action, 2)?;
        let [x, x_dot, theta, theta_dot] = self.state;
        let force = if a == 1 { Self::FORCE } else { -Self::FORCE };
        let (sin, cos) = theta.sin_cos();
        let temp =
            (force + Self::POLE_MASS_LENGTH * theta_dot * theta_dot * sin) / Self::TOTAL_MASS;
        let theta_acc = (Self::GRAVITY * sin - cos * temp)
            / (Self::HALF_LENGTH * (4.0 / 3.0 - Self::MASS_POLE * cos * cos / Self::TOTAL_MASS));
        let x_acc = temp - Self::POLE_MASS_LENGTH * theta_acc * cos / Self::TOTAL_MASS;
        self.state = [
            x + Self::TAU * x_dot,
            x_dot + Self::TAU * x_acc,
            theta + Self::TAU * theta_dot,
            theta_dot + Self::TAU * theta_acc,
        ];
        self.t += 1;
        self.write_obs(obs);
        let [x, _, theta, _] = self.state;
        let terminated = !(-Self::X_LIMIT..=Self::X_LIMIT).contains(&x)
            || !(-Self::THETA_LIMIT..=Self::THETA_LIMIT).contains(&theta);
        Ok(Step {
            reward: 1.0,
            terminated,
            truncated: !terminated && self.t >= self.limit,
        })
    }

    fn optimal_return(&self) -> Option<f64> {
        Some(self.limit as f64)
    }
}

/// Pendulum-v1: swing a pendulum up and hold it. Observation (cos θ, sin θ, θ̇); torque clipped
/// to [−2, 2]; reward −(θ² + 0.1 θ̇² + 0.001 u²) with θ normalised to [−π, π); start θ ∈ [−π, π],
/// θ̇ ∈ [−1, 1]; semi-implicit Euler, dt 0.05, g 10; truncates at 200 steps, never terminates.
#[derive(Serialize, Deserialize)]
pub struct Pendulum {
    theta: f64,
    theta_dot: f64,
    t: u32,
    limit: u32,
    rng: Rng,
    obs_space: Space,
    act_space: Space,
}

impl Pendulum {
    const MAX_SPEED: f64 = 8.0;
    const MAX_TORQUE: f64 = 2.0;
    const DT: f64 = 0.05;
    const G: f64 = 10.0;
    const M: f64 = 1.0;
    const L: f64 = 1.0;

    pub fn new(max_steps: Option<u32>) -> Self {
        Self {
            theta: 0.0,
            theta_dot: 0.0,
            t: 0,
            limit: max_steps.unwrap_or(200),
            rng: Rng::seed_from_u64(0),
            obs_space: Space::Box {
                shape: vec![3],
                low: Bounds::PerDim(vec![-1.0, -1.0, -8.0]),
                high: Bounds::PerDim(vec![1.0, 1.0, 8.0]),
            },
            act_space: Space::Box {
                shape: vec![1],
                low: Bounds::Scalar(-2.0),
                high: Bounds::Scalar(2.0),
            },
        }
    }

    fn write_obs(&self, obs: &mut [f32]) {
        obs[0] = self.theta.cos() as f32;
        obs[1] = self.theta.sin() as f32;
        obs[2] = self.theta_dot as f32;
    }
}

/// Angle wrapped into [−π, π), as Python's `((x + π) % 2π) − π`.
fn angle_normalize(x: f64) -> f64 {
    (x + PI).rem_euclid(2.0 * PI) - PI
}

impl Env for Pendulum {
    crate::serde_snapshot!("pendulum");

    fn check_state(&self) -> Result<()> {
        finite_state("pendulum", &[self.theta], 1e6)?;
        finite_state("pendulum", &[self.theta_dot], Self::MAX_SPEED)
    }

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
        self.theta = self.rng.uniform_range(-PI, PI);
        self.theta_dot = self.rng.uniform_range(-1.0, 1.0);
        self.t = 0;
        self.write_obs(obs);
    }

    #[inline]
    fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> Result<Step> {
        let u = continuous_action("pendulum", action, 1)?[0] as f64;
        let u = u.clamp(-Self::MAX_TORQUE, Self::MAX_TORQUE);
        let th = self.theta;
        let cost =
            angle_normalize(th).powi(2) + 0.1 * self.theta_dot * self.theta_dot + 0.001 * u * u;
        let new_dot = (self.theta_dot
            + (3.0 * Self::G / (2.0 * Self::L) * th.sin()
                + 3.0 / (Self::M * Self::L * Self::L) * u)
                * Self::DT)
            .clamp(-Self::MAX_SPEED, Self::MAX_SPEED);
        self.theta = th + new_dot * Self::DT;
        self.theta_dot = new_dot;
        self.t += 1;
        self.write_obs(obs);
        Ok(Step {
            reward: -cost as f32,
            terminated: false,
            truncated: self.t >= self.limit,
        })
    }
}

/// MountainCarContinuous-v0: drive an under-powered car up the right hill. Force clipped to
/// [−1, 1]; reward +100 on reaching x ≥ 0.45 (terminates) minus 0.1·a² per step; start
/// x ∈ [−0.6, −0.4], v = 0; truncates at 999 steps.
#[derive(Serialize, Deserialize)]
pub struct MountainCarContinuous {
    pos: f64,
    vel: f64,
    t: u32,
    limit: u32,
    rng: Rng,
    obs_space: Space,
    act_space: Space,
}

impl MountainCarContinuous {
    const MIN_POS: f64 = -1.2;
    const MAX_POS: f64 = 0.6;
    const MAX_SPEED: f64 = 0.07;
    const GOAL_POS: f64 = 0.45;
    const POWER: f64 = 0.0015;

    pub fn new(max_steps: Option<u32>) -> Self {
        Self {
            pos: 0.0,
            vel: 0.0,
            t: 0,
            limit: max_steps.unwrap_or(999),
            rng: Rng::seed_from_u64(0),
            obs_space: Space::Box {
                shape: vec![2],
                low: Bounds::PerDim(vec![-1.2, -0.07]),
                high: Bounds::PerDim(vec![0.6, 0.07]),
            },
            act_space: Space::Box {
                shape: vec![1],
                low: Bounds::Scalar(-1.0),
                high: Bounds::Scalar(1.0),
            },
        }
    }
}

impl Env for MountainCarContinuous {
    crate::serde_snapshot!("mountain_car_continuous");

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
        self.pos = self.rng.uniform_range(-0.6, -0.4);
        self.vel = 0.0;
        self.t = 0;
        obs[0] = self.pos as f32;
        obs[1] = self.vel as f32;
    }

    #[inline]
    fn step(&mut self, action: Action<'_>, obs: &mut [f32]) -> Result<Step> {
        let a = continuous_action("mountain_car_continuous", action, 1)?[0] as f64;
        let force = a.clamp(-1.0, 1.0);
        self.vel += force * Self::POWER - 0.0025 * (3.0 * self.pos).cos();
        self.vel = self.vel.clamp(-Self::MAX_SPEED, Self::MAX_SPEED);
        self.pos = (self.pos + self.vel).clamp(Self::MIN_POS, Self::MAX_POS);
        if self.pos == Self::MIN_POS && self.vel < 0.0 {
            self.vel = 0.0;
        }
        let terminated = self.pos >= Self::GOAL_POS && self.vel >= 0.0;
        // Gymnasium charges the unclipped action.
        let reward = if terminated { 100.0 } else { 0.0 } - 0.1 * a * a;
        self.t += 1;
        obs[0] = self.pos as f32;
        obs[1] = self.vel as f32;
        Ok(Step {
            reward: reward as f32,
            terminated,
            truncated: !terminated && self.t >= self.limit,
        })
    }
}

/// Errors unless every value of `state` is finite and at most `bound` in size.
fn finite_state(id: &str, state: &[f64], bound: f64) -> Result<()> {
    match state.iter().find(|v| !v.is_finite() || v.abs() > bound) {
        Some(v) => Err(Error::Env(format!(
            "`{id}` state value {v} is outside what the environment can reach (|x| ≤ {bound})"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cartpole_one_step_matches_hand_computed_dynamics() {
        let mut env = CartPole::new(None);
        let mut obs = [0.0f32; 4];
        env.reset(Some(0), &mut obs);
        env.state = [0.0, 0.0, 0.0, 0.0];
        env.step(Action::Discrete(1), &mut obs).unwrap();
        // F = 10: temp = 10/1.1; θ̈ = −temp / (0.5·(4/3 − 0.1/1.1)); ẍ = temp − 0.05·θ̈/1.1
        let temp = 10.0 / 1.1;
        let th_acc = -temp / (0.5 * (4.0 / 3.0 - 0.1 / 1.1));
        let x_acc = temp - 0.05 * th_acc / 1.1;
        assert_eq!(env.state[0], 0.0);
        assert!((env.state[1] - 0.02 * x_acc).abs() < 1e-12);
        assert!((env.state[3] - 0.02 * th_acc).abs() < 1e-12);
    }

    #[test]
    fn cartpole_always_right_falls_within_a_few_dozen_steps() {
        let mut env = CartPole::new(None);
        let mut obs = [0.0f32; 4];
        env.reset(Some(1), &mut obs);
        let mut n = 0;
        loop {
            n += 1;
            let s = env.step(Action::Discrete(1), &mut obs).unwrap();
            assert_eq!(s.reward, 1.0);
            if s.done() {
                assert!(s.terminated);
                break;
            }
        }
        assert!((5..30).contains(&n), "{n}");
        assert!(obs[2] < -0.2, "pole falls left when pushed right: {obs:?}");
    }

    #[test]
    fn pendulum_reward_and_clipping() {
        let mut env = Pendulum::new(None);
        let mut obs = [0.0f32; 3];
        env.reset(Some(0), &mut obs);
        env.theta = PI; // hanging down
        env.theta_dot = 0.0;
        let s = env.step(Action::Continuous(&[5.0]), &mut obs).unwrap();
        // torque clipped to 2: cost = π² + 0 + 0.001·4 (angle_normalize(π) = −π)
        assert!(
            (s.reward as f64 + (PI * PI + 0.004)).abs() < 1e-4,
            "{}",
            s.reward
        );
        assert!((obs[2] as f64 - (3.0 * 10.0 / 2.0 * PI.sin() + 3.0 * 2.0) * 0.05).abs() < 1e-5);
        assert!(angle_normalize(3.0 * PI).abs() - PI < 1e-12);
    }

    #[test]
    fn mountain_car_full_throttle_right_does_not_reach_goal_directly() {
        let mut env = MountainCarContinuous::new(None);
        let mut obs = [0.0f32; 2];
        env.reset(Some(0), &mut obs);
        for _ in 0..300 {
            let s = env.step(Action::Continuous(&[1.0]), &mut obs).unwrap();
            assert!(!s.terminated, "the car is under-powered");
            assert!((s.reward + 0.1).abs() < 1e-6);
        }
        // Bang-bang on the velocity's sign pumps energy and reaches the flag.
        env.reset(Some(0), &mut obs);
        let mut ret = 0.0;
        for _ in 0..999 {
            let a = if obs[1] >= 0.0 { 1.0 } else { -1.0 };
            let s = env.step(Action::Continuous(&[a]), &mut obs).unwrap();
            ret += s.reward;
            if s.done() {
                assert!(s.terminated);
                break;
            }
        }
        assert!(ret > 80.0, "{ret}");
    }

    #[test]
    fn continuous_action_errors_are_clear() {
        let mut env = Pendulum::new(None);
        let mut obs = [0.0f32; 3];
        env.reset(Some(0), &mut obs);
        let e = env
            .step(Action::Continuous(&[0.0, 1.0]), &mut obs)
            .unwrap_err();
        assert!(e.to_string().contains("length 1"), "{e}");
        let e = env.step(Action::Discrete(0), &mut obs).unwrap_err();
        assert!(e.to_string().contains("continuous"), "{e}");
        let e = env
            .step(Action::Continuous(&[f32::NAN]), &mut obs)
            .unwrap_err();
        assert!(e.to_string().contains("non-finite"), "{e}");
    }
}
