//! Weight initialisation, drawn from the platform's seedable [`Rng`].
//!
//! candle's own random functions are not seedable on the CPU, so every initial weight comes
//! from here: the same seed gives the same network on every run.

use crate::rng::Rng;

/// How a parameter or buffer is filled at creation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Every element 0.
    Zeros,
    /// Every element the given value.
    Const(f32),
    /// U(-bound, bound), element by element.
    Uniform { bound: f64 },
    /// N(0, std²), element by element.
    Normal { std: f64 },
    /// A (semi-)orthogonal matrix times `gain`, for a parameter whose first dimension is the
    /// number of rows and whose remaining dimensions are flattened into columns.
    Orthogonal { gain: f64 },
}

impl Init {
    /// PyTorch's default for `nn.Linear` and `nn.Conv2d` weights and biases:
    /// `kaiming_uniform_(a = √5)` works out to U(-1/√fan_in, 1/√fan_in), and the bias uses the
    /// same bound. `fan_in` is `in_features` for a linear layer and `in_channels·k·k` for a conv.
    pub fn torch_default(fan_in: usize) -> Self {
        Init::Uniform {
            bound: 1.0 / (fan_in.max(1) as f64).sqrt(),
        }
    }

    /// Draws `shape.iter().product()` values.
    pub fn sample(&self, shape: &[usize], rng: &mut Rng) -> Vec<f32> {
        let n: usize = shape.iter().product();
        match *self {
            Init::Zeros => vec![0.0; n],
            Init::Const(c) => vec![c; n],
            Init::Uniform { bound } => (0..n)
                .map(|_| rng.uniform_range(-bound, bound) as f32)
                .collect(),
            Init::Normal { std } => (0..n).map(|_| (rng.normal() * std) as f32).collect(),
            Init::Orthogonal { gain } => {
                let rows = shape.first().copied().unwrap_or(1);
                let cols = n.checked_div(rows).unwrap_or(0);
                orthogonal(rows, cols, gain, rng)
            }
        }
    }
}

/// A `rows × cols` matrix (row-major) with orthonormal rows (`rows ≤ cols`) or orthonormal
/// columns (`rows ≥ cols`), times `gain`, as PyTorch's `orthogonal_` (Saxe et al., 2014):
/// the Q factor of a standard normal matrix, with R's diagonal made positive so that Q is
/// uniformly distributed over orthogonal matrices. Gram–Schmidt yields that positive diagonal
/// directly (PyTorch's Householder QR needs an explicit sign fix). SimbaV2 initialises its
/// hyperspherical dense layers this way.
pub fn orthogonal(rows: usize, cols: usize, gain: f64, rng: &mut Rng) -> Vec<f32> {
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    // Work on the tall orientation: `tall` is m × k with m ≥ k, Q is m × k.
    let (m, k) = if rows >= cols {
        (rows, cols)
    } else {
        (cols, rows)
    };
    // Column-major Q: q[j] is column j (length m). Draw the normal matrix, then modified
    // Gram–Schmidt twice ("twice is enough") for numerical orthogonality in f64.
    let mut q: Vec<Vec<f64>> = (0..k)
        .map(|_| (0..m).map(|_| rng.normal()).collect())
        .collect();
    for j in 0..k {
        for _pass in 0..2 {
            for i in 0..j {
                let (head, tail) = q.split_at_mut(j);
                let dot: f64 = head[i].iter().zip(tail[0].iter()).map(|(a, b)| a * b).sum();
                tail[0]
                    .iter_mut()
                    .zip(head[i].iter())
                    .for_each(|(x, qi)| *x -= dot * qi);
            }
        }
        let norm = q[j].iter().map(|x| x * x).sum::<f64>().sqrt();
        let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        q[j].iter_mut().for_each(|x| *x *= inv);
    }
    let mut out = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            // tall (m × k): element (i, j) = q[j][i]. For rows ≥ cols the result is tall itself;
            // otherwise it is the transpose.
            let v = if rows >= cols { q[c][r] } else { q[r][c] };
            out[r * cols + c] = (gain * v) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gram(a: &[f32], rows: usize, cols: usize, by_rows: bool) -> Vec<f64> {
        let (n, len) = if by_rows { (rows, cols) } else { (cols, rows) };
        let at = |i: usize, t: usize| -> f64 {
            if by_rows {
                a[i * cols + t] as f64
            } else {
                a[t * cols + i] as f64
            }
        };
        let mut g = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                g[i * n + j] = (0..len).map(|t| at(i, t) * at(j, t)).sum();
            }
        }
        g
    }

    #[test]
    fn orthogonal_has_orthonormal_rows_or_columns_times_gain() {
        let mut rng = Rng::seed_from_u64(0);
        for &(rows, cols, by_rows) in &[(3usize, 7usize, true), (7, 3, false), (5, 5, true)] {
            let gain = 2.0;
            let w = orthogonal(rows, cols, gain, &mut rng);
            let n = if by_rows { rows } else { cols };
            let g = gram(&w, rows, cols, by_rows);
            for i in 0..n {
                for j in 0..n {
                    let expect = if i == j { gain * gain } else { 0.0 };
                    assert!(
                        (g[i * n + j] - expect).abs() < 1e-5,
                        "{rows}x{cols} gram[{i},{j}] = {}",
                        g[i * n + j]
                    );
                }
            }
        }
    }

    #[test]
    fn torch_default_bound_and_range() {
        let mut rng = Rng::seed_from_u64(1);
        let init = Init::torch_default(16);
        assert_eq!(init, Init::Uniform { bound: 0.25 });
        let xs = init.sample(&[64, 16], &mut rng);
        assert_eq!(xs.len(), 1024);
        assert!(xs.iter().all(|x| x.abs() <= 0.25));
        // uniform on [-b, b] has variance b²/3
        let var = xs.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!((var - 0.0625 / 3.0).abs() < 0.003, "var {var}");
    }
}
