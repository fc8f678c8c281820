//! Learning histories and datasets in the Parquet transition schema.
//!
//! - [`schema`]: the column layout and the checker that names every mismatch;
//! - [`TransitionWriter`] / [`TransitionReader`]: one file, streamed;
//! - [`manifest`]: a dataset folder (`dataset.json` + `data/part-NNNNN.parquet`), its
//!   validation, merging of shards, and the summary shown by `reincarnate inspect`;
//! - [`sampler`]: cross-episode context windows for algorithm distillation;
//! - [`bench_io`]: write/read throughput for `reincarnate bench io`.

pub mod bench_io;
pub mod manifest;
pub mod reader;
pub mod sampler;
pub mod schema;
pub mod tally;
pub mod transitions;
pub mod writer;

pub use bench_io::bench_io;
pub use manifest::{
    merge, summarize, validate, validate_or_error, DatasetSummary, DatasetWriter, Manifest,
    Problem, RunEntry, SourceAlgo, TaskEntry,
};
pub use reader::TransitionReader;
pub use sampler::{WindowBatch, WindowSampler};
pub use schema::{ActionSpec, PolicyKind, PolicySpec, TransitionSchema};
pub use tally::RunSummary;
pub use transitions::{ActionRef, Actions, EpisodeSpan, RunSpan, TransitionRef, Transitions};
pub use writer::{FileSummary, TransitionWriter, WriterOptions};

#[cfg(test)]
mod tests;
