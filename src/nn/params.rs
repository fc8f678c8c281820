//! Named parameters and buffers of a network, in the spirit of PyTorch's `state_dict`.
//!
//! A [`ParamStore`] owns every tensor a network needs under a dotted name (`q.0.weight`), so a
//! checkpoint opened in Python reads like a PyTorch state dict. Trainable parameters and
//! non-trainable buffers (spectral-norm `u`/`v`) live in separate `BTreeMap`s, which fixes the
//! iteration order: optimiser updates and gradient norms are then deterministic.
//!
//! Layers keep clones of the `Var`s they create; a clone shares storage with the store, so
//! loading a checkpoint, syncing a target network or an optimiser step through the store is seen
//! by the layers at once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use crate::error::{Error, Result};
use crate::nn::host;
use crate::nn::init::Init;
use crate::rng::Rng;

/// Every stored tensor is f32: the networks here are small, and one dtype keeps checkpoints,
/// optimiser state and host-side fast paths simple.
pub const PARAM_DTYPE: DType = DType::F32;

/// Named trainable parameters plus named buffers, on one device, initialised from one seed.
pub struct ParamStore {
    device: Device,
    rng: Rng,
    vars: BTreeMap<String, Var>,
    buffers: BTreeMap<String, Var>,
    /// Bytes of every parameter and buffer created so far.
    bytes: u64,
}

impl ParamStore {
    /// An empty store on `device` whose initialisers draw from `Rng::seed_from_u64(seed)`.
    pub fn new(device: &Device, seed: u64) -> Self {
        Self {
            device: device.clone(),
            rng: Rng::seed_from_u64(seed),
            vars: BTreeMap::new(),
            buffers: BTreeMap::new(),
            bytes: 0,
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The generator initialisers draw from (layers that need extra randomness at construction,
    /// such as spectral-norm vectors, use it too).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// A path under which layers create their tensors: `store.pp("q").pp("0")` names `q.0.weight`.
    pub fn pp(&mut self, name: impl std::fmt::Display) -> ParamPath<'_> {
        ParamPath {
            store: self,
            prefix: name.to_string(),
        }
    }

    /// Creates trainable parameter `name` (a full dotted name).
    pub fn var(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Var> {
        let var = self.fresh(name, shape, init)?;
        self.vars.insert(name.to_string(), var.clone());
        Ok(var)
    }

    /// Creates non-trainable buffer `name`: saved and loaded with the parameters, never given to
    /// an optimiser.
    pub fn buffer(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Var> {
        let var = self.fresh(name, shape, init)?;
        self.buffers.insert(name.to_string(), var.clone());
        Ok(var)
    }

    fn fresh(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Var> {
        if self.vars.contains_key(name) || self.buffers.contains_key(name) {
            return Err(Error::Config(format!(
                "parameter `{name}` is created twice; every layer needs its own name"
            )));
        }
        // Checked before the values are drawn: a shape from a config can be any size.
        let total = crate::limits::bytes(shape, 4).and_then(|b| b.checked_add(self.bytes));
        crate::limits::check_memory(
            || format!("the network's parameters (up to `{name}`, shape {shape:?})"),
            total,
        )?;
        self.bytes = total.unwrap_or(u64::MAX);
        let data = init.sample(shape, &mut self.rng);
        Ok(Var::from_vec(data, shape, &self.device)?)
    }

    /// Trainable parameters by name, in name order.
    pub fn vars(&self) -> &BTreeMap<String, Var> {
        &self.vars
    }

    /// Trainable parameters as (name, Var) pairs in name order, as an optimiser takes them.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        self.vars
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }

    /// Buffers by name, in name order.
    pub fn buffers(&self) -> &BTreeMap<String, Var> {
        &self.buffers
    }

    /// A parameter or buffer by name. The tensor shares storage with the store.
    pub fn get(&self, name: &str) -> Option<Tensor> {
        self.vars
            .get(name)
            .or_else(|| self.buffers.get(name))
            .map(|v| v.as_detached_tensor())
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// Every parameter and buffer by name (what `model.safetensors` holds). The tensors share
    /// storage with the store: write them out before the next update.
    pub fn state_dict(&self) -> HashMap<String, Tensor> {
        self.vars
            .iter()
            .chain(self.buffers.iter())
            .map(|(n, v)| (n.clone(), v.as_detached_tensor()))
            .collect()
    }

    fn all(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter().chain(self.buffers.iter())
    }

    /// Sets every parameter and buffer from `tensors` (a loaded state dict), after checking that
    /// the names are exactly the store's and that every shape and dtype matches. All problems
    /// are reported together, naming `source` (the file they came from), so a user can see at
    /// once whether a checkpoint belongs to another architecture. Nothing is written unless
    /// everything matches. Tensors on another device are moved to the store's.
    pub fn load_state_dict(&self, tensors: &HashMap<String, Tensor>, source: &Path) -> Result<()> {
        let problems = check_tensors(
            self.all().map(|(n, v)| (n.as_str(), v.as_tensor())),
            tensors,
        );
        if !problems.is_empty() {
            return Err(Error::data(
                source,
                format!(
                    "{} tensor(s) do not match the network:\n  {}",
                    problems.len(),
                    problems.join("\n  ")
                ),
            ));
        }
        for (name, var) in self.all() {
            // `check_tensors` guarantees presence.
            if let Some(t) = tensors.get(name) {
                var.set(&t.to_device(&self.device)?)?;
            }
        }
        Ok(())
    }

    /// Makes every parameter and buffer equal to `other`'s (hard target-network sync). The two
    /// stores must hold the same names and shapes.
    pub fn copy_from(&self, other: &ParamStore) -> Result<()> {
        self.check_same_layout(other, "copy_from")?;
        for ((_, dst), (_, src)) in self.all().zip(other.all()) {
            let src = src.as_tensor();
            if host::is_host_f32(dst) && host::is_host_f32(src) {
                host::update_in_place_from(dst, src, "copy", |d, s| d.copy_from_slice(s))?;
            } else {
                dst.set(&src.to_device(&self.device)?)?;
            }
        }
        Ok(())
    }

    /// Polyak averaging of the trainable parameters: `self = tau · online + (1 − tau) · self`
    /// (soft target update, e.g. SAC's τ = 0.005). Buffers are copied from `online` rather than
    /// averaged: power-iteration vectors are estimates of singular vectors, not weights, and an
    /// average of two unit vectors is not one.
    pub fn polyak_from(&self, online: &ParamStore, tau: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&tau) {
            return Err(Error::Config(format!(
                "polyak tau = {tau}: expected a value in [0, 1]"
            )));
        }
        self.check_same_layout(online, "polyak_from")?;
        let t = tau as f32;
        for ((_, dst), (_, src)) in self.vars.iter().zip(online.vars.iter()) {
            let src = src.as_tensor();
            if host::is_host_f32(dst) && host::is_host_f32(src) {
                host::update_in_place_from(dst, src, "polyak", |d, s| {
                    d.iter_mut()
                        .zip(s)
                        .for_each(|(d, s)| *d = t * s + (1.0 - t) * *d)
                })?;
            } else {
                let src = src.to_device(&self.device)?;
                let mixed = (src.affine(tau, 0.0)? + dst.as_tensor().affine(1.0 - tau, 0.0)?)?;
                dst.set(&mixed)?;
            }
        }
        for ((_, dst), (_, src)) in self.buffers.iter().zip(online.buffers.iter()) {
            dst.set(&src.as_tensor().to_device(&self.device)?)?;
        }
        Ok(())
    }

    fn check_same_layout(&self, other: &ParamStore, what: &str) -> Result<()> {
        let theirs: HashMap<String, Tensor> = other
            .all()
            .map(|(n, v)| (n.clone(), v.as_detached_tensor()))
            .collect();
        let problems = check_tensors(
            self.all().map(|(n, v)| (n.as_str(), v.as_tensor())),
            &theirs,
        );
        if problems.is_empty() && self.vars.keys().eq(other.vars.keys()) {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "{what}: the two networks differ:\n  {}",
                problems.join("\n  ")
            )))
        }
    }
}

fn describe(t: &Tensor) -> String {
    format!("{:?} {:?}", t.dims(), t.dtype())
}

/// Compares `found` against the `expected` tensors (name, reference tensor): one line per
/// missing name, unexpected name, shape or dtype mismatch, in name order.
pub fn check_tensors<'a>(
    expected: impl Iterator<Item = (&'a str, &'a Tensor)>,
    found: &HashMap<String, Tensor>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut known = std::collections::BTreeSet::new();
    for (name, want) in expected {
        known.insert(name);
        match found.get(name) {
            None => problems.push(format!("missing `{name}` (expected {})", describe(want))),
            Some(got) if got.dims() != want.dims() || got.dtype() != want.dtype() => {
                problems.push(format!(
                    "`{name}`: expected {}, found {}",
                    describe(want),
                    describe(got)
                ))
            }
            Some(_) => {}
        }
    }
    let mut extra: Vec<&String> = found
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .collect();
    extra.sort();
    for name in extra {
        problems.push(format!(
            "unexpected `{name}` ({}) is not part of this network",
            describe(&found[name])
        ));
    }
    problems
}

/// A dotted name prefix inside a [`ParamStore`], as candle's `VarBuilder::pp`.
pub struct ParamPath<'a> {
    store: &'a mut ParamStore,
    prefix: String,
}

impl ParamPath<'_> {
    /// A sub-path: `p.pp("0")` under `q` is `q.0`.
    pub fn pp(&mut self, name: impl std::fmt::Display) -> ParamPath<'_> {
        let prefix = self.name(&name.to_string());
        ParamPath {
            store: self.store,
            prefix,
        }
    }

    /// The full name of `leaf` under this path.
    pub fn name(&self, leaf: &str) -> String {
        if self.prefix.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.prefix)
        }
    }

    /// This path's own name (`q.0`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Creates trainable parameter `<prefix>.<leaf>`.
    pub fn var(&mut self, leaf: &str, shape: &[usize], init: Init) -> Result<Var> {
        let name = self.name(leaf);
        self.store.var(&name, shape, init)
    }

    /// Creates buffer `<prefix>.<leaf>`.
    pub fn buffer(&mut self, leaf: &str, shape: &[usize], init: Init) -> Result<Var> {
        let name = self.name(leaf);
        self.store.buffer(&name, shape, init)
    }

    pub fn rng(&mut self) -> &mut Rng {
        self.store.rng()
    }

    pub fn device(&self) -> &Device {
        self.store.device()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(seed: u64) -> ParamStore {
        let mut s = ParamStore::new(&Device::Cpu, seed);
        let mut q = s.pp("q");
        q.pp(0)
            .var("weight", &[3, 2], Init::Normal { std: 1.0 })
            .unwrap();
        q.pp(0)
            .var("bias", &[3], Init::Normal { std: 1.0 })
            .unwrap();
        q.pp(0)
            .buffer("weight_u", &[3], Init::Normal { std: 1.0 })
            .unwrap();
        s
    }

    fn values(s: &ParamStore, name: &str) -> Vec<f32> {
        s.get(name)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn names_order_and_duplicates() {
        let mut s = store(0);
        let names: Vec<&String> = s.vars().keys().collect();
        assert_eq!(names, ["q.0.bias", "q.0.weight"]);
        assert_eq!(s.buffers().keys().collect::<Vec<_>>(), ["q.0.weight_u"]);
        assert_eq!(s.num_params(), 9);
        let e = s.var("q.0.weight", &[1], Init::Zeros).unwrap_err();
        assert!(e.to_string().contains("q.0.weight"), "{e}");
        assert_eq!(s.state_dict().len(), 3);
    }

    #[test]
    fn load_reports_every_mismatch_and_writes_nothing() {
        let a = store(1);
        let before = values(&a, "q.0.weight");
        let mut sd = store(2).state_dict();
        sd.remove("q.0.bias");
        sd.insert(
            "q.0.weight".into(),
            Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap(),
        );
        sd.insert(
            "q.0.weight_u".into(),
            Tensor::zeros(3, DType::F64, &Device::Cpu).unwrap(),
        );
        sd.insert(
            "q.9.weight".into(),
            Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
        );
        let e = a
            .load_state_dict(&sd, Path::new("ckpt/model.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ckpt/model.safetensors"), "{e}");
        assert!(e.contains("4 tensor(s)"), "{e}");
        assert!(e.contains("missing `q.0.bias`"), "{e}");
        assert!(
            e.contains("`q.0.weight`: expected [3, 2] F32, found [2, 3] F32"),
            "{e}"
        );
        assert!(
            e.contains("`q.0.weight_u`: expected [3] F32, found [3] F64"),
            "{e}"
        );
        assert!(e.contains("unexpected `q.9.weight`"), "{e}");
        assert_eq!(values(&a, "q.0.weight"), before);
    }

    #[test]
    fn load_copy_and_polyak() {
        let a = store(1);
        let b = store(2);
        a.load_state_dict(&b.state_dict(), Path::new("x")).unwrap();
        for n in ["q.0.weight", "q.0.bias", "q.0.weight_u"] {
            assert_eq!(values(&a, n), values(&b, n));
        }
        let c = store(3);
        let old_a = values(&a, "q.0.weight");
        a.polyak_from(&c, 0.25).unwrap();
        let new_a = values(&a, "q.0.weight");
        for ((n, o), cv) in new_a.iter().zip(&old_a).zip(values(&c, "q.0.weight")) {
            assert!((n - (0.25 * cv + 0.75 * o)).abs() < 1e-6);
        }
        // buffers are copied, not averaged
        assert_eq!(values(&a, "q.0.weight_u"), values(&c, "q.0.weight_u"));
        a.copy_from(&c).unwrap();
        assert_eq!(values(&a, "q.0.bias"), values(&c, "q.0.bias"));
        // a store with another layout is refused
        let mut d = ParamStore::new(&Device::Cpu, 0);
        d.var("other", &[1], Init::Zeros).unwrap();
        assert!(a.copy_from(&d).is_err());
        assert!(a.polyak_from(&c, 1.5).is_err());
    }
}
