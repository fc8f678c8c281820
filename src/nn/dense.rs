//! A fully connected layer as one graph node: `y = x Wᵀ + b`, optionally followed by ReLU.
//!
//! Why: the small networks of RL spend most of a CPU update in per-op overhead, not in
//! arithmetic. Built from tensor ops, one layer is a transpose, a matmul, the bias (a second
//! matmul, see [`crate::nn::linear::linear`]), an add and a ReLU; each op allocates a fresh
//! output, and candle's backward allocates a zeroed accumulator plus a sum for every input of
//! every node. As one [`CustomOp3`] the forward writes the bias rows into the output and lets
//! the matrix product accumulate onto them (one allocation, no separate add), ReLU is applied
//! in place, and the backward computes only the gradients that are needed: none for an input
//! that is an observation, none for weights seen through a detached view (SAC's critics in the
//! actor loss), where candle's matmul backward computes both sides always.
//!
//! The host path serves CPU tensors of f32 or f64 (f64 for the finite-difference gradient
//! checks); everything else (other devices, dtypes, ranks) uses the same formula in tensor ops.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, WithDType};

use crate::nn::linear::linear_ops;

/// `relu(x Wᵀ + b)` (with `relu`) or `x Wᵀ + b` for `x` `(rows, in)`, `w` `[out, in]`,
/// `b` `[out]`; one graph node on the CPU ([`on_host`]). Other ranks, devices or dtypes go
/// through [`linear_ops`] and `Tensor::relu`.
pub fn dense(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    relu: bool,
) -> candle_core::Result<Tensor> {
    if let Some(y) = on_host(x, w, b, relu)? {
        return Ok(y);
    }
    let y = linear_ops(x, w, b)?;
    if relu {
        y.relu()
    } else {
        Ok(y)
    }
}

/// The fused node when it applies: CPU tensors of one float dtype (f32 or f64), a rank-2 input
/// and weight and a rank-1 bias (a missing bias is a constant zero row). `None` otherwise, for
/// the caller's tensor-op path.
pub(crate) fn on_host(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    relu: bool,
) -> candle_core::Result<Option<Tensor>> {
    let dt = x.dtype();
    let inputs = x.device().is_cpu()
        && w.device().is_cpu()
        && crate::device::host_kernels()
        && matches!(dt, DType::F32 | DType::F64)
        && w.dtype() == dt
        && x.rank() == 2
        && w.rank() == 2;
    if !inputs {
        return Ok(None);
    }
    let zero;
    let bias = b.is_some();
    let b = match b {
        Some(b) if b.device().is_cpu() && b.dtype() == dt && b.rank() == 1 => b,
        Some(_) => return Ok(None),
        None => {
            zero = Tensor::zeros(w.dim(0)?, dt, w.device())?;
            &zero
        }
    };
    x.apply_op3(w, b, Dense { relu, bias }).map(Some)
}

/// Whether backward will ask for this tensor's gradient (a variable, or computed from one).
fn tracks(t: &Tensor) -> bool {
    t.track_op()
}

/// A strided 2-D view into host data: element `(i, j)` at `offset + i·rs + j·cs`.
#[derive(Clone, Copy)]
struct View<'a, T> {
    data: &'a [T],
    offset: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T: Copy> View<'a, T> {
    /// The view of a rank-2 layout, checked to lie inside `data`.
    fn new(data: &'a [T], layout: &Layout, what: &str) -> candle_core::Result<Self> {
        let (rows, cols) = layout.shape().dims2()?;
        let (rs, cs) = match layout.stride() {
            &[rs, cs] => (rs, cs),
            s => candle_core::bail!("dense: {what} has strides {s:?}, expected two"),
        };
        let offset = layout.start_offset();
        let last = offset + rows.saturating_sub(1) * rs + cols.saturating_sub(1) * cs;
        if rows > 0 && cols > 0 && last >= data.len() {
            candle_core::bail!("dense: {what} layout reaches past its storage")
        }
        Ok(Self {
            data,
            offset,
            rows,
            cols,
            rs,
            cs,
        })
    }

    /// A contiguous row-major view of a vector.
    fn dense(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self {
            data,
            offset: 0,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// The elements in row-major order when the view is contiguous.
    fn contiguous(&self) -> Option<&'a [T]> {
        let n = self.rows * self.cols;
        let row_major =
            (self.cs == 1 || self.cols <= 1) && (self.rs == self.cols || self.rows <= 1);
        row_major.then(|| &self.data[self.offset..self.offset + n])
    }

    fn at(&self, i: usize, j: usize) -> T {
        self.data[self.offset + i * self.rs + j * self.cs]
    }
}

/// Multiply-adds from which one product is split over all threads (SAC's 256×256 layers on a
/// batch of 256, 17M, run faster on one core of two; SimbaV2's 512×2048, 268M, faster on both).
const SPLIT_MIN_MACS: usize = 64 << 20;

/// `dst (m×n, row-major) = [dst +] a (m×k) · b (k×n)`.
fn matmul_into<T: WithDType>(dst: &mut [T], accumulate: bool, a: View<'_, T>, b: View<'_, T>) {
    assert!(
        a.cols == b.rows && dst.len() == a.rows * b.cols,
        "dense: matmul shapes"
    );
    if a.cols == 0 {
        if !accumulate {
            dst.iter_mut().for_each(|d| *d = T::zero());
        }
        return;
    }
    // SAFETY: `dst` holds the m·n elements of the product.
    unsafe { gemm_raw(dst.as_mut_ptr(), accumulate, a, b) }
}

/// `a (m×k) · b (k×n)` as a new row-major vector, written by gemm without zeroing it first.
fn product<T: WithDType>(a: View<'_, T>, b: View<'_, T>) -> Vec<T> {
    let len = a.rows * b.cols;
    assert!(a.cols == b.rows, "dense: matmul shapes");
    if a.cols == 0 {
        return vec![T::zero(); len];
    }
    let mut out = Vec::with_capacity(len);
    // SAFETY: the vector has room for the m·n elements; with `accumulate = false` and k > 0
    // gemm writes every one of them without reading them, so all are initialised when the
    // length is set.
    unsafe {
        gemm_raw(out.as_mut_ptr(), false, a, b);
        out.set_len(len);
    }
    out
}

/// `dst (m×n, row-major) = [dst +] a (m×k) · b (k×n)` for k > 0.
///
/// # Safety
/// `dst` points to m·n writable elements (initialised ones when `accumulate`) that alias
/// neither input.
unsafe fn gemm_raw<T: WithDType>(dst: *mut T, accumulate: bool, a: View<'_, T>, b: View<'_, T>) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    // Products this large are worth splitting over rayon's pool even where the process runs
    // ops on one core each (`device::CpuParallelism::AcrossOps`: SimbaV2's 512×2048 layers).
    let threads = if m * n * k >= SPLIT_MIN_MACS {
        rayon::current_num_threads()
    } else {
        candle_core::utils::get_num_threads()
    };
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: `View::new` checked that every element a view addresses lies inside its slice
    // (`View::dense` views are built from vectors of exactly rows·cols elements); the caller
    // guarantees `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            a.data.as_ptr().add(a.offset),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr().add(b.offset),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Weights from which [`transposed`] copies them before the forward product (512 × 512).
const TRANSPOSE_MIN_ELEMENTS: usize = 1 << 18;

/// `w`ᵀ as a row-major matrix, when `w` is a row-major matrix of at least
/// [`TRANSPOSE_MIN_ELEMENTS`] whose rows are a multiple of 512 elements (2 KiB) long; `None`
/// otherwise. The forward product `x · wᵀ` reads `wᵀ` column by column when gemm packs it,
/// strided reads that with such row lengths fall on a few cache sets. A blocked copy costs a
/// fraction of that (2026-12-05, one core, batch 256: 512 → 2,048 features 2.83 → 2.48 ms with
/// the copy, 2,048 → 512 3.88 → 2.47 ms; batch 32, 2,048 → 512: 1.82 → 0.87 ms). Other row
/// lengths gain nothing (the Nature CNN's 3,136 → 512 layer at batch 32: 0.65 ms direct,
/// 1.19 ms with the copy).
fn transposed<T: Copy>(w: &View<'_, T>) -> Option<Vec<T>> {
    let (rows, cols) = (w.rows, w.cols);
    if rows * cols < TRANSPOSE_MIN_ELEMENTS || cols % 512 != 0 {
        return None;
    }
    let src = w.contiguous()?;
    let mut dst = Vec::with_capacity(rows * cols);
    let out = &mut dst.spare_capacity_mut()[..rows * cols];
    // Blocks of `br` source rows × 64 source columns; the best height depends on the length of
    // the destination's rows (measured: 16 for 2,048 × 512 sources, 8 for 512 × 2,048).
    let br = if rows >= cols { 16 } else { 8 };
    for i0 in (0..rows).step_by(br) {
        let i1 = (i0 + br).min(rows);
        for j0 in (0..cols).step_by(64) {
            for j in j0..(j0 + 64).min(cols) {
                let column = &mut out[j * rows + i0..j * rows + i1];
                for (o, i) in column.iter_mut().zip(i0..i1) {
                    o.write(src[i * cols + j]);
                }
            }
        }
    }
    // SAFETY: the blocks cover every (i, j) once, so all rows·cols elements were written.
    unsafe { dst.set_len(rows * cols) };
    Some(dst)
}

/// Host gradients of the input, weight and bias (`None`: not asked for).
type Grads<T> = (Option<Vec<T>>, Option<Vec<T>>, Option<Vec<T>>);

/// The fused layer; `relu` says whether ReLU follows the affine map.
struct Dense {
    relu: bool,
    /// Whether the layer has a bias; without one the bias input is a zero row that is not read.
    bias: bool,
}

impl Dense {
    /// [`Dense::forward`] on the input, weight and bias data with their layouts.
    fn forward_slices<T: WithDType>(
        &self,
        [x, w, b]: [&[T]; 3],
        [lx, lw, lb]: [&Layout; 3],
    ) -> candle_core::Result<Vec<T>> {
        self.forward(
            View::new(x, lx, "input")?,
            View::new(w, lw, "weight")?,
            View::new(b, lb, "bias")?,
        )
    }

    fn forward<T: WithDType>(
        &self,
        x: View<'_, T>,
        w: View<'_, T>,
        b: View<'_, T>,
    ) -> candle_core::Result<Vec<T>> {
        let (m, n) = (x.rows, w.rows);
        if w.cols != x.cols || b.cols != n {
            candle_core::bail!(
                "dense: input ({m}, {}), weight ({n}, {}), bias ({})",
                x.cols,
                w.cols,
                b.cols
            )
        }
        let wt = transposed(&w);
        let wt_view = match &wt {
            Some(t) => View::dense(t, w.cols, w.rows),
            None => w.t(),
        };
        let mut y = if self.bias {
            // the bias rows first; the product accumulates onto them
            let bias: Vec<T> = (0..n).map(|j| b.at(0, j)).collect();
            let mut y = Vec::with_capacity(m * n);
            for _ in 0..m {
                y.extend_from_slice(&bias);
            }
            matmul_into(&mut y, true, x, wt_view);
            y
        } else {
            product(x, wt_view)
        };
        if self.relu {
            // an unconditional select (not a conditional store) so that it vectorises
            let zero = T::zero();
            for v in y.iter_mut() {
                *v = if *v > zero { *v } else { zero };
            }
        }
        Ok(y)
    }

    /// Gradients of `x`, `w`, `b` from `grad` (of the output) and the output `res`, each only
    /// where `need` says so.
    fn backward<T: WithDType>(
        &self,
        x: View<'_, T>,
        w: View<'_, T>,
        res: View<'_, T>,
        grad: View<'_, T>,
        need: [bool; 3],
    ) -> Grads<T> {
        let (m, k, n) = (x.rows, x.cols, w.rows);
        // dz = grad ⊙ 1[y > 0]: ReLU's derivative taken as 0 at 0, as candle's relu backward
        // (without ReLU, dz is `grad` itself, read in place)
        let zero = T::zero();
        let masked: Vec<T>;
        let dzv = if self.relu {
            masked = match (grad.contiguous(), res.contiguous()) {
                (Some(g), Some(y)) => g
                    .iter()
                    .zip(y)
                    .map(|(&g, &y)| if y > zero { g } else { zero })
                    .collect(),
                _ => {
                    let mut dz = Vec::with_capacity(m * n);
                    for i in 0..m {
                        for j in 0..n {
                            let keep = res.at(i, j) > zero;
                            dz.push(if keep { grad.at(i, j) } else { zero });
                        }
                    }
                    dz
                }
            };
            View::dense(&masked, m, n)
        } else {
            grad
        };
        // The input's gradient and the weight's are independent products of equal size: side
        // by side where the process splits passes over threads (`device::join_for`).
        let input_grad = || need[0].then(|| product(dzv, w));
        let param_grads = || {
            let dw = need[1].then(|| product(dzv.t(), x));
            let db = need[2].then(|| {
                let mut db = vec![T::zero(); n];
                match dzv.contiguous() {
                    Some(dz) => {
                        for row in dz.chunks_exact(n) {
                            for (d, &g) in db.iter_mut().zip(row) {
                                *d += g;
                            }
                        }
                    }
                    None => {
                        for i in 0..m {
                            for (j, d) in db.iter_mut().enumerate() {
                                *d += dzv.at(i, j);
                            }
                        }
                    }
                }
                db
            });
            (dw, db)
        };
        let work = if need[0] && need[1] { m * n * k } else { 0 };
        let (dx, (dw, db)) = crate::device::join_for(work, input_grad, param_grads);
        (dx, dw, db)
    }
}

/// The slice of a CPU storage of the dtype `T`.
fn slice<T: WithDType>(s: &CpuStorage) -> candle_core::Result<&[T]> {
    T::cpu_storage_as_slice(s)
}

/// Host data and layout of a CPU tensor, for the duration of `f`.
fn with_host<R>(
    t: &Tensor,
    f: impl FnOnce(&CpuStorage, &Layout) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(s) => f(s, layout),
        _ => candle_core::bail!("dense: expected a CPU tensor"),
    }
}

impl CustomOp3 for Dense {
    fn name(&self) -> &'static str {
        if self.relu {
            "dense-relu"
        } else {
            "dense"
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, n) = (l1.shape().dims2()?.0, l2.shape().dims2()?.0);
        let bias_layout = Layout::new((1, n).into(), vec![0, l3.stride()[0]], l3.start_offset());
        let layouts = [l1, l2, &bias_layout];
        let storage = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => {
                CpuStorage::F32(self.forward_slices([x, w, b], layouts)?)
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => {
                CpuStorage::F64(self.forward_slices([x, w, b], layouts)?)
            }
            _ => candle_core::bail!("dense: expected f32 or f64 tensors of one dtype"),
        };
        Ok((storage, (m, n).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let need = [tracks(x), tracks(w), tracks(b)];
        let (m, k) = x.dims2()?;
        let n = w.dim(0)?;
        let dev = x.device();
        macro_rules! run {
            ($t:ty) => {
                with_host(x, |xs, xl| {
                    with_host(w, |ws, wl| {
                        with_host(res, |rs, rl| {
                            with_host(grad, |gs, gl| {
                                let (dx, dw, db) = self.backward(
                                    View::new(slice::<$t>(xs)?, xl, "input")?,
                                    View::new(slice::<$t>(ws)?, wl, "weight")?,
                                    View::new(slice::<$t>(rs)?, rl, "output")?,
                                    View::new(slice::<$t>(gs)?, gl, "output gradient")?,
                                    need,
                                );
                                Ok((
                                    dx.map(|v| Tensor::from_vec(v, (m, k), dev)).transpose()?,
                                    dw.map(|v| Tensor::from_vec(v, (n, k), dev)).transpose()?,
                                    db.map(|v| Tensor::from_vec(v, n, dev)).transpose()?,
                                ))
                            })
                        })
                    })
                })
            };
        }
        match x.dtype() {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            dt => candle_core::bail!("dense: no backward for {dt:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::grad_check::reference_differences;
    use candle_core::{Device, Var};

    fn randn(rng: &mut crate::rng::Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    /// Output and every gradient equal those of the tensor-op path (`linear_ops` then `relu`),
    /// with a transposed (strided) input among the cases.
    #[test]
    fn matches_the_tensor_op_path() {
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::seed_from_u64(3);
        let (m, k, n) = (37, 19, 23);
        for (relu, strided) in [(false, false), (true, false), (true, true)] {
            let x = if strided {
                Var::from_vec(randn(&mut rng, m * k), (k, m), &dev).unwrap()
            } else {
                Var::from_vec(randn(&mut rng, m * k), (m, k), &dev).unwrap()
            };
            let w = Var::from_vec(randn(&mut rng, n * k), (n, k), &dev).unwrap();
            let b = Var::from_vec(randn(&mut rng, n), n, &dev).unwrap();
            let r = Tensor::from_vec(randn(&mut rng, m * n), (m, n), &dev).unwrap();
            let xin = if strided {
                x.as_tensor().t().unwrap()
            } else {
                x.as_tensor().clone()
            };
            let fused = dense(&xin, &w, Some(&b), relu).unwrap();
            let mut plain = linear_ops(&xin, &w, Some(&b)).unwrap();
            if relu {
                plain = plain.relu().unwrap();
            }
            let (output, grads) = reference_differences(&fused, &plain, &r, &[&x, &w, &b]).unwrap();
            assert!(output < 1e-5);
            for d in grads {
                assert!(d < 1e-4, "relu {relu} strided {strided}");
            }
        }
    }

    /// The paths the small test above does not reach: a weight large enough to be transposed
    /// before the product ([`transposed`]), no bias (the product written without a bias row),
    /// and an output gradient that arrives strided (read in place, without ReLU). Outputs are
    /// sums of 512 products of unit normals (magnitude ~20).
    #[test]
    fn large_bias_free_layers_match_the_tensor_op_path() {
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::seed_from_u64(6);
        let (m, k, n) = (8, 512, 512);
        assert!(n * k >= TRANSPOSE_MIN_ELEMENTS && k % 512 == 0);
        for (bias, strided_grad) in [(false, false), (true, false), (false, true), (true, true)] {
            let x = Var::from_vec(randn(&mut rng, m * k), (m, k), &dev).unwrap();
            let w = Var::from_vec(randn(&mut rng, n * k), (n, k), &dev).unwrap();
            let b = Var::from_vec(randn(&mut rng, n), n, &dev).unwrap();
            let bias_t = bias.then(|| b.as_tensor().clone());
            let mut fused = dense(&x, &w, bias_t.as_ref(), false).unwrap();
            let mut plain = linear_ops(&x, &w, bias_t.as_ref()).unwrap();
            let mut r = Tensor::from_vec(randn(&mut rng, m * n), (m, n), &dev).unwrap();
            if strided_grad {
                // the backward of a transpose hands the layer a transposed gradient
                (fused, plain, r) = (fused.t().unwrap(), plain.t().unwrap(), r.t().unwrap());
            }
            let mut vars = vec![&x, &w];
            if bias {
                vars.push(&b);
            }
            let (output, grads) = reference_differences(&fused, &plain, &r, &vars).unwrap();
            assert!(output < 1e-3, "bias {bias}: output off by {output}");
            for (i, d) in grads.into_iter().enumerate() {
                assert!(
                    d < 1e-3,
                    "bias {bias} strided {strided_grad}: gradient {i} off by {d}"
                );
            }
        }
    }

    /// f64 central differences against the fused backward, through two stacked layers so the
    /// input gradient of the second is exercised too.
    #[test]
    fn gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::seed_from_u64(4);
        let mut draw = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.normal()).collect() };
        let (batch, inp, hid, out) = (4, 3, 5, 2);
        let vals = [
            draw(batch * inp),
            draw(hid * inp),
            draw(hid),
            draw(out * hid),
            draw(out),
        ];
        let r = Tensor::from_vec(draw(batch * out), (batch, out), &dev).unwrap();
        let shapes: [&[usize]; 5] = [&[batch, inp], &[hid, inp], &[hid], &[out, hid], &[out]];
        let inputs: Vec<(Vec<f64>, &[usize])> = vals.into_iter().zip(shapes).collect();
        let bad = crate::nn::grad_check::gradient_mismatches(
            &inputs,
            |t| {
                let h = dense(&t[0], &t[1], Some(&t[2]), true)?;
                (dense(&h, &t[3], Some(&t[4]), false)?.tanh()? * &r)?.sum_all()
            },
            1e-6,
            &dev,
        )
        .unwrap();
        assert!(bad.is_empty(), "{bad:#?}");
    }

    /// No gradient is computed for an observation or for detached weights.
    #[test]
    fn skips_gradients_nobody_asks_for() {
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::seed_from_u64(5);
        let x = Tensor::from_vec(randn(&mut rng, 8 * 3), (8, 3), &dev).unwrap();
        let w = Var::from_vec(randn(&mut rng, 4 * 3), (4, 3), &dev).unwrap();
        let b = Var::from_vec(randn(&mut rng, 4), 4, &dev).unwrap();
        let g = dense(&x, &w, Some(&b), true)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(&x).is_none());
        assert!(g.get(&w).is_some() && g.get(&b).is_some());
        let a = Var::from_vec(randn(&mut rng, 8 * 3), (8, 3), &dev).unwrap();
        let wd = w.as_detached_tensor();
        let g = dense(&a, &wd, Some(&b.as_detached_tensor()), false)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(&a).is_some());
        assert!(g.get(&wd).is_none() && g.get(&w).is_none());
    }
}
