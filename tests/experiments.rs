//! Every shipped experiment file parses (typos in them fail here, not hours into a run).

#[test]
fn shipped_experiment_files_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&p).unwrap();
            if !cfg!(feature = "gym") && text.contains("\"gym:") {
                // Without the bridge the file still parses, and running it says what to build.
                toml::from_str::<reincarnate::experiment::Experiment>(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                let e = reincarnate::experiment::load_experiment(&p, &[])
                    .err()
                    .unwrap_or_else(|| panic!("{} loads without the bridge", p.display()))
                    .to_string();
                assert!(e.contains("--features gym"), "{e}");
                n += 1;
                continue;
            }
            let exp = reincarnate::experiment::load_experiment(&p, &[])
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            // Every train stage's agent config must build (unknown keys, bad values).
            for stage in &exp.stages {
                if let reincarnate::experiment::Stage::Train(t) = stage {
                    let fam = reincarnate::envs::TaskFamily::new(&t.env.config()).unwrap();
                    let mut agent_cfg = t.agent.clone();
                    agent_cfg.insert("buffer_size".into(), toml::Value::Integer(10));
                    agent_cfg.insert("batch_size".into(), toml::Value::Integer(10));
                    reincarnate::agents::build(
                        &t.algo,
                        &agent_cfg,
                        fam.spec(),
                        &candle_core::Device::Cpu,
                        0,
                        t.train_loop.steps,
                    )
                    .unwrap_or_else(|e| panic!("{} stage {}: {e}", p.display(), t.name));
                }
                if let reincarnate::experiment::Stage::Reincarnate(r) = stage {
                    let fam = reincarnate::envs::TaskFamily::new(&r.env.config()).unwrap();
                    let mut agent_cfg = r.agent.clone();
                    agent_cfg.insert("buffer_size".into(), toml::Value::Integer(10));
                    agent_cfg.insert("batch_size".into(), toml::Value::Integer(10));
                    reincarnate::agents::build(
                        &r.student,
                        &agent_cfg,
                        fam.spec(),
                        &candle_core::Device::Cpu,
                        0,
                        r.train_loop.steps,
                    )
                    .unwrap_or_else(|e| panic!("{} stage {}: {e}", p.display(), r.name));
                }
            }
            n += 1;
        }
    }
    assert!(n >= 3, "expected the shipped experiment files, found {n}");
}
