//! `cgroups`: the controllers of /proc/cgroups (cgroup v1 accounting: how many cgroups use each,
//! and whether it is enabled), as node_exporter's cgroups collector (procfs' `CgroupSummarys`).
//! Comment lines (the `#subsys_name ...` header) are skipped; any other line needs four fields,
//! the last three integers, or the scrape fails. procfs reads at most 1 MiB of the file.
use std::{collections::HashSet, path::Path, sync::Arc};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "cgroups",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

struct CgroupsCollector {
    path: std::path::PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(CgroupsCollector {
        path: context.proc_path("cgroups"),
    }))
}

/// One controller line: `subsys_name hierarchy num_cgroups enabled`.
#[derive(Debug, PartialEq, Eq)]
struct Controller {
    name: String,
    cgroups: i64,
    enabled: i64,
}

/// procfs' `parseCgroupSummary`. The hierarchy is checked but not reported.
fn parse(text: &str, path: &Path) -> anyhow::Result<Vec<Controller>> {
    let mut controllers = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, hierarchy, cgroups, enabled, ..] = fields[..] else {
            anyhow::bail!(
                "{}: 4+ fields required, found {} fields in cgroup info string: {line}",
                path.display(),
                fields.len()
            );
        };
        // Go's `strconv.Atoi`: an optional sign and decimal digits, as Rust's i64 parser.
        let int = |value: &str, what: &str| {
            value.parse::<i64>().map_err(|_| {
                anyhow::anyhow!("{}: unable to parse {what} from {value:?}", path.display())
            })
        };
        int(hierarchy, "hierarchy ID")?;
        controllers.push(Controller {
            name: name.to_owned(),
            cgroups: int(cgroups, "Cgroup Num")?,
            enabled: int(enabled, "Enabled")?,
        });
    }
    Ok(controllers)
}

impl Collector for CgroupsCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let text = read::capped_string(&self.path, read::NO_STAT_LIMIT)
            .with_context(|| format!("reading {}", self.path.display()))?;
        let controllers = parse(&text, &self.path)?;
        let mut cgroups = MetricFamily::gauge(
            "node_cgroups_cgroups",
            "Current cgroup number of the subsystem.",
        );
        let mut enabled = MetricFamily::gauge(
            "node_cgroups_enabled",
            "Current cgroup number of the subsystem.",
        );
        // A controller listed twice: node_exporter's registry drops the second one's samples
        // as duplicates, so the first is kept.
        let mut seen = HashSet::new();
        for controller in &controllers {
            if !seen.insert(controller.name.as_str()) {
                tracing::debug!(subsys_name = controller.name, "duplicate cgroup controller");
                continue;
            }
            cgroups.push(
                [("subsys_name", controller.name.as_str())],
                controller.cgroups as f64,
            );
            enabled.push(
                [("subsys_name", controller.name.as_str())],
                controller.enabled as f64,
            );
        }
        out.push(cgroups);
        out.push(enabled);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("/proc/cgroups")
    }

    #[test]
    fn parses_controllers() {
        let text = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
                    cpuset\t0\t143\t1\n\
                    memory\t0\t143\t1\n\
                    rdma\t0\t143\t0\n";
        let controllers = parse(text, path()).unwrap();
        assert_eq!(
            controllers[2],
            Controller {
                name: "rdma".into(),
                cgroups: 143,
                enabled: 0
            }
        );
        assert_eq!(controllers.len(), 3);
        assert!(parse("", path()).unwrap().is_empty());
    }

    #[test]
    fn bad_lines_are_errors() {
        for bad in [
            "cpu 1 2\n",
            "cpu\t1\t2\t1\n\n",
            "cpu 1 x 1\n",
            "cpu 1 2 y\n",
            "cpu h 2 1\n",
            "cpu 1 99999999999999999999 1\n",
        ] {
            assert!(parse(bad, path()).is_err(), "{bad:?}");
        }
        // Extra fields are ignored; signs are taken as Go's Atoi takes them.
        let controllers = parse("cpu +1 -2 1 extra\n", path()).unwrap();
        assert_eq!(controllers[0].cgroups, -2);
    }

    #[test]
    fn a_controller_listed_twice_keeps_its_first_line() {
        let dir = std::env::temp_dir().join(format!("cgroups-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroups"), "cpu 1 5 1\ncpu 1 6 0\n").unwrap();
        let c = CgroupsCollector {
            path: dir.join("cgroups"),
        };
        let mut out = Vec::new();
        c.update(&mut out).unwrap();
        assert_eq!(out[0].metrics.len(), 1);
        assert_eq!(out[0].metrics[0].value, crate::metrics::Value::Scalar(5.0));
        std::fs::remove_dir_all(&dir).unwrap();
        let error = c.update(&mut Vec::new()).unwrap_err();
        assert!(format!("{error:#}").contains("cgroups"), "{error:#}");
    }
}
