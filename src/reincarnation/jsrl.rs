//! Jump-start RL (Uchendu et al. 2023), as a reincarnation baseline (Agarwal et al. 2022):
//! the teacher acts for a roll-in at the start of an episode and the student takes over. Each
//! episode gets a roll-in with probability `p_t`, decaying linearly from 1 to 0 over
//! `decay_steps` environment steps; its length is uniform in `0..=max_roll_in` steps (the
//! random-switching variant; `max_roll_in` defaults to the environment's horizon). All
//! transitions, the teacher's included, go to the student's replay and train its TD loss.

use super::teacher::Teacher;
use crate::agents::dqn::DqnHook;
use crate::agents::{Experience, Metrics};
use crate::error::Result;
use crate::replay::Batch;
use crate::rng::Rng;
use candle_core::Tensor;
use std::rc::Rc;

/// `p_t = max(1 − t / decay_steps, 0)`: the probability that an episode starting at
/// environment step `t` gets a teacher roll-in.
pub fn roll_in_probability(step: u64, decay_steps: u64) -> f64 {
    (1.0 - step as f64 / decay_steps.max(1) as f64).max(0.0)
}

pub struct JsrlHook {
    teacher: Rc<Teacher>,
    decay_steps: u64,
    max_roll_in: u64,
    rng: Rng,
    step: u64,
    episode_step: u64,
    roll_in: u64,
    started: bool,
}

impl JsrlHook {
    pub fn new(teacher: Rc<Teacher>, decay_steps: u64, max_roll_in: u64, seed: u64) -> Self {
        Self {
            teacher,
            decay_steps: decay_steps.max(1),
            max_roll_in,
            rng: Rng::seed_from_u64(crate::rng::derive_seed(seed, 0x15_41)),
            step: 0,
            episode_step: 0,
            roll_in: 0,
            started: false,
        }
    }

    /// Probability that an episode starting now gets a teacher roll-in.
    pub fn roll_in_probability(&self) -> f64 {
        roll_in_probability(self.step, self.decay_steps)
    }

    fn new_episode(&mut self) {
        self.episode_step = 0;
        self.roll_in = if self.rng.uniform() < self.roll_in_probability() {
            self.rng.below(self.max_roll_in as usize + 1) as u64
        } else {
            0
        };
    }
}

impl DqnHook for JsrlHook {
    fn observe(&mut self, exp: &Experience<'_>) -> Result<()> {
        self.step += 1;
        self.episode_step += 1;
        if exp.terminated[0] || exp.truncated[0] {
            self.new_episode();
        }
        Ok(())
    }

    fn override_actions(&mut self, obs: &[f32], actions: &mut [usize]) -> Result<bool> {
        if !self.started {
            self.started = true;
            self.new_episode();
        }
        if self.episode_step < self.roll_in {
            actions.copy_from_slice(&self.teacher.greedy(obs)?);
            return Ok(true);
        }
        Ok(false)
    }

    fn loss(
        &mut self,
        _: &Batch,
        q: &Tensor,
        _: usize,
        _: u64,
    ) -> Result<Option<(Tensor, Metrics)>> {
        let m = Metrics::from([(
            "jsrl_roll_in_probability".to_string(),
            self.roll_in_probability(),
        )]);
        Ok(Some((q.zeros_like()?.sum_all()?, m)))
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({
            "rng": self.rng, "step": self.step, "episode_step": self.episode_step,
            "roll_in": self.roll_in, "started": self.started,
        })
    }

    fn load_state(&mut self, s: &serde_json::Value) -> Result<()> {
        let bad = || crate::Error::data("trainer_state.json", "agent.hook is not a JSRL state");
        self.rng = serde_json::from_value(s["rng"].clone()).map_err(|_| bad())?;
        self.step = s["step"].as_u64().ok_or_else(bad)?;
        self.episode_step = s["episode_step"].as_u64().ok_or_else(bad)?;
        self.roll_in = s["roll_in"].as_u64().ok_or_else(bad)?;
        self.started = s["started"].as_bool().ok_or_else(bad)?;
        Ok(())
    }
}

/// JSRL's hooks into a DQN-family student: the teacher's roll-ins while it trains online.
pub fn dqn_hooks(ctx: &super::MethodContext<'_>) -> Result<super::DqnHooks> {
    Ok(super::DqnHooks {
        offline: None,
        online: Some(Box::new(JsrlHook::new(
            ctx.teacher.clone(),
            ctx.roll_in_decay,
            ctx.max_roll_in,
            ctx.seed,
        ))),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn roll_in_probability_decays_linearly_to_zero() {
        assert_eq!(super::roll_in_probability(0, 100), 1.0);
        assert!((super::roll_in_probability(25, 100) - 0.75).abs() < 1e-12);
        assert_eq!(super::roll_in_probability(100, 100), 0.0);
        assert_eq!(super::roll_in_probability(500, 100), 0.0);
    }
}
