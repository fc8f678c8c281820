//! Line plots as SVG (plotters' SVG backend needs no font libraries: text is left to the viewer).

use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// One line, optionally with a shaded band (e.g. ± standard error).
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// (x, low, high) for a shaded band.
    pub band: Vec<(f64, f64, f64)>,
    /// Draw as a horizontal dashed reference line at this y (ignores `points`).
    pub hline: Option<f64>,
    /// Draw as a vertical dashed marker at this x (ignores `points`), e.g. where a phase ends.
    pub vline: Option<f64>,
}

impl Series {
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
            ..Default::default()
        }
    }
    pub fn reference(name: impl Into<String>, y: f64) -> Self {
        Self {
            name: name.into(),
            hline: Some(y),
            ..Default::default()
        }
    }
    pub fn marker(name: impl Into<String>, x: f64) -> Self {
        Self {
            name: name.into(),
            vline: Some(x),
            ..Default::default()
        }
    }
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn plot_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::data(path, format!("cannot draw plot: {e}"))
}

/// Draws `series` into an SVG file at `path` (written atomically).
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    let xs = series.iter().flat_map(|s| {
        s.points
            .iter()
            .map(|p| p.0)
            .chain(s.band.iter().map(|b| b.0))
            .chain(s.vline)
    });
    let ys = series.iter().flat_map(|s| {
        s.points
            .iter()
            .map(|p| p.1)
            .chain(s.band.iter().flat_map(|b| [b.1, b.2]))
            .chain(s.hline)
    });
    let (mut x0, mut x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let (mut y0, mut y1) = ys
        .filter(|y| y.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
            (a.min(y), b.max(y))
        });
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    // A marker on the left edge would hide in the axis.
    if series.iter().any(|s| s.vline == Some(x0)) {
        x0 -= (x1 - x0) * 0.015;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let (y0, y1) = (y0 - pad, y1 + pad);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err(path))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_err(path))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|x| compact(*x))
            .y_label_formatter(&|y| compact(*y))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_err(path))?;
        for (i, s) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            if !s.band.is_empty() {
                let mut poly: Vec<(f64, f64)> = s.band.iter().map(|b| (b.0, b.2)).collect();
                poly.extend(s.band.iter().rev().map(|b| (b.0, b.1)));
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        poly,
                        color.mix(0.18).filled(),
                    )))
                    .map_err(plot_err(path))?;
            }
            let style = color.stroke_width(2);
            let anno = if let Some(y) = s.hline {
                chart
                    .draw_series(DashedLineSeries::new(vec![(x0, y), (x1, y)], 8, 6, style))
                    .map_err(plot_err(path))?
            } else if let Some(x) = s.vline {
                chart
                    .draw_series(DashedLineSeries::new(vec![(x, y0), (x, y1)], 4, 4, style))
                    .map_err(plot_err(path))?
            } else {
                chart
                    .draw_series(LineSeries::new(s.points.clone(), style))
                    .map_err(plot_err(path))?
            };
            anno.label(s.name.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(plot_err(path))?;
        root.present().map_err(plot_err(path))?;
    }
    crate::fs::write_atomic(path, svg.as_bytes())
}

/// Tick labels without trailing `.0` and with k/M suffixes: 100000 → "100k", 2.5 → "2.5".
fn compact(x: f64) -> String {
    let a = x.abs();
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if a >= 1e6 {
        format!("{}M", trim(format!("{:.2}", x / 1e6)))
    } else if a >= 1e4 {
        format!("{}k", trim(format!("{:.1}", x / 1e3)))
    } else {
        trim(format!("{x:.2}"))
    }
}

/// Moving average over a window of `k` points (for noisy episode returns).
pub fn smooth(points: &[(f64, f64)], k: usize) -> Vec<(f64, f64)> {
    let k = k.max(1);
    let mut out = Vec::with_capacity(points.len());
    let mut sum = 0.0;
    for (i, p) in points.iter().enumerate() {
        sum += p.1;
        if i >= k {
            sum -= points[i - k].1;
        }
        let n = (i + 1).min(k) as f64;
        out.push((p.0, sum / n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_title_and_legend() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("curve.svg");
        let s = vec![
            Series::line(
                "return",
                (0..50).map(|i| (i as f64, (i as f64).sqrt())).collect(),
            ),
            Series::reference("optimal", 8.0),
        ];
        line_plot(&p, "Learning curve", "steps", "return", &s).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..40]);
        assert!(text.contains("Learning curve") && text.contains("optimal"));
        assert_eq!(
            smooth(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)], 2),
            vec![(0.0, 1.0), (1.0, 2.0), (2.0, 4.0)]
        );
    }
}
