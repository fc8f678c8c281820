//! Sharded experiments: `run --shard i/n` slices merged by `report` equal the one-process run,
//! and the same experiment submitted to a real Slurm cluster (`scripts/slurm-local.sh start`,
//! which the test command runs first) as job arrays, with one array task cancelled and
//! resubmitted. Outside CI a missing cluster skips the Slurm test with the reason; in CI it fails.

mod common;

use common::ok;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_reincarnate");

/// `experiments/cartpole-qdagger.toml` at test size: the teacher's tuned 24k-step DQN (greedy
/// return 500), three methods × two seeds of 1,000 student steps.
const SETS: &[&str] = &[
    "stage.0.agent.learning_rate=2.3e-3",
    "stage.0.agent.buffer_size=30000",
    "stage.0.agent.batch_size=64",
    "stage.0.agent.learning_starts=1000",
    "stage.0.agent.train_frequency=64",
    "stage.0.agent.gradient_steps=32",
    "stage.0.agent.target_update_frequency=10",
    "stage.0.agent.epsilon.start=1.0",
    "stage.0.agent.epsilon.end=0.04",
    "stage.0.agent.epsilon.decay_steps=8000",
    "stage.0.loop.steps=24000",
    "stage.0.loop.eval_interval=0",
    "stage.0.loop.progress=false",
    "stage.1.methods=[\"qdagger\", \"tabula_rasa\", \"kickstart\"]",
    "stage.1.seeds=[0, 1]",
    "stage.1.agent.learning_starts=500",
    "stage.1.agent.gradient_steps=8",
    "stage.1.loop.steps=1000",
    "stage.1.loop.eval_interval=500",
    "stage.1.loop.eval_episodes=3",
    "stage.1.loop.progress=false",
    "stage.1.method_config.offline_updates=1000",
    "stage.1.method_config.teacher_data_steps=2000",
    "stage.1.method_config.score_episodes=3",
];

fn experiment() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/cartpole-qdagger.toml")
}

/// `reincarnate ARGS EXPERIMENT --set ... --set runs_dir=RUNS` in `cwd`.
fn reincarnate(cwd: &Path, args: &[&str], runs: &Path) -> Output {
    let mut c = Command::new(BIN);
    c.current_dir(cwd).args(args).arg(experiment());
    for s in SETS {
        c.args(["--set", s]);
    }
    c.arg("--set")
        .arg(format!("runs_dir=\"{}\"", runs.display()));
    c.output().unwrap()
}

/// The summary with wall-clock figures removed and the runs folder written as ROOT.
fn summary(runs: &Path) -> Value {
    fn norm(v: &Value, root: &str) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| k.as_str() != "steps_per_second")
                    .map(|(k, v)| (k.clone(), norm(v, root)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|v| norm(v, root)).collect()),
            Value::String(s) => Value::String(s.replace(root, "ROOT")),
            other => other.clone(),
        }
    }
    let file = runs.join("cartpole-qdagger/summary.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    norm(&v, &runs.display().to_string())
}

/// The one-process run of the test experiment, once per test binary.
fn one_process() -> &'static (tempfile::TempDir, Value) {
    static ONE: std::sync::OnceLock<(tempfile::TempDir, Value)> = std::sync::OnceLock::new();
    ONE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        ok(&reincarnate(dir.path(), &["run"], &runs), "one-process run");
        let s = summary(&runs);
        // The figures being compared are real: a teacher at 500, students beside it.
        assert_eq!(s["teacher"]["final_return_mean"], 500.0, "{s}");
        assert_eq!(
            s["cartpole"]["methods"].as_object().unwrap().len(),
            3,
            "{s}"
        );
        (dir, s)
    })
}

#[test]
fn slices_merged_by_report_equal_the_one_process_run() {
    let (_, one) = one_process();
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    // Slices 1–3 start first and wait for the teacher that slice 0 trains.
    let mut slices: Vec<_> = [1, 2, 3]
        .iter()
        .map(|i| {
            let mut c = Command::new(BIN);
            c.current_dir(dir.path())
                .args(["run"])
                .arg(experiment())
                .args(["--shard", &format!("{i}/4")]);
            for s in SETS {
                c.args(["--set", s]);
            }
            c.arg("--set")
                .arg(format!("runs_dir=\"{}\"", runs.display()));
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // A report before any slice finished names what is missing and writes no summary.
    let start = Instant::now();
    while !runs.join("cartpole-qdagger").exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let early = reincarnate(dir.path(), &["report"], &runs);
    assert_eq!(early.status.code(), Some(1));
    let err = String::from_utf8_lossy(&early.stderr);
    assert!(
        err.contains("stage `teacher`: 1 of 1 units not done: seed 0")
            && err.contains("of 6 units not done"),
        "{err}"
    );
    assert!(!runs.join("cartpole-qdagger/summary.json").exists());
    let first = ok(
        &reincarnate(dir.path(), &["run", "--shard", "0/4"], &runs),
        "slice 0",
    );
    assert!(
        first.contains("slice 0/4: stage teacher: ran seed 0"),
        "{first}"
    );
    for (i, s) in slices.drain(..).enumerate() {
        let o = s.wait_with_output().unwrap();
        let out = ok(&o, &format!("slice {}", i + 1));
        assert!(out.contains("stage cartpole: ran"), "{out}");
        assert!(!out.contains("stage teacher"), "{out}");
    }
    // Re-running a finished slice does nothing again.
    let again = ok(
        &reincarnate(dir.path(), &["run", "--shard", "2/4"], &runs),
        "slice 2 again",
    );
    // Slice 2 holds units k with (k + 1) mod 4 = 2 of the second stage: k = 1 and 5.
    assert!(
        again.contains("qdagger seed 1 finished earlier, skipped")
            && again.contains("kickstart seed 1 finished earlier, skipped")
            && !again.contains("ran"),
        "{again}"
    );
    ok(&reincarnate(dir.path(), &["report"], &runs), "report");
    assert_eq!(
        &summary(&runs),
        one,
        "merged slices differ from the one-process run"
    );
    assert!(runs.join("cartpole-qdagger/summary/table.md").exists());
    assert!(runs
        .join("cartpole-qdagger/cartpole/reincarnation.svg")
        .exists());
}

/// A Slurm client configured for the local cluster, or the reason there is none.
fn slurm() -> Result<Vec<(String, String)>, String> {
    let conf = std::env::var("SLURM_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".slurm/slurm.conf"));
    if !conf.exists() {
        return Err(format!(
            "no Slurm configuration at {} (run scripts/slurm-local.sh start)",
            conf.display()
        ));
    }
    let env = vec![("SLURM_CONF".to_string(), conf.display().to_string())];
    let sinfo = Command::new("sinfo")
        .args(["-h", "-o", "%t"])
        .envs(env.clone())
        .output()
        .map_err(|e| format!("sinfo: {e}"))?;
    let state = String::from_utf8_lossy(&sinfo.stdout);
    if !sinfo.status.success()
        || !(state.contains("idle") || state.contains("mix") || state.contains("alloc"))
    {
        return Err(format!(
            "the local Slurm cluster does not answer: sinfo says `{}` {}",
            state.trim(),
            String::from_utf8_lossy(&sinfo.stderr).trim()
        ));
    }
    Ok(env)
}

fn squeue(env: &[(String, String)], job: &str) -> String {
    let o = Command::new("squeue")
        .args(["-h", "-j", job, "-o", "%i %T %r"])
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Waits until `done(squeue of job)` holds.
fn wait_for(
    env: &[(String, String)],
    job: &str,
    what: &str,
    done: impl Fn(&str) -> bool,
    logs: &Path,
) {
    let start = Instant::now();
    loop {
        let q = squeue(env, job);
        if done(&q) {
            return;
        }
        if start.elapsed() > Duration::from_secs(600) {
            let logs: String = std::fs::read_dir(logs)
                .map(|d| {
                    d.flatten()
                        .map(|e| {
                            format!(
                                "--- {}\n{}",
                                e.path().display(),
                                std::fs::read_to_string(e.path()).unwrap_or_default()
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            panic!("{what}: not done after 10 minutes; squeue: {q}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `stage NAME: job ID` lines of `slurm --submit`.
fn job_id(out: &str, prefix: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `{prefix}` in {out}"))
        .to_string()
}

#[test]
fn slurm_job_arrays_with_a_task_cancelled_and_resubmitted_give_the_one_process_report() {
    let env = match slurm() {
        Ok(env) => env,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping the Slurm test: {why}");
            return;
        }
        Err(why) => panic!("CI needs the local Slurm cluster: {why}"),
    };
    let (_, one) = one_process();
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let mut c = Command::new(BIN);
    c.current_dir(dir.path())
        .envs(env.iter().cloned())
        .args(["slurm", "--slices", "4", "--submit"])
        .arg(experiment());
    for s in SETS {
        c.args(["--set", s]);
    }
    c.arg("--set")
        .arg(format!("runs_dir=\"{}\"", runs.display()));
    let out = ok(&c.output().unwrap(), "slurm --submit");
    let teacher = job_id(&out, "stage teacher: job ");
    let students = job_id(&out, "stage cartpole: job ");
    let report = job_id(&out, "report: job ");
    let logs = runs.join("cartpole-qdagger/slurm");
    // Kill array task 3 (slice 3: unit k = 2 of the second stage, tabula_rasa seed 0) before it runs.
    let cancel = |job: &str| {
        let o = Command::new("scancel")
            .arg(job)
            .envs(env.iter().cloned())
            .output()
            .unwrap();
        ok(&o, &format!("scancel {job}"));
    };
    cancel(&format!("{students}_3"));
    wait_for(&env, &teacher, "the teacher's array", str::is_empty, &logs);
    wait_for(&env, &students, "the students' array", str::is_empty, &logs);
    // The report job cannot start: one task of the array it waits for did not succeed.
    let q = squeue(&env, &report);
    assert!(q.contains("PENDING") && q.contains("Dependency"), "{q}");
    cancel(&report);
    let early = reincarnate(dir.path(), &["report"], &runs);
    let err = String::from_utf8_lossy(&early.stderr);
    assert!(
        err.contains("stage `cartpole`: 1 of 6 units not done: tabula_rasa seed 0"),
        "{err}"
    );
    // Resubmit the one task as the job file says, then report.
    let sbatch = logs.join("cartpole.sbatch");
    let text = std::fs::read_to_string(&sbatch).unwrap();
    assert!(text.contains("sbatch --array=i"), "{text}");
    let o = Command::new("sbatch")
        .args(["--parsable", "--array=3"])
        .arg(&sbatch)
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    let again = ok(&o, "sbatch --array=3")
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    wait_for(&env, &again, "the resubmitted task", str::is_empty, &logs);
    let task_log = std::fs::read_to_string(logs.join("cartpole-3.out")).unwrap();
    assert!(
        task_log.contains("slice 3/4: stage cartpole: ran tabula_rasa seed 0"),
        "{task_log}"
    );
    for i in [0, 1, 2] {
        let log = std::fs::read_to_string(logs.join(format!("cartpole-{i}.out"))).unwrap();
        assert!(log.contains(&format!("slice {i}/4 done")), "{log}");
    }
    ok(&reincarnate(dir.path(), &["report"], &runs), "report");
    assert_eq!(
        &summary(&runs),
        one,
        "the Slurm run differs from the one-process run"
    );
}

/// The quickstart's AD pipeline at test size: collections split over two slices, AD on slice 0
/// and ED on slice 1 (one-unit stages rotate over the slices), each waiting for the other's runs.
const QUICK: &[&str] = &[
    "stage.0.runs=6",
    "stage.0.steps=1000",
    "stage.1.runs=3",
    "stage.1.steps=1000",
    "stage.2.config.steps=40",
    "stage.2.config.warmup_steps=10",
    "stage.3.config.steps=40",
    "stage.3.config.warmup_steps=10",
    "stage.4.episodes=6",
    "stage.5.episodes=6",
    "stage.6.episodes=10",
];

fn quickstart(cwd: &Path, args: &[&str], runs: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(cwd)
        .args(args)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/quickstart.toml"));
    for s in QUICK {
        c.args(["--set", s]);
    }
    c.arg("--set")
        .arg(format!("runs_dir=\"{}\"", runs.display()));
    c
}

#[test]
fn an_ad_pipeline_in_slices_merges_to_the_one_process_run() {
    let dir = tempfile::tempdir().unwrap();
    let (one, sliced) = (dir.path().join("one"), dir.path().join("sliced"));
    ok(
        &quickstart(dir.path(), &["run"], &one).output().unwrap(),
        "one-process quickstart",
    );
    let second = quickstart(dir.path(), &["run", "--shard", "1/2"], &sliced)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let first = ok(
        &quickstart(dir.path(), &["run", "--shard", "0/2"], &sliced)
            .output()
            .unwrap(),
        "slice 0",
    );
    let second = ok(&second.wait_with_output().unwrap(), "slice 1");
    assert!(
        first.contains("stage histories: ran runs r with r mod 2 = 0")
            && first.contains("stage ad: ran the whole stage"),
        "{first}"
    );
    assert!(
        second.contains("stage histories: ran runs r with r mod 2 = 1")
            && second.contains("stage ed: ran the whole stage")
            && !second.contains("stage ad:"),
        "{second}"
    );
    ok(
        &quickstart(dir.path(), &["report"], &sliced)
            .output()
            .unwrap(),
        "report",
    );
    let read = |runs: &Path| -> Value {
        fn norm(v: &Value, root: &str) -> Value {
            match v {
                Value::Object(m) => Value::Object(
                    m.iter()
                        .filter(|(k, _)| !k.ends_with("per_second"))
                        .map(|(k, v)| (k.clone(), norm(v, root)))
                        .collect(),
                ),
                Value::Array(a) => Value::Array(a.iter().map(|v| norm(v, root)).collect()),
                Value::String(s) => Value::String(s.replace(root, "ROOT")),
                other => other.clone(),
            }
        }
        let f = runs.join("quickstart/summary.json");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        norm(&v, &runs.display().to_string())
    };
    let (a, b) = (read(&one), read(&sliced));
    assert_eq!(a["histories"]["runs"], 6, "{a}");
    assert_eq!(a, b, "the sliced pipeline differs from the one-process run");
}
