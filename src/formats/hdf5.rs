//! HDF5 files as h5py writes them (Minari's `main_data.hdf5`, D4RL's files), read through the
//! pure-Rust `hdf5-reader` crate (no libhdf5 at build or run time): contiguous, compact and
//! chunked layouts, gzip/shuffle filters. Columns are read a row range at a time, so memory
//! stays bounded by the block size however large the file.
//!
//! Numbers are widened or narrowed to what the transition schema holds (`f32` values, `i64`
//! discrete actions, `bool` flags) only where no information of a valid dataset is lost:
//! float64 observations and rewards become float32 (each importer reports it), integers of
//! any width become `i64`, and flags must be h5py booleans or integers 0/1.

use crate::error::{Error, Result};
use hdf5_reader::{Dataset, Datatype, H5Type, Hdf5File, SliceInfo, SliceInfoElem};
use std::path::{Path, PathBuf};

/// An open HDF5 file.
pub struct H5 {
    file: Hdf5File,
    pub path: PathBuf,
}

/// One dataset, `(rows, ...)`.
pub struct Column {
    ds: Dataset,
    /// `/episode_0/observations`.
    pub name: String,
    pub shape: Vec<u64>,
    file: PathBuf,
}

fn h5_err(path: &Path, what: &str, e: hdf5_reader::error::Error) -> Error {
    Error::data(path, format!("{what}: {e}"))
}

impl H5 {
    pub fn open(path: &Path) -> Result<Self> {
        let file = Hdf5File::open(path).map_err(|e| h5_err(path, "not a readable HDF5 file", e))?;
        // A file shorter than the end its superblock records was cut off (as h5py refuses it).
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        let sb = file.superblock();
        let end = sb.base_address.saturating_add(sb.eof_address);
        if len < end {
            return Err(Error::data(
                path,
                format!("truncated: the file holds {len} bytes, its superblock says {end}"),
            ));
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The dataset at `name`, or `None` when the file has no such member.
    pub fn column(&self, name: &str) -> Result<Option<Column>> {
        let parent = match name.rsplit_once('/') {
            Some(("", _)) | None => "/".to_string(),
            Some((p, _)) => p.to_string(),
        };
        let leaf = name.rsplit('/').next().unwrap_or(name);
        let group = match self.file.group(&parent) {
            Ok(g) => g,
            Err(_) => return Ok(None),
        };
        let (_, datasets) = group
            .member_names()
            .map_err(|e| h5_err(&self.path, &format!("group `{parent}`"), e))?;
        if !datasets.iter().any(|d| d == leaf) {
            return Ok(None);
        }
        let ds = self
            .file
            .dataset(name)
            .map_err(|e| h5_err(&self.path, &format!("dataset `{name}`"), e))?;
        let shape = ds.shape().to_vec();
        if shape.is_empty() {
            return Err(Error::data(
                &self.path,
                format!("dataset `{name}` is a scalar, expected one row per step"),
            ));
        }
        Ok(Some(Column {
            ds,
            name: name.to_string(),
            shape,
            file: self.path.clone(),
        }))
    }

    /// The dataset at `name`; its absence is an error naming it.
    pub fn require(&self, name: &str) -> Result<Column> {
        self.column(name)?
            .ok_or_else(|| Error::data(&self.path, format!("no dataset `{name}`")))
    }

    /// The names of the groups directly under `group`.
    pub fn groups(&self, group: &str) -> Result<Vec<String>> {
        let g = self
            .file
            .group(group)
            .map_err(|e| h5_err(&self.path, &format!("group `{group}`"), e))?;
        Ok(g.member_names()
            .map_err(|e| h5_err(&self.path, &format!("group `{group}`"), e))?
            .0)
    }
}

/// An h5py boolean (an enum over int8) or a one-byte integer, as its byte.
#[derive(Clone, Copy)]
struct Byte(u8);

impl H5Type for Byte {
    fn hdf5_type() -> Datatype {
        u8::hdf5_type()
    }
    fn from_bytes(bytes: &[u8], dtype: &Datatype) -> hdf5_reader::error::Result<Self> {
        match dtype {
            Datatype::Enum { base, .. } | Datatype::Array { base, .. }
                if matches!(**base, Datatype::FixedPoint { size: 1, .. }) =>
            {
                Ok(Byte(bytes[0]))
            }
            Datatype::FixedPoint { size: 1, .. } => Ok(Byte(bytes[0])),
            other => Err(hdf5_reader::error::Error::TypeMismatch {
                expected: "bool".into(),
                actual: format!("{other:?}"),
            }),
        }
    }
    fn element_size(_dtype: &Datatype) -> usize {
        1
    }
}

impl Column {
    pub fn rows(&self) -> u64 {
        self.shape[0]
    }

    /// Values per row (1 for a `(rows,)` column).
    pub fn row_len(&self) -> usize {
        self.shape[1..].iter().product::<u64>() as usize
    }

    /// `float32`, `float64`, `int64`, `bool`, ...: the dtype in NumPy's words.
    pub fn dtype_name(&self) -> String {
        match self.ds.dtype() {
            Datatype::FloatingPoint { size, .. } => format!("float{}", *size as u32 * 8),
            Datatype::FixedPoint { size, signed, .. } => {
                format!("{}int{}", if *signed { "" } else { "u" }, *size as u32 * 8)
            }
            Datatype::Enum { base, .. }
                if matches!(**base, Datatype::FixedPoint { size: 1, .. }) =>
            {
                "bool".into()
            }
            other => format!("{other:?}"),
        }
    }

    fn selection(&self, start: u64, end: u64) -> SliceInfo {
        let mut s = vec![SliceInfoElem::Slice {
            start,
            end,
            step: 1,
        }];
        s.extend(self.shape[1..].iter().map(|&d| SliceInfoElem::Slice {
            start: 0,
            end: d,
            step: 1,
        }));
        SliceInfo { selections: s }
    }

    fn read<T: H5Type + Copy>(&self, start: u64, end: u64) -> Result<Vec<T>> {
        if start > end || end > self.rows() {
            return Err(Error::data(
                &self.file,
                format!(
                    "`{}`: rows {start}..{end} asked of {} rows",
                    self.name,
                    self.rows()
                ),
            ));
        }
        if start == end {
            return Ok(Vec::new());
        }
        let a = self
            .ds
            .read_slice::<T>(&self.selection(start, end))
            .map_err(|e| {
                h5_err(
                    &self.file,
                    &format!("`{}` rows {start}..{end}", self.name),
                    e,
                )
            })?;
        Ok(a.iter().copied().collect())
    }

    fn wrong_type(&self, expected: &str) -> Error {
        Error::data(
            &self.file,
            format!(
                "`{}` holds {}, expected {expected}",
                self.name,
                self.dtype_name()
            ),
        )
    }

    /// Rows `start..end` as `f32` (float32 as is, float64 rounded; integers converted).
    pub fn read_f32(&self, start: u64, end: u64) -> Result<Vec<f32>> {
        Ok(match self.ds.dtype() {
            Datatype::FloatingPoint { size: 4, .. } => self.read::<f32>(start, end)?,
            Datatype::FloatingPoint { size: 8, .. } => self
                .read::<f64>(start, end)?
                .into_iter()
                .map(|x| x as f32)
                .collect(),
            Datatype::FixedPoint { .. } => self
                .read_i64(start, end)?
                .into_iter()
                .map(|x| x as f32)
                .collect(),
            _ => return Err(self.wrong_type("floating-point numbers")),
        })
    }

    /// Rows `start..end` as `i64` (integers of any width).
    pub fn read_i64(&self, start: u64, end: u64) -> Result<Vec<i64>> {
        let Datatype::FixedPoint { size, signed, .. } = self.ds.dtype() else {
            return Err(self.wrong_type("integers"));
        };
        Ok(match (size, signed) {
            (1, true) => self
                .read::<i8>(start, end)?
                .into_iter()
                .map(i64::from)
                .collect(),
            (1, false) => self
                .read::<u8>(start, end)?
                .into_iter()
                .map(i64::from)
                .collect(),
            (2, true) => self
                .read::<i16>(start, end)?
                .into_iter()
                .map(i64::from)
                .collect(),
            (2, false) => self
                .read::<u16>(start, end)?
                .into_iter()
                .map(i64::from)
                .collect(),
            (4, true) => self
                .read::<i32>(start, end)?
                .into_iter()
                .map(i64::from)
                .collect(),
            (4, false) => self
                .read::<u32>(start, end)?
                .into_iter()
                .map(i64::from)
                .collect(),
            (8, true) => self.read::<i64>(start, end)?,
            (8, false) => self
                .read::<u64>(start, end)?
                .into_iter()
                .map(|x| i64::try_from(x).unwrap_or(i64::MAX))
                .collect(),
            _ => return Err(self.wrong_type("integers of 1, 2, 4 or 8 bytes")),
        })
    }

    /// Rows `start..end` of a flag column (h5py booleans, or integers/floats that are 0 or 1).
    pub fn read_bool(&self, start: u64, end: u64) -> Result<Vec<bool>> {
        let raw: Vec<f64> = match self.ds.dtype() {
            Datatype::Enum { .. } | Datatype::FixedPoint { size: 1, .. } => self
                .read::<Byte>(start, end)?
                .into_iter()
                .map(|b| f64::from(b.0))
                .collect(),
            Datatype::FixedPoint { .. } => self
                .read_i64(start, end)?
                .into_iter()
                .map(|x| x as f64)
                .collect(),
            Datatype::FloatingPoint { .. } => self
                .read_f32(start, end)?
                .into_iter()
                .map(f64::from)
                .collect(),
            _ => return Err(self.wrong_type("booleans")),
        };
        raw.iter()
            .enumerate()
            .map(|(i, &v)| match v {
                0.0 => Ok(false),
                1.0 => Ok(true),
                other => Err(Error::data(
                    &self.file,
                    format!(
                        "`{}` row {}: {other} is not a flag (expected 0/1 or a boolean)",
                        self.name,
                        start + i as u64
                    ),
                )),
            })
            .collect()
    }
}
