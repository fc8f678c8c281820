//! Reincarnating RL (Agarwal et al., NeurIPS 2022): warm-start a student from a teacher's
//! policy and data instead of training from scratch, and compare methods by the student's
//! teacher-normalised score `(G − G_random) / (G_teacher − G_random)` at equal student budget.
//!
//! One command runs one method: load the teacher ([`teacher`]), score it and a random policy,
//! get teacher data (a dataset in the transition schema, or a fresh teacher rollout dumped to
//! `OUT-teacher-data/`), build the student with [`crate::agents::build`], run the method's
//! offline phase if it has one, then train online in the ordinary loop ([`crate::train`]) with
//! the method's [`DqnHook`] in the student's update. `OUT/reincarnation.json` holds the
//! student's teacher-normalised evaluation curve; `OUT/reincarnation.svg` plots it.
//!
//! Methods (one file each): [`qdagger`], [`kickstart`], [`jsrl`], [`rehearsal`], [`pretrain`],
//! [`dqfd`], [`bc`], [`finetune`], and `tabula_rasa` (the same student, no teacher) as the
//! baseline. Students are the DQN family (any config: DQN, C51, spectral norm, other bodies)
//! or the SAC family (`sac`, `simbav2`, any sizes) with a SAC-family teacher, through the
//! agent's [`SacHook`] (see [`sac_methods`] for which methods apply and what they mean there).

pub mod actor_distill;
pub mod bc;
pub mod dqfd;
pub mod finetune;
pub mod in_context;
pub mod jsrl;
pub mod kickstart;
pub mod pretrain;
pub mod qdagger;
pub mod rehearsal;
pub mod sac_methods;
pub mod stage;
pub mod teacher;

use crate::agents::dqn::DqnHook;
use crate::agents::Agent;
use crate::envs::{EnvRef, TaskFamily, TaskSet};
use crate::error::{Error, Result};
use crate::eval::evaluate_tasks;
use crate::replay::ReplayBuffer;
use crate::report::metrics::{read_series, MetricsLog};
use crate::report::plot::{line_plot, Series};
use crate::stage_result::MethodAggregate;
use crate::train::{GreedyPolicy, LoopConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use teacher::{Teacher, TeacherPolicy};

/// `--method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Qdagger,
    Kickstart,
    Jsrl,
    Rehearsal,
    Pretrain,
    Dqfd,
    Bc,
    Finetune,
    TabulaRasa,
}

pub const METHODS: &[&str] = &[
    "qdagger",
    "kickstart",
    "jsrl",
    "rehearsal",
    "pretrain",
    "dqfd",
    "bc",
    "finetune",
    "tabula_rasa",
];

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let v = toml::Value::String(s.replace('-', "_"));
        v.try_into().map_err(|_| {
            Error::Config(format!(
                "unknown --method `{s}`{}; available: {}",
                crate::error::did_you_mean(s, METHODS.iter().copied()),
                METHODS.join(", ")
            ))
        })
    }
}

impl Method {
    pub fn name(self) -> &'static str {
        METHODS[self as usize]
    }
    fn needs_data(self) -> bool {
        matches!(
            self,
            Method::Qdagger | Method::Rehearsal | Method::Pretrain | Method::Dqfd | Method::Bc
        )
    }
    /// Methods whose student starts from the teacher's competence (its weights, or an offline
    /// phase on its data) and so starts exploring at the schedule's end ([`MethodConfig::warm_epsilon`]).
    pub fn starts_warm(self) -> bool {
        matches!(
            self,
            Method::Finetune | Method::Qdagger | Method::Pretrain | Method::Dqfd | Method::Bc
        )
    }
    /// Methods with an online distillation term, which `decay_steps` can switch off.
    pub fn distils(self) -> bool {
        matches!(self, Method::Qdagger | Method::Kickstart)
    }
    fn has_offline_phase(self) -> bool {
        matches!(
            self,
            Method::Qdagger | Method::Pretrain | Method::Dqfd | Method::Bc
        )
    }
}

/// Method hyperparameters (`[method]` in a spec, `--set method.KEY=V`). Defaults are the
/// paper's where it gives them; budget-relative defaults are our scaling of its ratios.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MethodConfig {
    /// QDagger/kickstarting distillation coefficient (3.0 in the paper); for SAC-family
    /// students the weight of the actor's Gaussian KL ([`actor_distill`]).
    pub distill_coef: f64,
    /// Distillation temperature τ (0.1; DQN-family students only).
    pub temperature: f64,
    /// Distillation is forced off from this environment step on (default: never; its weight
    /// follows the student's return, see [`qdagger`]). Also JSRL's roll-in decay period
    /// (default: half the budget).
    pub decay_steps: Option<u64>,
    /// Tie the learning rate to the distillation factor (QDagger), floored at `lr_floor`
    /// (DQN-family students; SAC-family students keep their configured schedules).
    pub tie_lr: bool,
    pub lr_floor: f64,
    /// Training episodes averaged into the student's return for λ_t.
    pub return_window: usize,
    /// Gradient steps of the offline phase (default: as many as the online phase makes).
    pub offline_updates: Option<u64>,
    /// Transitions of teacher rollout when no `--teacher-data` is given (default: 0.4 × the
    /// student's budget, the paper's 1M teacher-replay transitions to 2.5M student steps).
    pub teacher_data_steps: Option<u64>,
    /// ε of that rollout (teachers' replays hold exploratory data).
    pub teacher_epsilon: f64,
    /// Fraction of each batch drawn from teacher data (rehearsal, DQfD).
    pub rehearsal_fraction: f64,
    /// DQfD margin and the weight of its loss.
    pub margin: f64,
    pub margin_weight: f64,
    /// CQL α of the pretraining baseline.
    pub cql_alpha: f64,
    /// JSRL's longest roll-in (default: the environment's horizon).
    pub max_roll_in: Option<u64>,
    /// Episodes to score the teacher and a random policy.
    pub score_episodes: usize,
    /// An in-context teacher (an AD/ED checkpoint): episodes of its in-context rollout on the
    /// task, and how many of the last ones make its policy ([`in_context`]).
    pub in_context_episodes: usize,
    pub in_context_final_episodes: usize,
    /// Warm-started students (finetune, QDagger, pretrain, DQfD, BC) do not re-explore from
    /// scratch, which would replace the competence they start with by near-random episodes in
    /// their replay: DQN-family students hold ε at the schedule's end value from their first
    /// online step, SAC-family ones act with their own policy instead of uniform random actions
    /// until `learning_starts`.
    pub warm_epsilon: bool,
}

impl Default for MethodConfig {
    fn default() -> Self {
        Self {
            distill_coef: 3.0,
            temperature: 0.1,
            decay_steps: None,
            tie_lr: true,
            lr_floor: 0.1,
            return_window: 10,
            offline_updates: None,
            teacher_data_steps: None,
            teacher_epsilon: 0.1,
            rehearsal_fraction: 0.25,
            margin: 0.8,
            margin_weight: 1.0,
            cql_alpha: 1.0,
            max_roll_in: None,
            score_episodes: 20,
            in_context_episodes: 100,
            in_context_final_episodes: 10,
            warm_epsilon: true,
        }
    }
}

/// A reincarnation job (`reincarnate` flags, or one run of a `kind = "reincarnate"` stage).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReincarnateSpec {
    pub env: EnvRef,
    /// Checkpoint folder, `.safetensors`/`.pt`/`.pth` state dict (with `arch`), or `hf://...`.
    pub teacher: String,
    #[serde(default)]
    pub arch: Option<String>,
    /// A dataset folder in the transition schema (a replay dump or `collect --policy`).
    #[serde(default)]
    pub teacher_data: Option<PathBuf>,
    pub method: Method,
    /// The student's algorithm (`dqn`, `c51`).
    pub student: String,
    #[serde(default)]
    pub agent: toml::Table,
    #[serde(default, rename = "loop")]
    pub train_loop: LoopConfig,
    #[serde(default, rename = "method_config")]
    pub method_config: MethodConfig,
}

/// What a reincarnation run reports (`OUT/reincarnation.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReincarnationSummary {
    pub method: Method,
    pub env: String,
    pub teacher: String,
    pub teacher_return: f64,
    pub random_return: f64,
    /// (environment step, greedy return) of the student, step 0 after any offline phase.
    pub curve: Vec<(f64, f64)>,
    /// The same, teacher-normalised.
    pub normalised_curve: Vec<(f64, f64)>,
    /// The trained student's greedy return over `score_episodes` episodes (as many as score
    /// the teacher), teacher-normalised.
    pub final_normalised: f64,
    /// First evaluation step with a normalised score ≥ 1 (teacher level), if any.
    pub steps_to_teacher: Option<u64>,
    pub offline_updates: u64,
    pub teacher_data_transitions: usize,
    pub out: PathBuf,
    /// With an in-context teacher: its rollout's returns and final level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_context_teacher: Option<in_context::InContextReport>,
    /// With an in-context teacher: the first evaluation step at which the student's greedy
    /// return reaches the teacher's in-context final level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_to_in_context_level: Option<u64>,
}

/// `(G − G_random) / (G_teacher − G_random)`.
pub fn normalise(g: f64, random: f64, teacher: f64) -> f64 {
    (g - random) / (teacher - random)
}

/// Runs `spec` with `seed` into `out`: score the normalisation's ends, build the student, get
/// teacher data, run the method's offline phase, install its online hook, train, summarise.
pub fn run_reincarnate(
    spec: &ReincarnateSpec,
    seed: u64,
    device: &candle_core::Device,
    out: &Path,
) -> Result<ReincarnationSummary> {
    spec.train_loop.validate()?;
    let _lock = crate::fs::FolderLock::acquire(out)?;
    let env_cfg = spec.env.config();
    let family = TaskFamily::new(&env_cfg)?;
    let task = spec
        .train_loop
        .task
        .unwrap_or_else(|| family.tasks(TaskSet::Train)[0]);
    let mut in_context = None;
    let teacher = if in_context::is_in_context_teacher(&spec.teacher) {
        if spec.method == Method::Finetune {
            return Err(Error::Config(format!(
                "--method finetune copies the teacher's weights, but {} is an in-context \
                 learner (a transformer) and the student a reactive network; use qdagger, \
                 kickstart, jsrl, rehearsal, pretrain, dqfd or bc",
                spec.teacher
            )));
        }
        let mc = &spec.method_config;
        let r = in_context::roll_out(
            Path::new(&spec.teacher),
            &family,
            task,
            mc.in_context_episodes,
            mc.in_context_final_episodes,
            seed,
            device,
        )?;
        tracing::info!(
            "in-context teacher on task {task}: {} episodes, first {:.2}, final level {:.2} (last {})",
            r.report.episodes,
            r.report.returns_by_episode.first().copied().unwrap_or(f64::NAN),
            r.report.final_level,
            r.report.final_episodes
        );
        in_context = Some((r.replay, r.report));
        Rc::new(r.teacher)
    } else {
        Rc::new(Teacher::load(
            &spec.teacher,
            spec.arch.as_deref(),
            family.spec(),
            device,
        )?)
    };
    let ends = score_ends(spec, &teacher, &family, task, seed)?;
    let mut student = crate::agents::build(
        &spec.student,
        &spec.agent,
        family.spec(),
        device,
        seed,
        spec.train_loop.steps,
    )?;
    let online_updates = online_updates(spec, &teacher, student.as_mut())?;
    crate::fs::create_dir_all(out)?;
    let (in_context_data, in_context_report) = match in_context {
        Some((replay, report)) => (Some(replay), Some(report)),
        None => (None, None),
    };
    let data = match in_context_data {
        // The in-context rollout is the teacher's data unless other data is given.
        Some(replay) if spec.method.needs_data() && spec.teacher_data.is_none() => {
            Some(Rc::new(replay))
        }
        _ if spec.method.needs_data() => Some(Rc::new(teacher_data(
            spec, &teacher, &family, task, seed, out,
        )?)),
        _ => None,
    };
    let mc = &spec.method_config;
    let offline_updates = if spec.method.has_offline_phase() {
        mc.offline_updates.unwrap_or(online_updates)
    } else {
        0
    };
    let schedule = qdagger::NormalisedDecay {
        random_return: ends.random,
        teacher_return: ends.teacher,
        decay_steps: mc.decay_steps,
        return_window: mc.return_window,
        tie_lr: mc.tie_lr,
        lr_floor: mc.lr_floor,
    };
    let ctx = MethodContext {
        spec,
        teacher: &teacher,
        data: data.as_ref(),
        schedule: &schedule,
        roll_in_decay: mc.decay_steps.unwrap_or(spec.train_loop.steps / 2),
        max_roll_in: mc
            .max_roll_in
            .unwrap_or(family.spec().max_episode_steps as u64),
        seed,
    };
    let hooks = if student.as_dqn_mut().is_some() {
        dqn_hooks(&ctx)?
    } else {
        DqnHooks::default()
    };
    if offline_updates > 0 {
        let id = family.spec().id();
        offline_phase(
            &ctx,
            student.as_mut(),
            hooks.offline,
            offline_updates,
            out,
            id,
        )?;
    }
    if spec.method == Method::Finetune {
        finetune::load_teacher_weights(student.as_mut(), &teacher)?;
    }
    install_online_hook(&ctx, student.as_mut(), hooks.online)?;

    // The student's score where online training starts (after any offline phase).
    let mut loop_cfg = spec.train_loop.clone();
    loop_cfg.task = Some(task);
    let start_eval = evaluate_tasks(
        &family,
        &[task],
        "train",
        loop_cfg.eval_episodes.max(1),
        crate::rng::derive_seed(seed ^ 0xE7A1, 0),
        &mut crate::eval::WithEpsilon::new(
            GreedyPolicy::new(student.as_mut(), 0),
            loop_cfg.eval_epsilon,
            &family.spec().action_space,
            crate::rng::derive_seed(seed ^ 0xE7A1, 0),
        )?,
    )?
    .mean_return;
    let summary = crate::train::train(student.as_mut(), &env_cfg, &loop_cfg, seed, out, false)?;
    let mut curve = vec![(0.0, start_eval)];
    curve.extend(read_series(&out.join("metrics.jsonl"), "eval", "return")?);
    // The final score is measured as precisely as the teacher it is divided by: over
    // `score_episodes` (or the loop's `eval_episodes`, if more), not one periodic evaluation.
    let final_return = match summary.final_eval {
        Some(_) => Some(
            evaluate_tasks(
                &family,
                &[task],
                "train",
                spec.method_config
                    .score_episodes
                    .max(loop_cfg.eval_episodes)
                    .max(1),
                crate::rng::derive_seed(seed ^ 0xF1A1, spec.train_loop.steps),
                &mut crate::eval::WithEpsilon::new(
                    GreedyPolicy::new(student.as_mut(), summary.step),
                    loop_cfg.eval_epsilon,
                    &family.spec().action_space,
                    crate::rng::derive_seed(seed ^ 0xF1A1, spec.train_loop.steps),
                )?,
            )?
            .mean_return,
        ),
        None => None,
    };
    let mut result = ReincarnationSummary::new(
        spec,
        family.spec().id(),
        &ends,
        curve,
        final_return,
        offline_updates,
        data.as_ref().map_or(0, |d| d.len()),
        out,
    );
    if let Some(report) = in_context_report {
        result.steps_to_in_context_level = result
            .curve
            .iter()
            .find(|p| p.1 >= report.final_level)
            .map(|p| p.0 as u64);
        result.in_context_teacher = Some(report);
    }
    crate::fs::write_json_atomic(&out.join("reincarnation.json"), &result)?;
    plot_normalised(
        &out.join("reincarnation.svg"),
        &format!(
            "{} student ({}) on {}: teacher-normalised greedy return",
            spec.method.name(),
            spec.student,
            result.env
        ),
        &[(
            spec.method.name().to_string(),
            result.normalised_curve.clone(),
        )],
        run_markers(spec, &result, &out.join("metrics.jsonl"))?,
    )?;
    Ok(result)
}

/// What the plot of one run marks besides its curve: [`phase_markers`] and the distillation
/// weight `λ_t / coef` as the training log recorded it (QDagger, kickstarting).
fn run_markers(
    spec: &ReincarnateSpec,
    result: &ReincarnationSummary,
    metrics: &Path,
) -> Result<Vec<Series>> {
    let mut extra = phase_markers(spec, result.offline_updates);
    let coef = spec.method_config.distill_coef;
    let weight = read_series(metrics, "train", "distill_lambda")?;
    if !weight.is_empty() && coef > 0.0 {
        extra.push(Series::line(
            "distillation weight λ_t / coef",
            weight.into_iter().map(|(x, l)| (x, l / coef)).collect(),
        ));
    }
    Ok(extra)
}

/// Vertical markers of a method's phases on the student's curve: where its offline phase
/// ended (the curve's step 0, `offline_updates` gradient steps on teacher data) and, when
/// `decay_steps` forces it, where distillation was switched off.
pub fn phase_markers(spec: &ReincarnateSpec, offline_updates: u64) -> Vec<Series> {
    let mut marks = Vec::new();
    if offline_updates > 0 {
        marks.push(Series::marker(
            format!("offline phase ends ({offline_updates} updates)"),
            0.0,
        ));
    }
    if spec.method.distils() {
        marks.extend(switch_off_marker(&spec.method_config));
    }
    marks
}

/// The marker where `decay_steps`, when set, forces distillation off.
pub fn switch_off_marker(mc: &MethodConfig) -> Option<Series> {
    mc.decay_steps
        .map(|d| Series::marker("distillation switched off", d as f64))
}

/// The two ends of the teacher-normalised score.
struct ScoreEnds {
    teacher: f64,
    random: f64,
}

/// The teacher's and a random policy's mean return on `task`, on the same episodes; an error
/// when the teacher is no better than random (normalised scores would be undefined).
fn score_ends(
    spec: &ReincarnateSpec,
    teacher: &Teacher,
    family: &TaskFamily,
    task: usize,
    seed: u64,
) -> Result<ScoreEnds> {
    let score_seed = crate::rng::derive_seed(seed, 0x5C0E);
    let episodes = spec.method_config.score_episodes.max(1);
    let teacher_return = evaluate_tasks(
        family,
        &[task],
        "train",
        episodes,
        score_seed,
        &mut crate::eval::WithEpsilon::new(
            TeacherPolicy(teacher),
            spec.train_loop.eval_epsilon,
            &family.spec().action_space,
            score_seed,
        )?,
    )?
    .mean_return;
    let random_return = evaluate_tasks(
        family,
        &[task],
        "train",
        episodes,
        score_seed,
        &mut crate::eval::RandomPolicy::new(family.spec().action_space.clone(), score_seed),
    )?
    .mean_return;
    if teacher_return <= random_return {
        return Err(Error::Config(format!(
            "teacher {} scores {teacher_return:.3} on `{}`, no better than random play ({random_return:.3}): teacher-normalised scores are undefined",
            spec.teacher,
            family.spec().id()
        )));
    }
    Ok(ScoreEnds {
        teacher: teacher_return,
        random: random_return,
    })
}

/// Gradient updates the student's online phase makes (the default length of an offline
/// phase); an error for a student outside the DQN and SAC families.
fn online_updates(
    spec: &ReincarnateSpec,
    teacher: &Teacher,
    student: &mut dyn Agent,
) -> Result<u64> {
    let steps = spec.train_loop.steps;
    if let Some(sac) = student.as_sac_mut() {
        sac_methods::check(spec, teacher)?;
        return Ok(sac.config().updates(steps));
    }
    if let Some(dqn) = student.as_dqn_mut() {
        return Ok(dqn.config().updates(steps));
    }
    Err(Error::Config(format!(
        "student `{}`: the reincarnation methods train DQN-family (dqn, c51) or SAC-family (sac, simbav2) students",
        spec.student
    )))
}

/// What a method needs to build its hooks.
pub struct MethodContext<'a> {
    pub spec: &'a ReincarnateSpec,
    pub teacher: &'a Rc<Teacher>,
    /// The teacher's transitions, for the methods that use them ([`Method::needs_data`]).
    pub data: Option<&'a Rc<ReplayBuffer>>,
    /// λ_t of the online distillation (QDagger, kickstarting).
    pub schedule: &'a qdagger::NormalisedDecay,
    /// JSRL's roll-in decay period.
    pub roll_in_decay: u64,
    pub max_roll_in: u64,
    pub seed: u64,
}

impl MethodContext<'_> {
    pub fn data(&self) -> Result<&Rc<ReplayBuffer>> {
        self.data.ok_or_else(|| {
            Error::Config(format!(
                "method `{}` needs teacher data",
                self.spec.method.name()
            ))
        })
    }
}

/// A method's hooks into a DQN-family student: one for its offline phase (batches of teacher
/// data only), one for online training. Each method's file builds its own (`dqn_hooks`).
#[derive(Default)]
pub struct DqnHooks {
    pub offline: Option<Box<dyn DqnHook>>,
    pub online: Option<Box<dyn DqnHook>>,
}

/// The method's [`DqnHooks`]: one arm per method, no catch-all, so a new method must say how it
/// hooks into the student.
fn dqn_hooks(ctx: &MethodContext<'_>) -> Result<DqnHooks> {
    match ctx.spec.method {
        Method::Qdagger => qdagger::dqn_hooks(ctx),
        Method::Kickstart => kickstart::dqn_hooks(ctx),
        Method::Jsrl => jsrl::dqn_hooks(ctx),
        Method::Rehearsal => rehearsal::dqn_hooks(ctx),
        Method::Pretrain => pretrain::dqn_hooks(ctx),
        Method::Dqfd => dqfd::dqn_hooks(ctx),
        Method::Bc => bc::dqn_hooks(ctx),
        // The teacher's weights are the warm start; training is the student's own.
        Method::Finetune | Method::TabulaRasa => Ok(DqnHooks::default()),
    }
}

/// The method's offline phase: `updates` gradient steps on teacher data with the method's
/// offline hook, logged to `OUT/offline_metrics.jsonl`. DQN- and SAC-family students side by
/// side; the hook is removed afterwards.
fn offline_phase(
    ctx: &MethodContext<'_>,
    student: &mut dyn Agent,
    dqn_hook: Option<Box<dyn DqnHook>>,
    updates: u64,
    out: &Path,
    env_id: &str,
) -> Result<()> {
    let data = ctx.data()?;
    let label = format!("offline {} {env_id}", ctx.spec.method.name());
    if let Some(sac) = student.as_sac_mut() {
        let data = sac.adopt_data(data)?;
        sac.set_hook(sac_methods::offline_hook(ctx));
        offline_loop(ctx.spec, updates, out, &label, |_| sac.offline_step(&data))?;
        sac.set_hook(None);
        return Ok(());
    }
    let dqn = student.as_dqn_mut().ok_or_else(|| {
        Error::Config("the offline phase needs a DQN- or SAC-family student".into())
    })?;
    dqn.set_hook(dqn_hook);
    offline_loop(ctx.spec, updates, out, &label, |_| {
        dqn.offline_step(data, 0)
    })?;
    dqn.end_offline_phase()
}

/// `updates` calls of `step`, with a progress bar and every hundredth update's metrics logged.
fn offline_loop(
    spec: &ReincarnateSpec,
    updates: u64,
    out: &Path,
    label: &str,
    mut step: impl FnMut(u64) -> Result<crate::agents::Metrics>,
) -> Result<()> {
    let mut log = MetricsLog::open(&out.join("offline_metrics.jsonl"), None)?;
    let bar = crate::report::progress_bar(updates, label);
    if !spec.train_loop.progress {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let log_every = (updates / 100).max(1);
    for u in 1..=updates {
        let m = step(u).map_err(|e| match e {
            Error::Training(msg) | Error::NonFinite(msg) => {
                Error::Training(format!("{msg} in the offline phase (update {u})"))
            }
            e => e,
        })?;
        if u % log_every == 0 || u == updates {
            log.log(u, "offline", &m)?;
            bar.set_position(u);
        }
    }
    bar.finish_and_clear();
    log.flush()
}

/// Installs the method's online hook in the student (`dqn_hook` for a DQN-family one).
fn install_online_hook(
    ctx: &MethodContext<'_>,
    student: &mut dyn Agent,
    dqn_hook: Option<Box<dyn DqnHook>>,
) -> Result<()> {
    let warm = ctx.spec.method.starts_warm() && ctx.spec.method_config.warm_epsilon;
    if let Some(sac) = student.as_sac_mut() {
        let hook = sac_methods::online_hook(sac, ctx)?;
        sac.set_hook(hook);
        if warm {
            sac.start_warm();
        }
    } else if let Some(dqn) = student.as_dqn_mut() {
        dqn.set_hook(dqn_hook);
        if warm {
            dqn.start_warm();
        }
    }
    Ok(())
}

impl ReincarnationSummary {
    #[allow(clippy::too_many_arguments)]
    fn new(
        spec: &ReincarnateSpec,
        env: &str,
        ends: &ScoreEnds,
        curve: Vec<(f64, f64)>,
        final_return: Option<f64>,
        offline_updates: u64,
        teacher_data_transitions: usize,
        out: &Path,
    ) -> Self {
        let normalised_curve: Vec<(f64, f64)> = curve
            .iter()
            .map(|&(s, g)| (s, normalise(g, ends.random, ends.teacher)))
            .collect();
        let steps_to_teacher = normalised_curve
            .iter()
            .find(|p| p.1 >= 1.0)
            .map(|p| p.0 as u64);
        let final_normalised =
            final_return.map_or(f64::NAN, |g| normalise(g, ends.random, ends.teacher));
        Self {
            method: spec.method,
            env: env.to_string(),
            teacher: spec.teacher.clone(),
            teacher_return: ends.teacher,
            random_return: ends.random,
            curve,
            normalised_curve,
            final_normalised,
            steps_to_teacher,
            offline_updates,
            teacher_data_transitions,
            out: out.to_path_buf(),
            in_context_teacher: None,
            steps_to_in_context_level: None,
        }
    }
}

/// Teacher-normalised curves against environment steps, with the teacher's level (1.0).
pub fn plot_normalised(
    path: &Path,
    title: &str,
    curves: &[(String, Vec<(f64, f64)>)],
    extra: Vec<Series>,
) -> Result<()> {
    let mut series: Vec<Series> = curves
        .iter()
        .map(|(name, pts)| Series::line(name.clone(), pts.clone()))
        .collect();
    series.push(Series::reference("teacher", 1.0));
    series.extend(extra);
    line_plot(
        path,
        title,
        "environment steps",
        "teacher-normalised score",
        &series,
    )
}

/// The teacher's data: the given dataset, or a fresh rollout dumped beside `out`.
fn teacher_data(
    spec: &ReincarnateSpec,
    teacher: &Teacher,
    family: &TaskFamily,
    task: usize,
    seed: u64,
    out: &Path,
) -> Result<crate::replay::ReplayBuffer> {
    if let Some(given) = &spec.teacher_data {
        // A Minari dataset or a D4RL file is converted beside `out` first.
        let imported = sibling(out, "teacher-data");
        let folder = match crate::formats::DatasetFormat::detect(given) {
            Some(format) => {
                if imported.exists() {
                    std::fs::remove_dir_all(&imported).map_err(|e| Error::io(&imported, e))?;
                }
                let (_, report) =
                    crate::formats::import_dataset_for(format, given, &imported, family.spec())?;
                tracing::info!("{}", report.to_string().trim_end());
                &imported
            }
            None => given,
        };
        let manifest = crate::history::Manifest::load(folder)?;
        let rows = manifest.total_rows() as usize;
        if rows == 0 {
            return Err(Error::data(
                folder.join("dataset.json"),
                "the teacher dataset holds no transitions",
            ));
        }
        let act_dim = match &family.spec().action_space {
            crate::envs::Space::Box { shape, .. } => Some(shape.iter().product()),
            crate::envs::Space::Discrete { .. } => None,
        };
        let mut replay = crate::replay::ReplayBuffer::for_spec(
            rows,
            family.spec(),
            act_dim,
            &format!("the rows {} lists", folder.join("dataset.json").display()),
        )?;
        crate::replay::dataset::load(&mut replay, folder)?;
        return Ok(replay);
    }
    let n = spec
        .method_config
        .teacher_data_steps
        .unwrap_or((spec.train_loop.steps as f64 * 0.4) as u64)
        .max(1) as usize;
    let replay = teacher.rollout(
        family,
        task,
        n,
        spec.method_config.teacher_epsilon,
        crate::rng::derive_seed(seed, 0xDA7A),
    )?;
    let folder = sibling(out, "teacher-data");
    if folder.exists() {
        std::fs::remove_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
    }
    crate::replay::dataset::dump(
        &replay,
        &folder,
        family.spec(),
        task,
        family.describe_task(task),
        crate::history::SourceAlgo {
            name: format!("teacher:{}", teacher.agent.algorithm()),
            config: serde_json::json!({ "teacher": spec.teacher, "epsilon": spec.method_config.teacher_epsilon }),
        },
    )?;
    Ok(replay)
}

/// `OUT-suffix` beside `out` (a checkpoint folder keeps only files across its atomic swaps).
pub fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "reincarnate".into());
    out.with_file_name(format!("{name}-{suffix}"))
}

/// Per-method results of several seeds: IQM of the final teacher-normalised score with a
/// bootstrap CI, and the IQM curve.
pub fn aggregate(
    runs: &BTreeMap<String, Vec<ReincarnationSummary>>,
    seed: u64,
) -> BTreeMap<String, MethodAggregate> {
    use crate::report::aggregate::{bootstrap_ci, iqm};
    let mut out = BTreeMap::new();
    for (method, rs) in runs {
        let finals: Vec<f64> = rs.iter().map(|r| r.final_normalised).collect();
        let (lo, hi) = bootstrap_ci(&finals, iqm, 2000, 0.95, seed);
        let n = rs
            .iter()
            .map(|r| r.normalised_curve.len())
            .min()
            .unwrap_or(0);
        let curve: Vec<(f64, f64)> = (0..n)
            .map(|i| {
                let ys: Vec<f64> = rs.iter().map(|r| r.normalised_curve[i].1).collect();
                (rs[0].normalised_curve[i].0, iqm(&ys))
            })
            .collect();
        let first_at_teacher = curve.iter().find(|p| p.1 >= 1.0).map(|p| p.0);
        out.insert(
            method.clone(),
            MethodAggregate {
                final_iqm: iqm(&finals),
                ci95: (lo, hi),
                finals,
                iqm_curve: curve,
                first_step_iqm_at_teacher: first_at_teacher,
                steps_to_in_context_level: if rs.iter().any(|r| r.in_context_teacher.is_some()) {
                    rs.iter().map(|r| r.steps_to_in_context_level).collect()
                } else {
                    Vec::new()
                },
            },
        );
    }
    out
}

/// `eval --policy FILE --arch SPEC`: a state-dict policy (or any teacher source) evaluated
/// greedily on `env`.
pub fn eval_teacher(
    src: &str,
    arch: Option<&str>,
    env: &crate::envs::EnvConfig,
    tasks: TaskSet,
    episodes: usize,
    seed: u64,
    device: &candle_core::Device,
) -> Result<crate::eval::EvalReport> {
    let family = TaskFamily::new(env)?;
    let teacher = Teacher::load(src, arch, family.spec(), device)?;
    crate::eval::evaluate(&family, tasks, episodes, seed, &mut TeacherPolicy(&teacher))
}

/// Whether an `eval --policy` / `--teacher` source is a single file (a state dict, a
/// Stable-Baselines3 zip, a CleanRL model, or an `hf://sb3/`, `hf://cleanrl/` repo that holds
/// one by convention) rather than a checkpoint folder.
pub fn is_state_dict(src: &str) -> bool {
    let src = crate::formats::hub_convention(src);
    let lower = src.to_ascii_lowercase();
    [
        ".pt",
        ".pth",
        ".safetensors",
        ".bin",
        ".zip",
        ".cleanrl_model",
        ".msgpack",
    ]
    .iter()
    .any(|e| lower.ends_with(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(method: &str, decay_steps: Option<u64>) -> ReincarnateSpec {
        let mut table: toml::Table = toml::from_str(&format!(
            "env = \"cartpole\"\nteacher = \"t\"\nmethod = \"{method}\"\nstudent = \"dqn\"\n"
        ))
        .unwrap();
        if let Some(d) = decay_steps {
            table.insert(
                "method_config".into(),
                toml::from_str::<toml::Table>(&format!("decay_steps = {d}"))
                    .unwrap()
                    .into(),
            );
        }
        crate::config::from_table(table, "test").unwrap()
    }

    fn marks(spec: &ReincarnateSpec, offline: u64) -> Vec<(String, f64)> {
        phase_markers(spec, offline)
            .into_iter()
            .map(|s| (s.name, s.vline.unwrap()))
            .collect()
    }

    #[test]
    fn the_plot_marks_the_offline_end_and_a_forced_switch_off_only() {
        let q = marks(&spec("qdagger", None), 500);
        assert_eq!(
            q,
            vec![("offline phase ends (500 updates)".to_string(), 0.0)]
        );
        let q = marks(&spec("qdagger", Some(7000)), 500);
        assert_eq!(q[1], ("distillation switched off".to_string(), 7000.0));
        // Kickstarting has no offline phase; JSRL's decay_steps is its roll-in period, not a
        // distillation switch-off.
        let k = marks(&spec("kickstart", Some(7000)), 0);
        assert_eq!(k, vec![("distillation switched off".to_string(), 7000.0)]);
        assert!(marks(&spec("jsrl", Some(7000)), 0).is_empty());
        assert!(marks(&spec("tabula_rasa", None), 0).is_empty());
    }

    #[test]
    fn warm_starts_are_the_methods_that_begin_from_the_teachers_competence() {
        let warm: Vec<&str> = METHODS
            .iter()
            .copied()
            .filter(|m| m.parse::<Method>().unwrap().starts_warm())
            .collect();
        assert_eq!(warm, ["qdagger", "pretrain", "dqfd", "bc", "finetune"]);
    }
}
