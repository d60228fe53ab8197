//! `udp_queues`: bytes queued in UDP sockets, summed from /proc/net/udp and /proc/net/udp6, as
//! node_exporter's udp_queues collector.
use std::{path::Path, sync::Arc};

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "udp_queues",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct UdpQueuesCollector {
    udp: read::KeptFile,
    udp6: read::KeptFile,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(UdpQueuesCollector {
        udp: read::KeptFile::new(context.proc_path("net/udp")),
        udp6: read::KeptFile::new(context.proc_path("net/udp6")),
    }))
}

/// Sums `tx_queue:rx_queue` over the socket lines (after the header), checking each line as
/// procfs' `parseNetIPSocketLine` does.
fn parse(text: &str, path: &Path) -> anyhow::Result<(u64, u64)> {
    let (mut tx, mut rx) = (0u64, 0u64);
    for (number, line) in text.lines().enumerate().skip(1) {
        let bad = |what: &str| anyhow::anyhow!("{}: line {}: {what}", path.display(), number + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 {
            return Err(bad("fewer than 10 columns"));
        }
        let hex_pair = |field: &str| -> Option<(u64, u64)> {
            let (a, b) = field.split_once(':')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        };
        let sl_ok = fields[0]
            .split_once(':')
            .is_some_and(|(sl, rest)| rest.is_empty() && sl.parse::<u64>().is_ok());
        if !sl_ok {
            return Err(bad("bad slot"));
        }
        for address in [fields[1], fields[2]] {
            if hex_pair(address).is_none()
                && !address.split_once(':').is_some_and(|(ip, port)| {
                    ip.bytes().all(|b| b.is_ascii_hexdigit())
                        && (ip.len() == 8 || ip.len() == 32)
                        && u16::from_str_radix(port, 16).is_ok()
                })
            {
                return Err(bad("bad address"));
            }
        }
        u64::from_str_radix(fields[3], 16).map_err(|_| bad("bad state"))?;
        let (line_tx, line_rx) = hex_pair(fields[4]).ok_or_else(|| bad("bad queue"))?;
        fields[7].parse::<u64>().map_err(|_| bad("bad uid"))?;
        fields[9].parse::<u64>().map_err(|_| bad("bad inode"))?;
        tx = tx.wrapping_add(line_tx);
        rx = rx.wrapping_add(line_rx);
    }
    Ok((tx, rx))
}

/// The summed queues, `None` if the file does not exist (that IP version is disabled).
fn summary(file: &read::KeptFile) -> anyhow::Result<Option<(u64, u64)>> {
    file.optional()?
        .map(|text| parse(&text, file.path()))
        .transpose()
}

impl Collector for UdpQueuesCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let mut family = MetricFamily::gauge(
            "node_udp_queues",
            "Number of allocated memory in the kernel for UDP datagrams in bytes.",
        );
        let v4 = summary(&self.udp);
        // upstream serves v4 before it reads v6; an error on either fails the collector.
        let v4 = v4?;
        let v6 = summary(&self.udp6);
        for (ip, queues) in [("v4", &v4), ("v6", v6.as_ref().unwrap_or(&None))] {
            if let Some((tx, rx)) = queues {
                family.push([("queue", "tx"), ("ip", ip)], *tx as f64);
                family.push([("queue", "rx"), ("ip", ip)], *rx as f64);
            }
        }
        let v6 = match v6 {
            Ok(v6) => v6,
            Err(error) => {
                out.push(family);
                return Err(error);
            }
        };
        let none = v4.is_none() && v6.is_none();
        out.push(family);
        if none {
            return Err(
                NoData("neither /proc/net/udp nor /proc/net/udp6 exists".to_owned()).into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n";

    #[test]
    fn sums_queues() {
        let text = format!(
            "{HEADER}  1: 00000000:0044 00000000:0000 07 00000010:00000200 00:00000000 00000000     0        0 16345 2 0000000000000000 0\n  2: 0100007F:0035 00000000:0000 07 00000001:00000000 00:00000000 00000000   101        0 17000 2 0000000000000000 5\n"
        );
        assert_eq!(
            parse(&text, Path::new("/proc/net/udp")).unwrap(),
            (0x11, 0x200)
        );
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_file() {
        for line in [
            "  1: 00000000:0044 00000000:0000 07\n",
            "  1: 00000000:0044 00000000:0000 07 0000001000000200 00:00000000 00000000 0 0 16345\n",
            "  1: 00000000:0044 00000000:0000 07 00000010:zz 00:00000000 00000000 0 0 16345\n",
        ] {
            let error = parse(&format!("{HEADER}{line}"), Path::new("/x/net/udp")).unwrap_err();
            assert!(error.to_string().contains("/x/net/udp"), "{error}");
        }
    }

    #[test]
    fn missing_files_are_no_data() {
        let collector = UdpQueuesCollector {
            udp: read::KeptFile::new("/nonexistent/udp".into()),
            udp6: read::KeptFile::new("/nonexistent/udp6".into()),
        };
        let mut out = Vec::new();
        let error = collector.update(&mut out).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some());
    }
}
