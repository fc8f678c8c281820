//! Running statistics that SimbaV2 (Lee et al., ICML 2025, §3.1 and §3.4) applies to what the
//! agent sees: observation normalisation and reward scaling.
//!
//! Both are plain host-side state (f64 accumulators) with serde, so an agent saves them in
//! `config.json` (the observation statistics, which a teacher needs to act) and
//! `trainer_state.json` (the reward scaler, needed only to resume), and a resumed run continues
//! bit for bit.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Per-dimension running mean and (population) variance, updated one sample at a time with
/// Welford's algorithm. `normalize` gives `(x − μ)/√(σ² + 1e-8)` (SimbaV2 §3.1); before the
/// first sample it is the identity (μ = 0, σ² = 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunningMeanStd {
    pub count: u64,
    pub mean: Vec<f64>,
    /// Sum of squared deviations (Welford's M2).
    pub m2: Vec<f64>,
}

impl RunningMeanStd {
    pub const EPS: f64 = 1e-8;

    pub fn new(dim: usize) -> Self {
        Self {
            count: 0,
            mean: vec![0.0; dim],
            m2: vec![0.0; dim],
        }
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Adds one sample of `dim` values.
    pub fn update(&mut self, x: &[f32]) {
        self.count += 1;
        let n = self.count as f64;
        for ((m, m2), &x) in self.mean.iter_mut().zip(self.m2.iter_mut()).zip(x) {
            let x = x as f64;
            let d = x - *m;
            *m += d / n;
            *m2 += d * (x - *m);
        }
    }

    /// Population variance of dimension `i` (1 before any sample).
    pub fn var(&self, i: usize) -> f64 {
        if self.count == 0 {
            1.0
        } else {
            self.m2[i] / self.count as f64
        }
    }

    /// Normalises a batch of rows of `dim` values in place.
    pub fn normalize(&self, rows: &mut [f32]) {
        let d = self.dim();
        if d == 0 {
            return;
        }
        let inv: Vec<f64> = (0..d)
            .map(|i| 1.0 / (self.var(i) + Self::EPS).sqrt())
            .collect();
        for row in rows.chunks_mut(d) {
            for ((x, m), s) in row.iter_mut().zip(&self.mean).zip(&inv) {
                *x = ((*x as f64 - m) * s) as f32;
            }
        }
    }

    /// Checks that loaded statistics have `dim` dimensions (naming `what` on error).
    pub fn check_dim(&self, dim: usize, what: &str) -> Result<()> {
        if self.mean.len() != dim || self.m2.len() != dim {
            return Err(Error::data(
                what,
                format!(
                    "observation statistics have {} / {} values, expected {dim} (the env's obs size)",
                    self.mean.len(),
                    self.m2.len()
                ),
            ));
        }
        Ok(())
    }
}

/// SimbaV2's reward scaler (§3.4): a running discounted return `G ← γ(1 − done)·G + r` per
/// environment, its running variance and maximum magnitude; rewards are multiplied by
/// `1 / max(√(Var(G) + 1e-8), max|G| / G_max)`.
///
/// Choices the paper leaves open, as the official code does them: `done` is terminated *or*
/// truncated (a new episode starts a new return); `G` is updated with the reward first and the
/// reset applied after, so the last step of an episode counts; the statistics start empty,
/// in which case the scale is 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RewardScaler {
    pub gamma: f64,
    pub g_max: f64,
    /// Running discounted return of each environment.
    pub returns: Vec<f64>,
    pub stats: RunningMeanStd,
    pub max_abs: f64,
}

impl RewardScaler {
    pub fn new(n_envs: usize, gamma: f64, g_max: f64) -> Self {
        Self {
            gamma,
            g_max,
            returns: vec![0.0; n_envs],
            stats: RunningMeanStd::new(1),
            max_abs: 0.0,
        }
    }

    /// Records one batched step.
    pub fn update(&mut self, rewards: &[f32], done: impl Fn(usize) -> bool) {
        if self.returns.len() < rewards.len() {
            self.returns.resize(rewards.len(), 0.0);
        }
        for (i, &r) in rewards.iter().enumerate() {
            let g = self.gamma * self.returns[i] + r as f64;
            self.stats.update(&[g as f32]);
            self.max_abs = self.max_abs.max(g.abs());
            self.returns[i] = if done(i) { 0.0 } else { g };
        }
    }

    /// The factor rewards are multiplied by.
    pub fn scale(&self) -> f64 {
        if self.stats.count == 0 {
            return 1.0;
        }
        let denom = (self.stats.var(0) + RunningMeanStd::EPS)
            .sqrt()
            .max(self.max_abs / self.g_max);
        1.0 / denom
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_stats_match_batch_stats() {
        let xs: Vec<[f32; 2]> = (0..50)
            .map(|i| [i as f32 * 0.5 - 3.0, (i * i % 7) as f32])
            .collect();
        let mut s = RunningMeanStd::new(2);
        for x in &xs {
            s.update(x);
        }
        for d in 0..2 {
            let n = xs.len() as f64;
            let mean: f64 = xs.iter().map(|x| x[d] as f64).sum::<f64>() / n;
            let var: f64 = xs.iter().map(|x| (x[d] as f64 - mean).powi(2)).sum::<f64>() / n;
            assert!((s.mean[d] - mean).abs() < 1e-9);
            assert!((s.var(d) - var).abs() < 1e-9);
        }
        let mut row = [xs[3][0], xs[3][1]];
        s.normalize(&mut row);
        let want = (xs[3][0] as f64 - s.mean[0]) / (s.var(0) + 1e-8).sqrt();
        assert!((row[0] as f64 - want).abs() < 1e-5);
    }

    #[test]
    fn reward_scale_follows_the_discounted_return() {
        let mut r = RewardScaler::new(1, 0.5, 5.0);
        assert_eq!(r.scale(), 1.0);
        // rewards 1, 1, 1 then done: G = 1, 1.5, 1.75, reset
        for (k, done) in [false, false, true].into_iter().enumerate() {
            r.update(&[1.0], |_| done);
            assert_eq!(r.returns[0], if done { 0.0 } else { [1.0, 1.5][k] });
        }
        let gs = [1.0f64, 1.5, 1.75];
        let mean = gs.iter().sum::<f64>() / 3.0;
        let var = gs.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / 3.0;
        // √var ≈ 0.31 vs max|G|/G_max = 0.35: the max term wins
        let want = 1.0 / (var + 1e-8).sqrt().max(1.75 / 5.0);
        assert!((r.scale() - want).abs() < 1e-12, "{} vs {want}", r.scale());
    }
}
