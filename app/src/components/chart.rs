//! A small hand-drawn SVG line chart: the bundle stays small, and the charts draw
//! exactly what the migration cards need (several series, iteration marks).

use leptos::prelude::*;

/// One line on a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: &'static str,
    /// CSS class giving the line its colour.
    pub class: &'static str,
    /// `(x, y)` points, x increasing.
    pub points: Vec<(f64, f64)>,
}

// Drawing units are tenths of a pixel of a 320 × 110 chart, so coordinates are whole
// numbers: printing floats would pull Rust's float formatting into the bundle.
const WIDTH: f64 = 3200.0;
const HEIGHT: f64 = 1100.0;
const PAD_LEFT: f64 = 40.0;
const PAD_TOP: f64 = 140.0;
const PAD_BOTTOM: f64 = 40.0;

/// A line chart of `series` against a shared x axis (seconds), with vertical marks at
/// `marks` (iteration boundaries).
#[component]
pub fn LineChart(
    /// Accessible title, also shown above the chart.
    title: &'static str,
    /// The lines.
    #[prop(into)]
    series: Signal<Vec<Series>>,
    /// x positions of vertical marks.
    #[prop(into)]
    marks: Signal<Vec<f64>>,
    /// Formats a y value for the scale label.
    format_y: fn(f64) -> String,
) -> impl IntoView {
    let frame = Memo::new(move |_| Frame::of(&series.get()));
    view! {
        <figure class="chart">
            <figcaption>
                <span class="chart-title">{title}</span>
                <span class="chart-scale">{move || format_y(frame.get().max_y)}</span>
            </figcaption>
            <svg viewBox="0 0 3200 1100" preserveAspectRatio="none" role="img"
                aria-label=title>
                <line class="axis" x1=PAD_LEFT as i64 y1=(HEIGHT - PAD_BOTTOM) as i64 x2=WIDTH as i64 y2=(HEIGHT - PAD_BOTTOM) as i64 />
                {move || {
                    let f = frame.get();
                    marks.get().into_iter().map(|x| {
                        let x = f.x(x);
                        view! { <line class="mark" x1=x y1=PAD_TOP as i64 x2=x y2=(HEIGHT - PAD_BOTTOM) as i64 /> }
                    }).collect_view()
                }}
                {move || {
                    let f = frame.get();
                    series.get().into_iter().map(|s| {
                        view! { <path class=format!("line {}", s.class) d=f.path(&s.points) /> }
                    }).collect_view()
                }}
            </svg>
            <div class="legend">
                {move || series.get().into_iter().map(|s| view! {
                    <span class=format!("key {}", s.class)>{s.name}</span>
                }).collect_view()}
            </div>
        </figure>
    }
}

/// The data range mapped onto the drawing area.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Frame {
    min_x: f64,
    max_x: f64,
    max_y: f64,
}

impl Frame {
    fn of(series: &[Series]) -> Self {
        let points = series.iter().flat_map(|s| s.points.iter());
        let (mut min_x, mut max_x, mut max_y) = (f64::MAX, f64::MIN, 0.0_f64);
        for &(x, y) in points {
            min_x = min_x.min(x);
            max_x = max_x.max(x);
            max_y = max_y.max(y);
        }
        if min_x > max_x {
            (min_x, max_x) = (0.0, 1.0);
        }
        if max_x - min_x < 1.0 {
            max_x = min_x + 1.0;
        }
        Self {
            min_x,
            max_x,
            max_y: if max_y > 0.0 { max_y * 1.1 } else { 1.0 },
        }
    }

    fn x(&self, x: f64) -> i64 {
        (PAD_LEFT + (x - self.min_x) / (self.max_x - self.min_x) * (WIDTH - PAD_LEFT)).round()
            as i64
    }

    fn y(&self, y: f64) -> i64 {
        let plot = HEIGHT - PAD_TOP - PAD_BOTTOM;
        (HEIGHT - PAD_BOTTOM - (y / self.max_y).clamp(0.0, 1.0) * plot).round() as i64
    }

    fn path(&self, points: &[(f64, f64)]) -> String {
        let mut d = String::with_capacity(points.len() * 12);
        for (i, &(x, y)) in points.iter().enumerate() {
            let cmd = if i == 0 { 'M' } else { 'L' };
            d.push_str(&format!("{cmd}{} {}", self.x(x), self.y(y)));
        }
        d
    }
}
