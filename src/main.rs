//! The `reincarnate` command line: parses flags, then calls one library function per subcommand.
//! Exit code 0 on success, 1 on a user error (message on stderr).

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use reincarnate::bench::Suite;
use reincarnate::config::load_layered;
use reincarnate::device::CpuParallelism;
use reincarnate::envs::TaskSet;
use reincarnate::experiment::{load_experiment, run_experiment, Experiment, PolicyEval};
use reincarnate::hub::local_folder;
use std::path::PathBuf;
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
        /// `random`, a checkpoint folder, `hf://ORG/NAME`, a Stable-Baselines3 `.zip`, a
        /// CleanRL `.cleanrl_model`, or a `.safetensors`/`.pt`/`.pth` state dict (an MLP's
        /// sizes are read from its shapes; other networks need --arch); evaluated greedily.
        #[arg(long, default_value = "random")]
        policy: String,
        /// Network held by a state-dict --policy: mlp:120,84 or minatar-conv:16,128 (optional for an MLP).
        #[arg(long)]
        arch: Option<String>,
        /// Episodes per task.
        #[arg(long, default_value_t = 10)]
        episodes: usize,
        #[arg(long, value_enum, default_value_t = TaskSet::Test)]
        tasks: TaskSet,
        /// Evaluate with seeds S, S+1, …, S+N−1 (S = --seed) and report them pooled, each
        /// seed's curve in the JSON (`seeds`, `returns_by_seed`).
        #[arg(long, default_value_t = 1)]
        seeds: usize,
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
        /// Algorithm: dqn, c51, ppo, sac, simbav2, ucb, thompson, tabular_q.
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
        /// Source algorithm: ppo, tabular_q (gridworlds), ucb / thompson (bandits), dqn, c51
        /// (ignored with --policy).
        #[arg(long, default_value = "ppo")]
        algo: String,
        #[arg(long, value_enum, default_value_t = TaskSet::Train)]
        tasks: TaskSet,
        /// Number of runs (learning histories): run r uses task r mod (number of tasks); fewer
        /// runs than tasks are spread evenly over the task list.
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
        /// Checkpoint folder, Stable-Baselines3 .zip, CleanRL .cleanrl_model, .safetensors/.pt/.pth
        /// state dict (an MLP without --arch), hf://ORG/NAME, hf://sb3/NAME or hf://cleanrl/NAME;
        /// or an AD/ED model folder (runs/NAME/ad), rolled out in context on --task.
        #[arg(long)]
        teacher: String,
        /// Network held by a state-dict teacher: mlp:120,84 or minatar-conv:16,128 (optional for an MLP).
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
        /// Task of a task family (loop.task), e.g. a held-out Dark Room goal.
        #[arg(long)]
        task: Option<usize>,
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
        /// Held-out histories (a dataset folder or hf://datasets/ORG/NAME): loss and accuracy on
        /// their windows logged as `val` in metrics.jsonl (`validation`).
        #[arg(long)]
        validation: Option<String>,
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
    Run {
        experiment: PathBuf,
        /// Run one slice of every stage's grid (train seeds, methods × seeds, collection runs):
        /// `i/n`, `auto` (Slurm's SLURM_ARRAY_TASK_ID/COUNT) or `auto/n` (the index from
        /// SLURM_ARRAY_TASK_ID or a Kubernetes indexed Job's JOB_COMPLETION_INDEX). Stages wait
        /// for the stages they read; `reincarnate report` merges the slices.
        #[arg(long, value_name = "i/n|auto|auto/n")]
        shard: Option<reincarnate::experiment::ShardArg>,
        /// With --shard: only this stage's units.
        #[arg(long, requires = "shard")]
        stage: Option<String>,
    },
    /// Merge the slices of a sharded run into the summary, tables and plots of a one-process run.
    Report { experiment: PathBuf },
    /// Write (or submit) Slurm job arrays for an experiment: one array per stage, each after the
    /// stages it reads, then the report (runs/NAME/slurm/).
    Slurm {
        experiment: PathBuf,
        /// Slices each stage's grid is split into (the largest array's size).
        #[arg(long, default_value_t = 4)]
        slices: usize,
        #[arg(long, default_value_t = 1)]
        cpus_per_task: usize,
        #[arg(long)]
        partition: Option<String>,
        /// Time limit of each task, e.g. 02:00:00.
        #[arg(long)]
        time: Option<String>,
        /// Submit with sbatch instead of printing the submit script.
        #[arg(long)]
        submit: bool,
    },
    /// Performance figures.
    Bench {
        #[arg(value_enum)]
        what: Suite,
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
        /// bench ad: context length in transitions; a comma-separated list measures each
        /// (e.g. 256,1024,4096).
        #[arg(long, value_delimiter = ',', default_value = "256")]
        context: Vec<usize>,
        /// bench ad: training batch (windows): one for every context, or one per context.
        #[arg(long, value_delimiter = ',', default_value = "32")]
        batch: Vec<usize>,
        /// bench ad: environments decoded together in the frozen-evaluation figures.
        #[arg(long = "eval-envs", default_value_t = 64)]
        eval_envs: usize,
        /// bench ad: token layout (one token per transition, or s, a, r tokens).
        #[arg(long, value_enum, default_value_t = reincarnate::ad::TokenLayout::Transition)]
        layout: reincarnate::ad::TokenLayout,
    },
}

#[derive(Subcommand)]
enum DatasetAction {
    /// Check schema, sort order and manifest consistency; lists every problem. PATH may be
    /// hf://datasets/ORG/NAME or s3://BUCKET/PREFIX.
    Validate { path: PathBuf },
    /// Combine shard datasets (made with --shard i/n) into one, renumbering runs.
    Merge {
        shards: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Convert a Minari dataset folder or a D4RL HDF5 file into a transition dataset.
    Import {
        /// `minari` or `d4rl`.
        format: String,
        /// The Minari dataset folder (e.g. ~/.minari/datasets/NS/NAME-v0) or the D4RL file;
        /// or on the Hub: hf://datasets/ORG/NS/NAME-v0 (Minari), hf://datasets/ORG/NAME/FILE.hdf5.
        src: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Target environment (default for Minari: the native env of its recorded env_spec).
        #[arg(long)]
        env: Option<String>,
    },
}

impl From<CpuSplit> for CpuParallelism {
    fn from(s: CpuSplit) -> Self {
        match s {
            CpuSplit::Ops => CpuParallelism::WithinOps,
            CpuSplit::Passes => CpuParallelism::AcrossOps,
        }
    }
}

impl Command {
    /// The `--cpu-split` default: online RL (train, reincarnate, collect, the env and update
    /// benchmarks) trains small networks; an experiment says for itself; the rest split ops.
    fn cpu_parallelism(&self, experiment: Option<&Experiment>) -> CpuParallelism {
        match self {
            Command::Train { .. } | Command::Reincarnate { .. } | Command::Collect { .. } => {
                CpuParallelism::AcrossOps
            }
            Command::Bench { what, .. } => what.cpu_parallelism(),
            Command::Run { .. } => {
                experiment.map_or(CpuParallelism::WithinOps, Experiment::cpu_parallelism)
            }
            _ => CpuParallelism::WithinOps,
        }
    }
}

/// Publishes a collection written into an object store's mirror.
#[cfg(feature = "s3")]
fn publish_collection(
    local: &std::path::Path,
    url: &reincarnate::storage::ObjectUrl,
) -> Result<String> {
    let n =
        reincarnate::storage::publish_dataset(local, url, &reincarnate::collect::rebuild_manifest)?;
    let st = reincarnate::storage::stats();
    Ok(format!(
        "published {n} runs to {url} ({:.2} MiB written); its manifest lists every run in the store",
        st.written as f64 / (1 << 20) as f64
    ))
}

#[cfg(not(feature = "s3"))]
fn publish_collection(
    _local: &std::path::Path,
    url: &reincarnate::storage::ObjectUrl,
) -> Result<String> {
    Err(reincarnate::storage::not_built(&url.to_string()).into())
}

/// Where a job writes `out`: itself, or for `s3://BUCKET/PREFIX` the prefix's local mirror (with
/// what the store holds already, so that `--resume` finds it), published when the job is done.
fn output_folder(
    out: &std::path::Path,
) -> Result<(Option<reincarnate::storage::ObjectUrl>, PathBuf)> {
    Ok(
        match reincarnate::storage::folder_for_writing(&out.to_string_lossy())? {
            Some((url, local)) => (Some(url), local),
            None => (None, out.to_path_buf()),
        },
    )
}

/// Uploads a finished job's folder to its `s3://` destination.
#[cfg(feature = "s3")]
fn publish_output(
    local: &std::path::Path,
    url: &reincarnate::storage::ObjectUrl,
) -> Result<String> {
    let n = reincarnate::storage::publish_folder(local, url)?;
    Ok(format!(
        "published {n} files to {url} ({:.2} MiB)",
        reincarnate::storage::stats().written as f64 / (1 << 20) as f64
    ))
}

#[cfg(not(feature = "s3"))]
fn publish_output(
    _local: &std::path::Path,
    url: &reincarnate::storage::ObjectUrl,
) -> Result<String> {
    Err(reincarnate::storage::not_built(&url.to_string()).into())
}

/// How many of a remote dataset's bytes this process read, and from where.
#[cfg(feature = "s3")]
fn object_reads(data: &str, mirror: &std::path::Path) -> Result<String> {
    let st = reincarnate::storage::stats();
    let (total, _) = reincarnate::storage::remote_bytes(mirror)?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    Ok(format!(
        "read {:.2} MiB of {data}'s {:.2} MiB of Parquet data by byte ranges ({} requests), {:.2} MiB from the local range cache",
        mib(st.fetched),
        mib(total),
        st.requests,
        mib(st.cached)
    ))
}

#[cfg(not(feature = "s3"))]
fn object_reads(data: &str, _mirror: &std::path::Path) -> Result<String> {
    Err(reincarnate::storage::not_built(data).into())
}

fn string(v: impl ToString) -> toml::Value {
    toml::Value::String(v.to_string())
}

fn run(cli: &Cli, experiment: Option<Result<Experiment>>) -> Result<()> {
    let c = &cli.common;
    let device = reincarnate::device::parse_device(&c.device).context("--device")?;
    match &cli.command {
        Command::Envs { json } => {
            print!("{}", reincarnate::envs::registry::describe_registry(*json)?)
        }
        Command::Eval {
            env,
            policy,
            arch,
            episodes,
            tasks,
            seeds,
            temperature,
            keep,
            json,
        } => {
            let r = reincarnate::experiment::eval_policy(
                &PolicyEval {
                    policy,
                    arch: arch.as_deref(),
                    env: env.as_deref(),
                    overrides: &c.overrides,
                    tasks: *tasks,
                    episodes: *episodes,
                    seed: c.seed,
                    seeds: *seeds,
                    temperature: *temperature,
                    keep: *keep,
                },
                &device,
            )?;
            if *json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{r}");
            }
        }
        Command::Train {
            env,
            algo,
            steps,
            out,
            resume,
            log_history,
            config,
        } => {
            let mut flags = Vec::new();
            flags.extend(env.as_ref().map(|e| ("env", string(e))));
            flags.extend(algo.as_ref().map(|a| ("algo", string(a))));
            let mut sets = c.overrides.clone();
            sets.extend(steps.map(|s| format!("loop.steps={s}")));
            sets.extend(
                log_history
                    .as_ref()
                    .map(|h| format!("loop.log_history={}", string(h.display()))),
            );
            let spec: reincarnate::train::TrainSpec =
                load_layered("train", config.as_deref(), &flags, &sets, &["env", "algo"])?;
            let out = out.clone().unwrap_or_else(|| spec.default_out(c.seed));
            let (target, out) = output_folder(&out)?;
            let summary = reincarnate::train::run_train(&spec, c.seed, &device, &out, *resume)?;
            if let Some(line) = summary.final_eval_line(&spec.algo) {
                println!("{line}");
            }
            println!(
                "wrote {} (model.safetensors, metrics.jsonl, learning_curve.svg)",
                out.display()
            );
            if let Some(url) = target {
                println!("{}", publish_output(&out, &url)?);
            }
        }
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
            let spec = reincarnate::collect::CollectSpec::from_flags(
                env,
                algo,
                *tasks,
                *runs,
                *steps,
                *threads,
                policy.clone(),
                *epsilon,
                &c.overrides,
            )?;
            let target = reincarnate::storage::folder_for_writing(&out.to_string_lossy())?;
            let local = target.as_ref().map_or(out.clone(), |t| t.1.clone());
            let s = reincarnate::collect::collect(&spec, c.seed, *shard, &local, &device)?;
            println!("{s}");
            if let Some((url, _)) = &target {
                println!("{}", publish_collection(&local, url)?);
            }
            print!("{}", reincarnate::history::summarize(&local)?);
        }
        Command::Reincarnate {
            teacher,
            arch,
            teacher_data,
            method,
            student,
            env,
            steps,
            task,
            out,
            baseline,
            config,
        } => {
            let method: reincarnate::reincarnation::Method = method.parse()?;
            let mut flags = vec![
                ("env", string(env)),
                ("teacher", string(teacher)),
                ("method", string(method.name())),
                ("student", string(student)),
            ];
            flags.extend(arch.as_ref().map(|a| ("arch", string(a))));
            if let Some(d) = teacher_data {
                // A dataset folder or hf://datasets/ORG/NAME (resolved through the Hub cache).
                let d = local_folder(&d.to_string_lossy(), true)?;
                flags.push(("teacher_data", string(d.display())));
            }
            let mut sets = c.overrides.clone();
            sets.extend(steps.map(|n| format!("loop.steps={n}")));
            sets.extend(task.map(|k| format!("loop.task={k}")));
            let spec: reincarnate::reincarnation::ReincarnateSpec =
                load_layered("reincarnate", config.as_deref(), &flags, &sets, &[])?;
            let out = out.clone().unwrap_or_else(|| {
                reincarnate::reincarnation::stage::default_out(env, method, c.seed)
            });
            print!(
                "{}",
                reincarnate::reincarnation::stage::run_with_baseline(
                    &spec, c.seed, &device, &out, *baseline
                )?
            );
        }
        Command::Distill {
            data,
            mode,
            out,
            steps,
            config,
            resume,
            validation,
        } => {
            let mut sets = c.overrides.clone();
            sets.extend(mode.map(|m| format!("mode=\"{}\"", m.as_str())));
            sets.extend(steps.map(|s| format!("steps={s}")));
            let mut cfg: reincarnate::ad::DistillConfig =
                load_layered("distill", config.as_deref(), &[], &sets, &[])?;
            if let Some(v) = validation {
                cfg.validation = Some(local_folder(v, true)?);
            }
            let folder = local_folder(data, true)?;
            let out = out
                .clone()
                .unwrap_or_else(|| reincarnate::ad::train::default_out(&folder, cfg.mode, c.seed));
            let (target, out) = output_folder(&out)?;
            // A data-parallel rank (torchrun's or srun's variables) runs on its own GPU.
            let world = reincarnate::distributed::World::from_env(&|k| std::env::var(k).ok())?;
            let device = match &device {
                candle_core::Device::Cuda(_) if world.size > 1 => {
                    candle_core::Device::new_cuda(world.local_rank).with_context(|| {
                        format!("LOCAL_RANK={}: cuda:{}", world.local_rank, world.local_rank)
                    })?
                }
                d => d.clone(),
            };
            let (rank, size) = (world.rank, world.size);
            let comm = reincarnate::distributed::connect(world, &device)?;
            let s = reincarnate::ad::train::distill_over(
                &cfg,
                &folder,
                &out,
                c.seed,
                &device,
                *resume,
                comm.as_ref(),
            )?;
            if rank > 0 {
                println!(
                    "rank {rank} of {size}: {} steps done; rank 0 writes {}",
                    s.steps,
                    out.display()
                );
                return Ok(());
            }
            println!("{}", s.line(&folder));
            // A dataset from object storage, or one streamed from the Hub (pointer files).
            let streamed = reincarnate::hub::is_hub_url(data)
                && cfg!(feature = "s3")
                && reincarnate::storage::remote_bytes(&folder)?.1 > 0;
            if reincarnate::storage::is_object_url(data) || streamed {
                println!("{}", object_reads(data, &folder)?);
            }
            println!(
                "wrote {} (model.safetensors, config.json, metrics.jsonl)",
                out.display()
            );
            if let Some(url) = target {
                println!("{}", publish_output(&out, &url)?);
            }
        }
        Command::Inspect { path, json } => {
            print!("{}", reincarnate::inspect::inspect(path, *json)?)
        }
        Command::Dataset {
            action: DatasetAction::Validate { path },
        } => {
            // hf:// and s3:// datasets are checked through their mirror (data read by ranges).
            let folder = local_folder(&path.to_string_lossy(), true)?;
            reincarnate::history::validate_or_error(&folder)?;
            println!("{}: valid", path.display());
        }
        Command::Dataset {
            action: DatasetAction::Merge { shards, out },
        } => {
            let m = reincarnate::history::merge(shards, out)?;
            println!(
                "merged {} shards into {} ({} runs, {} transitions)",
                shards.len(),
                out.display(),
                m.runs.len(),
                m.total_rows()
            );
        }
        Command::Dataset {
            action:
                DatasetAction::Import {
                    format,
                    src,
                    out,
                    env,
                },
        } => {
            let format = reincarnate::formats::DatasetFormat::parse(format)?;
            let src = reincarnate::formats::resolve_dataset_source(format, &src.to_string_lossy())?;
            let (m, report) =
                reincarnate::formats::import_dataset(format, &src, out, env.as_deref())?;
            print!("{report}");
            println!(
                "wrote {} (env `{}`, {} transitions)",
                out.display(),
                m.env.id(),
                m.total_rows()
            );
        }
        Command::Run {
            experiment: path,
            shard,
            stage,
        } => {
            let exp = experiment
                .with_context(|| format!("{}: the experiment was not loaded", path.display()))??;
            let name = reincarnate::experiment::default_name(path);
            if let Some(shard) = shard {
                let shard = shard.resolve(&|k| std::env::var(k).ok())?;
                let done = reincarnate::experiment::run_slice(
                    &exp,
                    &name,
                    shard,
                    stage.as_deref(),
                    &device,
                )?;
                print!("{done}");
                return Ok(());
            }
            let (root, outcomes) = run_experiment(&exp, &name, &device)?;
            // The summary's path first, so that the last lines are the last stage's result.
            println!("wrote {}", root.join("summary.json").display());
            for o in &outcomes {
                print!("{o}");
            }
        }
        Command::Report { experiment: path } => {
            let exp = experiment
                .with_context(|| format!("{}: the experiment was not loaded", path.display()))??;
            let name = reincarnate::experiment::default_name(path);
            let (root, outcomes) = reincarnate::experiment::report_experiment(&exp, &name)?;
            println!("wrote {}", root.join("summary.json").display());
            for o in &outcomes {
                print!("{o}");
            }
        }
        Command::Slurm {
            experiment: path,
            slices,
            cpus_per_task,
            partition,
            time,
            submit,
        } => {
            let exp = experiment
                .with_context(|| format!("{}: the experiment was not loaded", path.display()))??;
            let name = reincarnate::experiment::default_name(path);
            let options = reincarnate::experiment::slurm::SlurmOptions {
                slices: *slices,
                cpus_per_task: *cpus_per_task,
                partition: partition.clone(),
                time: time.clone(),
                binary: std::env::current_exe().context("locating this binary")?,
                experiment_file: path.clone(),
                overrides: c.overrides.clone(),
                workdir: std::env::current_dir().context("the working directory")?,
            };
            let plan = reincarnate::experiment::slurm::plan(&exp, &name, &options)?;
            let script = plan.write()?;
            if *submit {
                let status = std::process::Command::new("bash")
                    .arg(&script)
                    .status()
                    .with_context(|| format!("running {}", script.display()))?;
                if !status.success() {
                    anyhow::bail!(
                        "{} failed ({status}): is sbatch on PATH and a cluster reachable?",
                        script.display()
                    );
                }
            } else {
                print!("{}", plan.submit);
                eprintln!(
                    "wrote {} and the job files beside it; run it to submit",
                    script.display()
                );
            }
        }
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
            eval_envs,
            layout,
        } => {
            if batch.len() != 1 && batch.len() != context.len() {
                anyhow::bail!(
                    "--batch: give one batch, or one per --context ({} contexts, {} batches)",
                    context.len(),
                    batch.len()
                );
            }
            let sizes: Vec<_> = context
                .iter()
                .enumerate()
                .map(|(i, &context)| reincarnate::ad::bench::AdBenchSizes {
                    layers: *layers,
                    heads: *heads,
                    d_model: *d_model,
                    context,
                    batch: batch[i.min(batch.len() - 1)],
                    eval_envs: *eval_envs,
                    layout: *layout,
                })
                .collect();
            let figures = reincarnate::bench::run_suite(
                *what,
                Duration::from_secs_f64(*seconds),
                filter.as_deref(),
                &device,
                &sizes,
            )?;
            print!("{}", reincarnate::bench::render(&figures, *json)?);
        }
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
    reincarnate::fs::report_write_limits_as_errors();
    // An experiment file is read once, here: its stages decide how the cores are used.
    let experiment = match &cli.command {
        Command::Run { experiment, .. }
        | Command::Report { experiment }
        | Command::Slurm { experiment, .. } => {
            Some(load_experiment(experiment, &cli.common.overrides).map_err(anyhow::Error::from))
        }
        _ => None,
    };
    let parallelism = match cli.common.cpu_split {
        Some(split) => split.into(),
        None => cli
            .command
            .cpu_parallelism(experiment.as_ref().and_then(|e| e.as_ref().ok())),
    };
    reincarnate::device::configure_cpu(None, parallelism);
    if let Err(e) = reincarnate::device::run_on_pool(|| run(&cli, experiment)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
