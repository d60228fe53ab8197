//! `loadavg`: the 1, 5 and 15 minute load averages from /proc/loadavg.
use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;

use super::{BuildContext, CollectorSpec, read};
use crate::{metrics::MetricFamily, scrape::Collector};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "loadavg",
    default_enabled: true,
    flags: &[],
    hooks: &[],
    build,
};

struct LoadavgCollector {
    path: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(LoadavgCollector {
        path: context.proc_path("loadavg"),
    }))
}

impl Collector for LoadavgCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let text = read::to_string(&self.path)?;
        let mut fields = text.split_whitespace();
        for (name, help) in [
            ("node_load1", "1m load average."),
            ("node_load5", "5m load average."),
            ("node_load15", "15m load average."),
        ] {
            let field = fields
                .next()
                .with_context(|| format!("{}: too few fields", self.path.display()))?;
            let value: f64 = read::parse_number(field, name, &self.path)?;
            out.push(MetricFamily::gauge(name, help).with_value(value));
        }
        Ok(())
    }
}
