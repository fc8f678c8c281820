//! Algorithm distillation (Laskin et al. 2023, "In-context reinforcement learning with
//! algorithm distillation", ICLR 2023): a causal transformer trained on learning histories
//! ([`train`]) that, with frozen weights, improves on new tasks from its own context
//! ([`policy`]); expert distillation (ED) is the same model trained on converged episodes only.
//!
//! - [`model`]: the GPT (token layouts, blocks, MLP, positions, dropout);
//! - [`attention`], [`layer_norm`]: causal attention and layer norm, fused on the CPU;
//! - [`kv_cache`]: incremental decoding over a sliding window;
//! - [`train`]: `reincarnate distill` (AD and ED), metrics, checkpoints with exact resume;
//! - [`policy`]: the in-context [`crate::eval::Policy`] for `reincarnate eval`;
//! - [`curves`]: in-context learning curves, the source algorithm's curve, and their plot;
//! - [`stages`]: the `collect`, `distill`, `icl_eval` and `icl_plot` experiment stages;
//! - [`bench`]: `reincarnate bench ad`.

pub mod attention;
pub mod bench;
pub mod curves;
pub mod kv_cache;
pub mod layer_norm;
pub mod model;
pub mod policy;
pub mod stages;
pub mod train;

pub use kv_cache::KvCache;
pub use model::{Activation, Gpt, GptConfig, Positions, TokenLayout, TokenSpec};
pub use policy::{is_in_context, InContextPolicy};
pub use train::{distill, DistillConfig, DistillSummary, Mode, Target};
