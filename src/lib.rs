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
