//! Whole-map reads, many entries per `BPF_MAP_LOOKUP_BATCH` call.
//!
//! aya 0.14 reads a map one key per syscall, and a walk adds a `GET_NEXT_KEY` per key: the
//! drop-reason array alone cost ~130 syscalls a scrape, and the cgroup map two per cgroup. A
//! batch walks hash maps bucket by bucket, so an entry deleted under it (LRU eviction) does not
//! restart the walk either.
//!
//! Batches came to hash maps in 5.6 but to arrays, per-CPU ones included, only later: on 5.10
//! (Amazon Linux 2) a batch of a per-CPU array fails with ENOTSUPP. A map whose first batch is
//! refused is read key by key (`GET_NEXT_KEY` and `LOOKUP_ELEM`) from then on.
use std::{
    io,
    marker::PhantomData,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _, RawFd},
    sync::atomic::{AtomicBool, Ordering},
};

use aya::{
    Pod,
    maps::{MapData, MapType},
};

/// Entries fetched per call, at most: many buckets of a hash map (a batch smaller than the bucket
/// at hand is refused with ENOSPC, and then doubled).
const MAX_CHUNK: usize = 256;
/// Value bytes fetched per call, at most: per-CPU histograms are ~1 KiB per CPU.
const MAX_CHUNK_BYTES: usize = 64 << 10;

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The kernel's ENOTSUPP, which reaches user space from the BPF syscall unchanged.
const ENOTSUPP: i32 = 524;

/// The element members of `union bpf_attr`, for `LOOKUP_ELEM` (`value`) and `GET_NEXT_KEY`
/// (`next_key`).
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// How to read one map in batches: its key and value sizes, checked against `K` and `V` once.
pub struct BatchReader<K, V> {
    /// The map's descriptor: buffers are sized for this map only, so `read` refuses others.
    map_fd: RawFd,
    /// Bytes per value: per-CPU maps give one 8-byte-aligned copy per possible CPU.
    value_stride: usize,
    values_per_key: usize,
    /// The batch cursor: a key for arrays, a bucket index for hash maps.
    cursor_size: usize,
    /// Entries asked for per call.
    chunk: usize,
    /// False once the kernel refused a batch of this map: read key by key.
    batches: AtomicBool,
    _types: PhantomData<(K, V)>,
}

/// Every entry of a map: `values_per_key` values per key (one per possible CPU for per-CPU maps).
pub struct Entries<K, V> {
    keys: Vec<K>,
    values: Vec<V>,
    values_per_key: usize,
}

impl<K: Pod, V: Pod> Entries<K, V> {
    /// `(key, values)` pairs; for per-CPU maps, `values[cpu]`.
    pub fn iter(&self) -> impl Iterator<Item = (K, &[V])> {
        self.keys
            .iter()
            .copied()
            .zip(self.values.chunks_exact(self.values_per_key))
    }
}

impl<K: Pod, V: Pod> BatchReader<K, V> {
    pub fn new(map: &MapData) -> anyhow::Result<Self> {
        let info = map.info()?;
        let (key_size, value_size) = (info.key_size() as usize, info.value_size() as usize);
        anyhow::ensure!(
            key_size == size_of::<K>() && value_size == size_of::<V>(),
            "map {:?}: key/value size {key_size}/{value_size}, expected {}/{}",
            info.name_as_str(),
            size_of::<K>(),
            size_of::<V>()
        );
        let per_cpu = matches!(
            info.map_type(),
            Ok(MapType::PerCpuArray | MapType::PerCpuHash | MapType::LruPerCpuHash)
        );
        let (value_stride, values_per_key) = if per_cpu {
            let cpus = aya::util::nr_cpus().map_err(|(path, e)| anyhow::anyhow!("{path}: {e}"))?;
            (value_size.next_multiple_of(8), cpus)
        } else {
            (value_size, 1)
        };
        Ok(Self {
            map_fd: map.fd().as_fd().as_raw_fd(),
            value_stride,
            values_per_key,
            cursor_size: key_size.max(size_of::<u32>()),
            chunk: (MAX_CHUNK_BYTES / (value_stride * values_per_key)).clamp(1, MAX_CHUNK),
            batches: AtomicBool::new(true),
            _types: PhantomData,
        })
    }

    /// Reads every entry of `map`, the map this reader was made for (another is refused: the
    /// kernel would write past buffers sized for this one).
    pub fn read(&self, map: &MapData) -> io::Result<Entries<K, V>> {
        let map_fd = map.fd().as_fd().as_raw_fd();
        if map_fd != self.map_fd {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "batch reader used with another map than its own",
            ));
        }
        if !self.batches.load(Ordering::Relaxed) {
            return self.read_key_by_key(map_fd);
        }
        let mut entries = Entries {
            keys: Vec::new(),
            values: Vec::new(),
            values_per_key: self.values_per_key,
        };
        let mut chunk = self.chunk;
        let mut cursor = vec![0u8; self.cursor_size];
        let mut next_cursor = vec![0u8; self.cursor_size];
        let mut keys: Vec<u8> = Vec::new();
        let mut values: Vec<u8> = Vec::new();
        let mut first = true;
        loop {
            keys.resize(chunk * size_of::<K>(), 0);
            values.resize(chunk * self.values_per_key * self.value_stride, 0);
            let mut attr = BatchAttr {
                in_batch: if first { 0 } else { cursor.as_ptr() as u64 },
                out_batch: next_cursor.as_mut_ptr() as u64,
                map_fd: map_fd as u32,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: chunk as u32,
                ..BatchAttr::default()
            };
            // SAFETY: the kernel writes at most `count` keys and values into buffers sized for
            // `count`, and a cursor of the map's key size (or a u32 bucket index) to out_batch.
            let result = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_LOOKUP_BATCH,
                    &mut attr as *mut BatchAttr,
                    size_of::<BatchAttr>(),
                )
            };
            let error = (result < 0).then(io::Error::last_os_error);
            match error.as_ref().and_then(io::Error::raw_os_error) {
                // The hash bucket at the cursor holds more than `chunk` entries.
                Some(libc::ENOSPC) if attr.count == 0 => {
                    chunk *= 2;
                    continue;
                }
                None | Some(libc::ENOENT) => {}
                // No batches for this map type (or at all) on this kernel.
                Some(ENOTSUPP | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) if first => {
                    self.batches.store(false, Ordering::Relaxed);
                    return self.read_key_by_key(map_fd);
                }
                Some(_) => return Err(error.expect("an errno comes from an error")),
            }
            let filled = attr.count as usize;
            entries.keys.extend(
                keys[..filled * size_of::<K>()]
                    .chunks_exact(size_of::<K>())
                    .map(decode::<K>),
            );
            entries.values.extend(
                values[..filled * self.values_per_key * self.value_stride]
                    .chunks_exact(self.value_stride)
                    .map(decode::<V>),
            );
            // ENOENT: the walk reached the end.
            if error.is_some() {
                return Ok(entries);
            }
            std::mem::swap(&mut cursor, &mut next_cursor);
            first = false;
        }
    }
}

impl<K: Pod, V: Pod> BatchReader<K, V> {
    /// Every entry, one `GET_NEXT_KEY` and one `LOOKUP_ELEM` each.
    fn read_key_by_key(&self, map_fd: RawFd) -> io::Result<Entries<K, V>> {
        let mut entries = Entries {
            keys: Vec::new(),
            values: Vec::new(),
            values_per_key: self.values_per_key,
        };
        let mut key = vec![0u8; size_of::<K>()];
        let mut next_key = vec![0u8; size_of::<K>()];
        let mut value = vec![0u8; self.values_per_key * self.value_stride];
        let mut first = true;
        loop {
            let mut attr = ElemAttr {
                map_fd: map_fd as u32,
                key: if first { 0 } else { key.as_ptr() as u64 },
                value_or_next_key: next_key.as_mut_ptr() as u64,
                ..ElemAttr::default()
            };
            match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(entries),
                Err(e) => return Err(e),
                Ok(()) => {}
            }
            let mut attr = ElemAttr {
                map_fd: map_fd as u32,
                key: next_key.as_ptr() as u64,
                value_or_next_key: value.as_mut_ptr() as u64,
                ..ElemAttr::default()
            };
            match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
                // Deleted between the two calls (an LRU eviction): skipped.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
                Ok(()) => {
                    entries.keys.push(decode::<K>(&next_key));
                    entries
                        .values
                        .extend(value.chunks_exact(self.value_stride).map(decode::<V>));
                }
            }
            std::mem::swap(&mut key, &mut next_key);
            first = false;
        }
    }
}

/// One element command of the bpf syscall.
fn bpf(command: libc::c_long, attr: &mut ElemAttr) -> io::Result<()> {
    // SAFETY: `attr` is the element member of `union bpf_attr`; the pointers in it are to
    // buffers of the map's key and value sizes (all CPUs' copies for a per-CPU map).
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *mut ElemAttr,
            size_of::<ElemAttr>(),
        )
    };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A `T` from the first `size_of::<T>()` bytes the kernel wrote.
fn decode<T: Pod>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: T is Pod (any bit pattern is valid) and `bytes` holds enough of them.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{FromRawFd as _, OwnedFd};

    use super::*;

    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

    /// A new map straight from the kernel; `None` without the privilege to create one.
    fn create_map(map_type: u32, key_size: u32, value_size: u32, entries: u32) -> Option<MapData> {
        // map_type, key_size, value_size, max_entries, map_flags; the rest of the attr zero.
        let attr: [u32; 30] = {
            let mut attr = [0; 30];
            attr[..4].copy_from_slice(&[map_type, key_size, value_size, entries]);
            attr
        };
        // SAFETY: BPF_MAP_CREATE reads a bpf_attr of the given size.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, attr.as_ptr(), 120) };
        if fd < 0 {
            let error = io::Error::last_os_error();
            assert_eq!(
                error.raw_os_error(),
                Some(libc::EPERM),
                "BPF_MAP_CREATE: {error}"
            );
            eprintln!("skipped: creating BPF maps needs CAP_BPF");
            return None;
        }
        // SAFETY: the kernel just returned this descriptor to us.
        Some(MapData::from_fd(unsafe { OwnedFd::from_raw_fd(fd as i32) }).unwrap())
    }

    fn update<K, V>(map: &MapData, key: &K, value: &V) {
        #[repr(C)]
        struct Attr {
            map_fd: u32,
            _pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let attr = Attr {
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            _pad: 0,
            key: std::ptr::from_ref(key) as u64,
            value: std::ptr::from_ref(value) as u64,
            flags: 0,
        };
        // SAFETY: key and value point to the map's key and value sizes.
        let result =
            unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_UPDATE_ELEM, &attr, size_of::<Attr>()) };
        assert_eq!(result, 0, "{}", io::Error::last_os_error());
    }

    #[test]
    fn reads_every_entry_of_a_hash_map_across_chunks_and_crowded_buckets() {
        const HASH: u32 = 1;
        let Some(map) = create_map(HASH, 8, 8, 1000) else {
            return;
        };
        for key in 0..1000u64 {
            update(&map, &key, &(key * 3));
        }
        let reader = BatchReader::<u64, u64>::new(&map).unwrap();
        assert_eq!(reader.chunk, MAX_CHUNK);
        // Starting at one entry per call: a bucket holding two or more is refused (ENOSPC)
        // until the chunk has grown to fit it.
        let mut one_at_a_time = BatchReader::<u64, u64>::new(&map).unwrap();
        one_at_a_time.chunk = 1;
        let key_by_key = BatchReader::<u64, u64>::new(&map).unwrap();
        key_by_key.batches.store(false, Ordering::Relaxed);
        for reader in [reader, one_at_a_time, key_by_key] {
            let mut seen: Vec<(u64, u64)> = reader
                .read(&map)
                .unwrap()
                .iter()
                .map(|(key, values)| (key, values[0]))
                .collect();
            seen.sort();
            assert_eq!(seen, (0..1000).map(|k| (k, k * 3)).collect::<Vec<_>>());
        }
    }

    #[test]
    fn reads_an_lru_hash_filled_to_a_multiple_of_the_chunk() {
        // The last full chunk ends the walk with an empty call (ENOENT, count 0).
        const LRU_HASH: u32 = 9;
        let Some(map) = create_map(LRU_HASH, 8, 8, 4096) else {
            return;
        };
        for key in 0..512u64 {
            update(&map, &key, &!key);
        }
        let entries = BatchReader::<u64, u64>::new(&map)
            .unwrap()
            .read(&map)
            .unwrap();
        let mut read: Vec<(u64, u64)> = entries.iter().map(|(k, v)| (k, v[0])).collect();
        read.sort();
        assert_eq!(read, (0..512).map(|k| (k, !k)).collect::<Vec<_>>());
    }

    #[test]
    fn refuses_a_map_it_was_not_made_for() {
        const HASH: u32 = 1;
        let (Some(small), Some(large)) = (create_map(HASH, 8, 8, 4), create_map(HASH, 8, 64, 4))
        else {
            return;
        };
        let reader = BatchReader::<u64, u64>::new(&small).unwrap();
        let error = reader.read(&large).err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn reads_one_value_per_possible_cpu_of_a_per_cpu_array() {
        const PERCPU_ARRAY: u32 = 6;
        let Some(map) = create_map(PERCPU_ARRAY, 4, 4, 300) else {
            return;
        };
        let cpus = aya::util::nr_cpus().unwrap();
        // 4-byte values: the kernel pads each CPU's copy to 8 bytes.
        let mut padded = vec![0u64; cpus];
        for key in 0..300u32 {
            for (cpu, slot) in padded.iter_mut().enumerate() {
                *slot = u64::from(key * 100 + cpu as u32);
            }
            update(&map, &key, &padded[0]);
        }
        // In batches, and key by key as on kernels that refuse batches of arrays (5.10).
        let key_by_key = BatchReader::<u32, u32>::new(&map).unwrap();
        key_by_key.batches.store(false, Ordering::Relaxed);
        for reader in [BatchReader::<u32, u32>::new(&map).unwrap(), key_by_key] {
            let entries = reader.read(&map).unwrap();
            let read: Vec<(u32, Vec<u32>)> = entries.iter().map(|(k, v)| (k, v.to_vec())).collect();
            assert_eq!(read.len(), 300);
            for (key, values) in read {
                let expected: Vec<u32> = (0..cpus as u32).map(|cpu| key * 100 + cpu).collect();
                assert_eq!(values, expected, "key {key}");
            }
        }
    }

    #[test]
    fn attr_matches_the_kernel_layout() {
        // offsetof in union bpf_attr's batch member, from include/uapi/linux/bpf.h.
        assert_eq!(std::mem::offset_of!(BatchAttr, keys), 16);
        assert_eq!(std::mem::offset_of!(BatchAttr, values), 24);
        assert_eq!(std::mem::offset_of!(BatchAttr, count), 32);
        assert_eq!(std::mem::offset_of!(BatchAttr, map_fd), 36);
        assert_eq!(std::mem::offset_of!(BatchAttr, flags), 48);
        assert_eq!(size_of::<BatchAttr>(), 56);
        // And in its element member (map_fd, key, value / next_key, flags).
        assert_eq!(std::mem::offset_of!(ElemAttr, key), 8);
        assert_eq!(std::mem::offset_of!(ElemAttr, value_or_next_key), 16);
        assert_eq!(std::mem::offset_of!(ElemAttr, flags), 24);
    }
}
