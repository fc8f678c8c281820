//! Rehearsal (Agarwal et al. 2022, §4 baselines): the student learns with its ordinary TD loss
//! while a fixed fraction of every batch is drawn from the teacher's data (the rest from the
//! student's own replay), so prior experience is replayed throughout training.

use crate::agents::dqn::DqnHook;
use crate::agents::Metrics;
use crate::error::Result;
use crate::replay::{Batch, ReplayBuffer};
use candle_core::Tensor;
use std::rc::Rc;

pub struct RehearsalHook {
    pub data: Rc<ReplayBuffer>,
    /// Fraction of each batch from the teacher's data.
    pub fraction: f64,
}

impl DqnHook for RehearsalHook {
    fn rehearsal(&self) -> Option<(&ReplayBuffer, f64)> {
        Some((&self.data, self.fraction))
    }
    fn loss(
        &mut self,
        _: &Batch,
        _: &Tensor,
        _: usize,
        _: u64,
    ) -> Result<Option<(Tensor, Metrics)>> {
        Ok(None)
    }
}

/// Rehearsal's hooks into a DQN-family student: teacher data in every online batch.
pub fn dqn_hooks(ctx: &super::MethodContext<'_>) -> Result<super::DqnHooks> {
    Ok(super::DqnHooks {
        offline: None,
        online: Some(Box::new(RehearsalHook {
            data: ctx.data()?.clone(),
            fraction: ctx.spec.method_config.rehearsal_fraction,
        })),
    })
}
