//! DQfD (Hester et al. 2018), the variant Agarwal et al. (2022) compare against: TD loss plus
//! the large-margin supervised loss toward the teacher's actions,
//! `J_E = max_a [Q(s, a) + l(a_E, a)] − Q(s, a_E)` with `l = margin` (0.8) for `a ≠ a_E`,
//! applied to teacher transitions only. It pretrains on the teacher's data (offline phase),
//! then keeps the teacher's data in every batch (`rehearsal_fraction`) during online training.
//! (DQfD's n-step and L2 terms are left to the student's own config.)

use crate::agents::dqn::DqnHook;
use crate::agents::Metrics;
use crate::error::Result;
use crate::replay::{Batch, ReplayBuffer};
use candle_core::{Tensor, D};
use std::rc::Rc;

/// The large-margin loss averaged over the rows, `q` `(rows, actions)`.
pub fn dqfd_margin_loss(q: &Tensor, teacher_actions: &[i64], margin: f64) -> Result<Tensor> {
    let n = q.dim(1)?;
    let expert = crate::agents::one_hot(teacher_actions, n, q.device())?;
    // l(a_E, a) = margin everywhere except at a_E.
    let l = ((expert.ones_like()? - &expert)? * margin)?;
    let best = (q + l)?.max(D::Minus1)?;
    let q_e = (q * expert)?.sum(D::Minus1)?;
    Ok((best - q_e)?.mean_all()?)
}

pub struct DqfdHook {
    pub data: Rc<ReplayBuffer>,
    pub fraction: f64,
    pub margin: f64,
    pub weight: f64,
}

impl DqnHook for DqfdHook {
    fn rehearsal(&self) -> Option<(&ReplayBuffer, f64)> {
        Some((&self.data, self.fraction))
    }
    fn loss(
        &mut self,
        batch: &Batch,
        q: &Tensor,
        teacher_rows: usize,
        _: u64,
    ) -> Result<Option<(Tensor, Metrics)>> {
        if teacher_rows == 0 {
            return Ok(None);
        }
        let j = dqfd_margin_loss(
            &q.narrow(0, 0, teacher_rows)?,
            &batch.actions_discrete[..teacher_rows],
            self.margin,
        )?;
        let m = Metrics::from([("margin_loss".to_string(), j.to_scalar::<f32>()? as f64)]);
        Ok(Some(((j * self.weight)?, m)))
    }
}

/// DQfD's hooks into a DQN-family student: the margin loss on batches of teacher data only
/// offline, then on the teacher rows of mixed batches online.
pub fn dqn_hooks(ctx: &super::MethodContext<'_>) -> Result<super::DqnHooks> {
    let mc = &ctx.spec.method_config;
    let hook = |fraction| -> Result<Box<dyn DqnHook>> {
        Ok(Box::new(DqfdHook {
            data: ctx.data()?.clone(),
            fraction,
            margin: mc.margin,
            weight: mc.margin_weight,
        }))
    };
    Ok(super::DqnHooks {
        offline: Some(hook(1.0)?),
        online: Some(hook(mc.rehearsal_fraction)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn margin_loss_is_zero_only_when_the_expert_action_leads_by_the_margin() {
        let q = Tensor::new(&[[2.0f32, 1.0, 0.5]], &Device::Cpu).unwrap();
        let v = |q: &Tensor, a| {
            dqfd_margin_loss(q, &[a], 0.8)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(v(&q, 0).abs() < 1e-6, "leads by 1.0 ≥ 0.8");
        assert!((v(&q, 1) - 1.8).abs() < 1e-6, "max(2+0.8) − 1 = 1.8");
        let close = Tensor::new(&[[1.0f32, 0.5, 0.0]], &Device::Cpu).unwrap();
        assert!((v(&close, 0) - 0.3).abs() < 1e-6, "max(1, 1.3) − 1 = 0.3");
    }
}
