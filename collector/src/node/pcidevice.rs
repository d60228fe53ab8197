//! `pcidevice`: the PCI devices of /sys/bus/pci/devices/<location> (ids, class, parent bridge,
//! PCIe link speed and width, power state, SR-IOV, NUMA node), as procfs' `PciDevices` reads
//! them; with `--collector.pcidevice.names`, vendor, device, subsystem and class names from a
//! pci.ids file, resolved as upstream resolves them.
//!
//! Not obvious: every entry must be a symlink, its target giving the location and (unless the
//! parent folder is a `pci<segment>:<bus>` root) the parent's; the six id files are required,
//! and one missing makes the collector "no data" (upstream's `os.ErrNotExist` check sees it
//! through the wrapped error). The pci.ids file is read once at start-up: `--collector.
//! pcidevice.idsfile` as given, else /usr/share/misc/pci.ids or /usr/share/hwdata/pci.ids under
//! `--path.rootfs`; without one, names fall back to the ids (without `0x`).
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    flags::FlagSpec,
    goparse,
    metrics::MetricFamily,
    read,
};

const IDS_FILE: &str = "collector.pcidevice.idsfile";
const NAMES: &str = "collector.pcidevice.names";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "pcidevice",
    default_enabled: false,
    flags: &[
        FlagSpec::value(
            IDS_FILE,
            None,
            "Path to pci.ids file to use for PCI device identification.",
        ),
        FlagSpec::bool(
            NAMES,
            false,
            "Enable PCI device name resolution (requires pci.ids file).",
        ),
    ],
    kernel: None,
    build,
};

/// Where distributions install pci.ids, tried in order under `--path.rootfs`.
const IDS_PATHS: &[&str] = &["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"];

struct PcideviceCollector {
    devices: PathBuf,
    /// The names, when `--collector.pcidevice.names` is on.
    names: Option<PciIds>,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let names =
        context.flags.bool(NAMES).then(|| {
            let explicit = context
                .flags
                .string(IDS_FILE)
                .filter(|path| !path.is_empty());
            let candidates: Vec<PathBuf> = match explicit {
                Some(path) => vec![PathBuf::from(path)],
                None => IDS_PATHS.iter().map(|p| context.root_path(p)).collect(),
            };
            let file = candidates.iter().find_map(|path| match std::fs::File::open(path) {
            Ok(file) => {
                tracing::debug!(file = %path.display(), "Loading PCI IDs");
                Some(file)
            }
            Err(error) => {
                tracing::debug!(file = %path.display(), %error, "Failed to open PCI IDs file");
                None
            }
        });
            let ids = file.map(PciIds::parse).unwrap_or_default();
            tracing::debug!(
                vendors = ids.vendors.len(),
                devices = ids.devices.values().map(HashMap::len).sum::<usize>(),
                subsystems = ids.subsystems.values().map(HashMap::len).sum::<usize>(),
                classes = ids.classes.len(),
                subclasses = ids.subclasses.len(),
                prog_ifs = ids.prog_ifs.len(),
                "Loaded PCI device data"
            );
            ids
        });
    Ok(Arc::new(PcideviceCollector {
        devices: context.sys_path("bus/pci/devices"),
        names,
    }))
}

/// The names of a pci.ids file, keyed by lower-case hexadecimal ids without `0x`.
#[derive(Debug, Default)]
struct PciIds {
    vendors: HashMap<String, String>,
    /// vendor -> device -> name.
    devices: HashMap<String, HashMap<String, String>>,
    /// `vendor:device` -> `subvendor:subdevice` -> name.
    subsystems: HashMap<String, HashMap<String, String>>,
    /// Base class (`01`).
    classes: HashMap<String, String>,
    /// Base class and subclass (`0108`).
    subclasses: HashMap<String, String>,
    /// Base class, subclass and programming interface (`010802`).
    prog_ifs: HashMap<String, String>,
}

/// Go's `strings.SplitN(line, "  ", 2)` when it gives two parts, trimmed.
fn split_name(line: &str) -> Option<(&str, &str)> {
    line.split_once("  ")
        .map(|(id, name)| (id.trim(), name.trim()))
}

impl PciIds {
    /// Upstream's `loadPCIIds`, line by line as its `bufio.Scanner` (a line over 64 KiB ends the
    /// file there): vendor lines, tab-indented devices, double-tab subsystems, and after a
    /// `C xx  name` line, tab-indented subclasses and double-tab programming interfaces.
    fn parse(reader: impl std::io::Read) -> Self {
        let mut ids = Self::default();
        let mut vendor = String::new();
        let mut device = String::new();
        let mut base_class = String::new();
        let mut subclass = String::new();
        let mut in_class = false;
        goparse::scan_reader(reader, |line| {
            let line = String::from_utf8_lossy(line);
            let line = line.as_ref();
            if line.is_empty() || line.starts_with('#') {
                return true;
            }
            if line.starts_with("C ") {
                if let Some((id, name)) = split_name(line) {
                    let id = id[1..].trim().to_owned();
                    ids.classes.insert(id.clone(), name.to_owned());
                    base_class = id;
                    in_class = true;
                }
                return true;
            }
            let one_tab = line.starts_with('\t') && !line.starts_with("\t\t");
            let two_tabs = line.starts_with("\t\t") && !line.starts_with("\t\t\t");
            if one_tab && in_class {
                if let Some((id, name)) = split_name(&line[1..])
                    && !base_class.is_empty()
                {
                    let full = format!("{base_class}{id}");
                    ids.subclasses.insert(full.clone(), name.to_owned());
                    subclass = full;
                }
                return true;
            }
            if two_tabs && in_class {
                if let Some((id, name)) = split_name(&line[2..])
                    && !subclass.is_empty()
                {
                    ids.prog_ifs
                        .insert(format!("{subclass}{id}"), name.to_owned());
                }
                return true;
            }
            if !line.starts_with('\t') {
                if let Some((id, name)) = split_name(line) {
                    vendor = id.to_owned();
                    ids.vendors.insert(vendor.clone(), name.to_owned());
                    device.clear();
                    in_class = false;
                }
                return true;
            }
            if one_tab {
                if let Some((id, name)) = split_name(&line[1..])
                    && !vendor.is_empty()
                {
                    device = id.to_owned();
                    ids.devices
                        .entry(vendor.clone())
                        .or_default()
                        .insert(device.clone(), name.to_owned());
                }
                return true;
            }
            // Two tabs or more: a subsystem of the current device.
            if let Some((id, name)) = split_name(&line[2..])
                && !vendor.is_empty()
                && !device.is_empty()
            {
                let entry = ids
                    .subsystems
                    .entry(format!("{vendor}:{device}"))
                    .or_default();
                let fields: Vec<&str> = id.split_whitespace().collect();
                if let [subvendor, subdevice] = fields[..] {
                    entry.insert(format!("{subvendor}:{subdevice}"), name.to_owned());
                }
            }
            true
        });
        ids
    }

    /// `getPCIVendorName`: the name, or the id without `0x`.
    fn vendor(&self, id: &str) -> String {
        let id = id.strip_prefix("0x").unwrap_or(id).to_lowercase();
        self.vendors.get(&id).cloned().unwrap_or(id)
    }

    /// `getPCIDeviceName`: the name, or the device id without `0x`.
    fn device(&self, vendor: &str, device: &str) -> String {
        let vendor = vendor.strip_prefix("0x").unwrap_or(vendor).to_lowercase();
        let device = device.strip_prefix("0x").unwrap_or(device).to_lowercase();
        self.devices
            .get(&vendor)
            .and_then(|devices| devices.get(&device))
            .cloned()
            .unwrap_or(device)
    }

    /// `getPCISubsystemName`: the name, or the subsystem device id without `0x`.
    fn subsystem(&self, vendor: &str, device: &str, subvendor: &str, subdevice: &str) -> String {
        let strip = |id: &str| id.strip_prefix("0x").unwrap_or(id).to_owned();
        let (vendor, device) = (strip(vendor), strip(device));
        let (subvendor, subdevice) = (strip(subvendor), strip(subdevice));
        self.subsystems
            .get(&format!("{vendor}:{device}"))
            .and_then(|names| names.get(&format!("{subvendor}:{subdevice}")))
            .cloned()
            .unwrap_or(subdevice)
    }

    /// `getPCIClassName`: the programming interface's name, else the subclass's, else the base
    /// class's, else `Unknown class (<id>)`.
    fn class(&self, id: &str) -> String {
        let id = id.strip_prefix("0x").unwrap_or(id).to_lowercase();
        for (len, names) in [
            (6, &self.prog_ifs),
            (4, &self.subclasses),
            (2, &self.classes),
        ] {
            if let Some(name) = id.get(..len).and_then(|prefix| names.get(prefix)) {
                return name.clone();
            }
        }
        format!("Unknown class ({id})")
    }
}

/// A PCI location, `<segment>:<bus>:<device>.<function>` in hexadecimal.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Location {
    segment: i32,
    bus: i32,
    device: i32,
    function: i32,
}

impl Location {
    /// procfs' `parsePciDeviceLocation`: three colon-separated parts, the last split at `.`,
    /// each Go's `ParseInt(s, 16, 32)`.
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut parts: Vec<&str> = text.split(':').collect();
        if parts.len() != 3 {
            anyhow::bail!("invalid location '{text}'");
        }
        let last = parts.pop().unwrap_or_default();
        parts.extend(last.split('.'));
        let [segment, bus, device, function] = parts[..] else {
            anyhow::bail!("invalid location '{text}'");
        };
        let hex = |what: &str, s: &str| -> anyhow::Result<i32> {
            goparse::parse_int(s, 16, 32)
                .map(|v| v as i32)
                .with_context(|| format!("invalid {what}: parsing {s:?}"))
        };
        Ok(Self {
            segment: hex("segment", segment)?,
            bus: hex("bus", bus)?,
            device: hex("device", device)?,
            function: hex("function", function)?,
        })
    }

    /// `Strings()`: segment, bus, device and function as upstream formats them.
    fn strings(&self) -> [String; 4] {
        [
            goparse::hex(self.segment.into(), 4),
            goparse::hex(self.bus.into(), 2),
            goparse::hex(self.device.into(), 2),
            goparse::hex(self.function.into(), 0),
        ]
    }
}

/// One device, as procfs' `PciDevice`.
#[derive(Debug, Default, PartialEq)]
struct Device {
    location: Location,
    parent: Option<Location>,
    /// class, vendor, device, subsystem_vendor, subsystem_device, revision.
    ids: [u32; 6],
    numa_node: Option<i32>,
    max_link_speed: Option<f64>,
    max_link_width: Option<f64>,
    current_link_speed: Option<f64>,
    current_link_width: Option<f64>,
    sriov_drivers_autoprobe: Option<bool>,
    sriov_numvfs: Option<u32>,
    sriov_totalvfs: Option<u32>,
    sriov_vf_total_msix: Option<u64>,
    d3cold_allowed: Option<bool>,
    power_state: Option<String>,
}

const ID_FILES: [&str; 6] = [
    "class",
    "vendor",
    "device",
    "subsystem_vendor",
    "subsystem_device",
    "revision",
];

/// An optional attribute: `None` when the file does not exist, an error for any other failure.
fn optional(path: &Path) -> anyhow::Result<Option<String>> {
    match read::sys_read_file(path) {
        Ok(value) => Ok(Some(value)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("failed to read file {path:?}")),
    }
}

/// procfs' `parsePciDevice`.
fn read_device(path: &Path) -> anyhow::Result<Device> {
    let target = std::fs::read_link(path).context("failed to readlink")?;
    let target = target.to_string_lossy();
    let location_text = goparse::base_name(&target);
    let parent_text = goparse::dir_name(&target);
    let parent_text = goparse::base_name(&parent_text);
    let location = Location::parse(location_text)
        .with_context(|| format!("failed to parse device location {location_text:?}"))?;
    // A parent named pci<segment>:<bus> is the host bridge's root, not a device.
    let parent =
        if parent_text.starts_with("pci") {
            None
        } else {
            Some(Location::parse(parent_text).with_context(|| {
                format!("failed to parse parent device location {parent_text:?}")
            })?)
        };
    let mut device = Device {
        location,
        parent,
        ..Device::default()
    };
    let at = || location.strings().join(":");

    for (slot, file) in device.ids.iter_mut().zip(ID_FILES) {
        let name = path.join(file);
        let value =
            read::sys_read_file(&name).with_context(|| format!("failed to read file {name:?}"))?;
        *slot = goparse::parse_int(&value, 0, 32)
            .with_context(|| format!("failed to parse {file} {value:?} {}", at()))?
            as u32;
    }

    for file in [
        "max_link_speed",
        "max_link_width",
        "current_link_speed",
        "current_link_width",
        "numa_node",
    ] {
        let Some(value) = optional(&path.join(file))? else {
            continue;
        };
        // Devices may print nothing, or "Unknown" (pci_speed_string).
        if value.is_empty() || value.starts_with("Unknown") {
            continue;
        }
        let bad = || format!("failed to parse {file} {value:?} {}", at());
        match file {
            "max_link_speed" | "current_link_speed" => {
                // "8.0 GT/s PCIe"
                let Some((number, unit)) = value.split_once(' ') else {
                    anyhow::bail!("invalid value for {file} {value:?} {}", at());
                };
                if unit != "GT/s PCIe" {
                    anyhow::bail!("unknown unit for {file} {value:?} {}", at());
                }
                let speed = goparse::parse_float(number.trim(), 64).with_context(bad)?;
                if file == "max_link_speed" {
                    device.max_link_speed = Some(speed);
                } else {
                    device.current_link_speed = Some(speed);
                }
            }
            "max_link_width" | "current_link_width" => {
                let width = goparse::parse_int(&value, 10, 64).with_context(bad)? as f64;
                if file == "max_link_width" {
                    device.max_link_width = Some(width);
                } else {
                    device.current_link_width = Some(width);
                }
            }
            _ => {
                device.numa_node =
                    Some(goparse::parse_int(&value, 10, 32).with_context(bad)? as i32);
            }
        }
    }

    for file in [
        "sriov_drivers_autoprobe",
        "sriov_numvfs",
        "sriov_offset",
        "sriov_stride",
        "sriov_totalvfs",
        "sriov_vf_device",
        "sriov_vf_total_msix",
    ] {
        let value = optional(&path.join(file))
            .with_context(|| format!("failed to read SR-IOV file {}", at()))?;
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            continue;
        };
        let bad = || format!("failed to parse SR-IOV {file} {value:?} {}", at());
        match file {
            "sriov_drivers_autoprobe" => {
                device.sriov_drivers_autoprobe =
                    Some(goparse::parse_int(&value, 10, 32).with_context(bad)? != 0);
            }
            "sriov_numvfs" => {
                device.sriov_numvfs =
                    Some(goparse::parse_uint(&value, 10, 32).with_context(bad)? as u32);
            }
            "sriov_totalvfs" => {
                device.sriov_totalvfs =
                    Some(goparse::parse_uint(&value, 10, 32).with_context(bad)? as u32);
            }
            "sriov_vf_device" => {
                goparse::parse_uint(&value, 16, 32).with_context(bad)?;
            }
            "sriov_vf_total_msix" => {
                device.sriov_vf_total_msix =
                    Some(goparse::parse_uint(&value, 10, 64).with_context(bad)?);
            }
            // sriov_offset, sriov_stride: parsed, not exported.
            _ => {
                goparse::parse_uint(&value, 10, 32).with_context(bad)?;
            }
        }
    }

    for file in ["d3cold_allowed", "power_state"] {
        let value = optional(&path.join(file))
            .with_context(|| format!("failed to read power management file {}", at()))?;
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            continue;
        };
        if file == "d3cold_allowed" {
            let allowed = goparse::parse_int(&value, 10, 32).with_context(|| {
                format!("failed to parse d3cold_allowed boolean {value:?} {}", at())
            })?;
            device.d3cold_allowed = Some(allowed != 0);
        } else {
            device.power_state = Some(value);
        }
    }
    Ok(device)
}

/// procfs' `PciDevices`: by location (`0000:00:04.0`), a later entry of the same location
/// replacing an earlier one.
fn read_devices(dir: &Path) -> anyhow::Result<BTreeMap<String, Device>> {
    let entries =
        read::read_dir_sorted(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut devices = BTreeMap::new();
    for entry in entries {
        let device = read_device(&entry.path)?;
        devices.insert(device.location.strings().join(":"), device);
    }
    Ok(devices)
}

const POWER_STATES: [&str; 7] = ["D0", "D1", "D2", "D3hot", "D3cold", "unknown", "error"];

impl Collector for PcideviceCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let devices = match read_devices(&self.devices) {
            Ok(devices) => devices,
            Err(error) if read::chain_has(&error, std::io::ErrorKind::NotFound) => {
                return Err(NoData(format!("PCI device not found, skipping: {error:#}")).into());
            }
            Err(error) => return Err(error.context("error obtaining PCI device info")),
        };
        let gauge =
            |name: &str, help: &str| MetricFamily::gauge(format!("node_pcidevice_{name}"), help);
        let mut info = gauge(
            "info",
            "Non-numeric data from /sys/bus/pci/devices/<location>, value is always 1.",
        );
        let mut max_speed = gauge(
            "max_link_transfers_per_second",
            "Value of maximum link's transfers per second (T/s)",
        );
        let mut max_width = gauge(
            "max_link_width",
            "Value of maximum link's width (number of lanes)",
        );
        let mut current_speed = gauge(
            "current_link_transfers_per_second",
            "Value of current link's transfers per second (T/s)",
        );
        let mut current_width = gauge(
            "current_link_width",
            "Value of current link's width (number of lanes)",
        );
        let mut power_state = gauge(
            "power_state",
            "PCIe device power state, one of: D0, D1, D2, D3hot, D3cold, unknown or error.",
        );
        let mut d3cold = gauge(
            "d3cold_allowed",
            "Whether the PCIe device supports D3cold power state (0/1).",
        );
        let mut autoprobe = gauge(
            "sriov_drivers_autoprobe",
            "Whether SR-IOV drivers autoprobe is enabled for the device (0/1).",
        );
        let mut numvfs = gauge(
            "sriov_numvfs",
            "Number of Virtual Functions (VFs) currently enabled for SR-IOV.",
        );
        let mut totalvfs = gauge(
            "sriov_totalvfs",
            "Total number of Virtual Functions (VFs) supported by the device.",
        );
        let mut msix = gauge(
            "sriov_vf_total_msix",
            "Total number of MSI-X vectors for Virtual Functions.",
        );
        let mut numa = gauge(
            "numa_node",
            "NUMA node number for the PCI device. -1 indicates unknown or not available.",
        );

        const LOCATION: [&str; 4] = ["segment", "bus", "device", "function"];
        for device in devices.values() {
            let labels: Vec<(&str, String)> = LOCATION
                .into_iter()
                .zip(device.location.strings())
                .collect();
            let parent = match device.parent {
                Some(parent) => parent.strings(),
                None => ["*", "*", "*", "*"].map(str::to_owned),
            };
            let [class, vendor, device_id, subvendor, subdevice, revision] = device.ids;
            let class = format!("0x{class:06x}");
            let vendor = format!("0x{vendor:04x}");
            let device_id = format!("0x{device_id:04x}");
            let subvendor = format!("0x{subvendor:04x}");
            let subdevice = format!("0x{subdevice:04x}");
            let mut info_labels = labels.clone();
            info_labels.extend(
                [
                    "parent_segment",
                    "parent_bus",
                    "parent_device",
                    "parent_function",
                ]
                .into_iter()
                .zip(parent),
            );
            info_labels.extend([
                ("class_id", class.clone()),
                ("vendor_id", vendor.clone()),
                ("device_id", device_id.clone()),
                ("subsystem_vendor_id", subvendor.clone()),
                ("subsystem_device_id", subdevice.clone()),
                ("revision", format!("0x{revision:02x}")),
            ]);
            if let Some(names) = &self.names {
                info_labels.extend([
                    ("vendor_name", names.vendor(&vendor)),
                    ("device_name", names.device(&vendor, &device_id)),
                    ("subsystem_vendor_name", names.vendor(&subvendor)),
                    (
                        "subsystem_device_name",
                        names.subsystem(&vendor, &device_id, &subvendor, &subdevice),
                    ),
                    ("class_name", names.class(&class)),
                ]);
            }
            info.push(info_labels, 1.0);

            let or_minus_one = |value: Option<f64>| value.unwrap_or(-1.0);
            let flag = |value: Option<bool>| f64::from(u8::from(value.unwrap_or(false)));
            max_speed.push(
                labels.clone(),
                device.max_link_speed.map_or(-1.0, |s| s * 1e9),
            );
            max_width.push(labels.clone(), or_minus_one(device.max_link_width));
            current_speed.push(
                labels.clone(),
                device.current_link_speed.map_or(-1.0, |s| s * 1e9),
            );
            current_width.push(labels.clone(), or_minus_one(device.current_link_width));
            d3cold.push(labels.clone(), flag(device.d3cold_allowed));
            autoprobe.push(labels.clone(), flag(device.sriov_drivers_autoprobe));
            numvfs.push(labels.clone(), f64::from(device.sriov_numvfs.unwrap_or(0)));
            totalvfs.push(
                labels.clone(),
                f64::from(device.sriov_totalvfs.unwrap_or(0)),
            );
            msix.push(
                labels.clone(),
                device.sriov_vf_total_msix.unwrap_or(0) as f64,
            );
            if let Some(state) = &device.power_state {
                for candidate in POWER_STATES {
                    let mut state_labels = labels.clone();
                    state_labels.push(("state", candidate.to_owned()));
                    power_state.push(state_labels, f64::from(u8::from(state == candidate)));
                }
            }
            // -1 is "unknown": left out, as upstream.
            if let Some(node) = device.numa_node.filter(|node| *node != -1) {
                numa.push(labels, f64::from(node));
            }
        }
        out.extend([
            info,
            max_speed,
            max_width,
            current_speed,
            current_width,
            power_state,
            d3cold,
            autoprobe,
            numvfs,
            totalvfs,
            msix,
            numa,
        ]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    const IDS: &str = "\
# comment
1d0f  Amazon.com, Inc.
\t8061  NVMe EBS Controller
\t\t1d0f 8061  NVMe EBS Controller
\tec20  Elastic Network Adapter (ENA)
10de  NVIDIA Corporation
\t2237  GA102GL [A10G]
\t\t10de 152f  A10G
bad line without two spaces
C 01  Mass storage controller
\t08  Non-Volatile memory controller
\t\t02  NVM Express
C 02  Network controller
\t00  Ethernet controller
C 03  Display controller\r
";

    #[test]
    fn resolves_names_as_upstream() {
        let ids = PciIds::parse(IDS.as_bytes());
        assert_eq!(ids.vendor("0x1d0f"), "Amazon.com, Inc.");
        assert_eq!(ids.vendor("0x8086"), "8086");
        assert_eq!(ids.device("0x1d0f", "0x8061"), "NVMe EBS Controller");
        assert_eq!(ids.device("0x1d0f", "0x0200"), "0200");
        assert_eq!(
            ids.subsystem("0x10de", "0x2237", "0x10de", "0x152f"),
            "A10G"
        );
        assert_eq!(
            ids.subsystem("0x10de", "0x2237", "0x10de", "0x0000"),
            "0000"
        );
        assert_eq!(ids.class("0x010802"), "NVM Express");
        assert_eq!(ids.class("0x010800"), "Non-Volatile memory controller");
        assert_eq!(ids.class("0x020000"), "Ethernet controller");
        assert_eq!(ids.class("0x030200"), "Display controller");
        assert_eq!(ids.class("0x060400"), "Unknown class (060400)");
        // In a class section a tab-indented line is a subclass, never a device.
        assert!(!ids.devices["10de"].contains_key("08"));
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A device under devices/<relative>, linked from bus/pci/devices.
    fn device(root: &Path, relative: &str, files: &[(&str, &str)]) {
        let dir = root.join("devices").join(relative);
        for (file, value) in [
            ("class", "0x010802"),
            ("vendor", "0x1d0f"),
            ("device", "0x8061"),
            ("subsystem_vendor", "0x1d0f"),
            ("subsystem_device", "0x8061"),
            ("revision", "0x00"),
        ]
        .iter()
        .chain(files)
        {
            write(&dir.join(file), &format!("{value}\n"));
        }
        let bus = root.join("bus/pci/devices");
        std::fs::create_dir_all(&bus).unwrap();
        let name = relative.rsplit('/').next().unwrap();
        std::os::unix::fs::symlink(format!("../../../devices/{relative}"), bus.join(name)).unwrap();
    }

    #[test]
    fn reads_devices_as_procfs() {
        let root = std::env::temp_dir().join(format!("pcidevice-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        device(
            &root,
            "pci0000:00/0000:00:04.0",
            &[
                ("max_link_speed", "Unknown"),
                ("numa_node", "-1"),
                ("power_state", "D0"),
                ("d3cold_allowed", "1"),
            ],
        );
        device(
            &root,
            "pci0000:00/0000:00:1e.0/0000:10:00.0",
            &[
                ("class", "0x030200"),
                ("vendor", "0x10de"),
                ("device", "0x2237"),
                ("subsystem_vendor", "0x10de"),
                ("subsystem_device", "0x152f"),
                ("revision", "0xa1"),
                ("max_link_speed", "16.0 GT/s PCIe"),
                ("current_link_speed", "2.5 GT/s PCIe"),
                ("max_link_width", "16"),
                ("current_link_width", "8"),
                ("numa_node", "0"),
                ("sriov_totalvfs", ""),
                ("power_state", "D3hot"),
            ],
        );
        let mut collector = PcideviceCollector {
            devices: root.join("bus/pci/devices"),
            names: None,
        };
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        let family = |out: &[MetricFamily], name: &str| {
            out.iter()
                .find(|f| f.name == format!("node_pcidevice_{name}"))
                .unwrap()
                .metrics
                .iter()
                .map(|m| {
                    let Value::Scalar(v) = m.value else { panic!() };
                    (m.labels.clone(), v)
                })
                .collect::<Vec<_>>()
        };
        let info = family(&out, "info");
        assert_eq!(info.len(), 2);
        let labels: Vec<String> = info[1].0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            labels.join(","),
            "segment=0000,bus=10,device=00,function=0,parent_segment=0000,parent_bus=00,\
             parent_device=1e,parent_function=0,class_id=0x030200,vendor_id=0x10de,\
             device_id=0x2237,subsystem_vendor_id=0x10de,subsystem_device_id=0x152f,revision=0xa1"
        );
        assert_eq!(info[0].0[4].1, "*");
        let speeds = family(&out, "max_link_transfers_per_second");
        assert_eq!(speeds[0].1, -1.0);
        assert_eq!(speeds[1].1, 16e9);
        assert_eq!(
            family(&out, "current_link_transfers_per_second")[1].1,
            2.5e9
        );
        assert_eq!(family(&out, "current_link_width")[0].1, -1.0);
        assert_eq!(family(&out, "numa_node").len(), 1);
        let states = family(&out, "power_state");
        assert_eq!(states.len(), 14);
        let on: Vec<&str> = states
            .iter()
            .filter(|(_, v)| *v == 1.0)
            .map(|(l, _)| l[4].1.as_str())
            .collect();
        assert_eq!(on, ["D0", "D3hot"]);
        assert_eq!(family(&out, "d3cold_allowed")[0].1, 1.0);
        assert_eq!(family(&out, "sriov_totalvfs")[1].1, 0.0);

        collector.names = Some(PciIds::parse(IDS.as_bytes()));
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        let info = family(&out, "info");
        let names: Vec<&str> = info[1].0[14..].iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(
            names,
            [
                "NVIDIA Corporation",
                "GA102GL [A10G]",
                "NVIDIA Corporation",
                "A10G",
                "Display controller"
            ]
        );

        // Garbled values fail, naming what.
        for (file, value) in [
            ("max_link_speed", "8.0 GT/s"),
            ("max_link_width", "x16"),
            ("sriov_numvfs", "+1"),
            ("sriov_vf_device", "0x100d"),
            ("vendor", "0x80000000"),
        ] {
            let path = root.join("devices/pci0000:00/0000:00:04.0").join(file);
            let saved = std::fs::read(&path).ok();
            write(&path, value);
            let error = collector.update(&mut Vec::new()).unwrap_err();
            assert!(error.downcast_ref::<NoData>().is_none(), "{file}");
            assert!(format!("{error:#}").contains(file), "{file}: {error:#}");
            match saved {
                Some(saved) => std::fs::write(&path, saved).unwrap(),
                None => std::fs::remove_file(&path).unwrap(),
            }
        }
        // A required id file missing: "no data", as upstream's ErrNotExist check.
        std::fs::remove_file(root.join("devices/pci0000:00/0000:00:04.0/revision")).unwrap();
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");
        // Not a symlink: an error.
        std::fs::create_dir_all(root.join("bus/pci/devices/0000:00:00.0")).unwrap();
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(format!("{error:#}").contains("readlink"), "{error:#}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn parses_locations() {
        let location = Location::parse("0000:00:1f.7").unwrap();
        assert_eq!(location.strings(), ["0000", "00", "1f", "7"]);
        assert_eq!(
            Location::parse("10000:ff:1f.7").unwrap().strings()[0],
            "10000"
        );
        assert_eq!(Location::parse("-1:00:00.0").unwrap().strings()[0], "-001");
        assert!(Location::parse("0000:00:1f").is_err());
        assert!(Location::parse("0000:00:1f.7.1").is_err());
        assert!(Location::parse("0000:00:00:1f.7").is_err());
        assert!(Location::parse("0000:0x:1f.7").is_err());
        assert!(Location::parse("pci0000:00").is_err());
    }
}
