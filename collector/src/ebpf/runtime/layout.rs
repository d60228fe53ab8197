//! Kernel layout discovery. Rust eBPF cannot emit CO-RE relocations, so the offsets the programs
//! need come from the running kernel: struct members from its BTF, classic tracepoint fields
//! from tracefs `format` files. Nothing is hard-coded; what cannot be found stays
//! `UNKNOWN_OFFSET` and the hooks that need it are not attached.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use collector_common::{KernelLayout, layout::UNKNOWN_OFFSET};

use super::{
    HookType,
    btf::{Btf, KIND_PTR, KIND_STRUCT, KIND_TYPEDEF, KIND_UNION, Type},
};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Where tracefs is mounted, as aya looks for it: a non-empty `/sys/kernel/tracing`, else the
/// legacy debugfs location.
pub fn tracefs_root() -> Option<PathBuf> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.join("events").is_dir())
}

/// What start-up learns about the running kernel, from one read of its BTF and tracefs.
#[derive(Debug)]
pub struct Discovery {
    pub layout: KernelLayout,
    /// `None` without kernel BTF or without `enum skb_drop_reason` (before 5.17).
    pub drop_reasons: Option<DropReasons>,
    /// What could not be read, one line each, for the log.
    pub problems: Vec<String>,
}

/// Fills in a layout and the drop reasons from the kernel's BTF (read once, here) and tracefs.
pub fn discover(btf_path: &Path, tracefs: Option<&Path>) -> Discovery {
    let mut layout = KernelLayout::UNKNOWN;
    let mut drop_reasons = None;
    let mut problems = Vec::new();
    match Btf::from_file(btf_path) {
        Ok(btf) => {
            if let Err(e) = fill_from_btf(&btf, &mut layout) {
                problems.push(format!("kernel BTF {}: {e:#}", btf_path.display()));
            }
            // Independent of the scheduler facts: one subsystem's gap must not hide another's.
            if let Err(e) = fill_block_from_btf(&btf, &mut layout) {
                problems.push(format!("kernel BTF {} (block): {e:#}", btf_path.display()));
            }
            fill_net_from_btf(&btf, &mut layout);
            match skb_drop_reasons(&btf) {
                Ok(reasons) => drop_reasons = Some(reasons),
                Err(e) => problems.push(format!(
                    "kernel BTF {}: drop reasons unknown: {e:#}",
                    btf_path.display()
                )),
            }
        }
        Err(e) => problems.push(format!(
            "kernel BTF unavailable at {} ({e}): tp_btf and raw_tp scheduler hooks need it",
            btf_path.display()
        )),
    }
    match tracefs {
        Some(root) => {
            if let Err(e) = fill_from_tracefs(root, &mut layout) {
                problems.push(format!("tracefs {}: {e:#}", root.display()));
            }
        }
        None => problems.push(
            "tracefs not mounted (mount -t tracefs nodev /sys/kernel/tracing): classic tracepoint \
             fallbacks unavailable"
                .to_owned(),
        ),
    }
    Discovery {
        layout,
        drop_reasons,
        problems,
    }
}

fn fill_from_btf(btf: &Btf, layout: &mut KernelLayout) -> anyhow::Result<()> {
    let task = btf.find("task_struct", KIND_STRUCT)?;
    layout.task_pid = member_offset(btf, &task, "pid")?.context("task_struct has no pid")?;
    // `__state` since 5.14, `state` before.
    layout.task_state = match member_offset(btf, &task, "__state")? {
        Some(offset) => offset,
        None => member_offset(btf, &task, "state")?.unwrap_or(UNKNOWN_OFFSET),
    };
    let member = |parent: &Type, name: &str| member_offset(btf, parent, name).ok().flatten();
    // `task->se.cfs_rq->rq`: `cfs_rq.rq` exists with CONFIG_FAIR_GROUP_SCHED.
    let run_queue = || {
        let se = member(&task, "se")?;
        let entity = btf.find("sched_entity", KIND_STRUCT).ok()?;
        let (entity_cfs_rq, cfs_rq) = pointer_member(btf, &entity, "cfs_rq", "cfs_rq")?;
        let (cfs_rq_rq, rq) = pointer_member(btf, &cfs_rq, "rq", "rq")?;
        Some((se + entity_cfs_rq, cfs_rq_rq, rq))
    };
    if let Some((task_se_cfs_rq, cfs_rq_rq, rq)) = run_queue()
        && let Some(clock_task) = member(&rq, "clock_task")
    {
        layout.task_se_cfs_rq = task_se_cfs_rq;
        layout.cfs_rq_rq = cfs_rq_rq;
        layout.rq_clock_task = clock_task;
    }
    // `task->cgroups->dfl_cgrp->kn->id`.
    let cgroup_id = || {
        let (cgroups, css_set) = pointer_member(btf, &task, "cgroups", "css_set")?;
        let (dfl_cgrp, cgroup) = pointer_member(btf, &css_set, "dfl_cgrp", "cgroup")?;
        let (kn, kernfs_node) = pointer_member(btf, &cgroup, "kn", "kernfs_node")?;
        Some((cgroups, dfl_cgrp, kn, member(&kernfs_node, "id")?))
    };
    if let Some((cgroups, dfl_cgrp, kn, id)) = cgroup_id() {
        layout.task_cgroups = cgroups;
        layout.css_set_dfl_cgrp = dfl_cgrp;
        layout.cgroup_kn = kn;
        layout.kernfs_node_id = id;
    }
    // btf_trace_sched_switch is `void (*)(void *, bool, struct task_struct *, struct
    // task_struct *[, unsigned int prev_state])`.
    let parameters = tracepoint_parameter_count(btf, "sched_switch")?;
    layout.sched_switch_has_prev_state = u32::from(parameters >= 5);
    Ok(())
}

/// `struct request` and the path from it to its disk's device number. Each path is kept only if
/// every member on it exists; the programs take the first complete one.
fn fill_block_from_btf(btf: &Btf, layout: &mut KernelLayout) -> anyhow::Result<()> {
    let request = btf.find("request", KIND_STRUCT)?;
    let member = |parent: &Type, name: &str| member_offset(btf, parent, name).ok().flatten();
    layout.request_cmd_flags = member(&request, "cmd_flags").context("request has no cmd_flags")?;
    layout.request_data_len =
        member(&request, "__data_len").context("request has no __data_len")?;
    layout.request_start_time_ns = member(&request, "start_time_ns").unwrap_or(UNKNOWN_OFFSET);
    if let Ok(gendisk) = btf.find("gendisk", KIND_STRUCT)
        && let (Some(major), Some(first_minor)) =
            (member(&gendisk, "major"), member(&gendisk, "first_minor"))
    {
        layout.gendisk_major = major;
        layout.gendisk_first_minor = first_minor;
        // 5.15+: request->q->disk.
        if let Ok(queue) = btf.find("request_queue", KIND_STRUCT)
            && let (Some(q), Some(disk)) = (member(&request, "q"), member(&queue, "disk"))
        {
            layout.request_q = q;
            layout.request_queue_disk = disk;
        }
        // Before 5.17: request->rq_disk.
        if let Some(rq_disk) = member(&request, "rq_disk") {
            layout.request_rq_disk = rq_disk;
        }
    }
    // `request.part` is a `struct block_device *` since 5.11 (a `struct hd_struct *` before,
    // where `bd_dev` would read another field).
    if let Some((part, block_device)) = pointer_member(btf, &request, "part", "block_device")
        && let Some(bd_dev) = member(&block_device, "bd_dev")
    {
        layout.request_part = part;
        layout.block_device_bd_dev = bd_dev;
    }
    if block_dev_path_unknown(layout) {
        bail!("no path from struct request to its device number");
    }
    Ok(())
}

/// Whether no path from `struct request` to its disk's device number is known.
pub fn block_dev_path_unknown(layout: &KernelLayout) -> bool {
    let unknown = |offset: u32| offset == UNKNOWN_OFFSET;
    let via_queue = !unknown(layout.request_q) && !unknown(layout.request_queue_disk);
    let via_gendisk =
        (via_queue || !unknown(layout.request_rq_disk)) && !unknown(layout.gendisk_major);
    let via_part = !unknown(layout.request_part) && !unknown(layout.block_device_bd_dev);
    !via_gendisk && !via_part
}

/// Tracepoint argument lists that changed over kernel versions. A missing typedef leaves the
/// flag 0, which keeps the hook that needs it detached (`missing_for`).
fn fill_net_from_btf(btf: &Btf, layout: &mut KernelLayout) {
    // btf_trace_tcp_retransmit_skb: (void *, sk, skb[, int err]).
    layout.tcp_retransmit_skb_has_err =
        u32::from(tracepoint_parameter_count(btf, "tcp_retransmit_skb").is_ok_and(|n| n >= 4));
    // btf_trace_kfree_skb: (void *, skb, location[, enum skb_drop_reason reason[, rx_sk]]).
    layout.kfree_skb_has_reason =
        u32::from(tracepoint_parameter_count(btf, "kfree_skb").is_ok_and(|n| n >= 4));
    if let Some((pending, bit, width)) = loss_probe_fields(btf) {
        layout.icsk_pending = pending;
        layout.icsk_ca_state_bit = bit;
        layout.icsk_ca_state_width = width;
    }
}

/// `icsk_pending` (byte offset) and the `icsk_ca_state` bitfield (bit offset, width) of
/// `struct inet_connection_sock`, whose first member (`icsk_inet.sk`) is the `struct sock` the
/// tracepoint passes. `None` unless the program can read the state with one byte load: the
/// bitfield inside one byte. (`icsk_pending` has been a `__u8` since it exists.)
fn loss_probe_fields(btf: &Btf) -> Option<(u32, u32, u32)> {
    let icsk = btf.find("inet_connection_sock", KIND_STRUCT).ok()?;
    let pending = member_offset(btf, &icsk, "icsk_pending").ok()??;
    let (bit, width) = member_bits(btf, &icsk, "icsk_ca_state").ok()??;
    let in_one_byte = match width {
        0 => bit % 8 == 0, // a plain __u8 in some kernel: the whole byte
        width => bit % 8 + width <= 8,
    };
    in_one_byte.then_some((pending, bit, if width == 0 { 8 } else { width }))
}

/// Whether the `tcp_retransmit_skb` program attached as `hook_type` tells tail loss probes from
/// other retransmits on this kernel.
pub fn detects_loss_probes(layout: &KernelLayout, hook_type: HookType) -> bool {
    let known = layout.icsk_pending != UNKNOWN_OFFSET && layout.icsk_ca_state_bit != UNKNOWN_OFFSET;
    match hook_type {
        HookType::Tracepoint => known && layout.tp_tcp_retransmit_skb_skaddr != UNKNOWN_OFFSET,
        HookType::BtfTracepoint | HookType::RawTracepoint => known,
    }
}

/// The drop reasons of the running kernel.
#[derive(Debug)]
pub struct DropReasons {
    /// `enum skb_drop_reason` value → label, in value order.
    pub names: Vec<(u32, String)>,
    /// Entries of the per-reason array: `SKB_DROP_REASON_MAX`.
    pub array_size: u32,
}

/// Drop reasons of this kernel, `enum skb_drop_reason` from its BTF: value → label (the name
/// without `SKB_DROP_REASON_`, lower-cased), without `SKB_NOT_DROPPED_YET`/`SKB_CONSUMED` and the
/// `_MAX`/mask markers.
fn skb_drop_reasons(btf: &Btf) -> anyhow::Result<DropReasons> {
    let reasons = btf.find_enum("skb_drop_reason")?;
    let mut names = Vec::new();
    let mut max = None;
    for enumerator in btf.enumerators(&reasons)? {
        let (name, value) = enumerator?;
        let Ok(value) = u32::try_from(value) else {
            continue; // no reason of the core enum is negative or that large
        };
        if name == "SKB_DROP_REASON_MAX" {
            max = Some(value);
            continue;
        }
        let Some(label) = name.strip_prefix("SKB_DROP_REASON_") else {
            continue; // SKB_NOT_DROPPED_YET, SKB_CONSUMED
        };
        if label.ends_with("_MASK") || label.ends_with("_SHIFT") || value >= 1 << 16 {
            continue; // subsystem encoding markers, not reasons of the core enum
        }
        names.push((value, label.to_ascii_lowercase()));
    }
    let size = max.unwrap_or_else(|| names.iter().map(|(v, _)| v + 1).max().unwrap_or(1));
    names.retain(|(value, _)| *value < size);
    names.sort();
    Ok(DropReasons {
        names,
        array_size: size.max(1),
    })
}

/// The byte offset of member `name` of `parent` and the struct it points to, if it is a pointer
/// to `struct <pointee>`.
fn pointer_member(btf: &Btf, parent: &Type, name: &str, pointee: &str) -> Option<(u32, Type)> {
    let member = btf
        .members(parent)
        .ok()?
        .filter_map(Result::ok)
        .find(|m| m.name == name)?;
    let pointer = btf.resolve(member.type_id).ok()?;
    if pointer.kind != KIND_PTR {
        return None;
    }
    let target = btf.resolve_referenced(&pointer).ok()?;
    (target.kind == KIND_STRUCT && btf.type_name(&target).ok()? == pointee)
        .then_some((member.bit_offset / 8, target))
}

/// Byte offset of member `name`, looking through anonymous structs and unions.
fn member_offset(btf: &Btf, parent: &Type, name: &str) -> anyhow::Result<Option<u32>> {
    match member_bits(btf, parent, name)? {
        Some((_, width)) if width != 0 => bail!("{name} is a bitfield"),
        Some((bit_offset, _)) => Ok(Some(bit_offset / 8)),
        None => Ok(None),
    }
}

/// Bit offset and bitfield width (0: not a bitfield) of member `name`, looking through
/// anonymous structs and unions.
fn member_bits(btf: &Btf, parent: &Type, name: &str) -> anyhow::Result<Option<(u32, u32)>> {
    for member in btf.members(parent)? {
        let member = member?;
        if member.name == name {
            return Ok(Some((member.bit_offset, member.bitfield_size)));
        }
        if member.name.is_empty() {
            let inner = btf.resolve(member.type_id)?;
            if matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some((offset, width)) = member_bits(btf, &inner, name)?
            {
                return Ok(Some((member.bit_offset + offset, width)));
            }
        }
    }
    Ok(None)
}

fn tracepoint_parameter_count(btf: &Btf, tracepoint: &str) -> anyhow::Result<usize> {
    let typedef = format!("btf_trace_{tracepoint}");
    // typedef -> pointer -> function prototype
    let pointer = btf.referenced(&btf.find(&typedef, KIND_TYPEDEF)?)?;
    if pointer.kind != KIND_PTR {
        bail!("{typedef} is not a function pointer");
    }
    btf.parameter_count(&btf.referenced(&pointer)?)
        .with_context(|| format!("{typedef} does not lead to a function prototype"))
}

fn fill_from_tracefs(root: &Path, layout: &mut KernelLayout) -> anyhow::Result<()> {
    // Each event's format file is read and parsed once; one missing event or field must not hide
    // the others.
    let mut errors = Vec::new();
    let mut set = |event: &str, fields: &mut [(&mut u32, &str)]| match event_fields(root, event) {
        Ok(offsets) => {
            for (slot, field) in fields {
                match offsets.get(*field) {
                    Some(&offset) => **slot = offset,
                    None => errors.push(format!("{event} format: no field {field}")),
                }
            }
        }
        Err(e) => errors.push(format!("{e:#}")),
    };
    set(
        "sched/sched_switch",
        &mut [
            (&mut layout.tp_sched_switch_prev_pid, "prev_pid"),
            (&mut layout.tp_sched_switch_prev_state, "prev_state"),
            (&mut layout.tp_sched_switch_next_pid, "next_pid"),
        ],
    );
    set(
        "sched/sched_wakeup",
        &mut [(&mut layout.tp_sched_wakeup_pid, "pid")],
    );
    set(
        "sched/sched_wakeup_new",
        &mut [(&mut layout.tp_sched_wakeup_new_pid, "pid")],
    );
    set(
        "sched/sched_migrate_task",
        &mut [(&mut layout.tp_sched_migrate_task_dest_cpu, "dest_cpu")],
    );
    set(
        "irq/softirq_exit",
        &mut [(&mut layout.tp_softirq_vec, "vec")],
    );
    // block_rq_insert and block_rq_issue share the block_rq event class.
    set(
        "block/block_rq_issue",
        &mut [
            (&mut layout.tp_block_rq_dev, "dev"),
            (&mut layout.tp_block_rq_sector, "sector"),
            (&mut layout.tp_block_rq_bytes, "bytes"),
            (&mut layout.tp_block_rq_rwbs, "rwbs"),
        ],
    );
    set(
        "block/block_rq_complete",
        &mut [
            (&mut layout.tp_block_rq_complete_dev, "dev"),
            (&mut layout.tp_block_rq_complete_sector, "sector"),
        ],
    );
    set(
        "skb/kfree_skb",
        &mut [(&mut layout.tp_kfree_skb_reason, "reason")],
    );
    if let Ok(offsets) = event_fields(root, "tcp/tcp_retransmit_skb") {
        // `err` only since 6.12; its absence is normal before.
        if let Some(&err) = offsets.get("err") {
            layout.tp_tcp_retransmit_skb_err = err;
        }
        if let Some(&skaddr) = offsets.get("skaddr") {
            layout.tp_tcp_retransmit_skb_skaddr = skaddr;
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("; "))
    }
}

/// Field name → offset of one tracefs event (`events/<category>/<name>/format`).
fn event_fields(root: &Path, event: &str) -> anyhow::Result<HashMap<String, u32>> {
    let path = root.join("events").join(event).join("format");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(field_offsets(&text)
        .map(|(name, offset)| (name.to_owned(), offset))
        .collect())
}

/// The fields of a tracefs event `format` file and their offsets, from its
/// `field:<type> <name>; offset:<n>; size:<n>; signed:<n>;` lines (tab-separated).
fn field_offsets(format: &str) -> impl Iterator<Item = (&str, u32)> {
    format.lines().filter_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let declaration = parts.next()?.strip_prefix("field:")?;
        let name = declaration.rsplit(' ').next()?;
        let name = name.split('[').next()?;
        let offset = parts.find_map(|part| part.strip_prefix("offset:")?.parse().ok())?;
        Some((name, offset))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHED_SWITCH_FORMAT: &str = "name: sched_switch\nID: 316\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;\n\
\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;\n\
\nprint fmt: \"prev_comm=%s prev_pid=%d\", REC->prev_comm, REC->prev_pid\n";

    #[test]
    fn parses_tracefs_format_offsets() {
        let fields: HashMap<_, _> = field_offsets(SCHED_SWITCH_FORMAT).collect();
        assert_eq!(fields.get("prev_pid"), Some(&24));
        assert_eq!(fields.get("prev_state"), Some(&32));
        assert_eq!(fields.get("next_pid"), Some(&56));
        assert_eq!(fields.get("prev_comm"), Some(&8));
        assert_eq!(fields.get("common_type"), Some(&0));
        assert_eq!(fields.len(), 5);
        assert_eq!(
            field_offsets("garbage\nfield:int x;\toffset:nope;").count(),
            0
        );
    }

    #[test]
    fn reads_each_event_format_once_and_reports_what_is_missing() {
        let root = std::env::temp_dir().join(format!("layout-tracefs-{}", std::process::id()));
        let event = root.join("events/block/block_rq_issue");
        std::fs::create_dir_all(&event).unwrap();
        std::fs::write(
            event.join("format"),
            "format:\n\tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;\n\
             \tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;\n",
        )
        .unwrap();
        let mut layout = KernelLayout::UNKNOWN;
        let error = fill_from_tracefs(&root, &mut layout)
            .unwrap_err()
            .to_string();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!((layout.tp_block_rq_dev, layout.tp_block_rq_sector), (8, 16));
        assert_eq!(layout.tp_block_rq_bytes, UNKNOWN_OFFSET);
        assert!(
            error.contains("block/block_rq_issue format: no field bytes"),
            "{error}"
        );
        // One error per missing event, not per field.
        assert_eq!(error.matches("sched_switch/format").count(), 1, "{error}");
    }

    #[test]
    fn reads_this_kernels_btf() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: this kernel has no BTF at {VMLINUX_BTF}");
            return;
        }
        let btf = Btf::from_file(Path::new(VMLINUX_BTF)).unwrap();
        let mut layout = KernelLayout::UNKNOWN;
        fill_from_btf(&btf, &mut layout).unwrap();
        assert_ne!(layout.task_pid, UNKNOWN_OFFSET);
        assert_ne!(layout.task_state, UNKNOWN_OFFSET);
        // This kernel has CONFIG_FAIR_GROUP_SCHED, as distributions do.
        for offset in [
            layout.task_se_cfs_rq,
            layout.cfs_rq_rq,
            layout.rq_clock_task,
            layout.task_cgroups,
            layout.css_set_dfl_cgrp,
            layout.cgroup_kn,
            layout.kernfs_node_id,
        ] {
            assert_ne!(offset, UNKNOWN_OFFSET, "{layout:?}");
        }
        assert!(
            layout.task_pid > layout.task_state,
            "pid comes after __state in task_struct"
        );
        // This test machine runs 6.x, where sched_switch passes prev_state.
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let major: u32 = release.split('.').next().unwrap().parse().unwrap();
        if major >= 6 {
            assert_eq!(layout.sched_switch_has_prev_state, 1);
        }
    }

    #[test]
    fn reads_block_and_net_facts_from_this_kernels_btf() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: this kernel has no BTF at {VMLINUX_BTF}");
            return;
        }
        // One pass over the BTF gives the block and net offsets and the drop reasons.
        let Discovery {
            layout,
            drop_reasons,
            problems,
        } = discover(Path::new(VMLINUX_BTF), None);
        assert_eq!(problems.len(), 1, "only tracefs is missing: {problems:?}");
        assert_ne!(layout.request_cmd_flags, UNKNOWN_OFFSET);
        assert_ne!(layout.request_data_len, UNKNOWN_OFFSET);
        assert_ne!(layout.request_start_time_ns, UNKNOWN_OFFSET);
        assert!(!block_dev_path_unknown(&layout), "{layout:?}");
        // 6.x: request.part is a struct block_device *, so that path is known too.
        assert_ne!(layout.request_part, UNKNOWN_OFFSET);
        assert_ne!(layout.block_device_bd_dev, UNKNOWN_OFFSET);
        assert_eq!(layout.kfree_skb_has_reason, 1);
        assert!(detects_loss_probes(&layout, HookType::BtfTracepoint));
        // icsk_ca_state:5 shares its byte with three one-bit flags.
        assert_eq!(layout.icsk_ca_state_width, 5);
        assert_eq!(layout.icsk_ca_state_bit % 8, 0);
        let DropReasons {
            names: reasons,
            array_size: size,
        } = drop_reasons.unwrap();
        assert!(
            reasons.iter().any(|(_, name)| name == "no_socket"),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .all(|(value, name)| *value >= 2 && *value < size && !name.is_empty())
        );
        assert!(
            !reasons
                .iter()
                .any(|(_, name)| name == "max" || name.contains("consumed"))
        );
    }
}
