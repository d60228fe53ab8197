//! `entropy`: the kernel's available entropy and pool size from /proc/sys/kernel/random.
use std::{path::PathBuf, sync::Arc};

use super::{BuildContext, CollectorSpec, read};
use crate::{metrics::MetricFamily, scrape::Collector};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "entropy",
    default_enabled: true,
    flags: &[],
    hooks: &[],
    build,
};

struct EntropyCollector {
    dir: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(EntropyCollector {
        dir: context.proc_path("sys/kernel/random"),
    }))
}

impl EntropyCollector {
    /// procfs' `KernelRandom`: a missing file is no value, an unreadable one an error.
    fn read(&self, file: &str) -> anyhow::Result<Option<u64>> {
        let path = self.dir.join(file);
        match std::fs::read_to_string(&path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(anyhow::Error::new(error).context(format!(
                "failed to get kernel random stats: reading {}",
                path.display()
            ))),
            Ok(text) => Ok(Some(read::parse_number(text.trim(), file, &path)?)),
        }
    }
}

impl Collector for EntropyCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let available = self.read("entropy_avail")?;
        let pool_size = self.read("poolsize")?;
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
        let collector = EntropyCollector { dir: dir.clone() };
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
