//! Raw netlink requests and attributes for the collectors whose upstream libraries decode
//! netlink by hand (`qdisc`: ema/qdisc; `wifi`: mdlayher/wifi over mdlayher/genetlink); not a
//! collector. Requests go through [`netlink_dump`] (its deadline and fixed receive buffer);
//! this adds what those libraries add on top: a request of any type and payload, attributes
//! decoded as mdlayher/netlink's `UnmarshalAttributes` decodes them, integers as its `nlenc`
//! reads them (native byte order; a value shorter than its type is an error here where Go
//! panics), and generic netlink (family lookup, the 4-byte `genlmsghdr`).
use anyhow::Context as _;
use netlink_packet_core::NetlinkSerializable;

use super::netlink_dump;

/// A request of a given message type with a ready-made payload.
#[derive(Clone, Debug)]
pub struct RawRequest {
    pub message_type: u16,
    pub payload: Vec<u8>,
}

impl NetlinkSerializable for RawRequest {
    fn message_type(&self) -> u16 {
        self.message_type
    }

    fn buffer_len(&self) -> usize {
        self.payload.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer.copy_from_slice(&self.payload);
    }
}

/// One attribute: its type as sent (flag bits included, as mdlayher's `Attribute.Type`) and
/// its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attribute<'a> {
    pub kind: u16,
    pub data: &'a [u8],
}

/// mdlayher/netlink's `UnmarshalAttributes`: attributes of length 0 are skipped (stepping over
/// a header), a length of 1 to 3 or past the end of `bytes`, or a tail shorter than a header,
/// is an error; each attribute is padded to 4 bytes.
pub fn attributes(bytes: &[u8]) -> anyhow::Result<Vec<Attribute<'_>>> {
    const INVALID: &str = "invalid attribute; length too short or too large";
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (Some(length), Some(kind)) = (rest.get(0..2), rest.get(2..4)) else {
            anyhow::bail!(INVALID);
        };
        let length = u16::from_ne_bytes([length[0], length[1]]) as usize;
        let kind = u16::from_ne_bytes([kind[0], kind[1]]);
        if length > rest.len() || (1..4).contains(&length) {
            anyhow::bail!(INVALID);
        }
        if length != 0 {
            out.push(Attribute {
                kind,
                data: &rest[4..length],
            });
        }
        let step = length.max(4).next_multiple_of(4);
        rest = rest.get(step..).unwrap_or_default();
    }
    Ok(out)
}

/// Appends an attribute (header, `data`, padding) to `out`, as mdlayher's encoder does.
pub fn push_attribute(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let length = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&length.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn fixed<const N: usize>(data: &[u8], what: &str) -> anyhow::Result<[u8; N]> {
    data.get(..N)
        .and_then(|bytes| bytes.try_into().ok())
        .with_context(|| format!("{what}: {} bytes, expected at least {N}", data.len()))
}

/// `binary.NativeEndian.Uint16(data)`: the first two bytes.
pub fn u16_at(data: &[u8], what: &str) -> anyhow::Result<u16> {
    fixed(data, what).map(u16::from_ne_bytes)
}

/// `binary.NativeEndian.Uint32(data)`: the first four bytes.
pub fn u32_at(data: &[u8], what: &str) -> anyhow::Result<u32> {
    fixed(data, what).map(u32::from_ne_bytes)
}

/// `binary.NativeEndian.Uint64(data)`: the first eight bytes.
pub fn u64_at(data: &[u8], what: &str) -> anyhow::Result<u64> {
    fixed(data, what).map(u64::from_ne_bytes)
}

/// `nlenc.String`: trailing NULs dropped. Bytes that are not UTF-8 become U+FFFD (a label
/// value must be UTF-8; Go would refuse the metric).
pub fn nl_string(data: &[u8]) -> String {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&data[..end]).into_owned()
}

/// `GENL_ID_CTRL`, the generic netlink controller's family.
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const CTRL_ATTR_VERSION: u16 = 3;

/// A generic netlink family: its message type and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenericFamily {
    pub id: u16,
    pub version: u8,
}

/// The generic netlink family `name` (mdlayher/genetlink's `GetFamily`, from a dump of the
/// controller's families); `None` when the kernel has no such family (the module is not
/// loaded), which genetlink reports as `os.ErrNotExist`.
pub fn generic_family(name: &str) -> anyhow::Result<Option<GenericFamily>> {
    let mut found = None;
    generic_dump(
        GenericFamily {
            id: GENL_ID_CTRL,
            version: 1,
        },
        CTRL_CMD_GETFAMILY,
        Vec::new(),
        |_, payload| {
            if found.is_some() {
                return Ok(());
            }
            let mut id = None;
            let mut family_name = None;
            let mut version = 0;
            for attribute in attributes(payload)? {
                match attribute.kind {
                    CTRL_ATTR_FAMILY_ID => id = Some(u16_at(attribute.data, "family id")?),
                    CTRL_ATTR_FAMILY_NAME => family_name = Some(nl_string(attribute.data)),
                    CTRL_ATTR_VERSION => version = u32_at(attribute.data, "family version")? as u8,
                    _ => {}
                }
            }
            if let (Some(id), Some(family_name)) = (id, family_name)
                && family_name == name
            {
                found = Some(GenericFamily { id, version });
            }
            Ok(())
        },
    )
    .context("listing generic netlink families")?;
    Ok(found)
}

/// Dumps `command` of `family` with the attributes `request` (already encoded), calling
/// `each` with the command and attributes of every reply (mdlayher/genetlink's `Execute` with
/// `Request|Dump`: a message shorter than the generic header or with its reserved bytes set is
/// an error).
pub fn generic_dump(
    family: GenericFamily,
    command: u8,
    request: Vec<u8>,
    mut each: impl FnMut(u8, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut payload = vec![command, family.version, 0, 0];
    payload.extend_from_slice(&request);
    netlink_dump::dump(
        netlink_sys::protocols::NETLINK_GENERIC,
        RawRequest {
            message_type: family.id,
            payload,
        },
        |_, message| match message {
            [command, _, 0, 0, attributes @ ..] => each(*command, attributes),
            _ => anyhow::bail!("generic netlink message is invalid or too short"),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_attribute(&mut out, kind, data);
        out
    }

    #[test]
    fn attributes_decode_as_mdlayher_decodes_them() {
        let mut bytes = attribute(1, b"abc");
        bytes.extend(attribute(0x8002, &[1, 2, 3, 4]));
        bytes.extend([0, 0, 9, 9]); // length 0: skipped
        bytes.extend(attribute(3, &[]));
        let decoded = attributes(&bytes).unwrap();
        assert_eq!(
            decoded,
            [
                Attribute {
                    kind: 1,
                    data: b"abc"
                },
                Attribute {
                    kind: 0x8002,
                    data: &[1, 2, 3, 4]
                },
                Attribute { kind: 3, data: &[] },
            ]
        );
        assert_eq!(attributes(&[]).unwrap(), []);
        // The last attribute may lack its padding.
        assert_eq!(attributes(&bytes[..7]).unwrap().len(), 1);
        for bad in [
            &[1u8][..],
            &[8, 0, 1, 0, 1, 2],
            &[2, 0, 1, 0],
            &[4, 0, 1, 0, 0, 0],
        ] {
            assert!(attributes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn integers_and_strings() {
        assert_eq!(u16_at(&7u16.to_ne_bytes(), "x").unwrap(), 7);
        assert_eq!(
            u32_at(&[1, 0, 0, 0, 9], "x").unwrap(),
            u32::from_ne_bytes([1, 0, 0, 0])
        );
        assert_eq!(u64_at(&u64::MAX.to_ne_bytes(), "x").unwrap(), u64::MAX);
        let error = u32_at(&[1, 2], "frequency").unwrap_err();
        assert_eq!(error.to_string(), "frequency: 2 bytes, expected at least 4");
        assert!(u64_at(&[0; 7], "x").is_err());
        assert_eq!(nl_string(b"wlan0\0\0"), "wlan0");
        assert_eq!(nl_string(b"a\0b\0"), "a\0b");
        assert_eq!(nl_string(b"\xffx"), "\u{FFFD}x");
        assert_eq!(nl_string(b""), "");
    }

    #[test]
    fn requests_serialize_their_payload() {
        let request = RawRequest {
            message_type: 38,
            payload: vec![0; 20],
        };
        assert_eq!(request.message_type(), 38);
        assert_eq!(request.buffer_len(), 20);
        let mut buffer = [1u8; 20];
        request.serialize(&mut buffer);
        assert_eq!(buffer, [0; 20]);
    }

    #[test]
    fn the_controller_knows_itself() {
        // Every kernel with generic netlink has the controller family, "nlctrl".
        let family = generic_family("nlctrl").unwrap().unwrap();
        assert_eq!(family.id, GENL_ID_CTRL);
        assert_eq!(generic_family("no-such-family").unwrap(), None);
    }
}
