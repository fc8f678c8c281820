//! 2-d convolution over NCHW tensors with PyTorch's parameter names and default initialisation.

use candle_core::{DType, Tensor, Var};

use crate::error::Result;
use crate::nn::dense::dense;
use crate::nn::host::CpuF32;
use crate::nn::init::Init;
use crate::nn::params::ParamPath;
use crate::nn::spectral_norm::{SnMode, SpectralNorm};

/// `y = conv(x, w) + b` for `x` `(batch, in, h, w)`, kernel `w` `[out, in, kh, kw]`, `b` `[out]`
/// (cross-correlation, as PyTorch).
///
/// Stride 1 runs as im2col + one batched matmul built from tensor ops: its backward is a
/// matmul too, and it skips the input gradient when the input is an observation. candle's
/// `conv2d` backward always computes that input gradient by a transposed convolution; on the
/// MinAtar network this way is about 2.5× faster per update on the CPU. A stride `s > 1` is
/// first turned into stride 1 by space-to-depth ([`space_to_depth`]), exactly.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    if stride <= 1 {
        return conv2d_im2col(x, w, b, padding);
    }
    let x = if padding > 0 {
        x.pad_with_zeros(2, padding, padding)?
            .pad_with_zeros(3, padding, padding)?
    } else {
        x.clone()
    };
    let (xs, ws) = space_to_depth(&x, w, stride)?;
    conv2d_im2col(&xs, &ws, b, 0)
}

/// A stride-`s` convolution of `x` `(batch, c, h, w)` by `w` `(out, c, kh, kw)` as a stride-1
/// convolution of the returned pair: the kernel padded with zero taps to multiples of `s`
/// (`kh' = s·⌈kh/s⌉`), each `s × s` block of input pixels moved into channels
/// (`x'[b, c·s² + p·s + q, i, j] = x[b, c, i·s + p, j·s + q]`) and the kernel likewise
/// (`w'[o, c·s² + p·s + q, a, e] = w[o, c, a·s + p, e·s + q]`), so that
/// `Σ w'·x'` over a `kh'/s × kw'/s` window is `Σ w[o, c, di, dj]·x[b, c, i·s + di, j·s + dj]`.
/// The input is cut or zero-extended to the `(oh − 1)·s + kh'` rows (and columns) the output
/// windows read, so the output keeps its `⌊(h − kh)/s⌋ + 1` rows.
fn space_to_depth(x: &Tensor, w: &Tensor, s: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let (batch, c, h, wd) = x.dims4()?;
    let (c_out, c_w, kh, kw) = w.dims4()?;
    if c_w != c {
        candle_core::bail!("conv2d: input has {c} channels, kernel expects {c_w}")
    }
    let (Some(oh), Some(ow)) = (conv_out_size(h, kh, s, 0), conv_out_size(wd, kw, s, 0)) else {
        candle_core::bail!("conv2d: input {h}×{wd} is smaller than the {kh}×{kw} kernel")
    };
    let (kh2, kw2) = (kh.div_ceil(s) * s, kw.div_ceil(s) * s);
    let w = w
        .pad_with_zeros(2, 0, kh2 - kh)?
        .pad_with_zeros(3, 0, kw2 - kw)?;
    let (h2, w2) = ((oh - 1) * s + kh2, (ow - 1) * s + kw2);
    let fit = |x: Tensor, dim: usize, have: usize, want: usize| -> candle_core::Result<Tensor> {
        if want > have {
            x.pad_with_zeros(dim, 0, want - have)
        } else {
            x.narrow(dim, 0, want)
        }
    };
    let x = fit(fit(x.clone(), 2, h, h2)?, 3, wd, w2)?;
    let xs = x
        .reshape((batch, c, h2 / s, s, w2 / s, s))?
        .permute((0, 1, 3, 5, 2, 4))?
        .contiguous()?
        .reshape((batch, c * s * s, h2 / s, w2 / s))?;
    let ws = w
        .reshape((c_out, c, kh2 / s, s, kw2 / s, s))?
        .permute((0, 1, 3, 5, 2, 4))?
        .contiguous()?
        .reshape((c_out, c * s * s, kh2 / s, kw2 / s))?;
    Ok((xs, ws))
}

/// Stride-1 convolution as `W_(out, in·kh·kw) × cols_(batch, in·kh·kw, oh·ow)`.
///
/// A bias is folded into the same product (a row of ones appended to the columns, the bias
/// appended to the kernel matrix): its gradient then comes out of the matrix product instead of
/// a sum over batch and positions, which candle's CPU backward computes far more slowly.
fn conv2d_im2col(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    padding: usize,
) -> candle_core::Result<Tensor> {
    let (batch, c_in, _, _) = x.dims4()?;
    let (c_out, c_w, kh, kw) = w.dims4()?;
    if c_w != c_in {
        candle_core::bail!("conv2d: input has {c_in} channels, kernel expects {c_w}")
    }
    let x = if padding > 0 {
        x.pad_with_zeros(2, padding, padding)?
            .pad_with_zeros(3, padding, padding)?
    } else {
        x.clone()
    };
    let (h, wd) = (x.dim(2)?, x.dim(3)?);
    let (Some(oh), Some(ow)) = (conv_out_size(h, kh, 1, 0), conv_out_size(wd, kw, 1, 0)) else {
        candle_core::bail!("conv2d: input {h}×{wd} is smaller than the {kh}×{kw} kernel")
    };
    // cols[b, c, di·kw + dj, i, j] = x[b, c, i + di, j + dj], flattened in the kernel's
    // (in, kh, kw) order
    let mut taps = Vec::with_capacity(kh * kw);
    for di in 0..kh {
        for dj in 0..kw {
            taps.push(x.narrow(2, di, oh)?.narrow(3, dj, ow)?);
        }
    }
    let cols = Tensor::stack(&taps, 2)?.reshape((batch, c_in * kh * kw, oh * ow))?;
    let wm = w.reshape((c_out, c_in * kh * kw))?;
    let (wm, cols) = match b {
        Some(b) => {
            let ones = Tensor::ones((batch, 1, oh * ow), cols.dtype(), cols.device())?;
            (
                Tensor::cat(&[&wm, &b.reshape((c_out, 1))?], 1)?,
                Tensor::cat(&[&cols, &ones], 1)?,
            )
        }
        None => (wm, cols),
    };
    wm.broadcast_matmul(&cols)?.reshape((batch, c_out, oh, ow))
}

/// The shapes of one im2col.
struct Im2col {
    batch: usize,
    h: usize,
    w: usize,
    c: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    stride: usize,
    padding: usize,
}

/// The im2col matrix `(batch·oh·ow, kh·kw·c)` of a channel-last input `(batch, h, w, c)`:
/// row `(b, i, j)` holds `x[b, i·s + di − p, j·s + dj − p, ch]` at column `(di, dj, ch)`
/// (zero outside the input). In this column order a row is `kh` runs of up to `kw·c`
/// consecutive input values, copied whole. A new tensor without a graph: the input carries no
/// gradient.
fn im2col_nhwc(x: &Tensor, g: &Im2col) -> Result<Tensor> {
    let x = x.contiguous()?;
    let data = CpuF32::new(&x, "conv input")?;
    let xs = data.as_slice();
    let run = g.kw * g.c;
    let k = g.kh * run;
    let mut cols = vec![0f32; g.batch * g.oh * g.ow * k];
    let mut rows = cols.chunks_exact_mut(k);
    for b in 0..g.batch {
        for i in 0..g.oh {
            for j in 0..g.ow {
                let Some(row) = rows.next() else {
                    continue;
                };
                // input columns j·s − p .. j·s − p + kw, clipped to the input
                let x0 = (j * g.stride) as isize - g.padding as isize;
                let lo = (-x0).clamp(0, g.kw as isize) as usize;
                let hi = (g.w as isize - x0).clamp(0, g.kw as isize) as usize;
                if lo >= hi {
                    continue;
                }
                for (di, out) in row.chunks_exact_mut(run).enumerate() {
                    let y = (i * g.stride + di) as isize - g.padding as isize;
                    if y < 0 || y >= g.h as isize {
                        continue;
                    }
                    let start = ((b * g.h + y as usize) * g.w) as isize + x0 + lo as isize;
                    let start = start as usize * g.c;
                    out[lo * g.c..hi * g.c].copy_from_slice(&xs[start..start + (hi - lo) * g.c]);
                }
            }
        }
    }
    Ok(Tensor::from_vec(
        cols,
        (g.batch * g.oh * g.ow, k),
        x.device(),
    )?)
}

/// `(batch, rows·cols)` read as `(batch, rows, cols)` → `(batch, cols, rows)`, contiguous:
/// one graph node whose backward is the reverse swap. candle's strided copy computes every
/// element's source index from the full shape; this is a plain blocked loop.
struct SwapLastTwo {
    batch: usize,
    rows: usize,
    cols: usize,
}

impl SwapLastTwo {
    fn apply(x: &Tensor, batch: usize, rows: usize, cols: usize) -> Result<Tensor> {
        if x.device().is_cpu()
            && crate::device::host_kernels()
            && x.dtype() == DType::F32
            && x.elem_count() == batch * rows * cols
        {
            Ok(x.apply_op1(SwapLastTwo { batch, rows, cols })?)
        } else {
            Ok(x.reshape((batch, rows, cols))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((batch, cols * rows))?)
        }
    }
}

impl candle_core::CustomOp1 for SwapLastTwo {
    fn name(&self) -> &'static str {
        "swap-last-two"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let candle_core::CpuStorage::F32(data) = s else {
            candle_core::bail!("swap-last-two: expected f32")
        };
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("swap-last-two: expected a contiguous input")
        };
        let (rows, cols) = (self.rows, self.cols);
        let src = &data[start..end];
        let mut dst = vec![0f32; src.len()];
        for (d, s) in dst
            .chunks_exact_mut(rows * cols)
            .zip(src.chunks_exact(rows * cols))
        {
            // sequential writes; the strided reads stay within one sample's block
            for (c, d_row) in d.chunks_exact_mut(rows).enumerate() {
                for (dv, s_row) in d_row.iter_mut().zip(s.chunks_exact(cols)) {
                    *dv = s_row[c];
                }
            }
        }
        Ok((
            candle_core::CpuStorage::F32(dst),
            (self.batch, rows * cols).into(),
        ))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let back = SwapLastTwo::apply(&grad.contiguous()?, self.batch, self.cols, self.rows)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok(Some(back))
    }
}

/// A square-kernel convolution: `<path>.weight` `[out, in, k, k]` and `<path>.bias` `[out]`,
/// initialised U(-1/√(in·k·k), 1/√(in·k·k)) as PyTorch's `nn.Conv2d`; optionally spectrally
/// normalised (the kernel viewed as an `[out, in·k·k]` matrix).
pub struct Conv2d {
    name: String,
    weight: Var,
    bias: Var,
    stride: usize,
    padding: usize,
    sn: Option<SpectralNorm>,
}

/// Size of a convolution's output side for an input side `size`.
pub fn conv_out_size(size: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    (size + 2 * padding)
        .checked_sub(kernel)
        .map(|d| d / stride.max(1) + 1)
}

impl Conv2d {
    /// The MinAtar network's convolution uses `kernel = 3, stride = 1, padding = 0`.
    pub fn new(
        mut p: ParamPath<'_>,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        sn: SnMode,
    ) -> Result<Self> {
        let init = Init::torch_default(in_channels * kernel * kernel);
        let weight = p.var("weight", &[out_channels, in_channels, kernel, kernel], init)?;
        let bias = p.var("bias", &[out_channels], init)?;
        let sn = match sn {
            SnMode::Off => None,
            mode => Some(SpectralNorm::new(&mut p, &weight, mode)?),
        };
        Ok(Self {
            name: p.prefix().to_string(),
            weight,
            bias,
            stride,
            padding,
            sn,
        })
    }

    /// Forward pass on NCHW input; `train` runs the spectral-norm power iteration (if any).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let bias = Some(self.bias.as_tensor());
        let Some(sn) = &self.sn else {
            return Ok(conv2d(
                x,
                self.weight.as_tensor(),
                bias,
                self.stride,
                self.padding,
            )?);
        };
        let applied = sn.apply(self.weight.as_tensor(), train)?;
        // the kernel is far smaller than the output: divide the kernel
        let w = applied.weight(self.weight.as_tensor())?;
        let y = conv2d(x, &w, bias, self.stride, self.padding)?;
        Ok(match applied.output_divisor {
            Some(s) => y.broadcast_div(&s)?,
            None => y,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }

    /// `relu(forward_t(x))` for a channel-last input `(batch, h, w, c)` (MinAtar's
    /// observations), output NCHW `(batch, out, oh, ow)`.
    ///
    /// For an input that carries no gradient (an observation) on the CPU in f32 the
    /// convolution is one [`dense`] node over the input's im2col rows (one row per output
    /// position, in the kernel's `(in, kh, kw)` order, built straight from the channel-last
    /// data), followed by one copy that puts channels ahead of positions. Its backward is then
    /// a single matrix product for the kernel's gradient, where the tensor-op path transposes
    /// the input, stacks nine shifted views, multiplies per sample and sums the per-sample
    /// gradients. Anything else transposes to NCHW and runs [`Conv2d::forward_t`].
    pub fn forward_relu_nhwc_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (batch, h, wd, c_in) = x.dims4()?;
        let (c_out, c_w, kh, kw) = self.weight.dims4()?;
        let fused = !x.track_op()
            && x.device().is_cpu()
            && crate::device::host_kernels()
            && x.dtype() == DType::F32
            && c_w == c_in;
        let geometry = (
            conv_out_size(h, kh, self.stride, self.padding),
            conv_out_size(wd, kw, self.stride, self.padding),
        );
        let (true, (Some(oh), Some(ow))) = (fused, geometry) else {
            let nchw = x.permute((0, 3, 1, 2))?.contiguous()?;
            return Ok(self.forward_t(&nchw, train)?.relu()?);
        };
        let (w, divisor) = match &self.sn {
            None => (self.weight.as_tensor().clone(), None),
            Some(sn) => {
                let applied = sn.apply(self.weight.as_tensor(), train)?;
                (
                    applied.weight(self.weight.as_tensor())?,
                    applied.output_divisor,
                )
            }
        };
        let geom = Im2col {
            batch,
            h,
            w: wd,
            c: c_in,
            kh,
            kw,
            oh,
            ow,
            stride: self.stride,
            padding: self.padding,
        };
        let cols = im2col_nhwc(x, &geom)?;
        // the kernel's columns in the im2col order (kh, kw, in): a copy of a few hundred values
        let wm = w
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((c_out, kh * kw * c_in))?;
        let bias = self.bias.as_tensor();
        let y = match divisor {
            None => dense(&cols, &wm, Some(bias), true)?,
            Some(s) => dense(&cols, &wm, Some(bias), false)?
                .broadcast_div(&s)?
                .relu()?,
        };
        // (batch·oh·ow, out) → (batch, out, oh, ow)
        let y = y.reshape((batch, oh * ow * c_out))?;
        Ok(SwapLastTwo::apply(&y, batch, oh * ow, c_out)?.reshape((batch, c_out, oh, ow))?)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn weight(&self) -> &Var {
        &self.weight
    }
    pub fn bias(&self) -> &Var {
        &self.bias
    }
    pub fn spectral_norm(&self) -> Option<&SpectralNorm> {
        self.sn.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::grad_check::reference_differences;
    use crate::nn::params::ParamStore;
    use candle_core::Device;

    #[test]
    fn shapes_names_and_a_hand_computed_output() {
        let mut store = ParamStore::new(&Device::Cpu, 0);
        let c = Conv2d::new(store.pp("q").pp(0), 4, 16, 3, 1, 0, SnMode::Off).unwrap();
        assert_eq!(c.name(), "q.0");
        assert_eq!(store.get("q.0.weight").unwrap().dims(), &[16, 4, 3, 3]);
        let x = Tensor::zeros((2, 4, 10, 10), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(c.forward(&x).unwrap().dims(), &[2, 16, 8, 8]);
        assert_eq!(conv_out_size(10, 3, 1, 0), Some(8));
        // 1 channel, 3×3 input, 2×2 kernel of ones, bias 0.5: sums of 2×2 windows + 0.5
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 9., &dev)
            .unwrap()
            .reshape((1, 1, 3, 3))
            .unwrap();
        let w = Tensor::ones((1, 1, 2, 2), candle_core::DType::F32, &dev).unwrap();
        let b = Tensor::new(&[0.5f32], &dev).unwrap();
        let y: Vec<f32> = conv2d(&x, &w, Some(&b), 1, 0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(y, vec![8.5, 12.5, 20.5, 24.5]);
    }

    #[test]
    fn im2col_matches_candle_conv2d() {
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::seed_from_u64(1);
        let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
        for (k, pad) in [(3, 0), (3, 1), (2, 0)] {
            let x = Tensor::from_vec(draw(2 * 3 * 6 * 5), (2, 3, 6, 5), &dev).unwrap();
            let w = Tensor::from_vec(draw(4 * 3 * k * k), (4, 3, k, k), &dev).unwrap();
            let a = conv2d(&x, &w, None, 1, pad).unwrap();
            let b = x.conv2d(&w, pad, 1, 1, 1).unwrap();
            assert_eq!(a.dims(), b.dims());
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        }
    }

    /// The channel-last fused path (im2col rows through one dense node) gives the output and
    /// the kernel and bias gradients of the NCHW tensor-op path, with padding, stride 2 and
    /// spectral normalisation (whose σ divides the kernel) among the cases.
    #[test]
    fn channel_last_fused_path_matches_the_tensor_op_path() {
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::seed_from_u64(9);
        for (k, stride, pad, sn) in [
            (3, 1, 0, SnMode::Off),
            (3, 1, 1, SnMode::Off),
            (2, 2, 1, SnMode::Off),
            (3, 1, 0, SnMode::Forward),
        ] {
            let mut store = ParamStore::new(&dev, 5);
            let c = Conv2d::new(store.pp("c"), 3, 4, k, stride, pad, sn).unwrap();
            let nhwc: Vec<f32> = (0..2 * 8 * 6 * 3).map(|_| rng.normal() as f32).collect();
            let x = Tensor::from_vec(nhwc, (2, 8, 6, 3), &dev).unwrap();
            let nchw = x.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
            // forward_t(train = false) first: the power iteration must not run between the two
            let reference = c.forward_t(&nchw, false).unwrap().relu().unwrap();
            let fused = c.forward_relu_nhwc_t(&x, false).unwrap();
            assert_eq!(fused.dims(), reference.dims());
            let n = reference.elem_count();
            let r: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
            let r = Tensor::from_vec(r, reference.dims(), &dev).unwrap();
            let (out, grads) =
                reference_differences(&fused, &reference, &r, &[c.weight(), c.bias()]).unwrap();
            assert!(
                out < 1e-5,
                "k {k} stride {stride} pad {pad}: output off by {out}"
            );
            for (g, what) in grads.iter().zip(["kernel", "bias"]) {
                assert!(
                    *g < 1e-4,
                    "k {k} stride {stride} pad {pad}: {what} gradient off by {g}"
                );
            }
        }
    }

    /// Space-to-depth strided convolutions equal candle's direct ones: the Nature CNN's
    /// 8×8/4 and 4×4/2, a kernel that is no multiple of its stride, rows left over at the
    /// border, padding.
    #[test]
    fn strided_convolution_matches_candle_conv2d() {
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::seed_from_u64(11);
        let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
        for (c, h, w, k, stride, pad) in [
            (4, 84, 84, 8, 4, 0),
            (32, 20, 20, 4, 2, 0),
            (3, 11, 9, 3, 2, 0),
            (2, 10, 13, 5, 3, 1),
            (2, 7, 7, 2, 2, 1),
        ] {
            let x = Tensor::from_vec(draw(2 * c * h * w), (2, c, h, w), &dev).unwrap();
            let wt = Tensor::from_vec(draw(5 * c * k * k), (5, c, k, k), &dev).unwrap();
            let b = Tensor::from_vec(draw(5), 5, &dev).unwrap();
            let a = conv2d(&x, &wt, Some(&b), stride, pad).unwrap();
            let r = x
                .conv2d(&wt, pad, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, 5, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(a.dims(), r.dims(), "{c}×{h}×{w}, {k}/{stride} pad {pad}");
            let diff = (a - r).unwrap().abs().unwrap().max_all().unwrap();
            let diff = diff.to_scalar::<f32>().unwrap();
            assert!(
                diff < 1e-4,
                "{c}×{h}×{w}, {k}/{stride} pad {pad}: off by {diff}"
            );
        }
    }

    /// f64 central differences against backprop through the strided (space-to-depth) path.
    #[test]
    fn strided_gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::seed_from_u64(6);
        let mut draw = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.normal()).collect() };
        let shapes: [&[usize]; 3] = [&[2, 2, 7, 6], &[3, 2, 3, 3], &[3]];
        let vals: Vec<Vec<f64>> = shapes.iter().map(|s| draw(s.iter().product())).collect();
        // (7 + 2 − 3)/2 + 1 = 4 rows, (6 + 2 − 3)/2 + 1 = 3 columns
        let r = Tensor::from_vec(draw(2 * 3 * 4 * 3), (2, 3, 4, 3), &dev).unwrap();
        let inputs: Vec<(Vec<f64>, &[usize])> = vals.into_iter().zip(shapes).collect();
        let bad = crate::nn::grad_check::gradient_mismatches(
            &inputs,
            |t| (conv2d(&t[0], &t[1], Some(&t[2]), 2, 1)?.tanh()? * &r)?.sum_all(),
            1e-7,
            &dev,
        )
        .unwrap();
        assert!(bad.is_empty(), "{bad:#?}");
    }

    /// f64 central differences against backprop for input, kernel and bias.
    #[test]
    fn gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let mut rng = crate::rng::Rng::seed_from_u64(4);
        let mut draw = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.normal()).collect() };
        let shapes: [&[usize]; 3] = [&[2, 2, 5, 4], &[3, 2, 3, 3], &[3]];
        // padding 1 so the border taps are checked too
        let vals: Vec<Vec<f64>> = shapes.iter().map(|s| draw(s.iter().product())).collect();
        let r = Tensor::from_vec(draw(2 * 3 * 5 * 4), (2, 3, 5, 4), &dev).unwrap();
        let inputs: Vec<(Vec<f64>, &[usize])> = vals.into_iter().zip(shapes).collect();
        let bad = crate::nn::grad_check::gradient_mismatches(
            &inputs,
            |t| (conv2d(&t[0], &t[1], Some(&t[2]), 1, 1)?.tanh()? * &r)?.sum_all(),
            1e-7,
            &dev,
        )
        .unwrap();
        assert!(bad.is_empty(), "{bad:#?}");
    }
}
