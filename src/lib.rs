//! reincarnate: reusing prior computation in reinforcement learning.
//!
//! Layering, lowest first: [`envs`], `nn` → `agents`, `history`, `checkpoint` →
//! `reincarnation`, `ad`, `train`, [`experiment`] → the binary's `main.rs`. Nothing lower
//! imports anything higher.

pub mod ad;
pub mod agents;
pub mod archive;
pub mod bench;
pub mod checkpoint;
pub mod collect;
pub mod config;
pub mod device;
pub mod distributed;
pub mod envs;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod formats;
pub mod fs;
pub mod history;
pub mod hub;
pub mod inspect;
pub mod limits;
pub mod nn;
pub mod reincarnation;
pub mod replay;
pub mod report;
pub mod rng;
pub mod stage_result;
pub mod storage;
pub mod train;

pub use error::{Error, Result};

/// Helpers of the unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    /// A lookup of environment variables from `(name, value)` pairs, for code that reads the
    /// environment through a function.
    pub fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1.clone())
    }
}
