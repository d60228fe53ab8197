//! Prometheus text exposition format 0.0.4, printed exactly as node_exporter (client_golang's
//! expfmt) prints it: families sorted by name, labels sorted by name, series sorted by label
//! values, floats in Go's shortest `%g` form, the same escaping.
use std::fmt::Write as _;

use crate::metrics::{MetricFamily, Value};

/// `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Encodes families that `metrics::merge_and_sort` has already put in order.
pub fn encode(families: &[MetricFamily]) -> String {
    let mut out = String::with_capacity(families.len() * 256);
    // Scratch space kept across families, so that ordering a family's series costs no allocation
    // per series: every series' labels in one flat list, and each series as its span of it.
    let mut labels = Vec::new();
    let mut series = Vec::new();
    for family in families {
        encode_family(family, &mut labels, &mut series, &mut out);
    }
    out
}

/// A series to print: its sorted labels, as a span of the family's flat label list, and its value.
type Series<'a> = (std::ops::Range<usize>, &'a Value);

fn encode_family<'a>(
    family: &'a MetricFamily,
    labels: &mut Vec<(&'a str, &'a str)>,
    series: &mut Vec<Series<'a>>,
    out: &mut String,
) {
    if family.metrics.is_empty() {
        return; // client_golang never prints a family without samples
    }
    let name = family.name.as_str();
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    escape_help(&family.help, out);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(family.metric_type.as_str());
    out.push('\n');

    labels.clear();
    series.clear();
    for metric in &family.metrics {
        let start = labels.len();
        labels.extend(metric.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        labels[start..].sort_unstable_by(|a, b| a.0.cmp(b.0));
        series.push((start..labels.len(), &metric.value));
    }
    let labels = labels.as_slice();
    // client_golang orders series by their label values, compared as strings, label by label.
    series.sort_by(|(a, _), (b, _)| {
        let values = |span: &std::ops::Range<usize>| labels[span.clone()].iter().map(|l| l.1);
        values(a).cmp(values(b))
    });

    for (span, value) in series.iter() {
        let labels = &labels[span.clone()];
        match value {
            Value::Scalar(v) => write_sample(out, name, "", labels, None, *v),
            Value::Histogram(h) => {
                for (bound, count) in &h.buckets {
                    write_sample(
                        out,
                        name,
                        "_bucket",
                        labels,
                        Some(("le", *bound)),
                        *count as f64,
                    );
                }
                write_sample(
                    out,
                    name,
                    "_bucket",
                    labels,
                    Some(("le", f64::INFINITY)),
                    h.count as f64,
                );
                write_sample(out, name, "_sum", labels, None, h.sum);
                write_sample(out, name, "_count", labels, None, h.count as f64);
            }
            Value::Summary(summary) => {
                for (quantile, value) in &summary.quantiles {
                    write_sample(out, name, "", labels, Some(("quantile", *quantile)), *value);
                }
                write_sample(out, name, "_sum", labels, None, summary.sum);
                write_sample(out, name, "_count", labels, None, summary.count as f64);
            }
        }
    }
}

fn write_sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    extra: Option<(&str, f64)>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || extra.is_some() {
        out.push('{');
        let mut first = true;
        for (label, label_value) in labels {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(label);
            out.push_str("=\"");
            escape_label_value(label_value, out);
            out.push('"');
        }
        if let Some((extra_name, extra_value)) = extra {
            if !first {
                out.push(',');
            }
            out.push_str(extra_name);
            out.push_str("=\"");
            push_float(out, extra_value);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    push_float(out, value);
    out.push('\n');
}

fn escape_help(help: &str, out: &mut String) {
    // Almost no text needs escaping: copy it whole rather than character by character.
    if !help.bytes().any(|b| matches!(b, b'\\' | b'\n')) {
        out.push_str(help);
        return;
    }
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_label_value(value: &str, out: &mut String) {
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `value` as Go's `strconv.FormatFloat(value, 'g', -1, 64)` does (client_golang's
/// `writeFloat`): the shortest digits that round-trip; exponent form when the decimal exponent
/// is below -4 or at least 6 (Go's precision for the `%e` decision in shortest mode), with at
/// least two exponent digits. So `808960`, `1.150976e+06`, `0.0001`, `1.305e-06`.
pub fn push_float(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
        return;
    }
    if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    // Most samples are counters and gauges holding small whole numbers: those print as integers.
    if value.fract() == 0.0 && value.abs() < 1e6 && !(value == 0.0 && value.is_sign_negative()) {
        push_small_integer(out, value as i32);
        return;
    }
    // Rust's `{:e}` prints the shortest round-trip digits: "-1.150976e6".
    let mut buffer = StackText::default();
    let _ = write!(buffer, "{value:e}");
    let scientific = buffer.as_str();
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("`{:e}` always prints an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` prints a decimal exponent");
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa),
    };
    let mut digits = StackText::default();
    for part in mantissa.split('.') {
        let _ = digits.write_str(part);
    }
    let digits = digits.as_str();

    if negative {
        out.push('-');
    }
    if !(-4..6).contains(&exponent) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        let _ = write!(out, "{:02}", exponent.abs());
    } else if exponent < 0 {
        out.push_str("0.");
        for _ in 0..(-exponent - 1) {
            out.push('0');
        }
        out.push_str(digits);
    } else {
        let int_len = (exponent + 1) as usize;
        if digits.len() <= int_len {
            out.push_str(digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
}

/// Appends a whole number of magnitude below 10^6 (most samples) digit by digit, without a trip
/// through the formatting machinery.
fn push_small_integer(out: &mut String, value: i32) {
    if value < 0 {
        out.push('-');
    }
    let mut magnitude = value.unsigned_abs();
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    for &digit in &digits[start..] {
        out.push(char::from(digit));
    }
}

/// A short text built on the stack: a float's digits, at most 17 of them plus sign, point and
/// exponent.
#[derive(Default)]
struct StackText {
    bytes: [u8; 32],
    len: usize,
}

impl StackText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("only str is written")
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{HistogramValue, MetricFamily};

    fn float(value: f64) -> String {
        let mut out = String::new();
        push_float(&mut out, value);
        out
    }

    #[test]
    fn floats_print_as_go_does() {
        // Expected strings are Go's strconv.FormatFloat(v, 'g', -1, 64).
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (808960.0, "808960"),
            (999999.0, "999999"),
            (-999999.0, "-999999"),
            (10.0, "10"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (1150976.0, "1.150976e+06"),
            (2.5165824e10, "2.5165824e+10"),
            (1.305e-6, "1.305e-06"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1e-5, "1e-05"),
            (0.1, "0.1"),
            (123.456, "123.456"),
            (1.5, "1.5"),
            (-2.75, "-2.75"),
            (1.024e-6, "1.024e-06"),
            (1e21, "1e+21"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (18446744073709551615.0, "1.8446744073709552e+19"),
        ];
        for (value, expected) in cases {
            assert_eq!(float(*value), *expected, "{value:?}");
        }
    }

    #[test]
    fn family_with_sorted_escaped_labels() {
        let mut family = MetricFamily::counter("test_total", "Help with \\ and\nnewline.");
        family.push([("cpu", "10"), ("mode", "a\"b")], 2.0);
        family.push([("mode", "x\\y\nz"), ("cpu", "2")], 1.5);
        family.push([("cpu", "1"), ("mode", "idle")], 1e7);
        let text = encode(&[family]);
        assert_eq!(
            text,
            "# HELP test_total Help with \\\\ and\\nnewline.\n\
             # TYPE test_total counter\n\
             test_total{cpu=\"1\",mode=\"idle\"} 1e+07\n\
             test_total{cpu=\"10\",mode=\"a\\\"b\"} 2\n\
             test_total{cpu=\"2\",mode=\"x\\\\y\\nz\"} 1.5\n"
        );
    }

    #[test]
    fn histogram_series() {
        let mut family = MetricFamily::histogram("lat_seconds", "Latency.");
        family.push_histogram(
            [("dev", "sda")],
            HistogramValue {
                buckets: vec![(0.001, 1), (0.002, 3)],
                sum: 0.0045,
                count: 4,
            },
        );
        assert_eq!(
            encode(&[family]),
            "# HELP lat_seconds Latency.\n\
             # TYPE lat_seconds histogram\n\
             lat_seconds_bucket{dev=\"sda\",le=\"0.001\"} 1\n\
             lat_seconds_bucket{dev=\"sda\",le=\"0.002\"} 3\n\
             lat_seconds_bucket{dev=\"sda\",le=\"+Inf\"} 4\n\
             lat_seconds_sum{dev=\"sda\"} 0.0045\n\
             lat_seconds_count{dev=\"sda\"} 4\n"
        );
    }

    #[test]
    fn unlabelled_sample_and_empty_family() {
        let up =
            MetricFamily::gauge("up_like", "One.").with(std::iter::empty::<(&str, &str)>(), 1.0);
        let empty = MetricFamily::gauge("empty", "Nothing.");
        assert_eq!(
            encode(&[empty, up]),
            "# HELP up_like One.\n# TYPE up_like gauge\nup_like 1\n"
        );
    }
}
