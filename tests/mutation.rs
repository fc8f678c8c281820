//! The mutation campaign: every kind of file the platform reads, damaged in seeded ways (byte
//! flips, truncation, fields removed or retyped, huge, negative and fractional numbers, paths
//! that leave their folder), and read the way the platform reads it. Each case must end in a
//! clear error that names the damaged file, or be accepted for a stated reason; never a panic,
//! an abort, or a hang.
//!
//! `MUTATION_CASES` (default 1,500) and `MUTATION_SEED` set the campaign's size and seed, for
//! longer runs outside CI:
//!   MUTATION_CASES=100000 cargo test --release --test mutation -- --nocapture

// Only the state-dict writer is used here.
#[allow(dead_code)]
#[path = "common/torch_pt.rs"]
mod torch_pt;

use reincarnate::envs::TaskSet;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Deterministic draws for the campaign.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// What a mutation did to a file.
#[derive(Clone, Debug)]
struct Mutation {
    what: String,
    /// A field the platform writes was removed or given another JSON type: accepting the file
    /// would read something other than what was written.
    breaks_a_field: bool,
}

/// Every path of a JSON tree, as its keys (keys may hold dots: safetensors tensor names do).
fn paths(v: &Value, at: &[String], out: &mut Vec<Vec<String>>) {
    let child = |k: String, x: &Value, out: &mut Vec<Vec<String>>| {
        let mut p = at.to_vec();
        p.push(k);
        out.push(p.clone());
        paths(x, &p, out);
    };
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                child(k.clone(), x, out);
            }
        }
        Value::Array(a) => {
            // A few elements of long arrays are enough.
            for (i, x) in a.iter().enumerate().take(3) {
                child(i.to_string(), x, out);
            }
        }
        _ => {}
    }
}

fn node_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| match v {
        Value::Object(m) => m.get_mut(k),
        Value::Array(a) => k.parse::<usize>().ok().and_then(move |i| a.get_mut(i)),
        _ => None,
    })
}

/// A value of another JSON type than `v`.
fn retyped(v: &Value, rng: &mut Rng) -> Value {
    let options: Vec<Value> = match v {
        Value::Number(_) => vec![
            Value::from("7"),
            Value::Null,
            Value::from(true),
            Value::from(vec![1]),
        ],
        Value::String(_) => vec![
            Value::from(7),
            Value::Null,
            Value::from(false),
            serde_json::json!({}),
        ],
        Value::Bool(_) => vec![Value::from("true"), Value::from(1), Value::Null],
        Value::Object(_) => vec![Value::from(vec![0]), Value::from("x"), Value::from(3)],
        Value::Array(_) => vec![serde_json::json!({}), Value::from(0), Value::from("x")],
        Value::Null => vec![
            Value::from(0),
            Value::from("x"),
            serde_json::json!({"a": 1}),
        ],
    };
    options[rng.below(options.len())].clone()
}

/// Numbers at and past the edges of what a field can hold.
fn extreme(rng: &mut Rng) -> Value {
    let options = [
        serde_json::json!(-1),
        serde_json::json!(0),
        serde_json::json!(1.5),
        serde_json::json!(1e300),
        serde_json::json!(-1e300),
        serde_json::json!(u64::MAX),
        serde_json::json!(i64::MIN),
        serde_json::json!(4_294_967_296u64),
        serde_json::json!(1_000_000_000_000u64),
    ];
    options[rng.below(options.len())].clone()
}

/// Mutates JSON text: a field removed or retyped, an extreme number, a path that leaves its
/// folder, or the bytes themselves.
fn mutate_json(text: &[u8], rng: &mut Rng) -> (Vec<u8>, Mutation) {
    let mut v: Value = serde_json::from_slice(text).expect("fixture JSON");
    let mut all = Vec::new();
    paths(&v, &[], &mut all);
    let raw = |what: String| Mutation {
        what,
        breaks_a_field: false,
    };
    match rng.below(10) {
        0..=2 if !all.is_empty() => {
            let p = all[rng.below(all.len())].clone();
            let (key, parent) = p.split_last().unwrap();
            let parent_is_array = matches!(node_mut(&mut v, parent), Some(Value::Array(_)));
            match node_mut(&mut v, parent) {
                Some(Value::Object(m)) => {
                    m.remove(key);
                }
                Some(Value::Array(a)) => {
                    a.remove(key.parse::<usize>().unwrap());
                }
                _ => unreachable!("a path's parent holds it"),
            }
            (
                serde_json::to_vec_pretty(&v).unwrap(),
                Mutation {
                    what: format!("removed `{}`", p.join(".")),
                    // Removing an array element changes a value, not the fields.
                    breaks_a_field: !parent_is_array,
                },
            )
        }
        3..=5 if !all.is_empty() => {
            let p = all[rng.below(all.len())].clone();
            let node = node_mut(&mut v, &p).unwrap();
            // A null is an optional field left empty: a value in its place may be valid.
            let was_null = node.is_null();
            let new = retyped(node, rng);
            *node = new.clone();
            (
                serde_json::to_vec_pretty(&v).unwrap(),
                Mutation {
                    what: format!("retyped `{}` to {new}", p.join(".")),
                    breaks_a_field: !was_null,
                },
            )
        }
        6 => {
            let numbers: Vec<Vec<String>> = all
                .iter()
                .filter(|p| matches!(node_mut(&mut v, p), Some(Value::Number(_))))
                .cloned()
                .collect();
            if numbers.is_empty() {
                return mutate_bytes(text, rng);
            }
            let p = numbers[rng.below(numbers.len())].clone();
            let new = extreme(rng);
            *node_mut(&mut v, &p).unwrap() = new.clone();
            (
                serde_json::to_vec_pretty(&v).unwrap(),
                raw(format!("`{}` = {new}", p.join("."))),
            )
        }
        7 => {
            let strings: Vec<Vec<String>> = all
                .iter()
                .filter(|p| matches!(node_mut(&mut v, p), Some(Value::String(_))))
                .cloned()
                .collect();
            if strings.is_empty() {
                return mutate_bytes(text, rng);
            }
            let p = strings[rng.below(strings.len())].clone();
            let options = [
                "../../../etc/passwd",
                "/etc/passwd",
                "",
                "data/../../x.parquet",
                "NaN",
            ];
            let new = options[rng.below(options.len())];
            *node_mut(&mut v, &p).unwrap() = Value::from(new);
            (
                serde_json::to_vec_pretty(&v).unwrap(),
                raw(format!("`{}` = {new:?}", p.join("."))),
            )
        }
        _ => mutate_bytes(text, rng),
    }
}

/// Flips bytes or truncates.
fn mutate_bytes(bytes: &[u8], rng: &mut Rng) -> (Vec<u8>, Mutation) {
    let mut b = bytes.to_vec();
    let what = if b.is_empty() || rng.below(3) == 0 {
        let n = rng.below(b.len());
        b.truncate(n);
        format!("truncated to {n} bytes")
    } else {
        let flips = 1 + rng.below(8);
        for _ in 0..flips {
            let i = rng.below(b.len());
            b[i] ^= 1 << rng.below(8);
        }
        format!("{flips} bits flipped")
    };
    (
        b,
        Mutation {
            what,
            breaks_a_field: false,
        },
    )
}

/// A Parquet file: a column dropped, renamed, cast to another type or given a null (every
/// change to the schema is one a reader must refuse), or its bytes.
fn mutate_parquet(bytes: &[u8], rng: &mut Rng) -> (Vec<u8>, Mutation) {
    use arrow::array::{make_array, Array, ArrayRef, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    if rng.below(2) == 0 {
        return mutate_bytes(bytes, rng);
    }
    let mut tmp = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut tmp, bytes).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        tmp.reopen().unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let schema = batches[0].schema();
    let batch = arrow::compute::concat_batches(&schema, &batches).unwrap();
    let i = rng.below(schema.fields().len());
    let name = schema.field(i).name().clone();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let what = match rng.below(4) {
        0 => {
            fields.remove(i);
            columns.remove(i);
            format!("dropped column `{name}`")
        }
        1 => {
            fields[i] = fields[i].clone().with_name(format!("{name}_renamed"));
            format!("renamed column `{name}`")
        }
        2 => {
            let targets = [
                DataType::Int64,
                DataType::UInt32,
                DataType::Float64,
                DataType::Float32,
                DataType::Utf8,
                DataType::Boolean,
            ];
            let to = targets
                .iter()
                .filter(|t| *t != fields[i].data_type())
                .nth(rng.below(targets.len() - 1))
                .cloned()
                .unwrap_or(DataType::Utf8);
            match arrow::compute::cast(&columns[i], &to) {
                Ok(c) => {
                    columns[i] = c;
                    fields[i] = Field::new(name.clone(), to.clone(), true);
                    format!("column `{name}` cast to {to}")
                }
                Err(_) => {
                    fields.remove(i);
                    columns.remove(i);
                    format!("dropped column `{name}` (no cast)")
                }
            }
        }
        _ => {
            let c = &columns[i];
            let mut valid = vec![true; c.len()];
            valid[rng.below(c.len())] = false;
            let data = c
                .to_data()
                .into_builder()
                .nulls(Some(arrow::buffer::NullBuffer::from(valid)))
                .build()
                .unwrap();
            columns[i] = make_array(data);
            fields[i] = fields[i].clone().with_nullable(true);
            format!("a null in column `{name}`")
        }
    };
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    (
        out,
        Mutation {
            what,
            breaks_a_field: true,
        },
    )
}

/// A safetensors file: its header (a JSON object after an 8-byte length) mutated as JSON, or
/// its bytes.
fn mutate_safetensors(bytes: &[u8], rng: &mut Rng) -> (Vec<u8>, Mutation) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    if rng.below(2) == 0 {
        return mutate_bytes(bytes, rng);
    }
    let (header, m) = mutate_json(&bytes[8..8 + n], rng);
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&bytes[8 + n..]);
    (
        out,
        Mutation {
            what: format!("header {}", m.what),
            ..m
        },
    )
}

/// TOML text: a key removed or retyped, an extreme number, or bytes.
fn mutate_toml(text: &[u8], rng: &mut Rng) -> (Vec<u8>, Mutation) {
    let table: toml::Table = toml::from_str(std::str::from_utf8(text).unwrap()).unwrap();
    let json = serde_json::to_vec(&table).unwrap();
    let (mutated, m) = mutate_json(&json, rng);
    match serde_json::from_slice::<Value>(&mutated)
        .ok()
        .and_then(|v| toml::Value::try_from(v).ok())
        .and_then(|v| toml::to_string(&v).ok())
    {
        // TOML has no null: a mutation to null is made on the bytes instead.
        Some(t)
            if !m.what.contains("null")
                && !m.what.starts_with("truncated")
                && !m.what.contains("flipped") =>
        {
            // Hand-written configs take the documented default for a key they leave out.
            let breaks_a_field = m.breaks_a_field && !m.what.starts_with("removed");
            (
                t.into_bytes(),
                Mutation {
                    breaks_a_field,
                    ..m
                },
            )
        }
        _ => mutate_bytes(text, rng),
    }
}

/// How a case ended.
#[derive(Debug)]
enum End {
    Error(String),
    Accepted,
    Panic(String),
    Hang,
}

/// Runs `read` on its own thread with a 60-second limit, catching panics.
fn run_case(read: impl FnOnce() -> reincarnate::Result<()> + Send + 'static) -> End {
    let (tx, rx) = mpsc::channel();
    let case = std::thread::Builder::new().name("mutation-case".into());
    case.spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read));
        let _ = tx.send(match r {
            Ok(Ok(())) => End::Accepted,
            Ok(Err(e)) => End::Error(e.to_string()),
            Err(p) => End::Panic(
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            ),
        });
    })
    .unwrap();
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or(End::Hang)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// One kind of file: a fixture folder, the file in it to damage, how to damage it, and how
/// the platform reads the folder.
struct Target {
    kind: &'static str,
    folder: PathBuf,
    file: &'static str,
    mutate: fn(&[u8], &mut Rng) -> (Vec<u8>, Mutation),
    read: fn(&Path) -> reincarnate::Result<()>,
    /// JSON paths whose values are free-form by design (accepted whatever they hold), with why.
    free_form: &'static [&'static str],
    weight: usize,
}

#[derive(Default)]
struct Tally {
    cases: usize,
    errors: usize,
    unclear: Vec<String>,
    accepted: Vec<String>,
    silent: Vec<String>,
    panics: Vec<String>,
    hangs: Vec<String>,
}

fn train_checkpoint(dir: &Path, algo: &str, env: &str, extra: &str) -> PathBuf {
    let out = dir.join(format!("{algo}-ck"));
    let spec: reincarnate::train::TrainSpec = reincarnate::config::from_table(
        toml::from_str(&format!(
            "env = \"{env}\"\nalgo = \"{algo}\"\n[agent]\n{extra}\n\
             [loop]\nsteps = 300\neval_interval = 0\ncheckpoint_interval = 300\nprogress = false\n"
        ))
        .unwrap(),
        "test",
    )
    .unwrap();
    reincarnate::train::run_train(&spec, 0, &candle_core::Device::Cpu, &out, false).unwrap();
    out
}

/// A checkpoint as `eval --policy` reads it (weights and config) and as `train --resume`
/// reads it (everything), resumed for a few steps.
fn read_checkpoint(dir: &Path, algo: &str, env: &str, extra: &str) -> reincarnate::Result<()> {
    let data = reincarnate::checkpoint::load_weights(dir)?;
    reincarnate::agents::from_checkpoint(&data, &candle_core::Device::Cpu)?;
    let spec: reincarnate::train::TrainSpec = reincarnate::config::from_table(
        toml::from_str(&format!(
            "env = \"{env}\"\nalgo = \"{algo}\"\n[agent]\n{extra}\n\
             [loop]\nsteps = 320\neval_interval = 0\ncheckpoint_interval = 0\nprogress = false\n"
        ))
        .unwrap(),
        "test",
    )?;
    reincarnate::train::run_train(&spec, 0, &candle_core::Device::Cpu, dir, true)?;
    Ok(())
}

const DQN_EXTRA: &str = "learning_starts = 50\nbuffer_size = 400";
const SAC_EXTRA: &str = "learning_starts = 50\nbuffer_size = 400\nbatch_size = 16";

fn read_ppo(dir: &Path) -> reincarnate::Result<()> {
    read_checkpoint(dir, "ppo", "dark_room", "")
}

/// The distillation config of the AD fixture (small, resumable).
fn ad_config() -> reincarnate::ad::DistillConfig {
    reincarnate::config::from_table(
        toml::from_str(
            "steps = 20\nbatch = 2\nwarmup_steps = 2\ncheckpoint_interval = 10\nlog_interval = 10\n\
             [model]\nn_layer = 1\nd_model = 16\nd_ff = 16\ncontext = 20\n",
        )
        .unwrap(),
        "test",
    )
    .unwrap()
}

/// An AD checkpoint as the in-context evaluation reads it, then as `distill --resume` does.
/// The dataset it was distilled from is `data` beside the campaign's case folders.
fn read_ad(dir: &Path) -> reincarnate::Result<()> {
    let dev = candle_core::Device::Cpu;
    let ck = reincarnate::checkpoint::load(dir)?;
    reincarnate::ad::curves::eval_in_context(&ck, None, TaskSet::Test, 1, 0, &dev)?;
    let data = dir.parent().unwrap().join("data");
    reincarnate::ad::distill(&ad_config(), &data, dir, 0, &dev, true)?;
    Ok(())
}

fn read_dqn(dir: &Path) -> reincarnate::Result<()> {
    read_checkpoint(dir, "dqn", "cartpole", DQN_EXTRA)
}

fn read_sac(dir: &Path) -> reincarnate::Result<()> {
    read_checkpoint(dir, "sac", "pendulum", SAC_EXTRA)
}

/// A dataset as `dataset validate` and `distill` read it.
fn read_dataset(dir: &Path) -> reincarnate::Result<()> {
    reincarnate::history::validate_or_error(dir)?;
    reincarnate::ad::train::load_dataset(dir)?;
    Ok(())
}

fn read_experiment(dir: &Path) -> reincarnate::Result<()> {
    reincarnate::experiment::load_experiment(&dir.join("exp.toml"), &[])?;
    Ok(())
}

fn read_pt(dir: &Path) -> reincarnate::Result<()> {
    let fam = reincarnate::envs::TaskFamily::from_id("cartpole")?;
    reincarnate::reincarnation::teacher::Teacher::load(
        &dir.join("q.pt").display().to_string(),
        Some("mlp:8,8"),
        fam.spec(),
        &candle_core::Device::Cpu,
    )?;
    Ok(())
}

/// A small Dark Room dataset collected into `data` by PPO (one thread).
fn dark_room_dataset(data: &Path, runs: usize, steps: u64) {
    let spec = reincarnate::collect::CollectSpec::from_flags(
        "dark_room",
        "ppo",
        TaskSet::Train,
        runs,
        steps,
        Some(1),
        None,
        0.0,
        &[],
    )
    .unwrap();
    reincarnate::collect::collect(&spec, 0, None, data, &candle_core::Device::Cpu).unwrap();
}

/// A CleanRL-layout CartPole Q-network `.pt` (`mlp:8,8`), element `i` of each tensor `value(i)`.
fn small_q_net(path: &Path, value: impl Fn(usize) -> f32) {
    let t = |name: &str, shape: Vec<usize>| {
        let n = shape.iter().product();
        (
            name.to_string(),
            shape,
            (0..n).map(&value).collect::<Vec<f32>>(),
        )
    };
    torch_pt::write_state_dict(
        path,
        &[
            t("network.0.weight", vec![8, 4]),
            t("network.0.bias", vec![8]),
            t("network.2.weight", vec![8, 8]),
            t("network.2.bias", vec![8]),
            t("network.4.weight", vec![2, 8]),
            t("network.4.bias", vec![2]),
        ],
    );
}

#[test]
fn a_seeded_mutation_campaign_over_every_file_kind_ends_in_clear_errors() {
    let cases: usize = std::env::var("MUTATION_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    let seed: u64 = std::env::var("MUTATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x18);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Fixtures, one of each kind.
    let dqn = train_checkpoint(root, "dqn", "cartpole", DQN_EXTRA);
    let sac = train_checkpoint(root, "sac", "pendulum", SAC_EXTRA);
    let data = root.join("data");
    dark_room_dataset(&data, 2, 400);
    let ppo = train_checkpoint(root, "ppo", "dark_room", "");
    let ad = root.join("ad-ck");
    reincarnate::ad::distill(
        &ad_config(),
        &data,
        &ad,
        0,
        &candle_core::Device::Cpu,
        false,
    )
    .unwrap();
    let exp = root.join("exp");
    std::fs::create_dir_all(&exp).unwrap();
    std::fs::copy("experiments/cartpole-qdagger.toml", exp.join("exp.toml")).unwrap();
    let pt = root.join("pt");
    std::fs::create_dir_all(&pt).unwrap();
    small_q_net(&pt.join("q.pt"), |i| (i as f32 * 0.01).sin());
    let parquet: &'static str = {
        let m = reincarnate::history::Manifest::load(&data).unwrap();
        Box::leak(m.runs[0].file.clone().into_boxed_str())
    };
    // Every reader accepts its untouched fixture (the checkpoints resumed in copies).
    for (folder, read) in [
        (&dqn, read_dqn as fn(&Path) -> _),
        (&sac, read_sac),
        (&ppo, read_ppo),
        (&ad, read_ad),
    ] {
        let copy = root.join("untouched");
        copy_dir(folder, &copy);
        read(&copy).unwrap();
        std::fs::remove_dir_all(&copy).unwrap();
    }
    read_dataset(&data).unwrap();
    read_experiment(&exp).unwrap();
    read_pt(&pt).unwrap();

    let checkpoint_free: &[&str] = &[
        // Metrics of the last update and the norms SAC/SimbaV2 log: any numbers, logged
        // again on resume, never used to compute anything.
        "loop.last_train",
        "agent.norm_metrics",
        // A learning rate is a number or a schedule, and a resume may lower it (a run stopped
        // by a NaN): the command line's value is the one used.
        "agent.learning_rate",
        "agent.actor_lr",
        "agent.critic_lr",
        "agent.temperature_lr",
        "agent.max_grad_norm",
    ];
    // The header's metadata: a copy of config.json for Hub tools (the platform reads
    // config.json) and the data's checksum, which files from elsewhere do not carry.
    let safetensors_free: &[&str] = &["__metadata__"];
    let targets = [
        Target {
            kind: "checkpoint config.json (dqn)",
            folder: dqn.clone(),
            file: "config.json",
            mutate: mutate_json,
            read: read_dqn,
            free_form: checkpoint_free,
            weight: 3,
        },
        Target {
            kind: "checkpoint trainer_state.json (dqn)",
            folder: dqn.clone(),
            file: "trainer_state.json",
            mutate: mutate_json,
            read: read_dqn,
            free_form: checkpoint_free,
            weight: 3,
        },
        Target {
            kind: "checkpoint model.safetensors (dqn)",
            folder: dqn.clone(),
            file: "model.safetensors",
            mutate: mutate_safetensors,
            read: read_dqn,
            free_form: safetensors_free,
            weight: 2,
        },
        Target {
            kind: "checkpoint optimizer.safetensors (dqn)",
            folder: dqn.clone(),
            file: "optimizer.safetensors",
            mutate: mutate_safetensors,
            read: read_dqn,
            free_form: safetensors_free,
            weight: 1,
        },
        Target {
            kind: "checkpoint replay.safetensors (dqn)",
            folder: dqn.clone(),
            file: "replay.safetensors",
            mutate: mutate_safetensors,
            read: read_dqn,
            free_form: safetensors_free,
            weight: 1,
        },
        Target {
            kind: "checkpoint target.safetensors (dqn)",
            folder: dqn.clone(),
            file: "target.safetensors",
            mutate: mutate_safetensors,
            read: read_dqn,
            free_form: safetensors_free,
            weight: 1,
        },
        Target {
            kind: "checkpoint config.json (sac)",
            folder: sac.clone(),
            file: "config.json",
            mutate: mutate_json,
            read: read_sac,
            free_form: checkpoint_free,
            weight: 2,
        },
        Target {
            kind: "checkpoint trainer_state.json (sac)",
            folder: sac.clone(),
            file: "trainer_state.json",
            mutate: mutate_json,
            read: read_sac,
            free_form: checkpoint_free,
            weight: 2,
        },
        Target {
            kind: "checkpoint config.json (ppo)",
            folder: ppo.clone(),
            file: "config.json",
            mutate: mutate_json,
            read: read_ppo,
            free_form: checkpoint_free,
            weight: 2,
        },
        Target {
            kind: "checkpoint trainer_state.json (ppo)",
            folder: ppo.clone(),
            file: "trainer_state.json",
            mutate: mutate_json,
            read: read_ppo,
            free_form: checkpoint_free,
            weight: 2,
        },
        Target {
            kind: "checkpoint model.safetensors (ppo)",
            folder: ppo.clone(),
            file: "model.safetensors",
            mutate: mutate_safetensors,
            read: read_ppo,
            free_form: safetensors_free,
            weight: 1,
        },
        Target {
            kind: "checkpoint optimizer.safetensors (ppo)",
            folder: ppo.clone(),
            file: "optimizer.safetensors",
            mutate: mutate_safetensors,
            read: read_ppo,
            free_form: safetensors_free,
            weight: 1,
        },
        Target {
            kind: "checkpoint config.json (ad)",
            folder: ad.clone(),
            file: "config.json",
            mutate: mutate_json,
            read: read_ad,
            free_form: checkpoint_free,
            weight: 2,
        },
        Target {
            kind: "checkpoint trainer_state.json (ad)",
            folder: ad.clone(),
            file: "trainer_state.json",
            mutate: mutate_json,
            read: read_ad,
            free_form: checkpoint_free,
            weight: 2,
        },
        Target {
            kind: "checkpoint model.safetensors (ad)",
            folder: ad.clone(),
            file: "model.safetensors",
            mutate: mutate_safetensors,
            read: read_ad,
            free_form: safetensors_free,
            weight: 1,
        },
        Target {
            kind: "checkpoint optimizer.safetensors (ad)",
            folder: ad.clone(),
            file: "optimizer.safetensors",
            mutate: mutate_safetensors,
            read: read_ad,
            free_form: safetensors_free,
            weight: 1,
        },
        Target {
            kind: "dataset.json",
            folder: data.clone(),
            file: "dataset.json",
            mutate: mutate_json,
            read: read_dataset,
            free_form: &[
                // The source algorithm's own configuration and the tasks' parameters are recorded
                // for people, as the producer wrote them.
                "source.config",
                "tasks.0.params",
                "tasks.1.params",
                "tasks.2.params",
            ],
            weight: 4,
        },
        Target {
            kind: "transition Parquet",
            folder: data.clone(),
            file: parquet,
            mutate: mutate_parquet,
            read: read_dataset,
            free_form: &[],
            weight: 3,
        },
        Target {
            kind: "experiment TOML",
            folder: exp.clone(),
            file: "exp.toml",
            mutate: mutate_toml,
            read: read_experiment,
            free_form: &[],
            weight: 3,
        },
        Target {
            kind: "PyTorch .pt",
            folder: pt.clone(),
            file: "q.pt",
            mutate: mutate_bytes,
            read: read_pt,
            free_form: &[],
            weight: 2,
        },
    ];
    let total_weight: usize = targets.iter().map(|t| t.weight).sum();
    let mut rng = Rng(seed);
    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    // Panics inside a case are counted, not printed; any other panic is reported as usual.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() != Some("mutation-case") {
            default(info)
        }
    }));
    for case in 0..cases {
        let mut pick = rng.below(total_weight);
        let target = targets
            .iter()
            .find(|t| {
                if pick < t.weight {
                    true
                } else {
                    pick -= t.weight;
                    false
                }
            })
            .unwrap();
        let dir = root.join(format!("case-{case}"));
        copy_dir(&target.folder, &dir);
        let file = dir.join(target.file);
        let original = std::fs::read(&file).unwrap();
        let (bytes, m) = (target.mutate)(&original, &mut rng);
        std::fs::write(&file, &bytes).unwrap();
        if std::env::var_os("MUTATION_TRACE").is_some() {
            eprintln!("case {case}: {} {} {}", target.kind, target.file, m.what);
        }
        let read = target.read;
        let d = dir.clone();
        let end = run_case(move || read(&d));
        let tally = tallies.entry(target.kind).or_default();
        tally.cases += 1;
        let label = format!("case {case}: {} {}", target.file, m.what);
        let file_name = Path::new(target.file)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        match end {
            End::Error(msg) => {
                tally.errors += 1;
                // Clear: the message names the damaged file, or the file of the same folder
                // that disagrees with it.
                let names_a_file = std::fs::read_dir(&dir).unwrap().any(|e| {
                    let n = e.unwrap().file_name().to_string_lossy().into_owned();
                    n.contains('.') && msg.contains(&n)
                });
                if !msg.contains(&file_name) && !names_a_file {
                    tally.unclear.push(format!("{label}: {msg}"));
                }
            }
            End::Accepted => {
                tally.accepted.push(label.clone());
                let free = target
                    .free_form
                    .iter()
                    .any(|p| m.what.contains(&format!("`{p}")));
                if m.breaks_a_field && !free && original != bytes {
                    tally.silent.push(label);
                }
            }
            End::Panic(msg) => tally.panics.push(format!("{label}: {msg}")),
            End::Hang => tally.hangs.push(label),
        }
        if !matches!(tally.hangs.last(), Some(l) if l.starts_with(&format!("case {case}:"))) {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let _ = std::panic::take_hook();
    eprintln!(
        "{:<40} {:>6} {:>7} {:>8} {:>9} {:>7} {:>7} {:>6}",
        "file kind", "cases", "errors", "unclear", "accepted", "silent", "panics", "hangs"
    );
    for (kind, t) in &tallies {
        eprintln!(
            "{:<40} {:>6} {:>7} {:>8} {:>9} {:>7} {:>7} {:>6}",
            kind,
            t.cases,
            t.errors,
            t.unclear.len(),
            t.accepted.len(),
            t.silent.len(),
            t.panics.len(),
            t.hangs.len()
        );
    }
    if std::env::var_os("MUTATION_VERBOSE").is_some() {
        for (kind, t) in &tallies {
            for l in &t.accepted {
                eprintln!("accepted: {kind}: {l}");
            }
        }
    }
    let mut failures = Vec::new();
    for (kind, t) in &tallies {
        for (what, list) in [
            ("panic", &t.panics),
            ("hang", &t.hangs),
            ("silently accepted", &t.silent),
            ("error that does not name the file", &t.unclear),
        ] {
            for l in list {
                failures.push(format!("{kind}: {what}: {l}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(tallies.values().map(|t| t.cases).sum::<usize>(), cases);
}

/// Numbers on the command line, at and past the edges of what each flag takes: every command
/// ends within the minute, with a clear refusal or a (short) valid run; nothing panics or
/// aborts.
#[test]
fn command_line_numbers_past_their_limits_are_refused_quickly() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("data");
    dark_room_dataset(&data, 1, 200);
    let pt = root.join("q.pt");
    small_q_net(&pt, |_| 0.01);
    let (d, p) = (data.display().to_string(), pt.display().to_string());
    // Each command with `{}` where the number goes; the rest keeps valid runs short.
    let commands: Vec<Vec<String>> = [
        "train --env cartpole --algo dqn --steps {} --set loop.eval_episodes=1",
        "train --env cartpole --algo dqn --steps 200 --seed {}",
        "train --env cartpole --algo dqn --steps 200 --set loop.eval_episodes={}",
        "train --env cartpole --algo dqn --steps 200 --set agent.buffer_size={}",
        "train --env pendulum --algo sac --steps 200 --set agent.batch_size={}",
        "eval --policy random --env cartpole --episodes {}",
        "collect --env dark_room --algo ppo --runs {} --steps 100 --threads 1",
        "collect --env dark_room --algo ppo --runs 1 --steps {} --threads 1",
        "distill --data DATA --steps {} --set batch=2 --set model.n_layer=1 --set model.d_model=16 --set model.d_ff=16 --set warmup_steps=0",
        "distill --data DATA --steps 2 --set batch={} --set model.n_layer=1 --set warmup_steps=0",
        "reincarnate --teacher PT --arch mlp:8,8 --method kickstart --student dqn --env cartpole --steps {}",
    ]
    .iter()
    .map(|c| c.split(' ').map(|w| w.replace("DATA", &d).replace("PT", &p)).collect())
    .collect();
    let values = [
        "0",
        "1",
        "-1",
        "1.5",
        "NaN",
        "abc",
        "100000000000",
        "18446744073709551615",
        "18446744073709551616",
    ];
    let (mut cases, mut refused, mut ran) = (0, 0, 0);
    let mut failures = Vec::new();
    for (ci, cmd) in commands.iter().enumerate() {
        for (vi, v) in values.iter().enumerate() {
            let args: Vec<String> = cmd.iter().map(|w| w.replace("{}", v)).collect();
            let out = root.join(format!("out-{ci}-{vi}"));
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_reincarnate"));
            command.args(&args);
            if args[0] != "eval" {
                command.arg("--out").arg(&out);
            }
            let mut child = command
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            cases += 1;
            let start = std::time::Instant::now();
            let status = loop {
                if let Some(s) = child.try_wait().unwrap() {
                    break Some(s);
                }
                if start.elapsed() > Duration::from_secs(60) {
                    child.kill().unwrap();
                    child.wait().unwrap();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            let line = format!("{}: {}", args.join(" "), err.lines().last().unwrap_or(""));
            match status {
                None => failures.push(format!("hang: {line}")),
                Some(_) if err.contains("panicked") => failures.push(format!("panic: {line}")),
                Some(s) => match s.code() {
                    Some(0) => ran += 1,
                    Some(1 | 2) if !err.trim().is_empty() => {
                        if std::env::var_os("MUTATION_VERBOSE").is_some() {
                            eprintln!("refused: {line}");
                        }
                        refused += 1
                    }
                    _ => failures.push(format!("abort ({s}): {line}")),
                },
            }
        }
    }
    eprintln!(
        "command line: {cases} cases, {refused} refused with a message, {ran} ran to the end"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        refused > cases / 2 && ran > 0,
        "{refused} refused, {ran} ran"
    );
}
