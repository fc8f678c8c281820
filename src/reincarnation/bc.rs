//! Behaviour cloning, then RL (Agarwal et al. 2022, §4 baselines): the student's Q-head is
//! trained as the logits of a policy, by cross-entropy toward the teacher's actions on the
//! teacher's data (no TD loss), then the student fine-tunes with its ordinary TD loss.

use crate::agents::dqn::DqnHook;
use crate::agents::Metrics;
use crate::error::Result;
use crate::nn::categorical::cross_entropy;
use crate::replay::Batch;
use candle_core::Tensor;

/// The behaviour-cloning loss `−mean_i log softmax(Q(s_i))[a_i]`: the student's Q-values read
/// as policy logits, trained toward the teacher's actions `a_i`.
pub fn bc_loss(q: &Tensor, teacher_actions: &[i64]) -> Result<Tensor> {
    let target = crate::agents::one_hot(teacher_actions, q.dim(1)?, q.device())?;
    Ok(cross_entropy(q, &target)?.mean_all()?)
}

pub struct BcHook;

impl DqnHook for BcHook {
    fn td_weight(&self) -> f64 {
        0.0
    }
    fn loss(
        &mut self,
        batch: &Batch,
        q: &Tensor,
        _: usize,
        _: u64,
    ) -> Result<Option<(Tensor, Metrics)>> {
        let l = bc_loss(q, &batch.actions_discrete)?;
        let m = Metrics::from([("bc_loss".to_string(), l.to_scalar::<f32>()? as f64)]);
        Ok(Some((l, m)))
    }
}

/// Behaviour cloning's hooks into a DQN-family student: cloning offline, then plain TD
/// learning online.
pub fn dqn_hooks(_: &super::MethodContext<'_>) -> Result<super::DqnHooks> {
    Ok(super::DqnHooks {
        offline: Some(Box::new(BcHook)),
        online: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn bc_loss_is_the_negative_log_likelihood_of_the_teachers_actions() {
        // Row 0: Q = (0, ln 3) → π = (¼, ¾), teacher took 1: −ln ¾.
        // Row 1: Q = (0, 0) → π = (½, ½), teacher took 0: ln 2.
        let q = Tensor::new(&[[0.0f32, 3f32.ln()], [0.0, 0.0]], &Device::Cpu).unwrap();
        let l = bc_loss(&q, &[1, 0]).unwrap().to_scalar::<f32>().unwrap();
        let want = (-(0.75f32.ln()) + 2f32.ln()) / 2.0;
        assert!((l - want).abs() < 1e-6, "{l} vs {want}");
        // An action outside the Q-head is an error, not a panic.
        assert!(bc_loss(&q, &[2, 0]).is_err());
    }
}
