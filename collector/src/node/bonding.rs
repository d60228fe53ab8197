//! `bonding`: configured and active slaves of each bonding master, from
//! /sys/class/net/bonding_masters, <bond>/bonding/slaves and each slave's mii_status, as
//! node_exporter's bonding collector.
use std::{path::PathBuf, sync::Arc};

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "bonding",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct BondingCollector {
    class_net: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(BondingCollector {
        class_net: context.sys_path("class/net"),
    }))
}

impl BondingCollector {
    /// `(master, slaves, active)` for every master; any unreadable file fails the whole read.
    fn stats(&self) -> anyhow::Result<Vec<(String, u32, u32)>> {
        let masters_path = self.class_net.join("bonding_masters");
        let masters = read::optional(&masters_path)?
            .ok_or_else(|| NoData(format!("{} does not exist", masters_path.display())))?;
        let mut stats = Vec::new();
        for master in masters.split_whitespace() {
            let slaves_path = self.class_net.join(master).join("bonding/slaves");
            let slaves = read::to_string(&slaves_path)?;
            let (mut configured, mut active) = (0, 0);
            for slave in slaves.split_whitespace() {
                let lower = self
                    .class_net
                    .join(master)
                    .join(format!("lower_{slave}/bonding_slave/mii_status"));
                let state = match read::optional(&lower)? {
                    Some(state) => state,
                    None => {
                        // Some older kernels use the slave_ prefix.
                        let old = self
                            .class_net
                            .join(master)
                            .join(format!("slave_{slave}/bonding_slave/mii_status"));
                        read::to_string(&old)?
                    }
                };
                configured += 1;
                if state.trim() == "up" {
                    active += 1;
                }
            }
            stats.push((master.to_owned(), configured, active));
        }
        Ok(stats)
    }
}

impl Collector for BondingCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let stats = self.stats()?;
        let mut slaves = MetricFamily::gauge(
            "node_bonding_slaves",
            "Number of configured slaves per bonding interface.",
        );
        let mut active = MetricFamily::gauge(
            "node_bonding_active",
            "Number of active slaves per bonding interface.",
        );
        for (master, configured, up) in stats {
            slaves.push([("master", master.as_str())], f64::from(configured));
            active.push([("master", master.as_str())], f64::from(up));
        }
        out.push(slaves);
        out.push(active);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_masters_file_is_no_data_and_missing_slave_state_fails() {
        let dir = std::env::temp_dir().join(format!("bonding-test-{}", std::process::id()));
        let collector = BondingCollector {
            class_net: dir.clone(),
        };
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some());

        std::fs::create_dir_all(dir.join("bond9/bonding")).unwrap();
        std::fs::write(dir.join("bonding_masters"), "bond9\n").unwrap();
        std::fs::write(dir.join("bond9/bonding/slaves"), "eth7\n").unwrap();
        let mut out = Vec::new();
        let error = collector.update(&mut out).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(format!("{error:#}").contains("slave_eth7"), "{error:#}");
        assert!(out.is_empty(), "nothing half-read is served");
    }
}
