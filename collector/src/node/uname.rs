//! `uname`: uname(2) as labels of `node_uname_info`.
use std::{ffi::CStr, sync::Arc};

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    metrics::MetricFamily,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "uname",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct UnameCollector;

fn build(_: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(UnameCollector))
}

fn field(raw: &[libc::c_char]) -> String {
    // SAFETY: uname(2) NUL-terminates every field within its array.
    unsafe { CStr::from_ptr(raw.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

impl Collector for UnameCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        // SAFETY: a C struct of integers and arrays, for which all zeroes is a valid value.
        let mut buf: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: buf is a properly sized out-parameter.
        if unsafe { libc::uname(&mut buf) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        out.push(
            MetricFamily::gauge(
                "node_uname_info",
                "Labeled system information as provided by the uname system call.",
            )
            .with(
                [
                    ("sysname", field(&buf.sysname)),
                    ("release", field(&buf.release)),
                    ("version", field(&buf.version)),
                    ("machine", field(&buf.machine)),
                    ("nodename", field(&buf.nodename)),
                    ("domainname", field(&buf.domainname)),
                ],
                1.0,
            ),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_this_kernel() {
        let mut out = Vec::new();
        UnameCollector.update(&mut out).unwrap();
        let labels = &out[0].metrics[0].labels;
        assert_eq!(labels[0], ("sysname".to_owned(), "Linux".to_owned()));
        assert_eq!(labels.len(), 6);
    }
}
