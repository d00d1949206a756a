//! Server-side SVG line charts for self-contained reports (the game-day report and the post-incident
//! report): series over time, shaded bands (faults) and vertical markers (detection, diagnosis,
//! actions, each kind its own colour and dash), every text escaped.
//! Pure: data in, a string of SVG out; no scripts, no external resources.

use std::fmt::Write as _;

/// One line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub(crate) name: String,
    /// (x, y) points, x ascending; non-finite values are skipped.
    pub(crate) points: Vec<(f64, f64)>,
}

/// A shaded span of x (a fault from its start to its end).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Band {
    pub(crate) from: f64,
    pub(crate) to: f64,
    pub(crate) label: String,
}

/// A vertical line at x (an action, a detection, a diagnosis).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Marker {
    pub(crate) at: f64,
    pub(crate) label: String,
    pub(crate) kind: MarkerKind,
}

/// What a marker marks: each kind is drawn in its own colour and dash, and named in the legend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) enum MarkerKind {
    /// A healing action.
    #[default]
    Action,
    /// The incident opened: mend detected the problem.
    Detection,
    /// The diagnosis was made.
    Diagnosis,
}

impl MarkerKind {
    /// (colour, dash pattern, legend name).
    fn style(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Action => ("#009e73", "4 3", "action"),
            Self::Detection => ("#b00020", "1 2", "detected"),
            Self::Diagnosis => ("#6a3d9a", "8 3", "diagnosed"),
        }
    }
}

/// A chart with its axes' names.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Chart {
    pub(crate) title: String,
    pub(crate) x_label: String,
    pub(crate) y_label: String,
    pub(crate) series: Vec<Series>,
    pub(crate) bands: Vec<Band>,
    pub(crate) markers: Vec<Marker>,
}

/// Line colours, in turn (readable on white, distinct for the common colour blindnesses).
const COLOURS: [&str; 6] = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9"];

/// Escapes text for SVG/HTML content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A round step for about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let raw = span / n;
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}").trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

impl Chart {
    /// Renders the chart as an `<svg>` element `width` × `height` pixels.
    pub(crate) fn render(&self, width: u32, height: u32) -> String {
        let (width, height) = (f64::from(width.max(200)), f64::from(height.max(120)));
        let (left, right, top, bottom) = (56.0, 16.0, 28.0, 40.0);
        let (plot_w, plot_h) = (width - left - right, height - top - bottom);
        let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite();
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter(|p| finite(p)).map(|p| p.0))
            .chain(self.bands.iter().flat_map(|b| [b.from, b.to]))
            .chain(self.markers.iter().map(|m| m.at))
            .filter(|x| x.is_finite());
        let (mut x_min, mut x_max) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
        if !x_min.is_finite() {
            (x_min, x_max) = (0.0, 1.0);
        }
        if x_max <= x_min {
            x_max = x_min + 1.0;
        }
        let y_max =
            self.series.iter().flat_map(|s| s.points.iter().filter(|p| finite(p)).map(|p| p.1)).fold(0.0_f64, f64::max);
        let y_step = nice_step(if y_max > 0.0 { y_max } else { 1.0 }, 4.0);
        let y_top = (y_max / y_step).ceil().max(1.0) * y_step;
        let sx = |x: f64| left + (x - x_min) / (x_max - x_min) * plot_w;
        let sy = |y: f64| top + plot_h - (y / y_top).clamp(0.0, 1.0) * plot_h;

        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" font-family="sans-serif" font-size="11"><title>{}</title>"#,
            escape(&self.title)
        );
        let _ =
            write!(svg, r#"<text x="{left}" y="16" font-size="13" font-weight="bold">{}</text>"#, escape(&self.title));
        for band in &self.bands {
            let (x0, x1) = (sx(band.from.max(x_min)), sx(band.to.min(x_max)));
            let _ = write!(
                svg,
                r##"<rect x="{x0:.1}" y="{top}" width="{:.1}" height="{plot_h}" fill="#d55e00" fill-opacity="0.12"><title>{}</title></rect><text x="{:.1}" y="{:.1}" fill="#a04000">{}</text>"##,
                (x1 - x0).max(1.0),
                escape(&band.label),
                x0 + 2.0,
                top + 11.0,
                escape(&band.label)
            );
        }
        // Axes and grid.
        let mut y = 0.0;
        while y <= y_top + y_step / 2.0 {
            let py = sy(y);
            let _ = write!(
                svg,
                r##"<line x1="{left}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                left + plot_w,
                left - 4.0,
                py + 4.0,
                number(y)
            );
            y += y_step;
        }
        let x_step = nice_step(x_max - x_min, 8.0);
        let mut x = (x_min / x_step).ceil() * x_step;
        while x <= x_max + 1e-9 {
            let px = sx(x);
            let _ = write!(
                svg,
                r##"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="#999"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                top + plot_h,
                top + plot_h + 4.0,
                top + plot_h + 16.0,
                number(x)
            );
            x += x_step;
        }
        let _ = write!(
            svg,
            r##"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="12" y="{:.1}" text-anchor="middle" transform="rotate(-90 12 {:.1})">{}</text>"##,
            left + plot_w / 2.0,
            height - 6.0,
            escape(&self.x_label),
            top + plot_h / 2.0,
            top + plot_h / 2.0,
            escape(&self.y_label)
        );
        for marker in &self.markers {
            let px = sx(marker.at);
            let (colour, dash, _) = marker.kind.style();
            let _ = write!(
                svg,
                r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{:.1}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="{dash}"><title>{}</title></line>"##,
                top + plot_h,
                escape(&marker.label)
            );
        }
        // A legend of the marker kinds drawn (when more than actions are), top right above the plot.
        let mut kinds: Vec<MarkerKind> = self.markers.iter().map(|m| m.kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        if kinds.iter().any(|kind| *kind != MarkerKind::Action) {
            let mut x = left + plot_w;
            for kind in kinds.iter().rev() {
                let (colour, dash, name) = kind.style();
                let text_w = 6.5 * name.len() as f64;
                x -= text_w + 22.0;
                let _ = write!(
                    svg,
                    r#"<line x1="{x:.1}" y1="12" x2="{:.1}" y2="12" stroke="{colour}" stroke-width="1.5" stroke-dasharray="{dash}"/><text x="{:.1}" y="16">{name}</text>"#,
                    x + 16.0,
                    x + 19.0
                );
            }
        }
        for (idx, series) in self.series.iter().enumerate() {
            let colour = COLOURS[idx % COLOURS.len()];
            let mut path = String::new();
            for (x, y) in series.points.iter().filter(|p| finite(p)) {
                let _ = write!(path, "{}{:.1},{:.1}", if path.is_empty() { "M" } else { " L" }, sx(*x), sy(*y));
            }
            if !path.is_empty() {
                let _ = write!(
                    svg,
                    r#"<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.5"><title>{}</title></path>"#,
                    escape(&series.name)
                );
            }
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" fill="{colour}" text-anchor="end">{}</text>"#,
                left + plot_w - 4.0,
                top + 12.0 + 13.0 * idx as f64 + if self.bands.is_empty() { 0.0 } else { 12.0 },
                escape(&series.name)
            );
        }
        svg.push_str("</svg>");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            title: "latency <p99> & \"mean\"".into(),
            x_label: "seconds".into(),
            y_label: "ms".into(),
            series: vec![Series { name: "p99".into(), points: vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 4.0)] }],
            bands: vec![Band { from: 0.5, to: 1.5, label: "kill web/0".into() }],
            markers: vec![Marker { at: 1.0, label: "restart <web/0>".into(), kind: MarkerKind::Action }],
        }
    }

    #[test]
    fn text_is_escaped_and_nothing_external_is_referenced() {
        let svg = chart().render(600, 200);
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
        assert!(svg.contains("latency &lt;p99&gt; &amp; &quot;mean&quot;"));
        assert!(svg.contains("restart &lt;web/0&gt;"));
        assert!(!svg.contains("<p99>") && !svg.contains("<script") && !svg.contains("href"));
        assert_eq!(escape("a'b\u{7}c"), "a&#39;b c");
    }

    #[test]
    fn points_map_into_the_plot_and_non_finite_ones_are_skipped() {
        let svg = chart().render(600, 200);
        // x from 0 to 2 over 56..584, y from 0 to 4 over 160..28: (0, 1) and (2, 4), NaN skipped.
        assert!(svg.contains(r#"d="M56.0,127.0 L584.0,28.0""#), "{svg}");
        // The band from 0.5 to 1.5 and the marker at 1.
        assert!(svg.contains(r#"<rect x="188.0" y="28" width="264.0""#), "{svg}");
        assert!(svg.contains(r#"<line x1="320.0" y1="28" x2="320.0""#), "{svg}");
        // Actions alone need no legend; a detection marker brings one naming each kind drawn.
        assert!(!svg.contains(">detected<"));
        let mut marked = chart();
        marked.markers.push(Marker { at: 0.2, label: "incident 3 opened".into(), kind: MarkerKind::Detection });
        let svg = marked.render(600, 200);
        assert!(
            svg.contains(r##"stroke="#b00020""##) && svg.contains(">detected<") && svg.contains(">action<"),
            "{svg}"
        );
        // An empty chart still renders (axes only).
        let empty = Chart::default().render(300, 150);
        assert!(empty.contains("</svg>") && !empty.contains("<path"));
    }

    #[test]
    fn steps_are_round() {
        let cases = [(10.0, 4.0, 5.0), (1.0, 4.0, 0.5), (37.0, 8.0, 5.0), (0.0, 4.0, 1.0), (f64::NAN, 4.0, 1.0)];
        for (span, n, expected) in cases {
            assert_eq!(nice_step(span, n), expected, "{span}/{n}");
        }
    }
}
