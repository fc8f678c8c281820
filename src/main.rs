//! The `reincarnate` command line: parses flags, then calls one library function per subcommand.
//! Exit code 0 on success, 1 on a user error (message on stderr).

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use reincarnate::device::CpuParallelism;
use reincarnate::envs::{registry, EnvConfig, TaskFamily, TaskSet};
use reincarnate::experiment::{eval_random, load_experiment, run_experiment, Experiment, Stage};
use reincarnate::report::{si, table, Figure};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "reincarnate",
    version,
    about = "Reusing prior computation in reinforcement learning"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

/// Flags every subcommand takes.
#[derive(Args, Clone)]
struct Common {
    /// auto | cpu | cuda | cuda:N
    #[arg(long, global = true, default_value = "auto")]
    device: String,
    /// Seed of every random choice in the run.
    #[arg(long, global = true, default_value_t = 0)]
    seed: u64,
    /// Config override, repeatable: --set env.sticky_action_prob=0.0
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// How the CPU threads (RAYON_NUM_THREADS, default every core) are used: `ops` splits every
    /// tensor op over them, `passes` runs ops on one core each and independent passes side by
    /// side (default: passes for train, reincarnate, collect, `bench updates` and experiments
    /// without a distill stage, whose networks are small; ops otherwise)
    #[arg(long, global = true)]
    cpu_split: Option<CpuSplit>,
}

/// `--cpu-split`: [`CpuParallelism`] on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
enum CpuSplit {
    Ops,
    Passes,
}

#[derive(Subcommand)]
enum Command {
    /// List environments with their spaces and task counts.
    Envs {
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a policy and report mean return ± standard error.
    Eval {
        /// Environment id (see `reincarnate envs`); default: the checkpoint's.
        #[arg(long)]
        env: Option<String>,
        /// `random`, a checkpoint folder, `hf://ORG/NAME`, or a `.safetensors`/`.pt`/`.pth`
        /// state dict with --arch (evaluated greedily).
        #[arg(long, default_value = "random")]
        policy: String,
        /// Network held by a state-dict --policy: mlp:120,84 or minatar-conv:16,128.
        #[arg(long)]
        arch: Option<String>,
        /// Episodes per task.
        #[arg(long, default_value_t = 10)]
        episodes: usize,
        #[arg(long, value_enum, default_value_t = TaskSet::Test)]
        tasks: TaskSet,
        /// In-context (AD/ED) policies: sample actions from softmax(logits / T); 0 = most likely.
        #[arg(long, default_value_t = 1.0)]
        temperature: f64,
        /// In-context (AD/ED) policies: transitions the context keeps when it is full
        /// [default: half the model's context].
        #[arg(long)]
        keep: Option<usize>,
        /// Print one JSON object on the last line of stdout.
        #[arg(long)]
        json: bool,
    },
    /// Train an agent online; checkpoints, metrics and a learning curve go to --out.
    Train {
        /// Environment id (or give it in --config as `env`).
        #[arg(long)]
        env: Option<String>,
        /// Algorithm: dqn, c51.
        #[arg(long)]
        algo: Option<String>,
        /// Environment steps (loop.steps).
        #[arg(long)]
        steps: Option<u64>,
        /// Output folder (default checkpoints/ENV-ALGO-sSEED).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue from the checkpoint in --out.
        #[arg(long)]
        resume: bool,
        /// Log the agent's whole interaction stream as it learns to this dataset folder.
        #[arg(long)]
        log_history: Option<PathBuf>,
        /// TOML file with `env`, `algo`, `[agent]`, `[loop]`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Train many source runs over a task family and log every transition (learning histories).
    Collect {
        #[arg(long)]
        env: String,
        /// Source algorithm: ppo (gridworlds), ucb / thompson (bandits), dqn, c51 (ignored with --policy).
        #[arg(long, default_value = "ppo")]
        algo: String,
        #[arg(long, value_enum, default_value_t = TaskSet::Train)]
        tasks: TaskSet,
        /// Number of runs (learning histories); run r uses task r mod (number of tasks).
        #[arg(long)]
        runs: usize,
        /// Environment steps per run.
        #[arg(long)]
        steps: u64,
        #[arg(long)]
        out: PathBuf,
        /// i/n: only runs r with r mod n = i (for array jobs); re-running resumes.
        #[arg(long)]
        shard: Option<reincarnate::collect::Shard>,
        /// Runs in parallel (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Teacher mode: roll out this checkpoint's policy instead of training --algo.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Teacher mode: probability of a uniformly random action.
        #[arg(long, default_value_t = 0.0)]
        epsilon: f64,
    },
    /// Warm-start a student from a teacher (checkpoint, state dict + --arch, hf://) with a
    /// reincarnation method; reports its teacher-normalised evaluation curve.
    Reincarnate {
        /// Checkpoint folder, .safetensors/.pt/.pth state dict (with --arch), or hf://ORG/NAME.
        #[arg(long)]
        teacher: String,
        /// Network held by a state-dict teacher: mlp:120,84 or minatar-conv:16,128.
        #[arg(long)]
        arch: Option<String>,
        /// Teacher data: a dataset folder in the transition schema or hf://datasets/ORG/NAME
        /// (default: roll the teacher out).
        #[arg(long)]
        teacher_data: Option<PathBuf>,
        /// qdagger, kickstart, jsrl, rehearsal, pretrain, dqfd, bc, finetune, tabula_rasa.
        #[arg(long)]
        method: String,
        /// Student algorithm: dqn, c51 (any DQN-family teacher), sac, simbav2 (a SAC-family
        /// teacher); configure with --set agent.KEY=VALUE.
        #[arg(long, default_value = "dqn")]
        student: String,
        #[arg(long)]
        env: String,
        /// Student environment steps (loop.steps).
        #[arg(long)]
        steps: Option<u64>,
        /// Output folder (default checkpoints/ENV-METHOD-sSEED).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also train the same student from scratch at the same budget into OUT-tabula-rasa
        /// and plot both curves.
        #[arg(long)]
        baseline: bool,
        /// TOML file with `agent`, `loop`, `method_config` tables (flags and --set override it).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Train an algorithm-distillation (AD) or expert-distillation (ED) transformer on a dataset.
    Distill {
        /// Dataset folder of learning histories (`collect` output) or hf://datasets/ORG/NAME.
        #[arg(long)]
        data: String,
        /// ad (default) or ed; overrides `mode` in --config.
        #[arg(long, value_enum)]
        mode: Option<reincarnate::ad::Mode>,
        /// Output checkpoint folder (default checkpoints/DATASET-MODE-sSEED).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Gradient steps (`steps`).
        #[arg(long)]
        steps: Option<u64>,
        /// TOML file with distill settings (`steps`, `batch`, `lr`, `[model]`, ...).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Continue from the checkpoint in --out.
        #[arg(long)]
        resume: bool,
    },
    /// Summarise a checkpoint folder or a dataset folder.
    Inspect {
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Dataset folders: validate, merge shards.
    Dataset {
        #[command(subcommand)]
        action: DatasetAction,
    },
    /// Run a whole pipeline from an experiment file; finished stages are skipped on re-run.
    Run { experiment: PathBuf },
    /// Performance figures.
    Bench {
        #[arg(value_enum)]
        what: BenchWhat,
        #[arg(long)]
        json: bool,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 0.5)]
        seconds: f64,
        /// Only figures whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// bench ad: transformer layers.
        #[arg(long, default_value_t = 4)]
        layers: usize,
        /// bench ad: attention heads.
        #[arg(long, default_value_t = 4)]
        heads: usize,
        /// bench ad: embedding width.
        #[arg(long = "d-model", default_value_t = 64)]
        d_model: usize,
        /// bench ad: context length in transitions.
        #[arg(long, default_value_t = 256)]
        context: usize,
        /// bench ad: training batch (windows) and evaluation environments.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// bench ad: token layout (one token per transition, or s, a, r tokens).
        #[arg(long, value_enum, default_value_t = reincarnate::ad::TokenLayout::Transition)]
        layout: reincarnate::ad::TokenLayout,
    },
}

#[derive(Subcommand)]
enum DatasetAction {
    /// Check schema, sort order and manifest consistency; lists every problem.
    Validate { path: PathBuf },
    /// Combine shard datasets (made with --shard i/n) into one, renumbering runs.
    Merge {
        shards: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchWhat {
    Envs,
    Updates,
    Io,
    Ad,
}

fn env_config(id: &str, overrides: &[String]) -> Result<EnvConfig> {
    // `--set env.KEY=VALUE` refines the environment; other keys do not apply to this command.
    let mut env_sets = Vec::new();
    for o in overrides {
        match o.strip_prefix("env.") {
            Some(rest) => env_sets.push(rest.to_string()),
            None => bail!("--set {o}: this command takes only env.* overrides (e.g. --set env.sticky_action_prob=0)"),
        }
    }
    let mut table = toml::Table::new();
    table.insert("id".into(), toml::Value::String(id.to_string()));
    reincarnate::config::apply_overrides(&mut table, &env_sets)?;
    Ok(reincarnate::config::from_table(table, "--set env.*")?)
}

fn cmd_envs(json: bool) -> Result<()> {
    let mut rows = Vec::new();
    let mut objs = Vec::new();
    for e in registry() {
        let fam = TaskFamily::from_id(e.id)?;
        let spec = fam.spec();
        let (train, test) = (
            fam.tasks(TaskSet::Train).len(),
            fam.tasks(TaskSet::Test).len(),
        );
        rows.push(vec![
            e.id.to_string(),
            spec.observation_space.to_string(),
            spec.action_space.to_string(),
            spec.max_episode_steps.to_string(),
            format!("{} ({train}/{test})", spec.num_tasks),
            e.summary.to_string(),
        ]);
        objs.push(serde_json::json!({
            "id": e.id, "spec": spec, "train_tasks": train, "test_tasks": test, "summary": e.summary,
        }));
    }
    if json {
        println!("{}", serde_json::to_string(&objs)?);
    } else {
        println!(
            "{}",
            table(
                &[
                    "env",
                    "observation",
                    "action",
                    "horizon",
                    "tasks (train/test)",
                    "description"
                ],
                &rows
            )
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
/// The flags of `eval` besides the common ones.
struct EvalArgs<'a> {
    env: Option<&'a str>,
    policy: &'a str,
    arch: Option<&'a str>,
    episodes: usize,
    tasks: TaskSet,
    temperature: f64,
    keep: Option<usize>,
    json: bool,
}

fn cmd_eval(c: &Common, a: EvalArgs<'_>) -> Result<()> {
    let EvalArgs {
        env,
        policy,
        arch,
        episodes,
        tasks,
        temperature,
        keep,
        json,
    } = a;
    let r = if arch.is_some() || reincarnate::reincarnation::is_state_dict(policy) {
        let env = env.context("--env is required with a state-dict --policy")?;
        let cfg = env_config(env, &c.overrides)?;
        let device = reincarnate::device::parse_device(&c.device)?;
        reincarnate::reincarnation::eval_teacher(
            policy, arch, &cfg, tasks, episodes, c.seed, &device,
        )?
    } else if policy == "random" {
        let env = env.context("--env is required with --policy random")?;
        let cfg = env_config(env, &c.overrides)?;
        eval_random(&cfg, tasks, episodes, c.seed)?
    } else {
        let device = reincarnate::device::parse_device(&c.device)?;
        let path = local_folder(policy, false)?;
        let data = reincarnate::checkpoint::load(&path)?;
        if reincarnate::ad::is_in_context(&data.config) {
            let r = reincarnate::ad::curves::eval_in_context_at(
                &data,
                env.map(|id| env_config(id, &c.overrides)).transpose()?,
                tasks,
                episodes,
                c.seed,
                &device,
                temperature,
                keep,
            )?;
            return print_eval(&r, json);
        }
        let mut agent = reincarnate::agents::from_checkpoint(&data, &device)
            .with_context(|| format!("loading {}", path.display()))?;
        let trained: reincarnate::envs::EnvSpec =
            serde_json::from_value(data.config["env"].clone())?;
        let cfg = match env {
            Some(id) => env_config(id, &c.overrides)?,
            None => {
                let mut cfg = trained.config.clone();
                let mut t = toml::Table::try_from(&cfg)?;
                let sets: Vec<String> = c
                    .overrides
                    .iter()
                    .filter_map(|o| o.strip_prefix("env.").map(String::from))
                    .collect();
                reincarnate::config::apply_overrides(&mut t, &sets)?;
                cfg = reincarnate::config::from_table(t, "--set env.*")?;
                cfg
            }
        };
        let family = TaskFamily::new(&cfg)?;
        let spec = family.spec();
        if spec.observation_space != trained.observation_space
            || spec.action_space != trained.action_space
        {
            bail!(
                "{} was trained on `{}` (observation {}, action {}), which does not fit `{}` (observation {}, action {})",
                path.display(), trained.id(), trained.observation_space, trained.action_space,
                spec.id(), spec.observation_space, spec.action_space
            );
        }
        let mut greedy = reincarnate::train::GreedyPolicy {
            agent: agent.as_mut(),
            step: u64::MAX,
        };
        reincarnate::eval::evaluate(&family, tasks, episodes, c.seed, &mut greedy)?
    };
    print_eval(&r, json)
}

fn print_eval(r: &reincarnate::eval::EvalReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        let opt = r
            .optimal_return
            .map(|o| format!(", optimal {o:.2}"))
            .unwrap_or_default();
        println!(
            "{} | policy {} | {} task(s) ({}) x {} episodes | return {:.3} ± {:.3} | length {:.1}{opt}",
            r.env, r.policy, r.num_tasks, r.tasks, r.episodes, r.mean_return, r.stderr, r.mean_length
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn cmd_train(
    c: &Common,
    env: Option<&str>,
    algo: Option<&str>,
    steps: Option<u64>,
    out: Option<&Path>,
    resume: bool,
    log_history: Option<&Path>,
    config: Option<&Path>,
) -> Result<()> {
    let mut table = match config {
        Some(p) => toml::from_str::<toml::Table>(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{} is not valid TOML", p.display()))?,
        None => toml::Table::new(),
    };
    if let Some(id) = env {
        table.insert("env".into(), toml::Value::String(id.to_string()));
    }
    if let Some(a) = algo {
        table.insert("algo".into(), toml::Value::String(a.to_string()));
    }
    let mut sets = c.overrides.clone();
    if let Some(s) = steps {
        sets.push(format!("loop.steps={s}"));
    }
    if let Some(h) = log_history {
        sets.push(format!(
            "loop.log_history={}",
            toml::Value::String(h.display().to_string())
        ));
    }
    // `env.KEY=VALUE` on an env given by id turns it into a table first.
    if sets.iter().any(|s| s.starts_with("env.")) {
        if let Some(toml::Value::String(id)) = table.get("env").cloned() {
            let mut t = toml::Table::new();
            t.insert("id".into(), toml::Value::String(id));
            table.insert("env".into(), toml::Value::Table(t));
        }
    }
    for key in ["env", "algo"] {
        if !table.contains_key(key) {
            bail!("train needs --{key} (or `{key}` in --config)");
        }
    }
    reincarnate::config::apply_overrides(&mut table, &sets)?;
    let source = config
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "train flags".into());
    let spec: reincarnate::train::TrainSpec = reincarnate::config::from_table(table, &source)?;
    let device = reincarnate::device::parse_device(&c.device)?;
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| {
        PathBuf::from("checkpoints").join(format!(
            "{}-{}-s{}",
            spec.env.config().id.replace('/', "-"),
            spec.algo,
            c.seed
        ))
    });
    let summary = reincarnate::train::run_train(&spec, c.seed, &device, &out, resume)?;
    if let Some(r) = &summary.final_eval {
        println!(
            "{} on {}: {} steps, {} episodes, {:.0} steps/s | greedy return {:.2} ± {:.2} over {} episodes",
            spec.algo, r.env, summary.step, summary.episodes, summary.steps_per_second, r.mean_return, r.stderr, r.episodes
        );
    }
    println!(
        "wrote {} (model.safetensors, metrics.jsonl, learning_curve.svg)",
        out.display()
    );
    Ok(())
}

struct ReincarnateArgs<'a> {
    teacher: &'a str,
    arch: Option<&'a str>,
    teacher_data: Option<&'a Path>,
    method: &'a str,
    student: &'a str,
    env: &'a str,
    steps: Option<u64>,
    out: Option<&'a Path>,
    baseline: bool,
    config: Option<&'a Path>,
}

fn cmd_reincarnate(c: &Common, a: ReincarnateArgs<'_>) -> Result<()> {
    use reincarnate::reincarnation::{run_reincarnate, Method, ReincarnateSpec};
    let mut table = match a.config {
        Some(p) => toml::from_str::<toml::Table>(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{} is not valid TOML", p.display()))?,
        None => toml::Table::new(),
    };
    let method: Method = a.method.parse()?;
    let s = |v: &str| toml::Value::String(v.to_string());
    table.insert("env".into(), s(a.env));
    table.insert("teacher".into(), s(a.teacher));
    table.insert("method".into(), s(method.name()));
    table.insert("student".into(), s(a.student));
    if let Some(arch) = a.arch {
        table.insert("arch".into(), s(arch));
    }
    if let Some(d) = a.teacher_data {
        // A dataset folder or hf://datasets/ORG/NAME (resolved through the Hub cache).
        let d = local_folder(&d.to_string_lossy(), true)?;
        table.insert("teacher_data".into(), s(&d.display().to_string()));
    }
    let mut sets = c.overrides.clone();
    if let Some(n) = a.steps {
        sets.push(format!("loop.steps={n}"));
    }
    if sets.iter().any(|s| s.starts_with("env.")) {
        let mut t = toml::Table::new();
        t.insert("id".into(), s(a.env));
        table.insert("env".into(), toml::Value::Table(t));
    }
    reincarnate::config::apply_overrides(&mut table, &sets)?;
    let spec: ReincarnateSpec = reincarnate::config::from_table(table, "reincarnate flags")?;
    let device = reincarnate::device::parse_device(&c.device)?;
    let out = a.out.map(Path::to_path_buf).unwrap_or_else(|| {
        PathBuf::from("checkpoints").join(format!(
            "{}-{}-s{}",
            a.env.replace('/', "-"),
            method.name(),
            c.seed
        ))
    });
    let r = run_reincarnate(&spec, c.seed, &device, &out)?;
    let fmt_steps = |s: Option<u64>| s.map_or("not reached".to_string(), |s| format!("step {s}"));
    println!(
        "{} student on {}: teacher {:.2}, random {:.2} | final teacher-normalised score {:.3} | teacher level: {}",
        method.name(), r.env, r.teacher_return, r.random_return, r.final_normalised, fmt_steps(r.steps_to_teacher)
    );
    let mut curves = vec![(method.name().to_string(), r.normalised_curve.clone())];
    if a.baseline && method != Method::TabulaRasa {
        let base_out = reincarnate::reincarnation::sibling(&out, "tabula-rasa");
        let base = ReincarnateSpec {
            method: Method::TabulaRasa,
            ..spec.clone()
        };
        let b = run_reincarnate(&base, c.seed, &device, &base_out)?;
        println!(
            "tabula_rasa student: final teacher-normalised score {:.3} | teacher level: {} ({})",
            b.final_normalised,
            fmt_steps(b.steps_to_teacher),
            base_out.display()
        );
        curves.push(("tabula_rasa".into(), b.normalised_curve));
        reincarnate::reincarnation::plot_normalised(
            &out.join("reincarnation.svg"),
            &format!("{} vs tabula rasa on {}", method.name(), r.env),
            &curves,
        )?;
    }
    println!(
        "wrote {} (model.safetensors, metrics.jsonl, reincarnation.json, reincarnation.svg)",
        out.display()
    );
    Ok(())
}

fn cmd_distill(
    c: &Common,
    data: &str,
    mode: Option<reincarnate::ad::Mode>,
    out: Option<&Path>,
    steps: Option<u64>,
    config: Option<&Path>,
    resume: bool,
) -> Result<()> {
    let mut table = match config {
        Some(p) => toml::from_str::<toml::Table>(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{} is not valid TOML", p.display()))?,
        None => toml::Table::new(),
    };
    let mut sets = c.overrides.clone();
    if let Some(m) = mode {
        sets.push(format!("mode=\"{}\"", m.as_str()));
    }
    if let Some(s) = steps {
        sets.push(format!("steps={s}"));
    }
    reincarnate::config::apply_overrides(&mut table, &sets)?;
    let source = config
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "distill flags".into());
    let cfg: reincarnate::ad::DistillConfig = reincarnate::config::from_table(table, &source)?;
    let mode = cfg.mode;
    let folder = local_folder(data, true)?;
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| {
        let stem = folder
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into());
        PathBuf::from("checkpoints").join(format!("{stem}-{}-s{}", mode.as_str(), c.seed))
    });
    let device = reincarnate::device::parse_device(&c.device)?;
    let s = reincarnate::ad::distill(&cfg, &folder, &out, c.seed, &device, resume)?;
    println!(
        "{} on {}: {} steps, {} parameters, final loss {:.4}, action accuracy {:.3}, {:.0} tokens/s",
        mode.as_str(),
        folder.display(),
        s.steps,
        s.num_params,
        s.final_loss,
        s.final_accuracy,
        s.tokens_per_second
    );
    println!(
        "wrote {} (model.safetensors, config.json, metrics.jsonl)",
        out.display()
    );
    Ok(())
}

/// A stage result as a person wants to read it: a table of evaluations, a train stage's final
/// return, a comparison's plot.
fn print_stage_result(result: &serde_json::Value) {
    let row = |name: &str, r: &serde_json::Value| -> Option<Vec<String>> {
        let m = r.get("mean_return")?.as_f64()?;
        let se = r.get("stderr")?.as_f64()?;
        let len = r.get("mean_length")?.as_f64()?;
        let opt = r.get("optimal_return").and_then(|v| v.as_f64());
        Some(vec![
            name.to_string(),
            format!("{m:.3} ± {se:.3}"),
            format!("{len:.1}"),
            opt.map(|o| format!("{o:.2}")).unwrap_or_else(|| "-".into()),
        ])
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    if let Some(r) = row(
        result.get("env").and_then(|e| e.as_str()).unwrap_or("env"),
        result,
    ) {
        rows.push(r);
    } else if let Some(map) = result.as_object() {
        rows.extend(map.iter().filter_map(|(env, r)| row(env, r)));
    }
    if !rows.is_empty() {
        println!(
            "{}",
            table(&["env", "return (mean ± s.e.)", "length", "optimal"], &rows)
        );
    }
    if let (Some(m), Some(se)) = (
        result.get("final_return_mean").and_then(|v| v.as_f64()),
        result.get("final_return_stderr").and_then(|v| v.as_f64()),
    ) {
        println!("  final greedy return {m:.2} ± {se:.2} over seeds");
    }
    if let Some(plot) = result.get("plot").and_then(|v| v.as_str()) {
        if let Some(fin) = result.get("final").and_then(|v| v.as_object()) {
            for (k, v) in fin {
                let m = v["final_return_mean"].as_f64().unwrap_or(f64::NAN);
                let se = v["final_return_stderr"].as_f64().unwrap_or(f64::NAN);
                println!("  {k}: final greedy return {m:.2} ± {se:.2}");
            }
        }
        println!("  plot: {plot}");
    }
    if let Some(t) = result.get("table_text").and_then(|v| v.as_str()) {
        println!("{t}");
    } else if let Some(methods) = result.get("methods").and_then(|v| v.as_object()) {
        for (m, v) in methods {
            let at = v["first_step_iqm_at_teacher"]
                .as_f64()
                .map_or("not reached".to_string(), |s| format!("step {s}"));
            println!(
                "  {m}: final teacher-normalised IQM {:.2} (95% CI {:.2}..{:.2}) | teacher level: {at}",
                v["final_iqm"].as_f64().unwrap_or(f64::NAN),
                v["ci95"][0].as_f64().unwrap_or(f64::NAN),
                v["ci95"][1].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
}

/// A scratch folder for `bench io` in the system temp dir, removed afterwards.
fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("reincarnate-bench-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A checkpoint or dataset argument as a local folder: `hf://...` resolves through the Hub
/// cache (offline when cached), anything else is a path.
fn local_folder(arg: &str, dataset: bool) -> Result<PathBuf> {
    use reincarnate::hub::{is_hub_url, resolve_checkpoint, resolve_dataset, HubRef};
    if !is_hub_url(arg) {
        return Ok(PathBuf::from(arg));
    }
    let r = HubRef::parse(arg)?;
    Ok(
        if dataset || matches!(r.kind, reincarnate::hub::RepoKind::Dataset) {
            resolve_dataset(&r)?
        } else {
            resolve_checkpoint(&r)?
        },
    )
}

fn cmd_inspect(path: &Path, json: bool) -> Result<()> {
    let resolved = local_folder(&path.to_string_lossy(), false)?;
    let path = resolved.as_path();
    if path.join("dataset.json").exists() {
        let summary = reincarnate::history::summarize(path)?;
        if json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            println!("{summary}");
        }
        return Ok(());
    }
    if path.join(reincarnate::checkpoint::CONFIG_FILE).exists() {
        print!("{}", reincarnate::checkpoint::describe(path)?);
        return Ok(());
    }
    bail!(
        "{}: neither a dataset folder (dataset.json) nor a checkpoint folder (config.json + model.safetensors)",
        path.display()
    )
}

fn cmd_run(c: &Common, path: &Path, exp: Experiment) -> Result<()> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "experiment".into());
    let device = reincarnate::device::parse_device(&c.device)?;
    let (root, outcomes) = run_experiment(&exp, &stem, &device)?;
    for o in &outcomes {
        let note = if o.skipped {
            " (finished earlier, skipped)"
        } else {
            ""
        };
        println!("stage {}{note}", o.name);
        print_stage_result(&o.result);
    }
    println!("wrote {}", root.join("summary.json").display());
    Ok(())
}

fn cmd_bench(
    what: BenchWhat,
    json: bool,
    seconds: f64,
    filter: Option<&str>,
    device: &str,
    ad: &reincarnate::ad::bench::AdBenchSizes,
) -> Result<()> {
    let budget = Duration::from_secs_f64(seconds);
    let figures: Vec<Figure> = match what {
        BenchWhat::Envs => reincarnate::bench::bench_envs(budget, filter)?,
        BenchWhat::Io => {
            let dir = tempfile_dir()?;
            let rows = std::env::var("REINCARNATE_BENCH_ROWS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(10_000_000);
            let r = reincarnate::history::bench_io(rows, &dir);
            let _ = std::fs::remove_dir_all(&dir);
            r?
        }
        BenchWhat::Ad => reincarnate::ad::bench::bench_ad(
            ad,
            budget,
            &reincarnate::device::parse_device(device)?,
            filter,
        )?,
        BenchWhat::Updates => reincarnate::bench::bench_updates(
            budget,
            &reincarnate::device::parse_device(device)?,
            filter,
        )?,
    };
    if json {
        for f in &figures {
            println!("{}", serde_json::to_string(f)?);
        }
    } else {
        let rows: Vec<Vec<String>> = figures
            .iter()
            .map(|f| vec![f.name.clone(), si(f.value), f.unit.clone()])
            .collect();
        println!("{}", table(&["figure", "value", "unit"], &rows));
    }
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Online RL trains small networks: one core per op, independent ops side by side.
    // Distillation trains a transformer whose matrix products are worth splitting.
    // An experiment file is read once, here, and run below.
    let mut experiment = match &cli.command {
        Command::Run { experiment } => Some(load_experiment(experiment, &cli.common.overrides)),
        _ => None,
    };
    let parallelism = match (cli.common.cpu_split, &cli.command) {
        (Some(CpuSplit::Ops), _) => CpuParallelism::WithinOps,
        (Some(CpuSplit::Passes), _) => CpuParallelism::AcrossOps,
        (
            None,
            Command::Train { .. }
            | Command::Reincarnate { .. }
            | Command::Collect { .. }
            | Command::Bench {
                what: BenchWhat::Updates | BenchWhat::Envs,
                ..
            },
        ) => CpuParallelism::AcrossOps,
        // An experiment without a distillation stage trains small networks only.
        (None, Command::Run { .. }) => match &experiment {
            Some(Ok(exp)) if !exp.stages.iter().any(|s| matches!(s, Stage::Distill(_))) => {
                CpuParallelism::AcrossOps
            }
            _ => CpuParallelism::WithinOps,
        },
        (None, _) => CpuParallelism::WithinOps,
    };
    reincarnate::device::configure_cpu(None, parallelism);
    let result = reincarnate::device::run_on_pool(|| -> Result<()> {
        let _device = reincarnate::device::parse_device(&cli.common.device).context("--device")?;
        match &cli.command {
            Command::Envs { json } => cmd_envs(*json),
            Command::Eval {
                env,
                policy,
                arch,
                episodes,
                tasks,
                temperature,
                keep,
                json,
            } => cmd_eval(
                &cli.common,
                EvalArgs {
                    env: env.as_deref(),
                    policy,
                    arch: arch.as_deref(),
                    episodes: *episodes,
                    tasks: *tasks,
                    temperature: *temperature,
                    keep: *keep,
                    json: *json,
                },
            ),
            Command::Train {
                env,
                algo,
                steps,
                out,
                resume,
                log_history,
                config,
            } => cmd_train(
                &cli.common,
                env.as_deref(),
                algo.as_deref(),
                *steps,
                out.as_deref(),
                *resume,
                log_history.as_deref(),
                config.as_deref(),
            ),
            Command::Inspect { path, json } => cmd_inspect(path, *json),
            Command::Distill {
                data,
                mode,
                out,
                steps,
                config,
                resume,
            } => cmd_distill(
                &cli.common,
                data,
                *mode,
                out.as_deref(),
                *steps,
                config.as_deref(),
                *resume,
            ),
            Command::Reincarnate {
                teacher,
                arch,
                teacher_data,
                method,
                student,
                env,
                steps,
                out,
                baseline,
                config,
            } => cmd_reincarnate(
                &cli.common,
                ReincarnateArgs {
                    teacher,
                    arch: arch.as_deref(),
                    teacher_data: teacher_data.as_deref(),
                    method,
                    student,
                    env,
                    steps: *steps,
                    out: out.as_deref(),
                    baseline: *baseline,
                    config: config.as_deref(),
                },
            ),
            Command::Collect {
                env,
                algo,
                tasks,
                runs,
                steps,
                out,
                shard,
                threads,
                policy,
                epsilon,
            } => {
                let mut agent = toml::Table::new();
                let (mut agent_sets, mut env_sets) = (Vec::new(), Vec::new());
                for o in &cli.common.overrides {
                    if let Some(rest) = o.strip_prefix("agent.") {
                        agent_sets.push(rest.to_string());
                    } else if o.starts_with("env.") {
                        env_sets.push(o.clone());
                    } else {
                        bail!("--set {o}: collect takes agent.* and env.* overrides (e.g. --set agent.learning_rate=1e-3)");
                    }
                }
                reincarnate::config::apply_overrides(&mut agent, &agent_sets)?;
                let env_ref = if env_sets.is_empty() {
                    reincarnate::envs::EnvRef::Id(env.clone())
                } else {
                    reincarnate::envs::EnvRef::Config(env_config(env, &env_sets)?)
                };
                let spec = reincarnate::collect::CollectSpec {
                    env: env_ref,
                    algo: algo.clone(),
                    agent,
                    tasks: *tasks,
                    runs: *runs,
                    steps: *steps,
                    threads: *threads,
                    policy: match policy {
                        Some(p) => Some(local_folder(&p.to_string_lossy(), false)?),
                        None => None,
                    },
                    epsilon: *epsilon,
                };
                let device = reincarnate::device::parse_device(&cli.common.device)?;
                let s =
                    reincarnate::collect::collect(&spec, cli.common.seed, *shard, out, &device)?;
                println!(
                    "{}: {} runs collected now, {} finished earlier; the dataset holds {} runs",
                    out.display(),
                    s.runs_done_now,
                    s.runs_skipped,
                    s.runs_in_dataset
                );
                print!("{}", reincarnate::history::summarize(out)?);
                Ok(())
            }
            Command::Dataset { action } => match action {
                DatasetAction::Validate { path } => {
                    reincarnate::history::validate_or_error(path)?;
                    println!("{}: valid", path.display());
                    Ok(())
                }
                DatasetAction::Merge { shards, out } => {
                    let m = reincarnate::history::merge(shards, out)?;
                    println!(
                        "merged {} shards into {} ({} runs, {} transitions)",
                        shards.len(),
                        out.display(),
                        m.runs.len(),
                        m.total_rows()
                    );
                    Ok(())
                }
            },
            Command::Run { experiment: path } => match experiment.take() {
                Some(exp) => cmd_run(&cli.common, path, exp?),
                None => bail!("{}: the experiment was not loaded", path.display()),
            },
            Command::Bench {
                what,
                json,
                seconds,
                filter,
                layers,
                heads,
                d_model,
                context,
                batch,
                layout,
            } => cmd_bench(
                *what,
                *json,
                *seconds,
                filter.as_deref(),
                &cli.common.device,
                &reincarnate::ad::bench::AdBenchSizes {
                    layers: *layers,
                    heads: *heads,
                    d_model: *d_model,
                    context: *context,
                    batch: *batch,
                    layout: *layout,
                },
            ),
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
