//! Neural-network building blocks for the DQN family and beyond: a named parameter store,
//! PyTorch-compatible layers and initialisation, spectral normalisation (Gogianu et al. 2021),
//! the MinAtar / CartPole Q-networks, the C51 categorical head (Bellemare et al. 2017), Adam /
//! AdamW, gradient clipping and schedules.
//!
//! A network is built from a [`ParamStore`] (which owns every tensor under a dotted name) and
//! trained with [`Adam`] over the store's vars:
//!
//! ```no_run
//! # fn main() -> reincarnate::Result<()> {
//! use reincarnate::nn::{Adam, AdamConfig, ParamStore, QNetConfig, QNetwork};
//! let dev = candle_core::Device::Cpu;
//! let mut store = ParamStore::new(&dev, 0);
//! let q = QNetwork::new(&QNetConfig::default(), &[4], 2, store.pp("q"))?;
//! let mut opt = Adam::new(store.trainable(), AdamConfig::default())?;
//! let obs = candle_core::Tensor::zeros((32, 4), candle_core::DType::F32, &dev)?;
//! let loss = q.forward(&obs, true)?.sqr()?.mean_all()?;
//! let mut grads = loss.backward()?;
//! q.sn_before_step(&mut grads, &mut opt)?;
//! opt.step(&grads, 1e-3)?;
//! # Ok(()) }
//! ```

pub mod activation;
pub mod categorical;
pub mod conv;
pub mod dense;
pub mod grad;
pub mod grad_check;
pub(crate) mod host;
pub mod hyperspherical;
pub mod init;
pub mod linear;
pub mod mlp;
pub mod optim;
pub mod params;
pub mod qnet;
pub mod rowwise;
pub mod running_norm;
pub mod schedule;
pub mod spectral_norm;
pub mod tanh_gaussian;

pub use activation::Activation;
pub use categorical::{cross_entropy, CategoricalSupport};
pub use conv::Conv2d;
pub use init::Init;
pub use linear::Linear;
pub use mlp::{Mlp, MlpInit};
pub use optim::{Adam, AdamConfig, AdamState, ParamOptions};
pub use params::{ParamPath, ParamStore};
pub use qnet::{Body, QNetConfig, QNetwork, SnLayers};
pub use schedule::{Schedule, Steps};
pub use spectral_norm::{SnMode, SpectralNorm};
