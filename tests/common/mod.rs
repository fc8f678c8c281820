//! Helpers shared by the integration tests.

use reincarnate::checkpoint;
use reincarnate::replay::RawArray;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

/// Tensors of a safetensors file in a checkpoint (the header's metadata map has no fixed key
/// order, so files are compared by content, not by bytes).
#[allow(dead_code)]
pub fn tensors(dir: &Path, file: &str) -> BTreeMap<String, RawArray> {
    checkpoint::read_safetensors(&dir.join(file)).unwrap().0
}

/// The same tensor names and identical contents in `file` of two checkpoint folders.
#[allow(dead_code)]
pub fn assert_same_tensors(a: &Path, b: &Path, file: &str) {
    let (ta, tb) = (tensors(a, file), tensors(b, file));
    assert_eq!(
        ta.keys().collect::<Vec<_>>(),
        tb.keys().collect::<Vec<_>>(),
        "{file}: tensor names differ"
    );
    for (name, x) in &ta {
        assert!(
            x == &tb[name],
            "{file}: tensor `{name}` differs between the runs"
        );
    }
}

/// A command's stdout, after asserting that it succeeded (its status, stdout and stderr in the
/// message if not).
#[allow(dead_code)]
pub fn ok(o: &Output, what: &str) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{what}: {}\n{out}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The figures of an object-store read report, `read F MiB of DATA's T MiB of Parquet data by
/// byte ranges (R requests), C MiB from the local range cache`: (F, T, R, C).
#[allow(dead_code)]
pub fn reads(out: &str) -> (f64, f64, u64, f64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("read "))
        .unwrap_or_else(|| panic!("no read line in {out}"));
    let nums: Vec<f64> = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|t| t.parse().ok())
        .filter(|x: &f64| x.is_finite())
        .collect();
    let n = nums.len();
    (nums[0], nums[n - 3], nums[n - 2] as u64, nums[n - 1])
}

/// `distill` flags for a few steps of a one-layer model: enough to compare models bit for bit.
#[allow(dead_code)]
pub const TINY_DISTILL: &[&str] = &[
    "--steps",
    "6",
    "--set",
    "warmup_steps=2",
    "--set",
    "batch=4",
    "--set",
    "model.n_layer=1",
    "--set",
    "model.context=40",
];
