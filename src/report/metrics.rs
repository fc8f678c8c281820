//! Metrics files: one JSON object per line (`metrics.jsonl`), each with a `step` and a `kind`
//! (`train`, `episode`, `eval`), readable with `pandas.read_json(path, lines=True)`.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Lines reach the file at least this often while a run logs, so that a long run can be
/// followed (`tail -f`) without a write per line.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

pub struct MetricsLog {
    path: PathBuf,
    out: BufWriter<std::fs::File>,
    last_flush: Instant,
}

impl MetricsLog {
    /// Opens `path` for appending. With `keep_up_to = Some(step)` (resuming), lines logged after
    /// `step` by the interrupted run are dropped first, so the file reads as one uninterrupted run.
    pub fn open(path: &Path, keep_up_to: Option<u64>) -> Result<Self> {
        match keep_up_to {
            Some(step) if path.exists() => {
                let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
                let mut kept = String::new();
                for line in std::io::BufReader::new(f).lines() {
                    let line = line.map_err(|e| Error::io(path, e))?;
                    let s = serde_json::from_str::<serde_json::Value>(&line)
                        .ok()
                        .and_then(|v| v.get("step").and_then(|s| s.as_u64()));
                    if s.is_some_and(|s| s <= step) {
                        kept.push_str(&line);
                        kept.push('\n');
                    }
                }
                crate::fs::write_atomic(path, kept.as_bytes())?;
            }
            None if path.exists() => {
                std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
            }
            _ => {}
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
            last_flush: Instant::now(),
        })
    }

    pub fn log(&mut self, step: u64, kind: &str, values: &BTreeMap<String, f64>) -> Result<()> {
        let mut obj = serde_json::Map::new();
        obj.insert("step".into(), step.into());
        obj.insert("kind".into(), kind.into());
        for (k, v) in values {
            // JSON has no NaN/inf: write them as null rather than corrupting the file.
            let val = serde_json::Number::from_f64(*v)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null);
            obj.insert(k.clone(), val);
        }
        serde_json::to_writer(&mut self.out, &obj)
            .map_err(|e| Error::data(&self.path, e.to_string()))?;
        self.out
            .write_all(b"\n")
            .map_err(|e| Error::io(&self.path, e))?;
        if self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// Re-opens the file by path (after the folder holding it was swapped by a checkpoint save).
    pub fn reopen(&mut self) -> Result<()> {
        self.flush()?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        self.out = BufWriter::new(f);
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.last_flush = Instant::now();
        self.out.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// Reads (step, value) pairs of `key` from lines of the given `kind`.
pub fn read_series(path: &Path, kind: &str, key: &str) -> Result<Vec<(f64, f64)>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| Error::io(path, e))?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v.get("kind").and_then(|k| k.as_str()) != Some(kind) {
            continue;
        }
        if let (Some(s), Some(x)) = (
            v.get("step").and_then(|s| s.as_f64()),
            v.get(key).and_then(|x| x.as_f64()),
        ) {
            out.push((s, x));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_without_an_explicit_flush_once_a_second_passed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let mut m = MetricsLog::open(&p, None).unwrap();
        let line = BTreeMap::from([("loss".to_string(), 1.0)]);
        m.log(1, "train", &line).unwrap();
        std::thread::sleep(FLUSH_EVERY + Duration::from_millis(100));
        m.log(2, "train", &line).unwrap();
        // Still open and not flushed by hand: both lines must be readable already.
        assert_eq!(read_series(&p, "train", "loss").unwrap().len(), 2);
        drop(m);
    }

    #[test]
    fn resume_drops_lines_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let mut m = MetricsLog::open(&p, None).unwrap();
        for s in [10u64, 20, 30] {
            m.log(
                s,
                "episode",
                &BTreeMap::from([("return".to_string(), s as f64)]),
            )
            .unwrap();
        }
        m.log(
            40,
            "train",
            &BTreeMap::from([("loss".to_string(), f64::NAN)]),
        )
        .unwrap();
        m.flush().unwrap();
        drop(m);
        let mut m = MetricsLog::open(&p, Some(20)).unwrap();
        m.log(
            25,
            "episode",
            &BTreeMap::from([("return".to_string(), 1.0)]),
        )
        .unwrap();
        m.flush().unwrap();
        assert_eq!(
            read_series(&p, "episode", "return").unwrap(),
            vec![(10.0, 10.0), (20.0, 20.0), (25.0, 1.0)]
        );
    }
}
