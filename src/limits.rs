//! Limits checked before anything is allocated or started: a shape, count or size that this
//! machine cannot hold is a clear error that says how much memory it would take, never an
//! allocation failure that aborts the process.

use crate::error::{Error, Result};

/// The memory this machine can give now (`MemAvailable`, else `MemTotal`), the ceiling for
/// anything held in memory whole: more than that would be an out-of-memory kill, not an error;
/// 16 GiB where it cannot be read.
pub fn memory_limit() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    field("MemAvailable:")
        .or_else(|| field("MemTotal:"))
        .unwrap_or(16 << 30)
}

/// `n` bytes for a message: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Bytes of `elem_bytes`-sized elements in the product of `counts` (`None` past `u64`).
pub fn bytes(counts: &[usize], elem_bytes: u64) -> Option<u64> {
    counts
        .iter()
        .try_fold(elem_bytes, |acc, &c| acc.checked_mul(c as u64))
}

/// Errors unless `bytes` (`None`: beyond counting) fits in this machine's memory; `what` names
/// the thing and the setting that sized it.
pub fn check_memory(what: impl FnOnce() -> String, bytes: Option<u64>) -> Result<()> {
    let limit = memory_limit();
    match bytes {
        Some(b) if b <= limit => Ok(()),
        Some(b) => Err(Error::Config(format!(
            "{} would take {} of memory, more than this machine has free ({})",
            what(),
            human_bytes(b),
            human_bytes(limit)
        ))),
        None => Err(Error::Config(format!(
            "{} would take more memory than can be counted (over 16 EiB); this machine has {} free",
            what(),
            human_bytes(limit)
        ))),
    }
}

/// Environment steps a run may be given: 10^10 is months to years at the speeds this platform
/// reaches on one machine (10^3–10^5 steps/s). More needs `loop.allow_long = true`.
pub const MAX_ENV_STEPS: u64 = 10_000_000_000;
/// Gradient steps a distillation may be given.
pub const MAX_GRADIENT_STEPS: u64 = 1_000_000_000;
/// Episodes one evaluation may run.
pub const MAX_EPISODES: u64 = 1_000_000;

/// Errors unless `value` (of the setting `what`) is at most `max`, explaining why the limit is
/// there.
pub fn check_count(what: &str, value: u64, max: u64, why: &str) -> Result<()> {
    if value > max {
        return Err(Error::Config(format!(
            "{what} = {value} is more than {max}: {why}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_past_memory_are_errors_that_say_how_much() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert!(memory_limit() > 1 << 20);
        assert_eq!(bytes(&[2, 3], 4), Some(24));
        assert_eq!(bytes(&[usize::MAX, 2], 4), None);
        assert!(check_memory(|| "x".into(), Some(1024)).is_ok());
        let e = check_memory(|| "agent.buffer_size = 1e12".into(), Some(1 << 50))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("agent.buffer_size") && e.contains("1024.0 TiB"),
            "{e}"
        );
        let e = check_memory(|| "y".into(), None).unwrap_err().to_string();
        assert!(e.contains("more memory than can be counted"), "{e}");
        assert!(check_count("loop.steps", MAX_ENV_STEPS, MAX_ENV_STEPS, "").is_ok());
        let e = check_count("loop.steps", u64::MAX, MAX_ENV_STEPS, "years")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("loop.steps = 18446744073709551615") && e.contains("years"),
            "{e}"
        );
    }
}
