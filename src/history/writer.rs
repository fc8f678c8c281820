//! [`TransitionWriter`]: streams transitions into one Parquet file with bounded memory.
//!
//! Rows are buffered column by column in plain `Vec`s (one `extend_from_slice` per column per
//! row, no per-row allocation); when a row group's worth has arrived the vectors are handed to
//! Arrow without copying and encoded as one row group. The file is written under a hidden
//! temporary name and renamed on [`TransitionWriter::finish`], so a crash or an error never
//! leaves a half-written file under the final name.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Int64Array};
use arrow::array::{RecordBatch, UInt32Array};
use arrow::buffer::ScalarBuffer;
use arrow::datatypes::{DataType, Field, SchemaRef};
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnChunk, ArrowRowGroupWriterFactory};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use rayon::prelude::*;

use super::schema::{self, ActionSpec, TransitionSchema};
use super::tally::{RowTally, RunSummary};
use super::transitions::{ActionRef, Actions, TransitionRef, Transitions};
use crate::envs::EnvSpec;
use crate::error::{Error, Result};

/// Rows per row group by default (about 1M: large enough for fast scans, small enough to stream).
pub const DEFAULT_ROW_GROUP_ROWS: usize = 1 << 20;

/// Knobs of a [`TransitionWriter`]; the defaults suit datasets of a few to hundreds of millions of rows.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// Rows per row group: also the writer's memory bound (one row group of columns is held).
    pub row_group_rows: usize,
    /// zstd level; 1 is pyarrow's default and keeps writing fast.
    pub zstd_level: i32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            zstd_level: 1,
        }
    }
}

/// What [`TransitionWriter::finish`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct FileSummary {
    pub path: PathBuf,
    pub rows: u64,
    pub row_groups: usize,
    pub bytes: u64,
    /// One entry per run in the file, in order: what `dataset.json` records.
    pub runs: Vec<RunSummary>,
}

/// Streaming writer of one transitions file. Push rows sorted by (run, episode, step), then
/// call [`finish`](Self::finish); dropping it unfinished deletes the temporary file.
pub struct TransitionWriter {
    path: PathBuf,
    tmp: PathBuf,
    schema: TransitionSchema,
    arrow_schema: SchemaRef,
    /// `None` once finished. Columns of a row group are encoded in parallel through the
    /// factory, then appended in order to the file writer.
    writer: Option<(
        SerializedFileWriter<BufWriter<File>>,
        ArrowRowGroupWriterFactory,
    )>,
    buf: Transitions,
    row_group_rows: usize,
    tally: RowTally,
    row_groups: usize,
}

impl TransitionWriter {
    /// Creates the temporary file beside `path` (the parent folder must exist). `env` goes
    /// into the footer metadata so a lone file still says which environment it came from.
    pub fn create(
        path: &Path,
        schema: TransitionSchema,
        env: Option<&EnvSpec>,
        options: &WriterOptions,
    ) -> Result<Self> {
        if options.row_group_rows == 0 {
            return Err(Error::Config(
                "row_group_rows must be at least 1 (rows per Parquet row group)".into(),
            ));
        }
        if let Some(spec) = env {
            let fits = TransitionSchema::for_env(spec);
            if fits.obs_dim != schema.obs_dim || fits.action != schema.action {
                return Err(Error::Config(format!(
                    "{}: the transition layout (obs dim {}, action {:?}) does not fit env `{}` \
                     (obs dim {}, action {:?})",
                    path.display(),
                    schema.obs_dim,
                    schema.action,
                    spec.id(),
                    fits.obs_dim,
                    fits.action
                )));
            }
        }
        let level = ZstdLevel::try_new(options.zstd_level)
            .map_err(|e| Error::Config(format!("zstd level {}: {e}", options.zstd_level)))?;
        let kv = schema
            .footer_metadata(env)?
            .into_iter()
            .map(|(k, v)| KeyValue::new(k, v))
            .collect();
        let sorting = [schema::RUN, schema::EPISODE, schema::STEP]
            .iter()
            .map(|name| SortingColumn {
                column_idx: schema::COLUMNS.iter().position(|c| c == name).unwrap_or(0) as i32,
                descending: false,
                nulls_first: false,
            })
            .collect();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(options.row_group_rows))
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_key_value_metadata(Some(kv))
            .set_sorting_columns(Some(sorting))
            .set_created_by(format!("reincarnate {}", env!("CARGO_PKG_VERSION")))
            .build();
        let tmp = crate::fs::temp_path(path);
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let arrow_schema = schema.to_arrow();
        // ArrowWriter sets up the Parquet schema and embeds the Arrow schema in the footer;
        // its parts then let row groups be encoded column-parallel.
        let writer = ArrowWriter::try_new(
            BufWriter::with_capacity(1 << 20, file),
            arrow_schema.clone(),
            Some(props),
        )
        .and_then(|w| w.into_serialized_writer())
        .map_err(|e| Error::data(&tmp, format!("cannot start a Parquet writer: {e}")))?;
        let mut w = Self {
            path: path.to_path_buf(),
            tmp,
            schema,
            arrow_schema,
            writer: Some(writer),
            buf: Transitions::new(schema),
            row_group_rows: options.row_group_rows,
            tally: RowTally::new(),
            row_groups: 0,
        };
        w.reserve();
        Ok(w)
    }

    pub fn schema(&self) -> &TransitionSchema {
        &self.schema
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows accepted so far.
    pub fn rows(&self) -> u64 {
        self.tally.rows()
    }

    /// Appends one transition. Errors (naming the 0-based row) if a slice has the wrong length,
    /// the action kind or policy presence differs from the schema, or the row breaks the
    /// (run, episode, step) order; a rejected row is not written.
    #[inline]
    pub fn push(&mut self, t: &TransitionRef<'_>) -> Result<()> {
        self.check_shapes(t)?;
        let done = t.terminated || t.truncated;
        self.tally
            .push(t.run, t.task, t.episode, t.step, t.reward, done)
            .map_err(|m| Error::data(&self.path, m))?;
        self.buf.push(t);
        if self.buf.len() >= self.row_group_rows {
            self.flush_row_group()?;
        }
        Ok(())
    }

    /// Appends every row of `batch` (same layout as the writer), in order.
    pub fn push_batch(&mut self, batch: &Transitions) -> Result<()> {
        let s = &self.schema;
        if batch.schema.obs_dim != s.obs_dim
            || batch.schema.action != s.action
            || batch.schema.policy.map(|p| p.dim) != s.policy.map(|p| p.dim)
        {
            return Err(Error::data(
                &self.path,
                format!(
                    "batch layout {:?} differs from the file's {:?}",
                    batch.schema, self.schema
                ),
            ));
        }
        let n = batch.len();
        let action_len = match &batch.action {
            Actions::Discrete(v) => v.len(),
            Actions::Continuous(v) => v.len(),
        };
        let lens = [
            ("task", batch.task.len(), n),
            ("episode", batch.episode.len(), n),
            ("step", batch.step.len(), n),
            ("obs", batch.obs.len(), n * s.obs_dim),
            ("action", action_len, n * s.action_dim()),
            ("reward", batch.reward.len(), n),
            ("terminated", batch.terminated.len(), n),
            ("truncated", batch.truncated.len(), n),
            ("next_obs", batch.next_obs.len(), n * s.obs_dim),
            ("policy", batch.policy.len(), n * s.policy_dim()),
        ];
        for (name, found, want) in lens {
            if found != want {
                return Err(Error::data(
                    &self.path,
                    format!("batch of {n} rows has {found} values in `{name}`, expected {want}"),
                ));
            }
        }
        // Whole column slices at a time: the per-row work is only the order check.
        let mut start = 0;
        while start < n {
            let end = n.min(start + self.row_group_rows - self.buf.len());
            let mut accepted = end;
            let mut failure = None;
            for i in start..end {
                let done = batch.terminated[i] || batch.truncated[i];
                let r = self.tally.push(
                    batch.run[i],
                    batch.task[i],
                    batch.episode[i],
                    batch.step[i],
                    batch.reward[i],
                    done,
                );
                if let Err(m) = r {
                    accepted = i;
                    failure = Some(m);
                    break;
                }
            }
            self.buf.extend_from(batch, start..accepted);
            if let Some(m) = failure {
                return Err(Error::data(&self.path, m));
            }
            if self.buf.len() >= self.row_group_rows {
                self.flush_row_group()?;
            }
            start = end;
        }
        Ok(())
    }

    fn check_shapes(&self, t: &TransitionRef<'_>) -> Result<()> {
        let s = &self.schema;
        let problem = if t.obs.len() != s.obs_dim {
            Some(format!(
                "obs has length {}, expected {}",
                t.obs.len(),
                s.obs_dim
            ))
        } else if t.next_obs.len() != s.obs_dim {
            Some(format!(
                "next_obs has length {}, expected {}",
                t.next_obs.len(),
                s.obs_dim
            ))
        } else {
            match (s.action, t.action) {
                (ActionSpec::Discrete, ActionRef::Discrete(_)) => None,
                (ActionSpec::Continuous { dim }, ActionRef::Continuous(a)) if a.len() == dim => {
                    None
                }
                (ActionSpec::Continuous { dim }, ActionRef::Continuous(a)) => {
                    Some(format!("action has length {}, expected {dim}", a.len()))
                }
                (want, _) => Some(format!(
                    "action kind does not match the file's {want:?} actions"
                )),
            }
            .or_else(|| match (s.policy, t.policy) {
                (None, None) => None,
                (Some(p), Some(v)) if v.len() == p.dim => None,
                (Some(p), Some(v)) => {
                    Some(format!("policy has length {}, expected {}", v.len(), p.dim))
                }
                (Some(_), None) => Some("policy is missing (the file has a policy column)".into()),
                (None, Some(_)) => Some("policy given but the file has no policy column".into()),
            })
        };
        match problem {
            None => Ok(()),
            Some(p) => Err(Error::data(
                &self.path,
                format!(
                    "row {} (run {}, episode {}, step {}): {p}",
                    self.rows(),
                    t.run,
                    t.episode,
                    t.step
                ),
            )),
        }
    }

    fn reserve(&mut self) {
        self.buf.reserve(self.row_group_rows.min(1 << 16));
    }

    /// Encodes the buffered rows as one row group. The column vectors move into Arrow buffers.
    fn flush_row_group(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let cols = std::mem::replace(&mut self.buf, Transitions::new(self.schema));
        let batch = to_record_batch(&self.arrow_schema, cols)
            .map_err(|e| Error::data(&self.tmp, format!("cannot build a record batch: {e}")))?;
        let (file_writer, factory) = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::data(&self.tmp, "writer already finished"))?;
        let tmp = &self.tmp;
        let perr = |e: parquet::errors::ParquetError| {
            Error::data(
                tmp,
                format!("cannot write row group {}: {e}", self.row_groups),
            )
        };
        let writers = factory
            .create_column_writers(self.row_groups)
            .map_err(perr)?;
        let fields = self.arrow_schema.fields();
        let chunks: Vec<ArrowColumnChunk> = writers
            .into_par_iter()
            .zip(batch.columns().par_iter())
            .zip(fields.par_iter())
            .map(|((mut w, array), field)| {
                // Every column of the format is one Parquet leaf.
                for leaf in compute_leaves(field, array)? {
                    w.write(&leaf)?;
                }
                w.close()
            })
            .collect::<std::result::Result<_, _>>()
            .map_err(perr)?;
        let mut rg = file_writer.next_row_group().map_err(perr)?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut rg).map_err(perr)?;
        }
        rg.close().map_err(perr)?;
        self.row_groups += 1;
        self.reserve();
        Ok(())
    }

    fn finished_error(&self) -> Error {
        Error::data(&self.path, "writer already finished")
    }

    /// Writes the last row group and the footer, syncs, and renames the file into place.
    pub fn finish(mut self) -> Result<FileSummary> {
        self.flush_row_group()?;
        let (mut w, _) = self.writer.take().ok_or_else(|| self.finished_error())?;
        w.finish()
            .map_err(|e| Error::data(&self.tmp, format!("cannot write the Parquet footer: {e}")))?;
        let out = w.inner_mut();
        out.flush().map_err(|e| Error::io(&self.tmp, e))?;
        out.get_ref()
            .sync_all()
            .map_err(|e| Error::io(&self.tmp, e))?;
        drop(w);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        let bytes = std::fs::metadata(&self.path)
            .map_err(|e| Error::io(&self.path, e))?
            .len();
        let tally = std::mem::take(&mut self.tally);
        Ok(FileSummary {
            path: self.path.clone(),
            rows: tally.rows(),
            row_groups: self.row_groups,
            bytes,
            runs: tally.finish(),
        })
    }
}

impl Drop for TransitionWriter {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            // Unfinished: the temporary file is garbage. Nothing useful to do if removal fails.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn u32_array(v: Vec<u32>) -> ArrayRef {
    Arc::new(UInt32Array::new(ScalarBuffer::from(v), None))
}

fn f32_list_array(
    v: Vec<f32>,
    dim: usize,
) -> std::result::Result<ArrayRef, arrow::error::ArrowError> {
    let values = Arc::new(Float32Array::new(ScalarBuffer::from(v), None));
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    Ok(Arc::new(FixedSizeListArray::try_new(
        item, dim as i32, values, None,
    )?))
}

/// Moves struct-of-arrays columns into a record batch of `schema` (no copy except booleans,
/// which Arrow packs into bits).
pub(crate) fn to_record_batch(
    schema: &SchemaRef,
    t: Transitions,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let s = t.schema;
    let mut cols: Vec<ArrayRef> = vec![
        u32_array(t.run),
        u32_array(t.task),
        u32_array(t.episode),
        u32_array(t.step),
        f32_list_array(t.obs, s.obs_dim)?,
        match t.action {
            Actions::Discrete(v) => Arc::new(Int64Array::new(ScalarBuffer::from(v), None)),
            Actions::Continuous(v) => f32_list_array(v, s.action_dim())?,
        },
        Arc::new(Float32Array::new(ScalarBuffer::from(t.reward), None)),
        Arc::new(BooleanArray::from(t.terminated)),
        Arc::new(BooleanArray::from(t.truncated)),
        f32_list_array(t.next_obs, s.obs_dim)?,
    ];
    if let Some(p) = s.policy {
        cols.push(f32_list_array(t.policy, p.dim)?);
    }
    RecordBatch::try_new(schema.clone(), cols)
}
