//! Tests that cross modules: files written and read back, datasets validated and merged,
//! windows sampled from real (small) histories.

use std::path::{Path, PathBuf};

use super::*;
use crate::envs::{EnvConfig, EnvSpec, Space};
use crate::rng::Rng;

fn env_spec(obs_dim: usize, action: ActionSpec) -> EnvSpec {
    EnvSpec {
        config: EnvConfig::new("test_env"),
        observation_space: Space::Box {
            shape: vec![obs_dim],
            low: crate::envs::Bounds::Scalar(-1.0),
            high: crate::envs::Bounds::Scalar(1.0),
        },
        action_space: match action {
            ActionSpec::Discrete => Space::Discrete { n: 4 },
            ActionSpec::Continuous { dim } => Space::Box {
                shape: vec![dim],
                low: crate::envs::Bounds::Scalar(-1.0),
                high: crate::envs::Bounds::Scalar(1.0),
            },
        },
        max_episode_steps: 10,
        num_tasks: 8,
        observation_dtype: Default::default(),
    }
}

/// `runs` runs of episodes of random lengths 1..=6, random values, sorted.
fn history(schema: TransitionSchema, runs: u32, episodes: u32, seed: u64) -> Transitions {
    let mut rng = Rng::seed_from_u64(seed);
    let mut t = Transitions::new(schema);
    let (d, ad, pd) = (schema.obs_dim, schema.action_dim(), schema.policy_dim());
    for run in 0..runs {
        for episode in 0..episodes {
            let len = 1 + rng.below(6) as u32;
            for step in 0..len {
                let obs: Vec<f32> = (0..d).map(|_| rng.normal() as f32).collect();
                let next: Vec<f32> = (0..d).map(|_| rng.normal() as f32).collect();
                let cont: Vec<f32> = (0..ad).map(|_| rng.uniform_f32()).collect();
                let pol: Vec<f32> = (0..pd).map(|_| rng.uniform_f32()).collect();
                let action = match schema.action {
                    ActionSpec::Discrete => ActionRef::Discrete(rng.below(4) as i64),
                    ActionSpec::Continuous { .. } => ActionRef::Continuous(&cont),
                };
                let last = step + 1 == len;
                let term = last && rng.bernoulli(0.5);
                t.push(&TransitionRef {
                    run,
                    task: run % 3,
                    episode,
                    step,
                    obs: &obs,
                    action,
                    reward: rng.normal() as f32,
                    terminated: term,
                    truncated: last && !term,
                    next_obs: &next,
                    policy: schema.policy.map(|_| pol.as_slice()),
                });
            }
        }
    }
    t
}

fn write(path: &Path, data: &Transitions, row_group_rows: usize) -> FileSummary {
    let opts = WriterOptions {
        row_group_rows,
        ..Default::default()
    };
    let mut w = TransitionWriter::create(path, data.schema, None, &opts).unwrap();
    w.push_batch(data).unwrap();
    w.finish().unwrap()
}

#[test]
fn round_trip_is_exact_for_every_layout() {
    let dir = tempfile::tempdir().unwrap();
    let layouts = [
        TransitionSchema::new(3, ActionSpec::Discrete),
        TransitionSchema::new(2, ActionSpec::Continuous { dim: 2 }),
        TransitionSchema::new(4, ActionSpec::Discrete).with_policy(PolicyKind::Probs, 4),
        TransitionSchema::new(1, ActionSpec::Continuous { dim: 3 })
            .with_policy(PolicyKind::Logits, 6),
    ];
    for (k, schema) in layouts.into_iter().enumerate() {
        let data = history(schema, 3, 20, k as u64);
        let path = dir.path().join(format!("f{k}.parquet"));
        // small row groups: several per file, and a partial last one
        let summary = write(&path, &data, 64);
        assert_eq!(summary.rows, data.len() as u64);
        assert_eq!(summary.row_groups, data.len().div_ceil(64));
        let r = TransitionReader::open(&path).unwrap();
        assert_eq!(r.num_row_groups(), summary.row_groups);
        assert_eq!(*r.schema(), schema);
        assert_eq!(r.read_all().unwrap(), data, "layout {schema:?}");
        // batch iteration gives the same rows
        let mut cat = Transitions::new(schema);
        for b in r.batches(None, 50).unwrap() {
            let b = b.unwrap();
            for i in 0..b.len() {
                cat.push(&b.row(i));
            }
        }
        assert_eq!(cat, data);
        // the writer's run summaries are what the reader computes from the file
        assert_eq!(r.runs().unwrap(), summary.runs);
        assert_eq!(summary.runs.len(), 3);
    }
}

#[test]
fn projection_reads_only_the_named_columns() {
    let dir = tempfile::tempdir().unwrap();
    let data = history(TransitionSchema::new(2, ActionSpec::Discrete), 2, 5, 1);
    let path = dir.path().join("p.parquet");
    write(&path, &data, 1000);
    let r = TransitionReader::open(&path).unwrap();
    let t = r.read_columns(&["reward"]).unwrap();
    assert_eq!(t.run, data.run);
    assert_eq!(t.reward, data.reward);
    assert!(t.obs.is_empty() && t.episode.is_empty());
    let e = r.read_columns(&["rewrd"]).unwrap_err().to_string();
    assert!(
        e.contains("rewrd") && e.contains("did you mean `reward`"),
        "{e}"
    );
    let arrow = r
        .record_batches(Some(&["obs"]), 1000)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(arrow.num_columns(), 2);
}

#[test]
fn episodes_have_returns_and_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let data = history(TransitionSchema::new(1, ActionSpec::Discrete), 2, 4, 2);
    let path = dir.path().join("e.parquet");
    write(&path, &data, 7);
    let eps = TransitionReader::open(&path).unwrap().episodes().unwrap();
    assert_eq!(eps.len(), 8);
    let total: usize = eps.iter().map(|e| e.len()).sum();
    assert_eq!(total, data.len());
    for e in &eps {
        let want: f64 = data.reward[e.rows.clone()]
            .iter()
            .map(|&r| f64::from(r))
            .sum();
        assert!((e.ret - want).abs() < 1e-9);
        assert!(e.complete);
        assert!(data.step[e.rows.clone()]
            .iter()
            .enumerate()
            .all(|(i, &s)| s as usize == i));
    }
}

#[test]
fn writer_rejects_unsorted_rows_and_wrong_shapes_naming_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.parquet");
    let schema = TransitionSchema::new(2, ActionSpec::Discrete);
    let mut w = TransitionWriter::create(&path, schema, None, &WriterOptions::default()).unwrap();
    let row = |episode, step, obs: &'static [f32]| TransitionRef {
        run: 0,
        task: 0,
        episode,
        step,
        obs,
        action: ActionRef::Discrete(1),
        reward: 0.0,
        terminated: false,
        truncated: false,
        next_obs: &[0.0, 0.0],
        policy: None,
    };
    w.push(&row(1, 0, &[0.0, 0.0])).unwrap();
    let e = w.push(&row(0, 5, &[0.0, 0.0])).unwrap_err().to_string();
    assert!(
        e.contains("u.parquet") && e.contains("row 1") && e.contains("sorted"),
        "{e}"
    );
    let e = w.push(&row(1, 1, &[0.0])).unwrap_err().to_string();
    assert!(
        e.contains("row 1") && e.contains("obs has length 1, expected 2"),
        "{e}"
    );
    let mut bad = row(1, 1, &[0.0, 0.0]);
    bad.action = ActionRef::Continuous(&[0.5]);
    assert!(w.push(&bad).is_err());
    // dropping an unfinished writer leaves no file under the final name, nor a temp file
    drop(w);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn unfinished_file_never_appears_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.parquet");
    let data = history(TransitionSchema::new(2, ActionSpec::Discrete), 1, 10, 3);
    let opts = WriterOptions {
        row_group_rows: 8,
        ..Default::default()
    };
    let mut w = TransitionWriter::create(&path, data.schema, None, &opts).unwrap();
    w.push_batch(&data).unwrap();
    assert!(
        !path.exists(),
        "a row group was flushed but the file must stay hidden"
    );
    w.finish().unwrap();
    assert!(path.exists());
}

#[test]
fn bad_files_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = history(TransitionSchema::new(2, ActionSpec::Discrete), 2, 10, 4);
    let path = dir.path().join("good.parquet");
    write(&path, &data, 16);
    let bytes = std::fs::read(&path).unwrap();

    // truncated: cut in half, and cut just before the footer's magic
    for (name, len) in [
        ("half.parquet", bytes.len() / 2),
        ("cut.parquet", bytes.len() - 3),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes[..len]).unwrap();
        let e = TransitionReader::open(&p)
            .err()
            .expect("must fail")
            .to_string();
        assert!(e.contains(name) && e.contains("Parquet"), "{e}");
    }
    // data pages damaged but footer intact: decoding fails with an error, not a panic
    let mut damaged = bytes.clone();
    for b in damaged[8..bytes.len() / 3].iter_mut() {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    let p = dir.path().join("damaged.parquet");
    std::fs::write(&p, &damaged).unwrap();
    if let Ok(r) = TransitionReader::open(&p) {
        let res = r.read_all();
        if let Err(e) = res {
            assert!(e.to_string().contains("damaged.parquet"), "{e}");
        }
    }
    // not Parquet at all, and empty
    for (name, content) in [
        ("text.parquet", &b"run,task\n0,0\n"[..]),
        ("empty.parquet", &b""[..]),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        let e = TransitionReader::open(&p)
            .err()
            .expect("must fail")
            .to_string();
        assert!(e.contains(name) && e.contains("not a Parquet file"), "{e}");
    }
}

#[test]
fn wrong_column_type_is_refused_by_name() {
    use arrow::array::{ArrayRef, Float64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    // A file that has everything right except `reward` as Float64.
    let dir = tempfile::tempdir().unwrap();
    let data = history(TransitionSchema::new(2, ActionSpec::Discrete), 1, 3, 5);
    let good = writer::to_record_batch(&data.schema.to_arrow(), data.clone()).unwrap();
    let mut fields: Vec<Field> = good
        .schema()
        .fields()
        .iter()
        .map(|f| (**f).clone())
        .collect();
    let mut cols: Vec<ArrayRef> = good.columns().to_vec();
    let i = fields.iter().position(|f| f.name() == "reward").unwrap();
    fields[i] = Field::new("reward", DataType::Float64, false);
    cols[i] = Arc::new(Float64Array::from(vec![0.0; data.len()]));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let path = dir.path().join("f64.parquet");
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(Some(vec![
            parquet::file::metadata::KeyValue::new(
                schema::META_FORMAT.into(),
                schema::FORMAT_NAME.to_string(),
            ),
            parquet::file::metadata::KeyValue::new(schema::META_VERSION.into(), "1".to_string()),
        ]))
        .build();
    let f = std::fs::File::create(&path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let e = TransitionReader::open(&path)
        .err()
        .expect("must fail")
        .to_string();
    assert!(e.contains("f64.parquet"), "{e}");
    assert!(
        e.contains("column `reward`: expected Float32, found Float64"),
        "{e}"
    );
}

fn header(spec: &EnvSpec, layout: TransitionSchema) -> Manifest {
    Manifest::new(
        spec.clone(),
        layout,
        (0..3)
            .map(|i| TaskEntry {
                index: i,
                params: serde_json::json!({"goal": i}),
            })
            .collect(),
        "train",
        SourceAlgo {
            name: "ppo".into(),
            config: serde_json::json!({"lr": 3e-4}),
        },
    )
}

/// A dataset folder of `runs` runs, two runs per file.
fn make_dataset(folder: &Path, runs: u32, seed: u64) -> (Manifest, Transitions) {
    let layout = TransitionSchema::new(2, ActionSpec::Discrete);
    let spec = env_spec(2, ActionSpec::Discrete);
    let data = history(layout, runs, 6, seed);
    let mut w = DatasetWriter::create(folder, header(&spec, layout))
        .unwrap()
        .with_rows_per_file(1);
    // rows_per_file = 1 → every run starts a new file; push in two halves to exercise batches
    w.push_batch(&data).unwrap();
    (w.finish().unwrap(), data)
}

fn read_dataset(folder: &Path) -> Transitions {
    let m = Manifest::load(folder).unwrap();
    let mut all = Transitions::new(m.layout);
    for f in m.files() {
        let t = TransitionReader::open(&folder.join(f))
            .unwrap()
            .read_all()
            .unwrap();
        for i in 0..t.len() {
            all.push(&t.row(i));
        }
    }
    all
}

#[test]
fn dataset_round_trips_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("ds");
    let (m, data) = make_dataset(&folder, 3, 6);
    assert_eq!(m.runs.len(), 3);
    assert_eq!(
        m.files(),
        vec![
            "data/part-00000.parquet",
            "data/part-00001.parquet",
            "data/part-00002.parquet"
        ]
    );
    // serde_json (without `float_roundtrip`) may move a return by one ulp: compare the rest exactly
    let loaded = Manifest::load(&folder).unwrap();
    assert_eq!(
        (&loaded.env, &loaded.tasks, &loaded.source, loaded.layout),
        (&m.env, &m.tasks, &m.source, m.layout)
    );
    for (a, b) in loaded.runs.iter().zip(&m.runs) {
        assert_eq!(
            (&a.file, a.summary.run, &a.summary.rows, a.summary.episodes),
            (&b.file, b.summary.run, &b.summary.rows, b.summary.episodes)
        );
        assert!((a.summary.last_return.unwrap() - b.summary.last_return.unwrap()).abs() < 1e-12);
    }
    assert_eq!(read_dataset(&folder), data);
    assert_eq!(validate(&folder), vec![]);
    let s = summarize(&folder).unwrap();
    assert_eq!(
        (s.runs, s.tasks, s.transitions, s.episodes, s.files),
        (3, 3, data.len() as u64, 18, 3)
    );
    assert!(s.mean_first_return.is_some());
    assert!(s.to_string().contains("transitions  "));
    // refuses to overwrite
    assert!(DatasetWriter::create(&folder, header(&m.env, m.layout)).is_err());
}

#[test]
fn validate_reports_every_problem_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("ds");
    let (mut m, _) = make_dataset(&folder, 4, 7);
    // 1. run 3's entry removed → its rows have no manifest entry
    let removed = m.runs.pop().unwrap();
    // 2. run 0 claims wrong episode count; 3. run 1 escapes the folder; 4. run 2 points to a missing file
    m.runs[0].summary.episodes += 1;
    m.runs[1].file = "../outside.parquet".into();
    m.runs[2].file = "data/missing.parquet".into();
    m.runs.push(RunEntry {
        file: "/etc/passwd".into(),
        summary: removed.summary.clone(),
    });
    m.save(&folder).unwrap();
    let problems = validate(&folder);
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    let all = text.join("\n");
    let has = |file: &str, msg: &str| {
        assert!(
            problems
                .iter()
                .any(|p| p.file.ends_with(file) && p.message.contains(msg)),
            "no problem `{msg}` for {file} in:\n{all}"
        )
    };
    has(
        "part-00000.parquet",
        "run 0: 7 episodes in dataset.json but 6 in the file",
    );
    has("dataset.json", "`../outside.parquet` contains `..`");
    has("dataset.json", "`/etc/passwd` is absolute");
    has("missing.parquet", "file does not exist");
    // part-00003 still holds run 3 but no valid entry names that file → unreferenced
    has("part-00003.parquet", "not named by any run");
    // part-00001 / part-00002 are not named either
    has("part-00001.parquet", "not named by any run");
    assert!(validate_or_error(&folder)
        .unwrap_err()
        .to_string()
        .contains("problem(s)"));

    // a run missing from the manifest while its file is named
    let folder2 = dir.path().join("ds2");
    let (mut m2, _) = make_dataset(&folder2, 2, 8);
    let f = m2.runs[0].file.clone();
    m2.runs[1].file = f.clone();
    m2.runs.remove(0);
    m2.save(&folder2).unwrap();
    let problems = validate(&folder2);
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("run 0 (rows 0..") && p.message.contains("no entry")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("lists run 1 in this file")),
        "{problems:?}"
    );

    // no manifest at all
    let p = validate(dir.path());
    assert_eq!(p.len(), 1);
    assert!(
        p[0].file.ends_with("dataset.json") && p[0].message.contains("cannot load"),
        "{p:?}"
    );
}

#[test]
fn validate_catches_unsorted_files_and_wrong_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("ds");
    let (m, _) = make_dataset(&folder, 2, 9);
    // Replace part-00000 with an unsorted file written behind the writer's back.
    let path = folder.join(&m.runs[0].file);
    let mut data = TransitionReader::open(&path).unwrap().read_all().unwrap();
    data.step.swap(0, 1);
    let batch = writer::to_record_batch(&data.schema.to_arrow(), data.clone()).unwrap();
    let kv = data
        .schema
        .footer_metadata(Some(&m.env))
        .unwrap()
        .into_iter()
        .map(|(k, v)| parquet::file::metadata::KeyValue::new(k, v))
        .collect();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(Some(kv))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    // And part-00001 with a continuous-action file.
    let other = history(
        TransitionSchema::new(2, ActionSpec::Continuous { dim: 1 }),
        1,
        2,
        1,
    );
    write(&folder.join(&m.runs[1].file), &other, 100);
    let problems = validate(&folder);
    assert!(
        problems
            .iter()
            .any(|p| p.file == path && p.message.contains("row 1") && p.message.contains("sorted")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.file.ends_with("part-00001.parquet")
                && p.message.contains("column `action`: expected Int64")),
        "{problems:?}"
    );
}

#[test]
fn merge_renumbers_runs_and_refuses_mismatched_envs() {
    let dir = tempfile::tempdir().unwrap();
    let a: PathBuf = dir.path().join("a");
    let b: PathBuf = dir.path().join("b");
    let (_, da) = make_dataset(&a, 2, 10);
    let (_, db) = make_dataset(&b, 3, 11);
    let out = dir.path().join("merged");
    let m = merge(&[a.clone(), b.clone()], &out).unwrap();
    assert_eq!(
        m.runs.iter().map(|r| r.summary.run).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(validate(&out), vec![]);
    let merged = read_dataset(&out);
    assert_eq!(merged.len(), da.len() + db.len());
    // run 2 of the merge is run 0 of b
    let mut expect = db.clone();
    for r in expect.run.iter_mut() {
        *r += 2;
    }
    let tail = merged.len() - db.len();
    assert_eq!(merged.run[tail..], expect.run[..]);
    assert_eq!(merged.obs[tail * 2..], expect.obs[..]);
    // returns carried over
    let ma = Manifest::load(&a).unwrap();
    assert_eq!(
        m.runs[0].summary.last_return,
        ma.runs[0].summary.last_return
    );

    // mismatched env spec
    let c = dir.path().join("c");
    make_dataset(&c, 1, 12);
    let mut mc = Manifest::load(&c).unwrap();
    mc.env.max_episode_steps = 99;
    mc.save(&c).unwrap();
    let e = merge(&[a.clone(), c.clone()], &dir.path().join("m2"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("env spec differs") && e.contains("c/dataset.json") && e.contains("99"),
        "{e}"
    );
    assert!(!dir.path().join("m2").join("dataset.json").exists());
}

#[test]
fn sampler_windows_cross_episodes_pad_and_mask() {
    let schema = TransitionSchema::new(1, ActionSpec::Discrete);
    // run 0: 3 episodes of 4 steps, run 1: 2 episodes of 4 steps; obs = row index
    let mut t = Transitions::new(schema);
    let mut row = 0;
    for (run, eps) in [(0u32, 3u32), (1, 2)] {
        for episode in 0..eps {
            for step in 0..4u32 {
                let o = [row as f32];
                t.push(&TransitionRef {
                    run,
                    task: run,
                    episode,
                    step,
                    obs: &o,
                    action: ActionRef::Discrete(row as i64 % 4),
                    reward: row as f32 * 10.0,
                    terminated: false,
                    truncated: step == 3,
                    next_obs: &o,
                    policy: None,
                });
                row += 1;
            }
        }
    }
    let s = WindowSampler::new(&t, 6, 1).unwrap();
    assert_eq!(s.len(), 20);
    // window ending at row 5 (episode 1, step 1 of run 0) reaches back into episode 0
    let w = s.windows_ending_at(&[5]);
    assert_eq!(w.rows, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(w.mask, vec![1.0; 6]);
    assert_eq!(w.has_prev, vec![0.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
    assert_eq!(w.prev_reward[1..], [0.0, 10.0, 20.0, 30.0, 40.0]);
    assert_eq!(w.target_action, Actions::Discrete(vec![0, 1, 2, 3, 0, 1]));
    assert_eq!(w.prev_action, Actions::Discrete(vec![0, 0, 1, 2, 3, 0]));
    assert_eq!(w.episode_start, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    // the return of the episode so far restarts at each episode (rewards are 10 × row)
    assert_eq!(w.episode_return, vec![0.0, 0.0, 10.0, 30.0, 0.0, 40.0]);
    // episode 1's first slot holds episode 0's final observation (next_obs of row 3 = 3)
    assert_eq!(w.prev_final_obs, vec![0.0, 0.0, 0.0, 0.0, 3.0, 0.0]);
    // window ending at run 1's second row: left-padded, never reaching into run 0
    let w = s.windows_ending_at(&[13]);
    assert_eq!(w.rows, vec![-1, -1, -1, -1, 12, 13]);
    assert_eq!(w.mask, vec![0.0, 0.0, 0.0, 0.0, 1.0, 1.0]);
    assert_eq!(w.obs, vec![0.0, 0.0, 0.0, 0.0, 12.0, 13.0]);
    assert_eq!(w.has_prev[4], 0.0);

    // every 2nd episode: run 0 keeps episodes 0 and 2, run 1 keeps episode 0
    let s2 = WindowSampler::new(&t, 6, 2).unwrap();
    assert_eq!(s2.len(), 12);
    let w = s2.windows_ending_at(&[5]);
    assert_eq!(w.rows, vec![0, 1, 2, 3, 8, 9]);
    // the previous reward of the first kept row of episode 2 is the last reward of episode 0
    assert_eq!(w.prev_reward[4], 30.0);
    assert_eq!(w.episode_return, vec![0.0, 0.0, 10.0, 30.0, 0.0, 80.0]);
    assert_eq!(w.prev_final_obs, vec![0.0, 0.0, 0.0, 0.0, 3.0, 0.0]);

    // deterministic per seed, different across seeds
    let a = s.sample(32, &mut Rng::seed_from_u64(1));
    let b = s.sample(32, &mut Rng::seed_from_u64(1));
    let c = s.sample(32, &mut Rng::seed_from_u64(2));
    assert_eq!(a, b);
    assert_ne!(a.rows, c.rows);
    assert_eq!(a.obs.len(), 32 * 6);
    // every sampled window is contiguous in kept order within one run
    for i in 0..32 {
        let rows: Vec<i64> = a.rows[i * 6..(i + 1) * 6]
            .iter()
            .copied()
            .filter(|&r| r >= 0)
            .collect();
        assert!(rows.windows(2).all(|p| p[1] == p[0] + 1));
        assert!(rows
            .iter()
            .all(|&r| t.run[r as usize] == t.run[*rows.last().unwrap() as usize]));
    }
    assert!(WindowSampler::new(&t, 0, 1).is_err());
    assert!(WindowSampler::new(&t, 4, 0).is_err());
}

#[test]
fn bench_io_round_trips_small() {
    let dir = tempfile::tempdir().unwrap();
    let figs = bench_io(5_000, dir.path()).unwrap();
    let names: Vec<&str> = figs.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["io/write", "io/read", "io/file_size"]);
    assert!(figs.iter().all(|f| f.value > 0.0));
}

/// `REINCARNATE_BENCH_ROWS=10000000 cargo test --release --lib history::tests::bench_io_print -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_io_print() {
    let n = std::env::var("REINCARNATE_BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::var("REINCARNATE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    if std::env::var("REINCARNATE_BENCH_KEEP").is_ok() {
        let data = bench_io::synthetic_history(n, 0);
        write(
            &dir.join("keep.parquet"),
            &data,
            writer::DEFAULT_ROW_GROUP_ROWS,
        );
        let cont = TransitionSchema::new(3, ActionSpec::Continuous { dim: 2 })
            .with_policy(PolicyKind::Logits, 4);
        write(&dir.join("keep-cont.parquet"), &history(cont, 2, 3, 0), 8);
    }
    for f in bench_io(n, &dir).unwrap() {
        println!("{} {} {}", f.name, f.value, f.unit);
    }
}

#[cfg(unix)]
#[test]
fn manifest_paths_may_not_leave_the_folder_through_a_symlink() {
    use crate::history::manifest::resolve_data_path;
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("secret.parquet");
    std::fs::write(&outside, b"x").unwrap();
    let folder = dir.path().join("data-set");
    std::fs::create_dir_all(folder.join("data")).unwrap();
    symlink(&outside, folder.join("data/part-00000.parquet")).unwrap();
    let e = resolve_data_path(&folder, "data/part-00000.parquet").unwrap_err();
    assert!(
        e.contains("outside the dataset folder through a symlink"),
        "{e}"
    );
    // Inside the folder, or not there yet: fine.
    std::fs::write(folder.join("data/part-00001.parquet"), b"x").unwrap();
    assert!(resolve_data_path(&folder, "data/part-00001.parquet").is_ok());
    assert!(resolve_data_path(&folder, "data/part-00002.parquet").is_ok());
    // The Hub cache's layout: a snapshot's file links into the repository's blobs.
    let repo = dir.path().join("datasets--org--name");
    let snap = repo.join("snapshots/abc123");
    std::fs::create_dir_all(snap.join("data")).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::write(repo.join("blobs/f00d"), b"x").unwrap();
    symlink(
        repo.join("blobs/f00d"),
        snap.join("data/part-00000.parquet"),
    )
    .unwrap();
    assert!(resolve_data_path(&snap, "data/part-00000.parquet").is_ok());
}
