//! Finite-difference gradient checks, for tests of layers and losses written from tensor ops
//! (the checks that candle's backward of a composed forward is right).

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
