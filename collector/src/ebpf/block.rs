//! `ebpf.block`: block I/O latency, queue time and request size per disk and operation.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use aya::maps::{Array, IterableMap as _, MapData, PerCpuArray};
use collector_common::{
    BlockHistogramSlot, CpuBlockCounters, KernelLayout, Log2Histogram,
    block::{BLOCK_OP_NAMES, HISTOGRAM_WAYS, INFLIGHT_WAYS},
    layout::UNKNOWN_OFFSET,
};

use super::reader::{EbpfCollector, MapReader};
use crate::{
    collector::{BuildContext, Collector, CollectorSpec, KernelPart},
    ebpf::runtime::{
        ConfigureContext, EbpfRuntime, Hook, HookType, ObjectSettings,
        batch::BatchReader,
        histogram::{self, BucketRange},
        layout::block_dev_path_unknown,
        tracepoint_fields,
    },
    hook,
    metrics::MetricFamily,
    read,
};

pub static BLOCK_RQ_INSERT: Hook = hook!("block" / "block_rq_insert",
    requires: |layout, hook_type| match hook_type {
        HookType::Tracepoint => {
            tracepoint_fields(&[layout.tp_block_rq_dev, layout.tp_block_rq_sector])
        }
        _ => request_offsets(layout),
    },
    configure: size_arrays,
);
pub static BLOCK_RQ_ISSUE: Hook = hook!("block" / "block_rq_issue",
    requires: |layout, hook_type| match hook_type {
        HookType::Tracepoint => tracepoint_fields(&[
            layout.tp_block_rq_dev,
            layout.tp_block_rq_sector,
            layout.tp_block_rq_bytes,
            layout.tp_block_rq_rwbs,
        ]),
        _ => request_offsets(layout),
    },
    configure: size_arrays,
);
pub static BLOCK_RQ_COMPLETE: Hook = hook!("block" / "block_rq_complete",
    requires: |layout, hook_type| match hook_type {
        HookType::Tracepoint => tracepoint_fields(&[
            layout.tp_block_rq_complete_dev,
            layout.tp_block_rq_complete_sector,
        ]),
        _ => request_offsets(layout),
    },
    configure: size_arrays,
);

pub static HOOKS: [&Hook; 3] = [&BLOCK_RQ_INSERT, &BLOCK_RQ_ISSUE, &BLOCK_RQ_COMPLETE];

/// Request latency, issue → completion: 1.023 us (no NVMe or virtio device completes sooner;
/// faster ones, such as null_blk, are counted by that bucket) to 34.36 s, the first bound past
/// the block layer's default request time-out of 30 s.
const LATENCY_BUCKETS: BucketRange = BucketRange::slots(9, 34);
/// Queue time, insert → issue: 255 ns (a request dispatched at once still crosses the insert
/// and issue tracepoints and the scheduler between them) to 34.36 s, as latency.
const QUEUE_BUCKETS: BucketRange = BucketRange::slots(7, 34);
/// Request size: 511 bytes, which counts requests without data (flushes: the smallest with
/// data is one 512-byte sector), to 4 GiB - 1, the largest the kernel's 32-bit length holds.
const SIZE_BUCKETS: BucketRange = BucketRange::slots(8, 31);

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "ebpf.block",
    default_enabled: true,
    flags: &[],
    kernel: Some(&KernelPart {
        hooks: &HOOKS,
        configure: None,
    }),
    build,
};

/// Only issue reads the request, but the three key requests by pointer in the BTF and raw
/// flavours and by (dev, sector) in the classic one: they fall back together, or completions
/// would never match their issue (the reader refuses a mix).
fn request_offsets(layout: &KernelLayout) -> Option<&'static str> {
    let unknown = |offset: u32| offset == UNKNOWN_OFFSET;
    (unknown(layout.request_cmd_flags)
        || unknown(layout.request_data_len)
        || block_dev_path_unknown(layout))
    .then_some("struct request offsets unknown (no kernel BTF)")
}

/// Sizes the in-flight and histogram arrays for the disks in sysfs, or the in-flight one as
/// `--ebpf.block-inflight-slots` says.
fn size_arrays(
    context: &ConfigureContext<'_>,
    settings: &mut ObjectSettings,
) -> anyhow::Result<()> {
    let sets = ArraySets::for_disks(context.sysfs)
        .with_inflight_slots(context.options.block_inflight_slots);
    settings.global("BLOCK_INFLIGHT_SET_BITS", sets.inflight.ilog2());
    settings.global("BLOCK_HISTOGRAM_SET_BITS", sets.histograms.ilog2());
    settings.map_size("BLOCK_INFLIGHT", sets.inflight_slots());
    settings.map_size("BLOCK_HISTOGRAMS", sets.histogram_slots());
    settings.map_size("BLOCK_HISTOGRAM_SLOTS_USED", sets.histogram_slots());
    Ok(())
}

struct BlockMaps {
    histograms: PerCpuArray<MapData, BlockHistogramSlot>,
    slots_used: Array<MapData, u32>,
    slots_used_reader: BatchReader<u32, u32>,
    counters: PerCpuArray<MapData, CpuBlockCounters>,
    devices: DeviceNames,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    EbpfCollector::build(context, &HOOKS, HOOKS.to_vec(), |runtime| {
        let slots_used: Array<MapData, u32> =
            runtime.take_map("BLOCK_HISTOGRAM_SLOTS_USED")?.try_into()?;
        Ok(BlockMaps {
            histograms: runtime.take_map("BLOCK_HISTOGRAMS")?.try_into()?,
            slots_used_reader: BatchReader::new(slots_used.map())?,
            slots_used,
            counters: runtime.take_map("BLOCK_COUNTERS")?.try_into()?,
            devices: DeviceNames::new(context.sys_path("dev/block")),
        })
    })
}

/// The histograms of one (device, operation) label set, summed over CPUs (and over partitions
/// when the kernel reported partitions).
#[derive(Default)]
struct Totals {
    latency: Option<Log2Histogram>,
    queue: Option<Log2Histogram>,
    size: Option<Log2Histogram>,
}

fn add(total: &mut Option<Log2Histogram>, histogram: &Log2Histogram) {
    total.get_or_insert(Log2Histogram::EMPTY).merge(histogram);
}

impl MapReader for BlockMaps {
    fn read(&self, runtime: &EbpfRuntime, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        // Latency and size need issue and completion; queue time also needs insert. All with the
        // same hook type: BTF/raw programs key requests by pointer, classic ones by (dev, sector),
        // so a mix would never match an issue to its completion.
        let issue = runtime.attached(&BLOCK_RQ_ISSUE);
        let timed = issue.is_some() && issue == runtime.attached(&BLOCK_RQ_COMPLETE);
        let queued = timed && issue == runtime.attached(&BLOCK_RQ_INSERT);
        // Backstop: `request_offsets` keeps the three on one flavour when the request offsets are
        // unknown, but a kernel may still refuse one program's flavour and not the other's.
        if !timed && issue.is_some() && runtime.attached(&BLOCK_RQ_COMPLETE).is_some() {
            anyhow::bail!(
                "block_rq_issue and block_rq_complete attached with different hook types; their requests cannot be matched"
            );
        }

        let mut totals: BTreeMap<(String, &'static str), Totals> = BTreeMap::new();
        let used = self
            .slots_used_reader
            .read(self.slots_used.map())
            .context("reading BLOCK_HISTOGRAM_SLOTS_USED")?;
        for (index, _) in used.iter().filter(|(_, used)| used[0] != 0) {
            let per_cpu = self
                .histograms
                .get(&index, 0)
                .context("reading BLOCK_HISTOGRAMS")?;
            // Each CPU fills a set's slots in its own order: a slot's copies may hold different
            // pairs, and a pair may be in several slots.
            for slot in per_cpu.iter().filter(|slot| slot.in_use != 0) {
                let device = self.devices.name(slot.key.dev);
                let operation = BLOCK_OP_NAMES
                    .get(slot.key.op as usize)
                    .copied()
                    .unwrap_or("other");
                let total = totals.entry((device, operation)).or_default();
                add(&mut total.latency, &slot.histograms.latency);
                add(&mut total.queue, &slot.histograms.queue);
                add(&mut total.size, &slot.histograms.size);
            }
        }

        if timed {
            let mut latency = MetricFamily::histogram(
                "ebpf_block_rq_latency_seconds",
                "Block I/O request latency from issue to the device to completion, by disk (as in /proc/diskstats) and operation.",
            );
            let mut size = MetricFamily::histogram(
                "ebpf_block_rq_size_bytes",
                "Size of block I/O requests at issue, by disk and operation.",
            );
            let mut queue = MetricFamily::histogram(
                "ebpf_block_rq_queue_seconds",
                "Time block I/O requests waited in the I/O scheduler queue, from insert to issue (requests issued directly are not counted).",
            );
            let latency_range = runtime.histogram_range(LATENCY_BUCKETS);
            let size_range = runtime.histogram_range(SIZE_BUCKETS);
            let queue_range = runtime.histogram_range(QUEUE_BUCKETS);
            for ((device, operation), total) in &totals {
                let labels = [("device", device.as_str()), ("operation", *operation)];
                if let Some(h) = &total.latency {
                    latency
                        .push_histogram(labels, histogram::to_prometheus(h, 1e-9, latency_range));
                }
                if let Some(h) = &total.size {
                    size.push_histogram(labels, histogram::to_prometheus(h, 1.0, size_range));
                }
                if let Some(h) = total.queue.as_ref().filter(|h| h.count() > 0) {
                    queue.push_histogram(labels, histogram::to_prometheus(h, 1e-9, queue_range));
                }
            }
            out.push(latency);
            out.push(size);
            if queued {
                out.push(queue);
            }
        }

        let counters = self.counters.get(&0, 0).context("reading BLOCK_COUNTERS")?;
        let (histogram_full, inflight_full) = counters.iter().fold((0u64, 0u64), |(h, i), c| {
            (h + c.histogram_slots_taken, i + c.inflight_displaced)
        });
        let mut dropped = MetricFamily::counter(
            "ebpf_block_rq_dropped_total",
            "Block I/O requests not recorded for want of a slot in a kernel map: histograms (too many disk/operation pairs) or in-flight requests (issued requests displaced before completion by others that hash alike).",
        );
        dropped.push([("map", "histograms")], histogram_full as f64);
        dropped.push([("map", "inflight")], inflight_full as f64);
        out.push(dropped);
        Ok(())
    }
}

/// How many sets the kernel's block arrays get (see collector-ebpf/src/block.rs): powers of two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArraySets {
    /// `BLOCK_INFLIGHT`, `INFLIGHT_WAYS` slots each.
    pub inflight: u32,
    /// `BLOCK_HISTOGRAMS`, `HISTOGRAM_WAYS` slots each.
    pub histograms: u32,
}

impl ArraySets {
    /// Sized from the disks in `sysfs`/block (see the two functions below).
    pub fn for_disks(sysfs: &Path) -> Self {
        let disks = subdirectories(&sysfs.join("block"));
        Self {
            inflight: inflight_sets(&disks),
            histograms: histogram_sets(disks.len()),
        }
    }

    /// With `slots` in-flight slots instead, if given: rounded up to whole sets, a power of two.
    pub fn with_inflight_slots(self, slots: Option<u32>) -> Self {
        match slots {
            Some(slots) => Self {
                inflight: slots.div_ceil(INFLIGHT_WAYS).next_power_of_two(),
                ..self
            },
            None => self,
        }
    }

    pub fn inflight_slots(self) -> u32 {
        self.inflight * INFLIGHT_WAYS
    }

    pub fn histogram_slots(self) -> u32 {
        self.histograms * HISTOGRAM_WAYS
    }
}

/// The entries of `dir`, none when it cannot be read.
fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Sets of the in-flight array: at least one per request the disks can have, counting a request
/// per tag of each hardware queue (`mq/*/nr_tags`) and per scheduler request
/// (`queue/nr_requests`), so at least twice as many slots as requests, for disks added later.
/// With two slots a set, a request is displaced only when three in flight at once hash alike.
/// Between 4096 and 131072 sets (56 bytes a slot: 0.4 to 14 MiB of kernel memory).
fn inflight_sets(disks: &[PathBuf]) -> u32 {
    let number = |path: PathBuf| read::uint_from_file(&path).unwrap_or(0);
    let requests: u64 = disks
        .iter()
        .map(|disk| {
            let tags: u64 = subdirectories(&disk.join("mq"))
                .into_iter()
                .map(|queue| number(queue.join("nr_tags")))
                .sum();
            tags + number(disk.join("queue/nr_requests"))
        })
        .sum();
    requests.next_power_of_two().clamp(1 << 12, 1 << 17) as u32
}

/// Sets of the histogram array: at least half a set per (disk, operation) the disks could have,
/// so at least twice as many slots as pairs, for disks added later; most disks only ever read
/// and write. Between 16 and 1024 sets (a slot is ~1 KiB per CPU: 64 KiB to 4 MiB per CPU).
fn histogram_sets(disks: usize) -> u32 {
    (disks * BLOCK_OP_NAMES.len())
        .div_ceil(2)
        .next_power_of_two()
        .clamp(16, 1024) as u32
}

/// Kernel device numbers → the names /proc/diskstats uses, through sysfs, partitions folded
/// into their disk. Cached: a device number keeps its name while the disk exists.
struct DeviceNames {
    dev_block: PathBuf,
    cache: Mutex<HashMap<u32, String>>,
}

impl DeviceNames {
    fn new(dev_block: PathBuf) -> Self {
        Self {
            dev_block,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `dev` in the kernel's internal encoding (`major << 20 | minor`). A disk that is gone
    /// keeps its `major:minor` as its name.
    fn name(&self, dev: u32) -> String {
        let mut cache = self.cache.lock().expect("device cache poisoned");
        if let Some(name) = cache.get(&dev) {
            return name.clone();
        }
        let major_minor = format!("{}:{}", dev >> 20, dev & 0xf_ffff);
        match disk_name(&self.dev_block.join(&major_minor)) {
            Some(name) => {
                cache.insert(dev, name.clone());
                name
            }
            None => major_minor,
        }
    }
}

/// Name of the disk behind a `/sys/dev/block/M:m` link: the link target's last component, or
/// its parent's for a partition; `!` in sysfs names is `/` in /proc/diskstats (`cciss/c0d0`).
fn disk_name(link: &Path) -> Option<String> {
    let device = std::fs::canonicalize(link).ok()?;
    let disk = if link.join("partition").exists() {
        device.parent()?
    } else {
        device.as_path()
    };
    Some(disk.file_name()?.to_str()?.replace('!', "/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_the_arrays_for_every_tag_and_operation_of_every_disk() {
        let sysfs = std::env::temp_dir().join(format!("block-tags-{}", std::process::id()));
        for (disk, queues, tags, requests) in [("nvme0n1", 8, 1023, 256), ("vda", 1, 128, 256)] {
            for queue in 0..queues {
                let dir = sysfs.join(format!("block/{disk}/mq/{queue}"));
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("nr_tags"), format!("{tags}\n")).unwrap();
            }
            let dir = sysfs.join(format!("block/{disk}/queue"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("nr_requests"), format!("{requests}\n")).unwrap();
        }
        for loop_disk in 0..8 {
            std::fs::create_dir_all(sysfs.join(format!("block/loop{loop_disk}"))).unwrap();
        }
        let sets = ArraySets::for_disks(&sysfs);
        // 8824 requests; 10 disks of 5 operations, 25 sets at 2 slots a pair.
        assert_eq!(sets.inflight, 16384);
        assert_eq!(sets.inflight_slots(), 32768);
        assert_eq!(sets.histograms, 32);
        assert_eq!(sets.histogram_slots(), 128);
        assert_eq!(sets.with_inflight_slots(Some(2)).inflight_slots(), 2);
        assert_eq!(sets.with_inflight_slots(Some(5000)).inflight_slots(), 8192);
        assert_eq!(sets.with_inflight_slots(None), sets);
        std::fs::remove_dir_all(&sysfs).unwrap();
        assert_eq!(
            ArraySets::for_disks(&sysfs),
            ArraySets {
                inflight: 4096,
                histograms: 16
            },
            "no disks: the floors"
        );
    }

    #[test]
    fn exports_the_bucket_ranges_docs_series_cost_states() {
        let bounds = |range, unit| {
            let buckets = histogram::to_prometheus(&Log2Histogram::EMPTY, unit, range).buckets;
            let bound = |bucket: Option<&(f64, u64)>| bucket.map(|(le, _)| *le);
            (bound(buckets.first()), bound(buckets.last()), buckets.len())
        };
        let (lowest, highest) = (Some(1.023e-6), Some(34.359738367));
        assert_eq!(bounds(LATENCY_BUCKETS, 1e-9), (lowest, highest, 26));
        assert_eq!(bounds(QUEUE_BUCKETS, 1e-9), (Some(2.55e-7), highest, 28));
        assert_eq!(
            bounds(SIZE_BUCKETS, 1.0),
            (Some(511.0), Some(4_294_967_295.0), 24)
        );
    }

    #[test]
    fn names_disks_and_folds_partitions() {
        let root = std::env::temp_dir().join(format!("block-names-{}", std::process::id()));
        let disk = root.join("devices/virtual/block/vdz");
        let partition = disk.join("vdz1");
        let weird = root.join("devices/virtual/block/cciss!c0d0");
        for dir in [&partition, &weird] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(partition.join("partition"), "1\n").unwrap();
        let dev_block = root.join("dev/block");
        std::fs::create_dir_all(&dev_block).unwrap();
        std::os::unix::fs::symlink(&disk, dev_block.join("254:16")).unwrap();
        std::os::unix::fs::symlink(&partition, dev_block.join("254:17")).unwrap();
        std::os::unix::fs::symlink(&weird, dev_block.join("104:0")).unwrap();

        let names = DeviceNames::new(dev_block);
        assert_eq!(names.name(254 << 20 | 16), "vdz");
        assert_eq!(names.name(254 << 20 | 17), "vdz");
        assert_eq!(names.name(104 << 20), "cciss/c0d0");
        assert_eq!(names.name(7 << 20 | 99), "7:99");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn block_hooks_fall_back_together_without_request_offsets() {
        let mut layout = KernelLayout::UNKNOWN;
        layout.tp_block_rq_dev = 8;
        layout.tp_block_rq_sector = 16;
        layout.tp_block_rq_bytes = 24;
        layout.tp_block_rq_rwbs = 28;
        layout.tp_block_rq_complete_dev = 8;
        layout.tp_block_rq_complete_sector = 16;
        for hook in HOOKS {
            for hook_type in [HookType::BtfTracepoint, HookType::RawTracepoint] {
                assert!((hook.requires)(&layout, hook_type).is_some(), "{hook:?}");
            }
            assert_eq!((hook.requires)(&layout, HookType::Tracepoint), None);
        }

        // With the offsets, all three may use the BTF and raw flavours.
        layout.request_cmd_flags = 24;
        layout.request_data_len = 48;
        layout.request_part = 56;
        layout.block_device_bd_dev = 4;
        for hook in HOOKS {
            assert_eq!((hook.requires)(&layout, HookType::BtfTracepoint), None);
        }
    }
}
