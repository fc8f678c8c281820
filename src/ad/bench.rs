//! `reincarnate bench ad`: training tokens/s and frozen-evaluation env-steps/s with and without
//! the KV cache, for a transformer of the given sizes and token layout on Dark Room (random
//! weights: speed does not depend on what the model has learned). Training counts model tokens,
//! three per transition in the sar layout.

use std::time::{Duration, Instant};

use candle_core::Device;

use super::model::{Activation, GptConfig, Positions, TokenLayout, TokenSpec};
use super::policy::InContextPolicy;
use super::train::{DistillConfig, Inputs, Trainer};
use crate::envs::vec_env::ActionBatch;
use crate::envs::{TaskFamily, TaskSet, VecEnv};
use crate::error::{Error, Result};
use crate::eval::{ActionBuf, Feedback, Policy};
use crate::report::Figure;
use crate::rng::Rng;

/// Model sizes from the command line (`--layers --heads --d-model --context --batch
/// --eval-envs --layout`; one of these per context given).
#[derive(Clone, Debug)]
pub struct AdBenchSizes {
    pub layers: usize,
    pub heads: usize,
    pub d_model: usize,
    /// In transitions, as [`GptConfig::context`].
    pub context: usize,
    /// Training windows per update.
    pub batch: usize,
    /// Environments decoded together in the frozen-evaluation figures.
    pub eval_envs: usize,
    pub layout: TokenLayout,
}

fn config(s: &AdBenchSizes) -> GptConfig {
    GptConfig {
        n_layer: s.layers,
        n_head: s.heads,
        d_model: s.d_model,
        d_ff: 4 * s.d_model,
        context: s.context,
        layout: s.layout,
        positions: Positions::Learned,
        activation: Activation::Relu,
        dropout: 0.1,
        attn_dropout: 0.1,
        short_conv: None,
        episode_start: false,
        episode_return: false,
        final_obs: false,
    }
}

/// Frozen-evaluation steps per second over `n` Dark Room environments, after filling the
/// context to at least 200 transitions (or the whole context, if shorter). The warm-up always
/// decodes with the cache (recomputing it would take hours at a context of 4,096); the timed
/// steps with the cache or not, as `use_cache` says.
fn eval_rate(
    policy: &mut InContextPolicy,
    n: usize,
    warm: usize,
    budget: Duration,
    use_cache: bool,
) -> Result<f64> {
    let family = TaskFamily::from_id("dark_room")?;
    let all = family.tasks(TaskSet::All);
    let tasks: Vec<usize> = (0..n).map(|i| all[i % all.len()]).collect();
    let mut venv = VecEnv::new(&family, &tasks, 0)?;
    venv.reset();
    policy.begin(n)?;
    let mut actions = ActionBuf::Discrete(vec![0; n]);
    let mut step = |policy: &mut InContextPolicy, venv: &mut VecEnv| -> Result<()> {
        policy.act(venv.obs(), &mut actions)?;
        let ActionBuf::Discrete(a) = &actions else {
            return Err(Error::Env("bench ad: discrete actions expected".into()));
        };
        venv.step(ActionBatch::Discrete(a))?;
        policy.observe(&Feedback {
            actions: &actions,
            rewards: venv.rewards(),
            terminated: venv.terminated(),
            truncated: venv.truncated(),
            next_obs: venv.next_obs(),
        })
    };
    policy.use_cache = true;
    for _ in 0..warm {
        step(policy, &mut venv)?;
    }
    policy.use_cache = use_cache;
    let start = Instant::now();
    let mut steps = 0usize;
    while start.elapsed() < budget || steps == 0 {
        step(policy, &mut venv)?;
        steps += 1;
    }
    Ok((steps * n) as f64 / start.elapsed().as_secs_f64())
}

/// Figures whose names contain `filter` (all without one); the others are not measured.
pub fn bench_ad(
    s: &AdBenchSizes,
    budget: Duration,
    device: &Device,
    filter: Option<&str>,
) -> Result<Vec<Figure>> {
    let wanted = |name: &str| filter.is_none_or(|f| name.contains(f));
    let model = config(s);
    model.validate()?;
    let family = TaskFamily::from_id("dark_room")?;
    let tokens = TokenSpec {
        obs_space: family.spec().observation_space.clone(),
        obs_encoding: crate::envs::obs_encoding::ObsEncoding::OneHot,
        num_actions: 5,
    };
    let cfg = DistillConfig {
        model: model.clone(),
        batch: s.batch,
        steps: u64::MAX,
        warmup_steps: 10,
        ..DistillConfig::default()
    };
    let mut tag = format!(
        "L{}-H{}-d{}-c{}-b{}",
        s.layers, s.heads, s.d_model, s.context, s.batch
    );
    if s.layout != TokenLayout::Transition {
        tag = format!("{tag}-{}", s.layout.as_str());
    }
    let mut figures = Vec::new();
    // Training: random windows of full length.
    let train_name = format!("ad/train/{tag}");
    if wanted(&train_name) {
        crate::bench::reset_peak_rss();
        let mut t = Trainer::new(&cfg, &tokens, 0, device)?;
        let mut rng = Rng::seed_from_u64(1);
        let (b, c, f) = (s.batch, s.context, t.model.tokenizer.features());
        let tokens_per_window = model.max_tokens();
        let mut batch = || Inputs {
            features: (0..b * tokens_per_window * f)
                .map(|_| rng.normal() as f32)
                .collect(),
            first_pos: vec![0; b],
            targets: (0..b * c).map(|_| rng.below(5) as u32).collect(),
            mask: vec![1.0; b * c],
            soft_targets: None,
        };
        let x = batch();
        t.update(&cfg, &x)?; // warm-up
        let start = Instant::now();
        let mut steps = 0usize;
        while start.elapsed() < budget || steps == 0 {
            t.update(&cfg, &x)?;
            steps += 1;
        }
        figures.push(Figure {
            name: train_name.clone(),
            value: (steps * b * tokens_per_window) as f64 / start.elapsed().as_secs_f64(),
            unit: "tokens/s".into(),
        });
        // Host memory: on a GPU the device's own memory is not in it.
        if let Some(mb) = crate::bench::peak_rss_mb().filter(|_| device.is_cpu()) {
            figures.push(Figure {
                name: format!("{train_name}/peak-rss"),
                value: mb,
                unit: "MB".into(),
            });
        }
    }
    // Frozen evaluation at a context of at least 200 (or the model's whole context).
    let (n, c) = (s.eval_envs, s.context);
    if n == 0 {
        return Err(Error::Config(
            "bench ad: --eval-envs must be at least 1".into(),
        ));
    }
    let warm = c.min(200).saturating_sub(1).max(c / 2);
    for use_cache in [true, false] {
        let name = format!(
            "ad/eval/{tag}-e{n}/{}",
            if use_cache { "kv-cache" } else { "recompute" }
        );
        if !wanted(&name) {
            continue;
        }
        let mut store = crate::nn::params::ParamStore::new(device, 0);
        let gpt = super::model::Gpt::new(&model, &tokens, &mut store)?;
        let mut p = InContextPolicy::new(gpt, store, "bench".into(), 0);
        // keep = context − 1: the window stays near full, the worst case for recomputation
        // and the case the cache must handle (one re-encode per step would defeat it, so the
        // cached run keeps the default half-window policy).
        if !use_cache {
            p.keep = c - 1;
        }
        let rate = eval_rate(&mut p, n, warm, budget, use_cache)?;
        figures.push(Figure {
            name,
            value: rate,
            unit: "env-steps/s".into(),
        });
    }
    Ok(figures)
}
