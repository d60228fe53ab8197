//! The sysfs mode's shortcut: of the 22 attributes read for each device, 16 are what one
//! rtnetlink link dump for every device carries too, from the same kernel fields, so they are
//! taken from the dump; only `flags`, `addr_assign_type`, `dev_id` and `name_assign_type`, and
//! `speed` and `duplex` of a running device, are still read from the device's directory. The
//! output is the one reading every file gives:
//!
//! - each value is what the attribute's sysfs show function prints: `ifindex`, `type`, `mtu`,
//!   `tx_queue_len`, `netdev_group`, `link_mode` and the carrier counts are the same fields,
//!   printed with `%d` (so taken as signed 32-bit numbers here); `iflink` is `IFLA_LINK`, which
//!   the kernel leaves out where it equals the ifindex; `address`, `broadcast` are the same bytes
//!   (none where the address length is 0, as sysfs prints an empty line); `IFLA_IFALIAS` is
//!   absent where sysfs prints an empty line; `operstate` is the same state, already `down` for
//!   a device that is not running in both. `carrier`, `dormant`, `speed` and `duplex` fail with
//!   EINVAL on a device that is not running (`IFF_UP` off), so they are absent then; on a
//!   running one `carrier` is `IFLA_CARRIER` and `dormant` is `IFF_DORMANT` of the link's flags.
//!   `flags` stays a file: sysfs shows the device's own flags, the dump the user-requested
//!   promiscuous and all-multicast bits and computed running bits instead. An attribute an older
//!   kernel does not dump is read from its file.
//! - sysfs shows the devices of the network namespace that mounted it, the dump those of ours.
//!   A dump is used only when it has exactly the names the directory lists, and a device's link
//!   only once its directory's `ifindex` and `address` files were read and equal the link's. That
//!   check is remembered per device name with the directory's inode (a device created again
//!   gets a new directory) and the link's ifindex and address, and made again when any of them
//!   changes (two files more, once). A failed dump, or a device listed but not dumped (created
//!   between the two), is read file by file.
//! - only a real sysfs (statfs) is paired with the dump: a copy of the tree (the fixtures) is
//!   always read file by file.
use std::{
    collections::{BTreeSet, HashMap},
    ffi::{CStr, CString, OsStr, OsString},
    os::unix::ffi::OsStrExt as _,
    path::Path,
    sync::{Mutex, MutexGuard, PoisonError},
};

use super::{
    Interface,
    rtnl::{self, Link},
};
use crate::{goparse, read::SysDir};

/// `SYSFS_MAGIC` (linux/magic.h).
const SYSFS_MAGIC: i64 = 0x6265_6572;

/// The attributes always read from the device's directory.
const FILE_ATTRIBUTES: [&CStr; 4] = [
    c"flags",
    c"addr_assign_type",
    c"dev_id",
    c"name_assign_type",
];

/// The attributes that are read from the directory of a running device only: a device that is
/// not running refuses them (EINVAL), which leaves them absent.
const RUNNING_FILE_ATTRIBUTES: [&CStr; 2] = [c"speed", c"duplex"];

/// Whether `path` is on a sysfs mount, the kernel's own files.
pub(super) fn is_sysfs(path: &Path) -> bool {
    let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data, all zeroes a valid value.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `buf` a valid statfs for the call to fill.
    (unsafe { libc::statfs(path.as_ptr(), &mut buf) } == 0) && buf.f_type as i64 == SYSFS_MAGIC
}

/// What a device's directory was checked against: the link is the directory's device while
/// none of these changes.
#[derive(Debug, PartialEq)]
struct Identity {
    inode: u64,
    ifindex: u32,
    address: Vec<u8>,
}

/// The dump's source and the devices whose directory was checked against their link.
pub(super) struct LinkDump {
    /// [`rtnl::dump_links`]; tests give their own links.
    dump: fn() -> anyhow::Result<Vec<Link>>,
    /// By device name; only devices of the last listing are kept, so it holds at most one entry
    /// per device of the host.
    checked: Mutex<HashMap<OsString, Identity>>,
}

/// One scrape's dump, when it lists the devices the directory lists.
pub(super) struct Links<'a> {
    by_name: HashMap<Vec<u8>, Link>,
    checked: MutexGuard<'a, HashMap<OsString, Identity>>,
}

impl LinkDump {
    pub(super) fn new() -> Self {
        Self::with_source(rtnl::dump_links)
    }

    fn with_source(dump: fn() -> anyhow::Result<Vec<Link>>) -> Self {
        Self {
            dump,
            checked: Mutex::new(HashMap::new()),
        }
    }

    /// The dump of this scrape, for `listed`, every device name of /sys/class/net; `None` when
    /// it fails or does not have exactly these names (every device is then read file by file).
    pub(super) fn links(&self, listed: &[OsString]) -> Option<Links<'_>> {
        // A collector runs one update at a time: the lock is never contended.
        let mut checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        checked.retain(|name, _| listed.contains(name));
        let links = match (self.dump)() {
            Ok(links) => links,
            Err(error) => {
                tracing::debug!(
                    err = format!("{error:#}"),
                    "rtnetlink link dump failed: reading every attribute file"
                );
                return None;
            }
        };
        let dumped: BTreeSet<&[u8]> = links.iter().map(|link| link.name.as_slice()).collect();
        let listed_names: BTreeSet<&[u8]> = listed.iter().map(|name| name.as_bytes()).collect();
        if dumped != listed_names {
            return None;
        }
        Some(Links {
            by_name: links
                .into_iter()
                .map(|link| (link.name.clone(), link))
                .collect(),
            checked,
        })
    }
}

impl Links<'_> {
    /// Fills `interface` with the attributes the link of device `name` carries, and returns the
    /// attributes still to be read from its directory `dir`; `None` (nothing filled) when the
    /// link cannot be taken for that directory's device.
    pub(super) fn fill(
        &mut self,
        name: &OsStr,
        dir: &SysDir,
        interface: &mut Interface,
    ) -> Option<Vec<&'static CStr>> {
        let link = self.by_name.get(name.as_bytes())?;
        if !is_directory_of(&mut self.checked, name, link, dir) {
            return None;
        }
        let running = link.flags & libc::IFF_UP as u32 != 0;
        let mut from_files = FILE_ATTRIBUTES.to_vec();
        if running {
            from_files.extend(RUNNING_FILE_ATTRIBUTES);
        }

        // rtnl::parse_link refuses a state outside the table; looked up first, so that `None`
        // leaves the interface as it was.
        let operstate = rtnl::OPERSTATES.get(usize::from(link.operstate))?;
        let strings = &mut interface.strings;
        strings.insert(c"address", rtnl::hardware_address_string(&link.address));
        strings.insert(c"broadcast", rtnl::hardware_address_string(&link.broadcast));
        // As the file is read: lossily decoded, whitespace trimmed.
        let alias = link.alias.as_deref().unwrap_or_default();
        strings.insert(c"ifalias", String::from_utf8_lossy(alias).trim().to_owned());
        strings.insert(c"operstate", (*operstate).to_owned());

        // sysfs prints these with `%d`.
        let signed = |value: u32| i64::from(value as i32);
        let numbers = [
            (c"ifindex", Some(signed(link.index))),
            (c"type", Some(i64::from(link.kind))),
            (c"mtu", Some(signed(link.mtu))),
            (c"iflink", Some(signed(link.iflink.unwrap_or(link.index)))),
            (c"tx_queue_len", link.tx_queue_len.map(signed)),
            (c"netdev_group", link.group.map(signed)),
            (c"link_mode", link.link_mode.map(i64::from)),
            (c"carrier_changes", link.carrier_changes.map(signed)),
            (c"carrier_up_count", link.carrier_up_count.map(signed)),
            (c"carrier_down_count", link.carrier_down_count.map(signed)),
        ];
        let running_numbers = [
            (
                c"carrier",
                link.carrier.map(|carrier| i64::from(carrier != 0)),
            ),
            (
                c"dormant",
                Some(i64::from(link.flags & libc::IFF_DORMANT as u32 != 0)),
            ),
        ];
        let running_numbers = running_numbers.into_iter().filter(|_| running);
        for (attribute, value) in numbers.into_iter().chain(running_numbers) {
            match value {
                Some(value) => {
                    interface.numbers.insert(attribute, value);
                }
                None => from_files.push(attribute),
            }
        }
        Some(from_files)
    }
}

/// Whether `dir`, the directory of device `name`, is that of `link`: checked by its
/// `ifindex` and `address` files the first time and whenever the directory or the link's
/// identity changes, remembered otherwise.
fn is_directory_of(
    checked: &mut HashMap<OsString, Identity>,
    name: &OsStr,
    link: &Link,
    dir: &SysDir,
) -> bool {
    let Ok(inode) = dir.inode() else {
        return false;
    };
    let identity = Identity {
        inode,
        ifindex: link.index,
        address: link.address.clone(),
    };
    if checked.get(name) == Some(&identity) {
        return true;
    }
    let ifindex = dir
        .attribute(c"ifindex")
        .ok()
        .and_then(|text| goparse::parse_int(&text, 0, 64));
    let address = dir.attribute(c"address").ok();
    let matches = ifindex == Some(i64::from(link.index as i32))
        && address.as_deref() == Some(rtnl::hardware_address_string(&link.address).as_str());
    if matches {
        checked.insert(name.to_owned(), identity);
    } else {
        checked.remove(name);
    }
    matches
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// The devices of this host, as the collector lists them.
    fn listed(class_net: &Path) -> Vec<OsString> {
        std::fs::read_dir(class_net)
            .unwrap()
            .map(|entry| entry.unwrap())
            .filter(|entry| !entry.file_type().unwrap().is_file())
            .map(|entry| entry.file_name())
            .collect()
    }

    #[test]
    fn the_dump_gives_what_the_files_give_on_this_host() {
        let class_net = Path::new("/sys/class/net");
        let dump = LinkDump::new();
        // Other tests add and remove devices: a listing that changes under the two reads is
        // tried again.
        for _ in 0..20 {
            let devices = listed(class_net);
            let Some(mut links) = dump.links(&devices) else {
                continue;
            };
            let mut same = true;
            for device in &devices {
                let path = class_net.join(device);
                let (Ok(dumped), Ok(files)) = (
                    super::super::read_interface(&path, device, Some(&mut links)),
                    super::super::read_interface(&path, device, None),
                ) else {
                    same = false;
                    break;
                };
                same &= format!("{dumped:?}") == format!("{files:?}");
            }
            drop(links);
            let checked = dump.checked.lock().unwrap().len();
            if same && checked == devices.len() {
                return;
            }
        }
        panic!("the dump never gave what the files give");
    }

    #[test]
    fn only_sysfs_is_paired_with_the_dump() {
        assert!(is_sysfs(Path::new("/sys/class/net")));
        assert!(!is_sysfs(&std::env::temp_dir()));
        assert!(!is_sysfs(Path::new("/nonexistent")));
    }

    /// A directory per device with the attributes given, as in /sys/class/net. One made again
    /// is made beside the old one before that is removed, so that it gets another inode (as a
    /// device's directory does), whatever the file system of the temporary directory.
    fn device(class_net: &Path, name: &str, attributes: &[(&str, &str)]) -> PathBuf {
        let dir = class_net.join(name);
        let new = class_net.join(format!("{name}.new"));
        std::fs::create_dir_all(&new).unwrap();
        for (attribute, value) in attributes {
            std::fs::write(new.join(attribute), format!("{value}\n")).unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&new, &dir).unwrap();
        dir
    }

    fn eth0_link() -> Link {
        Link {
            kind: 1,
            index: 2,
            flags: (libc::IFF_UP | libc::IFF_DORMANT) as u32,
            name: b"eth0".to_vec(),
            address: vec![2, 0, 0, 0, 0, 1],
            broadcast: vec![0xff; 6],
            alias: Some(b" uplink \xff".to_vec()),
            carrier: Some(1),
            carrier_changes: Some(3),
            link_mode: Some(1),
            mtu: 9001,
            group: Some(u32::MAX),
            operstate: 6,
            tx_queue_len: Some(1000),
            iflink: None,
            ..Link::default()
        }
    }

    fn eth0_dump() -> anyhow::Result<Vec<Link>> {
        Ok(vec![eth0_link()])
    }

    #[test]
    fn values_are_those_sysfs_prints() {
        let class_net = std::env::temp_dir().join(format!("link-dump-{}", std::process::id()));
        let dir = device(
            &class_net,
            "eth0",
            &[("ifindex", "2"), ("address", "02:00:00:00:00:01")],
        );
        let dump = LinkDump::with_source(eth0_dump);
        let mut links = dump.links(&[OsString::from("eth0")]).unwrap();
        let mut interface = Interface::default();
        let dir = SysDir::open(&dir).unwrap();
        let from_files = links
            .fill(OsStr::new("eth0"), &dir, &mut interface)
            .unwrap();
        std::fs::remove_dir_all(&class_net).unwrap();

        let strings: Vec<_> = interface
            .strings
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        assert_eq!(
            strings,
            [
                (c"address", "02:00:00:00:00:01"),
                (c"broadcast", "ff:ff:ff:ff:ff:ff"),
                (c"ifalias", "uplink \u{fffd}"),
                (c"operstate", "up"),
            ]
        );
        let numbers: Vec<_> = interface.numbers.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            numbers,
            [
                (c"carrier", 1),
                (c"carrier_changes", 3),
                (c"dormant", 1),
                (c"ifindex", 2),
                (c"iflink", 2),
                (c"link_mode", 1),
                (c"mtu", 9001),
                (c"netdev_group", -1),
                (c"tx_queue_len", 1000),
                (c"type", 1),
            ]
        );
        // Not dumped by this (older) kernel: read from the files.
        assert_eq!(
            from_files,
            [
                c"flags",
                c"addr_assign_type",
                c"dev_id",
                c"name_assign_type",
                c"speed",
                c"duplex",
                c"carrier_up_count",
                c"carrier_down_count",
            ]
        );
    }

    fn down_dump() -> anyhow::Result<Vec<Link>> {
        Ok(vec![Link {
            flags: 0,
            ..eth0_link()
        }])
    }

    #[test]
    fn a_device_that_is_not_running_has_no_carrier_dormant_speed_or_duplex() {
        let class_net = std::env::temp_dir().join(format!("link-dump-down-{}", std::process::id()));
        let dir = device(
            &class_net,
            "eth0",
            &[("ifindex", "2"), ("address", "02:00:00:00:00:01")],
        );
        let dump = LinkDump::with_source(down_dump);
        let mut links = dump.links(&[OsString::from("eth0")]).unwrap();
        let mut interface = Interface::default();
        let from_files = links
            .fill(
                OsStr::new("eth0"),
                &SysDir::open(&dir).unwrap(),
                &mut interface,
            )
            .unwrap();
        std::fs::remove_dir_all(&class_net).unwrap();
        assert!(!interface.numbers.contains_key(c"carrier"));
        assert!(!interface.numbers.contains_key(c"dormant"));
        assert!(!from_files.contains(&c"speed") && !from_files.contains(&c"duplex"));
    }

    #[test]
    fn a_dump_without_the_listed_names_is_not_used() {
        let dump = LinkDump::with_source(eth0_dump);
        assert!(
            dump.links(&[OsString::from("eth0"), OsString::from("eth1")])
                .is_none()
        );
        assert!(dump.links(&[OsString::from("eth1")]).is_none());
        assert!(dump.links(&[OsString::from("eth0")]).is_some());
    }

    #[test]
    fn the_check_of_a_directory_follows_its_device() {
        let class_net =
            std::env::temp_dir().join(format!("link-dump-check-{}", std::process::id()));
        let dump = LinkDump::with_source(eth0_dump);
        let fill = |dir: &Path| {
            let mut links = dump.links(&[OsString::from("eth0")]).unwrap();
            let dir = SysDir::open(dir).unwrap();
            links
                .fill(OsStr::new("eth0"), &dir, &mut Interface::default())
                .is_some()
        };

        // Another namespace's eth0 (another ifindex): never taken from the dump.
        let other = device(
            &class_net,
            "eth0",
            &[("ifindex", "7"), ("address", "02:00:00:00:00:01")],
        );
        assert!(!fill(&other));
        // The dumped device's directory: checked once, then remembered.
        let dir = device(
            &class_net,
            "eth0",
            &[("ifindex", "2"), ("address", "02:00:00:00:00:01")],
        );
        assert!(fill(&dir));
        std::fs::remove_file(dir.join("ifindex")).unwrap();
        assert!(fill(&dir), "same directory: not read again");
        // The directory made again (a new device of that name): checked again, and refused.
        let dir = device(
            &class_net,
            "eth0",
            &[("ifindex", "9"), ("address", "02:00:00:00:00:01")],
        );
        assert!(!fill(&dir));
        // A device gone from the listing is forgotten.
        let dir = device(
            &class_net,
            "eth0",
            &[("ifindex", "2"), ("address", "02:00:00:00:00:01")],
        );
        assert!(fill(&dir));
        assert!(dump.links(&[]).is_none());
        assert!(dump.checked.lock().unwrap().is_empty());
        std::fs::remove_dir_all(&class_net).unwrap();
    }
}
