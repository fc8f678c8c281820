//! `kill -9` at random moments of `train` (DQN and SAC), `collect` and `distill`: every killed
//! folder either resumes or is rerun, and ends with exactly the bytes of an uninterrupted run.
//! The moments are drawn from a fixed seed over each job's measured duration, 20 in all.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn exe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reincarnate"))
}

/// A small deterministic generator for the kill moments.
struct Lcg(u64);

impl Lcg {
    fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A job and how to continue it after a kill.
struct Job {
    name: &'static str,
    args: Vec<String>,
    /// The flag that continues an interrupted folder, when the folder holds what it needs.
    resume: fn(&Path) -> Option<&'static str>,
}

/// Asserts that a finished command exited 0, showing its stderr if not.
fn assert_succeeded(o: &std::process::Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `train` resumes from a checkpoint that holds its trainer state; before the first one there
/// is nothing to resume and the run starts again.
fn train_resume(out: &Path) -> Option<&'static str> {
    out.join("trainer_state.json")
        .exists()
        .then_some("--resume")
}

/// `distill --resume` continues a checkpoint or starts afresh without one.
fn distill_resume(_: &Path) -> Option<&'static str> {
    Some("--resume")
}

/// `collect` skips its finished runs and redoes the interrupted one without a flag; `run`
/// skips its finished stages and reruns the interrupted one.
fn collect_resume(_: &Path) -> Option<&'static str> {
    None
}

fn command(job: &Job, out: &Path, resume: bool) -> Command {
    let mut c = exe();
    c.args(&job.args);
    if job.args[0] == "run" {
        // An experiment writes under its `runs_dir` ("." here): the folder is the working one.
        std::fs::create_dir_all(out).unwrap();
        c.current_dir(out);
    } else {
        c.arg("--out").arg(out);
    }
    if resume {
        if let Some(flag) = (job.resume)(out) {
            c.arg(flag);
        }
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Runs `job` into `out` to its end; returns how long it took.
fn run_through(job: &Job, out: &Path) -> Duration {
    let start = Instant::now();
    let o = command(job, out, false).output().unwrap();
    assert!(
        o.status.success(),
        "{}: {}",
        job.name,
        String::from_utf8_lossy(&o.stderr)
    );
    start.elapsed()
}

/// Runs `job` into `out`, killing it with SIGKILL at `kills` moments drawn over `duration` (an
/// uninterrupted run's), continuing after each, until it finishes. The moments are points of
/// the uninterrupted timeline: after a kill at `t_i` the continued run is killed `t_{i+1} − t_i`
/// later, since it picks up about where the killed one stopped. Returns the kills that landed.
fn run_killed(job: &Job, out: &Path, kills: usize, duration: Duration, rng: &mut Lcg) -> usize {
    let mut points: Vec<f64> = (0..kills).map(|_| 0.05 + 0.9 * rng.unit()).collect();
    points.sort_by(f64::total_cmp);
    let gaps: Vec<Duration> = points
        .iter()
        .scan(0.0, |prev, &p| {
            let gap = (p - *prev).max(0.02);
            *prev = p;
            Some(duration.mul_f64(gap))
        })
        .collect();
    let mut landed = 0;
    for attempt in 0..kills + 20 {
        let mut child = command(job, out, attempt > 0).spawn().unwrap();
        if landed < kills {
            let at = gaps[landed];
            let start = Instant::now();
            while start.elapsed() < at {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL on Unix
                child.wait().unwrap();
                landed += 1;
                continue;
            }
        }
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        // Killed after its last checkpoint: the folder is complete and says so.
        if o.status.success() || err.contains("is already at step") {
            return landed;
        }
        panic!("{}: attempt {attempt} after a kill failed: {err}", job.name);
    }
    panic!("{}: did not finish", job.name);
}

/// Every file under `dir` (relative path → bytes), without the plots and logs that a rerun
/// writes with other timings.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push((
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.retain(|(p, _)| {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        !matches!(ext, "svg" | "jsonl")
    });
    out.sort();
    out
}

fn assert_same_files(a: &Path, b: &Path, what: &str) {
    let (fa, fb) = (files(a), files(b));
    let names = |f: &[(PathBuf, Vec<u8>)]| f.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&fa),
        names(&fb),
        "{what}: the folders hold other files"
    );
    for ((p, x), (_, y)) in fa.iter().zip(&fb) {
        assert!(
            x == y,
            "{what}: {} differs from the uninterrupted run",
            p.display()
        );
    }
    // A finished folder holds no temporary files or locks.
    for (p, _) in &fb {
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(
            !name.starts_with('.'),
            "{what}: {} left behind",
            p.display()
        );
    }
}

#[test]
fn runs_killed_at_twenty_random_moments_resume_to_the_uninterrupted_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // A small in-context dataset for distill, collected once, uninterrupted.
    let data = root.join("data");
    let collect_args = strings(&[
        "collect",
        "--env",
        "dark_room",
        "--algo",
        "ppo",
        "--runs",
        "6",
        "--steps",
        "1500",
        "--threads",
        "1",
    ]);
    let data_str = data.display().to_string();
    let jobs = [
        Job {
            name: "train dqn",
            args: strings(&[
                "train",
                "--env",
                "cartpole",
                "--algo",
                "dqn",
                "--steps",
                "4000",
                "--set",
                "loop.checkpoint_interval=500",
                "--set",
                "loop.eval_interval=1000",
            ]),
            resume: train_resume,
        },
        Job {
            name: "train sac",
            args: strings(&[
                "train",
                "--env",
                "pendulum",
                "--algo",
                "sac",
                "--steps",
                "1200",
                "--set",
                "loop.checkpoint_interval=200",
                "--set",
                "loop.eval_interval=600",
                "--set",
                "agent.learning_starts=200",
            ]),
            resume: train_resume,
        },
        Job {
            name: "collect",
            args: collect_args.clone(),
            resume: collect_resume,
        },
        Job {
            name: "distill",
            args: strings(&[
                "distill",
                "--data",
                &data_str,
                "--steps",
                "400",
                "--set",
                "checkpoint_interval=50",
                "--set",
                "batch=4",
                "--set",
                "warmup_steps=40",
                "--set",
                "model.n_layer=1",
                "--set",
                "model.d_model=16",
                "--set",
                "model.d_ff=16",
                "--set",
                "model.context=40",
            ]),
            resume: distill_resume,
        },
    ];
    let kills = [6, 5, 5, 4];
    let mut rng = Lcg(0x5EED_C0FF_EE00_0018);
    let mut landed_total = 0;
    for (job, &k) in jobs.iter().zip(&kills) {
        if job.name == "distill" {
            run_through(
                &Job {
                    name: "collect for distill",
                    args: collect_args.clone(),
                    resume: collect_resume,
                },
                &data,
            );
        }
        let straight = root.join(format!("{}-straight", job.name.replace(' ', "-")));
        let killed = root.join(format!("{}-killed", job.name.replace(' ', "-")));
        let duration = run_through(job, &straight);
        let landed = run_killed(job, &killed, k, duration, &mut rng);
        assert!(
            landed * 2 >= k,
            "{}: only {landed} of {k} kills landed before the job ended",
            job.name
        );
        eprintln!(
            "{}: {landed} of {k} kills landed ({duration:?} uninterrupted)",
            job.name
        );
        landed_total += landed;
        assert_same_files(&straight, &killed, job.name);
    }
    assert!(landed_total >= 15, "{landed_total} kills landed");
}

/// A second process on a folder that one is writing stops at once, naming the folder and the
/// holder; the lock goes with its holder, `kill -9` included.
#[test]
fn a_second_writer_of_a_run_folder_is_refused_while_the_first_lives() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let args = [
        "train", "--env", "cartpole", "--algo", "dqn", "--steps", "10000000", "--out",
    ];
    let mut first = exe()
        .args(args)
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = tmp.path().join(".run.lock");
    let start = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|s| s.starts_with("pid"))
        && start.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = exe().args(args).arg(&out).output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is writing to this folder") && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // The killed holder's lock is gone with it: a short run now takes the folder.
    let third = exe()
        .args([
            "train", "--env", "cartpole", "--algo", "dqn", "--steps", "300", "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_succeeded(&third);
    assert!(!lock.exists());
}

/// Three `collect` processes fill one dataset folder at once (shards 0/2 and 1/2, and shard
/// 0/2 again, as a rescheduled job would): the manifest lists every run exactly once.
#[test]
fn concurrent_shard_writers_end_with_every_run_listed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("data");
    let spawn = |shard: &str| {
        exe()
            .args([
                "collect",
                "--env",
                "dark_room",
                "--algo",
                "ppo",
                "--runs",
                "12",
                "--steps",
                "1000",
                "--threads",
                "1",
                "--shard",
                shard,
                "--out",
            ])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children = [spawn("0/2"), spawn("1/2"), spawn("0/2")];
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert_succeeded(&o);
    }
    reincarnate::history::validate_or_error(&out).unwrap();
    let m = reincarnate::history::Manifest::load(&out).unwrap();
    let mut files: Vec<&str> = m.runs.iter().map(|r| r.file.as_str()).collect();
    let listed = files.len();
    files.sort();
    files.dedup();
    assert_eq!((listed, files.len()), (12, 12), "{files:?}");
    let leftovers: Vec<String> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn trainer_step(dir: &Path) -> u64 {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("trainer_state.json")).unwrap()).unwrap();
    v["loop"]["step"].as_u64().unwrap()
}

/// Writing past a file-size limit (`ulimit -f`, as a full disk would) stops the run with a
/// message naming the file; the last good checkpoint is left whole and resumes.
#[test]
fn a_write_that_fails_stops_the_run_and_keeps_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let bin = env!("CARGO_BIN_EXE_reincarnate");
    let args = "--env cartpole --algo dqn --set agent.buffer_size=20000 \
                --set loop.checkpoint_interval=500 --set loop.eval_interval=0";
    let first = exe()
        .args(format!("train --steps 1000 {args}").split(' '))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_succeeded(&first);
    assert_eq!(trainer_step(&out), 1000);
    // The replay file of the next checkpoint (about 1 MB) is past a 100 KB limit.
    let limited = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 100; exec {bin} train --steps 2000 {args} --resume --out {}",
            out.display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&limited.stderr);
    assert_eq!(limited.status.code(), Some(1), "{err}");
    assert!(
        err.contains(".safetensors") && err.contains("too large"),
        "{err}"
    );
    // The step-1000 checkpoint is whole, nothing half-written is left beside it, and it resumes.
    assert_eq!(trainer_step(&out), 1000);
    let leftovers: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "run")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let resumed = exe()
        .args(format!("train --steps 2000 {args} --resume").split(' '))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_succeeded(&resumed);
    assert_eq!(trainer_step(&out), 2000);
}

/// A loss that turns NaN stops the run at that step, naming it and the last finite checkpoint,
/// which resumes with a lower learning rate; `loop.skip_nonfinite = N` skips up to N such
/// updates in a row before stopping.
#[test]
fn a_nonfinite_loss_stops_at_its_step_and_keeps_the_last_finite_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let run = |extra: &str, dir: &Path| {
        exe()
            .args(
                format!(
                    "train --env cartpole --algo dqn --steps 3000 --set loop.checkpoint_interval=50 \
                     --set loop.eval_interval=0 {extra}"
                )
                .split_whitespace(),
            )
            .arg("--out")
            .arg(dir)
            .output()
            .unwrap()
    };
    let o = run("--set agent.learning_rate=1e15", &out);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{err}");
    let at: u64 = err
        .split(" at step ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no step in: {err}"));
    let kept = trainer_step(&out);
    assert!(
        err.contains("became NaN") || err.contains("became inf"),
        "{err}"
    );
    assert!(
        kept < at && err.contains(&format!("(step {kept})")),
        "{err}"
    );
    let resumed = run("--set agent.learning_rate=1e-4 --resume", &out);
    assert_succeeded(&resumed);
    assert_eq!(trainer_step(&out), 3000);
    // Skipping: the same divergence, five bad updates skipped in a row, then a stop.
    let skip = tmp.path().join("skip");
    let o = run(
        "--set agent.learning_rate=1e15 --set loop.skip_nonfinite=5",
        &skip,
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("at step {}", at + 5)), "{err}");
    let skipped = std::fs::read_to_string(skip.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"skipped\""))
        .count();
    assert_eq!(skipped, 5);
}

/// `run` killed at five moments of a small experiment (training over two seeds, a collection, a
/// distillation) and rerun each time ends with the weights and data of an uninterrupted run.
#[test]
fn an_experiment_killed_at_random_moments_reruns_to_the_same_files() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("exp.toml");
    std::fs::write(
        &exp,
        r#"name = "crash"
runs_dir = "."
seed = 0

[[stage]]
name = "dqn"
kind = "train"
env = "cartpole"
algo = "dqn"
seeds = [0, 1]
[stage.loop]
steps = 2000
eval_interval = 0
checkpoint_interval = 500
progress = false

[[stage]]
name = "histories"
kind = "collect"
env = "dark_room"
algo = "ppo"
runs = 4
steps = 800

[[stage]]
name = "ad"
kind = "distill"
data = "histories"
[stage.config]
steps = 200
batch = 4
warmup_steps = 20
checkpoint_interval = 50
model = { n_layer = 1, d_model = 16, d_ff = 16, context = 40 }
"#,
    )
    .unwrap();
    let job = Job {
        name: "run",
        args: vec!["run".into(), exp.display().to_string()],
        resume: collect_resume,
    };
    let (straight, killed) = (tmp.path().join("straight"), tmp.path().join("killed"));
    let duration = run_through(&job, &straight);
    let mut rng = Lcg(0x5EED_0000_0000_0024);
    let landed = run_killed(&job, &killed, 5, duration, &mut rng);
    eprintln!("run: {landed} of 5 kills landed ({duration:?} uninterrupted)");
    assert!(landed >= 3, "only {landed} of 5 kills landed");
    // Weights and data: everything but the per-run reports (timings, plots).
    let weights = |root: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        files(&root.join("crash"))
            .into_iter()
            .filter(|(p, _)| {
                let e = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                matches!(e, "safetensors" | "parquet")
            })
            .collect()
    };
    let (a, b) = (weights(&straight), weights(&killed));
    assert!(a.len() >= 10, "{} files", a.len());
    assert_eq!(
        a.iter().map(|x| &x.0).collect::<Vec<_>>(),
        b.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    for ((p, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{} differs from the uninterrupted run", p.display());
    }
}

/// The narrowest kill window of a collection: a run's data is final but its checkpoint folder
/// is not removed yet. Both a rerun `collect` and a rerun experiment clean it up and keep the data.
#[test]
fn a_checkpoint_left_beside_a_finished_run_is_removed_by_the_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("exp.toml");
    std::fs::write(
        &exp,
        "name = \"left\"\nruns_dir = \".\"\n\n[[stage]]\nname = \"histories\"\nkind = \"collect\"\n\
         env = \"dark_room\"\nalgo = \"ppo\"\nruns = 2\nsteps = 200\n",
    )
    .unwrap();
    let run = || {
        let o = exe()
            .arg("run")
            .arg(&exp)
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert_succeeded(&o);
    };
    run();
    let data = tmp.path().join("left/histories");
    let before = files(&data);
    let scratch = data.join("runs/.checkpoint-00001");
    let plant = || {
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::write(scratch.join("model.safetensors"), b"left by a kill").unwrap();
    };
    plant();
    run();
    assert!(
        !scratch.exists(),
        "the experiment's rerun left {}",
        scratch.display()
    );
    plant();
    let o = exe()
        .args([
            "collect",
            "--env",
            "dark_room",
            "--algo",
            "ppo",
            "--runs",
            "2",
            "--steps",
            "200",
        ])
        .arg("--out")
        .arg(&data)
        .output()
        .unwrap();
    assert_succeeded(&o);
    assert!(
        !scratch.exists(),
        "collect's rerun left {}",
        scratch.display()
    );
    let parquet = |f: Vec<(PathBuf, Vec<u8>)>| -> Vec<(PathBuf, Vec<u8>)> {
        f.into_iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "parquet"))
            .collect()
    };
    let (a, b) = (parquet(before), parquet(files(&data)));
    assert_eq!(a.len(), 2);
    assert!(a == b, "the rerun changed the finished runs' data");
}
