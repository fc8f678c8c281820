//! `reincarnate distill`: train the transformer by behaviour cloning on learning histories.
//!
//! - AD (algorithm distillation, Laskin et al. 2023 §4): windows of `context` transitions drawn
//!   from whole learning histories, across episode boundaries ([`WindowSampler`]), optionally
//!   keeping every k-th episode; the model predicts every action of the window.
//! - ED (expert distillation, the paper's baseline): the same model and loss on the last
//!   `ed_episodes` episodes of each history only (the converged policy's behaviour).
//!
//! Optimiser: AdamW (β 0.9/0.99 as the paper's Adam; decoupled weight decay on matrices only),
//! linear warm-up then cosine decay to 0, global-norm clipping at 1. Outputs a checkpoint folder
//! (`model.safetensors`, `config.json` with the model config, `trainer_state.json` and
//! `optimizer.safetensors` for exact resume) plus `metrics.jsonl`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::model::{
    accuracy, action_loss, soft_action_loss, Gpt, GptConfig, TokenLayout, TokenSpec, Tokenizer,
    Train,
};
use crate::checkpoint::{raw_to_tensors, tensors_to_raw, CheckpointData};
use crate::envs::obs_encoding::ObsEncoding;
use crate::envs::EnvSpec;
use crate::error::{Error, Result};
use crate::history::manifest::resolve_data_path;
use crate::history::{
    Actions, Manifest, PolicyKind, TransitionReader, Transitions, WindowBatch, WindowSampler,
};
use crate::nn::grad::clip_global_norm;
use crate::nn::optim::{Adam, AdamConfig, AdamState};
use crate::nn::params::ParamStore;
use crate::nn::schedule::Schedule;
use crate::report::metrics::MetricsLog;
use crate::rng::{derive_seed, Rng};

/// AD or ED.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Ad,
    Ed,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ad => "ad",
            Mode::Ed => "ed",
        }
    }
}

/// What the model learns to predict at each transition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The logged action (the paper's).
    #[default]
    Action,
    /// The action probabilities the source sampled it from (the dataset's `policy` column, which
    /// learning histories of sampling sources such as PPO carry): the same expected loss as
    /// `action`, without the noise of the sampled action.
    Policy,
}

impl Target {
    fn is_action(&self) -> bool {
        *self == Target::Action
    }
}

/// Distillation hyperparameters. Defaults follow the paper where it gives a value (batch 128,
/// peak learning rate 3e-4 with a cosine schedule, gradient clip 1, Adam β 0.9/0.99).
/// Left open by the paper and chosen here: 4000 steps with 10% warm-up, weight decay 1e-4,
/// no label smoothing, no token masking, every episode kept, ED on the last 10 episodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    pub mode: Mode,
    pub model: GptConfig,
    /// How observations enter a token (default one-hot per integer coordinate).
    pub obs_encoding: ObsEncoding,
    /// Gradient steps.
    pub steps: u64,
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warm-up steps (linear from 0); then half a cosine to 0 at `steps`.
    pub warmup_steps: u64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub label_smoothing: f64,
    /// `action` (default) or `policy`: see [`Target`].
    #[serde(skip_serializing_if = "Target::is_action")]
    pub target: Target,
    /// Probability of zeroing a whole input token during training.
    pub token_mask: f64,
    /// History subsampling: keep episodes 0, k, 2k, ... of each run (AD only).
    pub every_kth_episode: usize,
    /// ED: the last this many complete episodes of each run.
    pub ed_episodes: usize,
    pub log_interval: u64,
    /// Save a resumable checkpoint every this many steps (0: only at the end).
    pub checkpoint_interval: u64,
    /// Held-out histories (a dataset folder; in a pipeline also a collect stage's name): the
    /// loss and accuracy on a fixed set of their windows, weights frozen, logged as `val` beside
    /// each training line. Sampled with their own random stream: training is the same with or
    /// without them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<PathBuf>,
}

/// Windows of the validation set: this many batches of `batch`, drawn once.
pub const VALIDATION_BATCHES: usize = 8;

impl Default for DistillConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Ad,
            model: GptConfig::default(),
            obs_encoding: ObsEncoding::OneHot,
            steps: 4000,
            batch: 128,
            lr: 3e-4,
            warmup_steps: 400,
            beta1: 0.9,
            beta2: 0.99,
            weight_decay: 1e-4,
            grad_clip: 1.0,
            label_smoothing: 0.0,
            target: Target::Action,
            token_mask: 0.0,
            every_kth_episode: 1,
            ed_episodes: 10,
            log_interval: 100,
            checkpoint_interval: 0,
            validation: None,
        }
    }
}

impl DistillConfig {
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let bad = |m: String| Err(Error::Config(format!("distill: {m}")));
        if self.steps == 0 || self.batch == 0 {
            return bad(format!(
                "steps and batch must be at least 1, found steps = {}, batch = {}",
                self.steps, self.batch
            ));
        }
        crate::limits::check_count(
            "distill steps",
            self.steps,
            crate::limits::MAX_GRADIENT_STEPS,
            "a distillation that long never ends in practice",
        )?;
        // The activations of one batch: tokens × width, several times over per layer.
        crate::limits::check_memory(
            || {
                format!(
                    "a batch of {} contexts of {} tokens",
                    self.batch, self.model.context
                )
            },
            crate::limits::bytes(
                &[
                    self.batch,
                    self.model.context,
                    self.model.d_model,
                    self.model.n_layer.max(1),
                    16,
                ],
                4,
            ),
        )?;
        if self.warmup_steps > self.steps {
            return bad(format!(
                "warmup_steps = {} exceeds steps = {}",
                self.warmup_steps, self.steps
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite() && self.grad_clip > 0.0) {
            return bad(format!(
                "lr and grad_clip must be positive, found lr = {}, grad_clip = {}",
                self.lr, self.grad_clip
            ));
        }
        for (n, p) in [
            ("label_smoothing", self.label_smoothing),
            ("token_mask", self.token_mask),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{n} must be in [0, 1), found {p}"));
            }
        }
        if self.every_kth_episode == 0 || self.ed_episodes == 0 {
            return bad("every_kth_episode and ed_episodes must be at least 1".into());
        }
        Ok(())
    }

    pub fn schedule(&self) -> Schedule {
        Schedule::WarmupCosine {
            peak: self.lr,
            warmup_steps: self.warmup_steps,
            total_steps: self.steps,
            final_value: 0.0,
        }
    }
}

/// Every transition of a dataset folder, runs in manifest order, with the manifest.
pub fn load_dataset(folder: &Path) -> Result<(Manifest, Transitions)> {
    load_dataset_for(folder, &crate::distributed::World::single())
}

/// The transitions of `world`'s rank: file `i` of the manifest's files when `i mod size = rank`
/// (every file for a world of one).
pub fn load_dataset_for(
    folder: &Path,
    world: &crate::distributed::World,
) -> Result<(Manifest, Transitions)> {
    crate::history::validate_or_error(folder)?;
    let manifest = Manifest::load(folder)?;
    if !manifest.layout.is_discrete() {
        return Err(Error::data(
            folder.join("dataset.json"),
            "algorithm distillation here needs a discrete action space; this dataset's actions are continuous",
        ));
    }
    let mut all = Transitions::new(manifest.layout);
    let files = world.slice(&manifest.files());
    if files.is_empty() {
        return Err(Error::data(
            folder.join("dataset.json"),
            format!(
                "{} data files for {} data-parallel ranks: each rank needs at least one",
                manifest.files().len(),
                world.size
            ),
        ));
    }
    for file in files {
        let path = resolve_data_path(folder, file)
            .map_err(|m| Error::data(folder.join("dataset.json"), m))?;
        let t = TransitionReader::open(&path)?.read_all()?;
        all.extend_from(&t, 0..t.len());
    }
    if all.is_empty() {
        return Err(Error::data(folder, "the dataset holds no transitions"));
    }
    Ok((manifest, all))
}

/// The last `n` complete episodes of every run (expert distillation's data).
pub fn final_episodes(data: &Transitions, n: usize) -> Transitions {
    let episodes = data.episodes();
    let runs = data.runs(&episodes);
    let mut out = Transitions::new(data.schema);
    for r in &runs {
        let complete: Vec<_> = episodes[r.episodes.clone()]
            .iter()
            .filter(|e| e.complete)
            .collect();
        for e in &complete[complete.len().saturating_sub(n)..] {
            out.extend_from(data, e.rows.clone());
        }
    }
    out
}

/// Model inputs of a window batch: token features, per-window first real token slot, and one
/// target and loss-mask entry per transition (the model predicts one action per transition in
/// either layout: at its token, or at its s token in the sar layout).
pub struct Inputs {
    pub features: Vec<f32>,
    pub first_pos: Vec<usize>,
    pub targets: Vec<u32>,
    pub mask: Vec<f32>,
    /// With `target = "policy"`: per transition, the source's action probabilities (row-major,
    /// `num_actions` each; padding rows zero).
    pub soft_targets: Option<Vec<f32>>,
}

impl Inputs {
    /// The training loss of `logits` on these inputs: against the soft targets where there
    /// are some, else against the logged actions.
    pub fn loss(
        &self,
        logits: &candle_core::Tensor,
        label_smoothing: f64,
    ) -> Result<candle_core::Tensor> {
        match &self.soft_targets {
            Some(p) => soft_action_loss(logits, p, &self.mask, label_smoothing),
            None => action_loss(logits, &self.targets, &self.mask, label_smoothing),
        }
    }
}

/// [`window_inputs`] with the targets `cfg.target` asks for, read from `data` (the dataset the
/// windows of `w` were cut from; [`check_target`] has accepted it).
pub fn batch_inputs(
    cfg: &DistillConfig,
    w: &WindowBatch,
    data: &Transitions,
    tokens: &Tokenizer,
) -> Result<Inputs> {
    let mut x = window_inputs(w, tokens)?;
    if cfg.target == Target::Policy {
        let na = tokens.num_actions();
        let mut soft = vec![0.0f32; w.rows.len() * na];
        for (slot, &row) in w.rows.iter().enumerate() {
            if row >= 0 {
                let row = row as usize;
                soft[slot * na..(slot + 1) * na]
                    .copy_from_slice(&data.policy[row * na..(row + 1) * na]);
            }
        }
        x.soft_targets = Some(soft);
    }
    Ok(x)
}

/// With `target = "policy"`, the dataset at `folder` must hold action probabilities for every
/// action: a `policy` column of kind `probs` and `num_actions` values.
pub fn check_target(
    cfg: &DistillConfig,
    data: &Transitions,
    num_actions: usize,
    folder: &Path,
) -> Result<()> {
    if cfg.target != Target::Policy {
        return Ok(());
    }
    match data.schema.policy {
        Some(p) if p.kind == PolicyKind::Probs && p.dim == num_actions => {
            // Every row a distribution: finite, non-negative, summing to 1.
            for (row, probs) in data.policy.chunks(num_actions).enumerate() {
                let sum: f32 = probs.iter().sum();
                if probs.iter().any(|p| !p.is_finite() || *p < 0.0) || (sum - 1.0).abs() > 1e-3 {
                    return Err(Error::data(
                        folder.join("dataset.json"),
                        format!(
                            "the `policy` column of run {} episode {} step {} is not a probability distribution: {probs:?}",
                            data.run[row], data.episode[row], data.step[row]
                        ),
                    ));
                }
            }
            Ok(())
        }
        found => Err(Error::data(
            folder.join("dataset.json"),
            format!(
                "target = \"policy\" trains on the source's action probabilities: the `policy` column must hold {num_actions} probabilities (kind probs), found {}",
                match found {
                    Some(p) => format!("{} values of kind {:?}", p.dim, p.kind),
                    None => "no policy column (collect with a sampling source such as ppo)".into(),
                }
            ),
        )),
    }
}

/// The tokens of a window batch in the tokenizer's layout: `C` transitions per window become
/// `C` tokens, or `3·C` tokens (s, a, r per transition) in the sar layout, where the first
/// real token slot is 3 × the first real transition slot.
pub fn window_inputs(w: &WindowBatch, tokens: &Tokenizer) -> Result<Inputs> {
    let (b, c, na) = (w.batch, w.context, tokens.num_actions());
    let (Actions::Discrete(prev), Actions::Discrete(target)) = (&w.prev_action, &w.target_action)
    else {
        return Err(Error::Config(
            "distill needs discrete actions in the window batch".into(),
        ));
    };
    let mut first_pos = vec![0usize; b];
    let mut targets = vec![0u32; b * c];
    for (i, fp) in first_pos.iter_mut().enumerate() {
        *fp = (0..c).find(|&j| w.mask[i * c + j] > 0.0).unwrap_or(c - 1);
        for j in 0..c {
            let s = i * c + j;
            if w.mask[s] == 0.0 {
                continue;
            }
            let a = target[s];
            if a < 0 || a as usize >= na {
                return Err(Error::Config(format!(
                    "dataset action {a} is outside the action space of {na} actions"
                )));
            }
            targets[s] = a as u32;
        }
    }
    let features = match tokens.layout() {
        TokenLayout::Transition => transition_tokens(w, prev, tokens),
        TokenLayout::Sar => {
            first_pos.iter_mut().for_each(|fp| *fp *= 3);
            sar_tokens(w, &targets, tokens)
        }
    };
    Ok(Inputs {
        soft_targets: None,
        features,
        first_pos,
        targets,
        mask: w.mask.clone(),
    })
}

/// Transition layout: token j holds (obs_j, a_{j−1}, r_{j−1}); padding is an all-zero token
/// (masked as a key and in the loss).
fn transition_tokens(w: &WindowBatch, prev: &[i64], tokens: &Tokenizer) -> Vec<f32> {
    let (n, f) = (w.batch * w.context, tokens.features());
    let prevs: Vec<Option<(usize, f32)>> = (0..n)
        .map(|s| (w.has_prev[s] > 0.0).then(|| (prev[s].max(0) as usize, w.prev_reward[s])))
        .collect();
    let starts: Vec<bool> = w.episode_start.iter().map(|&x| x > 0.0).collect();
    let mut features = vec![0f32; n * f];
    tokens.write(
        &w.obs,
        &prevs,
        &starts,
        &w.episode_return,
        &w.prev_final_obs,
        &mut features,
    );
    for (s, tok) in features.chunks_mut(f).enumerate() {
        if w.mask[s] == 0.0 {
            tok.iter_mut().for_each(|x| *x = 0.0);
        }
    }
    features
}

/// Sar layout: slot j gives the tokens s_j, a_j, r_j. r_j is the reward slot j + 1 records as
/// its previous one; the window does not hold the last slot's reward, so that r token is 0,
/// which changes nothing: it comes after the last s token, so no prediction attends to it.
/// Padding slots give three all-zero tokens.
fn sar_tokens(w: &WindowBatch, actions: &[u32], tokens: &Tokenizer) -> Vec<f32> {
    let (c, n, f) = (w.context, w.batch * w.context, tokens.features());
    let mut states = vec![0f32; n * f];
    tokens.write_states(&w.obs, &mut states);
    let actions: Vec<Option<usize>> = actions.iter().map(|&a| Some(a as usize)).collect();
    let mut acts = vec![0f32; n * f];
    tokens.write_actions(&actions, &mut acts);
    let rewards: Vec<f32> = (0..n)
        .map(|s| {
            let next_has_prev = s % c + 1 < c && w.has_prev[s + 1] > 0.0;
            if next_has_prev {
                w.prev_reward[s + 1]
            } else {
                0.0
            }
        })
        .collect();
    let mut rews = vec![0f32; n * f];
    tokens.write_rewards(&rewards, &mut rews);
    let mut features = vec![0f32; 3 * n * f];
    for (s, out) in features.chunks_mut(3 * f).enumerate() {
        if w.mask[s] == 0.0 {
            continue;
        }
        let tok = s * f..(s + 1) * f;
        out[..f].copy_from_slice(&states[tok.clone()]);
        out[f..2 * f].copy_from_slice(&acts[tok.clone()]);
        out[2 * f..].copy_from_slice(&rews[tok]);
    }
    features
}

/// What `distill` returns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DistillSummary {
    pub out: PathBuf,
    pub mode: Mode,
    pub steps: u64,
    pub final_loss: f64,
    pub final_accuracy: f64,
    pub tokens_per_second: f64,
    pub num_params: usize,
    /// Loss and accuracy on the validation windows at the end (with `validation` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<(f64, f64)>,
}

impl DistillSummary {
    /// One line on the run: steps, size, final loss and accuracy, speed. `data`: the dataset.
    pub fn line(&self, data: &Path) -> String {
        let val = match self.validation {
            Some((l, a)) => format!(", validation loss {l:.4} (accuracy {a:.3})"),
            None => String::new(),
        };
        format!(
            "{} on {}: {} steps, {} parameters, final loss {:.4}, action accuracy {:.3}{val}, {:.0} tokens/s",
            self.mode.as_str(),
            data.display(),
            self.steps,
            self.num_params,
            self.final_loss,
            self.final_accuracy,
            self.tokens_per_second
        )
    }
}

/// Where `distill` writes without `--out`: `checkpoints/DATASET-MODE-sSEED`.
pub fn default_out(data: &Path, mode: Mode, seed: u64) -> PathBuf {
    let stem = data
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    PathBuf::from("checkpoints").join(format!("{stem}-{}-s{seed}", mode.as_str()))
}

/// A model being trained with its optimiser and random stream.
pub struct Trainer {
    pub model: Gpt,
    pub store: ParamStore,
    pub opt: Adam,
    pub rng: Rng,
    pub step: u64,
}

impl Trainer {
    pub fn new(
        cfg: &DistillConfig,
        tokens: &TokenSpec,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut store = ParamStore::new(device, derive_seed(seed, 1));
        let model = Gpt::new(&cfg.model, tokens, &mut store)?;
        let mut opt = Adam::new(
            store.trainable(),
            AdamConfig {
                beta1: cfg.beta1,
                beta2: cfg.beta2,
                eps: 1e-8,
                weight_decay: cfg.weight_decay,
                decoupled_weight_decay: true,
            },
        )?;
        // nanoGPT: decay matrices only (not biases, layer-norm gains, position table).
        for (name, v) in store.trainable() {
            if v.rank() < 2 || name.contains("wpe") {
                opt.options_mut(&name)?.weight_decay = Some(0.0);
            }
        }
        Ok(Self {
            model,
            store,
            opt,
            rng: Rng::seed_from_u64(derive_seed(seed, 2)),
            step: 0,
        })
    }

    /// One gradient step on `inputs`; returns (loss, accuracy, gradient norm).
    pub fn update(&mut self, cfg: &DistillConfig, x: &Inputs) -> Result<(f64, f64, f64)> {
        self.update_over(cfg, x, &crate::distributed::SingleProcess::new())
    }

    /// [`update`](Self::update) with the gradients averaged over the ranks of `comm`.
    pub fn update_over(
        &mut self,
        cfg: &DistillConfig,
        x: &Inputs,
        comm: &dyn crate::distributed::Collective,
    ) -> Result<(f64, f64, f64)> {
        let (b, t) = (x.first_pos.len(), cfg.model.max_tokens());
        let logits = self.model.forward(
            &x.features,
            b,
            t,
            &x.first_pos,
            None,
            Some(Train {
                rng: &mut self.rng,
                token_mask: cfg.token_mask,
            }),
        )?;
        let loss = x.loss(&logits, cfg.label_smoothing)?;
        let loss_v = f64::from(loss.to_scalar::<f32>()?);
        if !loss_v.is_finite() {
            return Err(Error::Config(format!(
                "distill: the loss became {loss_v} at step {}; lower lr",
                self.step
            )));
        }
        let mut grads = loss.backward()?;
        let vars: Vec<_> = self.store.vars().values().cloned().collect();
        comm.average_gradients(&mut grads, &vars)?;
        let gnorm = clip_global_norm(&mut grads, &vars, cfg.grad_clip)?;
        self.opt.step(&grads, cfg.schedule().value(self.step))?;
        self.step += 1;
        let acc = accuracy(&logits, &x.targets, &x.mask)?;
        Ok((loss_v, acc, gnorm))
    }
}

/// The checkpoint config: everything needed to rebuild the model and check the environment.
pub fn checkpoint_config(
    cfg: &DistillConfig,
    tokens: &TokenSpec,
    manifest: &crate::history::Manifest,
    data: &Path,
) -> serde_json::Value {
    let mut tasks: Vec<u32> = manifest.runs.iter().map(|r| r.summary.task).collect();
    tasks.extend(manifest.tasks.iter().map(|t| t.index));
    tasks.sort_unstable();
    tasks.dedup();
    serde_json::to_value(AdCheckpointConfig {
        algorithm: cfg.mode,
        model: cfg.model.clone(),
        tokens: tokens.clone(),
        env: manifest.env.clone(),
        distill: cfg.clone(),
        dataset: data.display().to_string(),
        source_algorithm: manifest.source.name.clone(),
        training_tasks: Some(TrainingTasks {
            split: manifest.split.clone(),
            tasks,
        }),
    })
    .expect("an AD checkpoint config encodes")
}

/// `config.json` of an AD/ED checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdCheckpointConfig {
    pub algorithm: Mode,
    pub model: GptConfig,
    pub tokens: TokenSpec,
    pub env: EnvSpec,
    pub distill: DistillConfig,
    /// The dataset it was distilled from, and that dataset's source algorithm (for people).
    pub dataset: String,
    pub source_algorithm: String,
    /// The tasks of that dataset (from its manifest), so that evaluation can keep to held-out
    /// tasks. Absent in checkpoints written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_tasks: Option<TrainingTasks>,
}

/// The tasks an in-context model saw in training: every task of its dataset's manifest and
/// runs, and the manifest's split label (the task set they were collected on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingTasks {
    pub split: String,
    pub tasks: Vec<u32>,
}

impl TrainingTasks {
    /// Refuses, naming the overlap, to score a model on tasks it was trained on, unless the
    /// training tasks were asked for (`TaskSet::Train`: never the default). `tasks` are the
    /// evaluation's task indices, `set` the set they come from, `env` its id.
    pub fn check_held_out(
        &self,
        env: &str,
        set: crate::envs::TaskSet,
        tasks: &[usize],
        dataset: &str,
    ) -> Result<()> {
        if set == crate::envs::TaskSet::Train {
            return Ok(());
        }
        let seen: Vec<usize> = tasks
            .iter()
            .copied()
            .filter(|&t| u32::try_from(t).is_ok_and(|t| self.tasks.binary_search(&t).is_ok()))
            .collect();
        if seen.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = seen.iter().take(8).map(|t| t.to_string()).collect();
        let more = if seen.len() > 8 { ", …" } else { "" };
        Err(Error::Config(format!(
            "--tasks {}: {} of its {} tasks of `{env}` ({}{more}) are in this model's training data \
             ({dataset}, collected on `{}`); in-context evaluation scores held-out tasks. Pass \
             --tasks train (tasks = \"train\" in an icl_eval stage) to score training tasks on purpose",
            set.as_str(),
            seen.len(),
            tasks.len(),
            shown.join(", "),
            self.split
        )))
    }
}

impl AdCheckpointConfig {
    /// Decodes a checkpoint's `config.json` strictly and checks that its parts agree: the
    /// model is the distillation's, the tokens fit the environment's spaces. Every error
    /// names `config.json`.
    pub fn decode(config: &serde_json::Value) -> Result<Self> {
        let file = Path::new(crate::checkpoint::CONFIG_FILE);
        let c: Self = crate::checkpoint::decode_complete(config, file, "")?;
        let bad = |m: String| Err(Error::data(file, m));
        let named = |e: Error| Error::data(file, e.to_string());
        c.distill.validate().map_err(named)?;
        c.env
            .validate()
            .map_err(|e| Error::data(file, format!("env.{e}")))?;
        crate::envs::TaskFamily::new(&c.env.config)
            .map_err(|e| Error::data(file, format!("env: {e}")))?;
        c.tokens
            .obs_space
            .validate("tokens.obs_space")
            .map_err(named)?;
        if c.model != c.distill.model || c.algorithm != c.distill.mode {
            return bad(
                "`model` and `algorithm` disagree with `distill.model` and `distill.mode`".into(),
            );
        }
        if c.tokens.obs_space != c.env.observation_space
            || Some(c.tokens.num_actions) != c.env.action_space.discrete_n()
        {
            return bad(
                "`tokens` (observation space, number of actions) disagree with `env`".into(),
            );
        }
        Ok(c)
    }
}

/// A distill run's resumable state beyond its weights (`trainer_state.json`), decoded
/// strictly. The optimiser moments live in `optimizer.safetensors`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdResumeState {
    /// Optimiser steps taken (the schedule's clock).
    step: u64,
    /// Adam's step count (its bias correction).
    optimizer_step: u64,
    rng: crate::rng::Rng,
}

fn save(t: &Trainer, config: &serde_json::Value, out: &Path) -> Result<()> {
    let AdamState { step, tensors } = t.opt.state()?;
    let data = CheckpointData {
        config: config.clone(),
        model: tensors_to_raw(&t.store.state_dict())?,
        trainer_state: Some(
            serde_json::to_value(AdResumeState {
                step: t.step,
                optimizer_step: step,
                rng: t.rng.clone(),
            })
            .map_err(|e| Error::Training(format!("encoding the distill state: {e}")))?,
        ),
        optimizer: Some(tensors_to_raw(&tensors)?),
        ..Default::default()
    };
    crate::checkpoint::save(out, &data)
}

/// Trains AD or ED on the dataset at `data` into the checkpoint folder `out`; `resume`
/// continues from `out` (bit-exact on CPU).
pub fn distill(
    cfg: &DistillConfig,
    data: &Path,
    out: &Path,
    seed: u64,
    device: &Device,
    resume: bool,
) -> Result<DistillSummary> {
    let single = crate::distributed::SingleProcess::new();
    distill_over(cfg, data, out, seed, device, resume, &single)
}

/// [`distill`] as one rank of a data-parallel job (`comm`): the rank reads its slice of the
/// dataset's files and samples its own batches (`cfg.batch` per rank), the gradients are
/// averaged over the ranks, and rank 0 alone writes `out`. A world of one is [`distill`].
pub fn distill_over(
    cfg: &DistillConfig,
    data: &Path,
    out: &Path,
    seed: u64,
    device: &Device,
    resume: bool,
    comm: &dyn crate::distributed::Collective,
) -> Result<DistillSummary> {
    cfg.validate()?;
    let world = comm.world().clone();
    let _lock = match world.is_root() {
        true => Some(crate::fs::FolderLock::acquire(out)?),
        false => None,
    };
    let (manifest, all) = load_dataset_for(data, &world)?;
    let num_actions = manifest.env.action_space.discrete_n().ok_or_else(|| {
        Error::data(
            data.join("dataset.json"),
            "the env's action space is not discrete",
        )
    })?;
    let train_data = match cfg.mode {
        Mode::Ad => all,
        Mode::Ed => final_episodes(&all, cfg.ed_episodes),
    };
    let kth = match cfg.mode {
        Mode::Ad => cfg.every_kth_episode,
        Mode::Ed => 1,
    };
    if cfg.model.final_obs && train_data.next_obs.len() != train_data.obs.len() {
        return Err(Error::Config(format!(
            "model.final_obs reads each transition's `next_obs`, which the dataset at {} does not hold",
            data.display()
        )));
    }
    check_target(cfg, &train_data, num_actions, data)?;
    let sampler = WindowSampler::new(&train_data, cfg.model.context, kth)?;
    let tokens = TokenSpec {
        obs_space: manifest.env.observation_space.clone(),
        obs_encoding: cfg.obs_encoding,
        num_actions,
    };
    let config = checkpoint_config(cfg, &tokens, &manifest, data);
    let mut t = Trainer::new(cfg, &tokens, seed, device)?;
    let validation = match (&cfg.validation, world.is_root()) {
        (Some(v), true) => Some(validation_set(
            cfg,
            &manifest,
            v,
            derive_seed(seed, 3),
            &t.model.tokenizer,
        )?),
        _ => None,
    };
    let mut keep_up_to = None;
    if resume && out.join(crate::checkpoint::TRAINER_STATE_FILE).exists() {
        let ck = crate::checkpoint::load(out)?;
        if ck.config["model"] != config["model"]
            || !same_training(&ck.config["distill"], &config["distill"])
        {
            return Err(Error::data(
                out.join("config.json"),
                "--resume: the checkpoint was trained with another model or distill config",
            ));
        }
        t.store.load_state_dict(
            &raw_to_tensors(&ck.model, device)?,
            &out.join("model.safetensors"),
        )?;
        let ts_path = out.join(crate::checkpoint::TRAINER_STATE_FILE);
        let ts = ck.trainer_state.ok_or_else(|| {
            Error::data(
                &ts_path,
                "--resume needs trainer_state.json, which is missing",
            )
        })?;
        let state: AdResumeState = crate::checkpoint::decode_strict(&ts, &ts_path, "")?;
        if state.optimizer_step != state.step {
            return Err(Error::data(
                &ts_path,
                format!(
                    "optimizer_step = {} disagrees with step = {} (one optimiser step per distillation step)",
                    state.optimizer_step, state.step
                ),
            ));
        }
        t.step = state.step;
        t.rng = state.rng;
        let opt = ck.optimizer.ok_or_else(|| {
            Error::data(
                out,
                "--resume needs optimizer.safetensors, which is missing",
            )
        })?;
        t.opt.load_state(
            &AdamState {
                step: state.optimizer_step,
                tensors: raw_to_tensors(&opt, device)?,
            },
            &out.join("optimizer.safetensors"),
        )?;
        keep_up_to = Some(t.step);
    }
    // Every rank starts from rank 0's weights and samples its own batches.
    let vars: Vec<_> = t.store.vars().values().cloned().collect();
    comm.broadcast_parameters(&vars)?;
    if !world.is_root() {
        t.rng = Rng::seed_from_u64(derive_seed(
            derive_seed(seed, 2) ^ t.step,
            world.rank as u64,
        ));
    }
    if !world.is_root() {
        return distill_follower(cfg, &sampler, &mut t, comm);
    }
    crate::fs::create_dir_all(out)?;
    let mut metrics = MetricsLog::open(&out.join("metrics.jsonl"), keep_up_to)?;
    let pb = crate::report::progress_bar(cfg.steps, &format!("distill {}", cfg.mode.as_str()));
    pb.set_position(t.step);
    let start = Instant::now();
    let start_step = t.step;
    let (mut loss_sum, mut acc_sum, mut n_avg) = (0.0, 0.0, 0.0);
    let (mut last_loss, mut last_acc) = (f64::NAN, f64::NAN);
    while t.step < cfg.steps {
        let w = sampler.sample(cfg.batch, &mut t.rng);
        let x = batch_inputs(cfg, &w, sampler.data(), &t.model.tokenizer)?;
        let lr = cfg.schedule().value(t.step);
        let (loss, acc, gnorm) = t.update_over(cfg, &x, comm)?;
        loss_sum += loss;
        acc_sum += acc;
        n_avg += 1.0;
        pb.inc(1);
        if t.step % cfg.log_interval.max(1) == 0 || t.step == cfg.steps {
            last_loss = loss_sum / n_avg;
            last_acc = acc_sum / n_avg;
            let el = start.elapsed().as_secs_f64().max(1e-9);
            let tokens_s =
                ((t.step - start_step) as f64 * (cfg.batch * cfg.model.max_tokens()) as f64) / el;
            let mut v = BTreeMap::new();
            v.insert("loss".into(), last_loss);
            v.insert("accuracy".into(), last_acc);
            v.insert("lr".into(), lr);
            v.insert("grad_norm".into(), gnorm);
            v.insert("tokens_per_second".into(), tokens_s);
            metrics.log(t.step, "train", &v)?;
            pb.set_message(format!("loss {last_loss:.3} acc {last_acc:.2}"));
            if let Some(set) = &validation {
                let v = validate(&t.model, cfg, set)?;
                let (l, a) = (v["loss"], v["accuracy"]);
                metrics.log(t.step, "val", &v)?;
                pb.set_message(format!(
                    "loss {last_loss:.3} acc {last_acc:.2} val {l:.3} {a:.2}"
                ));
            }
            (loss_sum, acc_sum, n_avg) = (0.0, 0.0, 0.0);
        }
        if cfg.checkpoint_interval > 0
            && t.step % cfg.checkpoint_interval == 0
            && t.step < cfg.steps
        {
            metrics.flush()?;
            save(&t, &config, out)?;
            metrics.reopen()?;
        }
    }
    pb.finish_and_clear();
    metrics.flush()?;
    if t.step == start_step {
        // Nothing left to train (a finished run resumed): its last logged training figures.
        let path = out.join("metrics.jsonl");
        let last = |key| -> Result<f64> {
            Ok(crate::report::metrics::read_series(&path, "train", key)?
                .last()
                .map_or(f64::NAN, |p| p.1))
        };
        (last_loss, last_acc) = (last("loss")?, last("accuracy")?);
    }
    save(&t, &config, out)?;
    let mut summary = summary_of(cfg, &t, out, (last_loss, last_acc), start, start_step);
    if let Some(set) = &validation {
        let v = validate(&t.model, cfg, set)?;
        summary.validation = Some((v["loss"], v["accuracy"]));
        // A finished run rescored with a validation set: its line goes into the log as well.
        if t.step == start_step {
            metrics.reopen()?;
            metrics.log(t.step, "val", &v)?;
            metrics.flush()?;
        }
    }
    Ok(summary)
}

/// Whether two distill configs (as JSON) train the same way: equal but for `validation`, which
/// training never reads, so a finished or interrupted run can be resumed with another one.
pub fn same_training(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("validation");
        }
        v
    };
    strip(a) == strip(b)
}

/// The fixed windows of `cfg.validation` (the same mode's data as training: AD's subsampled
/// histories, ED's final episodes), tokenised once; their dataset must share the training
/// dataset's spaces.
fn validation_set(
    cfg: &DistillConfig,
    train: &Manifest,
    folder: &Path,
    seed: u64,
    tokenizer: &Tokenizer,
) -> Result<Vec<Inputs>> {
    let (manifest, all) = load_dataset(folder)?;
    let (a, b) = (&train.env, &manifest.env);
    if a.observation_space != b.observation_space || a.action_space != b.action_space {
        return Err(Error::data(
            folder.join("dataset.json"),
            format!(
                "validation histories must share the training data's spaces (observations {:?}, actions {:?}), found {:?} and {:?}",
                a.observation_space, a.action_space, b.observation_space, b.action_space
            ),
        ));
    }
    let (data, kth) = match cfg.mode {
        Mode::Ad => (all, cfg.every_kth_episode),
        Mode::Ed => (final_episodes(&all, cfg.ed_episodes), 1),
    };
    check_target(cfg, &data, tokenizer.num_actions(), folder)?;
    let sampler = WindowSampler::new(&data, cfg.model.context, kth)?;
    let mut rng = Rng::seed_from_u64(seed);
    (0..VALIDATION_BATCHES)
        .map(|_| batch_inputs(cfg, &sampler.sample(cfg.batch, &mut rng), &data, tokenizer))
        .collect()
}

/// `model` (no dropout) on `set`, weighted by each batch's predicted actions: `loss` (the
/// training loss's kind) and `accuracy`; with policy targets also `action_loss` (against the
/// logged actions, comparable with an action-target run) and `target_entropy` (the entropy of
/// the source's probabilities: the floor of `loss`, which exceeds it by the mean KL).
fn validate(model: &Gpt, cfg: &DistillConfig, set: &[Inputs]) -> Result<BTreeMap<String, f64>> {
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    let mut n = 0.0;
    for x in set {
        let (b, t) = (x.first_pos.len(), cfg.model.max_tokens());
        let logits = model.forward(&x.features, b, t, &x.first_pos, None, None)?;
        let w: f64 = x.mask.iter().map(|&m| f64::from(m)).sum();
        let hard = f64::from(action_loss(&logits, &x.targets, &x.mask, 0.0)?.to_scalar::<f32>()?);
        let mut add = |k: &str, v: f64| *sums.entry(k.to_string()).or_default() += v * w;
        add("accuracy", accuracy(&logits, &x.targets, &x.mask)?);
        match &x.soft_targets {
            Some(p) => {
                let soft = x.loss(&logits, 0.0)?.to_scalar::<f32>()?;
                add("loss", f64::from(soft));
                add("action_loss", hard);
                let na = p.len() / x.mask.len().max(1);
                let h: f64 = p
                    .chunks(na)
                    .zip(&x.mask)
                    .filter(|(_, &m)| m > 0.0)
                    .flat_map(|(row, _)| row.iter())
                    .filter(|&&q| q > 0.0)
                    .map(|&q| -f64::from(q) * f64::from(q).ln())
                    .sum();
                add("target_entropy", h / w.max(1.0));
            }
            None => add("loss", hard),
        }
        n += w;
    }
    sums.values_mut().for_each(|v| *v /= f64::max(n, 1.0));
    Ok(sums)
}

/// What a run did: its steps, last loss and accuracy, and its token rate since `start`.
fn summary_of(
    cfg: &DistillConfig,
    t: &Trainer,
    out: &Path,
    (final_loss, final_accuracy): (f64, f64),
    start: Instant,
    start_step: u64,
) -> DistillSummary {
    let el = start.elapsed().as_secs_f64().max(1e-9);
    DistillSummary {
        out: out.to_path_buf(),
        mode: cfg.mode,
        steps: t.step,
        final_loss,
        final_accuracy,
        tokens_per_second: ((t.step - start_step) as f64
            * (cfg.batch * cfg.model.max_tokens()) as f64)
            / el,
        num_params: t.store.num_params(),
        validation: None,
    }
}

/// A rank other than 0: the same steps as rank 0 (its own batches, the averaged gradients),
/// writing nothing.
fn distill_follower(
    cfg: &DistillConfig,
    sampler: &WindowSampler,
    t: &mut Trainer,
    comm: &dyn crate::distributed::Collective,
) -> Result<DistillSummary> {
    let start = Instant::now();
    let start_step = t.step;
    let (mut loss, mut acc) = (f64::NAN, f64::NAN);
    while t.step < cfg.steps {
        let w = sampler.sample(cfg.batch, &mut t.rng);
        let x = batch_inputs(cfg, &w, sampler.data(), &t.model.tokenizer)?;
        (loss, acc, _) = t.update_over(cfg, &x, comm)?;
    }
    Ok(summary_of(
        cfg,
        t,
        Path::new(""),
        (loss, acc),
        start,
        start_step,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held-out evaluation: a set that shares tasks with the training data is refused by
    /// name (the overlap listed), a disjoint one passes, and `train` passes when asked for.
    #[test]
    fn held_out_check_names_the_overlap_and_lets_train_through() {
        let seen = TrainingTasks {
            split: "train".into(),
            tasks: vec![1, 4, 9],
        };
        use crate::envs::TaskSet;
        assert!(seen
            .check_held_out("dark_room", TaskSet::Test, &[0, 2, 3], "datasets/x")
            .is_ok());
        let err = seen
            .check_held_out("dark_room", TaskSet::All, &[0, 1, 2, 3, 4], "datasets/x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--tasks all") && err.contains("2 of its 5") && err.contains("(1, 4)"),
            "{err}"
        );
        assert!(
            err.contains("datasets/x") && err.contains("--tasks train"),
            "{err}"
        );
        assert!(seen
            .check_held_out("dark_room", TaskSet::Train, &[1, 4], "datasets/x")
            .is_ok());
    }
    use crate::envs::TaskFamily;

    /// One window of 3 transitions whose first slot is padding; the real slots hold obs (1, 2)
    /// and (3, 4), actions 2 then 4, and rewards 0.5 then an unknown (last) one.
    fn window() -> WindowBatch {
        WindowBatch {
            batch: 1,
            context: 3,
            obs_dim: 2,
            action_dim: 1,
            obs: vec![0.0, 0.0, 1.0, 2.0, 3.0, 4.0],
            prev_action: Actions::Discrete(vec![0, 0, 2]),
            prev_reward: vec![0.0, 0.0, 0.5],
            has_prev: vec![0.0, 0.0, 1.0],
            episode_start: vec![0.0, 1.0, 0.0],
            episode_return: vec![0.0, 0.0, 0.5],
            prev_final_obs: vec![0.0; 6],
            target_action: Actions::Discrete(vec![0, 2, 4]),
            mask: vec![0.0, 1.0, 1.0],
            rows: vec![-1, 0, 1],
        }
    }

    #[test]
    fn sar_window_has_three_tokens_per_transition_in_order() {
        let Ok(family) = TaskFamily::from_id("dark_room") else {
            panic!("dark_room is a built-in task family");
        };
        let spec = TokenSpec {
            obs_space: family.spec().observation_space.clone(),
            obs_encoding: ObsEncoding::OneHot,
            num_actions: 5,
        };
        let tk = spec.tokenizer_for(TokenLayout::Sar);
        let (e, f) = (tk.obs_features(), tk.features());
        assert_eq!((e, f), (18, 24));
        let x = window_inputs(&window(), &tk).unwrap();
        assert_eq!(x.first_pos, vec![3]);
        assert_eq!(x.targets, vec![0, 2, 4]);
        assert_eq!(x.mask, vec![0.0, 1.0, 1.0]);
        assert_eq!(x.features.len(), 9 * f);
        let tok = |i: usize| &x.features[i * f..(i + 1) * f];
        let hot = |t: &[f32]| -> Vec<usize> { (0..f).filter(|&k| t[k] != 0.0).collect() };
        for i in 0..3 {
            assert!(hot(tok(i)).is_empty(), "padding token {i}");
        }
        // s_1: one-hot x = 1 and y = 2 (9 values each); a_1: action 2; r_1: 0.5.
        assert_eq!(hot(tok(3)), vec![1, 9 + 2]);
        assert_eq!(hot(tok(4)), vec![e + 2]);
        assert_eq!(tok(5)[e + 5], 0.5);
        assert_eq!(hot(tok(5)), vec![e + 5]);
        assert_eq!(hot(tok(6)), vec![3, 9 + 4]);
        assert_eq!(hot(tok(7)), vec![e + 4]);
        assert!(
            hot(tok(8)).is_empty(),
            "the last reward is not in the window"
        );
        // The transition layout of the same window is unchanged: one token per slot.
        let x = window_inputs(&window(), &spec.tokenizer()).unwrap();
        assert_eq!(x.first_pos, vec![1]);
        assert_eq!(x.features.len(), 3 * spec.tokenizer().features());
    }
}
