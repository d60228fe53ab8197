//! A small reader of the text exposition format, for asserting on samples.
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                parse_sample(line).unwrap_or_else(|| panic!("unparseable sample line {line:?}"))
            })
            .collect();
        Self {
            text: text.to_owned(),
            samples,
        }
    }

    /// Samples of `name` whose labels include all of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(k, v)| sample.labels.get(*k).is_some_and(|actual| actual == v))
        })
    }

    /// The one sample of `name` carrying `labels`; panics if there is none or more than one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<_> = self.matching(name, labels).collect();
        assert_eq!(
            found.len(),
            1,
            "expected one {name}{labels:?}, found {found:?}"
        );
        found[0].value
    }

    /// Sum over the samples of `name` that carry `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }

    /// Family names with a `# TYPE` line, in order of appearance.
    pub fn typed_families(&self) -> Vec<(String, String)> {
        self.text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_once(' '))
            .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
            .collect()
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_labels(mut text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !text.is_empty() {
        let (name, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(name.to_owned(), value);
        text = rest[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&rest[end + 1..]);
    }
    Some(labels)
}

/// Families every exporter adds about itself, not about the host.
pub fn is_exporter_own(family: &str) -> bool {
    family == "node_exporter_build_info"
        || family == "ebpf_build_info"
        || family.starts_with("go_")
        || family.starts_with("process_")
        || family.starts_with("promhttp_")
}

/// One family as printed: HELP, TYPE and its sample lines verbatim (labels and values exactly
/// as formatted), for comparing two expositions line for line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrintedFamily {
    pub help: String,
    pub metric_type: String,
    pub lines: std::collections::BTreeSet<String>,
}

/// Families by name, from the text exposition format (samples belong to the family of the
/// `# HELP`/`# TYPE` lines before them).
pub fn printed_families(text: &str) -> BTreeMap<String, PrintedFamily> {
    let mut families: BTreeMap<String, PrintedFamily> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().filter(|line| !line.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            current = name.to_owned();
            families.entry(current.clone()).or_default().help = help.to_owned();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, metric_type) = rest.split_once(' ').unwrap_or((rest, ""));
            current = name.to_owned();
            families.entry(current.clone()).or_default().metric_type = metric_type.to_owned();
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let family = if name.starts_with(current.as_str()) && !current.is_empty() {
                current.clone()
            } else {
                name.to_owned()
            };
            families
                .entry(family)
                .or_default()
                .lines
                .insert(line.to_owned());
        }
    }
    families
}

/// Asserts a histogram family's buckets for `labels` are cumulative, in increasing `le` order,
/// with `+Inf` equal to `_count`.
pub fn assert_histogram_consistent(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) {
    let buckets: Vec<(f64, f64)> = scrape
        .matching(&format!("{name}_bucket"), labels)
        .map(|s| (s.labels["le"].parse::<f64>().unwrap(), s.value))
        .collect();
    assert!(buckets.len() > 10, "{buckets:?}");
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "{buckets:?}"
    );
    let (last_le, last_count) = *buckets.last().unwrap();
    assert!(last_le.is_infinite());
    assert_eq!(last_count, scrape.value(&format!("{name}_count"), labels));
}
