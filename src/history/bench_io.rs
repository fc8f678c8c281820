//! `reincarnate bench io`: write and read throughput of the transition format, on data shaped
//! like a Dark Room learning history (obs = 2-D grid position, 5 discrete actions, sparse
//! reward, 20-step episodes, runs of 100k transitions).

use std::path::Path;
use std::time::Instant;

use super::reader::TransitionReader;
use super::schema::{ActionSpec, TransitionSchema};
use super::transitions::{ActionRef, TransitionRef, Transitions};
use super::writer::{TransitionWriter, WriterOptions};
use crate::error::{Error, Result};
use crate::report::Figure;
use crate::rng::Rng;

const EPISODE_LEN: u32 = 20;
const RUN_LEN: usize = 100_000;
const GRID: i32 = 9;

/// A random-walk history on a 9×9 grid with the goal at (6, 6), deterministic in the seed.
pub fn synthetic_history(n_rows: usize, seed: u64) -> Transitions {
    let schema = TransitionSchema::new(2, ActionSpec::Discrete);
    let mut t = Transitions::new(schema);
    let mut rng = Rng::seed_from_u64(seed);
    let mut pos = [GRID / 2, GRID / 2];
    let (mut episode, mut step, mut run) = (0u32, 0u32, 0u32);
    for i in 0..n_rows {
        if i > 0 && i % RUN_LEN == 0 {
            run += 1;
            episode = 0;
            step = 0;
            pos = [GRID / 2, GRID / 2];
        }
        let a = rng.below(5) as i64;
        let (dx, dy) = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)][a as usize];
        let next = [
            (pos[0] + dx).clamp(0, GRID - 1),
            (pos[1] + dy).clamp(0, GRID - 1),
        ];
        let truncated = step + 1 == EPISODE_LEN;
        let obs = [pos[0] as f32, pos[1] as f32];
        let next_obs = [next[0] as f32, next[1] as f32];
        t.push(&TransitionRef {
            run,
            task: run % 81,
            episode,
            step,
            obs: &obs,
            action: ActionRef::Discrete(a),
            reward: f32::from(u8::from(next == [6, 6])),
            terminated: false,
            truncated,
            next_obs: &next_obs,
            policy: None,
        });
        pos = next;
        step += 1;
        if truncated {
            episode += 1;
            step = 0;
            pos = [GRID / 2, GRID / 2];
        }
    }
    t
}

/// Writes `n_rows` transitions to `dir/bench-io.parquet`, reads them back, checks the round
/// trip, and reports rows/s written, rows/s read and the file size. The file is removed.
pub fn bench_io(n_rows: usize, dir: &Path) -> Result<Vec<Figure>> {
    let data = synthetic_history(n_rows, 0);
    let path = dir.join("bench-io.parquet");

    let start = Instant::now();
    let mut w = TransitionWriter::create(&path, data.schema, None, &WriterOptions::default())?;
    w.push_batch(&data)?;
    let summary = w.finish()?;
    let write_s = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let back = TransitionReader::open(&path)?.read_all()?;
    let read_s = start.elapsed().as_secs_f64();

    let same = back == data;
    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    if !same {
        return Err(Error::data(
            &path,
            "bench round trip: the rows read back differ from those written",
        ));
    }
    let rate = |s: f64| n_rows as f64 / s.max(1e-9);
    Ok(vec![
        Figure {
            name: "io/write".into(),
            value: rate(write_s),
            unit: "rows/s".into(),
        },
        Figure {
            name: "io/read".into(),
            value: rate(read_s),
            unit: "rows/s".into(),
        },
        Figure {
            name: "io/file_size".into(),
            value: summary.bytes as f64,
            unit: "bytes".into(),
        },
    ])
}
