//! PNG plots: latency by percentile (corrected and uncorrected) and throughput over time.
//!
//! Text needs a TrueType font, and none may be downloaded or embedded: [`load_font`] takes one
//! from the system (Debian's fonts-dejavu-core) or a path given by the user. Without a font the
//! plots are still drawn, without captions or axis labels, and the caller is told so.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::client::RunResult;

/// Fonts tried when none is given, in order.
pub const SYSTEM_FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Largest font file accepted, in bytes.
const FONT_BYTES_MAX: u64 = 32 << 20;

/// Plot size in pixels.
const WIDTH_PX: u32 = 1000;
const HEIGHT_PX: u32 = 600;

/// Highest percentile axis tick: 99.999% (x = 5 nines).
const NINES_MAX: f64 = 5.0;

/// Registers a font for plot text: `path` if given, else the first of [`SYSTEM_FONTS`] that
/// loads. Returns the file used, or `None` (plots will have no text). Call once per process;
/// the font's bytes stay alive for the rest of it.
pub fn load_font(path: Option<&Path>) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match path {
        Some(p) => vec![p.to_path_buf()],
        None => SYSTEM_FONTS.iter().map(PathBuf::from).collect(),
    };
    for p in candidates {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.len() > FONT_BYTES_MAX {
            continue;
        }
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        // plotters keeps a &'static reference; one font per process, so leaking is bounded.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
            return Some(p);
        }
    }
    None
}

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
#[error("plot {path}: {message}")]
pub struct PlotError {
    path: String,
    message: String,
}

fn perr<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> PlotError + '_ {
    move |e| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The (x, latency ms) points of a latency-by-percentile curve, where
/// x = log10(1 / (1 - quantile)): 0 = p0, 1 = p90, 2 = p99, 3 = p99.9 ...
pub fn percentile_curve(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    for v in h.iter_quantiles(4) {
        let q = v.quantile_iterated_to();
        let x = if q >= 1.0 {
            NINES_MAX
        } else {
            (1.0 / (1.0 - q)).log10().min(NINES_MAX)
        };
        points.push((x, v.value_iterated_to() as f64 / 1e6));
    }
    points
}

fn nines_label(x: &f64) -> String {
    let q = 100.0 * (1.0 - 10f64.powf(-*x));
    if *x < 0.5 {
        "0%".into()
    } else {
        let s = format!("{q:.3}");
        format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// Draws latency by percentile: corrected and uncorrected on one chart.
pub fn plot_percentiles(
    result: &RunResult,
    title: &str,
    path: &Path,
    with_text: bool,
) -> Result<(), PlotError> {
    let corrected = percentile_curve(&result.total.latency);
    let uncorrected = percentile_curve(&result.total.service);
    let y_max = corrected
        .iter()
        .chain(uncorrected.iter())
        .map(|p| p.1)
        .fold(0.0f64, f64::max)
        .max(0.001)
        * 1.1;
    let root = BitMapBackend::new(path, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE).map_err(perr(path))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if with_text {
        builder
            .caption(title, ("sans-serif", 22))
            .x_label_area_size(45)
            .y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..NINES_MAX, 0.0..y_max)
        .map_err(perr(path))?;
    let mut mesh = chart.configure_mesh();
    if with_text {
        mesh.x_desc("percentile")
            .y_desc("latency (ms)")
            .x_labels(6)
            .x_label_formatter(&nines_label);
    } else {
        mesh.disable_x_mesh().x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(perr(path))?;
    let series = chart
        .draw_series(LineSeries::new(corrected, RED.stroke_width(2)))
        .map_err(perr(path))?;
    if with_text {
        series
            .label("from intended send (corrected)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    }
    let series = chart
        .draw_series(LineSeries::new(uncorrected, BLUE.stroke_width(2)))
        .map_err(perr(path))?;
    if with_text {
        series
            .label("from actual send (uncorrected)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(perr(path))?;
    }
    root.present().map_err(perr(path))?;
    Ok(())
}

/// Draws throughput per interval over time; the warm-up is shaded grey.
pub fn plot_throughput(
    result: &RunResult,
    title: &str,
    path: &Path,
    with_text: bool,
) -> Result<(), PlotError> {
    let points: Vec<(f64, f64)> = result
        .intervals
        .iter()
        .filter(|iv| !iv.length.is_zero())
        .map(|iv| ((iv.start + iv.length / 2).as_secs_f64(), iv.rate()))
        .collect();
    let x_max = result
        .intervals
        .iter()
        .map(|iv| (iv.start + iv.length).as_secs_f64())
        .fold(1.0f64, f64::max);
    let y_max = points.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.15;
    let warmup_end = result
        .intervals
        .iter()
        .filter(|iv| iv.warmup)
        .map(|iv| (iv.start + iv.length).as_secs_f64())
        .fold(0.0f64, f64::max);
    let root = BitMapBackend::new(path, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE).map_err(perr(path))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if with_text {
        builder
            .caption(title, ("sans-serif", 22))
            .x_label_area_size(45)
            .y_label_area_size(90);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(perr(path))?;
    let mut mesh = chart.configure_mesh();
    if with_text {
        mesh.x_desc("time (s)").y_desc("completed ops/s");
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(perr(path))?;
    if warmup_end > 0.0 {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, 0.0), (warmup_end, y_max)],
                BLACK.mix(0.08).filled(),
            )))
            .map_err(perr(path))?;
    }
    chart
        .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
        .map_err(perr(path))?;
    root.present().map_err(perr(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_labels() {
        assert_eq!(nines_label(&0.0), "0%");
        assert_eq!(nines_label(&1.0), "90%");
        assert_eq!(nines_label(&2.0), "99%");
        assert_eq!(nines_label(&3.0), "99.9%");
    }

    #[test]
    fn percentile_curve_is_monotonic() {
        let mut h = crate::stats::new_histogram();
        for v in 1..=10_000u64 {
            h.record(v * 1000).unwrap();
        }
        let c = percentile_curve(&h);
        assert!(c.len() > 10);
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        // The last point is the max: 10 ms.
        let last = c.last().unwrap();
        assert!((last.1 - 10.0).abs() < 0.02, "{last:?}");
    }
}
