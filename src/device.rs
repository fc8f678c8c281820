//! `--device auto|cpu|cuda[:N]`.

use crate::error::{Error, Result};
use candle_core::Device;

/// Parses a device flag. `auto` picks CUDA device 0 when this binary was built with
/// `--features cuda` and a GPU answers, and the CPU otherwise.
pub fn parse_device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(auto_device()),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                None => 0,
                Some(n) => n.parse::<usize>().map_err(|_| {
                    Error::Config(format!(
                        "--device {s}: expected cuda:N with N a GPU index, e.g. cuda:0"
                    ))
                })?,
            };
            cuda_device(ordinal)
        }
        other => Err(Error::Config(format!(
            "--device {other}: expected one of auto, cpu, cuda, cuda:N"
        ))),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal)
        .map_err(|e| Error::Config(format!("--device cuda:{ordinal}: no usable GPU ({e})")))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(ordinal: usize) -> Result<Device> {
    Err(Error::Config(format!(
        "--device cuda:{ordinal}: this binary was built without CUDA; rebuild with \
         `cargo build --release --features cuda` (see ../shared/gpu/) or use --device cpu"
    )))
}

fn auto_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}

/// A short name for logs and JSON: `cpu` or `cuda:N`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Pins candle's CPU thread count once per process (and sets the allocator policy of
/// [`keep_freed_memory`]). Without `RAYON_NUM_THREADS`, candle 0.11
/// asks `num_cpus::get_physical()` (a read of /proc/cpuinfo) on every matrix multiply, which
/// costs more than the multiply itself for the small networks of RL. `threads = None` keeps a
/// value the user set and otherwise uses every available core.
pub fn configure_cpu_threads(threads: Option<usize>) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let n = threads.or_else(|| {
            std::env::var("RAYON_NUM_THREADS")
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|&n| n > 0)
        });
        let n = n.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        // SAFETY: called before candle or rayon start their thread pools (first use in a
        // process), so no other thread reads the environment concurrently.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
        keep_freed_memory();
    });
}

/// Asks glibc's allocator to keep freed memory for reuse. candle allocates a fresh buffer for
/// every op's output and every gradient; with glibc's adaptive defaults (mmap threshold from
/// 128 KiB, trim threshold twice that) large buffers are mapped and unmapped and freed heap
/// tops are trimmed, so the next update faults the same pages in again and the kernel zeroes
/// them. On the DQN MinAtar update that kernel work was 41% of the time on a loaded 2-core
/// machine (3% with these settings). Thresholds: mapped only above 32 MiB (glibc's largest),
/// heap returned to the system only when 512 MiB sit free at its top. The cost is a resident
/// size that stays at its peak, which a training process reaches anyway.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called once, on the first
    // agent construction, and glibc serialises it with allocations.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto_work_bad_names_are_explained() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        parse_device("auto").unwrap();
        let e = parse_device("gpu").unwrap_err().to_string();
        assert!(e.contains("auto, cpu, cuda"), "{e}");
        let e = parse_device("cuda:x").unwrap_err().to_string();
        assert!(e.contains("cuda:N"), "{e}");
        #[cfg(not(feature = "cuda"))]
        assert!(parse_device("cuda")
            .unwrap_err()
            .to_string()
            .contains("--features cuda"));
    }
}
