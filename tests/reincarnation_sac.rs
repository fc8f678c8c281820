//! Reincarnation for SAC-family students on Pendulum: a small SAC teacher trained by the
//! platform, then a SimbaV2 student (another architecture) with actor distillation and critic
//! pretraining on the teacher's data (`qdagger`) against a tabula-rasa SimbaV2 at the same
//! budget; fine-tuning SAC → SAC starts warm; the Gaussian KL of the distillation is checked
//! against numerical integration and finite differences; mismatched teachers and discrete-only
//! methods fail with named errors.

use candle_core::{Device, Tensor, Var};
use reincarnate::reincarnation::actor_distill::gaussian_kl;
use reincarnate::reincarnation::{run_reincarnate, ReincarnateSpec, ReincarnationSummary};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A SimbaV2 student at test sizes (as tests/sac.rs), `STEPS` environment steps.
const STUDENT: &str = r#"
env = "pendulum"
teacher = "TEACHER"
method = "METHOD"
student = "ALGO"
[agent]
NET
learning_starts = 500
buffer_size = 10000
batch_size = 128
[loop]
steps = STEPS
eval_interval = 500
eval_episodes = 5
checkpoint_interval = 0
progress = false
[method_config]
offline_updates = 1000
teacher_data_steps = 2000
score_episodes = 5
"#;

const SAC_NET: &str = "network = { hidden = [64, 64] }";
const SIMBA_NET: &str = "network = { actor_hidden = 32, critic_hidden = 64, critic_blocks = 1 }
actor_lr = 3e-4
critic_lr = 3e-4";

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    teacher: PathBuf,
}

/// Trains the SAC teacher once per test binary (6,000 steps, 64-64 networks).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let text = format!(
            "env = \"pendulum\"\nalgo = \"sac\"\n[agent]\n{SAC_NET}\nlearning_starts = 1000\nbuffer_size = 10000\nbatch_size = 128\n[loop]\nsteps = 6000\neval_interval = 0\neval_episodes = 5\ncheckpoint_interval = 0\nprogress = false\n"
        );
        let spec: reincarnate::train::TrainSpec =
            reincarnate::config::from_table(toml::from_str(&text).unwrap(), "teacher").unwrap();
        let teacher = root.join("teacher");
        let s = reincarnate::train::run_train(&spec, 0, &Device::Cpu, &teacher, false).unwrap();
        let ret = s.final_eval.unwrap().mean_return;
        assert!(ret >= -300.0, "the teacher must swing up and balance: greedy return {ret}");
        Fixture {
            _dir: dir,
            root,
            teacher,
        }
    })
}

fn spec(teacher: &Path, method: &str, algo: &str, net: &str, steps: u64) -> ReincarnateSpec {
    let text = STUDENT
        .replace("TEACHER", &teacher.display().to_string())
        .replace("METHOD", method)
        .replace("ALGO", algo)
        .replace("NET", net)
        .replace("STEPS", &steps.to_string());
    reincarnate::config::from_table(toml::from_str(&text).unwrap(), "test").unwrap()
}

fn run(spec: &ReincarnateSpec, name: &str) -> ReincarnationSummary {
    let out = fixture().root.join(name);
    run_reincarnate(spec, 0, &Device::Cpu, &out).unwrap()
}

/// First evaluation step with a teacher-normalised score of at least `level`.
fn first_at(r: &ReincarnationSummary, level: f64) -> Option<f64> {
    r.normalised_curve
        .iter()
        .find(|p| p.1 >= level)
        .map(|p| p.0)
}

#[test]
fn sac_to_simbav2_qdagger_reaches_teacher_level_far_sooner_than_tabula_rasa() {
    let f = fixture();
    let steps = 2000;
    let q = run(
        &spec(&f.teacher, "qdagger", "simbav2", SIMBA_NET, steps),
        "qdagger",
    );
    let t = run(
        &spec(&f.teacher, "tabula_rasa", "simbav2", SIMBA_NET, steps),
        "tabula",
    );
    assert_eq!(q.offline_updates, 1000);
    assert_eq!(q.teacher_data_transitions, 2000);
    let offline = reincarnate::report::metrics::read_series(
        &f.root.join("qdagger/offline_metrics.jsonl"),
        "offline",
        "distill_kl",
    )
    .unwrap();
    assert!(
        offline.last().unwrap().1 < offline[0].1,
        "the offline phase must bring the student's policy toward the teacher's: KL {offline:?}"
    );
    // The dumped rollout reads back as `teacher_data` (continuous actions in the dataset schema),
    // and the same seed gives the same offline phase.
    let mut from_data = spec(&f.teacher, "qdagger", "simbav2", SIMBA_NET, 1);
    from_data.teacher_data = Some(f.root.join("qdagger-teacher-data"));
    from_data.train_loop.eval_interval = 0;
    let d = run(&from_data, "qdagger-from-data");
    assert_eq!(d.teacher_data_transitions, 2000);
    assert_eq!(
        d.normalised_curve[0], q.normalised_curve[0],
        "the same data and seed must give the same student after the offline phase"
    );
    let (qs, ts) = (first_at(&q, 0.8), first_at(&t, 0.8));
    eprintln!(
        "qdagger {:?}\ntabula rasa {:?}",
        q.normalised_curve, t.normalised_curve
    );
    let qs = qs.unwrap_or_else(|| panic!("qdagger never reached 0.8: {:?}", q.normalised_curve));
    assert!(
        qs <= steps as f64 / 3.0,
        "qdagger reached 0.8 only at step {qs}"
    );
    assert!(
        ts.is_none_or(|s| s >= qs + 1000.0),
        "tabula rasa reached 0.8 at {ts:?}, qdagger at {qs}: not clearly sooner"
    );
}

#[test]
fn finetune_sac_to_sac_starts_warm_and_kickstart_and_rehearsal_run() {
    let f = fixture();
    let r = run(
        &spec(&f.teacher, "finetune", "sac", SAC_NET, 500),
        "finetune",
    );
    assert!(
        r.normalised_curve[0].1 >= 0.8,
        "finetune starts from the teacher's weights: {:?}",
        r.normalised_curve
    );
    let k = run(
        &spec(&f.teacher, "kickstart", "simbav2", SIMBA_NET, 1000),
        "kickstart",
    );
    assert!(
        k.normalised_curve[0].1 < 0.5,
        "kickstart has no offline phase, so it starts cold: {:?}",
        k.normalised_curve
    );
    let r = run(
        &spec(&f.teacher, "rehearsal", "simbav2", SIMBA_NET, 1000),
        "rehearsal",
    );
    assert_eq!(r.teacher_data_transitions, 2000);
    assert_eq!(r.offline_updates, 0);
    assert!(r.final_normalised.is_finite());
    // Another architecture cannot take the teacher's weights.
    let e = run_reincarnate(
        &spec(&f.teacher, "finetune", "simbav2", SIMBA_NET, 500),
        0,
        &Device::Cpu,
        &f.root.join("finetune-bad"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("finetune needs a student with the teacher's architecture"),
        "{e}"
    );
}

#[test]
fn mismatched_teachers_and_discrete_only_methods_fail_with_named_errors() {
    let f = fixture();
    // A continuous teacher for a discrete environment.
    let fam = reincarnate::envs::TaskFamily::from_id("cartpole").unwrap();
    let e = match reincarnate::reincarnation::teacher::Teacher::load(
        &f.teacher.display().to_string(),
        None,
        fam.spec(),
        &Device::Cpu,
    ) {
        Ok(_) => panic!("a Pendulum SAC teacher loaded for CartPole"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("does not match") && e.contains("expected") && e.contains("found"),
        "{e}"
    );
    for method in ["jsrl", "dqfd", "bc"] {
        let e = run_reincarnate(
            &spec(&f.teacher, method, "simbav2", SIMBA_NET, 500),
            0,
            &Device::Cpu,
            &f.root.join(method),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!("--method {method}")) && e.contains("simbav2"),
            "{e}"
        );
    }
}

/// The closed-form `KL(student ‖ teacher)` equals numerical integration of `∫ p log(p/q)`
/// (p the student's Gaussian) per dimension, summed over dimensions and averaged over rows;
/// its gradient in the student's mean and log-std matches finite differences.
#[test]
fn gaussian_kl_matches_integration_and_finite_differences() {
    let dev = Device::Cpu;
    let (tm, ts) = ([0.3f32, -1.0, 0.5, 0.0], [-0.5f32, 0.2, 0.0, -1.0]);
    let (sm, ss) = ([0.0f32, -0.4, 1.5, 0.1], [0.1f32, -0.3, 0.4, -0.8]);
    let t = |v: &[f32]| Tensor::from_slice(v, (2, 2), &dev).unwrap();
    let kl = |m: &[f32], s: &[f32]| -> f64 {
        gaussian_kl(&t(m), &t(s), &t(&tm), &t(&ts))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    let log_pdf = |x: f64, m: f64, ls: f64| {
        let sd = ls.exp();
        -(x - m).powi(2) / (2.0 * sd * sd) - ls - 0.5 * (2.0 * std::f64::consts::PI).ln()
    };
    let mut numeric = 0.0;
    for i in 0..4 {
        let (m1, l1, m2, l2) = (sm[i] as f64, ss[i] as f64, tm[i] as f64, ts[i] as f64);
        let dx = 1e-3;
        let mut x = -15.0;
        while x < 15.0 {
            let (lp, lq) = (log_pdf(x, m1, l1), log_pdf(x, m2, l2));
            numeric += lp.exp() * (lp - lq) * dx;
            x += dx;
        }
    }
    numeric /= 2.0; // two rows
    let closed = kl(&sm, &ss);
    assert!(
        (closed - numeric).abs() < 1e-3,
        "closed form {closed} vs integral {numeric}"
    );
    assert!(kl(&tm, &ts).abs() < 1e-6, "KL of a policy to itself is 0");
    // Gradient with respect to the student's mean and log-std.
    let vm = Var::from_tensor(&t(&sm)).unwrap();
    let vs = Var::from_tensor(&t(&ss)).unwrap();
    let g = gaussian_kl(vm.as_tensor(), vs.as_tensor(), &t(&tm), &t(&ts))
        .unwrap()
        .backward()
        .unwrap();
    let gm: Vec<f32> = g
        .get(&vm)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let gs: Vec<f32> = g
        .get(&vs)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for i in 0..4 {
        for (which, grad) in [(0, gm[i]), (1, gs[i])] {
            let (mut up_m, mut up_s, mut dn_m, mut dn_s) = (sm, ss, sm, ss);
            if which == 0 {
                up_m[i] += 1e-2;
                dn_m[i] -= 1e-2;
            } else {
                up_s[i] += 1e-2;
                dn_s[i] -= 1e-2;
            }
            let fd = (kl(&up_m, &up_s) - kl(&dn_m, &dn_s)) / 2e-2;
            assert!(
                (fd - grad as f64).abs() < 2e-3,
                "d/d{}[{i}]: analytic {grad} vs numeric {fd}",
                ["mean", "log_std"][which]
            );
        }
    }
}
