//! `loadavg`: the 1, 5 and 15 minute load averages from /proc/loadavg.
use std::sync::Arc;

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "loadavg",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct LoadavgCollector {
    file: read::KeptFile,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(LoadavgCollector {
        file: read::KeptFile::new(context.proc_path("loadavg")),
    }))
}

impl Collector for LoadavgCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let text = self.file.to_string()?;
        let mut fields = text.split_whitespace();
        for (name, help) in [
            ("node_load1", "1m load average."),
            ("node_load5", "5m load average."),
            ("node_load15", "15m load average."),
        ] {
            let field = fields
                .next()
                .with_context(|| format!("{}: too few fields", self.file.path().display()))?;
            let value: f64 = read::parse_number(field, name, self.file.path())?;
            out.push(MetricFamily::gauge(name, help).with_value(value));
        }
        Ok(())
    }
}
