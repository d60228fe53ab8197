//! `network_route`: the unicast routes of every routing table and address family, from an
//! rtnetlink route dump, as node_exporter's network_route collector: one `route_info` series per
//! route (per next hop for a multipath route, with its weight) and a count of routes per
//! device. The attributes shown are decoded as upstream's jsimonetti/rtnetlink decodes them (an
//! address must be 4 or 16 bytes, a number 4, a multipath list well formed, or the scrape
//! fails); attributes not shown are not looked at, so unlike upstream a multicast route's u64
//! RTA_EXPIRES does not fail the scrape. Two routes with the same labels (the same route in two
//! tables) make one series, as client_golang keeps the first of duplicates; both are counted in
//! `node_network_routes`, as upstream counts them.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use anyhow::Context as _;
use netlink_packet_core::NlasIterator;
use netlink_packet_route::{
    RouteNetlinkMessage,
    route::{RouteHeader, RouteMessage},
};

use super::netlink_dump::{self, go_ip_string};
use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    metrics::MetricFamily,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "network_route",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

/// Size of `struct rtmsg`, before the attributes.
const RTMSG_LEN: usize = 12;
/// Size of `struct rtnexthop`, before a next hop's attributes.
const RTNEXTHOP_LEN: usize = 8;

struct NetworkRouteCollector;

fn build(_: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(NetworkRouteCollector))
}

/// The parts of one route message upstream shows.
#[derive(Debug, Default, PartialEq)]
struct Route {
    kind: u8,
    protocol: u8,
    destination_length: u8,
    destination: Option<Vec<u8>>,
    source: Option<Vec<u8>>,
    gateway: Option<Vec<u8>>,
    interface: u32,
    priority: u32,
    next_hops: Vec<NextHop>,
}

#[derive(Debug, Default, PartialEq)]
struct NextHop {
    interface: u32,
    hops: u8,
    gateway: Option<Vec<u8>>,
}

/// An address attribute: 4 or 16 bytes (`decodeIP`).
fn address(value: &[u8], what: &str) -> anyhow::Result<Vec<u8>> {
    if value.len() != 4 && value.len() != 16 {
        anyhow::bail!("{what}: invalid IP address length: {}", value.len());
    }
    Ok(value.to_vec())
}

/// A u32 attribute in host byte order.
fn number(value: &[u8], what: &str) -> anyhow::Result<u32> {
    let bytes: [u8; 4] = value
        .try_into()
        .map_err(|_| anyhow::anyhow!("{what}: not a uint32; length: {}", value.len()))?;
    Ok(u32::from_ne_bytes(bytes))
}

/// An `RTM_NEWROUTE` payload.
fn parse_route(payload: &[u8]) -> anyhow::Result<Route> {
    let header =
        RouteHeader::parse(payload).map_err(|e| anyhow::anyhow!("malformed route message: {e}"))?;
    let mut route = Route {
        kind: header.kind.into(),
        protocol: header.protocol.into(),
        destination_length: header.destination_prefix_length,
        ..Route::default()
    };
    if route.kind != libc::RTN_UNICAST {
        return Ok(route);
    }
    for attribute in NlasIterator::new(payload.get(RTMSG_LEN..).unwrap_or_default()) {
        let attribute = attribute.map_err(|e| anyhow::anyhow!("malformed route attribute: {e}"))?;
        let value = attribute.value();
        match attribute.kind() {
            libc::RTA_DST => route.destination = Some(address(value, "RTA_DST")?),
            libc::RTA_PREFSRC => route.source = Some(address(value, "RTA_PREFSRC")?),
            libc::RTA_GATEWAY => route.gateway = Some(address(value, "RTA_GATEWAY")?),
            libc::RTA_OIF => route.interface = number(value, "RTA_OIF")?,
            libc::RTA_PRIORITY => route.priority = number(value, "RTA_PRIORITY")?,
            libc::RTA_MULTIPATH => route.next_hops.extend(parse_next_hops(value)?),
            _ => {}
        }
    }
    Ok(route)
}

/// An `RTA_MULTIPATH` value: `struct rtnexthop`s, each followed by its attributes (the
/// `rtnh_len` bytes in all), as upstream's `multipathParser` walks them.
fn parse_next_hops(mut data: &[u8]) -> anyhow::Result<Vec<NextHop>> {
    let mut next_hops = Vec::new();
    while !data.is_empty() {
        let Some(fixed) = data.get(..RTNEXTHOP_LEN) else {
            anyhow::bail!("RTA_MULTIPATH: {} bytes left for a next hop", data.len());
        };
        let length = usize::from(u16::from_ne_bytes([fixed[0], fixed[1]]));
        let hops = fixed[3];
        let interface = u32::from_ne_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let Some(attributes) = (length >= RTNEXTHOP_LEN)
            .then(|| data.get(RTNEXTHOP_LEN..length))
            .flatten()
        else {
            anyhow::bail!(
                "RTA_MULTIPATH: next hop length {length} with {} bytes left",
                data.len()
            );
        };
        let mut next_hop = NextHop {
            interface,
            hops,
            gateway: None,
        };
        for attribute in NlasIterator::new(attributes) {
            let attribute =
                attribute.map_err(|e| anyhow::anyhow!("malformed next hop attribute: {e}"))?;
            if attribute.kind() == libc::RTA_GATEWAY {
                next_hop.gateway = Some(address(attribute.value(), "next hop RTA_GATEWAY")?);
            }
        }
        next_hops.push(next_hop);
        data = &data[length..];
    }
    Ok(next_hops)
}

/// Upstream's `networkRouteIPToString`: empty for no address.
fn ip_label(address: Option<&[u8]>) -> String {
    address.map(go_ip_string).unwrap_or_default()
}

/// Upstream's `networkRouteIPWithPrefixToString`: `default` for a zero-length prefix, else Go's
/// `net.IPNet.String()` of the address and a mask of that length, which is `<nil>` when the
/// length does not fit the address (an IPv4-mapped address counts as IPv4) or there is none.
fn destination_label(address: Option<&[u8]>, length: u8) -> String {
    if length == 0 {
        return "default".to_owned();
    }
    let v4 = address.and_then(|bytes| match bytes.len() {
        4 => Some([bytes[0], bytes[1], bytes[2], bytes[3]]),
        16 => {
            let mut octets = [0; 16];
            octets.copy_from_slice(bytes);
            std::net::Ipv6Addr::from(octets)
                .to_ipv4_mapped()
                .map(|v4| v4.octets())
        }
        _ => None,
    });
    match (v4, address) {
        (Some(v4), _) if length <= 32 => format!("{}/{length}", go_ip_string(&v4)),
        (None, Some(bytes)) if bytes.len() == 16 && length <= 128 => {
            format!("{}/{length}", go_ip_string(bytes))
        }
        _ => "<nil>".to_owned(),
    }
}

/// Upstream's `networkRouteProtocolToString` (the kernel's RTPROT_* names it knows).
fn protocol_label(protocol: u8) -> &'static str {
    match protocol {
        0 => "unspec",
        1 => "redirect",
        2 => "kernel",
        3 => "boot",
        4 => "static",
        8 => "gated",
        9 => "ra",
        10 => "mrt",
        11 => "zebra",
        12 => "bird",
        13 => "dnrouted",
        14 => "xorp",
        15 => "ntk",
        16 => "dhcp",
        17 => "mrouted",
        42 => "babel",
        186 => "bgp",
        187 => "isis",
        188 => "ospf",
        189 => "rip",
        192 => "eigrp",
        _ => "unknown",
    }
}

const LABELS: [&str; 7] = ["device", "src", "dest", "gw", "priority", "proto", "weight"];

/// The `route_info` label values of `route` (one set per next hop of a multipath route), with
/// `name` giving an interface's name.
fn route_labels(route: &Route, mut name: impl FnMut(u32) -> String) -> Vec<[String; 7]> {
    let source = ip_label(route.source.as_deref());
    let destination = destination_label(route.destination.as_deref(), route.destination_length);
    let priority = route.priority.to_string();
    let protocol = protocol_label(route.protocol).to_owned();
    if route.next_hops.is_empty() {
        return vec![[
            name(route.interface),
            source,
            destination,
            ip_label(route.gateway.as_deref()),
            priority,
            protocol,
            String::new(),
        ]];
    }
    route
        .next_hops
        .iter()
        .map(|hop| {
            [
                name(hop.interface),
                source.clone(),
                destination.clone(),
                ip_label(hop.gateway.as_deref()),
                priority.clone(),
                protocol.clone(),
                (u32::from(hop.hops) + 1).to_string(),
            ]
        })
        .collect()
}

impl Collector for NetworkRouteCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let mut names: HashMap<u32, String> = HashMap::new();
        let mut name = |index: u32| {
            names
                .entry(index)
                .or_insert_with(|| netlink_dump::interface_name(index).unwrap_or_default())
                .clone()
        };
        let mut info = MetricFamily::gauge(
            "node_network_route_info",
            "network routing table information",
        );
        let mut seen: HashSet<[String; 7]> = HashSet::new();
        let mut per_device: BTreeMap<String, u64> = BTreeMap::new();
        netlink_dump::dump(
            netlink_dump::NETLINK_ROUTE,
            RouteNetlinkMessage::GetRoute(RouteMessage::default()),
            |kind, payload| {
                if kind != libc::RTM_NEWROUTE {
                    return Ok(());
                }
                let route = parse_route(payload)?;
                if route.kind != libc::RTN_UNICAST {
                    return Ok(());
                }
                for labels in route_labels(&route, &mut name) {
                    *per_device.entry(labels[0].clone()).or_default() += 1;
                    if !seen.contains(&labels) {
                        info.push(LABELS.into_iter().zip(labels.iter().cloned()), 1.0);
                        seen.insert(labels);
                    }
                }
                Ok(())
            },
        )
        .context("couldn't get routes")?;
        let mut routes = MetricFamily::gauge("node_network_routes", "network routes by interface");
        for (device, count) in per_device {
            routes.push([("device", device)], count as f64);
        }
        out.extend([info, routes]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(value);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        bytes
    }

    fn rtmsg(family: u8, dst_len: u8, protocol: u8, kind: u8) -> Vec<u8> {
        vec![family, dst_len, 0, 0, 254, protocol, 0, kind, 0, 0, 0, 0]
    }

    fn next_hop(hops: u8, interface: u32, attributes: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&((8 + attributes.len()) as u16).to_ne_bytes());
        bytes.push(0);
        bytes.push(hops);
        bytes.extend_from_slice(&interface.to_ne_bytes());
        bytes.extend_from_slice(attributes);
        bytes
    }

    fn labels(route: &Route) -> Vec<[String; 7]> {
        route_labels(route, |index| format!("if{index}"))
    }

    #[test]
    fn single_route() {
        let mut payload = rtmsg(2, 24, 4, libc::RTN_UNICAST);
        payload.extend(attribute(libc::RTA_TABLE, &254u32.to_ne_bytes()));
        payload.extend(attribute(libc::RTA_DST, &[198, 51, 100, 0]));
        payload.extend(attribute(libc::RTA_PREFSRC, &[10, 1, 0, 1]));
        payload.extend(attribute(libc::RTA_GATEWAY, &[10, 1, 0, 2]));
        payload.extend(attribute(libc::RTA_PRIORITY, &50u32.to_ne_bytes()));
        payload.extend(attribute(libc::RTA_OIF, &3u32.to_ne_bytes()));
        // Not shown, so not decoded: a u64 where upstream wants a u32.
        payload.extend(attribute(libc::RTA_EXPIRES, &7u64.to_ne_bytes()));
        let route = parse_route(&payload).unwrap();
        assert_eq!(
            labels(&route),
            [[
                "if3",
                "10.1.0.1",
                "198.51.100.0/24",
                "10.1.0.2",
                "50",
                "static",
                ""
            ]
            .map(String::from)]
        );
    }

    #[test]
    fn multipath_route() {
        let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
        let mut hops = next_hop(1, 4, &attribute(libc::RTA_GATEWAY, &v6("fe80::1")));
        hops.extend(next_hop(
            0,
            5,
            &attribute(libc::RTA_GATEWAY, &v6("fe80::2")),
        ));
        hops.extend(next_hop(255, 6, &[]));
        let mut payload = rtmsg(10, 64, 186, libc::RTN_UNICAST);
        payload.extend(attribute(libc::RTA_DST, &v6("2001:db8:1::")));
        payload.extend(attribute(libc::RTA_PRIORITY, &1024u32.to_ne_bytes()));
        payload.extend(attribute(libc::RTA_MULTIPATH, &hops));
        let route = parse_route(&payload).unwrap();
        assert_eq!(
            labels(&route),
            [
                ["if4", "", "2001:db8:1::/64", "fe80::1", "1024", "bgp", "2"],
                ["if5", "", "2001:db8:1::/64", "fe80::2", "1024", "bgp", "1"],
                ["if6", "", "2001:db8:1::/64", "", "1024", "bgp", "256"],
            ]
            .map(|l| l.map(String::from))
        );
    }

    #[test]
    fn default_and_other_kinds() {
        let mut payload = rtmsg(2, 0, 16, libc::RTN_UNICAST);
        payload.extend(attribute(libc::RTA_GATEWAY, &[10, 1, 0, 1]));
        let route = parse_route(&payload).unwrap();
        assert_eq!(
            labels(&route),
            [["if0", "", "default", "10.1.0.1", "0", "dhcp", ""].map(String::from)]
        );
        // A local route is skipped before its attributes are read.
        let mut local = rtmsg(2, 32, 2, libc::RTN_LOCAL);
        local.extend(attribute(libc::RTA_DST, &[1, 2, 3]));
        assert_eq!(parse_route(&local).unwrap().kind, libc::RTN_LOCAL);
    }

    #[test]
    fn malformed_routes_fail() {
        let unicast = |attributes: &[u8]| {
            let mut payload = rtmsg(2, 24, 4, libc::RTN_UNICAST);
            payload.extend_from_slice(attributes);
            parse_route(&payload)
        };
        assert!(parse_route(&[2, 24, 0]).is_err(), "short header");
        assert!(unicast(&attribute(libc::RTA_DST, &[10, 0, 0])).is_err());
        assert!(unicast(&attribute(libc::RTA_GATEWAY, &[0; 8])).is_err());
        assert!(unicast(&attribute(libc::RTA_OIF, &[1, 0])).is_err());
        assert!(unicast(&attribute(libc::RTA_PRIORITY, &[0; 8])).is_err());
        let mut truncated = attribute(libc::RTA_DST, &[10, 0, 0, 0]);
        truncated.truncate(6);
        assert!(unicast(&truncated).is_err());
        // Next hops: too short for the fixed part, a length below it or beyond the data, bad
        // attributes inside.
        assert!(unicast(&attribute(libc::RTA_MULTIPATH, &[0; 4])).is_err());
        let mut short = next_hop(0, 1, &[]);
        short[..2].copy_from_slice(&4u16.to_ne_bytes());
        assert!(unicast(&attribute(libc::RTA_MULTIPATH, &short)).is_err());
        let mut long = next_hop(0, 1, &[]);
        long[..2].copy_from_slice(&64u16.to_ne_bytes());
        assert!(unicast(&attribute(libc::RTA_MULTIPATH, &long)).is_err());
        let bad_gateway = next_hop(0, 1, &attribute(libc::RTA_GATEWAY, &[1, 2]));
        assert!(unicast(&attribute(libc::RTA_MULTIPATH, &bad_gateway)).is_err());
        // An empty RTA_MULTIPATH is no next hop: a single route.
        assert_eq!(
            unicast(&attribute(libc::RTA_MULTIPATH, &[]))
                .unwrap()
                .next_hops,
            []
        );
    }

    #[test]
    fn destinations_as_go_prints_them() {
        let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec();
        assert_eq!(destination_label(None, 0), "default");
        assert_eq!(destination_label(Some(&[10, 0, 0, 0]), 8), "10.0.0.0/8");
        assert_eq!(destination_label(Some(&[10, 0, 0, 0]), 33), "<nil>");
        assert_eq!(destination_label(None, 24), "<nil>");
        assert_eq!(
            destination_label(Some(&v6("2001:db8::")), 32),
            "2001:db8::/32"
        );
        assert_eq!(destination_label(Some(&v6("::1")), 128), "::1/128");
        assert_eq!(destination_label(Some(&v6("::1")), 129), "<nil>");
        assert_eq!(
            destination_label(Some(&v6("::ffff:10.0.0.0")), 24),
            "10.0.0.0/24"
        );
        assert_eq!(destination_label(Some(&v6("::ffff:0.0.0.0")), 96), "<nil>");
    }

    #[test]
    fn protocols() {
        assert_eq!(protocol_label(2), "kernel");
        assert_eq!(protocol_label(192), "eigrp");
        assert_eq!(protocol_label(99), "unknown");
    }
}
