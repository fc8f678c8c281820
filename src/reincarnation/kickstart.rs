//! Kickstarting (Schmitt et al. 2018), as Agarwal et al. (2022) run it for value-based students:
//! QDagger without the offline phase. The student starts from scratch, and its online TD loss
//! gets the same temperature-softened distillation term with the same decaying weight
//! (the loss and schedule live once, in [`super::qdagger`]).

use super::qdagger::{DistillHook, NormalisedDecay};
use super::teacher::Teacher;
use std::rc::Rc;

/// The online hook: distillation weighted by `coef`, decayed by the student's
/// teacher-normalised return.
pub fn hook(teacher: Rc<Teacher>, coef: f64, tau: f64, schedule: NormalisedDecay) -> DistillHook {
    DistillHook::new(teacher, coef, tau, Some(schedule))
}

/// Kickstarting's hooks into a DQN-family student: the online distillation only.
pub fn dqn_hooks(ctx: &super::MethodContext<'_>) -> crate::Result<super::DqnHooks> {
    let mc = &ctx.spec.method_config;
    Ok(super::DqnHooks {
        offline: None,
        online: Some(Box::new(hook(
            ctx.teacher.clone(),
            mc.distill_coef,
            mc.temperature,
            ctx.schedule.clone(),
        ))),
    })
}
