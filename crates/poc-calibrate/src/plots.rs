//! The report's figures as SVG, drawn with `plotters`: one distance histogram per
//! variant (the threshold marked), power against sample size, power against stage length.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::CalibrateError;
use crate::report::Analysis;
use crate::summary::{histogram, percentile, sorted_finite};

fn draw_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> CalibrateError + '_ {
    move |e| CalibrateError::Io(format!("drawing {}: {e}", path.display()))
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

/// A file-name-safe form of a variant name.
pub fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The histogram of one variant's distances with the threshold line; the x range covers
/// the threshold and the 99.9th percentile of the distances (the rest in the last bin).
pub fn histogram_svg(
    path: &Path,
    name: &str,
    distances: &[f64],
    threshold: f64,
) -> Result<(), CalibrateError> {
    let e = draw_err(path);
    let s = sorted_finite(distances);
    let top = percentile(&s, 99.9)
        .unwrap_or(0.0)
        .max(threshold * 1.5)
        .max(1e-6);
    let bins = 60;
    let counts = histogram(distances, bins, top);
    let ymax = counts.iter().copied().max().unwrap_or(1).max(1);
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("L2 distance to the reference: {name}"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..top, 0u64..ymax + ymax / 10 + 1)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc("L2 distance")
        .y_desc("nonces")
        .draw()
        .map_err(&e)?;
    let w = top / bins as f64;
    chart
        .draw_series(counts.iter().enumerate().map(|(i, &c)| {
            let x0 = i as f64 * w;
            Rectangle::new([(x0, 0), (x0 + w, c)], PALETTE[0].mix(0.7).filled())
        }))
        .map_err(&e)?;
    chart
        .draw_series(LineSeries::new(
            [(threshold, 0), (threshold, ymax + ymax / 10 + 1)],
            PALETTE[3].stroke_width(2),
        ))
        .map_err(&e)?
        .label(format!("threshold {threshold:.4}"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], PALETTE[3]));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}

/// Lines of `(x, y)` points, one per label, on `[0, 1]` in y.
fn lines_svg(
    path: &Path,
    caption: &str,
    x_desc: &str,
    lines: &[(String, Vec<(f64, f64)>)],
) -> Result<(), CalibrateError> {
    let e = draw_err(path);
    let xmax = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(1f64, f64::max);
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..xmax, 0f64..1.02)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("probability of being flagged")
        .draw()
        .map_err(&e)?;
    for (i, (label, pts)) in lines.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(&e)?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}

/// Writes every figure under `dir`; returns their paths relative to the report.
pub fn write_all(
    dir: &Path,
    a: &Analysis,
    distances: &[(String, Vec<f64>)],
) -> Result<Vec<PathBuf>, CalibrateError> {
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| CalibrateError::Io(e.to_string()))?;
    let mut out = Vec::new();
    for (name, d) in distances {
        let rel = PathBuf::from("plots").join(format!("hist-{}.svg", slug(name)));
        histogram_svg(&dir.join(&rel), name, d, a.threshold.value)?;
        out.push(rel);
    }
    // Power against n at the cheated fraction of the phase-length curve, every cheater.
    let f = a.settings.phase_fraction;
    let lines: Vec<(String, Vec<(f64, f64)>)> = a
        .power
        .cheaters
        .iter()
        .filter(|r| r.fraction == f)
        .map(|r| {
            (
                r.variant.clone(),
                r.by_n.iter().map(|&(n, p)| (n as f64, p)).collect(),
            )
        })
        .chain(a.power.honest.iter().map(|r| {
            (
                format!("{} (honest)", r.variant),
                r.by_n.iter().map(|&(n, p)| (n as f64, p)).collect(),
            )
        }))
        .collect();
    let rel = PathBuf::from("plots").join("power-vs-sample-size.svg");
    lines_svg(
        &dir.join(&rel),
        &format!("One validator, {:.0} % of nonces cheated", f * 100.0),
        "sampled nonces n",
        &lines,
    )?;
    out.push(rel);
    if let Some(ph) = &a.phase {
        let mut by: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for p in &ph.curve {
            for (i, (name, pw)) in p.power.iter().enumerate() {
                if by.len() <= i {
                    by.push((name.clone(), Vec::new()));
                }
                by[i].1.push((p.blocks as f64, *pw));
            }
        }
        let rel = PathBuf::from("plots").join("power-vs-stage-length.svg");
        lines_svg(
            &dir.join(&rel),
            &format!(
                "n = {}, {:.0} % cheated, {:.2} nonces/s, {} s blocks",
                ph.sample_size,
                ph.fraction * 100.0,
                ph.production.nonces_per_sec,
                ph.production.block_time_s
            ),
            "generation stage (blocks)",
            &by,
        )?;
        out.push(rel);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_an_svg_with_its_title() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("h.svg");
        histogram_svg(&p, "bf16", &[0.01, 0.02, 0.5, f64::INFINITY], 0.1).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(
            s.starts_with("<svg") && s.contains("bf16") && s.contains("<rect"),
            "{}",
            &s[..200]
        );
        assert_eq!(slug("perturb=1e-3"), "perturb_1e-3");
    }
}
