//! `zfs`: OpenZFS statistics from the kstat files of /proc/spl/kstat/zfs, as node_exporter's
//! Linux zfs collector reads them.
//!
//! - Module-wide named kstats (`arcstats`, `abdstats`, `dbufstats`, `dmu_tx`, `dnodestats`, `fm`,
//!   `vdev_cache_stats`, `vdev_mirror_stats`, `xuio_stats`, `zfetchstats`, `zil`): one untyped
//!   family `node_zfs_<subsystem>_<entry>` per int64 (type 3) or uint64 (type 4) entry, other
//!   types skipped. HELP is the kstat's dotted name (`kstat.zfs.misc.arcstats.hits`); names keep
//!   the kernel's spelling, with no `_total`/`_bytes` suffix added or unit converted.
//! - Per pool, `<pool>/io` (OpenZFS < 2.1: a column header row and a value row) gives untyped
//!   `node_zfs_zpool_<column>{zpool}`, `<pool>/objset-*` untyped
//!   `node_zfs_zpool_dataset_<entry>{zpool,dataset}` (uint64 entries only) and `<pool>/state`
//!   the gauge `node_zfs_zpool_state{zpool,state}`, one series per known state.
//!
//! Upstream behaviour kept on purpose:
//! - no /proc/spl/kstat/zfs is no data; a module-wide file that cannot be opened is skipped (it
//!   comes and goes with ZFS versions), but one that opens without a `name type data` header,
//!   or with a value that does not parse, is an error; a pool file that is listed but cannot
//!   be opened (a pool being exported) is an error too;
//! - a name is the kstat key's last dot-separated part with `-` as `_`; any other character
//!   outside `[a-zA-Z0-9_:]` prints as `_`, as client_golang's default escaping prints it;
//! - the dataset is the `dataset_name` line from the first occurrence of its third field on, so
//!   a name with spaces is kept whole; a name that also occurs earlier in the line (a pool
//!   called `data`, a substring of `dataset_name`) gets the line from there, as upstream does;
//! - a later sample with the name and labels of an earlier one is dropped, as client_golang's
//!   gatherer drops it;
//! - lines longer than Go's `bufio.Scanner` limit (64 KiB) end the file with an error.
//!
//! Upstream walks the module-wide files in Go map order (random); here in subsystem order,
//! which only decides which families precede an error.
use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    ffi::OsString,
    fs::File,
    io::Read as _,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, anyhow, bail};

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    goparse,
    metrics::{MetricFamily, MetricType},
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "zfs",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

/// Upstream's `linuxPathMap`: subsystem (the family name's middle) and file.
const SUBSYSTEMS: [(&str, &str); 11] = [
    ("zfs_abd", "abdstats"),
    ("zfs_arc", "arcstats"),
    ("zfs_dbuf", "dbufstats"),
    ("zfs_dmu_tx", "dmu_tx"),
    ("zfs_dnode", "dnodestats"),
    ("zfs_fm", "fm"),
    // Deprecated in OpenZFS, gone in 2.2.
    ("zfs_vdev_cache", "vdev_cache_stats"),
    ("zfs_vdev_mirror", "vdev_mirror_stats"),
    // Gone in OpenZFS 2.0.
    ("zfs_xuio", "xuio_stats"),
    ("zfs_zfetch", "zfetchstats"),
    ("zfs_zil", "zil"),
];

/// The `state` label values, each reported 0 or 1 for every pool.
const POOL_STATES: [&str; 7] = [
    "online",
    "degraded",
    "faulted",
    "offline",
    "removed",
    "unavail",
    "suspended",
];

/// Upstream's `errZFSNotAvailable`.
const NOT_AVAILABLE: &str = "ZFS / ZFS statistics are not available";

struct ZfsCollector {
    base: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(ZfsCollector {
        base: context.proc_path("spl/kstat/zfs"),
    }))
}

impl Collector for ZfsCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let mut families = Families::default();
        let result = self.collect(&mut families);
        out.extend(families.list);
        result
    }
}

impl ZfsCollector {
    fn collect(&self, families: &mut Families) -> anyhow::Result<()> {
        if File::open(&self.base).is_err() {
            tracing::debug!(path = %self.base.display(), "Cannot open file for reading");
            return Err(NoData(NOT_AVAILABLE.to_owned()).into());
        }
        for (subsystem, file) in SUBSYSTEMS {
            let path = self.base.join(file);
            let Some(data) = read_file(&path)? else {
                tracing::debug!(path = %path.display(), "Cannot open file for reading");
                continue;
            };
            parse_named(&data, &path, |entry| {
                let value = match entry.kind {
                    "4" => goparse::parse_uint(entry.data, 10, 64).map(|v| v as f64),
                    "3" => goparse::parse_int(entry.data, 10, 64).map(|v| v as f64),
                    _ => return Ok(()),
                };
                let help = format!("kstat.zfs.misc.{file}.{}", entry.name);
                let value = value.with_context(|| {
                    format!("{}: {help}: bad number {:?}", path.display(), entry.data)
                })?;
                let name = family_name(subsystem, entry.checked(entry.name), &path)?;
                families.add(name, help, MetricType::Untyped, &[], value);
                Ok(())
            })?;
        }
        self.pool_stats(families)
    }

    /// The `<pool>/io` files, then the `<pool>/objset-*` files, then the `<pool>/state`
    /// files, each in the order of upstream's globs (pool, then file name, bytewise).
    fn pool_stats(&self, families: &mut Families) -> anyhow::Result<()> {
        let pools = pool_dirs(&self.base);
        for pool in &pools {
            if pool.entries.iter().any(|name| name == "io") {
                let path = pool.path.join("io");
                parse_io(&read_pool_file(&path)?, &path, pool, families)?;
            }
        }
        for pool in &pools {
            for name in &pool.entries {
                if name.as_bytes().starts_with(b"objset-") {
                    let path = pool.path.join(name);
                    parse_objset(&read_pool_file(&path)?, &path, pool, families)?;
                }
            }
        }
        for pool in &pools {
            if pool.entries.iter().any(|name| name == "state") {
                let path = pool.path.join("state");
                parse_state(&read_pool_file(&path)?, &path, pool, families)?;
            }
        }
        Ok(())
    }
}

/// The families of one scrape, with client_golang's gatherer checks: a sample whose family
/// was first collected with another HELP, type or label names, or whose series was already
/// collected, is dropped (the first one wins).
#[derive(Default)]
struct Families {
    list: Vec<MetricFamily>,
    by_name: HashMap<String, usize>,
    series: HashSet<(usize, Vec<String>)>,
}

impl Families {
    fn add(
        &mut self,
        name: String,
        help: String,
        metric_type: MetricType,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        let index = match self.by_name.get(&name) {
            Some(&index) => {
                let family = &self.list[index];
                let same_labels = family.metrics.first().is_none_or(|metric| {
                    metric
                        .labels
                        .iter()
                        .map(|(name, _)| name.as_str())
                        .eq(labels.iter().map(|(name, _)| *name))
                });
                if family.help != help || family.metric_type != metric_type || !same_labels {
                    return;
                }
                index
            }
            None => {
                self.list
                    .push(MetricFamily::new(name.clone(), help, metric_type));
                self.by_name.insert(name, self.list.len() - 1);
                self.list.len() - 1
            }
        };
        let values = labels
            .iter()
            .map(|(_, value)| (*value).to_owned())
            .collect();
        if self.series.insert((index, values)) {
            self.list[index].push(labels.iter().copied(), value);
        }
    }
}

/// The file's bytes, `None` when it cannot be opened (upstream skips any open error alike).
fn read_file(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    let Ok(mut file) = File::open(path) else {
        return Ok(None);
    };
    let mut data = Vec::with_capacity(8 * 1024);
    file.read_to_end(&mut data)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(data))
}

/// A file a pool's glob listed: one that cannot be opened is an error.
fn read_pool_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    read_file(path)?.ok_or_else(|| anyhow!("opening {}: {NOT_AVAILABLE}", path.display()))
}

/// A directory of /proc/spl/kstat/zfs (a pool's), with its entries sorted bytewise.
struct PoolDir {
    name: OsString,
    path: PathBuf,
    entries: Vec<OsString>,
}

/// What Go's `filepath.Glob("<base>/*/<pattern>")` walks: every entry of `base` (dot entries
/// too) that is a directory or a link to one and can be listed, in bytewise order.
fn pool_dirs(base: &Path) -> Vec<PoolDir> {
    read::glob_names(base, |_| true)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|name| {
            let path = base.join(&name);
            if !std::fs::metadata(&path).ok()?.is_dir() {
                return None;
            }
            let entries = read::glob_names(&path, |_| true).ok()?;
            Some(PoolDir {
                name,
                path,
                entries,
            })
        })
        .collect()
}

impl PoolDir {
    /// The `zpool` label: the directory's name, which must be UTF-8 to be a label value.
    fn label(&self, path: &Path) -> anyhow::Result<&str> {
        self.name
            .to_str()
            .ok_or_else(|| anyhow!("{}: pool name is not UTF-8", path.display()))
    }
}

/// One line as Go's `bufio.Scanner` returns it (without `\n` and one `\r` before it), as text;
/// a line that is not UTF-8 is read lossily and remembered as such.
struct Line<'a> {
    text: Cow<'a, str>,
    utf8: bool,
}

/// The lines of `data` as Go's `bufio.Scanner` returns them ([`goparse::lines`]), each with
/// whether it is UTF-8; a line that does not fit the scanner's buffer is an error that ends the
/// file.
fn scan_lines<'a>(
    data: &'a [u8],
    path: &'a Path,
) -> impl Iterator<Item = anyhow::Result<Line<'a>>> + 'a {
    goparse::lines(data).map(move |line| {
        let line = line.map_err(|error| {
            anyhow!(
                "{}: {error} (a line of {} bytes or more)",
                path.display(),
                goparse::MAX_SCAN_TOKEN
            )
        })?;
        Ok(match std::str::from_utf8(line) {
            Ok(text) => Line {
                text: Cow::Borrowed(text),
                utf8: true,
            },
            Err(_) => Line {
                text: String::from_utf8_lossy(line),
                utf8: false,
            },
        })
    })
}

/// One entry of a named kstat: its first three fields, and the line from the first
/// occurrence of the third on (upstream's dataset name).
struct Named<'a> {
    name: &'a str,
    kind: &'a str,
    data: &'a str,
    rest: &'a str,
    utf8: bool,
}

impl Named<'_> {
    /// `text` of this line, `None` when it holds bytes that were not UTF-8 (Go would panic
    /// making a metric or label of it).
    fn checked<'s>(&self, text: &'s str) -> Option<&'s str> {
        (self.utf8 || !text.contains('\u{FFFD}')).then_some(text)
    }
}

/// The one parser of named kstat files (the module-wide files and `objset-*`): a header
/// line, then `<name> <type> <data>` lines, split at Unicode whitespace as Go's
/// `strings.Fields`. Lines before the `name type data` header and lines of fewer than three
/// fields are skipped; no header at all is an error; `entry` is called for each other line.
fn parse_named(
    data: &[u8],
    path: &Path,
    mut entry: impl FnMut(&Named<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut header = false;
    for line in scan_lines(data, path) {
        let line = line?;
        let text: &str = &line.text;
        let fields: Vec<&str> = text.split_whitespace().collect();
        if !header {
            header = fields == ["name", "type", "data"];
            continue;
        }
        let [name, kind, data, ..] = fields[..] else {
            continue;
        };
        let rest = text.find(data).map_or(data, |at| &text[at..]);
        entry(&Named {
            name,
            kind,
            data,
            rest,
            utf8: line.utf8,
        })?;
    }
    if !header {
        bail!(
            "{}: did not parse a single metric: no \"name type data\" header",
            path.display()
        );
    }
    Ok(())
}

/// `<pool>/io` (KSTAT_TYPE_IO): a `nread nwritten ...` header of at least 12 columns, then
/// rows of as many values; lines before the header are skipped, and no header is no data.
fn parse_io(
    data: &[u8],
    path: &Path,
    pool: &PoolDir,
    families: &mut Families,
) -> anyhow::Result<()> {
    let mut columns: Option<Vec<(String, bool)>> = None;
    for line in scan_lines(data, path) {
        let line = line?;
        let fields: Vec<&str> = line.text.split_whitespace().collect();
        let Some(columns) = &columns else {
            if fields.len() >= 12 && fields[0] == "nread" {
                let checked = |f: &&str| line.utf8 || !f.contains('\u{FFFD}');
                columns = Some(fields.iter().map(|f| (f.to_string(), checked(f))).collect());
            }
            continue;
        };
        let zpool = pool.label(path)?;
        for (i, (column, utf8)) in columns.iter().enumerate() {
            let help = format!("kstat.zfs.misc.io.{column}");
            // Upstream indexes past a short row and panics.
            let text = fields.get(i).with_context(|| {
                format!(
                    "{}: {help}: a row of {} values",
                    path.display(),
                    fields.len()
                )
            })?;
            let value = goparse::parse_uint(text, 10, 64)
                .with_context(|| format!("{}: {help}: bad number {text:?}", path.display()))?;
            let name = family_name("zfs_zpool", utf8.then_some(column.as_str()), path)?;
            families.add(
                name,
                help,
                MetricType::Untyped,
                &[("zpool", zpool)],
                value as f64,
            );
        }
    }
    Ok(())
}

/// `<pool>/objset-*`: a named kstat whose `dataset_name` sets the labels of the uint64
/// entries after it (before it, both labels are empty, as upstream leaves them).
fn parse_objset(
    data: &[u8],
    path: &Path,
    pool: &PoolDir,
    families: &mut Families,
) -> anyhow::Result<()> {
    // `None`: not UTF-8, an error only once a sample would carry it.
    let mut zpool: Option<&str> = Some("");
    let mut dataset: Option<String> = Some(String::new());
    parse_named(data, path, |entry| {
        if entry.name == "dataset_name" {
            zpool = pool.name.to_str();
            dataset = entry.checked(entry.rest).map(str::to_owned);
            return Ok(());
        }
        if entry.kind != "4" {
            return Ok(());
        }
        let help = format!("kstat.zfs.misc.objset.{}", entry.name);
        let value = goparse::parse_uint(entry.data, 10, 64)
            .with_context(|| format!("{}: {help}: bad number {:?}", path.display(), entry.data))?;
        let name = family_name("zfs_zpool_dataset", entry.checked(entry.name), path)?;
        let (Some(zpool), Some(dataset)) = (zpool, dataset.as_deref()) else {
            bail!("{}: pool or dataset name is not UTF-8", path.display());
        };
        let labels = [("zpool", zpool), ("dataset", dataset)];
        families.add(name, help, MetricType::Untyped, &labels, value as f64);
        Ok(())
    })
}

/// `<pool>/state`: its first line, lowercased, against each known state; anything else
/// (an empty file, trailing blanks) sets none.
fn parse_state(
    data: &[u8],
    path: &Path,
    pool: &PoolDir,
    families: &mut Families,
) -> anyhow::Result<()> {
    let state = match scan_lines(data, path).next() {
        Some(line) => go_to_lower(&line?.text),
        None => String::new(),
    };
    let zpool = pool.label(path)?;
    for name in POOL_STATES {
        families.add(
            "node_zfs_zpool_state".to_owned(),
            "kstat.zfs.misc.state".to_owned(),
            MetricType::Gauge,
            &[("zpool", zpool), ("state", name)],
            f64::from(u8::from(state == name)),
        );
    }
    Ok(())
}

/// Go's `strings.ToLower`: simple case mapping, so `İ` becomes `i` (Rust's full mapping
/// gives `i̇`, which would not match a state).
fn go_to_lower(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{130}' => 'i',
            c => c.to_lowercase().next().unwrap_or(c),
        })
        .collect()
}

/// `node_<subsystem>_<name>` from a kstat name (`None`: not UTF-8) as upstream's
/// `metricName` makes it: the part after the last dot, `-` and any other character outside
/// the legacy metric name set as `_`. An empty name (`foo.`) is an error (upstream panics).
fn family_name(subsystem: &str, kstat: Option<&str>, path: &Path) -> anyhow::Result<String> {
    let kstat = kstat.with_context(|| format!("{}: a kstat name is not UTF-8", path.display()))?;
    let last = kstat.rsplit('.').next().unwrap_or(kstat);
    if last.is_empty() {
        bail!(
            "{}: kstat {kstat:?} gives an empty metric name",
            path.display()
        );
    }
    let mut name = format!("node_{subsystem}_");
    name.extend(last.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        }
    }));
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    /// `(name, labels, value)` of one sample.
    type Sample = (String, Vec<(String, String)>, f64);

    /// Every sample, in collection order.
    fn samples(families: &Families) -> Vec<Sample> {
        let mut out = Vec::new();
        for family in &families.list {
            for metric in &family.metrics {
                let Value::Scalar(value) = metric.value else {
                    panic!("{}", family.name)
                };
                out.push((family.name.clone(), metric.labels.clone(), value));
            }
        }
        out
    }

    fn values(families: &Families) -> Vec<(String, f64)> {
        samples(families)
            .into_iter()
            .map(|(name, _, value)| (name, value))
            .collect()
    }

    /// A fake /proc/spl/kstat/zfs, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("zfs-test-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, rel: &str, data: impl AsRef<[u8]>) -> &Self {
            let path = self.0.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
            self
        }

        fn collect(&self) -> (Families, anyhow::Result<()>) {
            let collector = ZfsCollector {
                base: self.0.clone(),
            };
            let mut families = Families::default();
            let result = collector.collect(&mut families);
            (families, result)
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn pool(name: &str) -> PoolDir {
        PoolDir {
            name: name.into(),
            path: PathBuf::new(),
            entries: Vec::new(),
        }
    }

    fn objset(data: &str) -> anyhow::Result<Vec<Sample>> {
        let mut families = Families::default();
        parse_objset(
            data.as_bytes(),
            Path::new("objset-0x36"),
            &pool("tank"),
            &mut families,
        )?;
        Ok(samples(&families))
    }

    const ARCSTATS: &str = "16 1 0x01 5 240 41918340227 3541982107781022\n\
        name                            type data\n\
        hits                            4    261799432\n\
        memory_available_bytes          3    -108773376\n\
        some_string                     7    hello\n\
        arc_no_grow                     1    1\n\
        short 4\n\
        \n\
        c_max                           4    18446744073709551615   trailing words\n";

    #[test]
    fn named_kstats() {
        let tree = Tree::new("named");
        tree.write("arcstats", ARCSTATS).write(
            "fm",
            "0 1 0x01\nname type data\nerpt-dropped 4 7\nold.name.hits 4 2\n",
        );
        let (families, result) = tree.collect();
        result.unwrap();
        assert_eq!(
            values(&families),
            [
                ("node_zfs_arc_hits".to_owned(), 261799432.0),
                (
                    "node_zfs_arc_memory_available_bytes".to_owned(),
                    -108773376.0
                ),
                ("node_zfs_arc_c_max".to_owned(), 18446744073709551615.0),
                ("node_zfs_fm_erpt_dropped".to_owned(), 7.0),
                ("node_zfs_fm_hits".to_owned(), 2.0),
            ]
        );
        let helps: Vec<&str> = families.list.iter().map(|f| f.help.as_str()).collect();
        assert_eq!(helps[1], "kstat.zfs.misc.arcstats.memory_available_bytes");
        assert_eq!(helps[3], "kstat.zfs.misc.fm.erpt-dropped");
        assert_eq!(helps[4], "kstat.zfs.misc.fm.old.name.hits");
        assert!(
            families
                .list
                .iter()
                .all(|f| f.metric_type == MetricType::Untyped)
        );
    }

    #[test]
    fn missing_tree_is_no_data_and_missing_files_are_skipped() {
        let collector = ZfsCollector {
            base: PathBuf::from("/nonexistent/spl/kstat/zfs"),
        };
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");

        let tree = Tree::new("empty");
        let (families, result) = tree.collect();
        result.unwrap();
        assert!(families.list.is_empty());
    }

    #[test]
    fn malformed_named_kstats_are_errors() {
        let cases: [(&[u8], &str); 8] = [
            (b"", "did not parse a single metric"),
            (b"1 1 0x01\nhits 4 1\n", "did not parse a single metric"),
            (
                b"name type data\nhits 4 12a\n",
                "kstat.zfs.misc.arcstats.hits: bad number \"12a\"",
            ),
            (
                b"name type data\nhits 4 18446744073709551616\n",
                "bad number",
            ),
            (b"name type data\nhits 4 +5\n", "bad number"),
            (b"name type data\nhits 4 -1\n", "bad number"),
            (
                b"name type data\nneg 3 -9223372036854775809\n",
                "bad number",
            ),
            (b"name type data\nhits. 4 1\n", "empty metric name"),
        ];
        for (data, message) in cases {
            let tree = Tree::new("bad");
            tree.write("arcstats", data);
            let (_, result) = tree.collect();
            let error = format!("{:#}", result.unwrap_err());
            assert!(error.contains(message), "{error}");
            assert!(error.contains("arcstats"), "{error}");
        }
    }

    #[test]
    fn samples_before_an_error_are_kept() {
        let tree = Tree::new("partial");
        tree.write("abdstats", "name type data\nstruct_size 4 10\n")
            .write("arcstats", "name type data\nhits 4 1\nmisses 4 x\nc 4 3\n")
            .write("zil", "name type data\nzil_commit_count 4 1\n");
        let (families, result) = tree.collect();
        assert!(result.is_err());
        assert_eq!(
            values(&families),
            [
                ("node_zfs_abd_struct_size".to_owned(), 10.0),
                ("node_zfs_arc_hits".to_owned(), 1.0),
            ]
        );
    }

    #[test]
    fn signed_values_take_a_sign() {
        let tree = Tree::new("signed");
        tree.write(
            "arcstats",
            "name type data\na 3 +5\nb 3 -9223372036854775808\n",
        );
        let (families, result) = tree.collect();
        result.unwrap();
        assert_eq!(
            values(&families),
            [
                ("node_zfs_arc_a".to_owned(), 5.0),
                ("node_zfs_arc_b".to_owned(), -9223372036854775808.0),
            ]
        );
    }

    #[test]
    fn lines_as_go_scans_them() {
        let lines = |data: &[u8]| -> Vec<(String, bool)> {
            scan_lines(data, Path::new("f"))
                .map(|line| {
                    line.map(|line| (line.text.into_owned(), line.utf8))
                        .unwrap()
                })
                .collect()
        };
        assert_eq!(
            lines(b"a\r\n\xffb"),
            [("a".to_owned(), true), ("\u{fffd}b".to_owned(), false)]
        );
        let long = format!("a\n{}\nb\n", "x".repeat(goparse::MAX_SCAN_TOKEN));
        let results: Vec<String> = scan_lines(long.as_bytes(), Path::new("f"))
            .map(|line| line.map_or_else(|e| e.to_string(), |line| line.text.into_owned()))
            .collect();
        assert_eq!(
            results,
            [
                "a",
                "f: bufio.Scanner: token too long (a line of 65536 bytes or more)"
            ],
            "the too long line ends the file"
        );
    }

    #[test]
    fn non_utf8_names_are_errors_but_ignored_bytes_are_not() {
        let tree = Tree::new("utf8");
        tree.write(
            "zil",
            b"7 1 \xff\xfe\nname type data\nzil_commit_count 4 3 \xff\n".as_slice(),
        );
        let (families, result) = tree.collect();
        result.unwrap();
        assert_eq!(
            values(&families),
            [("node_zfs_zil_zil_commit_count".to_owned(), 3.0)]
        );

        tree.write("zil", b"name type data\nzil_\xffcount 4 3\n".as_slice());
        let (_, result) = tree.collect();
        assert!(format!("{:#}", result.unwrap_err()).contains("not UTF-8"));

        // A genuine U+FFFD on a UTF-8 line is a character like any other.
        tree.write("zil", "name type data\nzil_\u{FFFD}count 4 3\n");
        let (families, result) = tree.collect();
        result.unwrap();
        assert_eq!(
            values(&families),
            [("node_zfs_zil_zil__count".to_owned(), 3.0)]
        );
    }

    #[test]
    fn names_are_escaped_and_duplicates_dropped() {
        let tree = Tree::new("dups");
        tree.write(
            "arcstats",
            "name type data\nhits 4 1\nhits 4 2\nl2-hits 4 3\nl2_hits 4 4\nx.hits 4 5\nmfu/ghost 4 6\n",
        );
        let (families, result) = tree.collect();
        result.unwrap();
        assert_eq!(
            values(&families),
            [
                ("node_zfs_arc_hits".to_owned(), 1.0),
                ("node_zfs_arc_l2_hits".to_owned(), 3.0),
                ("node_zfs_arc_mfu_ghost".to_owned(), 6.0),
            ]
        );
    }

    const IO: &str = "25 3 0x00 1 80 48113250466 3541982090017211\n\
        nread    nwritten reads    writes   wtime    wlentime wupdate  rtime    rlentime rupdate  wcnt     rcnt\n\
        1843902947328 2991877644288 98310442 201877311 2211809342177 21904817733019912 3541982089733104 1977314620981 8841931027456620 3541982089950466 0 2\n";

    #[test]
    fn pool_io() {
        let mut families = Families::default();
        parse_io(IO.as_bytes(), Path::new("io"), &pool("tank"), &mut families).unwrap();
        let samples = samples(&families);
        assert_eq!(samples.len(), 12);
        assert_eq!(samples[0].0, "node_zfs_zpool_nread");
        assert_eq!(samples[0].1, [("zpool".to_owned(), "tank".to_owned())]);
        assert_eq!(samples[0].2, 1843902947328.0);
        assert_eq!(samples[5].2, 21904817733019912u64 as f64);
        assert_eq!(samples[11].2, 2.0);
        assert_eq!(families.list[0].help, "kstat.zfs.misc.io.nread");

        // No header (too few columns): nothing, no error.
        let mut families = Families::default();
        let data = "nread nwritten\n1 2\n";
        parse_io(
            data.as_bytes(),
            Path::new("io"),
            &pool("tank"),
            &mut families,
        )
        .unwrap();
        assert!(families.list.is_empty());

        // A short row, a bad number, a blank line after the row: errors.
        for tail in [
            "1 2 3\n",
            "1 2 3 4 5 6 7 8 9 10 11 x\n",
            "1 2 3 4 5 6 7 8 9 10 11 12\n\n",
        ] {
            let header = IO.lines().take(2).collect::<Vec<_>>().join("\n");
            let data = format!("{header}\n{tail}");
            let mut families = Families::default();
            let result = parse_io(
                data.as_bytes(),
                Path::new("io"),
                &pool("tank"),
                &mut families,
            );
            assert!(result.is_err(), "{tail:?}");
        }
    }

    #[test]
    fn objset_datasets() {
        let labels = |zpool: &str, dataset: &str| {
            vec![
                ("zpool".to_owned(), zpool.to_owned()),
                ("dataset".to_owned(), dataset.to_owned()),
            ]
        };
        let samples = objset(
            "34 1 0x01 7 2160 1 2\nname type data\n\
             dataset_name                    7    tank/home/Shared Media\n\
             writes                          4    120334\n\
             nunlinked                       3    5\n",
        )
        .unwrap();
        assert_eq!(
            samples,
            [(
                "node_zfs_zpool_dataset_writes".to_owned(),
                labels("tank", "tank/home/Shared Media"),
                120334.0
            )]
        );

        // Upstream takes the name from its first occurrence in the line: inside
        // "dataset_name" for a pool named "data".
        let samples = objset("name type data\ndataset_name 7 data\nreads 4 1\n").unwrap();
        assert_eq!(samples[0].1, labels("tank", "dataset_name 7 data"));

        // Entries before dataset_name carry empty labels.
        let samples =
            objset("name type data\nreads 4 1\ndataset_name 7 tank/a\nreads 4 2\n").unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].1, labels("", ""));
        assert_eq!(samples[1].1, labels("tank", "tank/a"));

        assert!(objset("").is_err());
        assert!(objset("name type data\ndataset_name 7 tank\nreads 4 -1\n").is_err());
    }

    #[test]
    fn pool_state() {
        let state = |data: &[u8]| -> Vec<(String, f64)> {
            let mut families = Families::default();
            parse_state(data, Path::new("state"), &pool("tank"), &mut families).unwrap();
            samples(&families)
                .into_iter()
                .map(|(_, labels, value)| (labels[1].1.clone(), value))
                .collect()
        };
        let active = |data: &[u8]| -> Vec<String> {
            state(data)
                .into_iter()
                .filter(|(_, value)| *value == 1.0)
                .map(|(name, _)| name)
                .collect()
        };
        assert_eq!(state(b"ONLINE\n").len(), 7);
        assert_eq!(active(b"ONLINE\n"), ["online"]);
        assert_eq!(active(b"SUSPENDED\r\nextra\n"), ["suspended"]);
        assert_eq!(active(b"Degraded"), ["degraded"]);
        assert_eq!(active("UNAVA\u{130}L\n".as_bytes()), ["unavail"]);
        assert!(active(b"").is_empty());
        assert!(active(b"ONLINE \n").is_empty());
        assert!(active(b"\xffONLINE\n").is_empty());
        let mut families = Families::default();
        let long = "x".repeat(goparse::MAX_SCAN_TOKEN);
        assert!(
            parse_state(
                long.as_bytes(),
                Path::new("state"),
                &pool("t"),
                &mut families
            )
            .is_err()
        );
    }

    #[test]
    fn pools_in_glob_order_and_unopenable_files_are_errors() {
        let tree = Tree::new("pools");
        tree.write("b/state", "ONLINE\n")
            .write("a/state", "FAULTED\n")
            .write(
                "a/objset-0x36",
                "name type data\ndataset_name 7 a\nreads 4 1\n",
            )
            .write("a/txgs", "not read\n")
            .write("notapool", "x\n")
            .write("a/io", IO);
        let (families, result) = tree.collect();
        result.unwrap();
        let names: Vec<&str> = families.list.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names.len(), 14);
        assert_eq!(names[0], "node_zfs_zpool_nread");
        assert_eq!(names[12], "node_zfs_zpool_dataset_reads");
        assert_eq!(names[13], "node_zfs_zpool_state");
        let states = samples(&families)
            .into_iter()
            .filter(|(name, _, value)| name == "node_zfs_zpool_state" && *value == 1.0)
            .map(|(_, labels, _)| labels)
            .collect::<Vec<_>>();
        assert_eq!(states.len(), 2);
        assert_eq!(states[0][0].1, "a");
        assert_eq!(states[0][1].1, "faulted");

        std::os::unix::fs::symlink(tree.0.join("gone"), tree.0.join("b/objset-0x40")).unwrap();
        let (families, result) = tree.collect();
        let error = format!("{:#}", result.unwrap_err());
        assert!(
            error.contains(NOT_AVAILABLE) && error.contains("objset-0x40"),
            "{error}"
        );
        assert!(
            families
                .list
                .iter()
                .all(|f| f.name != "node_zfs_zpool_state")
        );

        std::fs::remove_file(tree.0.join("b/objset-0x40")).unwrap();
        std::fs::create_dir(tree.0.join("b/io")).unwrap();
        let (_, result) = tree.collect();
        assert!(format!("{:#}", result.unwrap_err()).contains("b/io"));
    }
}
