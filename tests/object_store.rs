//! Datasets and checkpoints in object storage (feature `s3`), against a real S3-compatible server
//! started here: s3s-fs from crates.io (`scripts/s3-server.sh` builds it into `.tools/`; the test
//! command runs it first). Outside CI a missing server skips these tests with the reason; in CI
//! it is required.
#![cfg(feature = "s3")]

mod common;

use common::{ok, reads, TINY_DISTILL as DISTILL};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_reincarnate");
const KEY: &str = "reincarnate-test";
const SECRET: &str = "reincarnate-test-secret";

/// A running s3s-fs with one bucket, `bkt`, stopped on drop.
struct Server {
    child: Child,
    endpoint: String,
    /// The folder the server keeps objects in (`ROOT/bkt/KEY`).
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_binary() -> Result<PathBuf, String> {
    let bin = std::env::var_os("S3S_FS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/s3s-fs"));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "no S3 server at {} (run scripts/s3-server.sh)",
            bin.display()
        ))
    }
}

fn start() -> Option<Server> {
    let bin = match server_binary() {
        Ok(b) => b,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping: {why}");
            return None;
        }
        Err(why) => panic!("CI needs the S3 server: {why}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(root.join("bkt")).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", KEY, "--secret-key", SECRET])
        .arg(&root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "s3s-fs did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Server {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        root,
        _dir: dir,
    })
}

/// `reincarnate ARGS` as a machine with its own cache folder, with the store's credentials.
fn run(s: &Server, cache: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &s.endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("REINCARNATE_CACHE", cache)
        .output()
        .unwrap()
}

fn failed(o: &Output, what: &str) -> String {
    assert_eq!(o.status.code(), Some(1), "{what} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn sharded_collection_to_a_store_is_distilled_from_it_by_byte_ranges() {
    let Some(s) = start() else { return };
    let machines = tempfile::tempdir().unwrap();
    let cache = |name: &str| machines.path().join(name);
    // Two shards on two "machines" (separate caches), at the same time.
    let shard = |i: usize| {
        let c = cache(&format!("collector-{i}"));
        let s = &s;
        move || {
            run(
                s,
                &c,
                &[
                    "collect",
                    "--env",
                    "dark_room",
                    "--algo",
                    "ppo",
                    "--tasks",
                    "train",
                    "--runs",
                    "6",
                    "--steps",
                    "1500",
                    "--out",
                    "s3://bkt/hist",
                    "--shard",
                    &format!("{i}/2"),
                ],
            )
        }
    };
    let (a, b) = std::thread::scope(|sc| {
        let a = sc.spawn(shard(0));
        let b = sc.spawn(shard(1));
        (a.join().unwrap(), b.join().unwrap())
    });
    for (o, i) in [(&a, 0), (&b, 1)] {
        let out = ok(o, &format!("collect shard {i}"));
        assert!(out.contains("published 3 runs to s3://bkt/hist "), "{out}");
    }
    // The store holds every run and a manifest listing all six.
    let stored = s.root.join("bkt/hist");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stored.join("dataset.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["runs"].as_array().unwrap().len(), 6, "{manifest}");
    let total: u64 = walk(&stored)
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(total > 0);

    // A third machine distils from the store, reading the Parquet files by byte ranges.
    let reader = cache("trainer");
    let mut args = vec![
        "distill",
        "--data",
        "s3://bkt/hist",
        "--out",
        "s3://bkt/models/ad",
    ];
    args.extend(DISTILL);
    let out = ok(&run(&s, &reader, &args), "distill from s3");
    let (fetched, size, requests, cached) = reads(&out);
    let mib = total as f64 / (1 << 20) as f64;
    assert!(
        (size - mib).abs() < 0.006,
        "dataset size {size} MiB vs {mib}: {out}"
    );
    // Every column of every file is decoded once: the bytes read are the dataset's, no more.
    assert!(fetched > 0.0 && fetched <= size + 0.006, "{out}");
    assert!(requests >= 6, "{out}");
    assert!(out.contains("published"), "{out}");
    let mirror = reader.join("s3/bkt/hist");
    // The mirror holds pointers, not the data.
    let local_bytes: u64 = walk(&mirror)
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(local_bytes < 200 * 6, "mirror parquet bytes {local_bytes}");
    // Again on the same machine: every byte from the local range cache.
    let out2 = ok(&run(&s, &reader, &args), "distill again");
    let (fetched2, _, requests2, cached2) = reads(&out2);
    assert_eq!((fetched2, requests2), (0.0, 0), "{out2}");
    assert!(cached2 >= fetched && cached >= 0.0, "{out2}");

    // The same data read from a local folder gives the same model, bit for bit.
    let local_out = machines.path().join("ad-local");
    let mut args = vec![
        "distill".to_string(),
        "--data".into(),
        stored.display().to_string(),
        "--out".into(),
        local_out.display().to_string(),
    ];
    args.extend(DISTILL.iter().map(|a| a.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&run(&s, &cache("local"), &argv), "distill from the folder");
    let remote_model = s.root.join("bkt/models/ad/model.safetensors");
    assert!(
        remote_model.exists(),
        "the model was published to the store"
    );
    // (The files' metadata name the dataset's path, which differs; the tensors must not.)
    common::assert_same_tensors(
        &local_out,
        &s.root.join("bkt/models/ad"),
        "model.safetensors",
    );

    // Another machine evaluates the published model straight from the store.
    let out = ok(
        &run(
            &s,
            &cache("evaluator"),
            &[
                "eval",
                "--policy",
                "s3://bkt/models/ad",
                "--episodes",
                "2",
                "--json",
            ],
        ),
        "eval from s3",
    );
    assert!(out.contains("returns_by_episode"), "{out}");
}

#[test]
fn store_errors_name_the_address_and_what_to_check() {
    let Some(s) = start() else { return };
    let c = tempfile::tempdir().unwrap();
    let err = failed(
        &run(
            &s,
            c.path(),
            &["distill", "--data", "s3://bkt/nothing-here"],
        ),
        "an empty prefix",
    );
    assert!(
        err.contains("s3://bkt/nothing-here") && err.contains("no objects under this prefix"),
        "{err}"
    );
    let bad = Command::new(BIN)
        .args(["distill", "--data", "s3://bkt/hist"])
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &s.endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("REINCARNATE_CACHE", c.path())
        .output()
        .unwrap();
    let err = failed(&bad, "wrong credentials");
    assert!(
        err.contains("s3://bkt/hist") && err.contains("AWS_SECRET_ACCESS_KEY"),
        "{err}"
    );
    let err = failed(
        &run(&s, c.path(), &["distill", "--data", "s3://Bad_Bucket/x"]),
        "a bad bucket name",
    );
    assert!(err.contains("lowercase"), "{err}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
