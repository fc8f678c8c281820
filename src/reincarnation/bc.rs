//! Behaviour cloning, then RL (Agarwal et al. 2022, §4 baselines): the student's Q-head is
//! trained as the logits of a policy, by cross-entropy toward the teacher's actions on the
//! teacher's data (no TD loss), then the student fine-tunes with its ordinary TD loss.

use crate::agents::dqn::DqnHook;
use crate::agents::Metrics;
use crate::error::Result;
use crate::nn::categorical::cross_entropy;
use crate::replay::Batch;
use candle_core::Tensor;

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
        let target = crate::agents::one_hot(&batch.actions_discrete, q.dim(1)?, q.device())?;
        let l = cross_entropy(q, &target)?.mean_all()?;
        let m = Metrics::from([("bc_loss".to_string(), l.to_scalar::<f32>()? as f64)]);
        Ok(Some((l, m)))
    }
}
