//! Fine-tuning (Agarwal et al. 2022, §4 baselines): the student has the teacher's architecture,
//! starts from the teacher's weights, and continues with its own TD learning (a fresh
//! optimiser and replay). A student of another architecture is refused with the list of
//! tensors that differ.

use super::teacher::Teacher;
use crate::agents::Agent;
use crate::error::{Error, Result};

/// Copies the teacher's weights into `student`.
pub fn load_teacher_weights(student: &mut dyn Agent, teacher: &Teacher) -> Result<()> {
    let weights = teacher.agent.save(false)?;
    student.load(&weights).map_err(|e| {
        Error::Config(format!(
            "finetune needs a student with the teacher's architecture ({}): {e}",
            teacher.source
        ))
    })
}
