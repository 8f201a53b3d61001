//! The bench plot (PNG): each mode's latency distribution, and its per-stage service times stacked.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::bench::BenchResult;
use crate::AppError;

/// Where the plot's font is looked for (Debian/Ubuntu's `fonts-dejavu-core`).
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn register_font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        for p in FONT_CANDIDATES {
            if let Ok(bytes) = std::fs::read(p) {
                // The font lives for the whole process, as plotters requires.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                    .map_err(|_| format!("{p} is not a usable font"));
            }
        }
        Err(format!("no font found (looked in {FONT_CANDIDATES:?}); install fonts-dejavu-core"))
    })
    .clone()
}

const STAGE_COLORS: [RGBColor; 5] = [
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];
const MODE_COLORS: [RGBColor; 3] = [RGBColor(127, 127, 127), RGBColor(31, 119, 180), RGBColor(255, 127, 14)];

/// Draws the bench plot into `path` (PNG, 1400×620).
pub fn write(result: &BenchResult, path: &Path) -> Result<(), AppError> {
    let err = |reason: String| AppError::Output { path: path.to_path_buf(), reason };
    register_font().map_err(err)?;
    draw(result, path).map_err(|e| err(e.to_string()))
}

fn draw(result: &BenchResult, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (1400, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "framepipe bench: {} on {} ({})",
        file_name(&result.model),
        file_name(&result.video.path),
        result.engine
    );
    let root = root.titled(&title, ("sans-serif", 24))?;
    let (left, right) = root.split_horizontally(700);

    // Left: latency CDF per mode.
    let max_ms = result
        .runs
        .iter()
        .flat_map(|r| r.latencies_us.iter())
        .fold(0.0f64, |m, v| if v.is_finite() { m.max(*v / 1e3) } else { m })
        .max(1.0)
        * 1.05;
    let mut chart = ChartBuilder::on(&left)
        .caption("end-to-end latency (capture -> result)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max_ms, 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms)")
        .y_desc("frames at or below (%)")
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, run) in result.runs.iter().enumerate() {
        let mut v: Vec<f64> = run.latencies_us.iter().filter(|x| x.is_finite()).map(|x| x / 1e3).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len().max(1) as f64;
        let color = MODE_COLORS[i % MODE_COLORS.len()];
        let r = &run.report;
        chart
            .draw_series(LineSeries::new(
                v.iter().enumerate().map(|(k, x)| (*x, 100.0 * (k + 1) as f64 / n)),
                color.stroke_width(3),
            ))?
            .label(format!(
                "{}: p50 {:.1} ms, p99 {:.1} ms, {:.2} fps",
                run.mode.name(),
                r.latency_us.p50 / 1e3,
                r.latency_us.p99 / 1e3,
                r.throughput_fps
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;

    // Right: per-stage median service time, stacked, per mode.
    let stages = ["decode", "pre", "infer", "post"];
    let n = result.runs.len().max(1);
    let totals: Vec<f64> =
        result.runs.iter().map(|r| stages.iter().map(|s| stage_p50(&r.report, s)).sum::<f64>()).collect();
    let max_total = totals.iter().cloned().fold(1.0, f64::max) * 1.25;
    let mut chart = ChartBuilder::on(&right)
        .caption("per-stage service time (p50), stacked", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..max_total, 0.0..n as f64)?;
    let names: Vec<String> = result.runs.iter().map(|r| r.mode.name().to_string()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            let i = (*y - 0.5).round();
            if (*y - 0.5 - i).abs() < 0.01 && i >= 0.0 && (i as usize) < names.len() {
                names[i as usize].clone()
            } else {
                String::new()
            }
        })
        .x_desc("time per frame (ms)")
        .label_style(("sans-serif", 14))
        .draw()?;
    for (k, stage) in stages.iter().enumerate() {
        let color = STAGE_COLORS[k];
        let bars: Vec<Rectangle<(f64, f64)>> = result
            .runs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let x0: f64 = stages[..k].iter().map(|s| stage_p50(&r.report, s)).sum();
                let x1 = x0 + stage_p50(&r.report, stage);
                Rectangle::new([(x0, i as f64 + 0.2), (x1, i as f64 + 0.8)], color.filled())
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(*stage)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    for (i, total) in totals.iter().enumerate() {
        chart.draw_series(std::iter::once(Text::new(
            format!("{total:.1} ms"),
            (*total + max_total * 0.01, i as f64 + 0.45),
            ("sans-serif", 14),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

fn stage_p50(r: &framepipe::Report, name: &str) -> f64 {
    r.stages.iter().find(|s| s.name == name).map_or(0.0, |s| s.service_us.p50 / 1e3)
}

fn file_name(p: &str) -> String {
    Path::new(p).file_name().map_or_else(|| p.to_string(), |f| f.to_string_lossy().into_owned())
}
