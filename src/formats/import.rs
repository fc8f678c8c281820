//! Writes an imported offline dataset (Minari, D4RL) as a transition-schema dataset folder:
//! one run on task 0 of the target environment, episodes numbered in source order. The
//! folder is written under a temporary name beside `out` and renamed into place when it is
//! complete, so an interrupted import leaves no dataset behind.
//!
//! Every row is checked: observations and continuous actions finite and of the right size,
//! discrete actions inside the action space, rewards finite. What had to be adapted is
//! counted in the [`ImportReport`] and printed, never done silently: float64 columns rounded
//! to float32, episodes that end without `terminated`/`truncated` (where the data stops, marked
//! truncated), rows dropped because they have no next observation.

use crate::envs::EnvSpec;
use crate::error::{Error, Result};
use crate::history::{
    ActionRef, DatasetWriter, Manifest, SourceAlgo, TaskEntry, TransitionRef, TransitionSchema,
};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What an import read, wrote and had to adapt.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    pub source: String,
    pub episodes: u64,
    pub transitions: u64,
    /// Episodes whose last transition had neither flag set: marked `truncated`.
    pub unflagged_episode_ends: u64,
    /// Rows without a next observation (a timed-out last step of a D4RL episode without
    /// `next_observations`): not written.
    pub dropped_rows: u64,
    /// Columns converted on the way (`rewards: float64 → float32`).
    pub conversions: Vec<String>,
    pub reward_sum: f64,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "imported {}: {} episodes, {} transitions, reward sum {:.3}",
            self.source, self.episodes, self.transitions, self.reward_sum
        )?;
        for c in &self.conversions {
            writeln!(f, "  converted {c}")?;
        }
        if self.unflagged_episode_ends > 0 {
            writeln!(
                f,
                "  {} episodes end without terminated/truncated (the data stops there): marked truncated",
                self.unflagged_episode_ends
            )?;
        }
        if self.dropped_rows > 0 {
            writeln!(
                f,
                "  {} rows dropped: they end an episode by timeout and the file has no next observation for them",
                self.dropped_rows
            )?;
        }
        Ok(())
    }
}

/// One episode's columns: `obs` holds `steps + 1` observations (the last is the final next
/// observation), every other column `steps` values.
pub struct Episode {
    pub obs: Vec<f32>,
    pub discrete: Vec<i64>,
    pub continuous: Vec<f32>,
    pub rewards: Vec<f32>,
    pub terminated: Vec<bool>,
    pub truncated: Vec<bool>,
}

/// Streams episodes into a new dataset folder.
pub struct Importer {
    writer: Option<DatasetWriter>,
    tmp: PathBuf,
    out: PathBuf,
    env: EnvSpec,
    file: PathBuf,
    pub report: ImportReport,
}

impl Importer {
    /// Starts a dataset for `env` at `out` (which must not exist) from the source `file`.
    pub fn create(out: &Path, env: &EnvSpec, file: &Path, source: SourceAlgo) -> Result<Self> {
        if out.exists() {
            return Err(Error::Config(format!(
                "--out {}: already exists; choose a new folder (imports never overwrite)",
                out.display()
            )));
        }
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Config(format!("--out {}: not a folder name", out.display())))?;
        let tmp = out.with_file_name(format!(".{name}.importing-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        let family = crate::envs::TaskFamily::new(&env.config)?;
        let manifest = Manifest::new(
            env.clone(),
            TransitionSchema::for_env(env),
            vec![TaskEntry {
                index: 0,
                params: family.describe_task(0),
            }],
            "imported",
            source.clone(),
        );
        let writer = DatasetWriter::create(&tmp, manifest)?;
        Ok(Self {
            writer: Some(writer),
            tmp,
            out: out.to_path_buf(),
            env: env.clone(),
            file: file.to_path_buf(),
            report: ImportReport {
                source: source.name,
                ..Default::default()
            },
        })
    }

    /// Notes a conversion once (`rewards: float64 → float32`).
    pub fn note_conversion(&mut self, what: String) {
        if !self.report.conversions.contains(&what) {
            self.report.conversions.push(what);
        }
    }

    /// Appends one episode (`label` names it in errors: "episode_3").
    pub fn push_episode(&mut self, label: &str, mut ep: Episode) -> Result<()> {
        let d = self.env.obs_dim();
        let steps = ep.rewards.len();
        let bad = |m: String| Error::data(&self.file, format!("{label}: {m}"));
        let (discrete, act_dim) = match &self.env.action_space {
            crate::envs::Space::Discrete { n } => (Some(*n as i64), 1),
            s => (None, s.flat_dim()),
        };
        let actions = if discrete.is_some() {
            ep.discrete.len()
        } else {
            ep.continuous.len() / act_dim.max(1)
        };
        if ep.obs.len() != (steps + 1) * d
            || actions != steps
            || (discrete.is_none() && ep.continuous.len() != steps * act_dim)
            || ep.terminated.len() != steps
            || ep.truncated.len() != steps
        {
            return Err(bad(format!(
                "columns disagree: {} observation values ({} per step, {steps} steps + 1 expected), \
                 {actions} actions, {steps} rewards, {} terminations, {} truncations",
                ep.obs.len(),
                d,
                ep.terminated.len(),
                ep.truncated.len()
            )));
        }
        if steps == 0 {
            return Ok(());
        }
        if let Some(i) = ep.obs.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!(
                "observation {} holds {} (value {}): observations must be finite",
                i / d,
                ep.obs[i],
                i % d
            )));
        }
        if let Some(i) = ep.rewards.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!("reward {i} is {}", ep.rewards[i])));
        }
        if let Some(n) = discrete {
            if let Some(i) = ep.discrete.iter().position(|&a| a < 0 || a >= n) {
                return Err(bad(format!(
                    "action {i} is {}, outside `{}`'s Discrete({n})",
                    ep.discrete[i],
                    self.env.id()
                )));
            }
        } else if let Some(i) = ep.continuous.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!(
                "action {} holds {}: actions must be finite",
                i / act_dim,
                ep.continuous[i]
            )));
        }
        if !(ep.terminated[steps - 1] || ep.truncated[steps - 1]) {
            ep.truncated[steps - 1] = true;
            self.report.unflagged_episode_ends += 1;
        }
        let episode = u32::try_from(self.report.episodes)
            .map_err(|_| bad("more than 2^32 episodes".into()))?;
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| bad("import finished".into()))?;
        for t in 0..steps {
            let action = match discrete {
                Some(_) => ActionRef::Discrete(ep.discrete[t]),
                None => ActionRef::Continuous(&ep.continuous[t * act_dim..(t + 1) * act_dim]),
            };
            writer.push(&TransitionRef {
                run: 0,
                task: 0,
                episode,
                step: t as u32,
                obs: &ep.obs[t * d..(t + 1) * d],
                action,
                reward: ep.rewards[t],
                terminated: ep.terminated[t],
                truncated: ep.truncated[t],
                next_obs: &ep.obs[(t + 1) * d..(t + 2) * d],
                policy: None,
            })?;
            self.report.reward_sum += f64::from(ep.rewards[t]);
            // An episode that terminates or truncates mid-way is a source error.
            if t + 1 < steps && (ep.terminated[t] || ep.truncated[t]) {
                return Err(bad(format!(
                    "step {t} of {steps} is flagged terminated/truncated before the episode ends"
                )));
            }
        }
        self.report.episodes += 1;
        self.report.transitions += steps as u64;
        Ok(())
    }

    /// Writes `dataset.json` and moves the folder to `out`.
    pub fn finish(mut self) -> Result<(Manifest, ImportReport)> {
        let writer = self
            .writer
            .take()
            .ok_or_else(|| Error::data(&self.file, "import finished twice"))?;
        if self.report.transitions == 0 {
            return Err(Error::data(&self.file, "no transitions to import"));
        }
        let manifest = writer.finish()?;
        std::fs::rename(&self.tmp, &self.out).map_err(|e| Error::io(&self.out, e))?;
        Ok((manifest, std::mem::take(&mut self.report)))
    }
}

impl Drop for Importer {
    /// An import that did not finish leaves nothing behind.
    fn drop(&mut self) {
        if self.writer.is_some() || self.tmp.exists() {
            self.writer = None;
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}
