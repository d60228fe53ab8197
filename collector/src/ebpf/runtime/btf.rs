//! A minimal reader of the kernel's raw BTF: just what layout discovery needs (named types, struct
//! members, enumerators, a function prototype's parameter count), read in place from the file's
//! bytes.
//!
//! A full parse of the ~5 MiB kernel BTF (btf-rs) peaked at ~50 MiB of heap, most of the daemon's
//! start-up peak, only to look up a handful of types; this keeps the bytes and one 4-byte index
//! entry per type. (aya parses the BTF again for loading, but its `Btf` does not expose members.)
use std::{ops::Range, path::Path};

use anyhow::{Context as _, bail, ensure};

/// `BTF_KIND_*` values used here (`include/uapi/linux/btf.h`).
pub const KIND_PTR: u32 = 2;
pub const KIND_STRUCT: u32 = 4;
pub const KIND_UNION: u32 = 5;
pub const KIND_ENUM: u32 = 6;
pub const KIND_TYPEDEF: u32 = 8;
pub const KIND_ENUM64: u32 = 19;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

/// Size of `struct btf_type`, which every type record starts with.
const TYPE_HEADER: usize = 12;

pub struct Btf {
    data: Vec<u8>,
    strings: Range<usize>,
    /// Byte offset in `data` of the record of type id `i + 1` (id 0 is `void`).
    records: Vec<u32>,
}

/// The common header of one type record.
#[derive(Clone, Copy, Debug)]
pub struct Type {
    pub kind: u32,
    /// Members, enumerators or parameters that follow the header.
    vlen: u32,
    /// `kind_flag`: struct member offsets carry bitfield sizes; enum values are signed.
    kind_flag: bool,
    name_off: u32,
    /// Size (structs, unions...) or referenced type id (pointers, typedefs...).
    size_or_type: u32,
    record: usize,
}

/// A struct or union member.
pub struct Member<'a> {
    pub name: &'a str,
    pub type_id: u32,
    pub bit_offset: u32,
    /// 0 for a member that is not a bitfield.
    pub bitfield_size: u32,
}

impl Btf {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        Self::parse(std::fs::read(path)?)
    }

    /// Indexes the type records of little-endian BTF (the kernel's own, on the targets we run).
    pub fn parse(data: Vec<u8>) -> anyhow::Result<Self> {
        let word = |at: usize| read_u32(&data, at);
        ensure!(
            data.get(..2) == Some(&0xeb9f_u16.to_le_bytes()[..]),
            "not little-endian BTF"
        );
        let header_len = word(4)? as usize;
        let section = |offset: usize, len: usize| -> anyhow::Result<Range<usize>> {
            let start = header_len + word(offset)? as usize;
            let range = start..start + word(len)? as usize;
            ensure!(range.end <= data.len(), "section past the end of the BTF");
            Ok(range)
        };
        let types = section(8, 12)?;
        let strings = section(16, 20)?;

        let mut records = Vec::new();
        let mut at = types.start;
        while at < types.end {
            records.push(u32::try_from(at)?);
            let info = word(at + 4)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            at += TYPE_HEADER
                + match kind {
                    1 | 14 | 17 => 4,             // int, var, decl_tag
                    3 => 12,                      // array
                    4 | 5 | 15 | 19 => 12 * vlen, // struct, union, datasec, enum64
                    6 | 13 => 8 * vlen,           // enum, func_proto
                    2 | 7..=12 | 16 | 18 => 0, // ptr, fwd, typedef & modifiers, func, float, type_tag
                    other => bail!("unknown BTF kind {other}"),
                };
        }
        ensure!(at == types.end, "truncated BTF type section");
        Ok(Self {
            data,
            strings,
            records,
        })
    }

    pub fn type_by_id(&self, id: u32) -> anyhow::Result<Type> {
        let record = *id
            .checked_sub(1)
            .and_then(|i| self.records.get(i as usize))
            .with_context(|| format!("no BTF type {id}"))? as usize;
        let info = self.word(record + 4)?;
        Ok(Type {
            kind: (info >> 24) & 0x1f,
            vlen: info & 0xffff,
            kind_flag: info >> 31 != 0,
            name_off: self.word(record)?,
            size_or_type: self.word(record + 8)?,
            record,
        })
    }

    /// The first type of `kind` named `name`.
    pub fn find(&self, name: &str, kind: u32) -> anyhow::Result<Type> {
        (1..=self.records.len() as u32)
            .map(|id| self.type_by_id(id))
            .find(|t| {
                t.as_ref()
                    .is_ok_and(|t| t.kind == kind && self.name(t.name_off).ok() == Some(name))
            })
            .with_context(|| format!("no BTF type {name}"))?
    }

    /// The name of `t` (empty for anonymous types).
    pub fn type_name(&self, t: &Type) -> anyhow::Result<&str> {
        self.name(t.name_off)
    }

    /// The type `t` refers to (pointee, typedef target...).
    pub fn referenced(&self, t: &Type) -> anyhow::Result<Type> {
        self.type_by_id(t.size_or_type)
    }

    /// What `t` (a pointer, say) refers to, with typedefs and qualifiers peeled off.
    pub fn resolve_referenced(&self, t: &Type) -> anyhow::Result<Type> {
        self.resolve(t.size_or_type)
    }

    /// `id` with typedefs and qualifiers (const, volatile...) peeled off.
    pub fn resolve(&self, id: u32) -> anyhow::Result<Type> {
        let mut t = self.type_by_id(id)?;
        while matches!(
            t.kind,
            KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
        ) {
            t = self.referenced(&t)?;
        }
        Ok(t)
    }

    /// Members of a struct or union.
    pub fn members<'a>(
        &'a self,
        t: &Type,
    ) -> anyhow::Result<impl Iterator<Item = anyhow::Result<Member<'a>>> + use<'a>> {
        ensure!(
            matches!(t.kind, KIND_STRUCT | KIND_UNION),
            "not a struct or union"
        );
        let (first, kind_flag) = (t.record + TYPE_HEADER, t.kind_flag);
        Ok((0..t.vlen as usize).map(move |i| {
            let at = first + 12 * i;
            let offset = self.word(at + 8)?;
            let (bit_offset, bitfield_size) = if kind_flag {
                (offset & 0xff_ffff, offset >> 24)
            } else {
                (offset, 0)
            };
            Ok(Member {
                name: self.name(self.word(at)?)?,
                type_id: self.word(at + 4)?,
                bit_offset,
                bitfield_size,
            })
        }))
    }

    /// The first enum (32- or 64-bit) named `name`.
    pub fn find_enum(&self, name: &str) -> anyhow::Result<Type> {
        self.find(name, KIND_ENUM)
            .or_else(|_| self.find(name, KIND_ENUM64))
    }

    /// Enumerators of an enum or enum64: name and value.
    pub fn enumerators<'a>(
        &'a self,
        t: &Type,
    ) -> anyhow::Result<impl Iterator<Item = anyhow::Result<(&'a str, i64)>> + use<'a>> {
        let (first, signed, kind) = (t.record + TYPE_HEADER, t.kind_flag, t.kind);
        let size = match kind {
            KIND_ENUM => 8,
            KIND_ENUM64 => 12,
            _ => bail!("not an enum"),
        };
        Ok((0..t.vlen as usize).map(move |i| {
            let at = first + size * i;
            let low = self.word(at + 4)?;
            let value = match (kind, signed) {
                (KIND_ENUM, true) => i64::from(low as i32),
                (KIND_ENUM, false) => i64::from(low),
                // enum64: the high word follows; unsigned values past i64::MAX wrap.
                _ => ((u64::from(self.word(at + 8)?) << 32) | u64::from(low)) as i64,
            };
            Ok((self.name(self.word(at)?)?, value))
        }))
    }

    /// Parameter count of a function prototype.
    pub fn parameter_count(&self, t: &Type) -> anyhow::Result<usize> {
        ensure!(t.kind == KIND_FUNC_PROTO, "not a function prototype");
        Ok(t.vlen as usize)
    }

    fn word(&self, at: usize) -> anyhow::Result<u32> {
        read_u32(&self.data, at)
    }

    fn name(&self, offset: u32) -> anyhow::Result<&str> {
        let start = self.strings.start + offset as usize;
        let bytes = self
            .data
            .get(start..self.strings.end)
            .context("BTF name past the string section")?;
        let len = bytes
            .iter()
            .position(|&b| b == 0)
            .context("unterminated BTF name")?;
        Ok(std::str::from_utf8(&bytes[..len])?)
    }
}

fn read_u32(data: &[u8], at: usize) -> anyhow::Result<u32> {
    let bytes = data.get(at..at + 4).context("BTF record past the end")?;
    Ok(u32::from_le_bytes(bytes.try_into()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `struct s { int a; union { int b; }; unsigned c:3; }`, `typedef void (*f)(int, int)`,
    /// `enum e { X = -1, Y = 2 }`, `enum g : u64 { Z = 1 << 40 }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0c\0f\0e\0X\0Y\0g\0Z\0";
        let name = |s: &str| {
            let needle = [b"\0", s.as_bytes(), b"\0"].concat();
            strings
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap() as u32
                + 1
        };
        let info = |kind: u32, vlen: u32, flag: bool| (u32::from(flag) << 31) | (kind << 24) | vlen;
        let mut types: Vec<u32> = Vec::new();
        // 1: int
        types.extend([name("int"), info(1, 0, false), 4, 32]);
        // 2: anonymous union { int b; }
        types.extend([0, info(KIND_UNION, 1, false), 4, name("b"), 1, 0]);
        // 3: struct s, kind_flag set: offsets carry bitfield sizes
        types.extend([name("s"), info(KIND_STRUCT, 3, true), 12]);
        types.extend([name("a"), 1, 0, 0, 2, 32, name("c"), 1, (3 << 24) | 64]);
        // 4: func_proto (int, int) returning void; 5: pointer to it; 6: typedef f
        types.extend([0, info(KIND_FUNC_PROTO, 2, false), 0, 0, 1, 0, 1]);
        types.extend([0, info(KIND_PTR, 0, false), 4]);
        types.extend([name("f"), info(KIND_TYPEDEF, 0, false), 5]);
        // 7: signed enum e; 8: enum64 g
        types.extend([name("e"), info(KIND_ENUM, 2, true), 4]);
        types.extend([name("X"), u32::MAX, name("Y"), 2]);
        types.extend([
            name("g"),
            info(KIND_ENUM64, 1, false),
            8,
            name("Z"),
            0,
            1 << 8,
        ]);
        let types: Vec<u8> = types.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut data = Vec::new();
        data.extend(0xeb9f_u16.to_le_bytes());
        data.extend([1, 0]);
        for word in [
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend(word.to_le_bytes());
        }
        data.extend(types);
        data.extend(strings);
        data
    }

    #[test]
    fn reads_members_and_prototypes() {
        let btf = Btf::parse(sample()).unwrap();
        let s = btf.find("s", KIND_STRUCT).unwrap();
        let members: Vec<_> = btf.members(&s).unwrap().map(Result::unwrap).collect();
        let summary: Vec<_> = members
            .iter()
            .map(|m| (m.name, m.type_id, m.bit_offset, m.bitfield_size))
            .collect();
        assert_eq!(summary, [("a", 1, 0, 0), ("", 2, 32, 0), ("c", 1, 64, 3)]);
        let union = btf.resolve(members[1].type_id).unwrap();
        assert_eq!(union.kind, KIND_UNION);
        let b: Vec<_> = btf.members(&union).unwrap().map(Result::unwrap).collect();
        assert_eq!(b[0].name, "b");

        let f = btf.find("f", KIND_TYPEDEF).unwrap();
        let pointer = btf.referenced(&f).unwrap();
        assert_eq!(pointer.kind, KIND_PTR);
        let proto = btf.referenced(&pointer).unwrap();
        assert_eq!(btf.parameter_count(&proto).unwrap(), 2);
        assert!(btf.find("s", KIND_UNION).is_err());
    }

    #[test]
    fn reads_enumerators() {
        let btf = Btf::parse(sample()).unwrap();
        let e = btf.find_enum("e").unwrap();
        let values: Vec<_> = btf.enumerators(&e).unwrap().map(Result::unwrap).collect();
        assert_eq!(values, [("X", -1), ("Y", 2)]);
        let g = btf.find_enum("g").unwrap();
        let values: Vec<_> = btf.enumerators(&g).unwrap().map(Result::unwrap).collect();
        assert_eq!(values, [("Z", 1 << 40)]);
        assert!(btf.find_enum("s").is_err());
        let s = btf.find("s", KIND_STRUCT).unwrap();
        assert!(btf.enumerators(&s).is_err());
    }

    /// The same readers on the running kernel's BTF: what block and net discovery look up.
    #[test]
    fn reads_this_kernels_btf() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("skipped: this kernel has no BTF at {}", path.display());
            return;
        }
        let btf = Btf::from_file(path).unwrap();

        // struct request keeps `queuelist` in an anonymous union.
        let request = btf.find("request", KIND_STRUCT).unwrap();
        let members: Vec<_> = btf.members(&request).unwrap().map(Result::unwrap).collect();
        assert!(members.iter().any(|m| m.name == "cmd_flags"));
        let anonymous = members
            .iter()
            .filter(|m| m.name.is_empty())
            .map(|m| btf.resolve(m.type_id).unwrap())
            .find(|t| {
                btf.members(t)
                    .unwrap()
                    .any(|m| m.is_ok_and(|m| m.name == "queuelist"))
            });
        assert!(anonymous.is_some(), "no anonymous member holding queuelist");

        let reasons = btf.find_enum("skb_drop_reason").unwrap();
        let reasons: Vec<_> = btf
            .enumerators(&reasons)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let value = |name: &str| reasons.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        assert_eq!(value("SKB_NOT_DROPPED_YET"), Some(0));
        assert!(value("SKB_DROP_REASON_NO_SOCKET").is_some_and(|v| v >= 2));
        assert!(value("SKB_DROP_REASON_MAX") > value("SKB_DROP_REASON_NO_SOCKET"));

        // btf_trace_kfree_skb: typedef -> pointer -> (void *, skb, location, reason...) on 5.17+.
        let typedef = btf.find("btf_trace_kfree_skb", KIND_TYPEDEF).unwrap();
        let pointer = btf.referenced(&typedef).unwrap();
        assert_eq!(pointer.kind, KIND_PTR);
        let proto = btf.referenced(&pointer).unwrap();
        assert!(btf.parameter_count(&proto).unwrap() >= 4);
    }

    #[test]
    fn rejects_truncated_btf() {
        let mut data = sample();
        data.truncate(data.len() - 20);
        assert!(Btf::parse(data).is_err());
        assert!(Btf::parse(b"\x9f\xeb".to_vec()).is_err());
    }
}
