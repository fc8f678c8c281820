//! `--device auto|cpu|cuda[:N]`.

use crate::error::{Error, Result};
use candle_core::Device;

thread_local! {
    static HOST_KERNELS: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Whether the fused host kernels (dense layers, convolutions, attention, layer norm, in-place
/// optimiser updates) may run on CPU tensors. Off, the CPU runs the tensor-op path that a GPU
/// runs, which is how the GPU's code is tested on a machine without one: per thread with
/// [`with_host_kernels`], or for a whole process with `REINCARNATE_HOST_KERNELS=0`.
pub fn host_kernels() -> bool {
    static FROM_ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    HOST_KERNELS.with(|c| c.get()).unwrap_or_else(|| {
        *FROM_ENV.get_or_init(|| std::env::var("REINCARNATE_HOST_KERNELS").as_deref() != Ok("0"))
    })
}

/// Runs `f` on this thread with the fused host kernels on or off ([`host_kernels`]).
pub fn with_host_kernels<T>(on: bool, f: impl FnOnce() -> T) -> T {
    let before = HOST_KERNELS.with(|c| c.replace(Some(on)));
    let out = f();
    HOST_KERNELS.with(|c| c.set(before));
    out
}

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
         `cargo build --release --features cuda` (scripts/build-cuda.sh builds it where no CUDA toolkit is installed) or use --device cpu"
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

/// How a CPU process spends its cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuParallelism {
    /// Every tensor op splits its work over all cores (candle's default). Right for the
    /// transformer of algorithm distillation, whose matrix products are large.
    WithinOps,
    /// Tensor ops run on one core each; the agents run independent parts of an update at once
    /// (the target network's forward pass beside the online one, SAC's two critics, the
    /// optimiser's parameter chunks) on a pool of all cores. Right for the small networks of
    /// online RL: on a 2-core machine splitting one of their matrix products over both cores is
    /// slower than running it on one (DQN on MinAtar: 506 vs 674 updates/s, SAC 256-256:
    /// 148 vs 179), so the second core is better spent on other work.
    AcrossOps,
}

/// The settings of the first [`configure_cpu`] call.
static CPU: std::sync::OnceLock<(usize, CpuParallelism)> = std::sync::OnceLock::new();

/// Pins the process's CPU threads once (the first call wins) and sets the allocator policy of
/// [`keep_freed_memory`]; returns the settings in force. `threads = None` keeps a
/// `RAYON_NUM_THREADS` the user set and otherwise uses every available core.
///
/// candle reads `RAYON_NUM_THREADS` on every matrix multiply (and without it asks
/// `num_cpus::get_physical()`, a read of /proc/cpuinfo that costs more than the multiply itself
/// for small networks) and `CANDLE_NUM_THREADS` when it starts its element-wise pool. With
/// [`CpuParallelism::AcrossOps`] rayon's global pool is built with all the threads first, and
/// both variables are then set to 1 so that candle's own ops stay on the calling thread.
pub fn configure_cpu(
    threads: Option<usize>,
    parallelism: CpuParallelism,
) -> (usize, CpuParallelism) {
    *CPU.get_or_init(|| {
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
        // A pool built already (by a library user, or a test harness) keeps its size.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
        let per_op = match parallelism {
            CpuParallelism::WithinOps => n,
            CpuParallelism::AcrossOps => 1,
        };
        // SAFETY: called before candle starts its thread pools and before this process spawns
        // threads of its own (first use in a process: `main`, or an agent's constructor in a
        // library), so no other thread reads the environment concurrently.
        unsafe {
            std::env::set_var("RAYON_NUM_THREADS", per_op.to_string());
            if parallelism == CpuParallelism::AcrossOps {
                std::env::set_var("CANDLE_NUM_THREADS", "1");
            }
        }
        keep_freed_memory();
        (n, parallelism)
    })
}

/// [`configure_cpu`] keeping an earlier choice, or splitting every op over all cores.
pub fn configure_cpu_threads(threads: Option<usize>) {
    configure_cpu(threads, CpuParallelism::WithinOps);
}

/// The process's CPU threads and how they are used (configuring with defaults if nothing has).
pub fn cpu_parallelism() -> (usize, CpuParallelism) {
    configure_cpu(None, CpuParallelism::WithinOps)
}

/// Runs `f` on a thread of rayon's pool when the process runs ops across cores, so that
/// [`join`] inside it hands half of its work to an idle worker. Called from a thread outside the
/// pool, every `rayon::join` would instead queue both halves on the pool and put the caller to
/// sleep until they finish: two thread wake-ups per call, which cost more than the small
/// networks' work they parallelise.
pub fn run_on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match cpu_parallelism() {
        (n, CpuParallelism::AcrossOps) if n > 1 && rayon::current_thread_index().is_none() => {
            rayon::scope(|_| f())
        }
        _ => f(),
    }
}

/// Multiply-adds (about batch × parameters for one forward pass) below which handing a pass to
/// another thread costs more than it saves: a hand-off takes some microseconds. Measured on 2
/// cores: DQN's CartPole update (120-84, batch 128: 1.4M) is slower split, MinAtar's (conv,
/// batch 32: 4.2M) faster.
pub const MIN_SPLIT_WORK: usize = 2_000_000;

/// [`join`] when each side has at least [`MIN_SPLIT_WORK`] multiply-adds, else one after the
/// other.
pub fn join_for<A, B, RA, RB>(work: usize, a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    if work >= MIN_SPLIT_WORK {
        join(a, b)
    } else {
        (a(), b())
    }
}

/// Runs `a` and `b` at once when the process runs ops across cores
/// ([`CpuParallelism::AcrossOps`]), one after the other otherwise. Both are pure functions of
/// their inputs, so the results do not depend on the mode.
pub fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    match cpu_parallelism() {
        (n, CpuParallelism::AcrossOps) if n > 1 => rayon::join(a, b),
        _ => (a(), b()),
    }
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
    fn the_host_kernel_switch_sends_cpu_tensors_down_the_tensor_op_path() {
        use candle_core::{DType, Tensor};
        let x = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::ones((4, 3), DType::F32, &Device::Cpu).unwrap();
        let fused = crate::nn::dense::on_host(&x, &w, None, false).unwrap();
        let plain = with_host_kernels(false, || {
            crate::nn::dense::on_host(&x, &w, None, false).unwrap()
        });
        assert!(fused.is_some() && plain.is_none());
        // The switch is per thread and restored afterwards; both paths compute the same layer.
        assert!(host_kernels());
        let y = crate::nn::dense::dense(&x, &w, None, false).unwrap();
        let z = with_host_kernels(false, || {
            crate::nn::dense::dense(&x, &w, None, false).unwrap()
        });
        assert_eq!(y.to_vec2::<f32>().unwrap(), z.to_vec2::<f32>().unwrap());
    }

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
