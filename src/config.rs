//! Configuration: TOML files with serde defaults, `--set key=value` overrides, and errors that
//! name the file and key and suggest the nearest valid key.
//!
//! Every config struct is `#[serde(deny_unknown_fields)]` with paper defaults; [`load`] reads a
//! TOML file (or starts from an empty table), applies overrides, then deserialises.

use crate::error::{did_you_mean, Error, Result};
use serde::de::DeserializeOwned;
use std::path::Path;

/// Parses `key.sub=value` into a path and a TOML value. The value is read as a TOML literal
/// (`3`, `0.5`, `true`, `[1, 2]`, `"text"`) and falls back to a bare string (`cartpole`).
pub fn parse_override(spec: &str) -> Result<(Vec<String>, toml::Value)> {
    let (key, raw) = spec.split_once('=').ok_or_else(|| {
        Error::Config(format!(
            "--set {spec}: expected key=value, e.g. --set agent.learning_rate=1e-4"
        ))
    })?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(|p| p.is_empty()) {
        return Err(Error::Config(format!(
            "--set {spec}: the key `{key}` is not a dotted path like agent.batch_size"
        )));
    }
    let raw = raw.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    Ok((key.split('.').map(String::from).collect(), value))
}

/// Applies `--set` overrides to a TOML table, creating intermediate tables as needed.
/// A path through `[[array]]` tables may index them: `stage.1.episodes=10`.
pub fn apply_overrides(table: &mut toml::Table, overrides: &[String]) -> Result<()> {
    for spec in overrides {
        let (path, value) = parse_override(spec)?;
        set_path(table, &path, value, spec)?;
    }
    Ok(())
}

fn set_path(
    table: &mut toml::Table,
    path: &[String],
    value: toml::Value,
    spec: &str,
) -> Result<()> {
    let mut root = toml::Value::Table(std::mem::take(table));
    let result = set_in(&mut root, path, value, spec);
    if let toml::Value::Table(t) = root {
        *table = t;
    }
    result
}

fn set_in(node: &mut toml::Value, path: &[String], value: toml::Value, spec: &str) -> Result<()> {
    let (head, rest) = path.split_first().expect("non-empty path");
    let slot = match node {
        toml::Value::Table(t) => {
            if rest.is_empty() {
                t.insert(head.clone(), value);
                return Ok(());
            }
            t.entry(head.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        }
        toml::Value::Array(a) => {
            let idx: usize = head.parse().map_err(|_| {
                Error::Config(format!(
                    "--set {spec}: `{head}` indexes a list, expected a number"
                ))
            })?;
            let len = a.len();
            let slot = a.get_mut(idx).ok_or_else(|| {
                Error::Config(format!(
                    "--set {spec}: index {idx} is out of range (the list has {len} entries)"
                ))
            })?;
            if rest.is_empty() {
                *slot = value;
                return Ok(());
            }
            slot
        }
        _ => {
            return Err(Error::Config(format!(
                "--set {spec}: cannot set `{head}` inside a value that is not a table"
            )))
        }
    };
    set_in(slot, rest, value, spec)
}

/// Deserialises a config from a TOML table, turning serde's messages into ones that name
/// `source` and suggest the nearest valid key for an unknown one.
pub fn from_table<T: DeserializeOwned>(table: toml::Table, source: &str) -> Result<T> {
    T::deserialize(toml::Value::Table(table))
        .map_err(|e| Error::Config(explain(source, &e.to_string())))
}

/// Reads `path` (if given), applies overrides, deserialises.
pub fn load<T: DeserializeOwned>(path: Option<&Path>, overrides: &[String]) -> Result<T> {
    let (mut table, source) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            let table: toml::Table = toml::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {}", p.display(), e.message())))?;
            (table, p.display().to_string())
        }
        None => (toml::Table::new(), "command line".to_string()),
    };
    apply_overrides(&mut table, overrides)?;
    let source = if overrides.is_empty() {
        source
    } else {
        format!("{source} (with --set overrides)")
    };
    from_table(table, &source)
}

/// A command's config in layers, later ones winning: the TOML file `file` (or an empty table);
/// `flags`, the top-level keys the command's own flags set (`env`, `algo`, ...); then the
/// `--set` overrides. An `env.KEY=VALUE` override on an env given by id turns it into the table
/// `{ id = ... }` first. Each key of `required` must be present before the overrides apply.
/// Errors name `file`, or `COMMAND flags` without one.
pub fn load_layered<T: DeserializeOwned>(
    command: &str,
    file: Option<&Path>,
    flags: &[(&str, toml::Value)],
    overrides: &[String],
    required: &[&str],
) -> Result<T> {
    let mut table = match file {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            toml::from_str::<toml::Table>(&text)
                .map_err(|e| Error::Config(format!("{} is not valid TOML: {e}", p.display())))?
        }
        None => toml::Table::new(),
    };
    for (key, value) in flags {
        table.insert(key.to_string(), value.clone());
    }
    if overrides.iter().any(|s| s.starts_with("env.")) {
        if let Some(toml::Value::String(id)) = table.get("env").cloned() {
            let mut t = toml::Table::new();
            t.insert("id".into(), toml::Value::String(id));
            table.insert("env".into(), toml::Value::Table(t));
        }
    }
    for key in required {
        if !table.contains_key(*key) {
            return Err(Error::Config(format!(
                "{command} needs --{key} (or `{key}` in --config)"
            )));
        }
    }
    apply_overrides(&mut table, overrides)?;
    let source = file
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("{command} flags"));
    from_table(table, &source)
}

/// The `env.*` overrides of `overrides` without their prefix; any other key is an error, for
/// commands whose only config is the environment.
pub fn env_overrides_only(overrides: &[String]) -> Result<Vec<String>> {
    overrides
        .iter()
        .map(|o| match o.strip_prefix("env.") {
            Some(rest) => Ok(rest.to_string()),
            None => Err(Error::Config(format!(
                "--set {o}: this command takes only env.* overrides (e.g. --set env.sticky_action_prob=0)"
            ))),
        })
        .collect()
}

/// Rewrites serde's "unknown field `x`, expected one of `a`, `b`" into a message with a
/// suggestion; other messages get the source prefixed.
pub fn explain(source: &str, msg: &str) -> String {
    let msg = msg.trim();
    if let Some(rest) = msg.split("unknown field `").nth(1) {
        if let Some((field, tail)) = rest.split_once('`') {
            let valid: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
            let hint = did_you_mean(field, valid.iter().copied());
            return format!(
                "{source}: unknown key `{field}`{hint}; valid keys here: {}",
                valid.join(", ")
            );
        }
    }
    if let Some(rest) = msg.split("unknown variant `").nth(1) {
        if let Some((variant, tail)) = rest.split_once('`') {
            let valid: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
            let hint = did_you_mean(variant, valid.iter().copied());
            return format!(
                "{source}: unknown value `{variant}`{hint}; valid values: {}",
                valid.join(", ")
            );
        }
    }
    format!("{source}: {msg}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Agent {
        #[serde(default = "lr")]
        learning_rate: f64,
        #[serde(default)]
        batch_size: usize,
    }
    fn lr() -> f64 {
        1e-3
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        #[serde(default)]
        name: String,
        agent: Agent,
    }

    #[test]
    fn overrides_parse_types_and_nest() {
        let mut t: toml::Table = toml::from_str("[agent]\nbatch_size = 32\n").unwrap();
        apply_overrides(
            &mut t,
            &["agent.learning_rate=2.5e-4".into(), "name=cartpole".into()],
        )
        .unwrap();
        let c: Cfg = from_table(t, "x.toml").unwrap();
        assert_eq!(c.agent.learning_rate, 2.5e-4);
        assert_eq!(c.agent.batch_size, 32);
        assert_eq!(c.name, "cartpole");
    }

    #[test]
    fn unknown_key_names_file_key_and_nearest() {
        let t: toml::Table = toml::from_str("[agent]\nlearning_rat = 1.0\n").unwrap();
        let e = from_table::<Cfg>(t, "exp.toml").unwrap_err().to_string();
        assert!(e.contains("exp.toml"), "{e}");
        assert!(e.contains("`learning_rat`"), "{e}");
        assert!(e.contains("did you mean `learning_rate`"), "{e}");
    }

    #[test]
    fn malformed_override_is_explained() {
        let e = parse_override("agent.lr").unwrap_err().to_string();
        assert!(e.contains("key=value"), "{e}");
        let e = parse_override("agent..lr=1").unwrap_err().to_string();
        assert!(e.contains("dotted path"), "{e}");
    }

    #[test]
    fn array_tables_can_be_indexed() {
        let mut t: toml::Table =
            toml::from_str("[[stage]]\nepisodes = 1\n[[stage]]\nepisodes = 2\n").unwrap();
        apply_overrides(&mut t, &["stage.1.episodes=9".into()]).unwrap();
        assert_eq!(t["stage"][1]["episodes"].as_integer(), Some(9));
        assert!(apply_overrides(&mut t, &["stage.5.episodes=9".into()]).is_err());
    }
}
