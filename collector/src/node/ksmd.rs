//! `ksmd`: kernel same-page merging, from the files of /sys/kernel/mm/ksm, one family each
//! (`node_ksmd_<file>`; `full_scans` a counter `_total`, `sleep_millisecs` in seconds).
//!
//! Files are read in upstream's order; the first one missing or malformed ends the scrape with
//! an error, the families before it still served. No ksm directory (kernel without
//! CONFIG_KSM) is such an error too, as upstream.
use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    goparse,
    metrics::{MetricFamily, MetricType},
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "ksmd",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

/// The files read, in node_exporter's order.
const FILES: &[&str] = &[
    "full_scans",
    "merge_across_nodes",
    "pages_shared",
    "pages_sharing",
    "pages_to_scan",
    "pages_unshared",
    "pages_volatile",
    "run",
    "sleep_millisecs",
];

struct KsmdCollector {
    dir: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(KsmdCollector {
        dir: context.sys_path("kernel/mm/ksm"),
    }))
}

/// The family of one file and its value.
fn family(file: &str, value: u64) -> MetricFamily {
    let help = format!("ksmd '{file}' file.");
    match file {
        "full_scans" => MetricFamily::new("node_ksmd_full_scans_total", help, MetricType::Counter)
            .with_value(value as f64),
        "sleep_millisecs" => {
            MetricFamily::gauge("node_ksmd_sleep_seconds", help).with_value(value as f64 / 1000.0)
        }
        _ => MetricFamily::gauge(format!("node_ksmd_{file}"), help).with_value(value as f64),
    }
}

impl Collector for KsmdCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        for file in FILES {
            let path = self.dir.join(file);
            let text = read::to_string(&path)?;
            let value = goparse::parse_uint(text.trim(), 10, 64)
                .with_context(|| format!("{}: bad number {:?}", path.display(), text.trim()))?;
            out.push(family(file, value));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_errors() {
        assert_eq!(
            family("sleep_millisecs", 20).name,
            "node_ksmd_sleep_seconds"
        );
        assert_eq!(
            family("sleep_millisecs", 20).metrics[0].value,
            crate::metrics::Value::Scalar(0.02)
        );
        assert_eq!(family("full_scans", 3).metric_type, MetricType::Counter);
        let dir = std::env::temp_dir().join(format!("ksmd-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let collector = KsmdCollector { dir: dir.clone() };
        assert!(collector.update(&mut Vec::new()).is_err());
        std::fs::write(dir.join("full_scans"), "7\n").unwrap();
        std::fs::write(dir.join("merge_across_nodes"), "x\n").unwrap();
        let mut out = Vec::new();
        let error = collector.update(&mut out).unwrap_err();
        assert!(
            format!("{error:#}").contains("merge_across_nodes"),
            "{error:#}"
        );
        assert_eq!(out.len(), 1, "full_scans is still served");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
