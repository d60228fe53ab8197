//! `kernel_hung`: the number of tasks the hung-task detector has reported since boot, from
//! /proc/sys/kernel/hung_task_detect_count (kernels 6.12+ with CONFIG_DETECT_HUNG_TASK; no
//! file is no data).
use std::sync::Arc;

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    goparse,
    metrics::MetricFamily,
    read::KeptFile,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "kernel_hung",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct KernelHungCollector {
    file: KeptFile,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(KernelHungCollector {
        file: KeptFile::new(context.proc_path("sys/kernel/hung_task_detect_count")),
    }))
}

impl Collector for KernelHungCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let path = self.file.path();
        let Some(text) = self.file.optional()? else {
            return Err(NoData(format!("{} does not exist", path.display())).into());
        };
        let count = goparse::parse_uint(text.trim(), 10, 64)
            .with_context(|| format!("{}: bad number {:?}", path.display(), text.trim()))?;
        out.push(
            MetricFamily::counter(
                "node_kernel_hung_tasks_total",
                "Total number of tasks that have been detected as hung since the system booted.",
            )
            .with_value(count as f64),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_malformed_files() {
        let dir = std::env::temp_dir().join(format!("kernel-hung-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let collector = KernelHungCollector {
            file: KeptFile::new(dir.join("hung_task_detect_count")),
        };
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");
        std::fs::write(dir.join("hung_task_detect_count"), "3\n").unwrap();
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        assert_eq!(out[0].metrics[0].value, crate::metrics::Value::Scalar(3.0));
        for bad in ["-1\n", "", "x", "+3"] {
            std::fs::write(dir.join("hung_task_detect_count"), bad).unwrap();
            let error = collector.update(&mut Vec::new()).unwrap_err();
            assert!(error.downcast_ref::<NoData>().is_none());
            assert!(format!("{error:#}").contains("hung_task_detect_count"));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
