//! Server-side SVG charts for the portals' dashboards: pure functions from figures to SVG text
//! that a page embeds inline (no script, no font file, no outside network).
//!
//! Three shapes: `stacked_bars` (a value per category and series, e.g. orders per kind per
//! day), `lines` (series over the same categories with gaps, e.g. a channel's success rate per
//! hour) and `horizontal_bars` (one value per label, e.g. balances held by bucket). Each chart
//! has a `<title>` and a `<desc>` (a sentence that says what the chart shows, for screen
//! readers), axis ticks, and a legend when it has more than one series. Values are integers in
//! their `Unit` (minor units for money, basis points for rates) and are shown as decimal
//! strings; coordinates are computed in integers (`i128`), so the same figures always give the
//! same bytes, and no value (zero, negative, `i64::MAX`, none at all) can panic.
//!
//! Every mark carries what tests and pages need: bars are `<rect class="bar"
//! data-series="i" data-category="j">`, line points `<circle class="point">`, each with a
//! `<title>` naming its category, series and value; lines are `<polyline class="line">`.
//!
//! Why by hand and not the plotters crate: plotters measures text with a font backend (none is
//! installed here, and its font-less fallback only guesses), its SVG has no `<title>`/`<desc>`
//! or classes to find marks by, and it draws with floating-point coordinates; the few hundred
//! lines below give accessible, deterministic output and no new dependency.

use std::fmt::Write as _;

use engine::money::CurrencySpec;

/// The drawing's width in SVG units (it scales to its container: `width="100%"`).
const WIDTH: i64 = 720;
/// The height of a bar or line chart, legend included.
const HEIGHT: i64 = 360;
/// Left edge of the plot: room for the value axis' labels.
const PLOT_LEFT: i64 = 84;
/// Right margin.
const PLOT_RIGHT_MARGIN: i64 = 16;
/// Top of the plot: room for the title.
const PLOT_TOP: i64 = 44;
/// Height of the category labels under the plot.
const X_LABELS_HEIGHT: i64 = 26;
/// Height of one legend row.
const LEGEND_ROW: i64 = 18;
/// Approximate width of one character of 12-unit sans-serif text (for wrapping the legend).
const CHAR_WIDTH: i64 = 7;
/// Roughly how many value-axis steps a chart shows.
const TICKS_TARGET: i128 = 5;
/// At most this many category labels are written under a chart (every k-th when there are more).
const X_LABELS_MAX: usize = 12;
/// Categories (days, hours) drawn at most; more are cut and `<desc>` says so.
pub const CATEGORIES_MAX: usize = 400;
/// Series drawn at most (one colour each); more are cut and `<desc>` says so.
pub const SERIES_MAX: usize = 10;
/// Bars of a horizontal bar chart drawn at most.
pub const BARS_MAX: usize = 40;
/// Characters of a label shown before it is shortened with "…" (the full text is in `<title>`).
const LABEL_CHARS_MAX: usize = 24;
/// Height of one row of a horizontal bar chart.
const ROW_HEIGHT: i64 = 26;
/// Left edge of a horizontal bar chart's plot: room for the labels.
const HBAR_PLOT_LEFT: i64 = 190;
/// Right margin of a horizontal bar chart: room for the values written after the bars.
const HBAR_RIGHT_MARGIN: i64 = 110;

/// Colours of the series, in order (Tableau 10: distinguishable, also in most colour blindness).
const PALETTE: [&str; SERIES_MAX] = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];

/// What the values of a chart count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Plain counts (orders, accounts).
    Count,
    /// Money in minor units of the currency ("12.05 CNY").
    Money(CurrencySpec),
    /// A rate in basis points: 10,000 is 100 % ("97.50%").
    BasisPoints,
}

impl Unit {
    fn exponent(&self) -> u8 {
        match self {
            Unit::Count => 0,
            Unit::Money(spec) => spec.exponent,
            Unit::BasisPoints => 2,
        }
    }

    /// A value in full, as tooltips and `<desc>` show it.
    pub fn format(&self, value: i128) -> String {
        let number = format_scaled(value, self.exponent());
        match self {
            Unit::Count => number,
            Unit::Money(spec) => format!("{number} {}", spec.code_str()),
            Unit::BasisPoints => format!("{number}%"),
        }
    }

    /// A value on an axis: no currency code, no trailing zeros after the point.
    fn tick(&self, value: i128) -> String {
        let number = format_scaled(value, self.exponent());
        let number = if number.contains('.') { number.trim_end_matches('0').trim_end_matches('.').to_string() } else { number };
        match self {
            Unit::BasisPoints => format!("{number}%"),
            _ => number,
        }
    }
}

/// `value` with `exponent` decimals ("-12.05" for -1205 and 2), exact for any `i128`.
pub fn format_scaled(value: i128, exponent: u8) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let magnitude = value.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{magnitude}");
    }
    let scale = 10u128.pow(u32::from(exponent.min(18)));
    format!("{sign}{}.{:0width$}", magnitude / scale, magnitude % scale, width = usize::from(exponent.min(18)))
}

/// One series of a bar chart: a value per category (missing values count as zero).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Series {
    pub name: String,
    pub values: Vec<i64>,
}

/// One series of a line chart: a value per category, `None` where there is none (a gap).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineSeries {
    pub name: String,
    pub values: Vec<Option<i64>>,
}

/// What every chart has: an id (unique within the page; used for `aria-labelledby`), a title
/// and the unit of its values.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub unit: Unit,
}

/// A value axis from `low` to `high` (both multiples of `step`; zero always inside).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Scale {
    low: i128,
    high: i128,
    step: i128,
}

impl Scale {
    /// The axis over values from `min` to `max`, with zero, in steps of 1, 2 or 5 times a power of ten.
    fn over(min: i128, max: i128) -> Scale {
        let (low, high) = (min.min(0), max.max(0));
        let step = nice_step((high - low).max(1));
        let low = low.div_euclid(step) * step;
        let high = -((-high).div_euclid(step)) * step;
        let high = if high == low { low + step } else { high };
        Scale { low, high, step }
    }

    /// The ticks from low to high.
    fn ticks(&self) -> impl Iterator<Item = i128> + '_ {
        let count = (self.high - self.low) / self.step;
        (0..=count).map(move |k| self.low + k * self.step)
    }

    /// Where `value` falls between `from` (at `low`) and `to` (at `high`), rounded to a unit.
    fn place(&self, value: i128, from: i64, to: i64) -> i64 {
        let value = value.clamp(self.low, self.high);
        let span = i128::from(to) - i128::from(from);
        let numerator = (value - self.low) * span;
        let denominator = self.high - self.low;
        // Rounded half away from zero, in integers: the same bytes on every machine.
        let offset = (2 * numerator + numerator.signum() * denominator) / (2 * denominator);
        from + offset as i64
    }
}

/// The smallest step of 1, 2 or 5 times a power of ten that covers `range` in `TICKS_TARGET` steps.
fn nice_step(range: i128) -> i128 {
    let wanted = (range + TICKS_TARGET - 1) / TICKS_TARGET;
    let mut power: i128 = 1;
    loop {
        for multiple in [1, 2, 5] {
            if multiple * power >= wanted {
                return multiple * power;
            }
        }
        power *= 10;
    }
}

/// Escapes text for SVG content and attribute values; characters XML cannot hold (controls
/// other than tab and newlines, U+FFFE, U+FFFF) become U+FFFD.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// `text` cut to `max` characters with "…" (labels under and beside the plot).
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// The id made safe for an attribute and a fragment reference: `[A-Za-z0-9_-]`, 64 at most.
fn safe_id(id: &str) -> String {
    let kept: String = id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(64).collect();
    if kept.is_empty() {
        "chart".to_string()
    } else {
        kept
    }
}

/// Writes the opening of a chart: the root element, its title and its description.
fn open(out: &mut String, frame: &Frame, height: i64, description: &str) {
    let id = safe_id(frame.id);
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"{id}\" viewBox=\"0 0 {WIDTH} {height}\" width=\"100%\" role=\"img\" aria-labelledby=\"{id}-title {id}-desc\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = write!(out, "<title id=\"{id}-title\">{}</title><desc id=\"{id}-desc\">{}</desc>", escape(frame.title), escape(description));
    let _ = write!(out, "<rect class=\"background\" x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{height}\" fill=\"#ffffff\"/>");
    let _ = write!(
        out,
        "<text class=\"chart-title\" x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\" fill=\"#222\">{}</text>",
        WIDTH / 2,
        escape(&shorten(frame.title, 80))
    );
}

/// The plot's box, in SVG units.
#[derive(Clone, Copy)]
struct Plot {
    left: i64,
    right: i64,
    top: i64,
    bottom: i64,
}

/// Horizontal grid lines and the value labels of a vertical value axis.
fn value_axis_left(out: &mut String, plot: Plot, scale: &Scale, unit: &Unit) {
    for tick in scale.ticks() {
        let y = scale.place(tick, plot.bottom, plot.top);
        let colour = if tick == 0 { "#666" } else { "#e3e3e3" };
        let _ = write!(out, "<line class=\"grid\" x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{colour}\"/>", plot.left, plot.right);
        let _ =
            write!(out, "<text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#444\">{}</text>", plot.left - 6, y + 4, escape(&unit.tick(tick)));
    }
}

/// The category labels under a plot: at most `X_LABELS_MAX`, every k-th, centred on `centre(j)`.
fn category_labels(out: &mut String, categories: &[String], y: i64, centre: impl Fn(usize) -> i64) {
    let every = categories.len().div_ceil(X_LABELS_MAX).max(1);
    for (j, label) in categories.iter().enumerate().step_by(every) {
        let _ =
            write!(out, "<text class=\"category\" x=\"{}\" y=\"{y}\" text-anchor=\"middle\" fill=\"#444\">{}</text>", centre(j), escape(&shorten(label, 12)));
    }
}

/// The legend's rows of (series, shortened name, x), wrapped to the drawing's width; none for a
/// single series (the title names it).
fn legend_rows(names: &[&str]) -> Vec<Vec<(usize, String, i64)>> {
    if names.len() < 2 {
        return Vec::new();
    }
    let mut rows: Vec<Vec<(usize, String, i64)>> = Vec::new();
    let mut x = PLOT_LEFT;
    for (i, name) in names.iter().enumerate() {
        let label = shorten(name, LABEL_CHARS_MAX);
        let width = 18 + CHAR_WIDTH * label.chars().count() as i64 + 14;
        if rows.is_empty() || (x + width > WIDTH - PLOT_RIGHT_MARGIN && x > PLOT_LEFT) {
            rows.push(Vec::new());
            x = PLOT_LEFT;
        }
        rows.last_mut().expect("a row was just pushed").push((i, label, x));
        x += width;
    }
    rows
}

/// Writes the legend rows from `top`.
fn legend(out: &mut String, rows: &[Vec<(usize, String, i64)>], top: i64) {
    out.push_str("<g class=\"legend\">");
    for (r, row) in rows.iter().enumerate() {
        let y = top + r as i64 * LEGEND_ROW;
        for (i, label, x) in row {
            let _ = write!(out, "<rect class=\"swatch\" data-series=\"{i}\" x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>", y - 10, PALETTE[*i]);
            let _ = write!(out, "<text class=\"legend-label\" x=\"{}\" y=\"{y}\" fill=\"#222\">{}</text>", x + 18, escape(label));
        }
    }
    out.push_str("</g>");
}

/// "No data" in the middle of an empty plot.
fn no_data(out: &mut String, plot: Plot) {
    let _ = write!(
        out,
        "<text class=\"no-data\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#888\">No data</text>",
        (plot.left + plot.right) / 2,
        (plot.top + plot.bottom) / 2
    );
}

/// What `<desc>` adds when a chart was cut to its limits.
fn cut_note(categories: usize, series: usize) -> String {
    let mut note = String::new();
    if categories > CATEGORIES_MAX {
        let _ = write!(note, " Only the first {CATEGORIES_MAX} of {categories} categories are shown.");
    }
    if series > SERIES_MAX {
        let _ = write!(note, " Only the first {SERIES_MAX} of {series} series are shown.");
    }
    note
}

/// The plot box of a bar or line chart whose legend has `legend_rows` rows.
fn plot_for(legend_rows: usize) -> Plot {
    let legend_height = if legend_rows == 0 { 0 } else { legend_rows as i64 * LEGEND_ROW + 6 };
    Plot { left: PLOT_LEFT, right: WIDTH - PLOT_RIGHT_MARGIN, top: PLOT_TOP, bottom: HEIGHT - X_LABELS_HEIGHT - legend_height - 8 }
}

/// A bar per category with the series stacked in it: positive values upwards from zero,
/// negative ones downwards. `categories` are the labels under the bars (e.g. days); a series
/// with fewer values than categories counts the rest as zero, extra values are ignored.
pub fn stacked_bars(frame: &Frame, categories: &[String], series: &[Series]) -> String {
    let categories_shown = &categories[..categories.len().min(CATEGORIES_MAX)];
    let series_shown = &series[..series.len().min(SERIES_MAX)];
    let value = |s: &Series, j: usize| i128::from(s.values.get(j).copied().unwrap_or(0));
    // Each category's stack: the sum of its positive and of its negative values.
    let stacks: Vec<(i128, i128)> = (0..categories_shown.len())
        .map(|j| {
            series_shown.iter().fold((0, 0), |(up, down), s| {
                let v = value(s, j);
                if v >= 0 {
                    (up + v, down)
                } else {
                    (up, down + v)
                }
            })
        })
        .collect();
    let empty = categories_shown.is_empty() || series_shown.is_empty();
    let max = stacks.iter().map(|s| s.0).max().unwrap_or(0);
    let min = stacks.iter().map(|s| s.1).min().unwrap_or(0);
    let scale = Scale::over(min, max);
    let names: Vec<&str> = series_shown.iter().map(|s| s.name.as_str()).collect();
    let rows = legend_rows(&names);
    let plot = plot_for(rows.len());

    let mut description = if empty {
        "No data.".to_string()
    } else {
        let totals: Vec<i128> = stacks.iter().map(|(up, down)| up + down).collect();
        let (top_index, top_total) = totals.iter().enumerate().fold((0, totals[0]), |best, (j, t)| if *t > best.1 { (j, *t) } else { best });
        format!(
            "Stacked bars, {} categories from {} to {}; series: {}. Highest total {} ({}).",
            categories_shown.len(),
            categories_shown[0],
            categories_shown[categories_shown.len() - 1],
            names.join(", "),
            frame.unit.format(top_total),
            categories_shown[top_index]
        )
    };
    description.push_str(&cut_note(categories.len(), series.len()));

    let mut out = String::with_capacity(4096 + 200 * categories_shown.len() * series_shown.len().max(1));
    open(&mut out, frame, HEIGHT, &description);
    value_axis_left(&mut out, plot, &scale, &frame.unit);
    if empty {
        no_data(&mut out, plot);
    } else {
        let n = categories_shown.len() as i64;
        let width = plot.right - plot.left;
        let band_start = |j: usize| plot.left + (j as i64 * width) / n;
        out.push_str("<g class=\"bars\">");
        for (j, category) in categories_shown.iter().enumerate() {
            let (start, end) = (band_start(j), band_start(j + 1));
            let bar_width = ((end - start) * 7 / 10).max(1);
            let x = start + (end - start - bar_width) / 2;
            let (mut up, mut down) = (0i128, 0i128);
            for (i, s) in series_shown.iter().enumerate() {
                let v = value(s, j);
                if v == 0 {
                    continue;
                }
                let (from, to) = if v > 0 {
                    up += v;
                    (up - v, up)
                } else {
                    down += v;
                    (down, down - v)
                };
                // Both ends are placed from cumulative sums, so the stack's height is exact.
                let (y_top, y_bottom) = (scale.place(to, plot.bottom, plot.top), scale.place(from, plot.bottom, plot.top));
                let _ = write!(
                    out,
                    "<rect class=\"bar\" data-series=\"{i}\" data-category=\"{j}\" x=\"{x}\" y=\"{y_top}\" width=\"{bar_width}\" height=\"{}\" fill=\"{}\"><title>{}</title></rect>",
                    y_bottom - y_top,
                    PALETTE[i],
                    escape(&format!("{category} · {}: {}", s.name, frame.unit.format(v)))
                );
            }
        }
        out.push_str("</g>");
        category_labels(&mut out, categories_shown, plot.bottom + 18, |j| (band_start(j) + band_start(j + 1)) / 2);
    }
    if !rows.is_empty() {
        legend(&mut out, &rows, plot.bottom + X_LABELS_HEIGHT + 14);
    }
    out.push_str("</svg>");
    out
}

/// A line per series over the categories (e.g. a channel's success rate per hour); a `None`
/// value is a gap in its line. A point alone (between gaps, or a single category) is a dot.
pub fn lines(frame: &Frame, categories: &[String], series: &[LineSeries]) -> String {
    let categories_shown = &categories[..categories.len().min(CATEGORIES_MAX)];
    let series_shown = &series[..series.len().min(SERIES_MAX)];
    let n = categories_shown.len();
    let point = |s: &LineSeries, j: usize| s.values.get(j).copied().flatten().map(i128::from);
    let values: Vec<i128> = series_shown.iter().flat_map(|s| (0..n).filter_map(move |j| point(s, j))).collect();
    let empty = values.is_empty();
    let scale = Scale::over(values.iter().copied().min().unwrap_or(0), values.iter().copied().max().unwrap_or(0));
    let names: Vec<&str> = series_shown.iter().map(|s| s.name.as_str()).collect();
    let rows = legend_rows(&names);
    let plot = plot_for(rows.len());
    let x_of = |j: usize| if n <= 1 { (plot.left + plot.right) / 2 } else { plot.left + (j as i64 * (plot.right - plot.left)) / (n as i64 - 1) };

    let mut description = if empty {
        "No data.".to_string()
    } else {
        let ranges: Vec<String> = series_shown
            .iter()
            .filter_map(|s| {
                let own: Vec<i128> = (0..n).filter_map(|j| point(s, j)).collect();
                let (low, high) = (own.iter().min()?, own.iter().max()?);
                Some(format!("{} from {} to {}", s.name, frame.unit.format(*low), frame.unit.format(*high)))
            })
            .collect();
        format!("Lines over {} categories from {} to {}: {}.", n, categories_shown[0], categories_shown[n - 1], ranges.join("; "))
    };
    description.push_str(&cut_note(categories.len(), series.len()));

    let mut out = String::with_capacity(4096 + 160 * n * series_shown.len().max(1));
    open(&mut out, frame, HEIGHT, &description);
    value_axis_left(&mut out, plot, &scale, &frame.unit);
    if empty {
        no_data(&mut out, plot);
    } else {
        out.push_str("<g class=\"lines\">");
        for (i, s) in series_shown.iter().enumerate() {
            // One polyline per run of consecutive values.
            let mut run: Vec<(i64, i64)> = Vec::new();
            let flush = |run: &mut Vec<(i64, i64)>, out: &mut String| {
                if run.len() > 1 {
                    let points: Vec<String> = run.iter().map(|(x, y)| format!("{x},{y}")).collect();
                    let _ = write!(
                        out,
                        "<polyline class=\"line\" data-series=\"{i}\" points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>",
                        points.join(" "),
                        PALETTE[i]
                    );
                }
                run.clear();
            };
            for j in 0..n {
                match point(s, j) {
                    Some(v) => run.push((x_of(j), scale.place(v, plot.bottom, plot.top))),
                    None => flush(&mut run, &mut out),
                }
            }
            flush(&mut run, &mut out);
            for (j, category) in categories_shown.iter().enumerate() {
                if let Some(v) = point(s, j) {
                    let _ = write!(
                        out,
                        "<circle class=\"point\" data-series=\"{i}\" data-category=\"{j}\" cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{}\"><title>{}</title></circle>",
                        x_of(j),
                        scale.place(v, plot.bottom, plot.top),
                        PALETTE[i],
                        escape(&format!("{category} · {}: {}", s.name, frame.unit.format(v)))
                    );
                }
            }
        }
        out.push_str("</g>");
        category_labels(&mut out, categories_shown, plot.bottom + 18, x_of);
    }
    if !rows.is_empty() {
        legend(&mut out, &rows, plot.bottom + X_LABELS_HEIGHT + 14);
    }
    out.push_str("</svg>");
    out
}

/// A horizontal bar per (label, value), e.g. balances held by bucket; negative values extend
/// left of the zero line. The height grows with the number of bars (at most `BARS_MAX`).
pub fn horizontal_bars(frame: &Frame, bars: &[(String, i64)]) -> String {
    let shown = &bars[..bars.len().min(BARS_MAX)];
    let rows = shown.len().max(1) as i64;
    let height = PLOT_TOP + rows * ROW_HEIGHT + 36;
    let plot = Plot { left: HBAR_PLOT_LEFT, right: WIDTH - HBAR_RIGHT_MARGIN, top: PLOT_TOP, bottom: PLOT_TOP + rows * ROW_HEIGHT };
    let values = shown.iter().map(|(_, v)| i128::from(*v));
    let scale = Scale::over(values.clone().min().unwrap_or(0), values.max().unwrap_or(0));

    let mut description = if shown.is_empty() {
        "No data.".to_string()
    } else {
        let listed: Vec<String> = shown.iter().map(|(label, v)| format!("{label} {}", frame.unit.format(i128::from(*v)))).collect();
        format!("Horizontal bars: {}.", listed.join("; "))
    };
    if bars.len() > BARS_MAX {
        let _ = write!(description, " Only the first {BARS_MAX} of {} bars are shown.", bars.len());
    }

    let mut out = String::with_capacity(2048 + 400 * shown.len());
    open(&mut out, frame, height, &description);
    // Vertical grid lines and the value labels under the plot.
    for tick in scale.ticks() {
        let x = scale.place(tick, plot.left, plot.right);
        let colour = if tick == 0 { "#666" } else { "#e3e3e3" };
        let _ = write!(out, "<line class=\"grid\" x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"{colour}\"/>", plot.top, plot.bottom);
        let _ = write!(
            out,
            "<text class=\"tick\" x=\"{x}\" y=\"{}\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
            plot.bottom + 16,
            escape(&frame.unit.tick(tick))
        );
    }
    if shown.is_empty() {
        no_data(&mut out, plot);
    } else {
        out.push_str("<g class=\"bars\">");
        for (j, (label, v)) in shown.iter().enumerate() {
            let v = i128::from(*v);
            let y = plot.top + j as i64 * ROW_HEIGHT + 4;
            let bar_height = ROW_HEIGHT - 8;
            let (x_zero, x_value) = (scale.place(0, plot.left, plot.right), scale.place(v, plot.left, plot.right));
            let (x, width) = (x_zero.min(x_value), (x_value - x_zero).abs());
            let _ = write!(
                out,
                "<text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#222\">{}</text>",
                plot.left - 8,
                y + bar_height / 2 + 4,
                escape(&shorten(label, LABEL_CHARS_MAX))
            );
            let _ = write!(
                out,
                "<rect class=\"bar\" data-series=\"0\" data-category=\"{j}\" x=\"{x}\" y=\"{y}\" width=\"{width}\" height=\"{bar_height}\" fill=\"{}\"><title>{}</title></rect>",
                PALETTE[0],
                escape(&format!("{label}: {}", frame.unit.format(v)))
            );
            let _ = write!(
                out,
                "<text class=\"value\" x=\"{}\" y=\"{}\" fill=\"#222\">{}</text>",
                x_zero.max(x_value) + 6,
                y + bar_height / 2 + 4,
                escape(&frame.unit.format(v))
            );
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CNY: Unit = Unit::Money(CurrencySpec { code: *b"CNY", exponent: 2 });

    fn frame(unit: Unit) -> Frame<'static> {
        Frame { id: "test-chart", title: "Orders per day", unit }
    }

    fn days(n: usize) -> Vec<String> {
        (1..=n).map(|d| format!("2026-01-{d:02}")).collect()
    }

    /// Every `name="value"` attribute of every element with `class="<class>"`, in order.
    fn marks(svg: &str, class: &str) -> Vec<std::collections::BTreeMap<String, String>> {
        let needle = format!("class=\"{class}\"");
        svg.split('<')
            .filter(|tag| tag.contains(&needle))
            .map(|tag| {
                let tag = tag.split('>').next().unwrap_or("");
                let mut attributes = std::collections::BTreeMap::new();
                for part in tag.split('"').collect::<Vec<_>>().chunks(2) {
                    if let [name, value] = part {
                        let name = name.trim().trim_end_matches('=').rsplit(' ').next().unwrap_or("").to_string();
                        attributes.insert(name, value.to_string());
                    }
                }
                attributes
            })
            .collect()
    }

    /// a / b rounded half up (both positive).
    fn rounded(a: i64, b: i64) -> i64 {
        (2 * a + b) / (2 * b)
    }

    fn number(mark: &std::collections::BTreeMap<String, String>, name: &str) -> i64 {
        mark[name].parse().unwrap_or_else(|_| panic!("{name} of {mark:?}"))
    }

    /// A small XML well-formedness check: tags nest and close, attributes are quoted, every `&`
    /// starts an entity, no `<` or `>` inside text or attribute values.
    fn assert_well_formed(svg: &str) {
        let mut open: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let text = &rest[..start];
            assert!(!text.contains('>'), "a raw > in text: {text}");
            check_entities(text);
            let end = rest[start..].find('>').map(|e| start + e).expect("a tag ends");
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "a raw < in a tag: {tag}");
            assert_eq!(tag.matches('"').count() % 2, 0, "quotes pair up in {tag}");
            for value in tag.split('"').skip(1).step_by(2) {
                check_entities(value);
            }
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop().as_deref(), Some(name), "closing {name}");
            } else if !tag.ends_with('/') {
                open.push(tag.split_whitespace().next().unwrap_or("").to_string());
            }
            rest = &rest[end + 1..];
        }
        assert!(open.is_empty(), "unclosed: {open:?}");
        assert!(rest.is_empty(), "text after the root: {rest}");
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
    }

    fn check_entities(text: &str) {
        for (index, _) in text.match_indices('&') {
            let entity = &text[index..text[index..].find(';').map_or(text.len(), |e| index + e + 1)];
            assert!(["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].contains(&entity), "a bare & in {text}");
        }
        assert!(!text.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')), "a control character in {text:?}");
    }

    #[test]
    fn stacked_bars_have_one_rect_per_non_zero_value_and_heights_in_proportion() {
        let series = vec![Series { name: "payment".into(), values: vec![10, 20, 0] }, Series { name: "refund".into(), values: vec![5, 0, 0] }];
        let svg = stacked_bars(&frame(Unit::Count), &days(3), &series);
        assert_well_formed(&svg);
        let bars = marks(&svg, "bar");
        assert_eq!(bars.len(), 3, "{svg}");
        let plot = plot_for(1);
        // Totals 15, 20, 0: the axis runs 0 to 20 in steps of 5, so 20 fills the plot.
        let height = plot.bottom - plot.top;
        let heights: Vec<(String, String, i64)> = bars.iter().map(|b| (b["data-category"].clone(), b["data-series"].clone(), number(b, "height"))).collect();
        let (half, three_quarters) = (rounded(10 * height, 20), rounded(15 * height, 20));
        assert_eq!(heights, vec![("0".into(), "0".into(), half), ("0".into(), "1".into(), three_quarters - half), ("1".into(), "0".into(), height)]);
        // The stack sits on the zero line: the first segment ends there, the second on top of it.
        assert_eq!(number(&bars[0], "y") + number(&bars[0], "height"), plot.bottom);
        assert_eq!(number(&bars[1], "y") + number(&bars[1], "height"), number(&bars[0], "y"));
        assert_eq!(marks(&svg, "swatch").len(), 2, "a legend entry per series");
        assert!(svg.contains("<title>2026-01-01 · refund: 5</title>"), "{svg}");
        assert!(svg.contains("Highest total 20 (2026-01-02)"), "{svg}");
    }

    #[test]
    fn the_value_axis_uses_round_steps_and_money_is_shown_as_decimals() {
        let series = vec![Series { name: "balance".into(), values: vec![123_456, 1] }];
        let svg = stacked_bars(&frame(CNY), &days(2), &series);
        assert_well_formed(&svg);
        let ticks: Vec<String> = svg.split("class=\"tick\"").skip(1).map(|t| t.split('>').nth(1).unwrap().split('<').next().unwrap().to_string()).collect();
        assert_eq!(ticks, ["0", "500", "1000", "1500"], "{svg}");
        assert!(svg.contains("balance: 1234.56 CNY"), "{svg}");
        assert!(svg.contains("balance: 0.01 CNY"), "{svg}");
        assert_eq!(marks(&svg, "swatch").len(), 0, "no legend for one series");
    }

    #[test]
    fn scales_cover_their_values_with_zero_inside() {
        for (min, max, expected) in [
            (0, 0, Scale { low: 0, high: 1, step: 1 }),
            (0, 1, Scale { low: 0, high: 1, step: 1 }),
            (0, 7, Scale { low: 0, high: 8, step: 2 }),
            (0, 100, Scale { low: 0, high: 100, step: 20 }),
            (-30, 0, Scale { low: -30, high: 0, step: 10 }),
            (-3, 12, Scale { low: -5, high: 15, step: 5 }),
            (5, 9, Scale { low: 0, high: 10, step: 2 }),
            (10_000, 10_000, Scale { low: 0, high: 10_000, step: 2_000 }),
        ] {
            assert_eq!(Scale::over(min, max), expected, "{min}..{max}");
        }
        let huge = Scale::over(i128::from(i64::MIN) * 10, i128::from(i64::MAX) * 10);
        assert!(huge.low <= i128::from(i64::MIN) * 10 && huge.high >= i128::from(i64::MAX) * 10);
        assert!((huge.high - huge.low) / huge.step <= 12);
        assert_eq!(huge.place(huge.low, 300, 40), 300);
        assert_eq!(huge.place(huge.high, 300, 40), 40);
    }

    #[test]
    fn no_data_one_point_zeros_huge_and_negative_values_never_panic() {
        let one = vec!["2026-01-01".to_string()];
        let cases: Vec<(Vec<String>, Vec<Series>)> = vec![
            (Vec::new(), Vec::new()),
            (days(3), Vec::new()),
            (Vec::new(), vec![Series { name: "a".into(), values: vec![1, 2] }]),
            (one.clone(), vec![Series { name: "a".into(), values: vec![7] }]),
            (days(2), vec![Series { name: "a".into(), values: vec![0, 0] }]),
            (days(2), vec![Series { name: "a".into(), values: vec![i64::MAX, i64::MIN] }, Series { name: "b".into(), values: vec![i64::MAX, i64::MIN] }]),
            (days(3), vec![Series { name: "a".into(), values: vec![-5, 3] }, Series { name: "b".into(), values: vec![-5, -1, 9, 9, 9] }]),
        ];
        for (categories, series) in cases {
            for unit in [Unit::Count, CNY, Unit::BasisPoints] {
                let svg = stacked_bars(&frame(unit), &categories, &series);
                assert_well_formed(&svg);
                let line_series: Vec<LineSeries> =
                    series.iter().map(|s| LineSeries { name: s.name.clone(), values: s.values.iter().map(|v| Some(*v)).collect() }).collect();
                assert_well_formed(&lines(&frame(unit), &categories, &line_series));
                let bars: Vec<(String, i64)> = series.iter().flat_map(|s| s.values.iter().map(|v| (s.name.clone(), *v))).collect();
                assert_well_formed(&horizontal_bars(&frame(unit), &bars));
            }
        }
        assert!(stacked_bars(&frame(Unit::Count), &[], &[]).contains(">No data</text>"));
        assert!(stacked_bars(&frame(Unit::Count), &[], &[]).contains("<desc id=\"test-chart-desc\">No data.</desc>"));
    }

    #[test]
    fn negative_values_hang_below_the_zero_line() {
        let series = vec![Series { name: "net".into(), values: vec![10, -10] }];
        let svg = stacked_bars(&frame(Unit::Count), &days(2), &series);
        let bars = marks(&svg, "bar");
        let zero = Scale::over(-10, 10).place(0, plot_for(0).bottom, plot_for(0).top);
        assert_eq!(number(&bars[0], "y") + number(&bars[0], "height"), zero, "the positive bar stands on zero");
        assert_eq!(number(&bars[1], "y"), zero, "the negative bar hangs from zero");
        assert_eq!(number(&bars[0], "height"), number(&bars[1], "height"));
        let svg = horizontal_bars(&frame(CNY), &[("frozen".into(), -250), ("settled".into(), 1_000)]);
        let bars = marks(&svg, "bar");
        let x_zero = Scale::over(-250, 1000).place(0, HBAR_PLOT_LEFT, WIDTH - HBAR_RIGHT_MARGIN);
        assert_eq!(number(&bars[0], "x") + number(&bars[0], "width"), x_zero);
        assert_eq!(number(&bars[1], "x"), x_zero);
        assert!(svg.contains(">-2.50 CNY</text>") && svg.contains(">10.00 CNY</text>"), "{svg}");
    }

    #[test]
    fn lines_break_at_gaps_and_a_lone_point_is_a_dot() {
        let series = vec![
            LineSeries { name: "sim_gateway".into(), values: vec![Some(10_000), Some(9_500), None, Some(9_000), None, Some(8_000), Some(7_000)] },
            LineSeries { name: "sim_fast".into(), values: vec![None, None, None, Some(5_000)] },
        ];
        let svg = lines(&frame(Unit::BasisPoints), &days(7), &series);
        assert_well_formed(&svg);
        let polylines = marks(&svg, "line");
        assert_eq!(polylines.len(), 2, "two runs of the first series; the second's lone point has no line");
        assert_eq!(polylines[0]["points"].split(' ').count(), 2);
        assert_eq!(polylines[1]["points"].split(' ').count(), 2);
        let points = marks(&svg, "point");
        assert_eq!(points.len(), 6);
        // 100 % is the top of the plot, 50 % half way down.
        let plot = plot_for(1);
        assert_eq!(number(&points[0], "cy"), plot.top);
        assert_eq!(number(&points[5], "cy"), plot.bottom - rounded(plot.bottom - plot.top, 2));
        assert!(svg.contains("sim_gateway: 95.00%"), "{svg}");
        assert!(svg.contains("sim_gateway from 70.00% to 100.00%"), "{svg}");
        let single = lines(&frame(Unit::BasisPoints), &days(1), &[LineSeries { name: "a".into(), values: vec![Some(1)] }]);
        assert_eq!((marks(&single, "line").len(), marks(&single, "point").len()), (0, 1));
        assert_eq!(number(&marks(&single, "point")[0], "cx"), (PLOT_LEFT + WIDTH - PLOT_RIGHT_MARGIN) / 2);
    }

    #[test]
    fn every_text_is_escaped_and_the_chart_is_described() {
        let hostile = "<script>alert('x')</script> & \"quotes\" \u{0}\u{1b}";
        let frame = Frame { id: "id with spaces\"><x", title: hostile, unit: Unit::Count };
        let svg =
            stacked_bars(&frame, &[hostile.to_string()], &[Series { name: hostile.into(), values: vec![1] }, Series { name: "b".into(), values: vec![2] }]);
        assert_well_formed(&svg);
        assert!(!svg.contains("<script"), "{svg}");
        assert!(svg.contains("id=\"idwithspacesx\""), "{svg}");
        assert!(svg.contains("aria-labelledby=\"idwithspacesx-title idwithspacesx-desc\""));
        assert!(svg.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quotes&quot; \u{FFFD}\u{FFFD}"), "{svg}");
        let svg = horizontal_bars(&frame, &[(hostile.to_string(), 1)]);
        assert_well_formed(&svg);
        let svg = lines(&frame, &[hostile.to_string()], &[LineSeries { name: hostile.into(), values: vec![Some(1)] }]);
        assert_well_formed(&svg);
    }

    #[test]
    fn output_is_deterministic_and_bounded() {
        let categories = days(28).into_iter().cycle().take(CATEGORIES_MAX + 50).collect::<Vec<_>>();
        let series: Vec<Series> =
            (0..SERIES_MAX + 3).map(|i| Series { name: format!("series {i}"), values: (0..500).map(|j| (i * j) as i64).collect() }).collect();
        let first = stacked_bars(&frame(Unit::Count), &categories, &series);
        assert_eq!(first, stacked_bars(&frame(Unit::Count), &categories, &series));
        assert_well_formed(&first);
        assert!(marks(&first, "bar").iter().all(|b| number(b, "data-category") < CATEGORIES_MAX as i64 && number(b, "data-series") < SERIES_MAX as i64));
        assert!(first.contains("Only the first 400 of 450 categories are shown. Only the first 10 of 13 series are shown."), "the cut is said");
        assert!(marks(&first, "category").len() <= X_LABELS_MAX);
        let bars: Vec<(String, i64)> = (0..BARS_MAX + 5).map(|i| (format!("bucket {i}"), i as i64)).collect();
        let svg = horizontal_bars(&frame(Unit::Count), &bars);
        assert_eq!(marks(&svg, "bar").len(), BARS_MAX);
        assert!(svg.contains("Only the first 40 of 45 bars are shown."));
    }

    #[test]
    fn long_labels_are_shortened_but_kept_whole_in_titles() {
        let long = "a very long bucket name that goes on and on";
        let svg = horizontal_bars(&frame(Unit::Count), &[(long.to_string(), 3)]);
        assert!(svg.contains(">a very long bucket name…</text>"), "{svg}");
        assert!(svg.contains(&format!("<title>{long}: 3</title>")));
    }

    #[test]
    fn decimals_are_exact() {
        for (value, exponent, text) in [
            (0, 2, "0.00"),
            (-1205, 2, "-12.05"),
            (5, 0, "5"),
            (i128::from(i64::MIN), 2, "-92233720368547758.08"),
            (i128::MAX, 3, "170141183460469231731687303715884105.727"),
        ] {
            assert_eq!(format_scaled(value, exponent), text);
        }
        assert_eq!(Unit::BasisPoints.tick(9_750), "97.5%");
        assert_eq!(CNY.tick(150_000), "1500");
    }
}
