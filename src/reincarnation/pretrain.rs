//! Pretraining with an offline-RL loss, then fine-tuning (Agarwal et al. 2022, §4 baselines).
//! The offline loss is CQL(H) (Kumar et al. 2020) on the student's Q-values:
//! `TD + α · E_s[log Σ_a exp Q(s, a) − Q(s, a_data)]`, α = `cql_alpha` (1.0), on batches of
//! teacher data only. Online fine-tuning is then the student's plain TD learning.

use crate::agents::dqn::DqnHook;
use crate::agents::Metrics;
use crate::error::Result;
use crate::replay::Batch;
use candle_core::{Tensor, D};

/// `mean(logsumexp(q) − q[a])` over rows, computed stably (max subtracted).
pub fn cql_regulariser(q: &Tensor, actions: &[i64]) -> Result<Tensor> {
    let n = q.dim(1)?;
    let m = q.max_keepdim(D::Minus1)?.detach();
    let lse = (q.broadcast_sub(&m)?.exp()?.sum_keepdim(D::Minus1)?.log()? + m)?.squeeze(1)?;
    let taken = (q * crate::agents::one_hot(actions, n, q.device())?)?.sum(D::Minus1)?;
    Ok((lse - taken)?.mean_all()?)
}

pub struct CqlHook {
    pub alpha: f64,
}

impl DqnHook for CqlHook {
    fn loss(
        &mut self,
        batch: &Batch,
        q: &Tensor,
        _: usize,
        _: u64,
    ) -> Result<Option<(Tensor, Metrics)>> {
        let r = cql_regulariser(q, &batch.actions_discrete)?;
        let m = Metrics::from([("cql_regulariser".to_string(), r.to_scalar::<f32>()? as f64)]);
        Ok(Some(((r * self.alpha)?, m)))
    }
}

/// Pretraining's hooks into a DQN-family student: CQL on the teacher's data offline, then plain
/// TD learning online.
pub fn dqn_hooks(ctx: &super::MethodContext<'_>) -> Result<super::DqnHooks> {
    Ok(super::DqnHooks {
        offline: Some(Box::new(CqlHook {
            alpha: ctx.spec.method_config.cql_alpha,
        })),
        online: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cql_regulariser_is_logsumexp_minus_the_data_actions_value() {
        // Row 0: Q = (0, ln 3): logsumexp = ln 4, data action 0 → ln 4 − 0.
        // Row 1: Q = (1, 1): logsumexp = 1 + ln 2, data action 1 → ln 2.
        let q = Tensor::new(&[[0.0f32, 3f32.ln()], [1.0, 1.0]], &Device::Cpu).unwrap();
        let r = cql_regulariser(&q, &[0, 1])
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = (4f32.ln() + 2f32.ln()) / 2.0;
        assert!((r - want).abs() < 1e-6, "{r} vs {want}");
    }
}
