//! The metric model collectors fill in at scrape time: families of samples with their HELP and
//! TYPE, as node_exporter's const metrics. Encoding lives in `exposition`.

/// Prometheus metric type, as printed on the `# TYPE` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
            Self::Untyped => "untyped",
        }
    }
}

/// Cumulative histogram: `(upper bound, count of observations <= bound)` pairs in increasing
/// order, without the `+Inf` bucket, which is `count`.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramValue {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

/// A summary: `(quantile, value)` pairs in increasing quantile order, with sum and count.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryValue {
    pub quantiles: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(f64),
    Histogram(HistogramValue),
    Summary(SummaryValue),
}

/// One series (or, for a histogram, one group of series) of a family.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// `(name, value)` pairs; sorted by name when the family is encoded.
    pub labels: Vec<(String, String)>,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MetricFamily {
    pub name: String,
    pub help: String,
    pub metric_type: MetricType,
    pub metrics: Vec<Metric>,
}

impl MetricFamily {
    pub fn new(name: impl Into<String>, help: impl Into<String>, metric_type: MetricType) -> Self {
        Self {
            name: name.into(),
            help: help.into(),
            metric_type,
            metrics: Vec::new(),
        }
    }

    pub fn counter(name: impl Into<String>, help: impl Into<String>) -> Self {
        Self::new(name, help, MetricType::Counter)
    }

    pub fn gauge(name: impl Into<String>, help: impl Into<String>) -> Self {
        Self::new(name, help, MetricType::Gauge)
    }

    pub fn histogram(name: impl Into<String>, help: impl Into<String>) -> Self {
        Self::new(name, help, MetricType::Histogram)
    }

    /// Adds a counter, gauge or untyped sample.
    pub fn push<N, V>(&mut self, labels: impl IntoIterator<Item = (N, V)>, value: f64)
    where
        N: Into<String>,
        V: Into<String>,
    {
        debug_assert!(
            !matches!(
                self.metric_type,
                MetricType::Histogram | MetricType::Summary
            ),
            "{}",
            self.name
        );
        self.metrics.push(Metric {
            labels: collect_labels(labels),
            value: Value::Scalar(value),
        });
    }

    /// Adds a sample without labels.
    pub fn push_value(&mut self, value: f64) {
        self.push(std::iter::empty::<(String, String)>(), value);
    }

    pub fn push_histogram<N, V>(
        &mut self,
        labels: impl IntoIterator<Item = (N, V)>,
        histogram: HistogramValue,
    ) where
        N: Into<String>,
        V: Into<String>,
    {
        debug_assert!(self.metric_type == MetricType::Histogram, "{}", self.name);
        self.metrics.push(Metric {
            labels: collect_labels(labels),
            value: Value::Histogram(histogram),
        });
    }

    pub fn push_summary<N, V>(
        &mut self,
        labels: impl IntoIterator<Item = (N, V)>,
        summary: SummaryValue,
    ) where
        N: Into<String>,
        V: Into<String>,
    {
        debug_assert!(self.metric_type == MetricType::Summary, "{}", self.name);
        self.metrics.push(Metric {
            labels: collect_labels(labels),
            value: Value::Summary(summary),
        });
    }

    /// Builder form of [`push_value`](Self::push_value), for families of one sample.
    pub fn with_value(mut self, value: f64) -> Self {
        self.push_value(value);
        self
    }

    /// Builder form of [`push`](Self::push), for families of one or a few samples.
    pub fn with<N, V>(mut self, labels: impl IntoIterator<Item = (N, V)>, value: f64) -> Self
    where
        N: Into<String>,
        V: Into<String>,
    {
        self.push(labels, value);
        self
    }
}

fn collect_labels<N: Into<String>, V: Into<String>>(
    labels: impl IntoIterator<Item = (N, V)>,
) -> Vec<(String, String)> {
    labels
        .into_iter()
        .map(|(name, value)| (name.into(), value.into()))
        .collect()
}

/// Merges families of the same name (two collectors may report into one family, as the eBPF
/// collectors do for their program status) and sorts families by name.
pub fn merge_and_sort(families: Vec<MetricFamily>) -> Vec<MetricFamily> {
    let mut families = families;
    families.sort_by(|a, b| a.name.cmp(&b.name));
    let mut merged: Vec<MetricFamily> = Vec::with_capacity(families.len());
    for family in families {
        match merged.last_mut() {
            Some(last) if last.name == family.name => {
                debug_assert_eq!(last.metric_type, family.metric_type, "{}", family.name);
                last.metrics.extend(family.metrics);
            }
            _ => merged.push(family),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_families_of_one_name() {
        let a = MetricFamily::gauge("b", "h").with([("x", "1")], 1.0);
        let b = MetricFamily::gauge("a", "h").with([("x", "1")], 2.0);
        let c = MetricFamily::gauge("b", "h").with([("x", "2")], 3.0);
        let merged = merge_and_sort(vec![a, b, c]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].name, "a");
        assert_eq!(merged[1].metrics.len(), 2);
    }
}
