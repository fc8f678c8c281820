//! The transition schema: one Arrow/Parquet layout shared by replay
//! dumps, teacher data and learning histories, so that any of them feeds any consumer without
//! conversion and pandas / polars / pyarrow / DuckDB read the files directly.
//!
//! [`TransitionSchema`] is the layout in our terms (observation size, action kind, optional
//! policy column). It builds the Arrow schema a writer uses and checks the schema of a file
//! that is read, reporting every problem at once so that a user fixes a file in one pass.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::envs::EnvSpec;
use crate::error::{Error, Result};

/// Format name repeated in every file's key-value metadata and in `dataset.json`.
pub const FORMAT_NAME: &str = "reincarnate.transitions";
/// Format version; bumped on any change a version-1 reader would misread.
pub const FORMAT_VERSION: u32 = 1;

/// Parquet key-value metadata keys.
pub const META_FORMAT: &str = "reincarnate.format";
pub const META_VERSION: &str = "reincarnate.version";
/// The env spec (`crate::envs::EnvSpec`) as JSON.
pub const META_ENV_SPEC: &str = "reincarnate.env_spec";
/// `probs` or `logits`: what the `policy` column holds.
pub const META_POLICY: &str = "reincarnate.policy";

/// Column names, in file order.
pub const RUN: &str = "run";
pub const TASK: &str = "task";
pub const EPISODE: &str = "episode";
pub const STEP: &str = "step";
pub const OBS: &str = "obs";
pub const ACTION: &str = "action";
pub const REWARD: &str = "reward";
pub const TERMINATED: &str = "terminated";
pub const TRUNCATED: &str = "truncated";
pub const NEXT_OBS: &str = "next_obs";
pub const POLICY: &str = "policy";

/// Every column name the format knows, in file order (`policy` last and optional).
pub const COLUMNS: [&str; 11] = [
    RUN, TASK, EPISODE, STEP, OBS, ACTION, REWARD, TERMINATED, TRUNCATED, NEXT_OBS, POLICY,
];

/// How actions are stored: `Int64` for discrete, `FixedSizeList<Float32, dim>` for continuous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionSpec {
    Discrete,
    Continuous { dim: usize },
}

/// What the optional `policy` column holds: action probabilities or unnormalised logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    Probs,
    Logits,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Probs => "probs",
            PolicyKind::Logits => "logits",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "probs" => Some(PolicyKind::Probs),
            "logits" => Some(PolicyKind::Logits),
            _ => None,
        }
    }
}

/// The behaviour policy column: its kind and length (number of discrete actions, usually).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySpec {
    pub kind: PolicyKind,
    pub dim: usize,
}

/// The layout of one transitions file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionSchema {
    pub obs_dim: usize,
    pub action: ActionSpec,
    pub policy: Option<PolicySpec>,
}

impl TransitionSchema {
    pub fn new(obs_dim: usize, action: ActionSpec) -> Self {
        Self {
            obs_dim,
            action,
            policy: None,
        }
    }

    /// Adds the optional `policy` column.
    pub fn with_policy(mut self, kind: PolicyKind, dim: usize) -> Self {
        self.policy = Some(PolicySpec { kind, dim });
        self
    }

    /// The layout for an environment: flat observation size, and a discrete or continuous action.
    pub fn for_env(spec: &EnvSpec) -> Self {
        let action = if spec.action_space.is_discrete() {
            ActionSpec::Discrete
        } else {
            ActionSpec::Continuous {
                dim: spec.action_space.flat_dim(),
            }
        };
        Self::new(spec.obs_dim(), action)
    }

    /// Scalars per action: 1 for discrete (one `i64`), `dim` for continuous (`dim` × `f32`).
    pub fn action_dim(&self) -> usize {
        match self.action {
            ActionSpec::Discrete => 1,
            ActionSpec::Continuous { dim } => dim,
        }
    }

    pub fn is_discrete(&self) -> bool {
        self.action == ActionSpec::Discrete
    }

    pub fn policy_dim(&self) -> usize {
        self.policy.map_or(0, |p| p.dim)
    }

    /// The Arrow schema written to files (no metadata: that goes in the Parquet footer).
    pub fn to_arrow(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new(RUN, DataType::UInt32, false),
            Field::new(TASK, DataType::UInt32, false),
            Field::new(EPISODE, DataType::UInt32, false),
            Field::new(STEP, DataType::UInt32, false),
            Field::new(OBS, f32_list(self.obs_dim), false),
            Field::new(ACTION, self.action_type(), false),
            Field::new(REWARD, DataType::Float32, false),
            Field::new(TERMINATED, DataType::Boolean, false),
            Field::new(TRUNCATED, DataType::Boolean, false),
            Field::new(NEXT_OBS, f32_list(self.obs_dim), false),
        ];
        if let Some(p) = self.policy {
            fields.push(Field::new(POLICY, f32_list(p.dim), false));
        }
        Arc::new(Schema::new(fields))
    }

    fn action_type(&self) -> DataType {
        match self.action {
            ActionSpec::Discrete => DataType::Int64,
            ActionSpec::Continuous { dim } => f32_list(dim),
        }
    }

    /// Key-value metadata for the Parquet footer: format name, version, policy kind, env spec.
    pub fn footer_metadata(&self, env: Option<&EnvSpec>) -> Result<Vec<(String, String)>> {
        let mut kv = vec![
            (META_FORMAT.to_string(), FORMAT_NAME.to_string()),
            (META_VERSION.to_string(), FORMAT_VERSION.to_string()),
        ];
        if let Some(p) = self.policy {
            kv.push((META_POLICY.to_string(), p.kind.as_str().to_string()));
        }
        if let Some(spec) = env {
            let json = serde_json::to_string(spec)
                .map_err(|e| Error::Config(format!("cannot serialise the env spec: {e}")))?;
            kv.push((META_ENV_SPEC.to_string(), json));
        }
        Ok(kv)
    }

    /// Reads the layout of a file from its Arrow schema and footer metadata, checking every
    /// column and the format metadata. All problems are returned in one error naming `path`.
    pub fn from_file(path: &Path, found: &Schema, meta: &HashMap<String, String>) -> Result<Self> {
        let (schema, problems) = Self::infer(found, meta);
        if problems.is_empty() {
            Ok(schema)
        } else {
            Err(problems_error(path, &problems))
        }
    }

    /// Infers the layout the file intends and lists everything that does not fit the format.
    fn infer(found: &Schema, meta: &HashMap<String, String>) -> (Self, Vec<String>) {
        let list_len = |name: &str| match found.field_with_name(name).map(|f| f.data_type()) {
            Ok(DataType::FixedSizeList(item, n)) if *item.data_type() == DataType::Float32 => {
                Some(*n as usize)
            }
            _ => None,
        };
        let obs_dim = list_len(OBS).or_else(|| list_len(NEXT_OBS));
        let action = match list_len(ACTION) {
            Some(dim) => ActionSpec::Continuous { dim },
            None => ActionSpec::Discrete,
        };
        let policy_kind = meta.get(META_POLICY).and_then(|s| PolicyKind::parse(s));
        let policy = found.field_with_name(POLICY).ok().map(|_| PolicySpec {
            kind: policy_kind.unwrap_or(PolicyKind::Probs),
            dim: list_len(POLICY).unwrap_or(0),
        });
        let schema = Self {
            obs_dim: obs_dim.unwrap_or(0),
            action,
            policy,
        };
        let mut problems = Vec::new();
        if obs_dim.is_none() {
            // Neither observation column says D: compare against a generic description.
            for name in [OBS, NEXT_OBS] {
                match found.field_with_name(name) {
                    Err(_) => problems.push(format!(
                        "missing column `{name}` (expected FixedSizeList<Float32, D>)"
                    )),
                    Ok(f) => problems.push(format!(
                        "column `{name}`: expected FixedSizeList<Float32, D>, found {}",
                        describe_type(f.data_type())
                    )),
                }
            }
        }
        for p in schema_problems(&schema.to_arrow(), found) {
            let about_obs = p.contains(&format!("`{OBS}`")) || p.contains(&format!("`{NEXT_OBS}`"));
            if obs_dim.is_none() && about_obs {
                continue;
            }
            problems.push(p);
        }
        match meta.get(META_FORMAT) {
            Some(f) if f == FORMAT_NAME => {}
            Some(f) => problems.push(format!(
                "metadata `{META_FORMAT}`: expected `{FORMAT_NAME}`, found `{f}`"
            )),
            None => problems.push(format!(
                "metadata `{META_FORMAT}` is missing (expected `{FORMAT_NAME}`): not a reincarnate transitions file"
            )),
        }
        match meta.get(META_VERSION) {
            Some(v) if v.trim() == FORMAT_VERSION.to_string() => {}
            Some(v) => problems.push(format!(
                "metadata `{META_VERSION}`: expected {FORMAT_VERSION}, found `{v}` (written by another version of reincarnate?)"
            )),
            None => problems.push(format!(
                "metadata `{META_VERSION}` is missing (expected {FORMAT_VERSION})"
            )),
        }
        if schema.policy.is_some() && policy_kind.is_none() {
            problems.push(match meta.get(META_POLICY) {
                Some(v) => format!("metadata `{META_POLICY}`: expected `probs` or `logits`, found `{v}`"),
                None => format!(
                    "metadata `{META_POLICY}` is missing: a file with a `policy` column must say `probs` or `logits`"
                ),
            });
        }
        (schema, problems)
    }

    /// Problems that make a file with layout `found` unusable where `self` is expected (for
    /// example a dataset whose env spec says obs dim 2 holding a file with obs dim 3).
    pub fn mismatches(&self, found: &TransitionSchema) -> Vec<String> {
        let mut out = schema_problems(&self.to_arrow(), &found.to_arrow());
        if let (Some(a), Some(b)) = (self.policy, found.policy) {
            if a.kind != b.kind {
                out.push(format!(
                    "column `{POLICY}`: expected {}, found {}",
                    a.kind.as_str(),
                    b.kind.as_str()
                ));
            }
        }
        out
    }
}

/// `FixedSizeList<Float32, n>` with the conventional child name.
pub fn f32_list(n: usize) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new("item", DataType::Float32, false)),
        n as i32,
    )
}

/// A type as the documentation writes it: `FixedSizeList<Float32, 4>`, `Int64`, `Utf8`.
pub fn describe_type(dt: &DataType) -> String {
    match dt {
        DataType::FixedSizeList(item, n) => {
            format!("FixedSizeList<{}, {n}>", describe_type(item.data_type()))
        }
        DataType::List(item) | DataType::LargeList(item) => {
            format!("List<{}>", describe_type(item.data_type()))
        }
        other => format!("{other:?}"),
    }
}

/// Compares types ignoring nullability and list child names (other writers name the child
/// `element` or `item` and mark it nullable; the data is the same).
fn same_type(expected: &DataType, found: &DataType) -> bool {
    match (expected, found) {
        (DataType::FixedSizeList(a, n), DataType::FixedSizeList(b, m)) => {
            n == m && same_type(a.data_type(), b.data_type())
        }
        (a, b) => a == b,
    }
}

/// Every difference between an expected and a found Arrow schema: missing columns, columns of
/// the wrong type (saying when only the list size differs), and columns the format does not have.
pub fn schema_problems(expected: &Schema, found: &Schema) -> Vec<String> {
    let mut problems = Vec::new();
    for field in expected.fields() {
        let want = field.data_type();
        match found.field_with_name(field.name()) {
            Err(_) => problems.push(format!(
                "missing column `{}` (expected {})",
                field.name(),
                describe_type(want)
            )),
            Ok(f) if same_type(want, f.data_type()) => {}
            Ok(f) => {
                let size_only = matches!(
                    (want, f.data_type()),
                    (DataType::FixedSizeList(a, _), DataType::FixedSizeList(b, _))
                        if same_type(a.data_type(), b.data_type())
                );
                problems.push(format!(
                    "column `{}`: expected {}, found {}{}",
                    field.name(),
                    describe_type(want),
                    describe_type(f.data_type()),
                    if size_only { " (wrong list size)" } else { "" }
                ));
            }
        }
    }
    for f in found.fields() {
        if expected.field_with_name(f.name()).is_err() {
            problems.push(format!(
                "unexpected column `{}` ({}): the format's columns are {}",
                f.name(),
                describe_type(f.data_type()),
                COLUMNS.join(", ")
            ));
        }
    }
    problems
}

/// One error listing every problem, naming the file.
pub(crate) fn problems_error(path: &Path, problems: &[String]) -> Error {
    let mut msg = format!("not a valid {FORMAT_NAME} v{FORMAT_VERSION} file:");
    for p in problems {
        msg.push_str("\n  - ");
        msg.push_str(p);
    }
    Error::data(path, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(policy: Option<&str>) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert(META_FORMAT.into(), FORMAT_NAME.into());
        m.insert(META_VERSION.into(), "1".into());
        if let Some(p) = policy {
            m.insert(META_POLICY.into(), p.into());
        }
        m
    }

    #[test]
    fn layouts_round_trip_through_arrow() {
        let p = Path::new("x.parquet");
        for s in [
            TransitionSchema::new(2, ActionSpec::Discrete),
            TransitionSchema::new(3, ActionSpec::Continuous { dim: 2 }),
            TransitionSchema::new(4, ActionSpec::Discrete).with_policy(PolicyKind::Logits, 5),
        ] {
            let m = meta(s.policy.map(|p| p.kind.as_str()));
            let back = TransitionSchema::from_file(p, &s.to_arrow(), &m).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn every_problem_is_reported_with_expected_and_found() {
        let good = TransitionSchema::new(2, ActionSpec::Discrete).to_arrow();
        let mut fields: Vec<Field> = good.fields().iter().map(|f| (**f).clone()).collect();
        fields.retain(|f| f.name() != REWARD);
        for f in fields.iter_mut() {
            if f.name() == NEXT_OBS {
                *f = Field::new(NEXT_OBS, f32_list(3), false);
            }
            if f.name() == STEP {
                *f = Field::new(STEP, DataType::Utf8, false);
            }
        }
        let bad = Schema::new(fields);
        let err = TransitionSchema::from_file(Path::new("bad.parquet"), &bad, &HashMap::new())
            .unwrap_err()
            .to_string();
        for needle in [
            "bad.parquet",
            "missing column `reward` (expected Float32)",
            "column `next_obs`: expected FixedSizeList<Float32, 2>, found FixedSizeList<Float32, 3> (wrong list size)",
            "column `step`: expected UInt32, found Utf8",
            "reincarnate.format",
            "reincarnate.version",
        ] {
            assert!(err.contains(needle), "`{needle}` not in: {err}");
        }
    }

    #[test]
    fn obs_of_wrong_type_is_named_without_a_dimension() {
        let good = TransitionSchema::new(2, ActionSpec::Discrete).to_arrow();
        let fields: Vec<Field> = good
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                OBS | NEXT_OBS => Field::new(f.name(), DataType::Float64, false),
                _ => (**f).clone(),
            })
            .collect();
        let err = TransitionSchema::from_file(Path::new("f"), &Schema::new(fields), &meta(None))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("column `obs`: expected FixedSizeList<Float32, D>, found Float64"),
            "{err}"
        );
        assert!(err.contains("column `next_obs`"), "{err}");
    }

    #[test]
    fn policy_column_requires_its_kind() {
        let s = TransitionSchema::new(2, ActionSpec::Discrete).with_policy(PolicyKind::Probs, 4);
        let err = TransitionSchema::from_file(Path::new("f"), &s.to_arrow(), &meta(None))
            .unwrap_err()
            .to_string();
        assert!(err.contains(META_POLICY), "{err}");
    }

    #[test]
    fn mismatches_name_the_column() {
        let a = TransitionSchema::new(2, ActionSpec::Discrete);
        let b = TransitionSchema::new(2, ActionSpec::Continuous { dim: 1 });
        let m = a.mismatches(&b);
        assert_eq!(m.len(), 1);
        assert!(m[0].contains("column `action`: expected Int64"), "{m:?}");
        assert!(a.mismatches(&a).is_empty());
    }
}
