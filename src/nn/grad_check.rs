//! Gradient checks for tests: finite differences, for layers and losses written from tensor ops
//! (the checks that candle's backward of a composed forward is right), and the comparison of a
//! fused op with its tensor-op formulation.

use candle_core::{Device, Tensor, Var};

/// Compares candle's gradient of `loss` (a scalar f64 tensor) with respect to every element of
/// every input against central finite differences with step 1e-6, in f64. `inputs` are the
/// inputs' values and shapes. Returns one line per element where
/// `|fd − grad| ≥ tol · (1 + |fd|)`; empty when all agree.
pub fn gradient_mismatches(
    inputs: &[(Vec<f64>, &[usize])],
    loss: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
    tol: f64,
    device: &Device,
) -> candle_core::Result<Vec<String>> {
    let tensors = |bump: Option<(usize, usize, f64)>| -> candle_core::Result<Vec<Tensor>> {
        inputs
            .iter()
            .enumerate()
            .map(|(j, (vals, shape))| {
                let mut v = vals.clone();
                if let Some((k, i, d)) = bump {
                    if j == k {
                        v[i] += d;
                    }
                }
                Tensor::from_vec(v, *shape, device)
            })
            .collect()
    };
    let vars: Vec<Var> = tensors(None)?
        .iter()
        .map(Var::from_tensor)
        .collect::<candle_core::Result<_>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let grads = loss(&ts)?.backward()?;
    let mut bad = Vec::new();
    for (k, t) in ts.iter().enumerate() {
        let g: Vec<f64> = match grads.get(t) {
            Some(g) => g.flatten_all()?.to_vec1()?,
            None => {
                bad.push(format!("tensor {k}: no gradient"));
                continue;
            }
        };
        for (i, &gi) in g.iter().enumerate() {
            let eval = |d: f64| loss(&tensors(Some((k, i, d)))?)?.to_scalar::<f64>();
            let fd = (eval(1e-6)? - eval(-1e-6)?) / 2e-6;
            if (fd - gi).abs() >= tol * (1.0 + fd.abs()) {
                bad.push(format!(
                    "tensor {k} [{i}]: finite difference {fd}, backprop {gi}"
                ));
            }
        }
    }
    Ok(bad)
}

/// `max |a − b|` over all elements, as f32.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
}

/// How far a fused op's output `fused` is from its reference formulation's `reference` on the
/// same inputs: the largest |difference| of the outputs and, for each of `vars`, of the
/// gradients of Σ output ⊙ `weights` (a fixed random weighting, so every output element gets
/// its own gradient). Errors if a variable gets no gradient from either side.
pub fn reference_differences(
    fused: &Tensor,
    reference: &Tensor,
    weights: &Tensor,
    vars: &[&Var],
) -> candle_core::Result<(f32, Vec<f32>)> {
    let output = max_abs_diff(fused, reference)?;
    let gf = (fused * weights)?.sum_all()?.backward()?;
    let gr = (reference * weights)?.sum_all()?.backward()?;
    let grads = vars
        .iter()
        .enumerate()
        .map(|(i, v)| match (gf.get(v), gr.get(v)) {
            (Some(a), Some(b)) => max_abs_diff(a, b),
            _ => candle_core::bail!("variable {i} gets no gradient from one of the two ops"),
        })
        .collect::<candle_core::Result<_>>()?;
    Ok((output, grads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_on_a_right_gradient_and_reports_a_cut_one() {
        let dev = Device::Cpu;
        let inputs = [(vec![0.3, -1.2, 2.0], &[3usize][..])];
        let ok = gradient_mismatches(&inputs, |t| t[0].sqr()?.sum_all(), 1e-7, &dev).unwrap();
        assert!(ok.is_empty(), "{ok:?}");
        // x² + x·detach(x): backprop sees 3x, finite differences 4x
        let cut = gradient_mismatches(
            &inputs,
            |t| (t[0].sqr()? + (&t[0] * t[0].detach())?)?.sum_all(),
            1e-7,
            &dev,
        )
        .unwrap();
        assert_eq!(cut.len(), 3, "{cut:?}");
    }
}
