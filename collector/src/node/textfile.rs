//! `textfile`: metrics written by other programs into `*.prom` files in the directories (or
//! globs) given by `--collector.textfile.directory`, parsed as node_exporter parses them.
//! A file that does not parse, or has client-side timestamps, is skipped whole and sets
//! `node_textfile_scrape_error 1`; the other files are still served.
//!
//! Hostile or careless input costs one file, never the collector: a `.prom` name that is not a
//! regular file (a FIFO nobody writes, a symlink to /dev/zero) is skipped without blocking, and a
//! file larger than `--collector.textfile.max-file-bytes` is refused before it is parsed, so
//! memory stays bounded by the flag, not by the file.
use std::{
    collections::{HashMap, HashSet},
    io::Read as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::UNIX_EPOCH,
};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    flags::FlagSpec,
    metrics::{HistogramValue, Metric, MetricFamily, MetricType, SummaryValue},
    textparse::{self, ParsedFamily, ParsedValue},
};

const DIRECTORY: &str = "collector.textfile.directory";
const MAX_FILE_BYTES: &str = "collector.textfile.max-file-bytes";
/// 4 MiB: about 40,000 series.
const DEFAULT_MAX_FILE_BYTES: &str = "4194304";

/// The collector's own families, which no file may redefine.
const OWN_FAMILIES: [&str; 2] = ["node_textfile_mtime_seconds", "node_textfile_scrape_error"];

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "textfile",
    default_enabled: true,
    flags: &[
        FlagSpec::repeated(
            DIRECTORY,
            "Directory to read text files with metrics from, supports glob matching. (repeatable)",
        ),
        FlagSpec::value(
            MAX_FILE_BYTES,
            Some(DEFAULT_MAX_FILE_BYTES),
            "Largest textfile read, in bytes (4 MiB: about 40,000 series); a larger one is skipped with an error.",
        ),
    ],
    kernel: None,
    build,
};

struct TextfileCollector {
    globs: Vec<String>,
    max_file_bytes: u64,
    /// Bytes the previous update read: its output was freed after its scrape.
    last_bytes_read: std::sync::atomic::AtomicUsize,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let mut globs = context.flags.strings(DIRECTORY).to_vec();
    if globs.is_empty() {
        globs.push(String::new());
    }
    let value = context
        .flags
        .string(MAX_FILE_BYTES)
        .unwrap_or(DEFAULT_MAX_FILE_BYTES);
    let max_file_bytes = value
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .with_context(|| {
            format!("--{MAX_FILE_BYTES}={value}: expected a positive number of bytes")
        })?;
    Ok(Arc::new(TextfileCollector {
        globs,
        max_file_bytes,
        last_bytes_read: Default::default(),
    }))
}

/// Go's `filepath.Match` for one path segment: `*`, `?`, `[...]` (with `^` negation and
/// ranges) and `\` escapes.
fn segment_matches(pattern: &[char], name: &[char]) -> bool {
    match pattern.first() {
        None => name.is_empty(),
        Some('*') => (0..=name.len()).any(|skip| segment_matches(&pattern[1..], &name[skip..])),
        Some('?') => !name.is_empty() && segment_matches(&pattern[1..], &name[1..]),
        Some('[') => {
            let Some(&c) = name.first() else { return false };
            let mut i = 1;
            let negate = pattern.get(i) == Some(&'^');
            if negate {
                i += 1;
            }
            let mut matched = false;
            let mut first = true;
            while i < pattern.len() && (first || pattern[i] != ']') {
                first = false;
                let mut low = pattern[i];
                if low == '\\' && i + 1 < pattern.len() {
                    i += 1;
                    low = pattern[i];
                }
                let mut high = low;
                if pattern.get(i + 1) == Some(&'-') && pattern.get(i + 2).is_some_and(|&h| h != ']')
                {
                    high = pattern[i + 2];
                    i += 2;
                }
                matched |= low <= c && c <= high;
                i += 1;
            }
            if i >= pattern.len() {
                return false; // malformed class: Go returns ErrBadPattern
            }
            matched != negate && segment_matches(&pattern[i + 1..], &name[1..])
        }
        Some('\\') if pattern.len() > 1 => {
            name.first() == Some(&pattern[1]) && segment_matches(&pattern[2..], &name[1..])
        }
        Some(&p) => name.first() == Some(&p) && segment_matches(&pattern[1..], &name[1..]),
    }
}

fn has_meta(segment: &str) -> bool {
    segment.contains(['*', '?', '[', '\\'])
}

/// Go's `filepath.Glob`: the existing paths matching `pattern`, sorted per directory.
fn glob(pattern: &str) -> Vec<PathBuf> {
    if !has_meta(pattern) {
        return if Path::new(pattern).exists() {
            vec![PathBuf::from(pattern)]
        } else {
            Vec::new()
        };
    }
    let mut current = vec![if pattern.starts_with('/') {
        PathBuf::from("/")
    } else {
        PathBuf::new()
    }];
    for segment in pattern.split('/').filter(|s| !s.is_empty()) {
        let mut next = Vec::new();
        for base in &current {
            if !has_meta(segment) {
                let candidate = base.join(segment);
                if candidate.exists() {
                    next.push(candidate);
                }
                continue;
            }
            let dir = if base.as_os_str().is_empty() {
                Path::new(".")
            } else {
                base
            };
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let pattern: Vec<char> = segment.chars().collect();
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| segment_matches(&pattern, &name.chars().collect::<Vec<_>>()))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|name| base.join(name)));
        }
        current = next;
    }
    current
}

/// One parsed family and the file it came from.
struct FromFile {
    family: ParsedFamily,
    path: String,
}

impl TextfileCollector {
    fn directories(&self) -> Vec<String> {
        let mut out = Vec::new();
        for pattern in &self.globs {
            let found = glob(pattern);
            if found.is_empty() {
                // Not a glob, or nothing matched: read it as a directory and let that fail.
                out.push(pattern.clone());
            } else {
                out.extend(found.into_iter().map(|p| p.to_string_lossy().into_owned()));
            }
        }
        out
    }
}

/// The contents of a regular file of at most `max_bytes` bytes. Opened without blocking, so a
/// FIFO with no writer is refused, not waited on.
fn read_regular_file(path: &str, max_bytes: u64) -> Result<(Vec<u8>, std::fs::Metadata), String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("failed to open textfile data file {path:?}: {e}"))?;
    let metadata = file
        .metadata()
        .map_err(|e| format!("failed to stat {path:?}: {e}"))?;
    if !metadata.is_file() {
        return Err(format!(
            "textfile {path:?} is not a regular file ({:?}), skipping it",
            metadata.file_type()
        ));
    }
    let too_large = || {
        format!(
            "textfile {path:?} is larger than --{MAX_FILE_BYTES}={max_bytes} bytes, skipping it"
        )
    };
    // Refused before reading when its size says so; the bounded read covers a file that grows.
    if metadata.len() > max_bytes {
        return Err(too_large());
    }
    let mut text = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("failed to read textfile data file {path:?}: {e}"))?;
    if text.len() as u64 > max_bytes {
        return Err(too_large());
    }
    Ok((text, metadata))
}

/// A file's families, its mtime and size, or why the whole file is skipped.
fn process_file(path: &str, max_bytes: u64) -> Result<(Vec<ParsedFamily>, f64, usize), String> {
    let (text, metadata) = read_regular_file(path, max_bytes)?;
    let size = text.len();
    let text = String::from_utf8_lossy(&text);
    let families = textparse::parse(&text)
        .map_err(|e| format!("failed to parse textfile data from {path:?}: {e}"))?;
    if families
        .iter()
        .any(|f| f.metrics.iter().any(|m| m.timestamp_ms.is_some()))
    {
        return Err(format!(
            "textfile {path:?} contains unsupported client-side timestamps, skipping entire file"
        ));
    }
    let mtime = metadata
        .modified()
        .map_err(|e| format!("failed to stat {path:?}: {e}"))?;
    let seconds = mtime
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as f64)
        .unwrap_or_else(|e| -(e.duration().as_secs() as f64));
    Ok((families, seconds, size))
}

/// Files read in one update beyond which the heap is trimmed afterwards: parsing takes several
/// times a file's size, and glibc keeps what is freed for reuse, so one large file would leave
/// the process that much larger until exit.
const TRIM_AFTER_BYTES: usize = 1 << 20;

impl Collector for TextfileCollector {
    /// Its families come from other programs' files.
    fn is_external(&self) -> bool {
        true
    }

    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let mut errored = false;
        let mut bytes_read = 0;
        let mut parsed: Vec<FromFile> = Vec::new();
        let mut mtimes: Vec<(String, f64)> = Vec::new();
        for dir in self.directories() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(error) => {
                    if !dir.is_empty() {
                        errored = true;
                        tracing::error!(path = dir, err = %error, "failed to read textfile collector directory");
                    }
                    continue;
                }
            };
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".prom"))
                .collect();
            names.sort();
            for name in names {
                let path = Path::new(&dir).join(&name).to_string_lossy().into_owned();
                match process_file(&path, self.max_file_bytes) {
                    Ok((families, mtime, size)) => {
                        bytes_read += size;
                        parsed.extend(families.into_iter().map(|family| FromFile {
                            family,
                            path: path.clone(),
                        }));
                        mtimes.push((path, mtime));
                    }
                    Err(error) => {
                        errored = true;
                        tracing::error!(file = name, err = %error, "failed to collect textfile data");
                    }
                }
            }
        }

        // Upstream's help-text check: a later file whose HELP differs from the first one
        // seen for that name is skipped with an error.
        let mut help_texts: HashMap<String, (String, Option<String>)> = HashMap::new();
        let mut files: HashMap<String, Vec<String>> = HashMap::new();
        let mut kept: Vec<ParsedFamily> = Vec::new();
        for FromFile { family, path } in parsed {
            if OWN_FAMILIES.contains(&family.name.as_str()) {
                errored = true;
                tracing::error!(
                    metric = family.name,
                    file = path,
                    "textfile defines a metric of the textfile collector itself: dropped"
                );
                continue;
            }
            if let Some((first, second)) = help_texts.get_mut(&family.name) {
                let differs = family.help.as_ref().is_some_and(|help| help != first);
                if differs || second.is_some() {
                    errored = true;
                    tracing::error!(
                        metric = family.name,
                        original_help_text = first.as_str(),
                        new_help_text = family.help.as_deref().unwrap_or_default(),
                        file = files[&family.name][0],
                        "inconsistent metric help text"
                    );
                    *second = family.help.clone();
                    continue;
                }
            }
            if let Some(help) = &family.help {
                help_texts.insert(family.name.clone(), (help.clone(), None));
            }
            files.entry(family.name.clone()).or_default().push(path);
            kept.push(family);
        }

        // Each file's family becomes const metrics; the registry then serves families of one
        // name as one, dropping (with an error) series whose HELP or TYPE disagree with the
        // first, and repeated series.
        let mut merged: Vec<MetricFamily> = Vec::new();
        // Per merged family, the sorted label sets it already has.
        let mut series: Vec<HashSet<Vec<(String, String)>>> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for family in kept {
            let family = convert(family, &files);
            let Some(&i) = index.get(&family.name) else {
                index.insert(family.name.clone(), merged.len());
                series.push(family.metrics.iter().map(sorted_labels).collect());
                merged.push(family);
                continue;
            };
            let first = &mut merged[i];
            if first.help != family.help || first.metric_type != family.metric_type {
                tracing::error!(
                    metric = family.name,
                    "collected metric has help or type inconsistent with previously collected metrics of the same name"
                );
                continue;
            }
            for metric in family.metrics {
                if !series[i].insert(sorted_labels(&metric)) {
                    tracing::error!(
                        metric = first.name,
                        "collected metric was collected before with the same name and label values"
                    );
                    continue;
                }
                first.metrics.push(metric);
            }
        }
        out.extend(merged);
        let mut mtime = MetricFamily::gauge(
            "node_textfile_mtime_seconds",
            "Unixtime mtime of textfiles successfully read.",
        );
        for (path, seconds) in mtimes {
            mtime.push([("file", path)], seconds);
        }
        out.push(mtime);
        out.push(
            MetricFamily::gauge(
                "node_textfile_scrape_error",
                "1 if there was an error opening or reading a file, 0 otherwise",
            )
            .with_value(if errored { 1.0 } else { 0.0 }),
        );
        // This update's parsing buffers are free now, the previous one's output too.
        let previous = self
            .last_bytes_read
            .swap(bytes_read, std::sync::atomic::Ordering::Relaxed);
        if bytes_read.max(previous) > TRIM_AFTER_BYTES {
            crate::memory::trim_heap();
        }
        Ok(())
    }
}

/// A series' identity within its family: its labels, in name order.
fn sorted_labels(metric: &Metric) -> Vec<(String, String)> {
    let mut labels = metric.labels.clone();
    labels.sort();
    labels
}

/// upstream's `convertMetricFamily`: every series gets every label name of its family (empty
/// when it lacks one); a series repeated with the same labels is served once.
fn convert(family: ParsedFamily, files: &HashMap<String, Vec<String>>) -> MetricFamily {
    let help = family.help.unwrap_or_else(|| {
        let paths = files
            .get(&family.name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        format!("Metric read from {}", paths.join(", "))
    });
    let mut out = MetricFamily::new(family.name, help, family.metric_type);
    let mut names: Vec<String> = Vec::new();
    for metric in &family.metrics {
        for (name, _) in &metric.labels {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let mut seen = HashSet::new();
    for metric in family.metrics {
        let mut labels = metric.labels;
        for name in &names {
            if !labels.iter().any(|(n, _)| n == name) {
                labels.push((name.clone(), String::new()));
            }
        }
        let mut key = labels.clone();
        key.sort();
        if !seen.insert(key) {
            tracing::error!(
                metric = out.name,
                "collected metric was collected before with the same name and label values"
            );
            continue;
        }
        match (metric.value, family.metric_type) {
            (ParsedValue::Scalar(v), _) => out.push(labels, v),
            (
                ParsedValue::Summary {
                    mut quantiles,
                    sum,
                    count,
                },
                _,
            ) => {
                quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
                quantiles.dedup_by(|a, b| a.0 == b.0);
                out.push_summary(
                    labels,
                    SummaryValue {
                        quantiles,
                        sum,
                        count,
                    },
                );
            }
            (
                ParsedValue::Histogram {
                    mut buckets,
                    sum,
                    count,
                },
                MetricType::Histogram,
            ) => {
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                buckets.dedup_by(|a, b| a.0 == b.0);
                buckets.retain(|(le, _)| *le != f64::INFINITY);
                out.push_histogram(
                    labels,
                    HistogramValue {
                        buckets,
                        sum,
                        count,
                    },
                );
            }
            (ParsedValue::Histogram { .. }, _) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        segment_matches(
            &pattern.chars().collect::<Vec<_>>(),
            &name.chars().collect::<Vec<_>>(),
        )
    }

    #[test]
    fn glob_segments_match_as_go() {
        assert!(matches("*", "abc"));
        assert!(matches("a*c", "abbbc"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("[a-c]x", "bx"));
        assert!(!matches("[^a-c]x", "bx"));
        assert!(matches("\\*", "*"));
        assert!(!matches("[a-", "a"));
    }

    #[test]
    fn timestamps_skip_the_whole_file() {
        let dir = std::env::temp_dir().join(format!("textfile-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ts.prom");
        std::fs::write(&path, "a 1\nb 2 1700000000000\n").unwrap();
        let error = process_file(path.to_str().unwrap(), 1 << 20).unwrap_err();
        assert!(
            error.contains("unsupported client-side timestamps"),
            "{error}"
        );
        std::fs::write(&path, "a 1\nb{ 2\n").unwrap();
        let error = process_file(path.to_str().unwrap(), 1 << 20).unwrap_err();
        assert!(
            error.contains("ts.prom") && error.contains("line 2"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A FIFO nobody writes, a symlink to /dev/zero and a file over the size limit each cost
    /// only themselves: skipped at once with an error, the good file still served.
    #[test]
    fn odd_and_oversized_files_are_skipped_alone() {
        let dir = std::env::temp_dir().join(format!("textfile-odd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("good.prom"), "good_metric 1\n").unwrap();
        std::fs::write(dir.join("own.prom"), "node_textfile_scrape_error 0\n").unwrap();
        std::fs::write(dir.join("big.prom"), "big_metric 1\n".repeat(100)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero.prom")).unwrap();
        let fifo = std::ffi::CString::new(dir.join("fifo.prom").to_str().unwrap()).unwrap();
        // SAFETY: a valid, NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let collector = TextfileCollector {
            globs: vec![dir.to_string_lossy().into_owned()],
            max_file_bytes: 1000,
            last_bytes_read: Default::default(),
        };
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let names: Vec<&str> = out.iter().map(|f| f.name.as_str()).collect();
        assert!(names.contains(&"good_metric"), "{names:?}");
        assert!(!names.contains(&"big_metric"), "{names:?}");
        // The collector's own error flag, not the file's 0.
        let errors: Vec<_> = out
            .iter()
            .filter(|f| f.name == "node_textfile_scrape_error")
            .collect();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].metrics.len(), 1);
        assert_eq!(
            errors[0].metrics[0].value,
            crate::metrics::Value::Scalar(1.0)
        );
        for (name, expected) in [
            ("fifo.prom", "not a regular file"),
            ("zero.prom", "not a regular file"),
            (
                "big.prom",
                "larger than --collector.textfile.max-file-bytes=1000",
            ),
        ] {
            let path = dir.join(name);
            let error = process_file(path.to_str().unwrap(), 1000).unwrap_err();
            assert!(error.contains(expected), "{name}: {error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_labels_are_padded_and_duplicates_dropped() {
        let family = textparse::parse("a{x=\"1\"} 1\na{y=\"2\"} 2\na{x=\"1\"} 3\n")
            .unwrap()
            .remove(0);
        let files = HashMap::from([("a".to_owned(), vec!["/t/a.prom".to_owned()])]);
        let out = convert(family, &files);
        assert_eq!(out.help, "Metric read from /t/a.prom");
        assert_eq!(out.metrics.len(), 2);
        assert_eq!(
            out.metrics[1].labels,
            [
                ("y".to_owned(), "2".to_owned()),
                ("x".to_owned(), String::new())
            ]
        );
    }
}
