//! In-context learning curves: the return at each episode index of a frozen model's rollouts
//! (from [`crate::eval::EvalReport`]), the source algorithm's own curve on the same tasks (from
//! a learning-history dataset, e.g. `collect --tasks test`), and one plot of both.

use std::path::Path;

use crate::error::{Error, Result};
use crate::eval::{mean_stderr, EvalReport};
use crate::report::plot::{line_plot, Series};

/// (x, mean, standard error).
pub type CurvePoint = (f64, f64, f64);

/// (episode index from 1, mean return over runs, standard error) of a learning-history dataset:
/// the source algorithm learning from scratch, episode by episode. Only indices every run reached
/// are reported.
pub fn source_curve(dataset: &Path) -> Result<Vec<(f64, f64, f64)>> {
    let (_, data) = super::train::load_dataset(dataset)?;
    let episodes = data.episodes();
    let runs = data.runs(&episodes);
    let per_run: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| {
            episodes[r.episodes.clone()]
                .iter()
                .filter(|e| e.complete)
                .map(|e| e.ret)
                .collect()
        })
        .collect();
    let n = per_run.iter().map(|r| r.len()).min().unwrap_or(0);
    Ok((0..n)
        .map(|i| {
            let col: Vec<f64> = per_run.iter().map(|r| r[i]).collect();
            let (m, se) = mean_stderr(&col);
            ((i + 1) as f64, m, se)
        })
        .collect())
}

/// A report's in-context curve as plot points (episode index from 1).
pub fn report_series(name: &str, r: &EvalReport) -> Series {
    let pts: Vec<(f64, f64)> = r
        .returns_by_episode
        .iter()
        .enumerate()
        .map(|(i, &m)| ((i + 1) as f64, m))
        .collect();
    let band = r
        .returns_by_episode
        .iter()
        .zip(&r.stderr_by_episode)
        .enumerate()
        .map(|(i, (&m, &s))| ((i + 1) as f64, m - s, m + s))
        .collect();
    Series {
        name: name.to_string(),
        points: pts,
        band,
        hline: None,
        vline: None,
    }
}

/// Draws the in-context learning curves of `reports` (name, report), the source algorithm's
/// curve (truncated to `max_episodes` when given) and the optimal return into an SVG.
pub fn plot_icl(
    path: &Path,
    title: &str,
    reports: &[(String, EvalReport)],
    source: Option<(&str, &[CurvePoint])>,
    max_episodes: Option<usize>,
) -> Result<()> {
    if reports.is_empty() && source.is_none() {
        return Err(Error::Config("icl plot: nothing to plot".into()));
    }
    let mut series: Vec<Series> = reports.iter().map(|(n, r)| report_series(n, r)).collect();
    if let Some((name, curve)) = source {
        let keep = max_episodes.unwrap_or(usize::MAX);
        let c: Vec<_> = curve.iter().take(keep).collect();
        series.push(Series {
            name: name.to_string(),
            points: c.iter().map(|p| (p.0, p.1)).collect(),
            band: c.iter().map(|p| (p.0, p.1 - p.2, p.1 + p.2)).collect(),
            hline: None,
            vline: None,
        });
    }
    if let Some(opt) = reports.iter().find_map(|(_, r)| r.optimal_return) {
        series.push(Series::reference("optimal", opt));
    }
    line_plot(path, title, "episode", "return", &series)
}

/// The bandits' normalised score per episode of every report that has one, with UCB (1) and
/// random (0) as reference lines.
pub fn plot_normalised(path: &Path, reports: &[(String, EvalReport)]) -> Result<()> {
    let mut series: Vec<Series> = reports
        .iter()
        .filter_map(|(name, r)| {
            let n = r.normalised_score_by_episode.as_ref()?;
            let pts = n
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, &v)| ((i + 1) as f64, v))
                .collect();
            Some(Series::line(name.clone(), pts))
        })
        .collect();
    series.push(Series::reference("UCB", 1.0));
    series.push(Series::reference("random", 0.0));
    line_plot(
        path,
        "normalised score (r − r_random) / (r_UCB − r_random) on held-out tasks",
        "episode",
        "normalised score",
        &series,
    )
}

/// `eval --policy CHECKPOINT` for an AD/ED checkpoint: rolls the frozen model out on every task
/// of `tasks` at once (environment `env`, default the one it was distilled on) with the KV
/// cache, and reports the return at each episode index.
pub fn eval_in_context(
    data: &crate::checkpoint::CheckpointData,
    env: Option<crate::envs::EnvConfig>,
    tasks: crate::envs::TaskSet,
    episodes: usize,
    seed: u64,
    device: &candle_core::Device,
) -> Result<EvalReport> {
    eval_in_context_at(data, env, tasks, episodes, seed, device, 1.0, None)
}

/// [`eval_in_context`] sampling actions from softmax(logits / `temperature`); 0 takes the most
/// likely action. `keep`: transitions the context keeps when it is full (default: half the
/// model's context; see [`super::kv_cache`]).
#[allow(clippy::too_many_arguments)]
pub fn eval_in_context_at(
    data: &crate::checkpoint::CheckpointData,
    env: Option<crate::envs::EnvConfig>,
    tasks: crate::envs::TaskSet,
    episodes: usize,
    seed: u64,
    device: &candle_core::Device,
    temperature: f64,
    keep: Option<usize>,
) -> Result<EvalReport> {
    use super::policy::InContextPolicy;
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(Error::Config(format!(
            "temperature (--temperature): expected a finite number >= 0 (0 = most likely action), found {temperature}"
        )));
    }
    let ck = super::train::AdCheckpointConfig::decode(&data.config)?;
    let trained = &ck.env;
    let cfg = env.unwrap_or_else(|| trained.config.clone());
    let family = crate::envs::TaskFamily::new(&cfg)?;
    trained.check_fits(family.spec(), "the model was distilled on")?;
    // Held-out tasks only, unless the training tasks are asked for (same env id: task indices
    // of another environment are other tasks).
    if let Some(seen) = &ck.training_tasks {
        if cfg.id == trained.config.id {
            seen.check_held_out(&cfg.id, tasks, &family.tasks(tasks), &ck.dataset)?;
        }
    }
    let mut policy = InContextPolicy::from_checkpoint(data, device, seed)?;
    policy.greedy = temperature == 0.0;
    policy.temperature = temperature;
    if let Some(keep) = keep {
        let context = policy.model().config.context;
        if keep == 0 || keep >= context {
            return Err(Error::Config(format!(
                "keep (--keep): expected 1 to {} transitions (below the model's context of {context}), found {keep}",
                context - 1
            )));
        }
        policy.keep = keep;
    }
    let mut report = crate::eval::evaluate(&family, tasks, episodes, seed, &mut policy)?;
    if is_bandit(&cfg.id) {
        with_bandit_baselines(&mut report, &family, tasks, episodes, seed)?;
    }
    Ok(report)
}

/// The bandit families (`bandit`, `bandit/uniform`), scored by the normalised score.
pub fn is_bandit(env_id: &str) -> bool {
    env_id == "bandit" || env_id.starts_with("bandit/")
}

/// Rolls UCB1 and a uniformly random policy out on the tasks, episodes and seed of `report`
/// and adds their curves and the normalised score ([`crate::eval::normalised_scores`]).
pub fn with_bandit_baselines(
    report: &mut EvalReport,
    family: &crate::envs::TaskFamily,
    tasks: crate::envs::TaskSet,
    episodes: usize,
    seed: u64,
) -> Result<()> {
    let spec = family.spec();
    let mut ucb = crate::agents::bandit_algos::UcbPolicy::new(Default::default(), spec)?;
    let ucb = crate::eval::evaluate(family, tasks, episodes, seed, &mut ucb)?;
    let mut random = crate::eval::RandomPolicy::new(spec.action_space.clone(), seed);
    let random = crate::eval::evaluate(family, tasks, episodes, seed, &mut random)?;
    report.normalised_score_by_episode = Some(crate::eval::normalised_scores(
        &report.returns_by_episode,
        &random.returns_by_episode,
        &ucb.returns_by_episode,
    ));
    report
        .baselines
        .insert("ucb".into(), ucb.returns_by_episode);
    report
        .baselines
        .insert("random".into(), random.returns_by_episode);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envs::{EnvConfig, TaskFamily, TaskSet};
    use crate::eval::{evaluate, Policy, RandomPolicy};

    /// On the adversarial bandit's test tasks, UCB1 itself scores exactly 1 and the random
    /// policy exactly 0 at every episode (same tasks, seeds and rollouts as the baselines), and
    /// UCB's own curve rises well above random by the last episode.
    #[test]
    fn bandit_baselines_score_one_and_zero_and_ucb_learns() {
        let mut cfg = EnvConfig::new("bandit");
        cfg.num_tasks = Some(100);
        let family = TaskFamily::new(&cfg).unwrap();
        let (episodes, seed) = (6, 3);
        let score = |policy: &mut dyn Policy| {
            let mut r = evaluate(&family, TaskSet::Test, episodes, seed, policy).unwrap();
            with_bandit_baselines(&mut r, &family, TaskSet::Test, episodes, seed).unwrap();
            r
        };
        let spec = family.spec();
        let ucb = score(
            &mut crate::agents::bandit_algos::UcbPolicy::new(Default::default(), spec).unwrap(),
        );
        let random = score(&mut RandomPolicy::new(spec.action_space.clone(), seed));
        assert_eq!(ucb.normalised_score_by_episode, Some(vec![1.0; episodes]));
        assert_eq!(
            random.normalised_score_by_episode,
            Some(vec![0.0; episodes])
        );
        let (u, r) = (&ucb.baselines["ucb"], &ucb.baselines["random"]);
        assert_eq!(u.len(), episodes);
        assert!(
            u[episodes - 1] > r[episodes - 1] + 15.0 && u[episodes - 1] > u[0],
            "UCB by episode: {u:?}, random: {r:?}"
        );
        assert!(is_bandit("bandit") && is_bandit("bandit/uniform") && !is_bandit("dark_room"));
    }
}
