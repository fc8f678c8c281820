//! Reincarnation (Agarwal et al. 2022) end to end on CartPole: a teacher trained by the
//! platform's own DQN is re-saved as a CleanRL-style PyTorch state dict (`network.0`,
//! `network.2`, `network.4`, written in the real `.pt` zip/pickle format), loaded back as a
//! teacher, evaluated through the CLI, and used by QDagger and every baseline; bad teachers
//! fail with errors that name what is wrong.

#[path = "common/torch_pt.rs"]
mod torch_pt;

use reincarnate::reincarnation::{run_reincarnate, ReincarnateSpec, ReincarnationSummary};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The student recipe (as tests/learning_dqn.rs's CartPole DQN), `STEPS` steps.
const STUDENT: &str = r#"
env = "cartpole"
teacher = "TEACHER"
method = "METHOD"
student = "STUDENT_ALGO"
[agent]
learning_rate = 2.3e-3
network = { hidden = [120, 84] NET }
buffer_size = 30000
batch_size = 64
learning_starts = 1000
train_frequency = 64
gradient_steps = 32
target_update_frequency = 10
epsilon = { start = 1.0, end = 0.04, decay_steps = 8000 }
EXTRA
[loop]
steps = STEPS
eval_interval = 1000
eval_episodes = 5
checkpoint_interval = 0
progress = false
[method_config]
offline_updates = 1500
teacher_data_steps = 4000
score_episodes = 5
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    /// The platform checkpoint of the teacher.
    checkpoint: PathBuf,
    /// The same weights as a CleanRL-style PyTorch state dict.
    pt: PathBuf,
    /// Its tensors (name, shape, values), to derive broken files from.
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// Trains the teacher once per test binary (24k steps of DQN; greedy return 500 at seed 0).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let agent = STUDENT
            .split("[agent]")
            .nth(1)
            .and_then(|a| a.split("[loop]").next())
            .unwrap()
            .replace(" NET", "")
            .replace("EXTRA", "");
        let text = format!(
            "env = \"cartpole\"\nalgo = \"dqn\"\n[agent]{agent}[loop]\nsteps = 24000\neval_interval = 0\neval_episodes = 10\ncheckpoint_interval = 0\nprogress = false\n"
        );
        let spec: reincarnate::train::TrainSpec =
            reincarnate::config::from_table(toml::from_str(&text).unwrap(), "teacher").unwrap();
        let checkpoint = root.join("teacher");
        let s = reincarnate::train::run_train(&spec, 0, &candle_core::Device::Cpu, &checkpoint, false)
            .unwrap();
        let ret = s.final_eval.unwrap().mean_return;
        assert!(ret >= 400.0, "the teacher must balance: greedy return {ret}");
        // Re-save as CleanRL's QNetwork state dict: q.0/q.1/q.2 → network.0/.2/.4.
        let (model, _) =
            reincarnate::checkpoint::read_safetensors(&checkpoint.join("model.safetensors")).unwrap();
        let mut tensors = Vec::new();
        for (i, torch_index) in [0, 2, 4].into_iter().enumerate() {
            for leaf in ["weight", "bias"] {
                let a = &model[&format!("q.{i}.{leaf}")];
                tensors.push((
                    format!("network.{torch_index}.{leaf}"),
                    a.shape.clone(),
                    a.to_f32("t", a.shape.iter().product()).unwrap(),
                ));
            }
        }
        let pt = root.join("cleanrl_dqn_cartpole.pt");
        torch_pt::write_state_dict(&pt, &tensors);
        Fixture {
            _dir: dir,
            root,
            checkpoint,
            pt,
            tensors,
        }
    })
}

fn spec(
    teacher: &Path,
    arch: Option<&str>,
    method: &str,
    steps: u64,
    extra: &str,
) -> ReincarnateSpec {
    spec_with(teacher, arch, method, "dqn", "", steps, extra)
}

fn spec_with(
    teacher: &Path,
    arch: Option<&str>,
    method: &str,
    algo: &str,
    net: &str,
    steps: u64,
    extra: &str,
) -> ReincarnateSpec {
    let text = STUDENT
        .replace("TEACHER", &teacher.display().to_string())
        .replace("METHOD", method)
        .replace("STUDENT_ALGO", algo)
        .replace(" NET", net)
        .replace("EXTRA", extra)
        .replace("STEPS", &steps.to_string());
    let mut table: toml::Table = toml::from_str(&text).unwrap();
    if let Some(a) = arch {
        table.insert("arch".into(), toml::Value::String(a.into()));
    }
    reincarnate::config::from_table(table, "test").unwrap()
}

fn run(spec: &ReincarnateSpec, name: &str) -> ReincarnationSummary {
    let out = fixture().root.join(name);
    run_reincarnate(spec, 0, &candle_core::Device::Cpu, &out).unwrap()
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_reincarnate"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

#[test]
fn eval_of_the_pytorch_file_reproduces_the_checkpoint_return() {
    let f = fixture();
    let eval = |policy: &Path, arch: Option<&str>| -> serde_json::Value {
        let p = policy.display().to_string();
        let mut args = vec![
            "eval",
            "--policy",
            &p,
            "--env",
            "cartpole",
            "--episodes",
            "5",
            "--json",
        ];
        if let Some(a) = arch {
            args.extend(["--arch", a]);
        }
        let o = cli(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        serde_json::from_str(out.lines().last().unwrap()).unwrap()
    };
    let from_pt = eval(&f.pt, Some("mlp:120,84"));
    let from_checkpoint = eval(&f.checkpoint, None);
    assert_eq!(
        from_pt["returns_by_episode"],
        from_checkpoint["returns_by_episode"]
    );
    assert!(
        from_pt["mean_return"].as_f64().unwrap() >= 400.0,
        "{from_pt}"
    );
    // The same weights as .safetensors with PyTorch names load the same way.
    let st = f.root.join("cleanrl.safetensors");
    let arrays: std::collections::BTreeMap<String, reincarnate::replay::RawArray> = f
        .tensors
        .iter()
        .map(|(n, s, v)| (n.clone(), reincarnate::replay::RawArray::f32(s.clone(), v)))
        .collect();
    reincarnate::checkpoint::write_safetensors(&st, &arrays, None).unwrap();
    assert_eq!(
        eval(&st, Some("mlp:120,84"))["returns_by_episode"],
        from_checkpoint["returns_by_episode"]
    );
    // The .pt as hf://org/cleanrl-cartpole/dqn.pt in a local Hub cache, offline.
    let cache = f.root.join("hub");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.join("models--org--cleanrl-cartpole");
    std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    std::fs::copy(&f.pt, repo.join("snapshots").join(commit).join("dqn.pt")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_reincarnate"))
        .args([
            "eval",
            "--policy",
            "hf://org/cleanrl-cartpole/dqn.pt",
            "--arch",
            "mlp:120,84",
        ])
        .args(["--env", "cartpole", "--episodes", "5", "--json"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", &cache)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let hub: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(
        hub["returns_by_episode"],
        from_checkpoint["returns_by_episode"]
    );
}

/// The MinAtar network as PyTorch's `nn.Sequential(Conv2d, ReLU, Flatten, Linear, ReLU,
/// Linear)` state dict (`network.0`, `network.3`, `network.5`) acts exactly as the platform's.
#[test]
fn a_minatar_conv_state_dict_acts_as_the_platform_network() {
    let dir = tempfile::tempdir().unwrap();
    let fam = reincarnate::envs::TaskFamily::from_id("minatar/breakout").unwrap();
    let mut cfg = toml::Table::new();
    cfg.insert(
        "network".into(),
        toml::from_str::<toml::Table>("body = \"minatar_conv\"")
            .unwrap()
            .into(),
    );
    let agent =
        reincarnate::agents::build("dqn", &cfg, fam.spec(), &candle_core::Device::Cpu, 7, 1000)
            .unwrap();
    let data = agent.save(false).unwrap();
    let ck = dir.path().join("ck");
    reincarnate::checkpoint::save(&ck, &data).unwrap();
    let mut tensors = Vec::new();
    for (i, torch_index) in [0, 3, 5].into_iter().enumerate() {
        for leaf in ["weight", "bias"] {
            let a = &data.model[&format!("q.{i}.{leaf}")];
            let n = a.shape.iter().product();
            tensors.push((
                format!("network.{torch_index}.{leaf}"),
                a.shape.clone(),
                a.to_f32("t", n).unwrap(),
            ));
        }
    }
    let pt = dir.path().join("minatar.pt");
    torch_pt::write_state_dict(&pt, &tensors);
    let obs: Vec<f32> = (0..3 * 400)
        .map(|i| ((i * 7919) % 5 == 0) as u8 as f32)
        .collect();
    let load = |src: &Path, arch: Option<&str>| {
        reincarnate::reincarnation::teacher::Teacher::load(
            &src.display().to_string(),
            arch,
            fam.spec(),
            &candle_core::Device::Cpu,
        )
        .unwrap()
    };
    let q = |t: &reincarnate::reincarnation::teacher::Teacher| match t.output(&obs).unwrap() {
        reincarnate::agents::PolicyOutput::QValues(v) => v,
        _ => panic!("a Q-network teacher"),
    };
    let (a, b) = (
        q(&load(&pt, Some("minatar-conv:16,128"))),
        q(&load(&ck, None)),
    );
    assert_eq!(a.len(), 3 * 6);
    assert_eq!(a, b);
    let e = load_err(&pt, Some("minatar-conv:8,128"), "minatar/breakout");
    assert!(
        e.contains("`network.0.weight`") && e.contains("expected shape [8, 4, 3, 3]"),
        "{e}"
    );
}

#[test]
fn qdagger_from_the_pytorch_teacher_reaches_teacher_level_far_sooner_than_tabula_rasa() {
    let f = fixture();
    let q = run(
        &spec(&f.pt, Some("mlp:120,84"), "qdagger", 3000, ""),
        "qdagger",
    );
    let t = run(
        &spec(&f.pt, Some("mlp:120,84"), "tabula_rasa", 3000, ""),
        "tabula-rasa",
    );
    assert!(q.teacher_return >= 400.0);
    let q_at = q.steps_to_teacher.unwrap_or(u64::MAX);
    // QDagger's offline phase alone (teacher data + distillation) brings the student to the
    // teacher's level; tabula rasa needs ~18k steps with this recipe.
    assert!(q_at <= 1000, "QDagger reached teacher level at {q:?}");
    assert!(
        t.steps_to_teacher.is_none(),
        "tabula rasa at 3k steps: {:?}",
        t.curve
    );
    let best = |r: &ReincarnationSummary| {
        r.normalised_curve
            .iter()
            .map(|p| p.1)
            .fold(f64::MIN, f64::max)
    };
    assert!(best(&t) < 0.8, "tabula rasa curve {:?}", t.normalised_curve);
    assert_eq!(q.offline_updates, 1500);
    assert_eq!(q.teacher_data_transitions, 4000);
    let teacher_data =
        reincarnate::reincarnation::sibling(&fixture().root.join("qdagger"), "teacher-data");
    reincarnate::history::validate_or_error(&teacher_data).unwrap();
    assert!(f.root.join("qdagger/reincarnation.svg").exists());
}

/// The command a new user types, `reincarnate --teacher dqn.pt --arch mlp:120,84 --method
/// qdagger --student dqn --env cartpole --steps 10000`, with no tuning flags (evaluations every
/// 1,000 steps only to draw the curve): the budget-relative defaults resolve against 10k steps,
/// the warm-started student keeps its teacher's level through the online phase and ends at
/// ≥ 90% of it, above tabula rasa at the same budget.
#[test]
fn qdagger_with_default_flags_keeps_its_teachers_level_through_the_run() {
    let f = fixture();
    let pt = f.pt.display().to_string();
    let run_cli = |method: &str, seed: u64| -> ReincarnationSummary {
        let out = f.root.join(format!("defaults-{method}-s{seed}"));
        let o = cli(&[
            "reincarnate",
            "--teacher",
            &pt,
            "--arch",
            "mlp:120,84",
            "--method",
            method,
            "--student",
            "dqn",
            "--env",
            "cartpole",
            "--steps",
            "10000",
            "--seed",
            &seed.to_string(),
            "--out",
            &out.display().to_string(),
            "--set",
            "loop.eval_interval=1000",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        reincarnate::fs::read_json(&out.join("reincarnation.json")).unwrap()
    };
    let runs: Vec<ReincarnationSummary> = (0..3).map(|s| run_cli("qdagger", s)).collect();
    // The defaults as resolved for this budget, in the student's config.json.
    let config: serde_json::Value =
        reincarnate::fs::read_json(&f.root.join("defaults-qdagger-s0/config.json")).unwrap();
    let agent = &config["agent"];
    assert_eq!(agent["epsilon"]["decay_steps"], 5000, "{agent}");
    assert_eq!(agent["learning_starts"], 200, "{agent}");
    assert_eq!(
        agent["epsilon"]["start"], agent["epsilon"]["end"],
        "a warm-started student explores at the schedule's end: {agent}"
    );
    let points = runs[0].normalised_curve.len();
    assert_eq!(points, 11, "step 0 and ten evaluations");
    for i in 0..points {
        let mean = runs.iter().map(|r| r.normalised_curve[i].1).sum::<f64>() / 3.0;
        assert!(
            mean >= 0.8,
            "at step {} the students average {mean:.2} of the teacher: {:?}",
            runs[0].normalised_curve[i].0,
            runs.iter().map(|r| &r.normalised_curve).collect::<Vec<_>>()
        );
    }
    let final_mean = runs.iter().map(|r| r.final_normalised).sum::<f64>() / 3.0;
    assert!(final_mean >= 0.9, "final {final_mean:.2}");
    let scratch = run_cli("tabula_rasa", 0);
    assert!(
        scratch.final_normalised < final_mean,
        "tabula rasa {:.2} vs QDagger {final_mean:.2}",
        scratch.final_normalised
    );
}

#[test]
fn every_method_runs_and_the_warm_starts_start_warm() {
    let f = fixture();
    let arch = Some("mlp:120,84");
    // Finetune starts from the teacher's weights; BC and pretraining from its data.
    for (method, start_at_least) in [("finetune", 0.9), ("bc", 0.5), ("dqfd", 0.5)] {
        let r = run(&spec(&f.pt, arch, method, 1000, ""), method);
        assert!(
            r.normalised_curve[0].1 >= start_at_least,
            "{method} starts at {:?}",
            r.normalised_curve
        );
    }
    for method in ["kickstart", "jsrl", "rehearsal", "pretrain"] {
        let r = run(&spec(&f.pt, arch, method, 1500, ""), method);
        assert!(r.final_normalised.is_finite(), "{method}: {r:?}");
        assert_eq!(r.curve.len(), 3, "{method}: step 0 and two evaluations");
    }
    // A student of another architecture and head: C51 with SN on the penultimate layer,
    // distilled from the plain DQN teacher (its checkpoint folder this time).
    let c51 = spec_with(
        &f.checkpoint,
        None,
        "qdagger",
        "c51",
        ", atoms = 51, sn_layers = [-2]",
        1000,
        "v_min = 0.0\nv_max = 100.0",
    );
    let r = run(&c51, "qdagger-c51");
    assert!(
        r.normalised_curve[0].1 >= 0.5,
        "C51 student {:?}",
        r.normalised_curve
    );
    // Finetuning into another architecture is refused, naming the mismatch.
    let other = spec_with(&f.pt, arch, "finetune", "dqn", "", 1000, "").clone();
    let mut other = other;
    other.agent.insert(
        "network".into(),
        toml::from_str::<toml::Table>("hidden = [64]")
            .unwrap()
            .into(),
    );
    let e = run_reincarnate(&other, 0, &candle_core::Device::Cpu, &f.root.join("ft-bad"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("finetune needs a student with the teacher's architecture"),
        "{e}"
    );
}

fn load_err(teacher: &Path, arch: Option<&str>, env: &str) -> String {
    let fam = reincarnate::envs::TaskFamily::from_id(env).unwrap();
    match reincarnate::reincarnation::teacher::Teacher::load(
        &teacher.display().to_string(),
        arch,
        fam.spec(),
        &candle_core::Device::Cpu,
    ) {
        Ok(_) => panic!("{} loaded as a teacher for {env}", teacher.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_teachers_fail_naming_what_is_wrong() {
    let f = fixture();
    let write = |name: &str, tensors: &[(String, Vec<usize>, Vec<f32>)]| {
        let p = f.root.join(name);
        torch_pt::write_state_dict(&p, tensors);
        p
    };
    // Missing key.
    let missing = write("missing.pt", &f.tensors[..5]);
    let e = load_err(&missing, Some("mlp:120,84"), "cartpole");
    assert!(
        e.contains("missing.pt") && e.contains("missing key `network.4.bias`"),
        "{e}"
    );
    // Wrong hidden size for the spec.
    let e = load_err(&f.pt, Some("mlp:64,84"), "cartpole");
    assert!(
        e.contains("`network.0.weight`") && e.contains("expected shape [64, 4], found [120, 4]"),
        "{e}"
    );
    // Observation space of another environment (MinAtar Breakout: 400 inputs).
    let e = load_err(&f.pt, Some("mlp:120,84"), "minatar/breakout");
    assert!(
        e.contains("expected shape [120, 400], found [120, 4]") && e.contains("observation"),
        "{e}"
    );
    // Output for three actions on two-action CartPole.
    let mut three = f.tensors.clone();
    three[4] = ("network.4.weight".into(), vec![3, 84], vec![0.0; 3 * 84]);
    three[5] = ("network.4.bias".into(), vec![3], vec![0.0; 3]);
    let e = load_err(&write("three.pt", &three), Some("mlp:120,84"), "cartpole");
    assert!(
        e.contains("expected shape [2, 84], found [3, 84]") && e.contains("action"),
        "{e}"
    );
    // Without --arch an MLP's sizes come from its shapes: they must fit the environment.
    let e = load_err(&f.pt, None, "minatar/breakout");
    assert!(
        e.contains("`network.0.weight` takes 4 inputs") && e.contains("400-value observations"),
        "{e}"
    );
    // A platform checkpoint on the wrong environment.
    let e = load_err(&f.checkpoint, None, "minatar/breakout");
    assert!(
        e.contains("observation space does not match") && e.contains("expected"),
        "{e}"
    );
    // Not a PyTorch file at all; the CLI exits 1 with the message.
    let junk = f.root.join("junk.pt");
    std::fs::write(&junk, b"not a zip").unwrap();
    assert!(load_err(&junk, Some("mlp:120,84"), "cartpole").contains("not a zip archive"));
    let o = cli(&[
        "eval",
        "--policy",
        &missing.display().to_string(),
        "--arch",
        "mlp:120,84",
        "--env",
        "cartpole",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing key `network.4.bias`"));
}

/// A `.pt` whose pickle would call `os.system` under Python, and archives whose entries would
/// leave their folder, are refused before candle reads them, naming what is wrong.
#[test]
fn pt_files_that_would_run_code_or_escape_their_folder_are_refused() {
    let f = fixture();
    // torch.save's framing around `os.system("touch PWNED")` (GLOBAL, argument, TUPLE1, REDUCE).
    let mut pkl = vec![0x80, 2, b'c'];
    pkl.extend_from_slice(b"os\nsystem\n");
    pkl.push(b'X');
    pkl.extend_from_slice(&11u32.to_le_bytes());
    pkl.extend_from_slice(b"touch PWNED");
    pkl.extend_from_slice(&[0x85, b'R', b'.']);
    let evil = f.root.join("evil.pt");
    torch_pt::write_archive(
        &evil,
        &[("archive/data.pkl", &pkl), ("archive/version", b"3\n")],
    );
    let e = load_err(&evil, Some("mlp:120,84"), "cartpole");
    assert!(
        e.contains("evil.pt") && e.contains("`os.system`") && e.contains("refused"),
        "{e}"
    );
    assert!(!f.root.join("PWNED").exists());
    // An entry that climbs out of the archive.
    let climb = f.root.join("climb.pt");
    torch_pt::write_archive(
        &climb,
        &[("archive/data.pkl", b"\x80\x02N."), ("../../escape", b"x")],
    );
    let e = load_err(&climb, Some("mlp:120,84"), "cartpole");
    assert!(e.contains("`../../escape` would leave"), "{e}");
    // No pickle at all.
    let empty = f.root.join("nopickle.pt");
    torch_pt::write_archive(&empty, &[("archive/version", b"3\n")]);
    assert!(load_err(&empty, Some("mlp:120,84"), "cartpole").contains("no data.pkl"));
    // The CLI exits 1 with the message.
    let o = cli(&[
        "eval",
        "--policy",
        &evil.display().to_string(),
        "--arch",
        "mlp:120,84",
        "--env",
        "cartpole",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("os.system"));
}

#[test]
fn experiment_stages_aggregate_methods_over_seeds_into_iqm_and_a_table() {
    let f = fixture();
    let runs = f.root.join("runs");
    let text = format!(
        r#"
name = "tiny"
runs_dir = "{runs}"
[[stage]]
name = "cp"
kind = "reincarnate"
env = "cartpole"
teacher = "{pt}"
arch = "mlp:120,84"
methods = ["qdagger", "tabula_rasa"]
seeds = [0, 1]
[stage.agent]
learning_starts = 500
train_frequency = 64
gradient_steps = 8
[stage.loop]
steps = 1000
eval_interval = 500
eval_episodes = 3
checkpoint_interval = 0
progress = false
[stage.method_config]
offline_updates = 1000
teacher_data_steps = 2000
score_episodes = 3
[[stage]]
name = "summary"
kind = "reincarnation_summary"
stages = ["cp"]
"#,
        runs = runs.display(),
        pt = f.pt.display()
    );
    let file = f.root.join("tiny.toml");
    std::fs::write(&file, text).unwrap();
    let exp = reincarnate::experiment::load_experiment(&file, &[]).unwrap();
    let (root, outcomes) =
        reincarnate::experiment::run_experiment(&exp, "tiny", &candle_core::Device::Cpu).unwrap();
    let reincarnate::stage_result::StageResult::Reincarnate(cp) = &outcomes[0].result else {
        panic!(
            "stage cp: not a reincarnate result: {:?}",
            outcomes[0].result
        );
    };
    let cp = &cp.methods;
    for m in ["qdagger", "tabula_rasa"] {
        assert_eq!(cp[m].finals.len(), 2, "{cp:?}");
        let (lo, hi) = cp[m].ci95;
        let iqm = cp[m].final_iqm;
        assert!(lo <= iqm && iqm <= hi, "{m}: {iqm} outside [{lo}, {hi}]");
    }
    // The warm start shows at step 0 of the IQM curve.
    let start = |m: &str| cp[m].iqm_curve[0].1;
    assert!(start("qdagger") > start("tabula_rasa") + 0.3, "{cp:?}");
    let table = std::fs::read_to_string(root.join("summary/table.md")).unwrap();
    assert!(
        table.contains("| qdagger |") && table.contains("| tabula_rasa |"),
        "{table}"
    );
    assert!(root.join("cp/reincarnation.svg").exists());
}
