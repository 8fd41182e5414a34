//! `hwbp record`'s statistics summary: hits per instruction address, per
//! watched address and access type, sorted by hits — what Linux's ftrace
//! ksym tracer kept in its `trace_stat/ksym_tracer` file, for hwbp's hit
//! records.
//!
//! x86 reports which debug register fired, not whether the access was a
//! read or a write. A record of an `rw` watch is told apart with a
//! *companion*: a `w` watch on the same range, opened beside it (one more
//! debug register per piece). One access that hits both raises one #DB
//! with both B bits, so both records carry the same CPU, task, instruction
//! pointer and timestamp: a match is a write; no match is a read, but only
//! if the companion missed nothing (armed all the time it was enabled, no
//! record lost) — otherwise the hit stays `rw` (unknown).

use std::collections::HashMap;
use std::fmt::Write as _;

use libhwbp::abi::{Access, CountRecord, EventRecord};

/// First address of the kernel half on x86-64.
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

/// What a hit was, as far as the records tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HitAccess {
    /// A read (an `rw` hit its write companion did not see).
    Read,
    /// A write (a `w` watch, or an `rw` hit its companion saw too).
    Write,
    /// A read or a write: an `rw` hit without a complete companion.
    ReadOrWrite,
    /// An instruction fetch (an `x` breakpoint).
    Exec,
}

impl HitAccess {
    pub const fn as_str(self) -> &'static str {
        match self {
            HitAccess::Read => "r",
            HitAccess::Write => "w",
            HitAccess::ReadOrWrite => "rw",
            HitAccess::Exec => "x",
        }
    }
}

/// What `hwbp record` read for one event: its records and count, and
/// those of its write companion, if one was opened.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    pub records: Vec<EventRecord>,
    pub count: CountRecord,
    /// Every `period`-th hit has a record.
    pub period: u64,
    pub companion: Option<(Vec<EventRecord>, CountRecord)>,
}

/// The key two records of one #DB share.
fn exception_key(r: &EventRecord) -> (u64, u64, u64, u64) {
    (r.cpu, r.pid, r.ip, r.timestamp_ns)
}

/// The access of each of `rec.records`, in order (see the module docs).
pub fn classify(rec: &Recorded) -> Vec<HitAccess> {
    let mut writes: HashMap<(u64, u64, u64, u64), u64> = HashMap::new();
    let mut complete = false;
    if let Some((records, count)) = &rec.companion {
        for r in records {
            *writes.entry(exception_key(r)).or_default() += 1;
        }
        complete = count.lost == 0 && count.time_running_ns >= count.time_enabled_ns;
    }
    rec.records
        .iter()
        .map(|r| match r.access_kind() {
            Some(Access::Exec) => HitAccess::Exec,
            Some(Access::Write) => HitAccess::Write,
            Some(Access::ReadWrite) | None => match writes.get_mut(&exception_key(r)) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    HitAccess::Write
                }
                _ if complete => HitAccess::Read,
                _ => HitAccess::ReadOrWrite,
            },
        })
        .collect()
}

/// One row of the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpStat {
    /// Hits: records x period.
    pub hits: u64,
    /// The instruction pointer the record carries (after the access for
    /// data, the instruction for `x`).
    pub ip: u64,
    /// The watched piece that fired (x86 does not report the byte).
    pub addr: u64,
    pub access: HitAccess,
}

impl IpStat {
    /// `kernel` for an instruction in the kernel half, else `user`.
    pub fn mode(&self) -> &'static str {
        if self.ip >= KERNEL_HALF { "kernel" } else { "user" }
    }
}

/// Hits per (ip, address, access) over every event, most hits first (ties:
/// by ip, then address, then access).
pub fn ip_stats(recorded: &[Recorded]) -> Vec<IpStat> {
    let mut rows: HashMap<(u64, u64, HitAccess), u64> = HashMap::new();
    for rec in recorded {
        for (r, access) in rec.records.iter().zip(classify(rec)) {
            *rows.entry((r.ip, r.addr, access)).or_default() += rec.period.max(1);
        }
    }
    let mut out: Vec<IpStat> = rows.into_iter().map(|((ip, addr, access), hits)| IpStat { hits, ip, addr, access }).collect();
    out.sort_by(|a, b| b.hits.cmp(&a.hits).then(a.ip.cmp(&b.ip)).then(a.addr.cmp(&b.addr)).then(a.access.cmp(&b.access)));
    out
}

/// The summary as `hwbp record` prints it: a header, one row per
/// [`IpStat`], a footer with what it was made from.
pub fn format_ip_stats(recorded: &[Recorded]) -> String {
    let stats = ip_stats(recorded);
    let mut s = String::new();
    let _ = writeln!(s, "# summary: hits per instruction address, by watched address and access, most first");
    let _ = writeln!(s, "#{:>9}  {:<6}  {:<18}  {:<18}  access", "hits", "mode", "ip", "address");
    for st in &stats {
        let _ = writeln!(s, "{:>10}  {:<6}  {:#018x}  {:#018x}  {}", st.hits, st.mode(), st.ip, st.addr, st.access.as_str());
    }
    let records: usize = recorded.iter().map(|r| r.records.len()).sum();
    let lost: u64 = recorded.iter().map(|r| r.count.lost).sum();
    let ips = {
        let mut v: Vec<u64> = stats.iter().map(|s| s.ip).collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    let unknown = stats.iter().any(|s| s.access == HitAccess::ReadOrWrite);
    let _ = writeln!(
        s,
        "# {records} records at {ips} instruction addresses, {lost} lost{}",
        if unknown { "; rw: a read or a write (no complete write companion)" } else { "" }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 0xffff_8000_0010_0000;
    const IP_A: u64 = 0xffff_8000_0012_3454;
    const IP_B: u64 = 0xffff_8000_0012_3a84;

    fn rec(ip: u64, addr: u64, access: Access, t: u64) -> EventRecord {
        EventRecord { id: 1, ip, addr, access: access.code(), pid: 100, cpu: 0, timestamp_ns: t, hit: t + 1, tid: 1, flags: 0 }
    }

    fn count(lost: u64, enabled: u64, running: u64) -> CountRecord {
        CountRecord { value: 0, time_enabled_ns: enabled, time_running_ns: running, id: 1, lost }
    }

    /// Writes at IP_A at t = 0..4, reads at IP_B at t = 0 and 2; the
    /// companion saw the writes.
    fn rw_with_companion(complete: bool) -> Recorded {
        let mut records = Vec::new();
        let mut writes = Vec::new();
        for t in 0..4 {
            records.push(rec(IP_A, K, Access::ReadWrite, t));
            writes.push(rec(IP_A, K, Access::Write, t));
            if t % 2 == 0 {
                records.push(rec(IP_B, K, Access::ReadWrite, t));
            }
        }
        let c = if complete { count(0, 10, 10) } else { count(0, 10, 6) };
        Recorded { records, count: count(0, 10, 10), period: 1, companion: Some((writes, c)) }
    }

    #[test]
    fn a_companion_tells_reads_from_writes_at_the_same_address() {
        let r = rw_with_companion(true);
        let classes = classify(&r);
        assert_eq!(classes.iter().filter(|c| **c == HitAccess::Write).count(), 4);
        assert_eq!(classes.iter().filter(|c| **c == HitAccess::Read).count(), 2);
        assert_eq!(
            ip_stats(&[r]),
            [IpStat { hits: 4, ip: IP_A, addr: K, access: HitAccess::Write }, IpStat { hits: 2, ip: IP_B, addr: K, access: HitAccess::Read }]
        );
    }

    #[test]
    fn without_a_complete_companion_an_unmatched_rw_hit_stays_unknown() {
        for r in [rw_with_companion(false), Recorded { companion: None, ..rw_with_companion(true) }] {
            let has_companion = r.companion.is_some();
            let stats = ip_stats(&[r]);
            let b = stats.iter().find(|s| s.ip == IP_B).unwrap();
            assert_eq!(b.access, HitAccess::ReadOrWrite, "never called a read without proof");
            let a = stats.iter().find(|s| s.ip == IP_A).unwrap();
            assert_eq!(a.access, if has_companion { HitAccess::Write } else { HitAccess::ReadOrWrite });
        }
        let mut lossy = rw_with_companion(true);
        lossy.companion.as_mut().unwrap().1.lost = 1;
        assert!(ip_stats(&[lossy]).iter().any(|s| s.access == HitAccess::ReadOrWrite), "a companion that lost records proves nothing");
    }

    #[test]
    fn one_companion_record_matches_one_hit_only() {
        // Two rw hits in the same instant at the same ip, one write seen:
        // one write, one read.
        let r = Recorded {
            records: vec![rec(IP_A, K, Access::ReadWrite, 5), rec(IP_A, K, Access::ReadWrite, 5)],
            count: count(0, 1, 1),
            period: 1,
            companion: Some((vec![rec(IP_A, K, Access::Write, 5)], count(0, 1, 1))),
        };
        assert_eq!(classify(&r), [HitAccess::Write, HitAccess::Read]);
    }

    #[test]
    fn rows_are_sorted_by_hits_then_ip_and_count_period_hits_per_record() {
        let w = Recorded {
            records: vec![rec(0x40_1008, 0x7000, Access::Write, 1), rec(IP_B, 0x7000, Access::Write, 2), rec(IP_B, 0x7000, Access::Write, 3)],
            count: count(3, 1, 1),
            period: 5,
            companion: None,
        };
        let x = Recorded { records: vec![rec(K + 0x40, K + 0x40, Access::Exec, 4)], count: count(0, 1, 1), period: 1, companion: None };
        let stats = ip_stats(&[x, w]);
        assert_eq!(stats.iter().map(|s| (s.hits, s.ip, s.access)).collect::<Vec<_>>(), [(10, IP_B, HitAccess::Write), (5, 0x40_1008, HitAccess::Write), (1, K + 0x40, HitAccess::Exec)]);
        assert_eq!((stats[0].mode(), stats[1].mode()), ("kernel", "user"));
    }

    #[test]
    fn the_printed_summary_has_a_row_per_ip_address_and_access() {
        let text = format_ip_stats(&[rw_with_companion(true)]);
        assert_eq!(
            text,
            "\
# summary: hits per instruction address, by watched address and access, most first
#     hits  mode    ip                  address             access
         4  kernel  0xffff800000123454  0xffff800000100000  w
         2  kernel  0xffff800000123a84  0xffff800000100000  r
# 6 records at 2 instruction addresses, 0 lost
"
        );
        let unknown = format_ip_stats(&[Recorded { companion: None, ..rw_with_companion(true) }]);
        assert!(unknown.contains("rw: a read or a write"), "{unknown}");
        assert!(format_ip_stats(&[]).ends_with("# 0 records at 0 instruction addresses, 0 lost\n"));
    }
}
