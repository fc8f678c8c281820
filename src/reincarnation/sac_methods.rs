//! The reincarnation methods for SAC-family students (`sac`, `simbav2`), with a SAC-family
//! teacher; the student may have another architecture than the teacher (SAC → SimbaV2).
//!
//! - `qdagger`: an offline phase on the teacher's data only — the student's ordinary SAC
//!   update (critic TD, actor, temperature, target) on batches of teacher transitions, with
//!   actor distillation at λ = `distill_coef` ([`super::actor_distill`]) — which pretrains the
//!   critic on teacher data while the actor copies the teacher; then the online phase with the
//!   distillation weight decayed by the student's teacher-normalised return.
//! - `kickstart`: the online phase alone (distillation from the first step).
//! - `pretrain`: the offline phase without distillation (offline SAC on the teacher's data: the
//!   critic and actor learn from the transitions alone), then plain online SAC.
//! - `finetune`: the teacher's weights (and observation statistics) loaded into a student of the
//!   same architecture, then plain online SAC ([`super::finetune`]).
//! - `rehearsal`: plain online SAC with `rehearsal_fraction` of every batch drawn from the
//!   teacher's data (actions mapped into [−1, 1], the observation/reward statistics fed with
//!   the data first, as in the offline phase).
//! - `tabula_rasa`: the same student, no teacher.
//!
//! `jsrl`, `dqfd` and `bc` are built for discrete-action students and are refused with an
//! error naming the method and the student.

use super::actor_distill::ActorDistillHook;
use super::teacher::Teacher;
use super::{Method, MethodContext, ReincarnateSpec};
use crate::agents::sac::{Sac, SacHook};
use crate::error::{Error, Result};
use crate::replay::ReplayBuffer;

/// Refuses the methods that do not apply to a SAC-family student, and a teacher that is not
/// a Gaussian policy where distillation needs one.
pub fn check(spec: &ReincarnateSpec, teacher: &Teacher) -> Result<()> {
    match spec.method {
        Method::Qdagger
        | Method::Kickstart
        | Method::Pretrain
        | Method::Finetune
        | Method::Rehearsal
        | Method::TabulaRasa => {}
        m @ (Method::Jsrl | Method::Dqfd | Method::Bc) => {
            return Err(Error::Config(format!(
                "--method {}: not available for the SAC-family student `{}` (it is built for \
                 discrete-action DQN-family students); SAC-family methods: qdagger, kickstart, \
                 pretrain, rehearsal, finetune, tabula_rasa",
                m.name(),
                spec.student
            )))
        }
    }
    if !teacher.is_continuous() {
        return Err(Error::Config(format!(
            "teacher {}: a SAC-family student `{}` needs a continuous-action (SAC/SimbaV2) \
             teacher, found one for discrete actions",
            teacher.source, spec.student
        )));
    }
    Ok(())
}

/// The offline phase's hook (`qdagger`: actor distillation at λ = `distill_coef`; `pretrain`:
/// none, plain SAC updates on the teacher's data).
pub fn offline_hook(ctx: &MethodContext<'_>) -> Option<Box<dyn SacHook>> {
    match ctx.spec.method {
        Method::Qdagger => Some(Box::new(ActorDistillHook::new(
            ctx.teacher.clone(),
            ctx.spec.method_config.distill_coef,
            None,
        ))),
        Method::Pretrain
        | Method::Kickstart
        | Method::Jsrl
        | Method::Rehearsal
        | Method::Dqfd
        | Method::Bc
        | Method::Finetune
        | Method::TabulaRasa => None,
    }
}

/// The online phase's hook: decayed actor distillation for `qdagger` and `kickstart`,
/// teacher data in every batch for `rehearsal`.
pub fn online_hook(sac: &mut Sac, ctx: &MethodContext<'_>) -> Result<Option<Box<dyn SacHook>>> {
    Ok(match ctx.spec.method {
        Method::Qdagger | Method::Kickstart => Some(Box::new(ActorDistillHook::new(
            ctx.teacher.clone(),
            ctx.spec.method_config.distill_coef,
            Some(ctx.schedule.clone()),
        ))),
        Method::Rehearsal => Some(Box::new(RehearsalHook {
            data: sac.adopt_data(ctx.data()?)?,
            fraction: ctx.spec.method_config.rehearsal_fraction,
        })),
        Method::Pretrain
        | Method::Jsrl
        | Method::Dqfd
        | Method::Bc
        | Method::Finetune
        | Method::TabulaRasa => None,
    })
}

/// Rehearsal's hook: the teacher's transitions, as the agent trains on them.
struct RehearsalHook {
    data: ReplayBuffer,
    fraction: f64,
}

impl SacHook for RehearsalHook {
    fn actor_loss(
        &mut self,
        _: &[f32],
        _: &candle_core::Tensor,
        _: &candle_core::Tensor,
        _: u64,
    ) -> Result<Option<(candle_core::Tensor, crate::agents::Metrics)>> {
        Ok(None)
    }
    fn rehearsal(&self) -> Option<(&ReplayBuffer, f64)> {
        Some((&self.data, self.fraction))
    }
}
