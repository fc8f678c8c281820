//! Network inputs computed from observations, on the host (observations are small): the
//! encoding a source agent (PPO) and the in-context learner that distils its histories (AD)
//! share, so that both see an observation the same way.

use super::Space;
use serde::{Deserialize, Serialize};

/// Input features computed from an observation inside the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObsEncoding {
    /// The observation as the environment gives it.
    Raw,
    /// Each dimension with finite bounds `[low, high]` (`low < high`) mapped linearly onto
    /// `[-1, 1]`; unbounded dimensions unchanged.
    Scaled,
    /// Each dimension whose bounds are finite integers spanning at most
    /// [`MAX_ONE_HOT_VALUES`] values becomes a one-hot vector over those values (dark room's
    /// (x, y) in 0..8 become 9 + 9 inputs); other dimensions are encoded as `Scaled`. The
    /// default: from scaled coordinates a tanh MLP needs many updates to tell neighbouring
    /// cells apart, and in the sweep over dark-room goals it often settled on stepping on and
    /// off the goal instead of staying there (greedy return ≈ half the optimum), while the
    /// one-hot coordinates learn the per-cell policy within a few hundred episodes. The
    /// network still sees only the position.
    OneHot,
}

/// Largest number of values a dimension may take to be one-hot encoded.
pub const MAX_ONE_HOT_VALUES: usize = 64;

#[derive(Clone, Debug)]
enum DimCode {
    Raw,
    Affine { scale: f32, shift: f32 },
    OneHot { low: f32, values: usize },
}

/// Turns raw observations into network inputs, on the host (the inputs are small).
#[derive(Clone, Debug)]
pub struct ObsEncoder {
    dims: Vec<DimCode>,
    input_dim: usize,
}

impl ObsEncoder {
    pub fn new(encoding: ObsEncoding, space: &Space) -> Self {
        let n = space.flat_dim();
        let dims: Vec<DimCode> = (0..n)
            .map(|i| {
                let (lo, hi) = match space {
                    Space::Box { low, high, .. } => (low.get(i), high.get(i)),
                    Space::Discrete { n } => (0.0, n.saturating_sub(1) as f32),
                };
                let bounded = lo.is_finite() && hi.is_finite();
                let integer = bounded && lo.fract() == 0.0 && hi.fract() == 0.0 && hi >= lo;
                let values = if integer { (hi - lo) as usize + 1 } else { 0 };
                match encoding {
                    ObsEncoding::OneHot if integer && values <= MAX_ONE_HOT_VALUES => {
                        DimCode::OneHot { low: lo, values }
                    }
                    ObsEncoding::OneHot | ObsEncoding::Scaled if bounded && hi > lo => {
                        let scale = 2.0 / (hi - lo);
                        DimCode::Affine {
                            scale,
                            shift: -lo * scale - 1.0,
                        }
                    }
                    _ => DimCode::Raw,
                }
            })
            .collect();
        let input_dim = dims
            .iter()
            .map(|d| match d {
                DimCode::OneHot { values, .. } => *values,
                _ => 1,
            })
            .sum();
        Self { dims, input_dim }
    }

    /// Network input width.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// Encodes a batch of observations (`rows × obs_dim`, row-major) into
    /// `rows × input_dim`. Out-of-range values of a one-hot dimension are clamped to its bounds.
    pub fn encode(&self, obs: &[f32]) -> Vec<f32> {
        let d = self.dims.len().max(1);
        let rows = obs.len() / d;
        let mut out = vec![0f32; rows * self.input_dim];
        for (row, x) in out.chunks_mut(self.input_dim.max(1)).zip(obs.chunks(d)) {
            let mut at = 0;
            for (code, &v) in self.dims.iter().zip(x) {
                match *code {
                    DimCode::Raw => {
                        row[at] = v;
                        at += 1;
                    }
                    DimCode::Affine { scale, shift } => {
                        row[at] = v * scale + shift;
                        at += 1;
                    }
                    DimCode::OneHot { low, values } => {
                        let k = (v - low).round().clamp(0.0, (values - 1) as f32) as usize;
                        row[at + k] = 1.0;
                        at += values;
                    }
                }
            }
        }
        out
    }
}
