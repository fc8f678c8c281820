//! [`TransitionReader`]: opens one transitions file, checks it against the format before any
//! data is decoded, and reads it whole, by record batch, or a few columns at a time.
//!
//! Every failure is an [`Error::Data`] naming the file: not Parquet, truncated, a column of
//! the wrong type, nulls where the format has none. Nothing in here panics on a bad file.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Int64Type, UInt32Type};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use rayon::prelude::*;

use super::schema::{self, TransitionSchema};
use super::tally::{RowTally, RunSummary};
use super::transitions::{EpisodeSpan, RowsMut, Transitions};
use crate::envs::EnvSpec;
use crate::error::{Error, Result};

/// Rows per record batch when iterating.
pub const DEFAULT_BATCH_ROWS: usize = 1 << 16;

/// The columns [`TransitionReader::runs`] and [`TransitionReader::episodes`] need.
pub const SUMMARY_COLUMNS: [&str; 7] = [
    schema::RUN,
    schema::TASK,
    schema::EPISODE,
    schema::STEP,
    schema::REWARD,
    schema::TERMINATED,
    schema::TRUNCATED,
];

/// Where a transitions file's bytes are: on the local disk, or in an object store (the local
/// file is a pointer, see [`crate::storage`]), read by byte ranges.
#[derive(Clone)]
enum Source {
    Local,
    #[cfg(feature = "s3")]
    Remote(crate::storage::RemoteFile),
}

/// A handle Parquet reads through.
enum Handle {
    Local(File),
    #[cfg(feature = "s3")]
    Remote(crate::storage::RemoteFile),
}

impl parquet::file::reader::Length for Handle {
    fn len(&self) -> u64 {
        match self {
            Handle::Local(f) => f.len(),
            #[cfg(feature = "s3")]
            Handle::Remote(r) => r.size(),
        }
    }
}

impl parquet::file::reader::ChunkReader for Handle {
    type T = Box<dyn std::io::Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(match self {
            Handle::Local(f) => Box::new(f.get_read(start)?),
            #[cfg(feature = "s3")]
            Handle::Remote(r) => Box::new(r.get_read(start)?),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        match self {
            Handle::Local(f) => f.get_bytes(start, length),
            #[cfg(feature = "s3")]
            Handle::Remote(r) => r.get_bytes(start, length),
        }
    }
}

/// An open transitions file whose schema and metadata have been checked.
pub struct TransitionReader {
    path: PathBuf,
    source: Source,
    meta: ArrowReaderMetadata,
    schema: TransitionSchema,
    env: Option<EnvSpec>,
    kv: HashMap<String, String>,
}

impl TransitionReader {
    /// Opens `path`, reads the footer and checks the schema and format metadata, reporting every
    /// problem at once.
    pub fn open(path: &Path) -> Result<Self> {
        let source = match crate::storage::read_pointer(path)? {
            None => Source::Local,
            #[cfg(feature = "s3")]
            Some(p) => Source::Remote(crate::storage::RemoteFile::open(&p)?),
            #[cfg(not(feature = "s3"))]
            Some(p) => {
                return Err(crate::storage::not_built(&format!(
                    "{} points to {}",
                    path.display(),
                    p.url()
                )))
            }
        };
        let file = Self::handle(path, &source)?;
        let loaded = decoding(path, || {
            ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
        })?;
        let meta = loaded.map_err(|e| {
            Error::data(
                path,
                format!(
                    "cannot read as Parquet (not a Parquet file, or truncated or corrupt): {e}"
                ),
            )
        })?;
        let kv: HashMap<String, String> = meta
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .map(|kvs| {
                kvs.iter()
                    .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        let schema = TransitionSchema::from_file(path, meta.schema(), &kv)?;
        let env = match kv.get(schema::META_ENV_SPEC) {
            None => None,
            Some(json) => Some(serde_json::from_str(json).map_err(|e| {
                Error::data(
                    path,
                    format!(
                        "metadata `{}` is not a valid env spec: {e}",
                        schema::META_ENV_SPEC
                    ),
                )
            })?),
        };
        Ok(Self {
            path: path.to_path_buf(),
            source,
            meta,
            schema,
            env,
            kv,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's layout (obs dim, action kind, policy column).
    pub fn schema(&self) -> &TransitionSchema {
        &self.schema
    }

    /// The env spec stored in the footer, if the writer was given one.
    pub fn env_spec(&self) -> Option<&EnvSpec> {
        self.env.as_ref()
    }

    /// All key-value metadata of the footer.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.kv
    }

    pub fn num_rows(&self) -> u64 {
        self.meta.metadata().file_metadata().num_rows().max(0) as u64
    }

    pub fn num_row_groups(&self) -> usize {
        self.meta.metadata().num_row_groups()
    }

    /// Checks column names and returns their root indices (the `run` column always included,
    /// so row counts are known). `None` means every column.
    fn projection(&self, columns: Option<&[&str]>) -> Result<ProjectionMask> {
        let arrow = self.meta.schema();
        let Some(columns) = columns else {
            return Ok(ProjectionMask::all());
        };
        let mut idx = vec![0usize];
        for name in columns {
            match arrow.index_of(name) {
                Ok(i) => idx.push(i),
                Err(_) => {
                    let names: Vec<&str> =
                        arrow.fields().iter().map(|f| f.name().as_str()).collect();
                    return Err(Error::Config(format!(
                        "{}: no column `{name}`{} (columns: {})",
                        self.path.display(),
                        crate::error::did_you_mean(name, names.iter().copied()),
                        names.join(", ")
                    )));
                }
            }
        }
        idx.sort_unstable();
        idx.dedup();
        Ok(ProjectionMask::roots(self.meta.parquet_schema(), idx))
    }

    /// A fresh handle, not `try_clone`: clones share one file offset, and readers decoding row
    /// groups in parallel would then seek under each other's feet.
    fn handle(path: &Path, source: &Source) -> Result<Handle> {
        Ok(match source {
            Source::Local => Handle::Local(File::open(path).map_err(|e| Error::io(path, e))?),
            #[cfg(feature = "s3")]
            Source::Remote(r) => Handle::Remote(r.clone()),
        })
    }

    /// Whether the file's bytes are in an object store (the local file is a pointer).
    pub fn is_remote(&self) -> bool {
        !matches!(self.source, Source::Local)
    }

    fn builder(
        &self,
        columns: Option<&[&str]>,
        batch_rows: usize,
    ) -> Result<ParquetRecordBatchReaderBuilder<Handle>> {
        let file = Self::handle(&self.path, &self.source)?;
        Ok(
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
                .with_projection(self.projection(columns)?)
                .with_batch_size(batch_rows.max(1)),
        )
    }

    /// Arrow record batches of `batch_rows` rows, only the named columns (`None`: all).
    pub fn record_batches(
        &self,
        columns: Option<&[&str]>,
        batch_rows: usize,
    ) -> Result<RecordBatches> {
        let reader = self
            .builder(columns, batch_rows)?
            .build()
            .map_err(|e| self.decode_error(e))?;
        Ok(RecordBatches {
            path: self.path.clone(),
            reader,
        })
    }

    /// Like [`record_batches`](Self::record_batches), each batch converted to [`Transitions`]
    /// (columns not read are empty).
    pub fn batches(
        &self,
        columns: Option<&[&str]>,
        batch_rows: usize,
    ) -> Result<impl Iterator<Item = Result<Transitions>> + '_> {
        let batches = self.record_batches(columns, batch_rows)?;
        Ok(batches.map(move |b| batch_to_transitions(self.schema, &b?, &self.path)))
    }

    /// The whole file. Row groups decode in parallel.
    pub fn read_all(&self) -> Result<Transitions> {
        self.read_inner(None)
    }

    /// Only the named columns (plus `run`); the others are left empty.
    pub fn read_columns(&self, columns: &[&str]) -> Result<Transitions> {
        self.read_inner(Some(columns))
    }

    fn read_inner(&self, columns: Option<&[&str]>) -> Result<Transitions> {
        // The output is allocated once at its final size (the footer gives every row group's
        // length), split into one disjoint block of rows per row group, and each row group is
        // decoded in parallel in small record batches copied straight into its block. Small
        // batches keep Arrow's buffers in the allocator's cache instead of faulting in a second
        // copy of the whole file, which dominated the read time.
        let read = |name: &str| columns.is_none_or(|c| name == schema::RUN || c.contains(&name));
        let mut out = Transitions::new(self.schema);
        out.resize_columns(self.num_rows() as usize, read);
        let lens: Vec<usize> = self
            .meta
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows() as usize)
            .collect();
        let mut blocks = Vec::with_capacity(lens.len());
        let mut rest = out.rows_mut();
        for &len in &lens {
            let (head, tail) = rest.split_at(len);
            blocks.push(head);
            rest = tail;
        }
        blocks
            .into_par_iter()
            .enumerate()
            .try_for_each(|(g, mut block)| -> Result<()> {
                let reader = self
                    .builder(columns, DEFAULT_BATCH_ROWS)?
                    .with_row_groups(vec![g])
                    .build()
                    .map_err(|e| self.decode_error(e))?;
                let mut at = 0;
                let mut reader = reader;
                while let Some(b) = decoding(&self.path, || reader.next())? {
                    let b = b.map_err(|e| self.decode_error(e))?;
                    if at + b.num_rows() > lens[g] {
                        return Err(Error::data(
                            &self.path,
                            format!(
                                "row group {g} decodes to more rows than its footer's {}",
                                lens[g]
                            ),
                        ));
                    }
                    let (mut head, tail) = block.split_at(b.num_rows());
                    fill_batch(&mut head, &b, &self.path)?;
                    block = tail;
                    at += b.num_rows();
                }
                if at != lens[g] {
                    return Err(Error::data(
                        &self.path,
                        format!(
                            "row group {g}: {at} rows decoded, the footer says {}",
                            lens[g]
                        ),
                    ));
                }
                Ok(())
            })?;
        Ok(out)
    }

    /// Per-run summaries computed from the data (reads only [`SUMMARY_COLUMNS`]), checking the
    /// (run, episode, step) order and one task per run on the way.
    pub fn runs(&self) -> Result<Vec<RunSummary>> {
        let mut tally = RowTally::new();
        for t in self.batches(Some(&SUMMARY_COLUMNS), DEFAULT_BATCH_ROWS)? {
            let t = t?;
            for i in 0..t.len() {
                tally
                    .push(
                        t.run[i],
                        t.task[i],
                        t.episode[i],
                        t.step[i],
                        t.reward[i],
                        t.terminated[i] || t.truncated[i],
                    )
                    .map_err(|m| Error::data(&self.path, m))?;
            }
        }
        Ok(tally.finish())
    }

    /// Every episode of the file (rows as file row indices), with return, length and whether
    /// it ended. Reads only [`SUMMARY_COLUMNS`].
    pub fn episodes(&self) -> Result<Vec<EpisodeSpan>> {
        Ok(self.read_columns(&SUMMARY_COLUMNS)?.episodes())
    }

    fn decode_error(&self, e: impl std::fmt::Display) -> Error {
        Error::data(
            &self.path,
            format!("cannot decode Parquet data (truncated or corrupt file?): {e}"),
        )
    }
}

/// Runs a step of the Parquet decoder, turning a panic inside it (the decoder asserts on some
/// corrupt pages instead of returning an error) into an error naming the file.
fn decoding<T>(path: &Path, step: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Error::data(
            path,
            format!("cannot decode Parquet data (corrupt file: the decoder failed: {msg})"),
        )
    })
}

/// Iterator of Arrow record batches from one file; errors name the file.
pub struct RecordBatches {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
}

impl Iterator for RecordBatches {
    type Item = Result<RecordBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        let next = match decoding(&self.path, || self.reader.next()) {
            Ok(next) => next,
            Err(e) => return Some(Err(e)),
        };
        next.map(|r| {
            r.map_err(|e| {
                Error::data(
                    &self.path,
                    format!("cannot decode Parquet data (truncated or corrupt file?): {e}"),
                )
            })
        })
    }
}

/// One decoded column of a record batch, borrowed from Arrow's buffers.
enum Column<'a> {
    U32(&'a [u32]),
    F32(&'a [f32]),
    I64(&'a [i64]),
    Bool(arrow::buffer::BooleanBuffer),
}

/// The columns of `batch` by name, type-checked. The schema was checked at open, so a type
/// surprise here means a corrupt file; it is still an error, not a panic.
fn columns_of<'a>(batch: &'a RecordBatch, path: &Path) -> Result<Vec<(&'a str, Column<'a>)>> {
    let bad = |name: &str, what: &str| Error::data(path, format!("column `{name}`: {what}"));
    let mut out = Vec::with_capacity(batch.num_columns());
    for (field, col) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        let name = field.name().as_str();
        if col.null_count() > 0 {
            return Err(bad(
                name,
                &format!("{} null values; the format has no nulls", col.null_count()),
            ));
        }
        let column = match col.data_type() {
            DataType::UInt32 => Column::U32(
                col.as_primitive_opt::<UInt32Type>()
                    .ok_or_else(|| bad(name, "expected UInt32"))?
                    .values(),
            ),
            DataType::Int64 => Column::I64(
                col.as_primitive_opt::<Int64Type>()
                    .ok_or_else(|| bad(name, "expected Int64"))?
                    .values(),
            ),
            DataType::Float32 => Column::F32(
                col.as_primitive_opt::<Float32Type>()
                    .ok_or_else(|| bad(name, "expected Float32"))?
                    .values(),
            ),
            DataType::Boolean => Column::Bool(
                col.as_boolean_opt()
                    .ok_or_else(|| bad(name, "expected Boolean"))?
                    .values()
                    .clone(),
            ),
            DataType::FixedSizeList(..) => {
                let l = col
                    .as_fixed_size_list_opt()
                    .ok_or_else(|| bad(name, "expected FixedSizeList<Float32>"))?;
                let v = l
                    .values()
                    .as_primitive_opt::<Float32Type>()
                    .ok_or_else(|| bad(name, "expected Float32 list items"))?;
                if v.null_count() > 0 {
                    return Err(bad(name, "null list items; the format has no nulls"));
                }
                let size = l.value_length() as usize;
                let start = l.offset() * size;
                Column::F32(
                    v.values()
                        .get(start..start + l.len() * size)
                        .ok_or_else(|| bad(name, "list values shorter than the list"))?,
                )
            }
            other => return Err(bad(name, &format!("unexpected type {other}"))),
        };
        out.push((name, column));
    }
    Ok(out)
}

/// A batch as [`Transitions`] (the columns not in `batch` are empty).
fn batch_to_transitions(
    schema: TransitionSchema,
    batch: &RecordBatch,
    path: &Path,
) -> Result<Transitions> {
    let mut t = Transitions::new(schema);
    let fields = batch.schema_ref().fields().clone();
    t.resize_columns(batch.num_rows(), |n| fields.iter().any(|f| f.name() == n));
    fill_batch(&mut t.rows_mut(), batch, path)?;
    Ok(t)
}

/// Copies the columns of `batch` into `dst`, whose blocks are exactly `batch.num_rows()` long
/// (columns not read are empty slices).
fn fill_batch(dst: &mut RowsMut<'_>, batch: &RecordBatch, path: &Path) -> Result<()> {
    let bad = |name: &str, what: &str| Error::data(path, format!("column `{name}`: {what}"));
    fn copy<T: Copy>(dst: &mut [T], src: &[T], name: &str, path: &Path) -> Result<()> {
        if dst.len() != src.len() {
            return Err(Error::data(
                path,
                format!(
                    "column `{name}`: {} values where {} were expected",
                    src.len(),
                    dst.len()
                ),
            ));
        }
        dst.copy_from_slice(src);
        Ok(())
    }
    fn bools(dst: &mut [bool], src: &arrow::buffer::BooleanBuffer) {
        for (d, v) in dst.iter_mut().zip(src.iter()) {
            *d = v;
        }
    }
    for (name, col) in columns_of(batch, path)? {
        match (name, col) {
            (schema::RUN, Column::U32(v)) => copy(dst.run, v, name, path)?,
            (schema::TASK, Column::U32(v)) => copy(dst.task, v, name, path)?,
            (schema::EPISODE, Column::U32(v)) => copy(dst.episode, v, name, path)?,
            (schema::STEP, Column::U32(v)) => copy(dst.step, v, name, path)?,
            (schema::OBS, Column::F32(v)) => copy(dst.obs, v, name, path)?,
            (schema::NEXT_OBS, Column::F32(v)) => copy(dst.next_obs, v, name, path)?,
            (schema::POLICY, Column::F32(v)) => copy(dst.policy, v, name, path)?,
            (schema::REWARD, Column::F32(v)) => copy(dst.reward, v, name, path)?,
            (schema::TERMINATED, Column::Bool(v)) => bools(dst.terminated, &v),
            (schema::TRUNCATED, Column::Bool(v)) => bools(dst.truncated, &v),
            (schema::ACTION, Column::I64(v)) if dst.discrete => {
                copy(dst.action_i64, v, name, path)?
            }
            (schema::ACTION, Column::F32(v)) if !dst.discrete => {
                copy(dst.action_f32, v, name, path)?
            }
            (schema::ACTION, _) => {
                return Err(bad(name, "action type differs from the file's schema"))
            }
            (
                schema::RUN
                | schema::TASK
                | schema::EPISODE
                | schema::STEP
                | schema::OBS
                | schema::NEXT_OBS
                | schema::POLICY
                | schema::REWARD
                | schema::TERMINATED
                | schema::TRUNCATED,
                _,
            ) => return Err(bad(name, "unexpected column type")),
            (other, _) => return Err(bad(other, "not a column of the format")),
        }
    }
    Ok(())
}
