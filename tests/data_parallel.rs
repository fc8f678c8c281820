//! Data-parallel distill on the CPU path: a world of one, launched with torchrun's variables,
//! gives bit for bit the single-process model; ranks share a dataset's files without overlap;
//! several processes without the `nccl` feature are refused by name.

mod common;

use common::{ok, TINY_DISTILL};

use reincarnate::distributed::World;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_reincarnate");

fn reincarnate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn collect(dir: &Path) -> String {
    let data = dir.join("hist");
    let d = data.display().to_string();
    ok(
        &reincarnate(
            &[
                "collect",
                "--env",
                "dark_room",
                "--algo",
                "ppo",
                "--tasks",
                "train",
                "--runs",
                "4",
                "--steps",
                "1000",
                "--out",
                &d,
            ],
            &[],
        ),
        "collect",
    );
    d
}

fn distill(data: &str, out: &Path, env: &[(&str, &str)]) -> Output {
    let out = out.display().to_string();
    let mut args = vec!["distill", "--data", data, "--out", &out];
    args.extend_from_slice(TINY_DISTILL);
    reincarnate(&args, env)
}

#[test]
fn a_world_of_one_is_the_single_process_run_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let data = collect(dir.path());
    let plain = dir.path().join("plain");
    ok(&distill(&data, &plain, &[]), "single-process distill");
    let ranked = dir.path().join("ranked");
    let torchrun = [
        ("RANK", "0"),
        ("WORLD_SIZE", "1"),
        ("LOCAL_RANK", "0"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29531"),
    ];
    ok(
        &distill(&data, &ranked, &torchrun),
        "distill as rank 0 of 1",
    );
    common::assert_same_tensors(&plain, &ranked, "model.safetensors");
    common::assert_same_tensors(&plain, &ranked, "optimizer.safetensors");

    // Two ranks need NCCL; this build says so before any work.
    let two = [
        ("RANK", "0"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29532"),
    ];
    let o = distill(&data, &dir.path().join("two"), &two);
    let err = String::from_utf8_lossy(&o.stderr);
    if cfg!(feature = "nccl") {
        return;
    }
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("WORLD_SIZE=2") && err.contains("`nccl` feature"),
        "{err}"
    );
    // A bad launch names the variable.
    let o = distill(
        &data,
        &dir.path().join("bad"),
        &[("RANK", "1"), ("WORLD_SIZE", "1")],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("below WORLD_SIZE"), "{err}");

    // Ranks read disjoint files that together are the whole dataset.
    let folder = Path::new(&data);
    let (_, all) = reincarnate::ad::train::load_dataset(folder).unwrap();
    let rank = |r| World {
        rank: r,
        size: 3,
        local_rank: r,
        master: None,
    };
    let parts: Vec<usize> = (0..3)
        .map(|r| {
            reincarnate::ad::train::load_dataset_for(folder, &rank(r))
                .unwrap()
                .1
                .len()
        })
        .collect();
    assert!(parts.iter().all(|&n| n > 0), "{parts:?}");
    assert_eq!(parts.iter().sum::<usize>(), all.len(), "{parts:?}");
    let five = World {
        rank: 4,
        size: 5,
        local_rank: 0,
        master: None,
    };
    let e = reincarnate::ad::train::load_dataset_for(folder, &five)
        .unwrap_err()
        .to_string();
    assert!(e.contains("4 data files for 5 data-parallel ranks"), "{e}");
}
