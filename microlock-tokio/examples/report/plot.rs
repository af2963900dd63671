//! `docs/performance.svg`: hand-off latency (p50 solid, p99 dashed) and etcd requests per
//! acquisition against W, microlock-tokio against bare hyper; etcd v2 in the top row, v3 in
//! the bottom one, on the same axes.

use std::path::Path;

use plotters::coord::combinators::{LogCoord, WithKeyPoints};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use serde_json::Value;

use crate::contended::handoff_rows;
use crate::markdown::{f, result};
use crate::steps::handoff_step;
use crate::Result;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

const CLIENTS: [(&str, RGBColor); 2] = [("microlock-tokio", BLUE), ("bare hyper", RED)];

/// The axes both rows share: the Ws, the latency range (ms), the top of the requests axis.
struct Axes {
    ws: Vec<f64>,
    low: f64,
    high: f64,
    top: f64,
}

impl Axes {
    fn new(rows: &[&Value]) -> Axes {
        let mut ws: Vec<f64> = rows.iter().map(|r| f(&r["waiters"])).collect();
        ws.sort_by(f64::total_cmp);
        ws.dedup();
        if ws.is_empty() {
            ws = vec![1.0, 4.0, 16.0];
        }
        let latencies = || {
            rows.iter()
                .flat_map(|r| {
                    [
                        &r["median"]["handoff_p50_ms"],
                        &r["median"]["handoff_p99_ms"],
                    ]
                })
                .map(f)
                .filter(|y| y.is_finite() && *y > 0.0)
        };
        let top = rows
            .iter()
            .map(|r| f(&r["median"]["requests_per_acquisition"]))
            .filter(|y| y.is_finite())
            .fold(1.0, f64::max)
            * 1.3;
        Axes {
            ws,
            // Room above the curves for the legend.
            low: latencies().fold(1.0, f64::min) / 1.5,
            high: latencies().fold(1.0, f64::max) * 6.0,
            top,
        }
    }

    fn x_range(&self) -> WithKeyPoints<LogCoord<f64>> {
        let (w_min, w_max) = (self.ws[0], self.ws[self.ws.len() - 1]);
        (w_min / 1.5..w_max * 1.5)
            .log_scale()
            .with_key_points(self.ws.clone())
    }
}

/// The plot: a title, then one row of two panels per protocol.
pub fn plot(run: &Value, path: &Path) -> Result<()> {
    let protocols = ["v2", "v3"];
    let all: Vec<&Value> = (protocols.iter())
        .flat_map(|p| handoff_rows(run, p))
        .collect();
    let axes = Axes::new(&all);
    let root = SVGBackend::new(path, (1000, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(36);
    let handoff = result(run, handoff_step("v2")).or_else(|| result(run, handoff_step("v3")));
    title.draw(&Text::new(
        format!(
            "microlock-tokio vs. bare hyper, etcd {} ({} hand-offs per run, median of {} round(s))",
            run["etcd_version"].as_str().unwrap_or("?"),
            handoff.map_or(Value::Null, |h| h["handoffs"].clone()),
            handoff.map_or(Value::Null, |h| h["rounds"].clone()),
        ),
        (20, 12),
        ("sans-serif", 17),
    ))?;
    for (area, protocol) in body.split_evenly((2, 1)).iter().zip(protocols) {
        panels(area, &handoff_rows(run, protocol), protocol, &axes)?;
    }
    root.present()?;
    Ok(())
}

/// One protocol's row: latency on the left, requests per acquisition on the right.
fn panels(area: &Area<'_>, rows: &[&Value], protocol: &str, axes: &Axes) -> Result<()> {
    let series = |client: &str, key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| r["client"] == client)
            .map(|r| (f(&r["waiters"]), f(&r["median"][key])))
            .filter(|(_, y)| y.is_finite())
            .collect()
    };
    let panels = area.split_evenly((1, 2));

    // Left: latency, on a log scale (p99 is often ten times p50).
    let (low, high) = (axes.low, axes.high);
    let ticks: Vec<f64> = [
        0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0,
    ]
    .into_iter()
    .chain([100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0])
    .filter(|t| (low..=high).contains(t))
    .collect();
    let caption = format!("etcd {protocol}: hand-off latency to another node");
    let mut chart = ChartBuilder::on(&panels[0])
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(52)
        .build_cartesian_2d(
            axes.x_range(),
            (low..high).log_scale().with_key_points(ticks),
        )?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("W (waiting nodes)")
        .y_desc("ms (log scale)")
        .x_label_formatter(&|w| format!("{w:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()?;
    for (client, color) in CLIENTS {
        let p50 = series(client, "handoff_p50_ms");
        let p99 = series(client, "handoff_p99_ms");
        chart
            .draw_series(LineSeries::new(p50.clone(), color.stroke_width(2)))?
            .label(format!("{client} p50"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(p50.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        chart
            .draw_series(DashedLineSeries::new(
                p99.clone(),
                6,
                4,
                color.stroke_width(1),
            ))?
            .label(format!("{client} p99"))
            .legend(move |(x, y)| {
                DashedPathElement::new([(x, y), (x + 20, y)], 5, 3, color.stroke_width(1))
            });
        chart.draw_series(
            p99.iter()
                .map(|&p| Circle::new(p, 3, color.stroke_width(1))),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;

    // Right: requests per acquisition.
    let caption = format!("etcd {protocol}: etcd requests per acquisition");
    let mut chart = ChartBuilder::on(&panels[1])
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(52)
        .build_cartesian_2d(axes.x_range(), 0.0..axes.top)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("W (waiting nodes)")
        .y_desc("requests")
        .x_label_formatter(&|w| format!("{w:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    // The floor first, in wider rings: equal counts stay visible.
    for (client, color) in CLIENTS.into_iter().rev() {
        let points = series(client, "requests_per_acquisition");
        let (width, radius) = if client == "bare hyper" {
            (4, 6)
        } else {
            (2, 4)
        };
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(width)))?
            .label(client)
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], color.stroke_width(width))
            });
        chart.draw_series(
            points
                .iter()
                .map(|&p| Circle::new(p, radius, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}
