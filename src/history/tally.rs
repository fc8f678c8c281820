//! Row-by-row bookkeeping shared by the writer (as rows arrive) and by validation (as a file is
//! read back): the (run, episode, step) sort order, one task per run, and per-run summaries for
//! `dataset.json`. One implementation for both sides means a file the writer accepts is exactly a
//! file validation accepts.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// What `dataset.json` records about one run of one file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run: u32,
    pub task: u32,
    /// Rows of the file holding this run, `start..end` (0-based, end exclusive).
    pub rows: Range<u64>,
    /// Distinct episodes, complete or not.
    pub episodes: u64,
    /// Return of the first complete episode (its last row terminated or truncated), if any.
    pub first_return: Option<f64>,
    /// Return of the last complete episode, if any. A history cut mid-episode does not let
    /// the partial episode pass for the final performance.
    pub last_return: Option<f64>,
}

/// Checks order and accumulates [`RunSummary`]s over a stream of rows.
#[derive(Debug, Default)]
pub struct RowTally {
    rows: u64,
    last: Option<(u32, u32, u32)>,
    runs: Vec<RunSummary>,
    episode_return: f64,
}

impl RowTally {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rows accepted so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Accepts the next row, or says why it breaks the format's order (the message names the
    /// 0-based row and both keys). A rejected row changes nothing.
    #[inline]
    pub fn push(
        &mut self,
        run: u32,
        task: u32,
        episode: u32,
        step: u32,
        reward: f32,
        done: bool,
    ) -> std::result::Result<(), String> {
        let key = (run, episode, step);
        let row = self.rows;
        let new_run = match self.last {
            Some(prev) if key <= prev => {
                return Err(format!(
                    "row {row} (run {run}, episode {episode}, step {step}) does not come after \
                     row {} (run {}, episode {}, step {}): rows must be sorted by (run, episode, step) \
                     without repeats",
                    row - 1,
                    prev.0,
                    prev.1,
                    prev.2
                ))
            }
            Some(prev) => prev.0 != run,
            None => true,
        };
        if !new_run {
            if let Some(r) = self.runs.last() {
                if r.task != task {
                    return Err(format!(
                        "row {row} (run {run}, episode {episode}, step {step}) has task {task} but \
                         run {run} started with task {}: a run holds one task",
                        r.task
                    ));
                }
            }
        }
        let new_episode = new_run || self.last.is_some_and(|p| p.1 != episode);
        if new_run {
            self.runs.push(RunSummary {
                run,
                task,
                rows: row..row,
                episodes: 0,
                first_return: None,
                last_return: None,
            });
        }
        if new_episode {
            self.episode_return = 0.0;
        }
        if let Some(r) = self.runs.last_mut() {
            if new_episode {
                r.episodes += 1;
            }
            r.rows.end = row + 1;
            self.episode_return += f64::from(reward);
            if done {
                r.first_return.get_or_insert(self.episode_return);
                r.last_return = Some(self.episode_return);
            }
        }
        self.last = Some(key);
        self.rows += 1;
        Ok(())
    }

    /// The per-run summaries, in order.
    pub fn finish(self) -> Vec<RunSummary> {
        self.runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_count_episodes_and_use_complete_ones_for_returns() {
        let mut t = RowTally::new();
        // run 0: episode 0 (return 3, complete), episode 1 (return 1, complete), episode 2 cut.
        let rows = [
            (0, 0, 0, 1.0, false),
            (0, 0, 1, 2.0, true),
            (0, 1, 0, 1.0, true),
            (0, 2, 0, 9.0, false),
            (1, 0, 0, 5.0, true),
        ];
        for (run, ep, step, r, done) in rows {
            t.push(run, 7, ep, step, r, done).unwrap();
        }
        let runs = t.finish();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].rows, 0..4);
        assert_eq!(runs[0].episodes, 3);
        assert_eq!(runs[0].first_return, Some(3.0));
        assert_eq!(runs[0].last_return, Some(1.0));
        assert_eq!(runs[1].rows, 4..5);
        assert_eq!(runs[1].last_return, Some(5.0));
    }

    #[test]
    fn order_and_task_errors_name_the_row() {
        let mut t = RowTally::new();
        t.push(0, 0, 0, 0, 0.0, false).unwrap();
        t.push(0, 0, 0, 1, 0.0, false).unwrap();
        let e = t.push(0, 0, 0, 1, 0.0, false).unwrap_err();
        assert!(e.contains("row 2") && e.contains("sorted"), "{e}");
        let e = t.push(0, 1, 1, 0, 0.0, false).unwrap_err();
        assert!(e.contains("row 2") && e.contains("task 1"), "{e}");
        // a rejected row changed nothing: the next valid row is still row 2
        t.push(1, 1, 0, 0, 0.0, false).unwrap();
        assert_eq!(t.rows(), 3);
    }
}
