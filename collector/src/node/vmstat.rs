//! `vmstat`: the /proc/vmstat fields matching `--collector.vmstat.fields`, untyped, as
//! `node_vmstat_<field>`.
use std::sync::Arc;

use anyhow::Context as _;
use regex::Regex;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    flags::FlagSpec,
    metrics::{MetricFamily, MetricType},
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "vmstat",
    default_enabled: true,
    flags: &[FlagSpec::value(
        "collector.vmstat.fields",
        Some("^(oom_kill|pgpg|pswp|pg.*fault).*"),
        "Regexp of fields to return for vmstat collector.",
    )],
    kernel: None,
    build,
};

struct VmstatCollector {
    file: read::KeptFile,
    /// `None` for an empty pattern, which (as Go's empty regexp) matches every field.
    fields: Option<Regex>,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(VmstatCollector {
        file: read::KeptFile::new(context.proc_path("vmstat")),
        fields: context.flags.regex("collector.vmstat.fields")?,
    }))
}

/// Every line's value must parse (upstream parses it before filtering); lines are
/// `name value`.
fn parse(text: &str) -> anyhow::Result<Vec<(&str, f64)>> {
    let mut values = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(name), Some(value)) = (fields.next(), fields.next()) else {
            anyhow::bail!("malformed line {line:?}");
        };
        let value: f64 = value
            .parse()
            .with_context(|| format!("{name}: bad number {value:?}"))?;
        values.push((name, value));
    }
    Ok(values)
}

impl Collector for VmstatCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let text = self.file.to_string()?;
        let values = parse(&text).with_context(|| self.file.path().display().to_string())?;
        for (name, value) in values {
            if self.fields.as_ref().is_some_and(|re| !re.is_match(name)) {
                continue;
            }
            out.push(
                MetricFamily::new(
                    format!("node_vmstat_{name}"),
                    format!("/proc/vmstat information field {name}."),
                    MetricType::Untyped,
                )
                .with_value(value),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_name_value_lines() {
        assert_eq!(
            parse("nr_free_pages 123\npgfault 18446744073709551615\n").unwrap(),
            [
                ("nr_free_pages", 123.0),
                ("pgfault", 18446744073709551615.0)
            ]
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        for text in ["pgfault\n", "pgfault x\n", "\n"] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }
}
