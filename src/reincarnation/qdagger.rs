//! QDagger (Agarwal et al., "Reincarnating Reinforcement Learning", NeurIPS 2022, §4):
//! policy-to-value reincarnation. The student minimises
//! `TD + λ_t · H(softmax(Q_T(s)/τ), softmax(Q_S(s)/τ))` on states from its batch, τ = 0.1.
//!
//! - Offline phase: batches come from the teacher's data only, λ = `distill_coef` (3.0).
//! - Online phase: the student collects its own data and
//!   `λ_t = coef · max(1 − (G_S − G_random) / (G_T − G_random), 0)`. `G_S` is the mean of the
//!   student's last `return_window` training-episode returns (the paper uses the student's
//!   recent returns; the window is our choice). With `tie_lr` the learning rate is scaled by
//!   the same factor, floored at `lr_floor` (the paper's 1e-4 → 1e-5 is `lr_floor = 0.1`).
//! - λ_t follows the student's return for the whole run unless `decay_steps` is set, which
//!   forces it to 0 from that step on. The weight is already 0 whenever the student is at or
//!   above its teacher, so it never holds a better student back; and a student that falls
//!   below gets the teacher's pull again. A forced switch-off takes that away: on CartPole at a
//!   20k-step budget, with the switch-off at half the budget, 4 of 5 students fell from the
//!   teacher's level to 0.27 or below (three to random level) within 2–10k steps. Their
//!   Q-values, ≈ 45 against a fixed point of 100, were still rising under the TD loss, a drift
//!   far larger than the action gaps distillation had set. Without it all five ended at
//!   0.87–1.0 of the teacher.
//!
//! The distillation loss is shared with kickstarting ([`super::kickstart`]), which is the
//! online phase alone.

use super::teacher::Teacher;
use crate::agents::dqn::DqnHook;
use crate::agents::{Experience, Metrics};
use crate::error::Result;
use crate::nn::categorical::cross_entropy;
use crate::replay::Batch;
use candle_core::Tensor;
use std::collections::VecDeque;
use std::rc::Rc;

/// `H(softmax(Q_T/τ), softmax(Q_S/τ))` averaged over the batch: the cross-entropy from the
/// teacher's temperature-softened policy to the student's (equal to the KL up to the teacher's
/// entropy, a constant for the student).
pub fn qdagger_distill_loss(
    student_q: &Tensor,
    teacher_targets: &Tensor,
    tau: f64,
) -> Result<Tensor> {
    Ok(cross_entropy(&(student_q / tau)?, teacher_targets)?.mean_all()?)
}

/// λ's schedule in the online phase.
#[derive(Clone, Debug)]
pub struct NormalisedDecay {
    pub random_return: f64,
    pub teacher_return: f64,
    /// Environment steps after which λ = 0 (`None`: never forced).
    pub decay_steps: Option<u64>,
    pub return_window: usize,
    pub tie_lr: bool,
    pub lr_floor: f64,
}

impl NormalisedDecay {
    /// The teacher-normalised score of the mean of `recent` returns (0 with none yet).
    pub fn score(&self, recent: &VecDeque<f64>) -> f64 {
        if recent.is_empty() {
            return 0.0;
        }
        let g = recent.iter().sum::<f64>() / recent.len() as f64;
        (g - self.random_return) / (self.teacher_return - self.random_return)
    }

    /// `λ_t = coef · max(1 − score, 0)`, 0 from `decay_steps` on.
    pub fn lambda(&self, coef: f64, recent: &VecDeque<f64>, step: u64) -> f64 {
        if self.decay_steps.is_some_and(|d| step >= d) {
            0.0
        } else {
            coef * (1.0 - self.score(recent)).max(0.0)
        }
    }

    /// The factor on the learning rate at distillation weight `lambda`: with `tie_lr`,
    /// `floor + (1 − floor) · λ_t / coef` (1 while distillation is at full weight, `lr_floor`
    /// once it is off); 1 without.
    pub fn lr_factor(&self, lambda: f64, coef: f64) -> f64 {
        if !self.tie_lr {
            return 1.0;
        }
        let f = if coef > 0.0 { lambda / coef } else { 0.0 };
        self.lr_floor + (1.0 - self.lr_floor) * f
    }
}

/// The student's recent training-episode returns, for [`NormalisedDecay`]. Shared by the DQN
/// and SAC distillation hooks; saved in their hook state as `recent` and `episode_return`.
#[derive(Clone, Debug, Default)]
pub struct StudentReturns {
    recent: VecDeque<f64>,
    episode_return: f64,
}

impl StudentReturns {
    /// Adds a batched step of the (single-environment) training loop, keeping the last
    /// `window` finished episodes.
    pub fn observe(&mut self, exp: &Experience<'_>, window: usize) {
        self.episode_return += exp.rewards[0] as f64;
        if exp.terminated[0] || exp.truncated[0] {
            self.recent.push_back(self.episode_return);
            self.episode_return = 0.0;
            while self.recent.len() > window.max(1) {
                self.recent.pop_front();
            }
        }
    }

    pub fn recent(&self) -> &VecDeque<f64> {
        &self.recent
    }

    /// The hook-state fields `recent` and `episode_return`.
    pub fn state_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("recent".into(), serde_json::json!(self.recent));
        m.insert(
            "episode_return".into(),
            serde_json::json!(self.episode_return),
        );
        m
    }

    /// Restores what [`state_fields`](Self::state_fields) wrote into a hook state.
    pub fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        let recent = serde_json::from_value(state["recent"].clone())
            .map_err(|_| hook_state_error("recent"))?;
        let episode_return = state["episode_return"]
            .as_f64()
            .ok_or_else(|| hook_state_error("episode_return"))?;
        self.recent = recent;
        self.episode_return = episode_return;
        Ok(())
    }
}

/// A hook-state field of `trainer_state.json` that is missing or malformed.
pub fn hook_state_error(field: &str) -> crate::Error {
    crate::Error::data(
        "trainer_state.json",
        format!("agent.hook.{field} is missing or malformed"),
    )
}

/// The distillation term as a [`DqnHook`] (QDagger and kickstarting).
pub struct DistillHook {
    teacher: Rc<Teacher>,
    coef: f64,
    tau: f64,
    /// `None`: constant λ = `coef` (the offline phase).
    schedule: Option<NormalisedDecay>,
    returns: StudentReturns,
    lambda: f64,
}

impl DistillHook {
    pub fn new(
        teacher: Rc<Teacher>,
        coef: f64,
        tau: f64,
        schedule: Option<NormalisedDecay>,
    ) -> Self {
        Self {
            teacher,
            coef,
            tau,
            schedule,
            returns: StudentReturns::default(),
            lambda: coef,
        }
    }

    /// The student's recent return and teacher-normalised score.
    fn student_score(&self, s: &NormalisedDecay) -> f64 {
        s.score(self.returns.recent())
    }

    fn update_lambda(&mut self, step: u64) {
        self.lambda = match &self.schedule {
            None => self.coef,
            Some(s) => s.lambda(self.coef, self.returns.recent(), step),
        };
    }
}

impl DqnHook for DistillHook {
    fn observe(&mut self, exp: &Experience<'_>) -> Result<()> {
        let window = self.schedule.as_ref().map_or(1, |s| s.return_window);
        self.returns.observe(exp, window);
        Ok(())
    }

    fn loss(
        &mut self,
        batch: &Batch,
        q: &Tensor,
        _teacher_rows: usize,
        step: u64,
    ) -> Result<Option<(Tensor, Metrics)>> {
        self.update_lambda(step);
        let mut m = Metrics::from([("distill_lambda".to_string(), self.lambda)]);
        if let Some(s) = &self.schedule {
            m.insert("student_normalised_return".into(), self.student_score(s));
        }
        if self.lambda == 0.0 {
            return Ok(Some((q.zeros_like()?.sum_all()?, m)));
        }
        let targets = self
            .teacher
            .soft_targets(&batch.obs, self.tau, q.device())?;
        let d = qdagger_distill_loss(q, &targets, self.tau)?;
        m.insert("distill_loss".into(), d.to_scalar::<f32>()? as f64);
        Ok(Some(((d * self.lambda)?, m)))
    }

    fn lr_scale(&self) -> f64 {
        self.schedule
            .as_ref()
            .map_or(1.0, |s| s.lr_factor(self.lambda, self.coef))
    }

    fn state(&self) -> serde_json::Value {
        let mut m = self.returns.state_fields();
        m.insert("lambda".into(), serde_json::json!(self.lambda));
        serde_json::Value::Object(m)
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        self.lambda = state["lambda"]
            .as_f64()
            .ok_or_else(|| hook_state_error("lambda"))?;
        self.returns.load_state(state)
    }
}

/// QDagger's hooks into a DQN-family student: distillation at λ = `distill_coef` on teacher
/// data offline, then at the decayed λ_t online.
pub fn dqn_hooks(ctx: &super::MethodContext<'_>) -> Result<super::DqnHooks> {
    let mc = &ctx.spec.method_config;
    let hook = |schedule| -> Box<dyn DqnHook> {
        Box::new(DistillHook::new(
            ctx.teacher.clone(),
            mc.distill_coef,
            mc.temperature,
            schedule,
        ))
    };
    Ok(super::DqnHooks {
        offline: Some(hook(None)),
        online: Some(hook(Some(ctx.schedule.clone()))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn distill_loss_is_the_cross_entropy_of_the_softened_policies() {
        let dev = Device::Cpu;
        // One row, τ = 0.5. Student Q = (0, 0.5·ln 3): softmax(Q/τ) = softmax(0, ln 3) = (¼, ¾).
        // Teacher target (½, ½): H = −(½ ln ¼ + ½ ln ¾) = ½ (ln 4 + ln 4/3).
        let q = Tensor::new(&[[0.0f32, 0.5 * 3f32.ln()]], &dev).unwrap();
        let t = Tensor::new(&[[0.5f32, 0.5]], &dev).unwrap();
        let h = qdagger_distill_loss(&q, &t, 0.5)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = 0.5 * (4f32.ln() + (4f32 / 3.0).ln());
        assert!((h - want).abs() < 1e-6, "{h} vs {want}");
    }

    fn decay(tie_lr: bool) -> NormalisedDecay {
        NormalisedDecay {
            random_return: 10.0,
            teacher_return: 110.0,
            decay_steps: Some(1000),
            return_window: 2,
            tie_lr,
            lr_floor: 0.1,
        }
    }

    #[test]
    fn lambda_falls_with_the_students_normalised_return_and_stops_at_decay_steps() {
        let s = decay(true);
        let recent = |v: &[f64]| v.iter().copied().collect::<VecDeque<f64>>();
        // No episode yet: score 0, λ = coef.
        assert_eq!(s.lambda(3.0, &recent(&[]), 0), 3.0);
        // Mean return 35 → score (35 − 10)/100 = 0.25 → λ = 3 · 0.75 = 2.25.
        assert!((s.lambda(3.0, &recent(&[30.0, 40.0]), 10) - 2.25).abs() < 1e-12);
        // At or above the teacher: λ = 0 (not negative).
        assert_eq!(s.lambda(3.0, &recent(&[200.0]), 10), 0.0);
        // From decay_steps on, λ = 0 whatever the score; never forced without it.
        assert_eq!(s.lambda(3.0, &recent(&[]), 1000), 0.0);
        let unforced = NormalisedDecay {
            decay_steps: None,
            ..s.clone()
        };
        assert_eq!(unforced.lambda(3.0, &recent(&[]), u64::MAX), 3.0);
        assert!((unforced.lambda(3.0, &recent(&[30.0, 40.0]), 1_000_000) - 2.25).abs() < 1e-12);
        // The tied learning rate: 1 at full weight, the floor at 0, linear between.
        assert!((s.lr_factor(3.0, 3.0) - 1.0).abs() < 1e-12);
        assert!((s.lr_factor(0.0, 3.0) - 0.1).abs() < 1e-12);
        assert!((s.lr_factor(2.25, 3.0) - (0.1 + 0.9 * 0.75)).abs() < 1e-12);
        assert_eq!(decay(false).lr_factor(0.0, 3.0), 1.0);
    }

    /// The distillation gradient matches finite differences of the loss.
    #[test]
    fn distillation_gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let q0 = vec![1.0f32, 0.5, -0.3, 0.2, 0.1, 0.4];
        let tq = Tensor::new(&[[0.9f32, 0.6, -0.1], [0.0, 0.3, 0.2]], &dev).unwrap();
        let targets = candle_nn::ops::softmax(&(tq / 0.5).unwrap(), 1).unwrap();
        let tau = 0.5;
        let f = |v: &[f32]| -> f64 {
            let q = Tensor::from_slice(v, (2, 3), &dev).unwrap();
            qdagger_distill_loss(&q, &targets, tau)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        let var = Var::from_tensor(&Tensor::from_slice(&q0, (2, 3), &dev).unwrap()).unwrap();
        let loss = qdagger_distill_loss(var.as_tensor(), &targets, tau).unwrap();
        let g: Vec<f32> = loss
            .backward()
            .unwrap()
            .get(&var)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for i in 0..q0.len() {
            let (mut up, mut down) = (q0.clone(), q0.clone());
            up[i] += 1e-2;
            down[i] -= 1e-2;
            let fd = (f(&up) - f(&down)) / 2e-2;
            assert!(
                (fd - g[i] as f64).abs() < 2e-3,
                "d/dq[{i}]: analytic {} vs numeric {fd}",
                g[i]
            );
        }
        // Minimum where the student's softened policy equals the teacher's.
        let same = Tensor::new(&[[0.9f32, 0.6, -0.1], [0.0, 0.3, 0.2]], &dev).unwrap();
        let at_teacher = qdagger_distill_loss(&same, &targets, tau)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(at_teacher < f(&q0) as f32);
    }
}
