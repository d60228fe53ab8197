//! `edac`: memory error counts of the EDAC memory controllers, from
//! /sys/devices/system/edac/mc/mc<N>/{ce,ue}_count, {ce,ue}_noinfo_count and their
//! csrow<M>/{ce,ue}_count and ch<K>_{ce,ue}_count, as node_exporter's edac collector.
//!
//! Not obvious: no EDAC folder is not "no data" but an empty success, as upstream's glob finds
//! nothing; the counts without a csrow (`*_noinfo_count`) go to the csrow families with
//! `csrow="unknown"`; a channel's uncorrectable count is optional, its correctable one not;
//! the numbers are taken from the paths with upstream's own regular expressions.
use std::{os::unix::ffi::OsStrExt as _, path::Path, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use regex::bytes::Regex;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    goparse,
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "edac",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct EdacCollector {
    mc: PathBuf,
    controller_re: Regex,
    csrow_re: Regex,
    channel_re: Regex,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(EdacCollector {
        mc: context.sys_path("devices/system/edac/mc"),
        controller_re: Regex::new(r".*devices/system/edac/mc/mc([0-9]*)")?,
        csrow_re: Regex::new(r".*devices/system/edac/mc/mc[0-9]*/csrow([0-9]*)")?,
        channel_re: Regex::new(r"ch([0-9]+)_ce_count")?,
    }))
}

/// Go's `filepath.Match` of `<prefix>[0-9]*` against a file name.
fn digit_after(name: &[u8], prefix: &[u8]) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.first())
        .is_some_and(u8::is_ascii_digit)
}

/// The first capture of `re` in `path`, `None` when it does not match.
fn capture(re: &Regex, path: &[u8]) -> Option<String> {
    let captures = re.captures(path)?;
    Some(String::from_utf8_lossy(captures.get(1)?.as_bytes()).into_owned())
}

/// node_exporter's `readUintFromFile`, the error saying which count of what failed.
fn count(path: &Path, what: impl FnOnce() -> String) -> anyhow::Result<f64> {
    read::read_uint_file(path)
        .map(|value| value as f64)
        .with_context(|| format!("couldn't get {}", what()))
}

/// node_exporter's `edacDimmLabel`: `ch<K>_dimm_label` trimmed, without `#`, with `csrow` and
/// `channel` preceded by `_`; `unknown` when it cannot be read.
fn dimm_label(csrow: &Path, channel: &str) -> String {
    match std::fs::read(csrow.join(format!("ch{channel}_dimm_label"))) {
        Ok(bytes) => goparse::to_valid_utf8(goparse::trim_space(&bytes))
            .replace('#', "")
            .replace("csrow", "_csrow")
            .replace("channel", "_channel"),
        Err(_) => "unknown".to_owned(),
    }
}

struct Families {
    ce: MetricFamily,
    ue: MetricFamily,
    csrow_ce: MetricFamily,
    csrow_ue: MetricFamily,
    channel_ce: MetricFamily,
    channel_ue: MetricFamily,
}

impl Families {
    fn new() -> Self {
        Self {
            ce: MetricFamily::counter(
                "node_edac_correctable_errors_total",
                "Total correctable memory errors.",
            ),
            ue: MetricFamily::counter(
                "node_edac_uncorrectable_errors_total",
                "Total uncorrectable memory errors.",
            ),
            csrow_ce: MetricFamily::counter(
                "node_edac_csrow_correctable_errors_total",
                "Total correctable memory errors for this csrow.",
            ),
            csrow_ue: MetricFamily::counter(
                "node_edac_csrow_uncorrectable_errors_total",
                "Total uncorrectable memory errors for this csrow.",
            ),
            channel_ce: MetricFamily::counter(
                "node_edac_channel_correctable_errors_total",
                "Total correctable memory errors for this channel.",
            ),
            channel_ue: MetricFamily::counter(
                "node_edac_channel_uncorrectable_errors_total",
                "Total uncorrectable memory errors for this channel.",
            ),
        }
    }

    fn into_vec(self) -> Vec<MetricFamily> {
        vec![
            self.ce,
            self.ue,
            self.csrow_ce,
            self.csrow_ue,
            self.channel_ce,
            self.channel_ue,
        ]
    }
}

impl EdacCollector {
    fn collect(&self, families: &mut Families) -> anyhow::Result<()> {
        let controllers = read::glob(&self.mc, |name| digit_after(name, b"mc")).unwrap_or_default();
        for controller in controllers {
            let path = controller.as_os_str().as_bytes();
            let Some(mc) = capture(&self.controller_re, path) else {
                anyhow::bail!(
                    "controller string didn't match regexp: {}",
                    controller.display()
                );
            };
            let mc = mc.as_str();
            let value = count(&controller.join("ce_count"), || {
                format!("ce_count for controller {mc}")
            })?;
            families.ce.push([("controller", mc)], value);
            let value = count(&controller.join("ce_noinfo_count"), || {
                format!("ce_noinfo_count for controller {mc}")
            })?;
            families
                .csrow_ce
                .push([("controller", mc), ("csrow", "unknown")], value);
            let value = count(&controller.join("ue_count"), || {
                format!("ue_count for controller {mc}")
            })?;
            families.ue.push([("controller", mc)], value);
            let value = count(&controller.join("ue_noinfo_count"), || {
                format!("ue_noinfo_count for controller {mc}")
            })?;
            families
                .csrow_ue
                .push([("controller", mc), ("csrow", "unknown")], value);

            for csrow in
                read::glob(&controller, |name| digit_after(name, b"csrow")).unwrap_or_default()
            {
                let Some(row) = capture(&self.csrow_re, csrow.as_os_str().as_bytes()) else {
                    anyhow::bail!("csrow string didn't match regexp: {}", csrow.display());
                };
                let row = row.as_str();
                let value = count(&csrow.join("ce_count"), || {
                    format!("ce_count for controller/csrow {mc}/{row}")
                })?;
                families
                    .csrow_ce
                    .push([("controller", mc), ("csrow", row)], value);
                let value = count(&csrow.join("ue_count"), || {
                    format!("ue_count for controller/csrow {mc}/{row}")
                })?;
                families
                    .csrow_ue
                    .push([("controller", mc), ("csrow", row)], value);

                let channel_files = read::glob(&csrow, |name| {
                    name.starts_with(b"ch") && name.ends_with(b"_ce_count") && name.len() >= 11
                })
                .unwrap_or_default();
                for file in channel_files {
                    let name = file.file_name().map(|n| n.as_bytes()).unwrap_or_default();
                    let Some(channel) = capture(&self.channel_re, name) else {
                        continue;
                    };
                    let channel = channel.as_str();
                    let label = dimm_label(&csrow, channel);
                    let labels = [
                        ("controller", mc),
                        ("csrow", row),
                        ("channel", channel),
                        ("dimm_label", label.as_str()),
                    ];
                    let value = count(&file, || {
                        format!("ce_count for controller/csrow/channel {mc}/{row}/{channel}")
                    })?;
                    families.channel_ce.push(labels, value);
                    let ue = csrow.join(format!("ch{channel}_ue_count"));
                    match read::read_uint_file(&ue) {
                        Ok(value) => families.channel_ue.push(labels, value as f64),
                        Err(error) => tracing::debug!(
                            controller = mc,
                            csrow = row,
                            channel,
                            err = %error,
                            "couldn't get ue_count for controller/csrow/channel"
                        ),
                    }
                }
            }
        }
        Ok(())
    }
}

impl Collector for EdacCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let mut families = Families::new();
        let result = self.collect(&mut families);
        // Counts read before an error are still served, as upstream sends them as it goes.
        out.extend(families.into_vec());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    fn collector(root: &Path) -> EdacCollector {
        EdacCollector {
            mc: root.join("devices/system/edac/mc"),
            controller_re: Regex::new(r".*devices/system/edac/mc/mc([0-9]*)").unwrap(),
            csrow_re: Regex::new(r".*devices/system/edac/mc/mc[0-9]*/csrow([0-9]*)").unwrap(),
            channel_re: Regex::new(r"ch([0-9]+)_ce_count").unwrap(),
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn samples(out: &[MetricFamily], name: &str) -> Vec<(Vec<String>, f64)> {
        let family = out.iter().find(|f| f.name == name).unwrap();
        family
            .metrics
            .iter()
            .map(|m| {
                let Value::Scalar(v) = m.value else { panic!() };
                (m.labels.iter().map(|(_, v)| v.clone()).collect(), v)
            })
            .collect()
    }

    #[test]
    fn reads_controllers_csrows_and_channels() {
        let root = std::env::temp_dir().join(format!("edac-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mc0 = root.join("devices/system/edac/mc/mc0");
        for (file, value) in [
            ("ce_count", "3\n"),
            ("ce_noinfo_count", "1\n"),
            ("ue_count", "0\n"),
            ("ue_noinfo_count", "0\n"),
            ("csrow0/ce_count", "2\n"),
            ("csrow0/ue_count", "0\n"),
            ("csrow0/ch0_ce_count", "2\n"),
            ("csrow0/ch0_ue_count", "0\n"),
            ("csrow0/ch0_dimm_label", "mc#0csrow#0channel#0\n"),
            ("csrow0/ch1_ce_count", "0\n"),
            ("csrow0/chx_ce_count", "9\n"),
        ] {
            write(&mc0.join(file), value);
        }
        // Not a controller: no digit after "mc".
        write(&root.join("devices/system/edac/mc/mcx/ce_count"), "1\n");
        let collector = collector(&root);
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        assert_eq!(
            samples(&out, "node_edac_correctable_errors_total"),
            [(vec!["0".to_owned()], 3.0)]
        );
        assert_eq!(
            samples(&out, "node_edac_csrow_correctable_errors_total"),
            [
                (vec!["0".to_owned(), "unknown".to_owned()], 1.0),
                (vec!["0".to_owned(), "0".to_owned()], 2.0),
            ]
        );
        let channels = samples(&out, "node_edac_channel_correctable_errors_total");
        assert_eq!(channels.len(), 2);
        assert_eq!(channels[0].0[3], "mc0_csrow0_channel0");
        assert_eq!(channels[1].0[3], "unknown");
        // ch1 has no ue_count: left out.
        assert_eq!(
            samples(&out, "node_edac_channel_uncorrectable_errors_total").len(),
            1
        );

        // A garbled count fails, after what was read before it.
        write(&mc0.join("csrow0/ue_count"), "+1\n");
        let mut out = Vec::new();
        let error = collector.update(&mut out).unwrap_err();
        assert!(format!("{error:#}").contains("ue_count for controller/csrow 0/0"));
        assert_eq!(
            samples(&out, "node_edac_csrow_correctable_errors_total").len(),
            2
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_controller_name_with_letters_fails_its_csrows() {
        let root = std::env::temp_dir().join(format!("edac-odd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mc = root.join("devices/system/edac/mc/mc1a");
        for file in ["ce_count", "ce_noinfo_count", "ue_count", "ue_noinfo_count"] {
            write(&mc.join(file), "0\n");
        }
        let mut out = Vec::new();
        collector(&root).update(&mut out).unwrap();
        assert_eq!(
            samples(&out, "node_edac_correctable_errors_total"),
            [(vec!["1".to_owned()], 0.0)]
        );
        write(&mc.join("csrow0/ce_count"), "0\n");
        let error = collector(&root).update(&mut Vec::new()).unwrap_err();
        assert!(error.to_string().contains("csrow string didn't match"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn no_edac_is_an_empty_success() {
        let collector = collector(Path::new("/nonexistent"));
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        assert!(out.iter().all(|f| f.metrics.is_empty()));
    }
}
