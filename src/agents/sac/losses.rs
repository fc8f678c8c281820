//! SAC's losses as pure functions of tensors, each checked below on a hand-worked batch: the
//! soft TD target, the critic losses, the actor loss and the temperature loss of Haarnoja et
//! al., "Soft Actor-Critic Algorithms and Applications" (2018), and the categorical critic of
//! SimbaV2 (Lee et al. 2025).
//!
//! Network passes, the reparameterised sample (its noise drawn by the caller from the agent's
//! RNG), scheduling, optimiser steps and metrics belong to [`super::Sac`]; these functions only
//! do the arithmetic on what it computed.

use candle_core::{Tensor, D};

use crate::error::{Error, Result};
use crate::nn::{cross_entropy, CategoricalSupport};

/// What the critics are trained toward on a batch.
pub enum CriticTarget {
    /// The soft TD target `(batch,)` of scalar critics.
    Value(Tensor),
    /// The C51-projected target distribution `(batch, atoms)` of categorical critics.
    Distribution(Tensor),
}

/// Elementwise minimum of the critics' Q-values, `(batch,)` each: the clipped double-Q estimate
/// SAC takes from TD3 (Fujimoto et al. 2018) to counter overestimation.
fn min_q(qs: &[Tensor]) -> Result<Tensor> {
    let (first, rest) = qs
        .split_first()
        .ok_or_else(|| Error::Training("SAC loss: no critic outputs".into()))?;
    Ok(rest.iter().try_fold(first.clone(), |m, q| m.minimum(q))?)
}

/// The soft TD target, the regression target of SAC's critic objective (eq. 5) with the soft
/// value of eq. 3 estimated by one sample `a' ~ π(·|s')`:
///
/// `y = r + γ(1 − d) (min_i Q̄_i(s', a') − α log π(a'|s'))`
///
/// `rewards`, `discounts` and `next_log_prob` are `(batch,)`; `discounts` holds `γ(1 − d)`: 0 for
/// a transition that ended the episode (no bootstrap), γ for one cut off by a time limit or still
/// running (the next state's value counts). `next_outs` holds each target critic's output on
/// `[s', a']`, `(batch, atoms)`.
///
/// Scalar critics (`support = None`, one atom) get `y`, `(batch,)`, through the minimum over the
/// target critics. Categorical critics (SimbaV2) get the C51 projection (Bellemare et al. 2017,
/// Algorithm 1) of the distribution that puts probability `p_j` on
/// `r + γ(1 − d)(z_j − α log π(a'|s'))`, clipped to `[v_min, v_max]`, where `p` is, row by row,
/// the softmax of whichever of the first two target critics has the lower expected value
/// `Σ_j p_j z_j`.
pub fn sac_critic_target(
    rewards: &Tensor,
    discounts: &Tensor,
    next_log_prob: &Tensor,
    next_outs: &[Tensor],
    alpha: f64,
    support: Option<&CategoricalSupport>,
) -> Result<CriticTarget> {
    // r − γ(1 − d)·α log π(a'|s'): the entropy term joins the reward
    let soft_rewards = (rewards - (discounts * next_log_prob.affine(alpha, 0.0)?)?)?;
    Ok(match support {
        None => {
            let next_q = next_outs
                .iter()
                .map(|o| Ok(o.squeeze(D::Minus1)?))
                .collect::<Result<Vec<_>>>()?;
            CriticTarget::Value((soft_rewards + (discounts * min_q(&next_q)?)?)?.detach())
        }
        Some(support) => {
            let first = next_outs
                .first()
                .ok_or_else(|| Error::Training("SAC target: no target critic outputs".into()))?;
            let mut probs = candle_nn::ops::softmax(first, D::Minus1)?;
            if let Some(second) = next_outs.get(1) {
                let q0 = support.expected_value(first)?;
                let q1 = support.expected_value(second)?;
                let pick = q1.lt(&q0)?.unsqueeze(1)?;
                let p1 = candle_nn::ops::softmax(second, D::Minus1)?;
                probs = pick.broadcast_as(probs.shape())?.where_cond(&p1, &probs)?;
            }
            CriticTarget::Distribution(support.project_tensor(&soft_rewards, discounts, &probs)?)
        }
    })
}

/// The scalar critic's loss `E[(Q(s, a) − y)²]` (SAC eq. 5, without its ½, as CleanRL) on
/// Q-values `(batch,)` and the soft TD target `(batch,)`.
pub fn mse_critic_loss(q: &Tensor, target: &Tensor) -> Result<Tensor> {
    Ok((q - target)?.sqr()?.mean_all()?)
}

/// SimbaV2's categorical critic loss, the cross-entropy to the projected target distribution
/// `E[−Σ_j p̂_j log softmax(logits)_j]`, on logits and target `(batch, atoms)`.
pub fn categorical_critic_loss(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    Ok(cross_entropy(logits, target)?.mean_all()?)
}

/// One critic's loss on its output `(batch, atoms)` toward `target`: [`mse_critic_loss`] for a
/// scalar critic, [`categorical_critic_loss`] for a categorical one.
pub fn sac_critic_loss(out: &Tensor, target: &CriticTarget) -> Result<Tensor> {
    match target {
        CriticTarget::Value(y) => mse_critic_loss(&out.squeeze(D::Minus1)?, y),
        CriticTarget::Distribution(t) => categorical_critic_loss(out, t),
    }
}

/// SAC's actor loss (eq. 7, with `a` reparameterised as in eq. 8–9):
///
/// `J_π = E_s[α log π(a|s) − min_i Q_i(s, a)]`
///
/// on `log_prob` `(batch,)` of actions sampled from the current policy and each critic's
/// Q-values `(batch,)` for them. Gradients flow to whatever `log_prob` and `q_values` carry
/// (the caller detaches the critics' weights).
pub fn sac_actor_loss(log_prob: &Tensor, q_values: &[Tensor], alpha: f64) -> Result<Tensor> {
    let q = min_q(q_values)?;
    Ok((log_prob.affine(alpha, 0.0)? - q)?.mean_all()?)
}

/// The temperature loss of SAC's automatic entropy adjustment (eq. 18),
///
/// `J(α) = E[−α log π(a|s) − α H̄] = −α (E[log π(a|s)] + H̄)`,
///
/// as a tensor in `log_alpha` (the parameter optimised, so α stays positive) given the batch's
/// mean `log π` (a number: no graph through the actor) and the target entropy `H̄`. Its
/// gradient `−α (E[log π] + H̄)` is negative when the entropy `−E[log π]` is below `H̄`, so a
/// descent step raises α, and positive above it.
pub fn temperature_loss(
    log_alpha: &Tensor,
    mean_log_prob: f64,
    target_entropy: f64,
) -> Result<Tensor> {
    Ok((log_alpha.exp()? * (-(mean_log_prob + target_entropy)))?.mean_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap()
    }

    /// A `(rows, cols)` tensor from row-major values.
    fn t2(v: &[f32], cols: usize) -> Tensor {
        Tensor::from_slice(v, (v.len() / cols, cols), &Device::Cpu).unwrap()
    }

    fn values(target: CriticTarget) -> Vec<f32> {
        match target {
            CriticTarget::Value(y) => y.to_vec1().unwrap(),
            CriticTarget::Distribution(_) => panic!("expected a scalar target"),
        }
    }

    fn distribution(target: CriticTarget) -> Vec<Vec<f32>> {
        match target {
            CriticTarget::Distribution(p) => p.to_vec2().unwrap(),
            CriticTarget::Value(_) => panic!("expected a distribution"),
        }
    }

    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{what}: {got:?} vs {want:?}");
        }
    }

    /// `discounts` is γ(1 − d): a terminal row (0) keeps only its reward; a row cut off by the
    /// time limit (γ) bootstraps exactly as an ongoing one.
    #[test]
    fn soft_target_stops_at_terminals_and_bootstraps_truncations() {
        // rows: ongoing, terminal, truncated; one target critic; α = 0.5
        let rewards = t(&[1.0, 2.0, -1.0]);
        let discounts = t(&[0.9, 0.0, 0.9]);
        let next_log_prob = t(&[-1.0, 0.5, 2.0]);
        let q = t2(&[3.0, 10.0, -2.0], 1);
        let y = sac_critic_target(&rewards, &discounts, &next_log_prob, &[q], 0.5, None).unwrap();
        // ongoing:   1 + 0.9·(3 − 0.5·(−1)) = 1 + 0.9·3.5 = 4.15
        // terminal:  2, neither Q' = 10 nor the entropy term enter
        // truncated: −1 + 0.9·(−2 − 0.5·2) = −1 + 0.9·(−3) = −3.7
        assert_close(&values(y), &[4.15, 2.0, -3.7], "soft TD target");
    }

    /// The bootstrap uses, row by row, the smaller of the two target critics' values.
    #[test]
    fn soft_target_takes_the_minimum_of_the_twin_target_critics() {
        let rewards = t(&[0.0, 0.0]);
        let discounts = t(&[0.5, 0.5]);
        let next_log_prob = t(&[0.0, 0.0]);
        let q1 = t2(&[4.0, -1.0], 1);
        let q2 = t2(&[2.0, 6.0], 1);
        let y =
            sac_critic_target(&rewards, &discounts, &next_log_prob, &[q1, q2], 1.0, None).unwrap();
        // row 0: 0.5·min(4, 2) = 1; row 1: 0.5·min(−1, 6) = −0.5
        assert_close(&values(y), &[1.0, -0.5], "twin minimum");
    }

    /// The soft value is `Q − α log π`: a likely next action (log π > 0) lowers the target, an
    /// unlikely one (log π < 0, high entropy) raises it.
    #[test]
    fn soft_target_subtracts_alpha_log_prob() {
        let rewards = t(&[0.0, 0.0]);
        let discounts = t(&[1.0, 1.0]);
        let next_log_prob = t(&[2.0, -2.0]);
        let q = t2(&[1.0, 1.0], 1);
        let y = sac_critic_target(&rewards, &discounts, &next_log_prob, &[q], 0.25, None).unwrap();
        // row 0: 1 − 0.25·2 = 0.5; row 1: 1 − 0.25·(−2) = 1.5
        assert_close(&values(y), &[0.5, 1.5], "entropy term");
    }

    /// The categorical target on atoms (−1, 0, 1): the shifted atoms
    /// `r + γ(1 − d)(z_j − α log π)` are clipped to [v_min, v_max], the rest split between
    /// neighbours in proportion to closeness, and a terminal row puts all mass at `r`.
    #[test]
    fn categorical_target_projects_the_soft_shift_and_clips_to_the_support() {
        let support = CategoricalSupport::new(3, -1.0, 1.0).unwrap();
        // rows: far above the support, far below (terminal), inside, inside and terminal
        let rewards = t(&[5.0, -5.0, 0.125, 0.5]);
        let discounts = t(&[0.9, 0.0, 0.5, 0.0]);
        let next_log_prob = t(&[0.0, 0.0, -0.25, 3.0]);
        // uniform next-state distribution: every atom holds 1/3
        let logits = t2(&[0.0; 12], 3);
        let target = sac_critic_target(
            &rewards,
            &discounts,
            &next_log_prob,
            &[logits],
            1.0,
            Some(&support),
        )
        .unwrap();
        let p = distribution(target);
        // row 0: 5 + 0.9·z_j ≥ 4.1 > 1: all mass clipped onto v_max
        assert_close(&p[0], &[0.0, 0.0, 1.0], "clipped above");
        // row 1: terminal, −5 < −1: all mass clipped onto v_min
        assert_close(&p[1], &[1.0, 0.0, 0.0], "clipped below");
        // row 2: soft reward 0.125 − 0.5·1·(−0.25) = 0.25, atoms land at 0.25 + 0.5·z_j =
        // −0.25, 0.25, 0.75, each with 1/3: −0.25 gives ¼ to z=−1 and ¾ to z=0; 0.25 gives ¾
        // to z=0 and ¼ to z=1; 0.75 gives ¼ to z=0 and ¾ to z=1.
        // z=−1: ¼/3 = 1/12; z=0: (¾ + ¾ + ¼)/3 = 7/12; z=1: (¼ + ¾)/3 = 4/12
        assert_close(&p[2], &[1.0 / 12.0, 7.0 / 12.0, 4.0 / 12.0], "split");
        // row 3: terminal, every atom lands at r = 0.5 whatever log π: half to z=0, half to z=1
        assert_close(&p[3], &[0.0, 0.5, 0.5], "terminal");
    }

    /// With twin categorical critics, each row's target comes from the critic of lower expected
    /// value. With r = 0, γ(1 − d) = 1 and log π = 0 every atom maps onto itself, so the target
    /// is that critic's softmax.
    #[test]
    fn categorical_target_follows_the_twin_of_lower_expected_value() {
        let support = CategoricalSupport::new(3, -1.0, 1.0).unwrap();
        let low = [2.0f32, 0.0, 0.0]; // mass toward z = −1: expected value < 0
        let high = [0.0f32, 0.0, 2.0]; // mass toward z = +1: expected value > 0
        let c0 = t2(&[low, high].concat(), 3);
        let c1 = t2(&[high, low].concat(), 3);
        let target = sac_critic_target(
            &t(&[0.0, 0.0]),
            &t(&[1.0, 1.0]),
            &t(&[0.0, 0.0]),
            &[c0, c1],
            1.0,
            Some(&support),
        )
        .unwrap();
        // softmax(2, 0, 0) = (e², 1, 1) / (e² + 2)
        let e2 = 2f64.exp();
        let want = [e2 / (e2 + 2.0), 1.0 / (e2 + 2.0), 1.0 / (e2 + 2.0)];
        let p = distribution(target);
        assert_close(&p[0], &want, "row 0: critic 0 is lower");
        assert_close(&p[1], &want, "row 1: critic 1 is lower");
    }

    /// MSE to the scalar target; cross-entropy to the projected distribution.
    #[test]
    fn critic_losses_are_mse_and_cross_entropy() {
        // ((1 − 0)² + (2 − 4)²) / 2 = 2.5
        let q = t2(&[1.0, 2.0], 1);
        let mse = sac_critic_loss(&q, &CriticTarget::Value(t(&[0.0, 4.0]))).unwrap();
        assert_close(&[mse.to_scalar::<f32>().unwrap()], &[2.5], "mse");
        // logits (0, 0): log softmax = −ln 2 on both atoms, so each row's cross-entropy is
        // ln 2 whatever the target; a row with logits (ln 3, 0) and target (1, 0) gives
        // −ln(3/4). Mean: (ln 2 + ln(4/3)) / 2
        let logits = t2(&[0.0, 0.0, 3f32.ln(), 0.0], 2);
        let target = t2(&[0.25, 0.75, 1.0, 0.0], 2);
        let ce = sac_critic_loss(&logits, &CriticTarget::Distribution(target)).unwrap();
        let want = (2f64.ln() + (4.0f64 / 3.0).ln()) / 2.0;
        assert_close(&[ce.to_scalar::<f32>().unwrap()], &[want], "cross-entropy");
    }

    /// `E[α log π − min_i Q_i]`: +α log π (a likely action costs), −Q (a valuable one pays),
    /// the lower twin counting; its gradient in log π is +α/B.
    #[test]
    fn actor_loss_adds_alpha_log_prob_and_subtracts_the_twin_minimum() {
        let dev = Device::Cpu;
        let logp = Var::from_slice(&[-1.0f32, 2.0], 2, &dev).unwrap();
        let q1 = t(&[3.0, 1.0]);
        let q2 = t(&[2.0, 5.0]);
        let loss = sac_actor_loss(logp.as_tensor(), &[q1, q2], 0.5).unwrap();
        // min Q = (2, 1); rows: 0.5·(−1) − 2 = −2.5 and 0.5·2 − 1 = 0; mean −1.25
        assert_close(&[loss.to_scalar::<f32>().unwrap()], &[-1.25], "actor loss");
        let g = loss.backward().unwrap();
        let dl: Vec<f32> = g.get(logp.as_tensor()).unwrap().to_vec1().unwrap();
        // ∂/∂ log π_i = α / B = 0.25 > 0: descent lowers log π, raising the entropy
        assert_close(&dl, &[0.25, 0.25], "gradient in log π");
    }

    /// `J(α) = −α (E[log π] + H̄)`: its gradient in log α is `−α (E[log π] + H̄)`, so gradient
    /// descent raises α while the entropy `−E[log π]` is below the target and lowers it above.
    #[test]
    fn temperature_rises_below_the_target_entropy_and_falls_above() {
        let dev = Device::Cpu;
        let alpha = 0.5f64;
        let target_entropy = -1.0;
        // (mean log π, expected ∂J/∂ log α, which way α moves on a descent step)
        // entropy 2 > −1 = H̄: −0.5·(−2 − 1) = +1.5, α falls
        // entropy −3 < H̄:     −0.5·(3 − 1) = −1, α rises
        for (mean_logp, want, rises) in [(-2.0, 1.5, false), (3.0, -1.0, true)] {
            let log_alpha = Var::from_slice(&[alpha.ln() as f32], 1, &dev).unwrap();
            let loss = temperature_loss(log_alpha.as_tensor(), mean_logp, target_entropy).unwrap();
            // J = −0.5·(mean log π + H̄)
            let j = -alpha * (mean_logp + target_entropy);
            assert_close(&[loss.to_scalar::<f32>().unwrap()], &[j], "J(α)");
            let g = loss.backward().unwrap();
            let d: Vec<f32> = g.get(log_alpha.as_tensor()).unwrap().to_vec1().unwrap();
            assert_close(&d, &[want], "∂J/∂ log α");
            let stepped = alpha.ln() - 0.1 * d[0] as f64;
            assert_eq!(stepped > alpha.ln(), rises, "mean log π {mean_logp}");
        }
    }
}
