//! The library's error type. Every variant names what went wrong in terms a user can act on:
//! the file, field or flag, what was expected and what was found.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value (TOML key, `--set` override, command-line flag) is invalid.
    #[error("{0}")]
    Config(String),

    /// An environment was asked for something it does not offer (unknown id, bad action, bad task).
    #[error("{0}")]
    Env(String),

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A data file (dataset, checkpoint, state dict) exists but its contents are not what was expected.
    #[error("{path}: {msg}")]
    Data { path: PathBuf, msg: String },

    /// Training hit a condition that makes continuing meaningless.
    #[error("{0}")]
    Training(String),

    /// An update's loss or gradient norm was NaN or infinite; the update was not applied
    /// (`loop.skip_nonfinite` may skip it and go on).
    #[error("{0}")]
    NonFinite(String),

    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

/// Returns early with an [`Error::Config`] built from a format string.
#[macro_export]
macro_rules! config_bail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::Config(format!($($arg)*)))
    };
}

/// Returns early with an [`Error::Env`] built from a format string.
#[macro_export]
macro_rules! env_bail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::Env(format!($($arg)*)))
    };
}

/// Levenshtein edit distance, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a plausible typo.
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= (c.len().max(name.len()) / 2).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ", did you mean `x`?" or an empty string.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match nearest(name, candidates) {
        Some(c) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_finds_typos_and_ignores_unrelated() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        let keys = ["learning_rate", "batch_size", "gamma"];
        assert_eq!(nearest("learning_rat", keys), Some("learning_rate"));
        assert_eq!(nearest("batchsize", keys), Some("batch_size"));
        assert_eq!(nearest("zzzzzzzzzzzzzzzzzz", keys), None);
    }
}
