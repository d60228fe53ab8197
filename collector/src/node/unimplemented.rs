//! node_exporter collectors this collector does not implement (yet). Their switches and flags
//! are accepted so an existing DaemonSet's args start unchanged; using one is logged once as
//! ignored.
use crate::flags::FlagSpec;

/// An upstream collector that is accepted but does nothing.
pub struct IgnoredCollector {
    pub name: &'static str,
    /// Upstream's default on Linux.
    pub default_enabled: bool,
    pub flags: &'static [FlagSpec],
}

const fn ignored(
    name: &'static str,
    default_enabled: bool,
    flags: &'static [FlagSpec],
) -> IgnoredCollector {
    IgnoredCollector {
        name,
        default_enabled,
        flags,
    }
}

/// node_exporter 1.12's Linux collectors not implemented here, with upstream's defaults and
/// options.
pub const IGNORED: &[IgnoredCollector] = &[
    ignored(
        "ntp",
        false,
        &[
            FlagSpec::value(
                "collector.ntp.server",
                Some("127.0.0.1"),
                "NTP server to use for ntp collector",
            ),
            FlagSpec::value(
                "collector.ntp.server-port",
                Some("123"),
                "UDP port number to connect to on NTP server",
            ),
            FlagSpec::value(
                "collector.ntp.protocol-version",
                Some("4"),
                "NTP protocol version",
            ),
            FlagSpec::bool(
                "collector.ntp.server-is-local",
                false,
                "Certify that collector.ntp.server address is not a public ntp server",
            ),
            FlagSpec::value(
                "collector.ntp.ip-ttl",
                Some("1"),
                "IP TTL to use while sending NTP query",
            ),
            FlagSpec::value(
                "collector.ntp.max-distance",
                Some("3.46608s"),
                "Max accumulated distance to the root",
            ),
            FlagSpec::value(
                "collector.ntp.local-offset-tolerance",
                Some("1ms"),
                "Offset between local clock and local ntpd time to tolerate",
            ),
        ],
    ),
    ignored(
        "runit",
        false,
        &[FlagSpec::value(
            "collector.runit.servicedir",
            Some("/etc/service"),
            "Path to runit service directory.",
        )],
    ),
    ignored(
        "supervisord",
        false,
        &[FlagSpec::value(
            "collector.supervisord.url",
            Some("http://localhost:9001/RPC2"),
            "XML RPC endpoint.",
        )],
    ),
];
