//! Bandit source algorithms for learning histories (Laskin et al. 2023 use UCB on their
//! adversarial bandits): UCB1 (Auer, Cesa-Bianchi & Fischer 2002) and Beta-Bernoulli Thompson
//! sampling (Thompson 1933; Agrawal & Goyal 2012).
//!
//! A run plays one task: the arm statistics persist across the env's 100-pull episodes, so the
//! run's learning history shows a bandit algorithm improving (regret growing sub-linearly). The
//! observation (a constant) is ignored. `act(explore = true)` is the algorithm's own choice;
//! `act(explore = false)` exploits: the arm with the best estimated mean. `policy_output` is the
//! distribution the exploring policy acts with: one-hot on UCB's arm; for Thompson sampling the
//! probability that each arm's posterior draw is the largest, estimated by Monte Carlo.
//!
//! The statistics are the "model": `model.safetensors` holds them (`counts`/`sums` for UCB,
//! `alpha`/`beta` for Thompson, f64 so nothing rounds), and the Thompson RNG goes to
//! `trainer_state.json`; saving and loading is exact.

use super::{Agent, Experience, Metrics, PolicyOutput};
use crate::checkpoint::CheckpointData;
use crate::envs::ActionBuf;
use crate::envs::{EnvSpec, Space};
use crate::error::{Error, Result};
use crate::replay::RawArray;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// UCB1 settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UcbConfig {
    /// `c` in the index `x̄ⱼ + c·√(ln n / nⱼ)`; √2 is UCB1 exactly (Auer et al. 2002, Fig. 1,
    /// whose bonus is √(2 ln n / nⱼ)). Smaller values exploit sooner.
    pub exploration: f64,
}

impl Default for UcbConfig {
    fn default() -> Self {
        Self {
            exploration: std::f64::consts::SQRT_2,
        }
    }
}

/// Beta-Bernoulli Thompson sampling settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThompsonConfig {
    /// Beta prior α₀ of every arm (1, 1 = uniform prior, as Agrawal & Goyal 2012).
    pub prior_alpha: f64,
    /// Beta prior β₀ of every arm.
    pub prior_beta: f64,
    /// Posterior draws used to estimate the acting distribution in `policy_output`.
    pub policy_samples: usize,
}

impl Default for ThompsonConfig {
    fn default() -> Self {
        Self {
            prior_alpha: 1.0,
            prior_beta: 1.0,
            policy_samples: 1000,
        }
    }
}

fn arms(algo: &str, env: &EnvSpec) -> Result<usize> {
    match &env.action_space {
        Space::Discrete { n } if *n > 0 => Ok(*n),
        other => Err(Error::Config(format!(
            "{algo} needs a discrete action space (the arms), but `{}` has {other}",
            env.id()
        ))),
    }
}

/// First index of the largest value (ties go to the lower arm, which keeps UCB deterministic).
fn argmax(xs: impl IntoIterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, x) in xs.into_iter().enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best.0
}

fn check_arm(algo: &str, arm: usize, n: usize) -> Result<()> {
    if arm < n {
        Ok(())
    } else {
        Err(Error::Env(format!("{algo}: arm {arm} is outside 0..{n}")))
    }
}

fn f64_array(v: &[f64]) -> RawArray {
    RawArray::f64(vec![v.len()], v)
}

fn read_f64(model: &BTreeMap<String, RawArray>, name: &str, n: usize) -> Result<Vec<f64>> {
    let bad = |m: String| Error::data(crate::checkpoint::MODEL_FILE, m);
    let a = model
        .get(name)
        .ok_or_else(|| bad(format!("missing tensor `{name}` (expected F64 [{n}])")))?;
    if a.dtype != safetensors::Dtype::F64 || a.shape != [n] || a.bytes.len() != 8 * n {
        return Err(bad(format!(
            "tensor `{name}`: expected F64 [{n}], found {:?} {:?}",
            a.dtype, a.shape
        )));
    }
    Ok(a.bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

pub(super) fn check_model_keys(
    model: &BTreeMap<String, RawArray>,
    expected: &[&str],
) -> Result<()> {
    let extra: Vec<&String> = model
        .keys()
        .filter(|k| !expected.contains(&k.as_str()))
        .collect();
    if extra.is_empty() {
        Ok(())
    } else {
        Err(Error::data(
            crate::checkpoint::MODEL_FILE,
            format!("unexpected tensor(s) {extra:?}; expected {expected:?}"),
        ))
    }
}

/// UCB1: pull every arm once (in index order), then the arm maximising
/// `x̄ⱼ + c·√(ln n / nⱼ)` where `n` is the total number of pulls so far.
pub struct Ucb {
    config: UcbConfig,
    env: EnvSpec,
    counts: Vec<f64>,
    sums: Vec<f64>,
}

impl Ucb {
    pub fn new(config: UcbConfig, env: &EnvSpec) -> Result<Self> {
        if !(config.exploration >= 0.0 && config.exploration.is_finite()) {
            return Err(Error::Config(format!(
                "agent.exploration must be finite and ≥ 0, got {}",
                config.exploration
            )));
        }
        let n = arms("ucb", env)?;
        Ok(Self {
            config,
            env: env.clone(),
            counts: vec![0.0; n],
            sums: vec![0.0; n],
        })
    }

    /// Pulls per arm so far.
    pub fn counts(&self) -> &[f64] {
        &self.counts
    }

    /// The arm UCB1 pulls next.
    pub fn choose(&self) -> usize {
        if let Some(untried) = self.counts.iter().position(|&c| c == 0.0) {
            return untried;
        }
        let ln_n = self.counts.iter().sum::<f64>().ln();
        let c = self.config.exploration;
        argmax(
            self.counts
                .iter()
                .zip(&self.sums)
                .map(|(&n, &s)| s / n + c * (ln_n / n).sqrt()),
        )
    }

    /// Counts one pull of `arm` that paid `reward`.
    pub fn record(&mut self, arm: usize, reward: f64) -> Result<()> {
        check_arm("ucb", arm, self.counts.len())?;
        self.counts[arm] += 1.0;
        self.sums[arm] += reward;
        Ok(())
    }

    /// The arm with the best empirical mean among those pulled (arm 0 before any pull).
    pub fn greedy(&self) -> usize {
        argmax(self.counts.iter().zip(&self.sums).map(|(&n, &s)| {
            if n > 0.0 {
                s / n
            } else {
                f64::NEG_INFINITY
            }
        }))
    }
}

impl Agent for Ucb {
    fn algorithm(&self) -> &str {
        "ucb"
    }

    fn act(
        &mut self,
        _obs: &[f32],
        explore: bool,
        _step: u64,
        actions: &mut ActionBuf,
    ) -> Result<()> {
        let ActionBuf::Discrete(out) = actions else {
            return Err(Error::Env("ucb pulls discrete arms".into()));
        };
        let arm = if explore {
            self.choose()
        } else {
            self.greedy()
        };
        out.iter_mut().for_each(|a| *a = arm);
        Ok(())
    }

    fn observe(&mut self, exp: &Experience<'_>) -> Result<()> {
        for (&arm, &r) in super::discrete_actions("ucb", exp.actions)?
            .iter()
            .zip(exp.rewards)
        {
            self.record(arm, r as f64)?;
        }
        Ok(())
    }

    fn update(&mut self, _step: u64) -> Result<Option<Metrics>> {
        let best = self.greedy();
        let pulls: f64 = self.counts.iter().sum();
        Ok(Some(Metrics::from([
            ("pulls".to_string(), pulls),
            ("best_arm".to_string(), best as f64),
            (
                "best_mean_estimate".to_string(),
                self.sums[best] / self.counts[best].max(1.0),
            ),
        ])))
    }

    fn policy_output(&self, obs: &[f32]) -> Result<PolicyOutput> {
        let n = self.counts.len();
        let rows = obs.len() / self.env.obs_dim().max(1);
        let arm = self.choose();
        let mut p = vec![0f32; rows * n];
        for r in 0..rows {
            p[r * n + arm] = 1.0;
        }
        Ok(PolicyOutput::Probs(p))
    }

    fn save(&self, resume: bool) -> Result<CheckpointData> {
        Ok(CheckpointData {
            config: serde_json::json!({ "algorithm": "ucb", "agent": self.config, "env": self.env }),
            model: BTreeMap::from([
                ("counts".to_string(), f64_array(&self.counts)),
                ("sums".to_string(), f64_array(&self.sums)),
            ]),
            // Nothing beyond the statistics: UCB is deterministic.
            trainer_state: resume.then(|| serde_json::json!({})),
            ..Default::default()
        })
    }

    fn load(&mut self, data: &CheckpointData) -> Result<()> {
        let n = self.counts.len();
        check_model_keys(&data.model, &["counts", "sums"])?;
        self.counts = read_f64(&data.model, "counts", n)?;
        self.sums = read_f64(&data.model, "sums", n)?;
        Ok(())
    }
}

/// UCB1 as an evaluation policy over a batch of bandits: one [`Ucb`] per environment, learning
/// from its own pulls across all the episodes of a rollout (as it does in a collected
/// history), so its returns by episode are the curve the bandit's normalised score divides by.
pub struct UcbPolicy {
    config: UcbConfig,
    env: EnvSpec,
    arms: Vec<Ucb>,
}

impl UcbPolicy {
    pub fn new(config: UcbConfig, env: &EnvSpec) -> Result<Self> {
        Ucb::new(config.clone(), env)?;
        Ok(Self {
            config,
            env: env.clone(),
            arms: Vec::new(),
        })
    }
}

impl crate::eval::Policy for UcbPolicy {
    fn name(&self) -> String {
        "ucb".into()
    }

    fn begin(&mut self, n_envs: usize) -> Result<()> {
        self.arms = (0..n_envs)
            .map(|_| Ucb::new(self.config.clone(), &self.env))
            .collect::<Result<_>>()?;
        Ok(())
    }

    fn act(&mut self, _obs: &[f32], actions: &mut ActionBuf) -> Result<()> {
        let ActionBuf::Discrete(out) = actions else {
            return Err(Error::Env("ucb pulls discrete arms".into()));
        };
        for (a, ucb) in out.iter_mut().zip(&self.arms) {
            *a = ucb.choose();
        }
        Ok(())
    }

    fn observe(&mut self, f: &crate::eval::Feedback<'_>) -> Result<()> {
        let arms = super::discrete_actions("ucb", f.actions)?;
        for ((ucb, &arm), &r) in self.arms.iter_mut().zip(arms).zip(f.rewards) {
            ucb.record(arm, r as f64)?;
        }
        Ok(())
    }
}

/// A Gamma(shape, 1) draw: Marsaglia & Tsang (2000) for shape ≥ 1, and the boost
/// `Gamma(a) = Gamma(a + 1)·U^{1/a}` below 1.
pub fn sample_gamma(shape: f64, rng: &mut Rng) -> f64 {
    if shape < 1.0 {
        let u = rng.uniform().max(f64::MIN_POSITIVE);
        return sample_gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = rng.normal();
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = rng.uniform();
        if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
}

/// A Beta(a, b) draw as `X / (X + Y)` with `X ~ Gamma(a)`, `Y ~ Gamma(b)`.
pub fn sample_beta(a: f64, b: f64, rng: &mut Rng) -> f64 {
    let x = sample_gamma(a, rng);
    let y = sample_gamma(b, rng);
    if x + y > 0.0 {
        x / (x + y)
    } else {
        0.5
    }
}

/// One Thompson draw: a sample from every arm's Beta posterior, and the arm of the largest.
fn draw(alpha: &[f64], beta: &[f64], rng: &mut Rng) -> usize {
    argmax(
        alpha
            .iter()
            .zip(beta)
            .map(|(&a, &b)| sample_beta(a, b, rng))
            .collect::<Vec<_>>(),
    )
}

/// Beta-Bernoulli Thompson sampling: each arm's mean has a Beta(α, β) posterior; every pull
/// draws one sample per arm and plays the largest. A reward `r ∈ [0, 1]` adds `r` to α and
/// `1 − r` to β (exact for the 0/1 rewards of the Bernoulli bandits).
pub struct Thompson {
    config: ThompsonConfig,
    env: EnvSpec,
    alpha: Vec<f64>,
    beta: Vec<f64>,
    rng: Rng,
}

impl Thompson {
    pub fn new(config: ThompsonConfig, env: &EnvSpec, seed: u64) -> Result<Self> {
        let ok = |v: f64| v > 0.0 && v.is_finite();
        if !ok(config.prior_alpha) || !ok(config.prior_beta) {
            return Err(Error::Config(format!(
                "agent.prior_alpha and agent.prior_beta must be finite and > 0, got {} and {}",
                config.prior_alpha, config.prior_beta
            )));
        }
        if config.policy_samples == 0 {
            return Err(Error::Config(
                "agent.policy_samples must be at least 1".into(),
            ));
        }
        let n = arms("thompson", env)?;
        Ok(Self {
            alpha: vec![config.prior_alpha; n],
            beta: vec![config.prior_beta; n],
            config,
            env: env.clone(),
            rng: Rng::seed_from_u64(crate::rng::derive_seed(seed, 3)),
        })
    }

    /// Posterior parameters (α, β) per arm.
    pub fn posterior(&self) -> (&[f64], &[f64]) {
        (&self.alpha, &self.beta)
    }

    /// The arm with the largest posterior mean.
    pub fn greedy(&self) -> usize {
        argmax(
            self.alpha
                .iter()
                .zip(&self.beta)
                .map(|(&a, &b)| a / (a + b)),
        )
    }

    /// Probability that each arm is played, by Monte Carlo over `policy_samples` draws from an
    /// RNG seeded by the posterior itself (so it is a pure function of the state and leaves the
    /// acting RNG untouched).
    pub fn action_probs(&self) -> Vec<f32> {
        let mut seed = 0x7A0B_5EED_u64;
        for x in self.alpha.iter().chain(&self.beta) {
            seed = crate::rng::derive_seed(seed, x.to_bits());
        }
        let mut rng = Rng::seed_from_u64(seed);
        let mut hits = vec![0usize; self.alpha.len()];
        for _ in 0..self.config.policy_samples {
            hits[draw(&self.alpha, &self.beta, &mut rng)] += 1;
        }
        let total = self.config.policy_samples as f32;
        hits.iter().map(|&h| h as f32 / total).collect()
    }
}

impl Agent for Thompson {
    fn algorithm(&self) -> &str {
        "thompson"
    }

    fn act(
        &mut self,
        _obs: &[f32],
        explore: bool,
        _step: u64,
        actions: &mut ActionBuf,
    ) -> Result<()> {
        let ActionBuf::Discrete(out) = actions else {
            return Err(Error::Env("thompson pulls discrete arms".into()));
        };
        if explore {
            let (alpha, beta, rng) = (&self.alpha, &self.beta, &mut self.rng);
            out.iter_mut().for_each(|a| *a = draw(alpha, beta, rng));
        } else {
            let arm = self.greedy();
            out.iter_mut().for_each(|a| *a = arm);
        }
        Ok(())
    }

    fn observe(&mut self, exp: &Experience<'_>) -> Result<()> {
        let n = self.alpha.len();
        for (&arm, &r) in super::discrete_actions("thompson", exp.actions)?
            .iter()
            .zip(exp.rewards)
        {
            check_arm("thompson", arm, n)?;
            let r = (r as f64).clamp(0.0, 1.0);
            self.alpha[arm] += r;
            self.beta[arm] += 1.0 - r;
        }
        Ok(())
    }

    fn update(&mut self, _step: u64) -> Result<Option<Metrics>> {
        let best = self.greedy();
        let (a0, b0) = (self.config.prior_alpha, self.config.prior_beta);
        let pulls: f64 = self
            .alpha
            .iter()
            .zip(&self.beta)
            .map(|(a, b)| a + b - a0 - b0)
            .sum();
        Ok(Some(Metrics::from([
            ("pulls".to_string(), pulls),
            ("best_arm".to_string(), best as f64),
            (
                "best_mean_estimate".to_string(),
                self.alpha[best] / (self.alpha[best] + self.beta[best]),
            ),
        ])))
    }

    fn policy_output(&self, obs: &[f32]) -> Result<PolicyOutput> {
        let rows = obs.len() / self.env.obs_dim().max(1);
        let p = self.action_probs();
        Ok(PolicyOutput::Probs(p.repeat(rows)))
    }

    fn save(&self, resume: bool) -> Result<CheckpointData> {
        Ok(CheckpointData {
            config: serde_json::json!({
                "algorithm": "thompson",
                "agent": self.config,
                "env": self.env,
            }),
            model: BTreeMap::from([
                ("alpha".to_string(), f64_array(&self.alpha)),
                ("beta".to_string(), f64_array(&self.beta)),
            ]),
            trainer_state: resume.then(|| serde_json::json!({ "rng": self.rng })),
            ..Default::default()
        })
    }

    fn load(&mut self, data: &CheckpointData) -> Result<()> {
        let n = self.alpha.len();
        check_model_keys(&data.model, &["alpha", "beta"])?;
        self.alpha = read_f64(&data.model, "alpha", n)?;
        self.beta = read_f64(&data.model, "beta", n)?;
        if let Some(rng) = data
            .trainer_state
            .as_ref()
            .and_then(|t| t.get("agent"))
            .and_then(|a| a.get("rng"))
        {
            self.rng = serde_json::from_value(rng.clone()).map_err(|e| {
                Error::data(
                    crate::checkpoint::TRAINER_STATE_FILE,
                    format!("agent.rng: {e}"),
                )
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_draws_have_the_right_mean_and_variance() {
        let mut rng = Rng::seed_from_u64(5);
        for &(a, b) in &[(1.0, 1.0), (2.0, 5.0), (0.5, 0.5), (30.0, 3.0)] {
            let n = 40_000;
            let xs: Vec<f64> = (0..n).map(|_| sample_beta(a, b, &mut rng)).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let (m, v) = (a / (a + b), a * b / ((a + b).powi(2) * (a + b + 1.0)));
            assert!(
                (mean - m).abs() < 4.0 * (v / n as f64).sqrt(),
                "({a},{b}) mean {mean} vs {m}"
            );
            assert!((var - v).abs() < 0.05 * v, "({a},{b}) var {var} vs {v}");
        }
    }

    #[test]
    fn ucb_tries_every_arm_then_follows_the_index() {
        let spec = crate::envs::TaskFamily::from_id("bandit")
            .unwrap()
            .spec()
            .clone();
        let mut u = Ucb::new(UcbConfig::default(), &spec).unwrap();
        for arm in 0..10 {
            assert_eq!(u.choose(), arm);
            u.counts[arm] = 1.0;
            u.sums[arm] = if arm == 3 { 1.0 } else { 0.0 };
        }
        assert_eq!(u.choose(), 3);
        assert_eq!(u.greedy(), 3);
        // a large exploration bonus on a rarely pulled arm wins over a good mean
        u.counts = vec![100.0; 10];
        u.counts[7] = 1.0;
        u.sums = vec![60.0; 10];
        u.sums[7] = 0.0;
        assert_eq!(u.choose(), 7);
        assert_ne!(u.greedy(), 7);
    }
}
