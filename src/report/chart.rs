//! Inline SVG charts for the HTML page: accounts per lifecycle state per run ([`progress`])
//! and invitations sent, accepted and converted per day ([`per_day`]). Pure functions from the [`super::history`]
//! data to SVG text; nothing is loaded and no script runs. Every mark carries `data-*`
//! attributes with the number it draws, so a test can compare the chart with
//! `status --format json`.

use std::fmt::Write as _;

use super::history::{Day, Point, SERIES};

const W: f64 = 640.0;
const H: f64 = 220.0;
/// Left, right, top and bottom margins.
const ML: f64 = 44.0;
const MR: f64 = 96.0;
const MT: f64 = 12.0;
const MB: f64 = 30.0;

fn escape(text: &str) -> String {
    minijinja::HtmlEscape(text).to_string()
}

/// The colour of a series (the page's palette: red held back, amber at work, blue waiting,
/// green done).
fn colour(series: &str) -> &'static str {
    match series {
        "unmatched" => "#8f2d29",
        "blocked" => "#c2413b",
        "needs_address" => "#b36b00",
        "awaiting_sync" | "staged" => "#d68a1a",
        "ready" => "#e0b040",
        "invited" => "#2f6fbf",
        "accepted" => "#2a9d8f",
        "done" => "#2e8b57",
        _ => "#5b6575",
    }
}

/// A rounded-up maximum for the y axis: 1, 2, 5, 10, 20, 50, ...
fn nice_max(max: usize) -> usize {
    let mut step = 1;
    loop {
        for m in [1, 2, 5] {
            if m * step >= max.max(1) {
                return m * step;
            }
        }
        step *= 10;
    }
}

fn x_at(i: usize, n: usize) -> f64 {
    if n <= 1 {
        return ML + (W - ML - MR) / 2.0;
    }
    ML + (W - ML - MR) * i as f64 / (n - 1) as f64
}

fn y_at(v: usize, max: usize) -> f64 {
    H - MB - (H - MT - MB) * v as f64 / max as f64
}

/// The y axis: a line at zero and the maximum, labelled.
fn axis(out: &mut String, max: usize) {
    for v in [0, max / 2, max] {
        let y = y_at(v, max);
        let _ = write!(
            out,
            "<line x1=\"{ML}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d9dee7\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#5b6575\">{v}</text>",
            W - MR,
            ML - 6.0,
            y + 4.0
        );
    }
}

/// Line `s` of the legend, at the right end of the chart.
fn legend(out: &mut String, s: usize, what: &str, series: &str) {
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"{}\">{}</text>",
        W - MR + 10.0,
        MT + 14.0 + 15.0 * s as f64,
        colour(series),
        escape(what)
    );
}

/// The first and last day under the x axis.
fn ends(out: &mut String, first: &str, last: &str) {
    for (x, day, anchor) in [(ML, first, "start"), (W - MR, last, "end")] {
        let _ = write!(
            out,
            "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"{anchor}\" \
             fill=\"#5b6575\">{}</text>",
            H - 10.0,
            escape(day)
        );
    }
}

/// Accounts per series at the end of each run: one line per series ([`SERIES`] order), one
/// dot per run that has it (a recorded point has the lifecycle states, a journal one the
/// steps `staged`, `invited`, `done`). `label` names the chart (`every account`, or a
/// partner domain).
pub fn progress(points: &[Point], label: &str) -> String {
    let max = nice_max(
        points
            .iter()
            .flat_map(|p| p.counts.iter().map(|(_, n)| *n))
            .max()
            .unwrap_or(0),
    );
    let mut out = format!(
        "<svg class=\"chart progress\" data-chart=\"progress\" data-label=\"{}\" \
         viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" \
         role=\"img\" aria-label=\"accounts per lifecycle state, per run: {}\">",
        escape(label),
        escape(label)
    );
    axis(&mut out, max);
    let n = points.len();
    let drawn = SERIES.iter().filter(|name| {
        points
            .iter()
            .any(|p| p.counts.iter().any(|(s, _)| s == *name))
    });
    for (s, name) in drawn.enumerate() {
        let dots: Vec<(usize, &Point, usize)> = points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let (_, v) = p.counts.iter().find(|(st, _)| st == name)?;
                Some((i, p, *v))
            })
            .collect();
        let path: Vec<String> = dots
            .iter()
            .map(|(i, _, v)| format!("{:.1},{:.1}", x_at(*i, n), y_at(*v, max)))
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" "),
            c = colour(name)
        );
        for (i, p, v) in &dots {
            let _ = write!(
                out,
                "<circle r=\"3.5\" cx=\"{:.1}\" cy=\"{:.1}\" fill=\"{}\" data-step=\"{name}\" \
                 data-run=\"{}\" data-source=\"{}\" data-count=\"{v}\"><title>{}: {v} {name}</title></circle>",
                x_at(*i, n),
                y_at(*v, max),
                colour(name),
                escape(&p.run),
                p.source.as_str(),
                escape(&p.at.strftime("%Y-%m-%d %H:%M UTC").to_string()),
            );
        }
        legend(&mut out, s, name, name);
    }
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let day = |p: &Point| p.at.strftime("%Y-%m-%d").to_string();
        ends(&mut out, &day(first), &day(last));
    }
    out.push_str("</svg>");
    out
}

/// Invitations sent (blue), accepted (teal) and accounts converted (green) per day, side by
/// side.
pub fn per_day(days: &[Day]) -> String {
    let max = nice_max(
        days.iter()
            .map(|d| d.invited.max(d.accepted).max(d.converted))
            .max()
            .unwrap_or(0),
    );
    let mut out = format!(
        "<svg class=\"chart days\" data-chart=\"days\" \
         viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" \
         aria-label=\"invitations sent, accepted and accounts converted per day\">"
    );
    axis(&mut out, max);
    let slot = (W - ML - MR) / days.len().max(1) as f64;
    let bar = (slot / 3.0 - 2.0).clamp(1.0, 14.0);
    for (i, d) in days.iter().enumerate() {
        let x = ML + slot * i as f64 + slot / 2.0;
        for (what, value, colour, dx) in [
            ("invited", d.invited, colour("invited"), -1.5 * bar - 1.0),
            ("accepted", d.accepted, colour("accepted"), -0.5 * bar),
            ("converted", d.converted, colour("done"), 0.5 * bar + 1.0),
        ] {
            let y = y_at(value, max);
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{colour}\" \
                 data-day=\"{}\" data-series=\"{what}\" data-count=\"{value}\"><title>{}: {value} {what}</title></rect>",
                x + dx,
                H - MB - y,
                escape(&d.day),
                escape(&d.day)
            );
        }
    }
    for (s, (what, series)) in [
        ("invited", "invited"),
        ("accepted", "accepted"),
        ("converted", "done"),
    ]
    .iter()
    .enumerate()
    {
        legend(&mut out, s, what, series);
    }
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        ends(&mut out, &first.day, &last.day);
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::report::history::Source;

    fn point(run: &str, staged: usize, invited: usize, done: usize) -> Point {
        Point {
            run: run.into(),
            at: "2026-11-23T00:00:00Z".parse().unwrap_or_default(),
            source: Source::Journal,
            counts: vec![
                ("staged".into(), staged),
                ("invited".into(), invited),
                ("done".into(), done),
            ],
        }
    }

    #[test]
    fn every_dot_carries_its_step_run_and_count() {
        let svg = progress(&[point("r1", 3, 0, 0), point("r<2>", 1, 2, 7)], "a&b");
        assert!(svg.contains(
            "data-step=\"done\" data-run=\"r&lt;2&gt;\" data-source=\"journal\" data-count=\"7\""
        ));
        assert!(svg.contains(
            "data-step=\"staged\" data-run=\"r1\" data-source=\"journal\" data-count=\"3\""
        ));
        assert!(svg.contains("data-label=\"a&amp;b\""));
        assert_eq!(svg.matches("<circle").count(), 6);
        assert!(!svg.contains("<script"));
    }

    #[test]
    fn days_show_both_series_and_the_axis_is_round() {
        let svg = per_day(&[Day {
            day: "2026-11-20".into(),
            invited: 4,
            accepted: 2,
            converted: 1,
        }]);
        assert!(svg.contains("data-series=\"accepted\" data-count=\"2\""));
        assert!(svg.contains("data-day=\"2026-11-20\" data-series=\"invited\" data-count=\"4\""));
        assert!(svg.contains("data-series=\"converted\" data-count=\"1\""));
        assert_eq!(nice_max(0), 1);
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(11), 20);
        assert_eq!(nice_max(250), 500);
    }
}
