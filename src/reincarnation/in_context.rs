//! An in-context learner as a teacher: `reincarnate --teacher runs/NAME/ad --env ENV --task K`.
//!
//! The frozen AD (or ED) model is rolled out in context on task `K` for `episodes` episodes,
//! its context filled only by its own growing history, exactly as in-context evaluation does.
//! What it found there becomes a teacher for a small reactive student:
//! - its whole rollout (every transition, from its first exploring episode on) is the teacher
//!   data ([`InContextRollout::replay`]);
//! - its action distributions over the final episodes, averaged per observation, are the
//!   distillation target ([`TableTeacher`]): the teacher's policy output for an observation is
//!   the mean of the model's softmax at its visits to that observation in the last
//!   `final_episodes` episodes, uniform for an observation it never visited there, and its
//!   greedy action is that mean's most likely one.
//!
//! The table is keyed by the exact observation, so the target is the in-context policy itself
//! where the observation is Markov (Dark Room: the position); where it is not (Key-to-Door),
//! the table averages over the situations that share an observation.

use super::teacher::Teacher;
use crate::agents::tabular_q::obs_key;
use crate::agents::{Agent, Experience, Metrics, PolicyOutput};
use crate::checkpoint::CheckpointData;
use crate::envs::vec_env::ActionBatch;
use crate::envs::{EnvSpec, TaskFamily, VecEnv};
use crate::error::{Error, Result};
use crate::eval::{ActionBuf, Feedback, Policy};
use crate::replay::{RawArray, ReplayBuffer};
use candle_core::Device;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Whether `src` is a checkpoint folder of an in-context learner (AD/ED).
pub fn is_in_context_teacher(src: &str) -> bool {
    let config = Path::new(src).join(crate::checkpoint::CONFIG_FILE);
    std::fs::read_to_string(config)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .is_some_and(|c| crate::ad::policy::is_in_context(&c))
}

/// What the in-context rollout found (`OUT/reincarnation.json`'s `in_context_teacher`).
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct InContextReport {
    pub task: usize,
    pub episodes: usize,
    /// Environment steps of the rollout (the teacher data's transitions).
    pub steps: usize,
    /// Return of each episode of the rollout, in order.
    pub returns_by_episode: Vec<f64>,
    /// Mean return over the last `final_episodes` episodes: the in-context final level.
    pub final_level: f64,
    pub final_episodes: usize,
    /// Whether task `K` is one the model was distilled on (a held-out task is the usual case).
    pub training_task: bool,
}

/// The rollout: its transitions (the teacher data), the teacher built from its final
/// episodes, and the report.
pub struct InContextRollout {
    pub replay: ReplayBuffer,
    pub teacher: Teacher,
    pub report: InContextReport,
}

/// Rolls the model in `dir` out in context on `task` for `episodes` episodes (sampling its
/// actions, as in-context evaluation does) and builds the teacher from the last
/// `final_episodes`.
pub fn roll_out(
    dir: &Path,
    family: &TaskFamily,
    task: usize,
    episodes: usize,
    final_episodes: usize,
    seed: u64,
    device: &Device,
) -> Result<InContextRollout> {
    if episodes == 0 || final_episodes == 0 || final_episodes > episodes {
        return Err(Error::Config(format!(
            "method_config.in_context_episodes ({episodes}) must be ≥ 1 and ≥ \
             method_config.in_context_final_episodes ({final_episodes}) ≥ 1"
        )));
    }
    let data = crate::checkpoint::load_weights(dir)?;
    let cfg = crate::ad::train::AdCheckpointConfig::decode(&data.config)?;
    let spec = family.spec();
    if cfg.env.observation_space != spec.observation_space
        || cfg.env.action_space != spec.action_space
    {
        return Err(Error::Config(format!(
            "teacher {}: distilled on `{}` ({} → {}), which does not match `{}` ({} → {})",
            dir.display(),
            cfg.env.id(),
            cfg.env.observation_space,
            cfg.env.action_space,
            spec.id(),
            spec.observation_space,
            spec.action_space
        )));
    }
    let n_actions = spec.action_space.discrete_n().ok_or_else(|| {
        Error::Config(format!(
            "teacher {}: an in-context teacher chooses discrete actions; `{}` has {}",
            dir.display(),
            spec.id(),
            spec.action_space
        ))
    })?;
    let training_task = cfg
        .training_tasks
        .as_ref()
        .is_some_and(|t| u32::try_from(task).is_ok_and(|k| t.tasks.binary_search(&k).is_ok()));
    if training_task {
        tracing::warn!(
            "teacher {}: task {task} is one of the model's training tasks",
            dir.display()
        );
    }
    let mut policy = crate::ad::policy::InContextPolicy::from_checkpoint(
        &data,
        device,
        crate::rng::derive_seed(seed, 0x1C7),
    )?;
    let d = spec.obs_dim();
    // Episodes end by the horizon at the latest: capacity for the whole rollout.
    let capacity = episodes * spec.max_episode_steps.max(1) as usize;
    let mut replay =
        ReplayBuffer::for_spec(capacity, spec, None, "method_config.in_context_episodes")?;
    let mut venv = VecEnv::new(family, &[task], crate::rng::derive_seed(seed, 0x1C8))?;
    venv.reset();
    policy.begin(1)?;
    let mut obs = venv.obs().to_vec();
    let mut actions = ActionBuf::Discrete(vec![0]);
    let mut returns = Vec::with_capacity(episodes);
    let mut ret = 0.0f64;
    // Per observation: summed probabilities and visits over the final episodes.
    let mut table: HashMap<Vec<u32>, (Vec<f64>, Vec<f32>, usize)> = HashMap::new();
    let mut order: Vec<Vec<u32>> = Vec::new();
    let bar = crate::report::progress_bar(episodes as u64, "in-context teacher rollout");
    while returns.len() < episodes {
        policy.act(&obs, &mut actions)?;
        let ActionBuf::Discrete(a) = &actions else {
            unreachable!("discrete buffer")
        };
        let a = a[0];
        if returns.len() >= episodes - final_episodes {
            let probs = softmax(&policy.last_logits()[0]);
            let key = obs_key(&obs);
            let entry = table.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                (vec![0.0; n_actions], obs.clone(), 0)
            });
            for (s, p) in entry.0.iter_mut().zip(&probs) {
                *s += p;
            }
            entry.2 += 1;
        }
        venv.step(ActionBatch::Discrete(&[a]))?;
        let (r, term, trunc) = (venv.rewards()[0], venv.terminated()[0], venv.truncated()[0]);
        replay.push(&obs, a as i64, &[], r, venv.next_obs(), term, trunc)?;
        policy.observe(&Feedback {
            actions: &actions,
            rewards: &[r],
            terminated: &[term],
            truncated: &[trunc],
            next_obs: &venv.next_obs()[..d],
        })?;
        ret += r as f64;
        if term || trunc {
            returns.push(ret);
            ret = 0.0;
            bar.inc(1);
        }
        obs.copy_from_slice(&venv.obs()[..d]);
    }
    bar.finish_and_clear();
    let mut observations = Vec::with_capacity(order.len() * d);
    let mut probs = Vec::with_capacity(order.len() * n_actions);
    for key in &order {
        let (sum, o, visits) = &table[key];
        observations.extend_from_slice(o);
        probs.extend(sum.iter().map(|s| (s / *visits as f64) as f32));
    }
    let agent = TableTeacher::new(spec.clone(), n_actions, observations, probs)?;
    let source = dir.display().to_string();
    let final_level = crate::eval::mean_of_last(&returns, final_episodes).unwrap_or(f64::NAN);
    let steps = replay.len();
    Ok(InContextRollout {
        replay,
        teacher: Teacher::from_agent(Box::new(agent), source, spec),
        report: InContextReport {
            task,
            episodes,
            steps,
            returns_by_episode: returns,
            final_level,
            final_episodes,
            training_task,
        },
    })
}

fn softmax(logits: &[f32]) -> Vec<f64> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = logits.iter().map(|&l| ((l - m) as f64).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|x| x / z).collect()
}

/// A fixed policy given as a table: observation → action probabilities (uniform elsewhere).
/// It does not learn; it saves as `observations` (F32, states × obs_dim) and `probs` (F32,
/// states × actions).
pub struct TableTeacher {
    env: EnvSpec,
    n_actions: usize,
    obs_dim: usize,
    index: HashMap<Vec<u32>, usize>,
    observations: Vec<f32>,
    probs: Vec<f32>,
}

impl TableTeacher {
    pub fn new(
        env: EnvSpec,
        n_actions: usize,
        observations: Vec<f32>,
        probs: Vec<f32>,
    ) -> Result<Self> {
        let obs_dim = env.obs_dim();
        let rows = observations.len() / obs_dim.max(1);
        if observations.len() != rows * obs_dim || probs.len() != rows * n_actions {
            return Err(Error::Config(format!(
                "a policy table of {rows} observations needs {} probabilities, got {}",
                rows * n_actions,
                probs.len()
            )));
        }
        let index = observations
            .chunks_exact(obs_dim.max(1))
            .enumerate()
            .map(|(r, o)| (obs_key(o), r))
            .collect();
        Ok(Self {
            env,
            n_actions,
            obs_dim,
            index,
            observations,
            probs,
        })
    }

    /// The probabilities at one observation (uniform where the table has none).
    pub fn probs(&self, obs: &[f32]) -> Vec<f32> {
        match self.index.get(&obs_key(obs)) {
            Some(&r) => self.probs[r * self.n_actions..(r + 1) * self.n_actions].to_vec(),
            None => vec![1.0 / self.n_actions as f32; self.n_actions],
        }
    }

    /// Observations the table holds.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

impl Agent for TableTeacher {
    fn algorithm(&self) -> &str {
        "policy_table"
    }

    /// The most likely action (the first on ties), exploring or not: a teacher does not learn.
    fn act(&mut self, obs: &[f32], _explore: bool, _step: u64, out: &mut ActionBuf) -> Result<()> {
        let n = crate::agents::batch_rows("policy_table", obs, self.obs_dim)?;
        let ActionBuf::Discrete(out) = out else {
            return Err(Error::Env(
                "a policy table acts with discrete actions".into(),
            ));
        };
        for (i, a) in out.iter_mut().enumerate().take(n) {
            let p = self.probs(&obs[i * self.obs_dim..(i + 1) * self.obs_dim]);
            *a = (0..p.len()).fold(0, |b, k| if p[k] > p[b] { k } else { b });
        }
        Ok(())
    }

    fn observe(&mut self, _exp: &Experience<'_>) -> Result<()> {
        Err(Error::Config(
            "a policy table (an in-context teacher) is fixed: it cannot be trained".into(),
        ))
    }

    fn update(&mut self, _step: u64) -> Result<Option<Metrics>> {
        Ok(None)
    }

    fn policy_output(&self, obs: &[f32]) -> Result<PolicyOutput> {
        let n = crate::agents::batch_rows("policy_table", obs, self.obs_dim)?;
        let mut p = Vec::with_capacity(n * self.n_actions);
        for o in obs.chunks_exact(self.obs_dim.max(1)).take(n) {
            p.extend(self.probs(o));
        }
        Ok(PolicyOutput::Probs(p))
    }

    fn save(&self, _resume: bool) -> Result<CheckpointData> {
        let s = self.len();
        Ok(CheckpointData {
            config: serde_json::json!({ "algorithm": "policy_table", "env": self.env }),
            model: BTreeMap::from([
                (
                    "observations".to_string(),
                    RawArray::f32(vec![s, self.obs_dim], &self.observations),
                ),
                (
                    "probs".to_string(),
                    RawArray::f32(vec![s, self.n_actions], &self.probs),
                ),
            ]),
            ..Default::default()
        })
    }

    fn load(&mut self, _data: &CheckpointData) -> Result<()> {
        Err(Error::Config(
            "a policy table is built from an in-context rollout, not loaded".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envs::EnvConfig;

    #[test]
    fn table_gives_its_rows_and_uniform_elsewhere() {
        let family = TaskFamily::new(&EnvConfig::new("dark_room")).unwrap();
        let mut t = TableTeacher::new(
            family.spec().clone(),
            5,
            vec![4.0, 4.0, 0.0, -0.0],
            vec![0.1, 0.6, 0.1, 0.1, 0.1, 0.0, 0.0, 0.0, 0.5, 0.5],
        )
        .unwrap();
        let PolicyOutput::Probs(p) = t.policy_output(&[4.0, 4.0, 1.0, 1.0, 0.0, 0.0]).unwrap()
        else {
            panic!("probabilities expected")
        };
        assert_eq!(&p[..5], &[0.1, 0.6, 0.1, 0.1, 0.1]);
        assert_eq!(&p[5..10], &[0.2; 5]);
        // −0 and +0 are one observation
        assert_eq!(&p[10..], &[0.0, 0.0, 0.0, 0.5, 0.5]);
        let mut a = ActionBuf::Discrete(vec![9, 9]);
        t.act(&[4.0, 4.0, 0.0, 0.0], true, 0, &mut a).unwrap();
        assert!(matches!(&a, ActionBuf::Discrete(v) if v == &[1, 3]));
        let e = TableTeacher::new(family.spec().clone(), 5, vec![4.0, 4.0], vec![0.2; 4])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("needs 5 probabilities, got 4"), "{e}");
    }
}
