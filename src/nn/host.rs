//! Direct access to the f32 data of CPU tensors.
//!
//! Small networks spend most of an update in per-op overhead, not arithmetic, so the optimiser,
//! gradient norms and target-network averaging read and write CPU buffers directly. Everything
//! here returns `None` (or is never called) off the CPU, where callers use tensor ops instead.

use std::cell::RefCell;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Storage, StorageRef, Tensor};

/// Runs `f` on the f32 data of `t` when `t` lives on the CPU, is f32 and is contiguous.
/// `Ok(None)` otherwise, so the caller can fall back to tensor ops.
pub(crate) fn with_cpu_f32<R>(
    t: &Tensor,
    f: impl FnOnce(&[f32]) -> R,
) -> candle_core::Result<Option<R>> {
    if !t.device().is_cpu() || t.dtype() != DType::F32 || !crate::device::host_kernels() {
        return Ok(None);
    }
    let (storage, layout) = t.storage_and_layout();
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Ok(None);
    };
    match &*storage {
        Storage::Cpu(cpu) => Ok(Some(f(&cpu.as_slice::<f32>()?[start..end]))),
        _ => Ok(None),
    }
}

/// Read access, without a copy, to the f32 data of a contiguous CPU tensor for as long as the
/// value lives (the backward passes of the fused CPU ops read their inputs through it).
pub(crate) struct CpuF32<'a> {
    storage: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> CpuF32<'a> {
    /// Errors, naming `what`, unless `t` is a contiguous f32 tensor on the CPU.
    pub(crate) fn new(t: &'a Tensor, what: &str) -> candle_core::Result<Self> {
        let (storage, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("{what}: tensor is not contiguous")
        };
        if !matches!(&*storage, Storage::Cpu(CpuStorage::F32(_))) {
            candle_core::bail!(
                "{what}: expected f32 data on the CPU, found {:?} on {:?}",
                t.dtype(),
                t.device().location()
            )
        }
        Ok(Self {
            storage,
            start,
            end,
        })
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(data)) => &data[self.start..self.end],
            // `new` admits only f32 CPU storage.
            _ => &[],
        }
    }
}

/// The data of a f32 tensor as a host vector (copies from the device when needed).
pub(crate) fn to_vec_f32(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    if let Some(v) = with_cpu_f32(t, |s| s.to_vec())? {
        return Ok(v);
    }
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

fn contiguous_f32_mut<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a mut [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{what}: destination tensor is not contiguous")
    };
    match storage {
        CpuStorage::F32(data) => Ok(&mut data[start..end]),
        other => candle_core::bail!("{what}: expected f32 data, found {:?}", other.dtype()),
    }
}

pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{what}: source tensor is not contiguous")
    };
    match storage {
        CpuStorage::F32(data) => Ok(&data[start..end]),
        other => candle_core::bail!("{what}: expected f32 data, found {:?}", other.dtype()),
    }
}

/// An in-place update of one CPU tensor from another: `f(dst, src)`. The closure sits in a
/// `RefCell` because candle calls ops through `&self` while the optimiser's closure mutates its
/// moment buffers.
struct Binary<F: FnMut(&mut [f32], &[f32])>(RefCell<F>, &'static str);

impl<F: FnMut(&mut [f32], &[f32])> InplaceOp2 for Binary<F> {
    fn name(&self) -> &'static str {
        self.1
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let src = contiguous_f32(s2, l2, self.1)?;
        let dst = contiguous_f32_mut(s1, l1, self.1)?;
        if src.len() != dst.len() {
            candle_core::bail!(
                "{}: source has {} elements, destination {}",
                self.1,
                src.len(),
                dst.len()
            )
        }
        (self.0.borrow_mut())(dst, src);
        Ok(())
    }
}

/// Whether the in-place host paths apply: CPU, f32, contiguous.
pub(crate) fn is_host_f32(t: &Tensor) -> bool {
    t.device().is_cpu()
        && t.dtype() == DType::F32
        && t.is_contiguous()
        && crate::device::host_kernels()
}

/// Rewrites the data of a CPU f32 tensor in place (no allocation, no graph node), reading a
/// second tensor of the same size. Both must pass [`is_host_f32`] and must not share storage.
pub(crate) fn update_in_place_from(
    dst: &Tensor,
    src: &Tensor,
    name: &'static str,
    f: impl FnMut(&mut [f32], &[f32]),
) -> candle_core::Result<()> {
    dst.inplace_op2(src, &Binary(RefCell::new(f), name))
}

/// An in-place rewrite of one CPU tensor's data: `f(dst)`.
struct Unary<F: FnMut(&mut [f32])>(RefCell<F>, &'static str);

impl<F: FnMut(&mut [f32])> candle_core::InplaceOp1 for Unary<F> {
    fn name(&self) -> &'static str {
        self.1
    }
    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let dst = contiguous_f32_mut(s, l, self.1)?;
        (self.0.borrow_mut())(dst);
        Ok(())
    }
}

/// Rewrites the data of a CPU f32 tensor in place (no allocation, no graph node). The tensor
/// must pass [`is_host_f32`] (e.g. SimbaV2's per-row weight projection after each step).
pub(crate) fn update_in_place(
    dst: &Tensor,
    name: &'static str,
    f: impl FnMut(&mut [f32]),
) -> candle_core::Result<()> {
    dst.inplace_op1(&Unary(RefCell::new(f), name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn in_place_updates_change_the_data_and_read_the_source() {
        let a = Tensor::new(&[1f32, 2., 3.], &Device::Cpu).unwrap();
        let b = Tensor::new(&[10f32, 20., 30.], &Device::Cpu).unwrap();
        update_in_place_from(&a, &b, "add", |d, s| {
            d.iter_mut().zip(s).for_each(|(d, s)| *d = 2.0 * *d + s)
        })
        .unwrap();
        assert_eq!(a.to_vec1::<f32>().unwrap(), vec![12., 24., 36.]);
        assert_eq!(
            with_cpu_f32(&a, |s| s.iter().sum::<f32>()).unwrap(),
            Some(72.0)
        );
        // a transposed view is not contiguous: the host path declines
        let m = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu).unwrap();
        assert_eq!(with_cpu_f32(&m.t().unwrap(), |s| s.len()).unwrap(), None);
    }
}
