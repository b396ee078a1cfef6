//! The benchmark's figure, drawn with plotters' SVG backend (text is SVG
//! `<text>`, so no font files are needed): legitimate success, SBC CPU and
//! registration time against the flood rate, one line per defence.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::defence::Defence;
use super::flood_runs::{FloodRate, Point};

fn colour(d: Defence) -> RGBColor {
    match d {
        Defence::None => RGBColor(120, 120, 120),
        Defence::Pike => RGBColor(214, 120, 0),
        Defence::Nftables => RGBColor(31, 119, 180),
        Defence::Shield => RGBColor(44, 160, 44),
        Defence::NftGlobal => RGBColor(148, 103, 189),
        Defence::ShieldVerify => RGBColor(23, 190, 207),
        Defence::ShieldGeneric => RGBColor(188, 189, 34),
        Defence::ShieldTc => RGBColor(227, 119, 194),
    }
}

/// One series: (offered kpps, value) per flood point, in rate order. The
/// no-flood baselines are in the tables, not on the log axis.
fn series(points: &[Point], d: Defence, value: impl Fn(&Point) -> f64) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.defence == d && p.rate != FloodRate::Off && p.flood.rate > 0.0)
        .map(|p| (p.flood.rate / 1000.0, value(p)))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// One panel of the figure: title, y label, y range, the value per point.
type Panel<'a> = (
    &'a str,
    &'a str,
    std::ops::Range<f64>,
    &'a dyn Fn(&Point) -> f64,
);

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn plot_err(e: DrawingAreaErrorKind<std::io::Error>) -> anyhow::Error {
    anyhow!("plot: {e}")
}

/// The legend: one entry per defence across the top.
fn draw_legend(legend: &Area) -> Result<()> {
    let e = plot_err;
    for (i, d) in Defence::ALL.iter().enumerate() {
        let x = 90 + i as i32 * 340;
        let c = colour(*d);
        legend
            .draw(&PathElement::new(
                vec![(x, 24), (x + 30, 24)],
                c.stroke_width(3),
            ))
            .map_err(e)?;
        legend
            .draw(&Circle::new((x + 15, 24), 4, c.filled()))
            .map_err(e)?;
        legend
            .draw(&Text::new(d.label(), (x + 38, 16), ("sans-serif", 15)))
            .map_err(e)?;
    }
    Ok(())
}

/// One panel: a line per defence against the flood rate `x` (log scale).
fn draw_panel(area: &Area, panel: Panel, points: &[Point], x: std::ops::Range<f64>) -> Result<()> {
    let e = plot_err;
    let (title, ylabel, yrange, value) = panel;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(x.log_scale(), yrange)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("flood offered (thousand packets/s, log scale)")
        .y_desc(ylabel)
        .label_style(("sans-serif", 13))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(e)?;
    for d in Defence::ALL {
        let s = series(points, d, value);
        if s.is_empty() {
            continue;
        }
        let c = colour(d);
        chart
            .draw_series(LineSeries::new(s.clone(), c.stroke_width(2)))
            .map_err(e)?;
        chart
            .draw_series(s.iter().map(|&(x, y)| Circle::new((x, y), 4, c.filled())))
            .map_err(e)?;
    }
    Ok(())
}

pub fn draw(points: &[Point], path: &Path) -> Result<()> {
    let e = plot_err;
    let flood: Vec<&Point> = points
        .iter()
        .filter(|p| p.rate != FloodRate::Off && p.flood.rate > 0.0)
        .collect();
    if flood.is_empty() {
        return Err(anyhow!("plot: no flood measurements"));
    }
    let root = SVGBackend::new(path, (1500, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (legend, body) = root.split_vertically(44);
    draw_legend(&legend)?;
    let areas = body.split_evenly((1, 3));
    let xmin = flood
        .iter()
        .map(|p| p.flood.rate / 1000.0)
        .fold(f64::INFINITY, f64::min)
        * 0.8;
    let xmax = flood
        .iter()
        .map(|p| p.flood.rate / 1000.0)
        .fold(0.0, f64::max)
        * 1.25;
    let success_min = flood
        .iter()
        .map(|p| 100.0 * p.legit_success())
        .fold(100.0, f64::min);
    let ymin_success = ((success_min - 5.0) / 5.0).floor().max(0.0) * 5.0;
    let ymax_cpu = flood
        .iter()
        .map(|p| 100.0 * p.sbc_cpu_secs() / p.window_secs)
        .fold(10.0, f64::max)
        * 1.1;
    let ymax_reg = flood.iter().map(|p| p.registration_ms).fold(10.0, f64::max) * 1.1;

    let panels: [Panel; 3] = [
        (
            "Legitimate registrations + calls that succeeded",
            "success (%)",
            ymin_success..100.5,
            &|p: &Point| 100.0 * p.legit_success(),
        ),
        (
            "SBC CPU: Kamailio + softirq (+ shieldd)",
            "% of one CPU",
            0.0..ymax_cpu,
            &|p: &Point| 100.0 * p.sbc_cpu_secs() / p.window_secs,
        ),
        (
            "Mean time of a legitimate registration",
            "ms",
            0.0..ymax_reg,
            &|p: &Point| p.registration_ms,
        ),
    ];
    for (area, panel) in areas.iter().zip(panels) {
        draw_panel(area, panel, points, xmin..xmax)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::flood::{Engine, FloodReport};

    fn point(defence: Defence, rate: f64, ok: u64, cpu: f64) -> Point {
        Point {
            defence,
            rate: if rate == 0.0 {
                FloodRate::Off
            } else {
                FloodRate::Max
            },
            window_secs: 10.0,
            flood: FloodReport {
                engine: Engine::Redirect,
                sent: (rate * 10.0) as u64,
                seconds: 10.0,
                rate,
                send_errors: 0,
            },
            delivered: 0,
            registrations_ok: ok,
            registrations: 100,
            calls_ok: 40,
            calls: 40,
            legit_retransmissions: 0,
            registration_ms: 5.0,
            kamailio_cpu_secs: cpu,
            softirq_secs: cpu / 2.0,
            host_busy_secs: cpu * 2.0,
            sender_cpu_secs: 0.0,
            shieldd_cpu_secs: 0.0,
            kamailio_requests: 0,
            defence_drops: 0,
            overload_drops: 0,
            bans: 0,
            newcomers: 0,
            newcomers_ok: 0,
            spoofed_at_kamailio: 0,
            newcomer_requests_at_kamailio: 0,
            preregistered_ok: 0,
            verified_before: None,
            subscribers_verified: None,
            under_pressure_seen: None,
            forgeries: None,
        }
    }

    #[test]
    fn draws_an_svg_with_text_and_a_line_per_defence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.svg");
        let mut pts = Vec::new();
        for d in Defence::ALL {
            pts.push(point(d, 0.0, 100, 0.5));
            pts.push(point(d, 50_000.0, 90, 4.0));
            pts.push(point(d, 200_000.0, 60, 8.0));
        }
        draw(&pts, &path).expect("draw");
        let svg = std::fs::read_to_string(&path).expect("svg");
        assert!(svg.contains("<svg"), "not an SVG");
        for d in Defence::ALL {
            assert!(svg.contains(d.label()), "legend lacks {}", d.label());
        }
        assert!(svg.contains("flood offered"), "axis label missing");
        assert!(
            svg.matches("<polyline").count() >= 12,
            "a line per defence in each panel"
        );
        assert!(draw(&pts[..1], &path).is_err(), "no flood, no plot");
    }
}
