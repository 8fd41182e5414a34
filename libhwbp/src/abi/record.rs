//! The records read from hwbpd: the count record (read on a breakpoint
//! handle) and the hit record (read on its `events` stream).
//!
//! Both are `#[repr(C)]`, made only of little-endian u64 fields with no
//! padding, and convert to and from bytes without `unsafe`. Their layouts
//! are the ABI: fields are only ever added at the end, in a new record
//! version with a new size.
//!
//! The hit record has two versions. Version 2 ([`EVENT_RECORD_SIZE`], 80
//! bytes) is version 1 ([`EVENT_RECORD_V1_SIZE`], 64 bytes: the first 64
//! bytes, unchanged) followed by `tid` and `flags`. A stream opened with
//! `dup(fd, "events-v2")` ([`super::EVENTS_DUP_NAME`]) reads version 2;
//! one opened with `dup(fd, "events")` ([`super::EVENTS_V1_DUP_NAME`]), as
//! clients built before version 2 do, reads version 1.

use super::event::Access;

/// Size of a [`CountRecord`] in bytes.
pub const COUNT_RECORD_SIZE: usize = 40;
/// Size of an [`EventRecord`] in bytes (version 2).
pub const EVENT_RECORD_SIZE: usize = 80;
/// Size of a version-1 hit record: the first 64 bytes of an
/// [`EventRecord`], what a stream opened as `events` returns.
pub const EVENT_RECORD_V1_SIZE: usize = 64;

/// [`EventRecord::flags`]: this breakpoint (option `stop`) stopped the
/// thread `tid`; it runs again after `resume <tid>` or `resume` on the
/// breakpoint handle, or when that handle is closed.
pub const EVENT_STOPPED: u64 = 1 << 0;
/// [`EventRecord::flags`]: the access happened in kernel mode (a syscall
/// touching a watched user buffer; counted only with the `kernel` option
/// or on kernel addresses). Such a hit never stops the thread.
pub const EVENT_KERNEL_MODE: u64 = 1 << 1;

const _: () = assert!(core::mem::size_of::<CountRecord>() == COUNT_RECORD_SIZE);
const _: () = assert!(core::mem::size_of::<EventRecord>() == EVENT_RECORD_SIZE);

/// What `read` on a breakpoint handle returns (one record per read; a
/// buffer shorter than [`COUNT_RECORD_SIZE`] is EINVAL).
///
/// | offset | field             | meaning |
/// |-------:|-------------------|---------|
/// | 0      | `value`           | hits counted while armed |
/// | 8      | `time_enabled_ns` | time the breakpoint was enabled |
/// | 16     | `time_running_ns` | time its pieces were in an armed plan |
/// | 24     | `id`              | hwbpd's id of the breakpoint (as in hit records) |
/// | 32     | `lost`            | hit records dropped because the ring was full |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CountRecord {
    pub value: u64,
    pub time_enabled_ns: u64,
    pub time_running_ns: u64,
    pub id: u64,
    pub lost: u64,
}

impl CountRecord {
    pub const OFFSET_VALUE: usize = 0;
    pub const OFFSET_TIME_ENABLED: usize = 8;
    pub const OFFSET_TIME_RUNNING: usize = 16;
    pub const OFFSET_ID: usize = 24;
    pub const OFFSET_LOST: usize = 32;

    pub fn to_bytes(&self) -> [u8; COUNT_RECORD_SIZE] {
        let mut b = [0u8; COUNT_RECORD_SIZE];
        put(&mut b, Self::OFFSET_VALUE, self.value);
        put(&mut b, Self::OFFSET_TIME_ENABLED, self.time_enabled_ns);
        put(&mut b, Self::OFFSET_TIME_RUNNING, self.time_running_ns);
        put(&mut b, Self::OFFSET_ID, self.id);
        put(&mut b, Self::OFFSET_LOST, self.lost);
        b
    }

    pub fn from_bytes(b: &[u8; COUNT_RECORD_SIZE]) -> CountRecord {
        CountRecord {
            value: get(b, Self::OFFSET_VALUE),
            time_enabled_ns: get(b, Self::OFFSET_TIME_ENABLED),
            time_running_ns: get(b, Self::OFFSET_TIME_RUNNING),
            id: get(b, Self::OFFSET_ID),
            lost: get(b, Self::OFFSET_LOST),
        }
    }

    /// Decode the first [`COUNT_RECORD_SIZE`] bytes of `b`, if there are
    /// that many.
    pub fn from_slice(b: &[u8]) -> Option<CountRecord> {
        Some(CountRecord::from_bytes(b.get(..COUNT_RECORD_SIZE)?.try_into().ok()?))
    }

    /// perf's scaling: the count extrapolated to the whole enabled time,
    /// `value * time_enabled / time_running` (rounded down, saturating).
    /// `None` when the breakpoint never ran (nothing to scale from).
    pub fn scaled_value(&self) -> Option<u64> {
        if self.time_running_ns == 0 {
            return None;
        }
        if self.time_running_ns >= self.time_enabled_ns {
            return Some(self.value);
        }
        let scaled = u128::from(self.value) * u128::from(self.time_enabled_ns) / u128::from(self.time_running_ns);
        Some(u64::try_from(scaled).unwrap_or(u64::MAX))
    }

    /// The fraction of the enabled time the breakpoint was armed, in
    /// 0.0..=1.0 (`None` if never enabled).
    pub fn running_fraction(&self) -> Option<f64> {
        (self.time_enabled_ns != 0)
            .then(|| (self.time_running_ns as f64 / self.time_enabled_ns as f64).min(1.0))
    }
}

/// One hit, as read from the `events` stream. A read returns as many
/// whole records as fit in the buffer (a buffer smaller than one record is
/// EINVAL); 0 bytes means the stream has ended (the task exited and every
/// record was read).
///
/// | offset | field       | meaning |
/// |-------:|-------------|---------|
/// | 0      | `id`        | the breakpoint's id (as in its count record) |
/// | 8      | `ip`        | instruction pointer: after the access for data watches, the instruction for `x` |
/// | 16     | `addr`      | the watched piece's address (x86 does not report the exact byte) |
/// | 24     | `access`    | the piece's condition: 0 exec, 1 write, 3 read-write ([`Access::code`]) |
/// | 32     | `pid`       | the task that hit |
/// | 40     | `cpu`       | the CPU it ran on |
/// | 48     | `timestamp_ns` | monotonic time of the hit |
/// | 56     | `hit`       | the hit's number: 1 for the first hit of this breakpoint (with `period=n`, records carry n, 2n, ...) |
/// | 64     | `tid`       | the thread that hit: the kernel's id of the context (what `resume <tid>` names) |
/// | 72     | `flags`     | [`EVENT_STOPPED`], [`EVENT_KERNEL_MODE`]; other bits are 0 |
///
/// Offsets 64 and up are version 2 only (see the module docs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EventRecord {
    pub id: u64,
    pub ip: u64,
    pub addr: u64,
    pub access: u64,
    pub pid: u64,
    pub cpu: u64,
    pub timestamp_ns: u64,
    pub hit: u64,
    pub tid: u64,
    pub flags: u64,
}

impl EventRecord {
    pub const OFFSET_ID: usize = 0;
    pub const OFFSET_IP: usize = 8;
    pub const OFFSET_ADDR: usize = 16;
    pub const OFFSET_ACCESS: usize = 24;
    pub const OFFSET_PID: usize = 32;
    pub const OFFSET_CPU: usize = 40;
    pub const OFFSET_TIMESTAMP: usize = 48;
    pub const OFFSET_HIT: usize = 56;
    pub const OFFSET_TID: usize = 64;
    pub const OFFSET_FLAGS: usize = 72;

    /// Whether this breakpoint stopped thread `tid` ([`EVENT_STOPPED`]).
    pub const fn is_stopped(&self) -> bool {
        self.flags & EVENT_STOPPED != 0
    }

    /// Whether the hit happened in kernel mode ([`EVENT_KERNEL_MODE`]).
    pub const fn is_kernel_mode(&self) -> bool {
        self.flags & EVENT_KERNEL_MODE != 0
    }

    pub fn to_bytes(&self) -> [u8; EVENT_RECORD_SIZE] {
        let mut b = [0u8; EVENT_RECORD_SIZE];
        b[..EVENT_RECORD_V1_SIZE].copy_from_slice(&self.to_bytes_v1());
        put(&mut b, Self::OFFSET_TID, self.tid);
        put(&mut b, Self::OFFSET_FLAGS, self.flags);
        b
    }

    /// The version-1 record: the first [`EVENT_RECORD_V1_SIZE`] bytes.
    pub fn to_bytes_v1(&self) -> [u8; EVENT_RECORD_V1_SIZE] {
        let mut b = [0u8; EVENT_RECORD_V1_SIZE];
        put(&mut b, Self::OFFSET_ID, self.id);
        put(&mut b, Self::OFFSET_IP, self.ip);
        put(&mut b, Self::OFFSET_ADDR, self.addr);
        put(&mut b, Self::OFFSET_ACCESS, self.access);
        put(&mut b, Self::OFFSET_PID, self.pid);
        put(&mut b, Self::OFFSET_CPU, self.cpu);
        put(&mut b, Self::OFFSET_TIMESTAMP, self.timestamp_ns);
        put(&mut b, Self::OFFSET_HIT, self.hit);
        b
    }

    pub fn from_bytes(b: &[u8; EVENT_RECORD_SIZE]) -> EventRecord {
        EventRecord { tid: get(b, Self::OFFSET_TID), flags: get(b, Self::OFFSET_FLAGS), ..Self::from_v1_prefix(b) }
    }

    /// Decode a version-1 record (`tid` and `flags` are 0: unknown).
    pub fn from_bytes_v1(b: &[u8; EVENT_RECORD_V1_SIZE]) -> EventRecord {
        Self::from_v1_prefix(b)
    }

    fn from_v1_prefix<const N: usize>(b: &[u8; N]) -> EventRecord {
        EventRecord {
            id: get(b, Self::OFFSET_ID),
            ip: get(b, Self::OFFSET_IP),
            addr: get(b, Self::OFFSET_ADDR),
            access: get(b, Self::OFFSET_ACCESS),
            pid: get(b, Self::OFFSET_PID),
            cpu: get(b, Self::OFFSET_CPU),
            timestamp_ns: get(b, Self::OFFSET_TIMESTAMP),
            hit: get(b, Self::OFFSET_HIT),
            tid: 0,
            flags: 0,
        }
    }

    pub fn from_slice(b: &[u8]) -> Option<EventRecord> {
        Some(EventRecord::from_bytes(b.get(..EVENT_RECORD_SIZE)?.try_into().ok()?))
    }

    /// The access condition, if `access` holds a known code.
    pub fn access_kind(&self) -> Option<Access> {
        Access::from_code(self.access)
    }

    /// Encode `records` one after the other into `out`; returns the bytes
    /// written (whole records only, as many as fit).
    pub fn encode_into(records: &[EventRecord], out: &mut [u8]) -> usize {
        let mut n = 0;
        for (r, chunk) in records.iter().zip(out.chunks_exact_mut(EVENT_RECORD_SIZE)) {
            chunk.copy_from_slice(&r.to_bytes());
            n += EVENT_RECORD_SIZE;
        }
        n
    }

    /// Decode the whole records in `bytes` (a trailing partial record is
    /// ignored).
    pub fn decode_all(bytes: &[u8]) -> impl Iterator<Item = EventRecord> + '_ {
        bytes
            .chunks_exact(EVENT_RECORD_SIZE)
            .map(|c| EventRecord::from_bytes(c.try_into().expect("chunks_exact yields full records")))
    }

    /// Decode the whole version-1 records in `bytes` (a stream opened as
    /// `events`).
    pub fn decode_all_v1(bytes: &[u8]) -> impl Iterator<Item = EventRecord> + '_ {
        bytes
            .chunks_exact(EVENT_RECORD_V1_SIZE)
            .map(|c| EventRecord::from_bytes_v1(c.try_into().expect("chunks_exact yields full records")))
    }
}

fn put<const N: usize>(b: &mut [u8; N], offset: usize, v: u64) {
    b[offset..offset + 8].copy_from_slice(&v.to_le_bytes());
}

fn get<const N: usize>(b: &[u8; N], offset: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[offset..offset + 8]);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn count_record_field_offsets_match_repr_c() {
        assert_eq!(offset_of!(CountRecord, value), CountRecord::OFFSET_VALUE);
        assert_eq!(offset_of!(CountRecord, time_enabled_ns), CountRecord::OFFSET_TIME_ENABLED);
        assert_eq!(offset_of!(CountRecord, time_running_ns), CountRecord::OFFSET_TIME_RUNNING);
        assert_eq!(offset_of!(CountRecord, id), CountRecord::OFFSET_ID);
        assert_eq!(offset_of!(CountRecord, lost), CountRecord::OFFSET_LOST);
    }

    #[test]
    fn event_record_field_offsets_match_repr_c() {
        assert_eq!(offset_of!(EventRecord, id), EventRecord::OFFSET_ID);
        assert_eq!(offset_of!(EventRecord, ip), EventRecord::OFFSET_IP);
        assert_eq!(offset_of!(EventRecord, addr), EventRecord::OFFSET_ADDR);
        assert_eq!(offset_of!(EventRecord, access), EventRecord::OFFSET_ACCESS);
        assert_eq!(offset_of!(EventRecord, pid), EventRecord::OFFSET_PID);
        assert_eq!(offset_of!(EventRecord, cpu), EventRecord::OFFSET_CPU);
        assert_eq!(offset_of!(EventRecord, timestamp_ns), EventRecord::OFFSET_TIMESTAMP);
        assert_eq!(offset_of!(EventRecord, hit), EventRecord::OFFSET_HIT);
        assert_eq!(offset_of!(EventRecord, tid), EventRecord::OFFSET_TID);
        assert_eq!(offset_of!(EventRecord, flags), EventRecord::OFFSET_FLAGS);
        assert_eq!(EventRecord::OFFSET_TID, EVENT_RECORD_V1_SIZE, "version 2 only appends");
    }

    #[test]
    fn version_1_is_the_first_64_bytes_of_version_2() {
        let r = EventRecord { id: 1, ip: 2, addr: 3, access: 1, pid: 5, cpu: 6, timestamp_ns: 7, hit: 8, tid: 9, flags: EVENT_STOPPED };
        let v2 = r.to_bytes();
        let v1 = r.to_bytes_v1();
        assert_eq!(&v2[..EVENT_RECORD_V1_SIZE], &v1[..]);
        assert_eq!((v2[64], v2[72]), (9, 1));
        assert_eq!(EventRecord::from_bytes_v1(&v1), EventRecord { tid: 0, flags: 0, ..r });
        assert!(r.is_stopped() && !r.is_kernel_mode());
        let two = [v1, v1].concat();
        assert_eq!(EventRecord::decode_all_v1(&two).count(), 2);
    }

    #[test]
    fn count_record_bytes_are_little_endian_in_field_order() {
        let r = CountRecord { value: 1, time_enabled_ns: 0x0203, time_running_ns: 4, id: 5, lost: 0x0600_0000_0000_0007 };
        let b = r.to_bytes();
        assert_eq!(&b[0..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[8..10], &[3, 2]);
        assert_eq!(b[16], 4);
        assert_eq!(b[24], 5);
        assert_eq!((b[32], b[39]), (7, 6));
        assert_eq!(CountRecord::from_bytes(&b), r);
        assert_eq!(CountRecord::from_slice(&b[..39]), None);
    }

    #[test]
    fn event_record_round_trips_and_decodes_batches() {
        let recs: Vec<EventRecord> = (0..3)
            .map(|i| EventRecord { id: i, ip: 0x40_0000 + i, addr: 0x1000, access: 1, pid: 7, cpu: 1, timestamp_ns: 99, hit: i + 1, tid: 3, flags: 0 })
            .collect();
        let mut buf = [0u8; EVENT_RECORD_SIZE * 3 + 10];
        assert_eq!(EventRecord::encode_into(&recs, &mut buf), EVENT_RECORD_SIZE * 3);
        assert_eq!(buf[EVENT_RECORD_SIZE + EventRecord::OFFSET_HIT], 2);
        let back: Vec<_> = EventRecord::decode_all(&buf).collect();
        assert_eq!(back, recs);
        assert_eq!(back[0].access_kind(), Some(Access::Write));
    }

    #[test]
    fn scaled_value_extrapolates_to_enabled_time() {
        let r = CountRecord { value: 100, time_enabled_ns: 3000, time_running_ns: 1000, id: 0, lost: 0 };
        assert_eq!(r.scaled_value(), Some(300));
        assert_eq!(r.running_fraction(), Some(1.0 / 3.0));
    }

    #[test]
    fn scaled_value_of_a_never_running_breakpoint_is_none() {
        let r = CountRecord { value: 0, time_enabled_ns: 3000, time_running_ns: 0, id: 0, lost: 0 };
        assert_eq!(r.scaled_value(), None);
    }

    #[test]
    fn scaled_value_saturates_instead_of_overflowing() {
        let r = CountRecord { value: u64::MAX, time_enabled_ns: u64::MAX, time_running_ns: 1, id: 0, lost: 0 };
        assert_eq!(r.scaled_value(), Some(u64::MAX));
        let full = CountRecord { value: 42, time_enabled_ns: 10, time_running_ns: 10, id: 0, lost: 0 };
        assert_eq!(full.scaled_value(), Some(42));
    }
}
