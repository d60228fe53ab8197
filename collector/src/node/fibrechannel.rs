//! `fibrechannel`: Fibre Channel host bus adapter ports from /sys/class/fc_host/<host> (an
//! info series of the port's attributes, and the counters of statistics/), as node_exporter's
//! fibrechannel collector reads them through procfs' `FibreChannelClass`.
//!
//! As upstream: an attribute a driver does not expose is an empty label; the kernel prints the
//! counters in hex, and a counter of all ones (not implemented by the HBA firmware) is not
//! exported. Where upstream crashes the exporter on a counter file that is absent (a nil
//! pointer), that counter is left out here.
use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    goparse,
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "fibrechannel",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct FibreChannelCollector {
    class: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(FibreChannelCollector {
        class: context.sys_path("class/fc_host"),
    }))
}

/// The attributes procfs reads, in its order; the four WWN-like ones lose their `0x`.
const ATTRIBUTES: [&str; 11] = [
    "speed",
    "port_state",
    "port_type",
    "node_name",
    "port_id",
    "port_name",
    "fabric_name",
    "dev_loss_tmo",
    "symbolic_name",
    "supported_classes",
    "supported_speeds",
];

/// The info series' labels besides `fc_host`, each from the attribute of its name
/// (`node_name` is read but not exported).
const INFO_LABELS: [&str; 10] = [
    "speed",
    "port_state",
    "port_type",
    "port_id",
    "port_name",
    "fabric_name",
    "symbolic_name",
    "supported_classes",
    "supported_speeds",
    "dev_loss_tmo",
];

/// The counters: statistics/ file, family suffix, HELP.
const COUNTERS: [(&str, &str, &str); 14] = [
    (
        "dumped_frames",
        "dumped_frames_total",
        "Number of dumped frames",
    ),
    (
        "error_frames",
        "error_frames_total",
        "Number of errors in frames",
    ),
    (
        "invalid_crc_count",
        "invalid_crc_total",
        "Invalid Cyclic Redundancy Check count",
    ),
    ("rx_frames", "rx_frames_total", "Number of frames received"),
    (
        "rx_words",
        "rx_words_total",
        "Number of words received by host port",
    ),
    (
        "tx_frames",
        "tx_frames_total",
        "Number of frames transmitted by host port",
    ),
    (
        "tx_words",
        "tx_words_total",
        "Number of words transmitted by host port",
    ),
    (
        "seconds_since_last_reset",
        "seconds_since_last_reset_total",
        "Number of seconds since last host port reset",
    ),
    (
        "invalid_tx_word_count",
        "invalid_tx_words_total",
        "Number of invalid words transmitted by host port",
    ),
    (
        "link_failure_count",
        "link_failure_total",
        "Number of times the host port link has failed",
    ),
    (
        "loss_of_sync_count",
        "loss_of_sync_total",
        "Number of failures on either bit or transmission word boundaries",
    ),
    (
        "loss_of_signal_count",
        "loss_of_signal_total",
        "Number of times signal has been lost",
    ),
    (
        "nos_count",
        "nos_total",
        "Number Not_Operational Primitive Sequence received by host port",
    ),
    (
        "fcp_packet_aborts",
        "fcp_packet_aborts_total",
        "Number of aborted packets",
    ),
];

#[derive(Debug, Default, PartialEq)]
struct Host {
    name: String,
    /// By [`ATTRIBUTES`] index; `None` when the driver does not expose it.
    attributes: [Option<String>; 11],
    /// By [`COUNTERS`] index; `None` when the file is absent.
    counters: [Option<u64>; 14],
}

impl Host {
    fn attribute(&self, name: &str) -> &str {
        ATTRIBUTES
            .iter()
            .position(|a| *a == name)
            .and_then(|i| self.attributes[i].as_deref())
            .unwrap_or("")
    }
}

/// procfs' `parseFibreChannelHost`.
fn read_host(dir: &Path, name: String) -> anyhow::Result<Host> {
    let mut host = Host {
        name,
        ..Host::default()
    };
    for (index, attribute) in ATTRIBUTES.iter().enumerate() {
        let path = dir.join(attribute);
        // Bytes, as the `0x` prefix is cut by byte.
        let mut value = match read::sys_read_attribute(&path) {
            Ok(value) => value.into_bytes(),
            // Drivers may leave attributes out (node_exporter#2919).
            Err(error) if error.not_found() => continue,
            Err(error) => {
                return Err(anyhow::Error::new(error.error)
                    .context(format!("failed to read file {:?}", path.display())));
            }
        };
        if matches!(
            *attribute,
            "node_name" | "port_id" | "port_name" | "fabric_name"
        ) && value.len() > 2
        {
            value.drain(..2);
        }
        host.attributes[index] = Some(String::from_utf8_lossy(&value).into_owned());
    }

    let statistics = dir.join("statistics");
    let files = match read::read_dir_sorted(&statistics) {
        Ok(files) => files,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(host),
        Err(error) => {
            return Err(
                anyhow::Error::new(error).context(format!("reading {}", statistics.display()))
            );
        }
    };
    for entry in files {
        let file = entry.name.to_string_lossy();
        if !entry.file_type.is_file() || file == "reset_statistics" {
            continue;
        }
        let path = &entry.path;
        let value = match read::sys_read_attribute(path) {
            Ok(value) => value,
            // Write-only files (absent on open, or refused on read): skipped.
            Err(error) if error.not_found() || error.read_errno(libc::EOPNOTSUPP) => continue,
            Err(error) => {
                return Err(anyhow::Error::new(error.error)
                    .context(format!("failed to read file {:?}", path.display())));
            }
        };
        if let Some(index) = COUNTERS.iter().position(|(f, _, _)| *f == file) {
            let number = goparse::parse_uint(&value, 0, 64)
                .with_context(|| format!("{}: bad number {value:?}", path.display()))?;
            host.counters[index] = Some(number);
        }
    }
    Ok(host)
}

impl Collector for FibreChannelCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let names = match read::sorted_names(&self.class) {
            Ok(names) => names,
            Err(error) if error.kind() == ErrorKind::NotFound => {
                return Err(NoData(format!(
                    "fibrechannel statistics not found, skipping: {}: {error}",
                    self.class.display()
                ))
                .into());
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!(
                    "error obtaining FibreChannel class info: reading {}",
                    self.class.display()
                )));
            }
        };
        let hosts = names
            .into_iter()
            .map(|name| read_host(&self.class.join(&name), name))
            .collect::<anyhow::Result<Vec<_>>>()
            .context("error obtaining FibreChannel class info")?;

        let mut info = MetricFamily::gauge(
            "node_fibrechannel_info",
            "Non-numeric data from /sys/class/fc_host/<host>, value is always 1.",
        );
        let mut counters: Vec<MetricFamily> = COUNTERS
            .iter()
            .map(|(_, suffix, help)| {
                MetricFamily::counter(format!("node_fibrechannel_{suffix}"), *help)
            })
            .collect();
        for host in &hosts {
            let labels = std::iter::once(("fc_host", host.name.as_str())).chain(
                INFO_LABELS
                    .iter()
                    .map(|label| (*label, host.attribute(label))),
            );
            info.push(labels, 1.0);
            for (family, value) in counters.iter_mut().zip(host.counters) {
                match value {
                    // All ones: not implemented by the HBA firmware.
                    Some(value) if value != u64::MAX => {
                        family.push([("fc_host", host.name.as_str())], value as f64);
                    }
                    _ => {}
                }
            }
        }
        out.push(info);
        out.extend(counters);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn host_attributes_and_counters() {
        let class = temp("ok");
        let host = class.join("host3");
        write(&host.join("port_name"), "0x10000090fa8b1c2d\n");
        write(&host.join("port_id"), "0x0\n");
        write(&host.join("fabric_name"), "0x\n");
        write(&host.join("node_name"), "0é\n");
        write(&host.join("speed"), "32 Gbit\n");
        write(&host.join("statistics/tx_frames"), "0x1f\n");
        write(&host.join("statistics/rx_frames"), "0xffffffffffffffff\n");
        write(&host.join("statistics/reset_statistics"), "garbage\n");
        write(&host.join("statistics/fc_xid_busy"), "garbage\n");
        std::fs::create_dir_all(host.join("statistics/power")).unwrap();
        let read = read_host(&host, "host3".into()).unwrap();
        assert_eq!(read.attribute("port_name"), "10000090fa8b1c2d");
        assert_eq!(read.attribute("port_id"), "0");
        assert_eq!(read.attribute("fabric_name"), "0x");
        // Cut by byte, as Go: the second byte of "é" is left alone, invalid.
        assert_eq!(read.attribute("node_name"), "\u{fffd}");
        assert_eq!(read.attribute("symbolic_name"), "");

        let mut out = Vec::new();
        FibreChannelCollector {
            class: class.clone(),
        }
        .update(&mut out)
        .unwrap();
        let family = |name: &str| out.iter().find(|f| f.name == name).unwrap();
        assert_eq!(family("node_fibrechannel_info").metrics[0].labels.len(), 11);
        assert_eq!(
            family("node_fibrechannel_tx_frames_total").metrics[0].value,
            crate::metrics::Value::Scalar(31.0)
        );
        // All ones and absent counters are not served.
        assert!(
            family("node_fibrechannel_rx_frames_total")
                .metrics
                .is_empty()
        );
        assert!(family("node_fibrechannel_nos_total").metrics.is_empty());
        std::fs::remove_dir_all(&class).unwrap();
    }

    #[test]
    fn missing_and_malformed() {
        let class = temp("bad");
        let collector = FibreChannelCollector {
            class: class.clone(),
        };
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");

        // No statistics/ at all: the info series alone.
        let host = class.join("host0");
        write(&host.join("speed"), "unknown\n");
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        assert_eq!(out.iter().map(|f| f.metrics.len()).sum::<usize>(), 1);

        for bad in ["12z", "-1", "0x10000000000000000", ""] {
            write(&host.join("statistics/nos_count"), bad);
            let mut out = Vec::new();
            let error = collector.update(&mut out).unwrap_err();
            assert!(format!("{error:#}").contains("nos_count"), "{error:#}");
            assert!(out.is_empty());
        }
        // An attribute that is a directory cannot be read: an error.
        write(&host.join("statistics/nos_count"), "0x1");
        std::fs::create_dir_all(host.join("port_type")).unwrap();
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(format!("{error:#}").contains("port_type"), "{error:#}");
        std::fs::remove_dir_all(&class).unwrap();
    }
}
