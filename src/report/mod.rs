//! Human-facing output: aligned tables, progress bars, JSON figure lines, plots.

pub mod aggregate;
pub mod metrics;
pub mod plot;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Renders rows as an aligned plain-text table with a header rule.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    out.push_str(&line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(|s| s.as_str())
            .collect(),
    ));
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(|s| s.as_str()).collect()));
    }
    out
}

/// One benchmark figure, printed as one JSON object per line by `bench --json`.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

/// A progress bar on stderr that hides itself when stderr is not a terminal (CI logs stay clean).
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta}) {msg}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// Formats `x` with a thousands separator-free compact notation (1.23e7 → "12.3M").
pub fn si(x: f64) -> String {
    let a = x.abs();
    if a >= 1e9 {
        format!("{:.2}G", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["env", "n"],
            &[
                vec!["cartpole".into(), "1".into()],
                vec!["x".into(), "81".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "env       n");
        assert_eq!(lines[2], "cartpole  1");
        assert_eq!(lines[3], "x         81");
        assert_eq!(si(12_345_678.0), "12.35M");
    }
}
