//! The one list of collectors: every collector this daemon has, in `--help` order, and the
//! node_exporter collectors it only accepts. Adding a collector is one new file under `node/`
//! or `ebpf/` and one line here.
use crate::{
    collector::CollectorSpec,
    ebpf, node,
    node::unimplemented::{self, IgnoredCollector},
};

/// Every collector, in `--help` order.
pub const ALL: &[CollectorSpec] = &[
    node::arp::SPEC,
    node::bcache::SPEC,
    node::bcachefs::SPEC,
    node::bonding::SPEC,
    node::btrfs::SPEC,
    node::buddyinfo::SPEC,
    node::cgroups::SPEC,
    node::conntrack::SPEC,
    node::cpu::SPEC,
    node::cpu_vulnerabilities::SPEC,
    node::cpufreq::SPEC,
    node::diskstats::SPEC,
    node::dmi::SPEC,
    node::dmmultipath::SPEC,
    node::drbd::SPEC,
    node::drm::SPEC,
    node::edac::SPEC,
    node::entropy::SPEC,
    node::ethtool::SPEC,
    node::fibrechannel::SPEC,
    node::filefd::SPEC,
    node::filesystem::SPEC,
    node::hwmon::SPEC,
    node::infiniband::SPEC,
    node::interrupts::SPEC,
    node::ipvs::SPEC,
    node::kernel_hung::SPEC,
    node::ksmd::SPEC,
    node::lnstat::SPEC,
    node::loadavg::SPEC,
    node::logind::SPEC,
    node::mdadm::SPEC,
    node::meminfo::SPEC,
    node::meminfo_numa::SPEC,
    node::mountstats::SPEC,
    node::netclass::SPEC,
    node::netdev::SPEC,
    node::netstat::SPEC,
    node::network_route::SPEC,
    node::nfs::SPEC,
    node::nfsd::SPEC,
    node::nvme::SPEC,
    node::nvmesubsystem::SPEC,
    node::os::SPEC,
    node::pcidevice::SPEC,
    node::perf::SPEC,
    node::powersupplyclass::SPEC,
    node::pressure::SPEC,
    node::processes::SPEC,
    node::qdisc::SPEC,
    node::rapl::SPEC,
    node::schedstat::SPEC,
    node::selinux::SPEC,
    node::slabinfo::SPEC,
    node::sockstat::SPEC,
    node::softirqs::SPEC,
    node::softnet::SPEC,
    node::stat::SPEC,
    node::swap::SPEC,
    node::sysctl::SPEC,
    node::systemd::SPEC,
    node::tapestats::SPEC,
    node::tcpstat::SPEC,
    node::textfile::SPEC,
    node::thermal_zone::SPEC,
    node::time::SPEC,
    node::timex::SPEC,
    node::udp_queues::SPEC,
    node::uname::SPEC,
    node::vmstat::SPEC,
    node::watchdog::SPEC,
    node::wifi::SPEC,
    node::xfrm::SPEC,
    node::xfs::SPEC,
    node::zfs::SPEC,
    node::zoneinfo::SPEC,
    ebpf::block::SPEC,
    ebpf::cgroup::SPEC,
    ebpf::irq::SPEC,
    ebpf::net::SPEC,
    ebpf::sched::SPEC,
];

/// node_exporter collectors accepted and ignored (their switches and flags parse).
pub const IGNORED: &[IgnoredCollector] = unimplemented::IGNORED;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every program a descriptor names, the empty stand-ins included, is in the embedded object
    /// (a misspelt name would only show as a hook refused at run time).
    #[test]
    #[cfg(not(ebpf_stub))]
    fn every_hooks_programs_are_in_the_object() {
        let object = aya_obj::Object::parse(crate::ebpf::runtime::loader::object())
            .expect("the embedded eBPF object parses");
        let mut names: Vec<&str> = ALL
            .iter()
            .filter_map(|spec| spec.kernel)
            .flat_map(|kernel| kernel.hooks)
            .flat_map(|hook| hook.programs.iter().chain(&hook.empty_programs))
            .copied()
            .collect();
        for program in &crate::ebpf::cgroup::CGROUP_SKB_PROGRAMS {
            names.extend([program.name, program.empty]);
        }
        assert!(names.len() >= 16 * 6, "{names:?}");
        let missing: Vec<_> = names
            .iter()
            .filter(|name| !object.programs.contains_key(**name))
            .collect();
        assert!(missing.is_empty(), "not in the object: {missing:?}");
    }
}
