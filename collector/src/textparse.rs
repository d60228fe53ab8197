//! A parser for the Prometheus text exposition format 0.0.4 that accepts and rejects what
//! client_golang's `expfmt.TextParser` does, with its error messages ("text format parsing
//! error in line N: ..."), for the textfile collector.
//!
//! Why not a crate: `prometheus-parse` is a lenient line matcher (no HELP/TYPE ordering
//! checks, no duplicate-label or premature-end errors) and `openmetrics-parser` follows
//! OpenMetrics rules (`# EOF`, `_total` and `_created` handling) rather than expfmt's, so
//! neither rejects exactly the files node_exporter rejects.
use std::collections::HashMap;

use crate::metrics::MetricType;

#[derive(Clone, Debug, PartialEq)]
pub enum ParsedValue {
    Scalar(f64),
    Summary {
        /// In file order; the caller sorts.
        quantiles: Vec<(f64, f64)>,
        sum: f64,
        count: u64,
    },
    Histogram {
        buckets: Vec<(f64, u64)>,
        sum: f64,
        count: u64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParsedMetric {
    pub labels: Vec<(String, String)>,
    pub value: ParsedValue,
    pub timestamp_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParsedFamily {
    pub name: String,
    pub help: Option<String>,
    pub metric_type: MetricType,
    pub metrics: Vec<ParsedMetric>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "text format parsing error in line {}: {}",
            self.line, self.message
        )
    }
}

impl std::error::Error for ParseError {}

struct Family {
    name: String,
    help: Option<String>,
    /// `None` until a TYPE line or a sample.
    metric_type: Option<MetricType>,
    metrics: Vec<ParsedMetric>,
    /// Summary/histogram metric index by label set.
    grouped: HashMap<Vec<(String, String)>, usize>,
}

#[derive(Clone, Copy, PartialEq)]
enum Part {
    Plain,
    Sum,
    Count,
    Bucket,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Go's `strconv.ParseFloat` for the values expfmt reads.
fn parse_float(token: &str) -> Option<f64> {
    let lower = token.to_ascii_lowercase();
    match lower.trim_start_matches(['+', '-']) {
        "inf" | "infinity" => {
            return Some(if token.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            });
        }
        "nan" if !token.starts_with(['+', '-']) => return Some(f64::NAN),
        "nan" => return None,
        _ => {}
    }
    token.parse().ok()
}

/// Parses a whole file. Families come back in order of first appearance, without the ones
/// that have HELP or TYPE but no sample.
pub fn parse(text: &str) -> Result<Vec<ParsedFamily>, ParseError> {
    let mut families: Vec<Family> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let ends_with_newline = text.ends_with('\n');
    let lines: Vec<&str> = text.split('\n').collect();
    let last = lines.len() - 1;
    for (index, line) in lines.iter().enumerate() {
        let number = index + 1;
        let error = |message: String| ParseError {
            line: number,
            message,
        };
        let content = line.trim_start_matches(is_blank);
        if content.is_empty() {
            continue;
        }
        if index == last && !ends_with_newline {
            return Err(error("unexpected end of input stream".to_owned()));
        }
        if let Some(comment) = content.strip_prefix('#') {
            parse_comment(comment, &mut families, &mut by_name).map_err(error)?;
        } else {
            parse_sample(content, &mut families, &mut by_name).map_err(error)?;
        }
    }
    Ok(families
        .into_iter()
        .filter(|f| !f.metrics.is_empty())
        .map(|f| ParsedFamily {
            name: f.name,
            help: f.help,
            metric_type: f.metric_type.unwrap_or(MetricType::Untyped),
            metrics: f.metrics,
        })
        .collect())
}

fn family_index(
    name: &str,
    families: &mut Vec<Family>,
    by_name: &mut HashMap<String, usize>,
) -> usize {
    *by_name.entry(name.to_owned()).or_insert_with(|| {
        families.push(Family {
            name: name.to_owned(),
            help: None,
            metric_type: None,
            metrics: Vec::new(),
            grouped: HashMap::new(),
        });
        families.len() - 1
    })
}

fn parse_comment(
    comment: &str,
    families: &mut Vec<Family>,
    by_name: &mut HashMap<String, usize>,
) -> Result<(), String> {
    let rest = comment.trim_start_matches(is_blank);
    let (keyword, rest) = rest.split_once(is_blank).unwrap_or((rest, ""));
    if keyword != "HELP" && keyword != "TYPE" {
        return Ok(()); // an ordinary comment
    }
    let rest = rest.trim_start_matches(is_blank);
    if rest.is_empty() {
        return Ok(()); // "# HELP" alone is a comment too
    }
    let (name, rest) = rest.split_once(is_blank).unwrap_or((rest, ""));
    if !is_metric_name(name) {
        return Err(format!("invalid metric name in comment: {name:?}"));
    }
    let index = family_index(name, families, by_name);
    let family = &mut families[index];
    let rest = rest.trim_start_matches(is_blank);
    if keyword == "HELP" {
        if family.help.is_some() {
            return Err(format!("second HELP line for metric name {name:?}"));
        }
        let mut help = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                help.push(c);
                continue;
            }
            match chars.next() {
                Some('\\') => help.push('\\'),
                Some('n') => help.push('\n'),
                other => {
                    return Err(format!(
                        "invalid escape sequence '\\{}'",
                        other.map(String::from).unwrap_or_default()
                    ));
                }
            }
        }
        family.help = Some(help);
    } else {
        if family.metric_type.is_some() {
            return Err(format!(
                "second TYPE line for metric name {name:?}, or TYPE reported after samples"
            ));
        }
        let token = rest.split(is_blank).next().unwrap_or_default();
        family.metric_type = Some(match token.to_ascii_lowercase().as_str() {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" => MetricType::Untyped,
            _ => return Err(format!("unknown metric type {token:?}")),
        });
    }
    Ok(())
}

type Labels = Vec<(String, String)>;

/// Reads `{name="value",...}` after the opening brace; returns the labels and the rest.
fn parse_labels<'a>(mut rest: &'a str, metric: &str) -> Result<(Labels, &'a str), String> {
    let mut labels: Vec<(String, String)> = Vec::new();
    loop {
        rest = rest.trim_start_matches(is_blank);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        if !is_label_name(name) {
            return Err(format!("invalid label name for metric {metric:?}"));
        }
        rest = rest[end..].trim_start_matches(is_blank);
        rest = rest.strip_prefix('=').ok_or_else(|| {
            format!(
                "expected '=' after label name, found {:?}",
                rest.chars().next().map(String::from).unwrap_or_default()
            )
        })?;
        rest = rest.trim_start_matches(is_blank);
        rest = rest.strip_prefix('"').ok_or_else(|| {
            format!(
                "expected '\"' at start of label value, found {:?}",
                rest.chars().next().map(String::from).unwrap_or_default()
            )
        })?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let mut closed = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    closed = Some(i + 1);
                    break;
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => {
                        return Err(format!(
                            "invalid escape sequence '\\{}'",
                            other.map(String::from).unwrap_or_default()
                        ));
                    }
                },
                c => value.push(c),
            }
        }
        let Some(after) = closed else {
            return Err("unexpected end of input stream".to_owned());
        };
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("duplicate label names for metric {metric:?}"));
        }
        labels.push((name.to_owned(), value.clone()));
        rest = rest[after..].trim_start_matches(is_blank);
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!("unexpected end of label value {value:?}"));
        }
    }
}

fn parse_sample(
    line: &str,
    families: &mut Vec<Family>,
    by_name: &mut HashMap<String, usize>,
) -> Result<(), String> {
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..end];
    if !is_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = line[end..].trim_start_matches(is_blank);
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        (labels, rest) = parse_labels(after, name)?;
        rest = rest.trim_start_matches(is_blank);
    }
    let mut tokens = rest.split(is_blank).filter(|t| !t.is_empty());
    let value_token = tokens.next().unwrap_or_default();
    let value = parse_float(value_token).ok_or_else(|| format!("invalid value {value_token:?}"))?;
    let timestamp_ms = match tokens.next() {
        None => None,
        Some(token) => Some(
            token
                .parse::<i64>()
                .map_err(|_| format!("expected integer as timestamp, got {token:?}"))?,
        ),
    };
    if let Some(token) = tokens.next() {
        return Err(format!("spurious string after timestamp: {token:?}"));
    }

    // expfmt's setOrCreateCurrentMF: the exact name, else the summary or histogram it
    // is the _sum, _count (or _bucket) series of.
    let (index, part) = if let Some(&index) = by_name.get(name) {
        (index, Part::Plain)
    } else {
        let suffixed = [
            ("_sum", Part::Sum),
            ("_count", Part::Count),
            ("_bucket", Part::Bucket),
        ];
        suffixed
            .iter()
            .find_map(|(suffix, part)| {
                let base = name.strip_suffix(suffix)?;
                let &index = by_name.get(base)?;
                match families[index].metric_type {
                    Some(MetricType::Summary) if *part != Part::Bucket => Some((index, *part)),
                    Some(MetricType::Histogram) => Some((index, *part)),
                    _ => None,
                }
            })
            .unwrap_or_else(|| (family_index(name, families, by_name), Part::Plain))
    };
    let family = &mut families[index];
    let metric_type = *family.metric_type.get_or_insert(MetricType::Untyped);
    match metric_type {
        MetricType::Counter | MetricType::Gauge | MetricType::Untyped => {
            family.metrics.push(ParsedMetric {
                labels,
                value: ParsedValue::Scalar(value),
                timestamp_ms,
            });
        }
        MetricType::Summary | MetricType::Histogram => {
            let special = if metric_type == MetricType::Summary {
                "quantile"
            } else {
                "le"
            };
            let mut bound = None;
            if let Some(position) = labels.iter().position(|(n, _)| n == special) {
                let (_, text) = labels.remove(position);
                if (part == Part::Plain && metric_type == MetricType::Summary)
                    || part == Part::Bucket
                {
                    bound = Some(parse_float(&text).ok_or_else(|| {
                        format!("expected float as value for '{special}' label, got {text:?}")
                    })?);
                } else {
                    labels.insert(position, (special.to_owned(), text));
                }
            }
            let metric_index = match family.grouped.get(&labels) {
                Some(&i) => i,
                None => {
                    family.metrics.push(ParsedMetric {
                        labels: labels.clone(),
                        value: if metric_type == MetricType::Summary {
                            ParsedValue::Summary {
                                quantiles: Vec::new(),
                                sum: 0.0,
                                count: 0,
                            }
                        } else {
                            ParsedValue::Histogram {
                                buckets: Vec::new(),
                                sum: 0.0,
                                count: 0,
                            }
                        },
                        timestamp_ms: None,
                    });
                    family.grouped.insert(labels, family.metrics.len() - 1);
                    family.metrics.len() - 1
                }
            };
            let metric = &mut family.metrics[metric_index];
            if timestamp_ms.is_some() {
                metric.timestamp_ms = timestamp_ms;
            }
            match (&mut metric.value, part, bound) {
                (
                    ParsedValue::Summary { count, .. } | ParsedValue::Histogram { count, .. },
                    Part::Count,
                    _,
                ) => {
                    *count = value as u64;
                }
                (
                    ParsedValue::Summary { sum, .. } | ParsedValue::Histogram { sum, .. },
                    Part::Sum,
                    _,
                ) => {
                    *sum = value;
                }
                (ParsedValue::Summary { quantiles, .. }, Part::Plain, Some(q)) => {
                    quantiles.push((q, value))
                }
                (ParsedValue::Histogram { buckets, .. }, Part::Bucket, Some(le)) => {
                    buckets.push((le, value as u64));
                }
                // expfmt drops a quantile-less summary sample or an le-less bucket.
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_families_of_every_type() {
        let families = parse(
            "# HELP a_total Counts \\\\ things\\n.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\\n\"} 3\n\
             b 1.5\n\
             # TYPE s summary\ns{quantile=\"0.5\"} 1\ns{quantile=\"0.9\"} 2\ns_sum 10\ns_count 4\n\
             # TYPE h histogram\nh_bucket{le=\"1\",k=\"v\"} 1\nh_bucket{k=\"v\",le=\"+Inf\"} 3\nh_sum{k=\"v\"} 5\nh_count{k=\"v\"} 3\n\
             # TYPE empty gauge\n",
        )
        .unwrap();
        let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a_total", "b", "s", "h"]);
        assert_eq!(families[0].help.as_deref(), Some("Counts \\ things\n."));
        assert_eq!(families[0].metric_type, MetricType::Counter);
        assert_eq!(
            families[0].metrics[0].labels[1],
            ("y".to_owned(), "q\"\n".to_owned())
        );
        assert_eq!(families[1].metric_type, MetricType::Untyped);
        assert_eq!(
            families[2].metrics[0].value,
            ParsedValue::Summary {
                quantiles: vec![(0.5, 1.0), (0.9, 2.0)],
                sum: 10.0,
                count: 4
            }
        );
        assert_eq!(families[3].metrics.len(), 1);
        assert_eq!(
            families[3].metrics[0].value,
            ParsedValue::Histogram {
                buckets: vec![(1.0, 1), (f64::INFINITY, 3)],
                sum: 5.0,
                count: 3
            }
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            error_of("a 1\n# HELP a x\n# HELP a y\n"),
            "text format parsing error in line 3: second HELP line for metric name \"a\""
        );
        assert_eq!(
            error_of("a 1\n# TYPE a gauge\n"),
            "text format parsing error in line 2: second TYPE line for metric name \"a\", or TYPE reported after samples"
        );
        assert!(error_of("# TYPE a gauges\n").contains("line 1: unknown metric type"));
        assert!(error_of("\n\na{x=\"1\",x=\"2\"} 1\n").contains("line 3: duplicate label names"));
        assert!(error_of("a{x=1} 1\n").contains("expected '\"' at start of label value"));
        assert!(error_of("a one\n").contains("invalid value \"one\""));
        assert!(error_of("a 1 now\n").contains("expected integer as timestamp"));
        assert!(error_of("a 1 2 3\n").contains("spurious string after timestamp"));
        assert!(error_of("1a 1\n").contains("invalid metric name"));
        assert!(error_of("a 1").contains("line 1: unexpected end of input stream"));
        assert!(error_of("a{x=\"\\t\"} 1\n").contains("invalid escape sequence"));
    }

    #[test]
    fn timestamps_special_values_and_comments() {
        let families =
            parse("# just a comment\n  \na 1 1700000000000\nb +Inf\nc NaN\nd -inf\n").unwrap();
        assert_eq!(families[0].metrics[0].timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(
            families[1].metrics[0].value,
            ParsedValue::Scalar(f64::INFINITY)
        );
        assert!(matches!(families[2].metrics[0].value, ParsedValue::Scalar(v) if v.is_nan()));
        assert_eq!(
            families[3].metrics[0].value,
            ParsedValue::Scalar(f64::NEG_INFINITY)
        );
    }
}
