//! The hidden-layer nonlinearities of the platform's networks, one enum for every network kind
//! (`activation = "tanh" | "relu" | "gelu"` in configs).

use crate::error::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// CleanRL's and the PPO paper's choice for MLP policies: bounded features keep a policy
    /// smooth across small, normalised inputs.
    Tanh,
    /// ReLU: the Q-networks' and SAC's choice; on the CPU also the cheapest (GELU's forward and
    /// backward take about a quarter of a small transformer's training step).
    Relu,
    /// GELU, tanh approximation (GPT-2, nanoGPT).
    Gelu,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Tanh => x.tanh()?,
            Activation::Relu => x.relu()?,
            Activation::Gelu => x.gelu()?,
        })
    }
}
