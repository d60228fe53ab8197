//! `filefd`: allocated and maximum file handles from /proc/sys/fs/file-nr.
use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;

use super::{BuildContext, CollectorSpec, read};
use crate::{metrics::MetricFamily, scrape::Collector};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "filefd",
    default_enabled: true,
    flags: &[],
    hooks: &[],
    build,
};

struct FilefdCollector {
    path: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(FilefdCollector {
        path: context.proc_path("sys/fs/file-nr"),
    }))
}

impl Collector for FilefdCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let text = read::to_string(&self.path)?;
        // "allocated  unused(always 0 since 2.6)  maximum"
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [allocated, _, maximum] = fields[..] else {
            anyhow::bail!(
                "{}: expected 3 fields, found {}",
                self.path.display(),
                fields.len()
            );
        };
        for (name, field) in [("allocated", allocated), ("maximum", maximum)] {
            let value: u64 = read::parse_number(field, name, &self.path)
                .with_context(|| format!("node_filefd_{name}"))?;
            out.push(
                MetricFamily::gauge(
                    format!("node_filefd_{name}"),
                    format!("File descriptor statistics: {name}."),
                )
                .with_value(value as f64),
            );
        }
        Ok(())
    }
}
