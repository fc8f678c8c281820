//! Policy evaluation: roll a [`Policy`] out on a set of tasks in a [`VecEnv`] (one environment
//! per task, all stepped together), `episodes` episodes per task, and report mean return ±
//! standard error, mean length, the mean return at each episode index (the in-context learning
//! curve for in-context learners) and the optimal return where the environment knows it.

use crate::envs::{Space, TaskFamily, TaskSet, VecEnv};
use crate::error::{Error, Result};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

pub use crate::envs::ActionBuf;

/// What a policy sees after each batched step (for in-context learners that condition on
/// their own rewards).
pub struct Feedback<'a> {
    pub actions: &'a ActionBuf,
    pub rewards: &'a [f32],
    pub terminated: &'a [bool],
    pub truncated: &'a [bool],
    /// The observations the step led to, `n × obs_dim`: where an episode ended, its final
    /// observation (before the reset that `act` sees next).
    pub next_obs: &'a [f32],
}

/// Anything that chooses actions for a batch of observations.
pub trait Policy {
    fn name(&self) -> String;
    /// Called once before a rollout over `n_envs` environments.
    fn begin(&mut self, _n_envs: usize) -> Result<()> {
        Ok(())
    }
    /// Writes one action per environment for `obs` (`n_envs × obs_dim`).
    fn act(&mut self, obs: &[f32], actions: &mut ActionBuf) -> Result<()>;
    /// Called after every step with its outcome.
    fn observe(&mut self, _feedback: &Feedback<'_>) -> Result<()> {
        Ok(())
    }
}

/// `inner`'s actions, each replaced by a uniformly random one with probability ε: the
/// evaluation ε of DQN's Atari results (0.05 in Mnih et al. 2015), set by `loop.eval_epsilon`.
/// ε = 0 passes `inner`'s actions through untouched.
pub struct WithEpsilon<P> {
    inner: P,
    epsilon: f64,
    n_actions: usize,
    rng: Rng,
}

impl<P: Policy> WithEpsilon<P> {
    /// ε over `space`'s actions with a generator seeded by `seed`; an ε > 0 on continuous
    /// actions is an error naming the setting.
    pub fn new(inner: P, epsilon: f64, space: &Space, seed: u64) -> Result<Self> {
        let n_actions = match space.discrete_n() {
            Some(n) => n,
            None if epsilon > 0.0 => {
                return Err(Error::Config(format!(
                    "loop.eval_epsilon = {epsilon} applies to discrete actions; this environment's are continuous"
                )))
            }
            None => 0,
        };
        Ok(Self {
            inner,
            epsilon,
            n_actions,
            rng: Rng::seed_from_u64(crate::rng::derive_seed(seed, 0xE95)),
        })
    }
}

impl<P: Policy> Policy for WithEpsilon<P> {
    fn name(&self) -> String {
        if self.epsilon > 0.0 {
            format!("{} with ε = {}", self.inner.name(), self.epsilon)
        } else {
            self.inner.name()
        }
    }
    fn begin(&mut self, n_envs: usize) -> Result<()> {
        self.inner.begin(n_envs)
    }
    fn act(&mut self, obs: &[f32], actions: &mut ActionBuf) -> Result<()> {
        self.inner.act(obs, actions)?;
        if let (true, ActionBuf::Discrete(a)) = (self.epsilon > 0.0, actions) {
            for x in a.iter_mut() {
                if self.rng.uniform() < self.epsilon {
                    *x = self.rng.below(self.n_actions);
                }
            }
        }
        Ok(())
    }
    fn observe(&mut self, feedback: &Feedback<'_>) -> Result<()> {
        self.inner.observe(feedback)
    }
}

/// Uniformly random actions (discrete) or uniform in the box bounds (continuous).
pub struct RandomPolicy {
    space: Space,
    rng: Rng,
}

impl RandomPolicy {
    pub fn new(space: Space, seed: u64) -> Self {
        Self {
            space,
            rng: Rng::seed_from_u64(seed ^ 0xA11CE),
        }
    }
}

impl Policy for RandomPolicy {
    fn name(&self) -> String {
        "random".into()
    }
    fn act(&mut self, _obs: &[f32], actions: &mut ActionBuf) -> Result<()> {
        match (&self.space, actions) {
            (Space::Discrete { n }, ActionBuf::Discrete(a)) => {
                for x in a.iter_mut() {
                    *x = self.rng.below(*n);
                }
            }
            (Space::Box { low, high, .. }, ActionBuf::Continuous(a)) => {
                let d = self.space.flat_dim();
                for (k, x) in a.iter_mut().enumerate() {
                    let (l, h) = (low.get(k % d), high.get(k % d));
                    *x = l + (h - l) * self.rng.uniform_f32();
                }
            }
            _ => {
                return Err(Error::Env(
                    "random policy: action buffer does not match the action space".into(),
                ))
            }
        }
        Ok(())
    }
}

/// The `eval --json` object.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub env: String,
    pub policy: String,
    pub tasks: String,
    pub num_tasks: usize,
    /// Episodes per task.
    pub episodes: usize,
    pub mean_return: f64,
    pub stderr: f64,
    pub mean_length: f64,
    /// Mean over tasks of the return of each task's i-th episode.
    pub returns_by_episode: Vec<f64>,
    /// Standard error over tasks at each episode index (0 with one task).
    pub stderr_by_episode: Vec<f64>,
    /// Mean over tasks of the best achievable return, where the environment can compute it.
    pub optimal_return: Option<f64>,
    /// Bandits: [`normalised_scores`] of `returns_by_episode` against the baselines below, one
    /// value per episode index (null where the baselines tie).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalised_score_by_episode: Option<Vec<f64>>,
    /// The baselines behind the normalised score (`ucb`, `random`): their `returns_by_episode`
    /// on the same tasks, episodes and seed, measured in the same run.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub baselines: std::collections::BTreeMap<String, Vec<f64>>,
    /// With several evaluation seeds ([`merge_seeds`]): the seeds, in order; the fields above
    /// then pool every seed's rollouts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<u64>,
    /// With several seeds: each seed's `returns_by_episode`, in the order of `seeds`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub returns_by_seed: Vec<Vec<f64>>,
    /// With several seeds, bandits: each seed's `normalised_score_by_episode`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub normalised_score_by_seed: Vec<Vec<f64>>,
}

/// Pools groups of `n` samples each, given as (mean, standard error), into the mean and standard
/// error of all `groups.len() · n` samples (the sample variance of [`mean_stderr`]).
fn pool(groups: &[(f64, f64)], n: usize) -> (f64, f64) {
    let k = groups.len() as f64;
    let mean = groups.iter().map(|g| g.0).sum::<f64>() / k;
    let total = k * n as f64;
    if total < 2.0 {
        return (mean, 0.0);
    }
    let within: f64 = groups
        .iter()
        .map(|g| g.1 * g.1 * n as f64 * (n as f64 - 1.0))
        .sum();
    let between: f64 = groups.iter().map(|g| n as f64 * (g.0 - mean).powi(2)).sum();
    (mean, ((within + between) / (total - 1.0) / total).sqrt())
}

/// Runs `eval` under the seeds `seed, seed + 1, …` (`count` of them; `what` names the flag or
/// field in the error) and pools the reports ([`merge_seeds`]).
pub fn over_seeds(
    seed: u64,
    count: usize,
    what: &str,
    mut eval: impl FnMut(u64) -> Result<EvalReport>,
) -> Result<EvalReport> {
    if count == 0 || count > 100 {
        return Err(Error::Config(format!(
            "{what}: expected 1 to 100 evaluation seeds, found {count}"
        )));
    }
    let mut runs = Vec::with_capacity(count);
    for i in 0..count as u64 {
        let s = seed.checked_add(i).ok_or_else(|| {
            Error::Config(format!("{what}: seed {seed} + {i} overflows a 64-bit seed"))
        })?;
        runs.push((s, eval(s)?));
    }
    merge_seeds(runs)
}

/// One report from the reports of the same evaluation under several seeds: means and standard
/// errors over every seed's rollouts, the bandit baselines averaged and the normalised score
/// taken of the averaged curves, and each seed's own curve kept (`returns_by_seed`).
pub fn merge_seeds(mut runs: Vec<(u64, EvalReport)>) -> Result<EvalReport> {
    if runs.len() == 1 {
        return Ok(runs.remove(0).1);
    }
    let Some((_, first)) = runs.first() else {
        return Err(Error::Config("merge_seeds: no evaluation to merge".into()));
    };
    let (n, episodes) = (first.num_tasks, first.episodes);
    if let Some((s, _)) = runs
        .iter()
        .find(|(_, r)| r.num_tasks != n || r.episodes != episodes || r.env != first.env)
    {
        return Err(Error::Config(format!(
            "merge_seeds: seed {s} evaluated other tasks or episodes than seed {}",
            runs[0].0
        )));
    }
    let k = runs.len() as f64;
    let avg = |f: &dyn Fn(&EvalReport) -> f64| runs.iter().map(|(_, r)| f(r)).sum::<f64>() / k;
    let avg_curve = |curves: Vec<&Vec<f64>>| -> Vec<f64> {
        (0..episodes)
            .map(|e| curves.iter().map(|c| c[e]).sum::<f64>() / k)
            .collect()
    };
    let (mut by_ep, mut se_by_ep) = (Vec::with_capacity(episodes), Vec::with_capacity(episodes));
    for e in 0..episodes {
        let groups: Vec<(f64, f64)> = runs
            .iter()
            .map(|(_, r)| (r.returns_by_episode[e], r.stderr_by_episode[e]))
            .collect();
        let (m, s) = pool(&groups, n);
        by_ep.push(m);
        se_by_ep.push(s);
    }
    let overall: Vec<(f64, f64)> = runs
        .iter()
        .map(|(_, r)| (r.mean_return, r.stderr))
        .collect();
    let (mean_return, stderr) = pool(&overall, n * episodes);
    let mut baselines = std::collections::BTreeMap::new();
    for name in first.baselines.keys() {
        let curves: Option<Vec<&Vec<f64>>> =
            runs.iter().map(|(_, r)| r.baselines.get(name)).collect();
        if let Some(c) = curves {
            baselines.insert(name.clone(), avg_curve(c));
        }
    }
    let normalised_score_by_episode = match (baselines.get("random"), baselines.get("ucb")) {
        (Some(lo), Some(hi)) if first.normalised_score_by_episode.is_some() => {
            Some(normalised_scores(&by_ep, lo, hi))
        }
        _ => None,
    };
    let normalised_score_by_seed = runs
        .iter()
        .filter_map(|(_, r)| r.normalised_score_by_episode.clone())
        .collect();
    Ok(EvalReport {
        env: first.env.clone(),
        policy: first.policy.clone(),
        tasks: first.tasks.clone(),
        num_tasks: n,
        episodes,
        mean_return,
        stderr,
        mean_length: avg(&|r| r.mean_length),
        returns_by_episode: by_ep,
        stderr_by_episode: se_by_ep,
        optimal_return: first
            .optimal_return
            .map(|_| avg(&|r| r.optimal_return.unwrap_or(f64::NAN))),
        normalised_score_by_episode,
        baselines,
        seeds: runs.iter().map(|r| r.0).collect(),
        returns_by_seed: runs
            .iter()
            .map(|(_, r)| r.returns_by_episode.clone())
            .collect(),
        normalised_score_by_seed,
    })
}

/// The mean of the last `n` values of `xs` (fewer if it is shorter); `None` when it is empty.
pub fn mean_of_last(xs: &[f64], n: usize) -> Option<f64> {
    let k = xs.len().min(n);
    (k > 0).then(|| xs.iter().rev().take(k).sum::<f64>() / k as f64)
}

/// The bandit's normalised score of Algorithm Distillation (Laskin et al. 2023, §5), per
/// episode index: `(r − r_random) / (r_UCB − r_random)`, 0 at random level and 1 at UCB's;
/// NaN where UCB and random tie.
pub fn normalised_scores(returns: &[f64], random: &[f64], ucb: &[f64]) -> Vec<f64> {
    returns
        .iter()
        .zip(random)
        .zip(ucb)
        .map(|((&r, &lo), &hi)| {
            if (hi - lo).abs() > 1e-12 {
                (r - lo) / (hi - lo)
            } else {
                f64::NAN
            }
        })
        .collect()
}

impl std::fmt::Display for EvalReport {
    /// One line: environment, policy, tasks, return ± standard error, length, optimal return.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = self
            .optimal_return
            .map(|o| format!(", optimal {o:.2}"))
            .unwrap_or_default();
        write!(
            f,
            "{} | policy {} | {} task(s) ({}) x {} episodes | return {:.3} ± {:.3} | length {:.1}{opt}",
            self.env, self.policy, self.num_tasks, self.tasks, self.episodes, self.mean_return, self.stderr, self.mean_length
        )?;
        if self.seeds.len() > 1 {
            let seeds: Vec<String> = self.seeds.iter().map(u64::to_string).collect();
            write!(f, " | seeds {}", seeds.join(", "))?;
        }
        if let Some(n) = &self.normalised_score_by_episode {
            let mean = mean_of_last(n, 5).unwrap_or(0.0);
            write!(
                f,
                " | normalised score, last {} episodes {mean:.2} (UCB 1, random 0)",
                n.len().min(5)
            )?;
        }
        Ok(())
    }
}

/// Mean and standard error of the mean.
pub fn mean_stderr(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// Rolls `policy` out for `episodes` episodes on every task of `set`.
pub fn evaluate(
    family: &TaskFamily,
    set: TaskSet,
    episodes: usize,
    seed: u64,
    policy: &mut dyn Policy,
) -> Result<EvalReport> {
    let tasks = family.tasks(set);
    evaluate_tasks(family, &tasks, set_name(set), episodes, seed, policy)
}

fn set_name(set: TaskSet) -> &'static str {
    set.as_str()
}

/// As [`evaluate`], on an explicit task list.
pub fn evaluate_tasks(
    family: &TaskFamily,
    tasks: &[usize],
    tasks_name: &str,
    episodes: usize,
    seed: u64,
    policy: &mut dyn Policy,
) -> Result<EvalReport> {
    if episodes == 0 {
        return Err(Error::Config("--episodes must be at least 1".into()));
    }
    // `env.num_envs = N` on one task: its episodes run on N environments at once,
    // ⌈episodes / N⌉ each, and are reported as the one task's.
    let spread_over: Vec<usize>;
    let (tasks, episodes, spread) = match family.spec().config.num_envs {
        Some(n) if n > 1 && tasks.len() == 1 => {
            spread_over = vec![tasks[0]; n];
            (&spread_over[..], episodes.div_ceil(n), true)
        }
        _ => (tasks, episodes, false),
    };
    let mut venv = VecEnv::new(family, tasks, seed)?;
    let n = venv.len();
    let mut returns: Vec<Vec<f64>> = vec![Vec::with_capacity(episodes); n];
    let mut lengths: Vec<f64> = Vec::with_capacity(n * episodes);
    let mut optimal: Vec<f64> = Vec::new();
    let mut actions = ActionBuf::for_space(&family.spec().action_space, n);
    policy.begin(n)?;
    venv.reset();
    // Optimal return of each episode's start (random starts change it per episode).
    let mut ep_optimal: Vec<Option<f64>> = (0..n).map(|i| venv.env(i).optimal_return()).collect();
    let mut remaining = n;
    while remaining > 0 {
        policy.act(venv.obs(), &mut actions)?;
        venv.step(actions.as_batch())?;
        policy.observe(&Feedback {
            actions: &actions,
            rewards: venv.rewards(),
            terminated: venv.terminated(),
            truncated: venv.truncated(),
            next_obs: venv.next_obs(),
        })?;
        for end in venv.finished() {
            let r = &mut returns[end.env];
            if r.len() < episodes {
                r.push(end.ret);
                lengths.push(end.length as f64);
                if let Some(o) = ep_optimal[end.env] {
                    optimal.push(o);
                }
                if r.len() == episodes {
                    remaining -= 1;
                }
            }
            ep_optimal[end.env] = venv.env(end.env).optimal_return();
        }
    }
    let (returns, n, episodes) = if spread {
        (vec![returns.concat()], 1, n * episodes)
    } else {
        (returns, n, episodes)
    };
    let all: Vec<f64> = returns.iter().flatten().copied().collect();
    let (mean_return, stderr) = mean_stderr(&all);
    let (mut by_ep, mut se_by_ep) = (Vec::with_capacity(episodes), Vec::with_capacity(episodes));
    for e in 0..episodes {
        let col: Vec<f64> = returns.iter().map(|r| r[e]).collect();
        let (m, s) = mean_stderr(&col);
        by_ep.push(m);
        se_by_ep.push(s);
    }
    Ok(EvalReport {
        env: family.spec().id().to_string(),
        policy: policy.name(),
        tasks: tasks_name.to_string(),
        num_tasks: n,
        episodes,
        mean_return,
        stderr,
        mean_length: lengths.iter().sum::<f64>() / lengths.len() as f64,
        returns_by_episode: by_ep,
        stderr_by_episode: se_by_ep,
        optimal_return: (!optimal.is_empty()).then(|| mean_stderr(&optimal).0),
        normalised_score_by_episode: None,
        baselines: Default::default(),
        seeds: Vec::new(),
        returns_by_seed: Vec::new(),
        normalised_score_by_seed: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of `returns[task][episode]` as `evaluate` builds it.
    fn report_of(returns: &[Vec<f64>]) -> EvalReport {
        let episodes = returns[0].len();
        let all: Vec<f64> = returns.concat();
        let (mean_return, stderr) = mean_stderr(&all);
        let cols: Vec<(f64, f64)> = (0..episodes)
            .map(|e| mean_stderr(&returns.iter().map(|r| r[e]).collect::<Vec<_>>()))
            .collect();
        EvalReport {
            env: "bandit".into(),
            policy: "p".into(),
            tasks: "test".into(),
            num_tasks: returns.len(),
            episodes,
            mean_return,
            stderr,
            mean_length: 3.0,
            returns_by_episode: cols.iter().map(|c| c.0).collect(),
            stderr_by_episode: cols.iter().map(|c| c.1).collect(),
            optimal_return: Some(4.0),
            normalised_score_by_episode: None,
            baselines: Default::default(),
            seeds: Vec::new(),
            returns_by_seed: Vec::new(),
            normalised_score_by_seed: Vec::new(),
        }
    }

    /// Merging seeds gives the same means and standard errors as one evaluation over every
    /// seed's rollouts, keeps each seed's curve, and scores bandits on the averaged curves.
    #[test]
    fn merged_seeds_pool_every_rollout() {
        let a = vec![vec![1.0, 2.0], vec![3.0, 5.0], vec![0.0, 4.0]];
        let b = vec![vec![2.0, 2.0], vec![7.0, 1.0], vec![1.0, 6.0]];
        let (mut ra, mut rb) = (report_of(&a), report_of(&b));
        ra.baselines.insert("random".into(), vec![0.0, 1.0]);
        ra.baselines.insert("ucb".into(), vec![4.0, 5.0]);
        rb.baselines.insert("random".into(), vec![2.0, 1.0]);
        rb.baselines.insert("ucb".into(), vec![6.0, 7.0]);
        for r in [&mut ra, &mut rb] {
            let (lo, hi) = (&r.baselines["random"], &r.baselines["ucb"]);
            r.normalised_score_by_episode = Some(normalised_scores(&r.returns_by_episode, lo, hi));
        }
        let m = merge_seeds(vec![(7, ra.clone()), (8, rb.clone())]).unwrap();
        let whole = report_of(&[a, b].concat());
        for (x, y) in [(m.mean_return, whole.mean_return), (m.stderr, whole.stderr)]
            .into_iter()
            .chain(
                m.returns_by_episode
                    .iter()
                    .copied()
                    .zip(whole.returns_by_episode.clone()),
            )
            .chain(
                m.stderr_by_episode
                    .iter()
                    .copied()
                    .zip(whole.stderr_by_episode.clone()),
            )
        {
            assert!((x - y).abs() < 1e-12, "{x} vs {y}");
        }
        assert_eq!(m.seeds, vec![7, 8]);
        assert_eq!(
            m.returns_by_seed,
            vec![ra.returns_by_episode.clone(), rb.returns_by_episode]
        );
        assert_eq!(m.baselines["ucb"], vec![5.0, 6.0]);
        // Episode 1: returns 14/6, random 1, UCB 5 → (14/6 − 1) / 4.
        let n = m.normalised_score_by_episode.as_ref().unwrap();
        assert!((n[0] - (14.0 / 6.0 - 1.0) / 4.0).abs() < 1e-12, "{n:?}");
        assert_eq!(m.normalised_score_by_seed.len(), 2);
        // One seed is returned as it is; different task counts are refused.
        assert_eq!(
            merge_seeds(vec![(7, ra.clone())]).unwrap().seeds,
            Vec::<u64>::new()
        );
        let short = report_of(&[vec![1.0, 2.0]]);
        let e = merge_seeds(vec![(7, ra), (9, short)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("seed 9"), "{e}");
        assert!(merge_seeds(Vec::new()).is_err());
    }

    #[test]
    fn normalised_score_is_zero_at_random_and_one_at_ucb() {
        let s = normalised_scores(
            &[30.0, 60.0, 75.0, 50.0],
            &[50.0, 50.0, 50.0, 50.0],
            &[60.0, 70.0, 75.0, 50.0],
        );
        assert_eq!(&s[..3], &[-2.0, 0.5, 1.0]);
        assert!(s[3].is_nan(), "tied baselines: {s:?}");
    }

    /// Always action 0.
    struct Zero;
    impl Policy for Zero {
        fn name(&self) -> String {
            "zero".into()
        }
        fn act(&mut self, _obs: &[f32], actions: &mut ActionBuf) -> Result<()> {
            if let ActionBuf::Discrete(a) = actions {
                a.fill(0);
            }
            Ok(())
        }
    }

    #[test]
    fn evaluation_epsilon_replaces_that_fraction_of_actions_uniformly() {
        let space = Space::Discrete { n: 4 };
        let changed = |epsilon: f64| -> Vec<usize> {
            let mut p = WithEpsilon::new(Zero, epsilon, &space, 7).unwrap();
            let mut counts = vec![0usize; 4];
            let mut a = ActionBuf::Discrete(vec![0; 100]);
            for _ in 0..400 {
                p.act(&[], &mut a).unwrap();
                let ActionBuf::Discrete(v) = &a else {
                    unreachable!()
                };
                for &x in v {
                    counts[x] += 1;
                }
            }
            counts
        };
        // ε = 0 is the inner policy; ε = 0.2 draws a random action for a fifth of the 40,000
        // (a quarter of which is 0 again): 2,000 ± 3·43 of each other action.
        assert_eq!(changed(0.0), vec![40_000, 0, 0, 0]);
        let c = changed(0.2);
        for &k in &c[1..] {
            assert!((1_870..=2_130).contains(&k), "{c:?}");
        }
        let e = WithEpsilon::new(
            Zero,
            0.05,
            &Space::Box {
                shape: vec![1],
                low: crate::envs::Bounds::Scalar(-1.0),
                high: crate::envs::Bounds::Scalar(1.0),
            },
            0,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("loop.eval_epsilon") && e.contains("continuous"),
            "{e}"
        );
    }

    #[test]
    fn random_dark_room_eval_shapes_and_bounds() {
        let fam = TaskFamily::from_id("dark_room").unwrap();
        let mut p = RandomPolicy::new(fam.spec().action_space.clone(), 0);
        let r = evaluate(&fam, TaskSet::Test, 5, 0, &mut p).unwrap();
        assert_eq!(r.num_tasks, 16);
        assert_eq!(r.returns_by_episode.len(), 5);
        assert_eq!(r.mean_length, 20.0);
        assert!(
            r.mean_return >= 0.0 && r.mean_return < 5.0,
            "{}",
            r.mean_return
        );
        let opt = r.optimal_return.unwrap();
        assert!(opt > 12.0 && opt <= 20.0, "{opt}");
    }

    #[test]
    fn same_seed_same_report_different_seed_differs() {
        let fam = TaskFamily::from_id("cartpole").unwrap();
        let run = |seed| {
            let mut p = RandomPolicy::new(fam.spec().action_space.clone(), seed);
            evaluate(&fam, TaskSet::All, 20, seed, &mut p)
                .unwrap()
                .returns_by_episode
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
