//! `xfrm`: IPsec (XFRM) error counters from /proc/net/xfrm_stat, as node_exporter's xfrm
//! collector. Every line must be a name and a (signed, as Go's `strconv.Atoi`) integer; names
//! not known are skipped and known names missing from the file are 0, as procfs reads them. A
//! missing file is an error as upstream makes it (the kernel has it whenever it is built with
//! CONFIG_XFRM_STATISTICS).
use std::{path::Path, sync::Arc};

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    metrics::MetricFamily,
    read::KeptFile,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "xfrm",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

/// bufio.Scanner's largest line (its 64 KiB buffer holds the line and its newline).
const MAX_LINE: usize = 64 * 1024 - 1;

/// The counters in upstream's order: the file's name, the metric's name (without
/// `node_xfrm_` and `_packets_total`) and its help.
const COUNTERS: [(&str, &str, &str); 28] = [
    ("XfrmInError", "in_error", "All errors not matched by other"),
    ("XfrmInBufferError", "in_buffer_error", "No buffer is left"),
    ("XfrmInHdrError", "in_hdr_error", "Header error"),
    (
        "XfrmInNoStates",
        "in_no_states",
        "No state is found i.e. Either inbound SPI, address, or IPsec protocol at SA is wrong",
    ),
    (
        "XfrmInStateProtoError",
        "in_state_proto_error",
        "Transformation protocol specific error e.g. SA key is wrong",
    ),
    (
        "XfrmInStateModeError",
        "in_state_mode_error",
        "Transformation mode specific error",
    ),
    (
        "XfrmInStateSeqError",
        "in_state_seq_error",
        "Sequence error i.e. Sequence number is out of window",
    ),
    ("XfrmInStateExpired", "in_state_expired", "State is expired"),
    (
        "XfrmInStateMismatch",
        "in_state_mismatch",
        "State has mismatch option e.g. UDP encapsulation type is mismatch",
    ),
    ("XfrmInStateInvalid", "in_state_invalid", "State is invalid"),
    (
        "XfrmInTmplMismatch",
        "in_tmpl_mismatch",
        "No matching template for states e.g. Inbound SAs are correct but SP rule is wrong",
    ),
    (
        "XfrmInNoPols",
        "in_no_pols",
        "No policy is found for states e.g. Inbound SAs are correct but no SP is found",
    ),
    ("XfrmInPolBlock", "in_pol_block", "Policy discards"),
    ("XfrmInPolError", "in_pol_error", "Policy error"),
    (
        "XfrmOutError",
        "out_error",
        "All errors which is not matched others",
    ),
    (
        "XfrmOutBundleGenError",
        "out_bundle_gen_error",
        "Bundle generation error",
    ),
    (
        "XfrmOutBundleCheckError",
        "out_bundle_check_error",
        "Bundle check error",
    ),
    ("XfrmOutNoStates", "out_no_states", "No state is found"),
    (
        "XfrmOutStateProtoError",
        "out_state_proto_error",
        "Transformation protocol specific error",
    ),
    (
        "XfrmOutStateModeError",
        "out_state_mode_error",
        "Transformation mode specific error",
    ),
    (
        "XfrmOutStateSeqError",
        "out_state_seq_error",
        "Sequence error i.e. Sequence number overflow",
    ),
    (
        "XfrmOutStateExpired",
        "out_state_expired",
        "State is expired",
    ),
    ("XfrmOutPolBlock", "out_pol_block", "Policy discards"),
    ("XfrmOutPolDead", "out_pol_dead", "Policy is dead"),
    ("XfrmOutPolError", "out_pol_error", "Policy error"),
    (
        "XfrmFwdHdrError",
        "fwd_hdr_error",
        "Forward routing of a packet is not allowed",
    ),
    (
        "XfrmOutStateInvalid",
        "out_state_invalid",
        "State is invalid, perhaps expired",
    ),
    (
        "XfrmAcquireError",
        "acquire_error",
        "State hasn’t been fully acquired before use",
    ),
];

struct XfrmCollector {
    file: KeptFile,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(XfrmCollector {
        file: KeptFile::new(context.proc_path("net/xfrm_stat")),
    }))
}

/// procfs' `NewXfrmStat`: the values of [`COUNTERS`], in order.
fn parse(text: &str, path: &Path) -> anyhow::Result<[i64; 28]> {
    let mut values = [0; 28];
    for line in text.lines() {
        if line.len() > MAX_LINE {
            anyhow::bail!("{}: bufio.Scanner: token too long", path.display());
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, value] = fields[..] else {
            anyhow::bail!("{}: malformed line {line:?}", path.display());
        };
        let value = crate::read::parse_number::<i64>(value, name, path)?;
        if let Some(index) = COUNTERS.iter().position(|(known, ..)| *known == name) {
            values[index] = value;
        }
    }
    Ok(values)
}

impl Collector for XfrmCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let values = parse(&self.file.to_string()?, self.file.path())?;
        for ((_, name, help), value) in COUNTERS.iter().zip(values) {
            out.push(
                MetricFamily::counter(format!("node_xfrm_{name}_packets_total"), *help)
                    .with_value(value as f64),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("/proc/net/xfrm_stat")
    }

    #[test]
    fn values_by_name() {
        let text = "XfrmInError                     3\nXfrmOutPolDead\t9223372036854775807\nXfrmFutureCounter 5\nXfrmAcquireError -2\n";
        let values = parse(text, path()).unwrap();
        assert_eq!(values[0], 3);
        assert_eq!(values[23], i64::MAX);
        assert_eq!(values[27], -2);
        assert_eq!(values.iter().filter(|v| **v != 0).count(), 3);
        assert_eq!(parse("", path()).unwrap(), [0; 28]);
    }

    #[test]
    fn malformed_lines_fail() {
        for bad in [
            "XfrmInError\n",
            "XfrmInError 1 2\n",
            "XfrmInError one\n",
            "XfrmInError 9223372036854775808\n",
            "XfrmInError 0x10\n",
            "\n",
        ] {
            let error = parse(bad, path()).unwrap_err();
            assert!(error.to_string().contains("xfrm_stat"), "{error:#}");
        }
        let long = format!("XfrmInError {}\n", "1".repeat(MAX_LINE));
        assert!(parse(&long, path()).is_err());
    }
}
