//! `filefd`: allocated and maximum file handles from /proc/sys/fs/file-nr.
use std::sync::Arc;

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "filefd",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct FilefdCollector {
    file: read::KeptFile,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(FilefdCollector {
        file: read::KeptFile::new(context.proc_path("sys/fs/file-nr")),
    }))
}

impl Collector for FilefdCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let text = self.file.to_string()?;
        // "allocated  unused(always 0 since 2.6)  maximum"
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [allocated, _, maximum] = fields[..] else {
            anyhow::bail!(
                "{}: expected 3 fields, found {}",
                self.file.path().display(),
                fields.len()
            );
        };
        for (name, field) in [("allocated", allocated), ("maximum", maximum)] {
            let value: u64 = read::parse_number(field, name, self.file.path())
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
