//! Flax parameter files (`flax.serialization.to_bytes(params)`), as CleanRL's JAX scripts save
//! their models (`dqn_atari_jax`, the teachers of `qdagger_dqn_atari_jax_impalacnn`).
//!
//! The file is MessagePack: nested maps of module names (`params` → `Conv_0` → `kernel`), each
//! array an extension value of type 1 whose payload is the MessagePack triple `(shape, dtype
//! name, raw little-endian bytes)`. It is decoded here as data, with every length checked
//! against the bytes left and nesting bounded.
//!
//! The Nature DQN network of those scripts (`Conv_0..2`, `Dense_0..1`, observations transposed
//! to NHWC inside the model) converts exactly onto the platform's Nature CNN: convolution
//! kernels from HWIO to OIHW, and the first dense layer's rows from the channel-last (h, w, c)
//! flattening to the channel-first (c, h, w) one; dense kernels `(in, out)` are transposed.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

/// Deepest nesting accepted (Flax trees are a few levels deep).
const MAX_DEPTH: usize = 64;

/// A decoded MessagePack value (only what Flax writes).
#[derive(Debug, Clone)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Ext(i8, Vec<u8>),
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "truncated: {n} bytes needed at offset {}, the file has {}",
                    self.pos,
                    self.bytes.len()
                )
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> std::result::Result<u64, String> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn len(&mut self, n: usize) -> std::result::Result<usize, String> {
        let v = self.uint(n)?;
        usize::try_from(v).map_err(|_| format!("length {v} at offset {}", self.pos))
    }

    fn value(&mut self, depth: usize) -> std::result::Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let at = self.pos;
        let b = self.take(1)?[0];
        Ok(match b {
            0x00..=0x7f => Value::Int(i128::from(b)),
            0x80..=0x8f => self.map(usize::from(b & 0x0f), depth)?,
            0x90..=0x9f => self.array(usize::from(b & 0x0f), depth)?,
            0xa0..=0xbf => self.str(usize::from(b & 0x1f))?,
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = self.len(1 << (b - 0xc4))?;
                Value::Bin(self.take(n)?.to_vec())
            }
            0xc7..=0xc9 => {
                let n = self.len(1 << (b - 0xc7))?;
                let ty = self.take(1)?[0] as i8;
                Value::Ext(ty, self.take(n)?.to_vec())
            }
            0xca => Value::Float(f64::from(f32::from_bits(self.uint(4)? as u32))),
            0xcb => Value::Float(f64::from_bits(self.uint(8)?)),
            0xcc..=0xcf => Value::Int(i128::from(self.uint(1 << (b - 0xcc))?)),
            0xd0..=0xd3 => {
                let n = 1usize << (b - 0xd0);
                let u = self.uint(n)?;
                let shift = 64 - 8 * n as u32;
                Value::Int(i128::from(((u << shift) as i64) >> shift))
            }
            0xd4..=0xd8 => {
                let n = 1usize << (b - 0xd4);
                let ty = self.take(1)?[0] as i8;
                Value::Ext(ty, self.take(n)?.to_vec())
            }
            0xd9..=0xdb => {
                let n = self.len(1 << (b - 0xd9))?;
                self.str(n)?
            }
            0xdc | 0xdd => {
                let n = self.len(2 << (b - 0xdc))?;
                self.array(n, depth)?
            }
            0xde | 0xdf => {
                let n = self.len(2 << (b - 0xde))?;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::Int(i128::from(b as i8)),
            0xc1 => return Err(format!("byte 0xc1 at offset {at} is not MessagePack")),
        })
    }

    fn str(&mut self, n: usize) -> std::result::Result<Value, String> {
        let at = self.pos;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec())
            .map(Value::Str)
            .map_err(|_| format!("string at offset {at} is not UTF-8"))
    }

    fn array(&mut self, n: usize, depth: usize) -> std::result::Result<Value, String> {
        // Every element takes at least one byte: a count beyond the bytes left is damage.
        if n > self.bytes.len() - self.pos {
            return Err(format!(
                "an array of {n} elements at offset {} overruns the file",
                self.pos
            ));
        }
        (0..n)
            .map(|_| self.value(depth + 1))
            .collect::<std::result::Result<_, _>>()
            .map(Value::Array)
    }

    fn map(&mut self, n: usize, depth: usize) -> std::result::Result<Value, String> {
        if n > (self.bytes.len() - self.pos) / 2 {
            return Err(format!(
                "a map of {n} entries at offset {} overruns the file",
                self.pos
            ));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let v = self.value(depth + 1)?;
            out.push((k, v));
        }
        Ok(Value::Map(out))
    }
}

/// Decodes one MessagePack value that fills `bytes`.
pub fn decode(bytes: &[u8]) -> std::result::Result<Value, String> {
    let mut r = Reader { bytes, pos: 0 };
    let v = r.value(0)?;
    if r.pos != bytes.len() {
        return Err(format!(
            "{} bytes after the end of the value at offset {}",
            bytes.len() - r.pos,
            r.pos
        ));
    }
    Ok(v)
}

/// A Flax array: the extension payload `(shape, dtype, bytes)` as an `f32` tensor.
fn array(name: &str, ty: i8, payload: &[u8]) -> std::result::Result<Tensor, String> {
    if ty != 1 {
        return Err(format!(
            "`{name}` is an extension of type {ty}; Flax arrays are type 1"
        ));
    }
    let Value::Array(parts) = decode(payload)? else {
        return Err(format!(
            "`{name}`: an array's payload is (shape, dtype, bytes)"
        ));
    };
    let [Value::Array(shape), Value::Str(dtype), Value::Bin(raw)] = parts.as_slice() else {
        return Err(format!(
            "`{name}`: an array's payload is (shape, dtype, bytes)"
        ));
    };
    let shape: Vec<usize> = shape
        .iter()
        .map(|d| match d {
            Value::Int(n) => usize::try_from(*n).ok(),
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(|| format!("`{name}`: the shape is not a list of sizes"))?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("`{name}`: shape {shape:?} overflows"))?;
    let values: Vec<f32> = match dtype.as_str() {
        "float32" if raw.len() == count * 4 => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "float64" if raw.len() == count * 8 => raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        "float32" | "float64" => {
            return Err(format!(
                "`{name}`: shape {shape:?} of {dtype} needs {} bytes, the file holds {}",
                count * if dtype == "float32" { 4 } else { 8 },
                raw.len()
            ))
        }
        other => return Err(format!("`{name}` is {other}; expected float32 or float64")),
    };
    Tensor::from_vec(values, shape, &Device::Cpu).map_err(|e| format!("`{name}`: {e}"))
}

/// Every array of the tree, by `/`-joined path (`params/Conv_0/kernel`).
pub fn read_arrays(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: String| Error::data(path, format!("not a Flax msgpack file: {m}"));
    let tree = decode(&bytes).map_err(bad)?;
    let mut out = BTreeMap::new();
    fn walk(
        v: &Value,
        prefix: &str,
        out: &mut BTreeMap<String, Tensor>,
    ) -> std::result::Result<(), String> {
        match v {
            Value::Map(entries) => {
                for (k, v) in entries {
                    let Value::Str(k) = k else {
                        return Err(format!("a key under `{prefix}` is not a string"));
                    };
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}/{k}")
                    };
                    walk(v, &p, out)?;
                }
                Ok(())
            }
            Value::Ext(ty, payload) => {
                out.insert(prefix.to_string(), array(prefix, *ty, payload)?);
                Ok(())
            }
            other => Err(format!(
                "`{prefix}` holds {other:?}-like data, expected a module map or an array"
            )),
        }
    }
    walk(&tree, "", &mut out).map_err(bad)?;
    if out.is_empty() {
        return Err(bad("no arrays".into()));
    }
    Ok(out)
}

/// The Nature DQN network of CleanRL's JAX scripts as platform layers (`q.0`…`q.4` in order):
/// `(flax module, weight OIHW or (out, in), bias)`. `frame` is the observation's `[C, H, W]`.
pub fn nature_cnn_layers(path: &Path, frame: &[usize]) -> Result<Vec<(String, Tensor, Tensor)>> {
    let arrays = read_arrays(path)?;
    let root = if arrays.keys().all(|k| k.starts_with("params/")) {
        "params/"
    } else {
        ""
    };
    let get = |m: &str, leaf: &str| -> Result<Tensor> {
        let key = format!("{root}{m}/{leaf}");
        arrays.get(&key).cloned().ok_or_else(|| {
            let found: Vec<&String> = arrays.keys().collect();
            Error::data(
                path,
                format!("no `{key}`: expected the Nature DQN network's Conv_0..2 and Dense_0..1 (found {found:?})"),
            )
        })
    };
    let modules: Vec<String> = arrays
        .keys()
        .filter_map(|k| k.strip_prefix(root))
        .filter_map(|k| k.split('/').next())
        .map(str::to_string)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let dense: Vec<&String> = modules.iter().filter(|m| m.starts_with("Dense_")).collect();
    let convs = modules.iter().filter(|m| m.starts_with("Conv_")).count();
    if convs != 3 || dense.len() < 2 || modules.len() != convs + dense.len() {
        return Err(Error::data(
            path,
            format!("modules {modules:?}: the Nature DQN network has Conv_0..2 and Dense_0..N"),
        ));
    }
    let [c, h, w] = frame else {
        return Err(Error::Config(format!(
            "{}: the Nature CNN takes [channels, height, width] frames, the environment gives {frame:?}",
            path.display()
        )));
    };
    let mut out = Vec::new();
    let (mut oh, mut ow) = (*h, *w);
    for (i, &(filters, k, stride)) in crate::nn::qnet::NATURE_CONVS.iter().enumerate() {
        let name = format!("Conv_{i}");
        let kernel = get(&name, "kernel")?;
        if kernel.dims().len() != 4 || kernel.dims()[0] != k || kernel.dims()[3] != filters {
            return Err(Error::data(
                path,
                format!(
                    "`{name}/kernel` is {:?}, expected HWIO [{k}, {k}, in, {filters}]",
                    kernel.dims()
                ),
            ));
        }
        // HWIO → OIHW
        out.push((
            name.clone(),
            kernel.permute((3, 2, 0, 1))?.contiguous()?,
            get(&name, "bias")?,
        ));
        oh = (oh.saturating_sub(k)) / stride + 1;
        ow = (ow.saturating_sub(k)) / stride + 1;
    }
    for (j, m) in (0..dense.len()).map(|j| (j, format!("Dense_{j}"))) {
        let kernel = get(&m, "kernel")?;
        let &[fan_in, fan_out] = kernel.dims() else {
            return Err(Error::data(
                path,
                format!("`{m}/kernel` is {:?}, expected 2-D", kernel.dims()),
            ));
        };
        let weight = if j == 0 {
            // rows in (h, w, c) order → (c, h, w)
            let ch = crate::nn::qnet::NATURE_CONVS[2].0;
            if fan_in != oh * ow * ch {
                return Err(Error::data(
                    path,
                    format!(
                        "`{m}/kernel` takes {fan_in} inputs; {c}×{h}×{w} frames give {}×{oh}×{ow} = {} after the convolutions",
                        ch,
                        ch * oh * ow
                    ),
                ));
            }
            kernel
                .reshape((oh, ow, ch, fan_out))?
                .permute((2, 0, 1, 3))?
                .reshape((fan_in, fan_out))?
                .t()?
        } else {
            kernel.t()?
        };
        out.push((
            m.clone(),
            weight.contiguous()?.to_dtype(DType::F32)?,
            get(&m, "bias")?,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messagepack_values_decode_and_damage_is_refused() {
        // {"a": [1, -1, 2.5], "b": ext(1, b"xy")}
        let bytes = [
            0x82, 0xa1, b'a', 0x93, 0x01, 0xff, 0xcb, 0x40, 0x04, 0, 0, 0, 0, 0, 0, 0xa1, b'b',
            0xd5, 0x01, b'x', b'y',
        ];
        let Value::Map(m) = decode(&bytes).unwrap() else {
            panic!("a map")
        };
        assert!(matches!(&m[0].1, Value::Array(a) if matches!(a[1], Value::Int(-1))));
        assert!(matches!(&m[0].1, Value::Array(a) if matches!(a[2], Value::Float(x) if x == 2.5)));
        assert!(matches!(&m[1].1, Value::Ext(1, p) if p == b"xy"));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&[0xdd, 0xff, 0xff, 0xff, 0xff])
            .unwrap_err()
            .contains("overruns"));
        let deep = vec![0x91; 200];
        assert!(decode(&deep).unwrap_err().contains("nested deeper"));
        assert!(decode(&[0xc1]).unwrap_err().contains("0xc1"));
    }
}
