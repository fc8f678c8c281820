//! Data-parallel training across processes (`distill`): each rank reads its own slice of the
//! dataset and samples its own batches, gradients are averaged over the ranks before every
//! optimiser step, and rank 0 alone writes the checkpoint and metrics.
//!
//! A rank learns its place from the variables its launcher sets: `torchrun`'s `RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT`, or Slurm's `SLURM_PROCID`,
//! `SLURM_NTASKS` and `SLURM_LOCALID` under `srun` (with `MASTER_ADDR`/`MASTER_PORT` set by the
//! job script). Without them, or with a world of one, the single-process path runs. Across
//! processes the gradients travel through NCCL (feature `nccl`, CUDA devices: rank `r` uses
//! `cuda:LOCAL_RANK`); rank 0 hands the NCCL id to the others over TCP at the master address.

use crate::error::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{Device, Var};

/// A process's place in a data-parallel job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct World {
    pub rank: usize,
    pub size: usize,
    /// The rank's index on its machine: its GPU.
    pub local_rank: usize,
    /// `MASTER_ADDR:MASTER_PORT`, required when `size > 1`.
    pub master: Option<String>,
}

impl World {
    /// One process.
    pub fn single() -> Self {
        Self {
            rank: 0,
            size: 1,
            local_rank: 0,
            master: None,
        }
    }

    /// The world the launcher's variables describe (read through `var`).
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let number = |name: &str| -> Result<Option<usize>> {
            match var(name) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| {
                    Error::Config(format!("${name} is `{v}`, expected a whole number"))
                }),
            }
        };
        let (rank, size, local) = match number("WORLD_SIZE")? {
            Some(size) => (
                number("RANK")?.unwrap_or(0),
                size,
                number("LOCAL_RANK")?.unwrap_or(0),
            ),
            None => match number("SLURM_NTASKS")? {
                Some(size) if var("MASTER_ADDR").is_some() => (
                    number("SLURM_PROCID")?.unwrap_or(0),
                    size,
                    number("SLURM_LOCALID")?.unwrap_or(0),
                ),
                _ => return Ok(Self::single()),
            },
        };
        if size == 0 || rank >= size {
            return Err(Error::Config(format!(
                "data-parallel launch: rank {rank} of a world of {size} (RANK must be below WORLD_SIZE, WORLD_SIZE at least 1)"
            )));
        }
        let master = match (var("MASTER_ADDR"), var("MASTER_PORT")) {
            (Some(a), Some(p)) => {
                p.trim().parse::<u16>().map_err(|_| {
                    Error::Config(format!("$MASTER_PORT is `{p}`, expected a port number"))
                })?;
                Some(format!("{}:{}", a.trim(), p.trim()))
            }
            _ if size > 1 => {
                return Err(Error::Config(format!(
                    "data-parallel launch with WORLD_SIZE={size}: MASTER_ADDR and MASTER_PORT must be set (torchrun sets them; under Slurm, export them in the job script)"
                )))
            }
            _ => None,
        };
        Ok(Self {
            rank,
            size,
            local_rank: local,
            master,
        })
    }

    /// Whether this rank writes the outputs.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// This rank's share of `items`: item `i` when `i mod size = rank`.
    pub fn slice<T: Clone>(&self, items: &[T]) -> Vec<T> {
        items
            .iter()
            .enumerate()
            .filter(|(i, _)| i % self.size.max(1) == self.rank)
            .map(|(_, x)| x.clone())
            .collect()
    }
}

/// Gradient averaging and parameter broadcast over the ranks of a job.
pub trait Collective {
    fn world(&self) -> &World;
    /// Replaces each variable's gradient by its mean over the ranks.
    fn average_gradients(&self, grads: &mut GradStore, vars: &[Var]) -> Result<()>;
    /// Sets every rank's variables to rank 0's.
    fn broadcast_parameters(&self, vars: &[Var]) -> Result<()>;
}

/// A world of one: the mean over one rank is the gradient itself.
pub struct SingleProcess(World);

impl SingleProcess {
    pub fn new() -> Self {
        Self(World::single())
    }
}

impl Default for SingleProcess {
    fn default() -> Self {
        Self::new()
    }
}

impl Collective for SingleProcess {
    fn world(&self) -> &World {
        &self.0
    }
    fn average_gradients(&self, _grads: &mut GradStore, _vars: &[Var]) -> Result<()> {
        Ok(())
    }
    fn broadcast_parameters(&self, _vars: &[Var]) -> Result<()> {
        Ok(())
    }
}

/// The collective for `world` on `device`: the single-process one for a world of one, NCCL
/// otherwise.
pub fn connect(world: World, device: &Device) -> Result<Box<dyn Collective>> {
    if world.size == 1 {
        return Ok(Box::new(SingleProcess(world)));
    }
    connect_nccl(world, device)
}

#[cfg(feature = "nccl")]
fn connect_nccl(world: World, device: &Device) -> Result<Box<dyn Collective>> {
    Ok(Box::new(nccl::Nccl::connect(world, device)?))
}

#[cfg(not(feature = "nccl"))]
fn connect_nccl(world: World, _device: &Device) -> Result<Box<dyn Collective>> {
    Err(Error::Config(format!(
        "WORLD_SIZE={}: data-parallel training across processes needs the `nccl` feature and CUDA devices (build with scripts/build-cuda.sh --features nccl); this build runs one process",
        world.size
    )))
}

#[cfg(feature = "nccl")]
mod nccl {
    use super::{Collective, World};
    use crate::error::{Error, Result};
    use candle_core::backprop::GradStore;
    use candle_core::cuda::cudarc::nccl::safe::{Comm, Id, ReduceOp};
    use candle_core::{CpuStorage, CudaStorage, CustomOp1, Device, Layout, Shape, Var};
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    fn nccl_err(what: &str, e: impl std::fmt::Debug) -> Error {
        Error::Config(format!("NCCL {what}: {e:?}"))
    }

    /// NCCL over one CUDA device per rank.
    pub struct Nccl {
        world: World,
        comm: Comm,
    }

    /// The 128-byte NCCL id, from rank 0 to every other rank over TCP.
    fn rendezvous(world: &World) -> Result<Id> {
        let master = world
            .master
            .as_deref()
            .ok_or_else(|| Error::Config("MASTER_ADDR/MASTER_PORT are not set".into()))?;
        if world.is_root() {
            let id = Id::new().map_err(|e| nccl_err("creating the id", e))?;
            let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
            let listener = std::net::TcpListener::bind(master)
                .map_err(|e| Error::Config(format!("rank 0: cannot listen on {master}: {e}")))?;
            for _ in 1..world.size {
                let (mut s, _) = listener
                    .accept()
                    .map_err(|e| Error::Config(format!("rank 0: accepting on {master}: {e}")))?;
                s.write_all(&bytes)
                    .map_err(|e| Error::Config(format!("rank 0: sending the NCCL id: {e}")))?;
            }
            Ok(id)
        } else {
            let start = Instant::now();
            let mut stream = loop {
                match std::net::TcpStream::connect(master) {
                    Ok(s) => break s,
                    Err(e) if start.elapsed() > Duration::from_secs(300) => {
                        return Err(Error::Config(format!(
                            "rank {}: rank 0 did not answer at {master} within 5 minutes: {e}",
                            world.rank
                        )))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            };
            let mut bytes = [0u8; 128];
            stream.read_exact(&mut bytes).map_err(|e| {
                Error::Config(format!("rank {}: reading the NCCL id: {e}", world.rank))
            })?;
            let mut internal = [0 as std::ffi::c_char; 128];
            for (d, s) in internal.iter_mut().zip(bytes) {
                *d = s as std::ffi::c_char;
            }
            Ok(Id::uninit(internal))
        }
    }

    impl Nccl {
        pub fn connect(world: World, device: &Device) -> Result<Self> {
            let Device::Cuda(dev) = device else {
                return Err(Error::Config(format!(
                    "WORLD_SIZE={}: NCCL needs a CUDA device (--device cuda), not {device:?}",
                    world.size
                )));
            };
            let id = rendezvous(&world)?;
            let comm = Comm::from_rank(dev.cuda_stream(), world.rank, world.size, id)
                .map_err(|e| nccl_err("joining the communicator", e))?;
            Ok(Self { world, comm })
        }
    }

    /// `op` on a contiguous f32 tensor's device buffer, into a new buffer.
    struct Collect<'a> {
        comm: &'a Comm,
        broadcast: bool,
    }

    impl CustomOp1 for Collect<'_> {
        fn name(&self) -> &'static str {
            if self.broadcast {
                "nccl-broadcast"
            } else {
                "nccl-all-reduce-avg"
            }
        }

        fn cpu_fwd(
            &self,
            _s: &CpuStorage,
            _l: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!("{}: NCCL works on CUDA tensors only", self.name())
        }

        fn cuda_fwd(
            &self,
            s: &CudaStorage,
            l: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let Some((lo, hi)) = l.contiguous_offsets() else {
                candle_core::bail!("{}: the tensor is not contiguous", self.name())
            };
            let src = s.as_cuda_slice::<f32>()?.slice(lo..hi);
            let dev = s.device.clone();
            // SAFETY: every element is written by the collective before it is read.
            let mut dst = unsafe { dev.alloc::<f32>(hi - lo) }?;
            let r = if self.broadcast {
                self.comm.broadcast(Some(&src), &mut dst, 0)
            } else {
                self.comm.all_reduce(&src, &mut dst, &ReduceOp::Avg)
            };
            r.map_err(|e| candle_core::Error::Msg(format!("{}: {e:?}", self.name())))?;
            Ok((CudaStorage::wrap_cuda_slice(dst, dev), l.shape().clone()))
        }
    }

    impl Collective for Nccl {
        fn world(&self) -> &World {
            &self.world
        }

        fn average_gradients(&self, grads: &mut GradStore, vars: &[Var]) -> Result<()> {
            let op = Collect {
                comm: &self.comm,
                broadcast: false,
            };
            for v in vars {
                if let Some(g) = grads.get(v) {
                    let avg = g.contiguous()?.apply_op1_no_bwd(&op)?;
                    grads.insert(v, avg);
                }
            }
            Ok(())
        }

        fn broadcast_parameters(&self, vars: &[Var]) -> Result<()> {
            let op = Collect {
                comm: &self.comm,
                broadcast: true,
            };
            for v in vars {
                let b = v.as_tensor().contiguous()?.apply_op1_no_bwd(&op)?;
                v.set(&b)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::vars as env;

    #[test]
    fn the_world_comes_from_torchrun_or_slurm_variables() {
        assert_eq!(World::from_env(&env(&[])).unwrap(), World::single());
        let torchrun = env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
        ]);
        let w = World::from_env(&torchrun).unwrap();
        assert_eq!((w.rank, w.size, w.local_rank), (3, 8, 1));
        assert_eq!(w.master.as_deref(), Some("node0:29500"));
        let slurm = env(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "6"),
            ("SLURM_LOCALID", "2"),
            ("MASTER_ADDR", "n1"),
            ("MASTER_PORT", "1234"),
        ]);
        let w = World::from_env(&slurm).unwrap();
        assert_eq!((w.rank, w.size, w.local_rank), (5, 6, 2));
        // A Slurm job without a master address is not a data-parallel launch.
        assert_eq!(
            World::from_env(&env(&[("SLURM_NTASKS", "4")])).unwrap(),
            World::single()
        );
        // A world of one needs no master.
        let one = World::from_env(&env(&[("RANK", "0"), ("WORLD_SIZE", "1")])).unwrap();
        assert_eq!((one.rank, one.size), (0, 1));
        for (bad, why) in [
            (vec![("RANK", "2"), ("WORLD_SIZE", "2")], "below WORLD_SIZE"),
            (vec![("WORLD_SIZE", "2")], "MASTER_ADDR"),
            (vec![("WORLD_SIZE", "x")], "`x`"),
            (
                vec![
                    ("WORLD_SIZE", "2"),
                    ("MASTER_ADDR", "a"),
                    ("MASTER_PORT", "p"),
                ],
                "port",
            ),
        ] {
            let e = World::from_env(&env(&bad)).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn ranks_share_items_by_index() {
        let w = |rank, size| World {
            rank,
            size,
            local_rank: 0,
            master: None,
        };
        let items = [0, 1, 2, 3, 4];
        assert_eq!(w(0, 1).slice(&items), items);
        assert_eq!(w(0, 2).slice(&items), [0, 2, 4]);
        assert_eq!(w(1, 2).slice(&items), [1, 3]);
    }

    #[cfg(not(feature = "nccl"))]
    #[test]
    fn several_processes_without_nccl_say_how_to_build() {
        let w = World {
            rank: 0,
            size: 2,
            local_rank: 0,
            master: Some("127.0.0.1:1".into()),
        };
        let e = connect(w, &Device::Cpu).err().unwrap().to_string();
        assert!(e.contains("`nccl` feature"), "{e}");
        assert!(connect(World::single(), &Device::Cpu).is_ok());
    }
}
