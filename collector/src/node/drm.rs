//! `drm`: AMD GPUs (the `amdgpu` driver) of /sys/class/drm/card<N>/device/*: busy percentage,
//! VRAM and GTT sizes and use, as procfs' `ClassDRMCardAMDGPUStats` reads them.
//!
//! Not obvious: only `card0` to `card9` are looked at (upstream's glob is `card[0-9]`); a card
//! is AMD when the first 128 bytes of its `device/uevent` contain `DRIVER=amdgpu`; a card whose
//! `uevent` cannot be read fails the scrape unless the error is ENODATA; a missing attribute
//! is 0. A number that does not parse crashes node_exporter (a nil pointer); here it fails the
//! scrape, naming the file.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    goparse,
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "drm",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

struct DrmCollector {
    class: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(DrmCollector {
        class: context.sys_path("class/drm"),
    }))
}

/// `(file under device/, metric, help)` of the numeric attributes, 0 when missing.
const NUMBERS: &[(&str, &str, &str)] = &[
    (
        "gpu_busy_percent",
        "gpu_busy_percent",
        "How busy the GPU is as a percentage.",
    ),
    (
        "mem_info_gtt_total",
        "memory_gtt_size_bytes",
        "The size of the graphics translation table (GTT) block in bytes.",
    ),
    (
        "mem_info_gtt_used",
        "memory_gtt_used_bytes",
        "The used amount of the graphics translation table (GTT) block in bytes.",
    ),
    (
        "mem_info_vram_total",
        "memory_vram_size_bytes",
        "The size of VRAM in bytes.",
    ),
    (
        "mem_info_vram_used",
        "memory_vram_used_bytes",
        "The used amount of VRAM in bytes.",
    ),
    (
        "mem_info_vis_vram_total",
        "memory_vis_vram_size_bytes",
        "The size of visible VRAM in bytes.",
    ),
    (
        "mem_info_vis_vram_used",
        "memory_vis_vram_used_bytes",
        "The used amount of visible VRAM in bytes.",
    ),
];

/// `(file under device/, card_info label)` of the text attributes, empty when missing.
const TEXTS: &[(&str, &str)] = &[
    ("mem_info_vram_vendor", "memory_vendor"),
    (
        "power_dpm_force_performance_level",
        "power_performance_level",
    ),
    ("unique_id", "unique_id"),
];

/// One amdgpu card: [`NUMBERS`] and [`TEXTS`] values in order.
#[derive(Debug, PartialEq)]
struct Card {
    name: String,
    numbers: Vec<u64>,
    texts: Vec<String>,
}

/// procfs' `parseClassDRMAMDGPUCard`: `None` for a card of another driver.
fn read_card(card: &Path) -> anyhow::Result<Option<Card>> {
    let uevent = card.join("device/uevent");
    let uevent =
        read::sys_read_file(&uevent).with_context(|| format!("reading {}", uevent.display()))?;
    if !uevent.contains("DRIVER=amdgpu") {
        return Ok(None);
    }
    // procfs resolves the device link (for fields it does not export); failing it fails.
    let device = card.join("device");
    std::fs::canonicalize(&device).with_context(|| format!("resolving {}", device.display()))?;
    let mut numbers = Vec::with_capacity(NUMBERS.len());
    for (file, _, _) in NUMBERS {
        let path = device.join(file);
        let number = match read::sys_read_file(&path) {
            Err(_) => 0,
            Ok(value) => goparse::parse_uint(&value, 0, 64)
                .with_context(|| format!("{}: not a number: {value:?}", path.display()))?,
        };
        numbers.push(number);
    }
    let texts = TEXTS
        .iter()
        .map(|(file, _)| read::sys_read_file(&device.join(file)).unwrap_or_default())
        .collect();
    let name = card
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Some(Card {
        name,
        numbers,
        texts,
    }))
}

impl Collector for DrmCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let paths = read::glob(
            &self.class,
            |name| matches!(name, [b'c', b'a', b'r', b'd', digit] if digit.is_ascii_digit()),
        )
        .unwrap_or_default();
        let mut cards = Vec::new();
        for path in paths {
            match read_card(&path) {
                Ok(Some(card)) => cards.push(card),
                Ok(None) => {}
                Err(error)
                    if error.chain().any(|cause| {
                        cause
                            .downcast_ref::<std::io::Error>()
                            .is_some_and(|e| e.raw_os_error() == Some(libc::ENODATA))
                    }) => {}
                Err(error) => return Err(error),
            }
        }
        let mut info = MetricFamily::gauge("node_drm_card_info", "Card information");
        let mut numbers: Vec<MetricFamily> = NUMBERS
            .iter()
            .map(|(_, metric, help)| MetricFamily::gauge(format!("node_drm_{metric}"), *help))
            .collect();
        for card in &cards {
            let labels = std::iter::once(("card", card.name.as_str()))
                .chain(
                    TEXTS
                        .iter()
                        .zip(&card.texts)
                        .map(|((_, label), value)| (*label, value.as_str())),
                )
                .chain([("vendor", "amd")]);
            info.push(labels, 1.0);
            for (family, value) in numbers.iter_mut().zip(&card.numbers) {
                family.push([("card", card.name.as_str())], *value as f64);
            }
        }
        out.push(info);
        out.extend(numbers);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn reads_amdgpu_cards_only() {
        let class = std::env::temp_dir().join(format!("drm-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&class);
        for (file, value) in [
            ("card0/device/uevent", "DRIVER=amdgpu\nPCI_CLASS=30000\n"),
            ("card0/device/gpu_busy_percent", "12\n"),
            ("card0/device/mem_info_vram_total", "0x400000000\n"),
            ("card0/device/mem_info_vram_vendor", "hynix\n"),
            ("card1/device/uevent", "DRIVER=nvidia\n"),
            ("card10/device/uevent", "DRIVER=amdgpu\n"),
            ("card0-DP-1/status", "connected\n"),
        ] {
            write(&class.join(file), value);
        }
        let collector = DrmCollector {
            class: class.clone(),
        };
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        let family = |name: &str| out.iter().find(|f| f.name == name).unwrap();
        let info = family("node_drm_card_info");
        assert_eq!(info.metrics.len(), 1);
        assert_eq!(
            info.metrics[0].labels,
            [
                ("card".to_owned(), "card0".to_owned()),
                ("memory_vendor".to_owned(), "hynix".to_owned()),
                ("power_performance_level".to_owned(), String::new()),
                ("unique_id".to_owned(), String::new()),
                ("vendor".to_owned(), "amd".to_owned()),
            ]
        );
        assert_eq!(
            family("node_drm_memory_vram_size_bytes").metrics[0].value,
            Value::Scalar(17179869184.0)
        );
        assert_eq!(
            family("node_drm_memory_gtt_used_bytes").metrics[0].value,
            Value::Scalar(0.0)
        );

        // A garbled number fails the scrape instead of crashing.
        write(&class.join("card0/device/gpu_busy_percent"), "busy\n");
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(
            format!("{error:#}").contains("gpu_busy_percent"),
            "{error:#}"
        );

        // A card without a uevent fails too (not ENODATA).
        std::fs::remove_dir_all(class.join("card0")).unwrap();
        std::fs::create_dir_all(class.join("card2")).unwrap();
        assert!(collector.update(&mut Vec::new()).is_err());
        std::fs::remove_dir_all(&class).unwrap();

        // No class folder: nothing, successfully.
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        assert!(out.iter().all(|f| f.metrics.is_empty()));
    }
}
