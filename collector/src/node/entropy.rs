//! `entropy`: the kernel's available entropy and pool size from /proc/sys/kernel/random.
use std::sync::Arc;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    metrics::MetricFamily,
    read,
    read::KeptFile,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "entropy",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct EntropyCollector {
    entropy_avail: KeptFile,
    poolsize: KeptFile,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(EntropyCollector {
        entropy_avail: KeptFile::new(context.proc_path("sys/kernel/random/entropy_avail")),
        poolsize: KeptFile::new(context.proc_path("sys/kernel/random/poolsize")),
    }))
}

impl EntropyCollector {
    /// procfs' `KernelRandom`: a missing file is no value, an unreadable one an error.
    fn read(file: &KeptFile, name: &str) -> anyhow::Result<Option<u64>> {
        let path = file.path();
        match file.read() {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(anyhow::Error::new(error).context(format!(
                "failed to get kernel random stats: reading {}",
                path.display()
            ))),
            Ok(text) => Ok(Some(read::parse_number(text.trim(), name, path)?)),
        }
    }
}

impl Collector for EntropyCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let available = Self::read(&self.entropy_avail, "entropy_avail")?;
        let pool_size = Self::read(&self.poolsize, "poolsize")?;
        let Some(available) = available else {
            anyhow::bail!("couldn't get entropy_avail");
        };
        out.push(
            MetricFamily::gauge("node_entropy_available_bits", "Bits of available entropy.")
                .with_value(available as f64),
        );
        let Some(pool_size) = pool_size else {
            anyhow::bail!("couldn't get entropy poolsize");
        };
        out.push(
            MetricFamily::gauge("node_entropy_pool_size_bits", "Bits of entropy pool.")
                .with_value(pool_size as f64),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_malformed_files() {
        let dir = std::env::temp_dir().join(format!("entropy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let collector = EntropyCollector {
            entropy_avail: KeptFile::new(dir.join("entropy_avail")),
            poolsize: KeptFile::new(dir.join("poolsize")),
        };
        let mut out = Vec::new();
        assert!(collector.update(&mut out).is_err());
        std::fs::write(dir.join("entropy_avail"), "256\n").unwrap();
        let error = collector.update(&mut out).unwrap_err();
        assert_eq!(error.to_string(), "couldn't get entropy poolsize");
        assert_eq!(out.len(), 1, "available is still served");
        std::fs::write(dir.join("poolsize"), "25x6\n").unwrap();
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(format!("{error:#}").contains("poolsize"), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
