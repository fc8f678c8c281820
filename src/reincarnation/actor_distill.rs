//! Actor distillation for SAC-family students (Agarwal et al. 2022's QDagger and kickstarting,
//! carried from a softmax policy to a tanh-Gaussian one): the student's actor loss gets
//! `λ_t · KL(π_S(·|s) ‖ π_T(·|s))` on the states of its batch.
//!
//! - Direction: student first, `KL(π_S ‖ π_T) = E_{a~π_S}[log π_S(a) − log π_T(a)]`. Within
//!   the Gaussian family both directions have the same minimiser (student = teacher); they
//!   differ in conditioning. The gradient of `KL(T ‖ S)` in the student's mean is
//!   `(μ_S − μ_T)/σ_S²` and its value carries `σ_T²/σ_S²`: a SimbaV2 actor starts at
//!   `log σ_S = −4` (the middle of [−10, 2]), where that term is ~250 per dimension; the first
//!   updates' gradients fill Adam's second-moment estimate and the mean then barely moves for
//!   thousands of updates (measured on Pendulum: after 2,000 offline updates the student's
//!   means were still ≈ 0, KL ≈ 0.5). `KL(S ‖ T)` scales the mean's gradient by the teacher's
//!   fixed `1/σ_T²` instead and reached KL ≈ 0.005 in 1,000 updates on the same data.
//! - Closed form on the pre-tanh Gaussians. Both policies squash the same way (`tanh`, one
//!   bijection), and KL is invariant under a bijection applied to both, so the KL of the
//!   pre-tanh Gaussians is the KL of the actions' distributions, with no sampling.
//! - Diagonal: each policy is a diagonal Gaussian, so the KL is a sum over action dimensions of
//!   `log σ_T − log σ_S + (σ_S² + (μ_S − μ_T)²) / (2 σ_T²) − ½`, then averaged over the batch.
//! - λ_t: as QDagger's ([`super::qdagger::NormalisedDecay`]): `distill_coef` in an offline
//!   phase, then decayed by the student's teacher-normalised training return (and 0 from
//!   `decay_steps` on when it is set). The temperature τ and the learning-rate tie of the DQN methods do not apply.

use super::qdagger::{NormalisedDecay, StudentReturns};
use super::teacher::Teacher;
use crate::agents::sac::SacHook;
use crate::agents::{Experience, Metrics};
use crate::error::Result;
use candle_core::{Tensor, D};
use std::rc::Rc;

/// `KL(N(μ_p, σ_p²) ‖ N(μ_q, σ_q²))` for diagonal Gaussians given as `(batch, actions)` means
/// and log-stds: `log σ_q − log σ_p + (σ_p² + (μ_p − μ_q)²) / (2σ_q²) − ½` summed over action
/// dimensions, averaged over the batch. The distillation calls it with the student as `p`.
pub fn gaussian_kl(
    p_mean: &Tensor,
    p_log_std: &Tensor,
    q_mean: &Tensor,
    q_log_std: &Tensor,
) -> Result<Tensor> {
    let var_p = (p_log_std * 2.0)?.exp()?;
    let var_q = (q_log_std * 2.0)?.exp()?;
    let diff2 = (p_mean - q_mean)?.sqr()?;
    let ratio = ((var_p + diff2)? / (var_q * 2.0)?)?;
    let per_dim = ((q_log_std - p_log_std)? + ratio)?.affine(1.0, -0.5)?;
    Ok(per_dim.sum(D::Minus1)?.mean_all()?)
}

/// The distillation term as a [`SacHook`].
pub struct ActorDistillHook {
    teacher: Rc<Teacher>,
    coef: f64,
    /// `None`: constant λ = `coef` (the offline phase).
    schedule: Option<NormalisedDecay>,
    returns: StudentReturns,
}

impl ActorDistillHook {
    pub fn new(teacher: Rc<Teacher>, coef: f64, schedule: Option<NormalisedDecay>) -> Self {
        Self {
            teacher,
            coef,
            schedule,
            returns: StudentReturns::default(),
        }
    }
}

impl SacHook for ActorDistillHook {
    fn observe(&mut self, exp: &Experience<'_>) -> Result<()> {
        let window = self.schedule.as_ref().map_or(1, |s| s.return_window);
        self.returns.observe(exp, window);
        Ok(())
    }

    fn actor_loss(
        &mut self,
        obs: &[f32],
        mean: &Tensor,
        log_std: &Tensor,
        step: u64,
    ) -> Result<Option<(Tensor, Metrics)>> {
        let lambda = match &self.schedule {
            None => self.coef,
            Some(s) => s.lambda(self.coef, self.returns.recent(), step),
        };
        let mut m = Metrics::from([("distill_lambda".to_string(), lambda)]);
        if let Some(s) = &self.schedule {
            m.insert(
                "student_normalised_return".into(),
                s.score(self.returns.recent()),
            );
        }
        if lambda == 0.0 {
            return Ok(None);
        }
        let (t_mean, t_log_std) = self.teacher.gaussian(obs, mean.device())?;
        let kl = gaussian_kl(mean, log_std, &t_mean, &t_log_std)?;
        m.insert("distill_kl".into(), kl.to_scalar::<f32>()? as f64);
        Ok(Some(((kl * lambda)?, m)))
    }

    fn state(&self) -> serde_json::Value {
        serde_json::Value::Object(self.returns.state_fields())
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        self.returns.load_state(state)
    }
}
