//! The pure logic of the Redox system test (`tests/redox-system`): what the
//! init (`src/bin/init.rs`) reads from the programs it runs and how it keeps
//! score. Everything here is plain text handling, host-tested by
//! `cargo test -p hwbp-redox-system`; the init itself runs only on Redox.
//!
//! Lines the init reads:
//! - the target (`src/bin/target.rs`): `target: ready pid <pid> addr <a> <b>`
//!   (two watchable 8-byte words, hex) and `target: made <n> stores to <a|b>`;
//! - hwbp-selftest: its last line, `<N> passed, <M> failed`;
//! - `hwbp stat`: one row per event, the count first
//!   (`<value>  mem:0x…/8:w  (…)`, or `<scaled>  (scaled from <raw>)`);
//! - `hwbp record`: one `pid <pid> cpu … addr <a>:w bp <id>` line per
//!   record and the summary `# <r> records, <h> hits, <l> lost: <path>`.

use std::fmt::Write as _;

pub mod bench;

/// The score of one boot: every check prints `ok - …` or `FAIL - …`, and
/// sub-programs with their own verdict (hwbp-selftest) add their counts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Checks of the init itself that passed.
    pub own_passed: u32,
    /// Checks of the init itself that failed.
    pub own_failed: u32,
    /// Checks passed inside sub-programs (each selftest run's `N passed`).
    pub sub_passed: u32,
    /// Checks failed inside sub-programs.
    pub sub_failed: u32,
}

impl Tally {
    /// Score one check and return its line (`ok - what` / `FAIL - what`).
    pub fn check(&mut self, ok: bool, what: &str) -> String {
        if ok {
            self.own_passed += 1;
            format!("ok - {what}")
        } else {
            self.own_failed += 1;
            format!("FAIL - {what}")
        }
    }

    /// Add a sub-program's verdict.
    pub fn add_sub(&mut self, passed: u32, failed: u32) {
        self.sub_passed += passed;
        self.sub_failed += failed;
    }

    /// All checks passed, own and sub-programs'.
    pub fn passed(&self) -> u32 {
        self.own_passed + self.sub_passed
    }

    /// All checks failed.
    pub fn failed(&self) -> u32 {
        self.own_failed + self.sub_failed
    }

    /// The closing lines; the last one is the verdict the runner looks for.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "hwbp-system: init checks {} passed, {} failed; selftest checks {} passed, {} failed",
            self.own_passed, self.own_failed, self.sub_passed, self.sub_failed
        );
        let _ = write!(
            s,
            "{VERDICT_PREFIX}{} passed, {} failed",
            self.passed(),
            self.failed()
        );
        s
    }
}

/// The verdict line starts with this.
pub const VERDICT_PREFIX: &str = "hwbp-system: ";

/// `<N> passed, <M> failed` anywhere at the end of `line` (hwbp-selftest's
/// last line, or our own verdict line).
pub fn parse_counts(line: &str) -> Option<(u32, u32)> {
    let line = line.trim_end();
    let rest = line.strip_suffix(" failed")?;
    let (head, failed) = rest.rsplit_once(", ")?;
    let failed = failed.trim().parse().ok()?;
    let head = head.strip_suffix(" passed")?;
    let passed = head
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((passed, failed))
}

/// The last `<N> passed, <M> failed` line of a program's output.
pub fn last_counts(output: &str) -> Option<(u32, u32)> {
    output.lines().rev().find_map(parse_counts)
}

/// The final verdict of a serial log: the last line starting with
/// [`VERDICT_PREFIX`] that holds counts.
pub fn verdict_of_log(log: &str) -> Option<(u32, u32)> {
    log.lines()
        .rev()
        .filter_map(|l| l.find(VERDICT_PREFIX).map(|i| &l[i..]))
        .find_map(parse_counts)
}

/// What the target announces when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetReady {
    /// Its pid.
    pub pid: u64,
    /// Address of word A (8 bytes, 8-aligned).
    pub a: u64,
    /// Address of word B.
    pub b: u64,
}

/// The target's ready line.
pub fn format_ready(r: &TargetReady) -> String {
    format!("target: ready pid {} addr {:#x} {:#x}", r.pid, r.a, r.b)
}

/// Parse the target's ready line.
pub fn parse_ready(line: &str) -> Option<TargetReady> {
    let rest = line.trim().strip_prefix("target: ready pid ")?;
    let mut it = rest.split_whitespace();
    let pid = it.next()?.parse().ok()?;
    if it.next()? != "addr" {
        return None;
    }
    let a = parse_hex(it.next()?)?;
    let b = parse_hex(it.next()?)?;
    Some(TargetReady { pid, a, b })
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// The target's reply to `store <n> <word>`.
pub fn format_done(n: u64, word: char) -> String {
    format!("target: made {n} stores to {word}")
}

/// Parse the target's reply: (stores, word).
pub fn parse_done(line: &str) -> Option<(u64, char)> {
    let rest = line.trim().strip_prefix("target: made ")?;
    let (n, word) = rest.split_once(" stores to ")?;
    let mut w = word.chars();
    let c = w.next()?;
    if w.next().is_some() {
        return None;
    }
    Some((n.parse().ok()?, c))
}

/// A command to the target: `store <n> <a|b>`, `kread <n> <a|b>` or `exit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetCmd {
    /// Make n 8-byte stores to word a or b.
    Store(u64, char),
    /// Make n 8-byte reads from a pipe into word a or b: the kernel writes
    /// the word (at CPL 0), the task itself never does.
    KernelRead(u64, char),
    /// Exit.
    Exit,
}

/// Parse a command line sent to the target.
pub fn parse_cmd(line: &str) -> Option<TargetCmd> {
    let line = line.trim();
    if line == "exit" {
        return Some(TargetCmd::Exit);
    }
    let (kind, rest) = line.split_once(' ')?;
    let (n, w) = rest.split_once(' ')?;
    let w = match w {
        "a" => 'a',
        "b" => 'b',
        _ => return None,
    };
    let n = n.parse().ok()?;
    match kind {
        "store" => Some(TargetCmd::Store(n, w)),
        "kread" => Some(TargetCmd::KernelRead(n, w)),
        _ => None,
    }
}

/// The rows of `hwbp record`'s summary: (hits, mode, ip, access).
pub fn parse_ip_summary(output: &str) -> Vec<(u64, String, u64, String)> {
    output
        .lines()
        .skip_while(|l| !l.starts_with("# summary"))
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.parse().ok()?, f.get(1)?.to_string(), parse_hex(f.get(2)?)?, f.get(4)?.to_string()))
        })
        .collect()
}

/// The counted value for `event` in `hwbp stat` output: (value, raw) where
/// raw is the unscaled count (equal to value when not scaled). `None` if
/// the event has no row or it was not counted.
pub fn parse_stat(output: &str, event: &str) -> Option<(u64, u64)> {
    for line in output.lines() {
        let mut toks = line.split_whitespace();
        let Some(first) = toks.next() else { continue };
        let Ok(value) = first.parse::<u64>() else {
            continue;
        };
        let rest: Vec<&str> = toks.collect();
        let raw = if rest.first() == Some(&"(scaled") && rest.get(1) == Some(&"from") {
            rest.get(2)?.trim_end_matches(')').parse().ok()?
        } else {
            value
        };
        if rest.contains(&event) {
            return Some((value, raw));
        }
    }
    None
}

/// `hwbp record`'s summary: (records, hits, lost).
pub fn parse_record_summary(output: &str) -> Option<(u64, u64, u64)> {
    output.lines().rev().find_map(|l| {
        let rest = l.trim().strip_prefix("# ")?;
        let mut t = rest.split([',', ':']).map(str::trim);
        let records = t.next()?.strip_suffix(" records")?.parse().ok()?;
        let hits = t.next()?.strip_suffix(" hits")?.parse().ok()?;
        let lost = t.next()?.strip_suffix(" lost")?.parse().ok()?;
        Some((records, hits, lost))
    })
}

/// How many record lines of `hwbp record` output are for `pid` at `addr`.
pub fn count_records(output: &str, pid: u64, addr: u64) -> usize {
    let want_addr = format!("addr {addr:#x}:");
    output
        .lines()
        .filter(|l| {
            let mut t = l.split_whitespace();
            t.next() == Some("pid")
                && t.next().and_then(|p| p.parse::<u64>().ok()) == Some(pid)
                && l.contains(&want_addr)
        })
        .count()
}

/// Debug ids in a `threads-<pid>` read (u32 LE, whole ids only).
pub fn parse_thread_ids(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Pids of live processes whose name (the last column of the kernel's
/// `sys:context` listing: `PID EUID EGID STAT CPU AFFINITY TIME PRIVATE
/// SHARED NAME`) ends with `/<program>` or is `<program>`; dead (`?Z`)
/// contexts and the header are skipped; each pid once, in listing order.
pub fn pids_named(listing: &str, program: &str) -> Vec<u64> {
    let suffix = format!("/{program}");
    let mut pids = Vec::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(pid), Some(stat), Some(name)) = (fields.first(), fields.get(3), fields.last())
        else {
            continue;
        };
        let Ok(pid) = pid.parse::<u64>() else {
            continue;
        };
        if fields.len() < 10 || stat.chars().nth(1) == Some('Z') || pid == 0 {
            continue;
        }
        if (name.ends_with(&suffix) || *name == program) && !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    pids
}

/// The test-only /scheme/rand generator: splitmix64.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fill `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_own_and_sub_checks() {
        let mut t = Tally::default();
        assert_eq!(t.check(true, "a"), "ok - a");
        assert_eq!(t.check(false, "b"), "FAIL - b");
        t.add_sub(40, 2);
        assert_eq!((t.passed(), t.failed()), (41, 3));
        let s = t.summary();
        assert!(s.ends_with("hwbp-system: 41 passed, 3 failed"), "{s}");
        assert_eq!(verdict_of_log(&s), Some((41, 3)));
    }

    #[test]
    fn counts_parse_from_selftest_and_verdict_lines() {
        assert_eq!(parse_counts("40 passed, 2 failed"), Some((40, 2)));
        assert_eq!(
            parse_counts("hwbp-system: 83 passed, 0 failed\r"),
            Some((83, 0))
        );
        assert_eq!(
            parse_counts("hwbp-selftest: 5 passed, 7 failed"),
            Some((5, 7))
        );
        assert_eq!(parse_counts("ok - 3 passed"), None);
        assert_eq!(parse_counts("passed, failed"), None);
        assert_eq!(
            last_counts("x\n1 passed, 1 failed\n2 passed, 0 failed\ntrailer\n"),
            Some((2, 0))
        );
    }

    #[test]
    fn verdict_of_log_takes_the_last_verdict_even_with_serial_noise() {
        let log = "Redox OS starting\n  | 40 passed, 2 failed\nkernel: hwbp-system: 90 passed, 1 failed\nShutdown\n";
        assert_eq!(verdict_of_log(log), Some((90, 1)));
        assert_eq!(
            verdict_of_log("40 passed, 0 failed\n"),
            None,
            "a sub-program's line is no verdict"
        );
        assert_eq!(verdict_of_log(""), None);
    }

    #[test]
    fn target_lines_round_trip() {
        let r = TargetReady {
            pid: 7,
            a: 0x40_1000,
            b: 0x40_1040,
        };
        assert_eq!(parse_ready(&format_ready(&r)), Some(r));
        assert_eq!(parse_ready("target: ready pid x addr 0x1 0x2"), None);
        assert_eq!(parse_ready("target: ready pid 3 addr 1 0x2"), None);
        assert_eq!(parse_done(&format_done(1000, 'a')), Some((1000, 'a')));
        assert_eq!(parse_done("target: made 5 stores to ab"), None);
        assert_eq!(parse_cmd("store 12 b"), Some(TargetCmd::Store(12, 'b')));
        assert_eq!(parse_cmd("exit\n"), Some(TargetCmd::Exit));
        assert_eq!(parse_cmd("store 12 c"), None);
        assert_eq!(parse_cmd("store x a"), None);
        assert_eq!(parse_cmd("kread 100 b"), Some(TargetCmd::KernelRead(100, 'b')));
        assert_eq!(parse_cmd("kwrite 100 b"), None);
        assert_eq!(parse_cmd("store 5"), None);
    }

    #[test]
    fn stat_rows_parse_plain_and_scaled() {
        let out = "\n Performance counter stats for 'task/9':\n\n            1000  mem:0x401000/8:w              (100.00%; enabled 5 ns, running 5 ns, lost 0)\n             694  (scaled from 459)  mem:0x402000/8:w    (66.00%; enabled 9 ns, running 6 ns, lost 0)\n     <not counted>  mem:0x403000/8:w  (not counted; enabled 0 ns, running 0 ns, lost 0)\n";
        assert_eq!(parse_stat(out, "mem:0x401000/8:w"), Some((1000, 1000)));
        assert_eq!(parse_stat(out, "mem:0x402000/8:w"), Some((694, 459)));
        assert_eq!(parse_stat(out, "mem:0x403000/8:w"), None);
        assert_eq!(parse_stat(out, "mem:0x404000/8:w"), None);
    }

    #[test]
    fn record_output_parses() {
        let out = "pid      9 cpu   0         123456 ns  hit        1  ip 0x0000000000401234  addr 0x401000:w  bp 3\n\
                   pid      9 cpu   0         123999 ns  hit        2  ip 0x0000000000401234  addr 0x401000:w  bp 3\n\
                   pid     10 cpu   0         124000 ns  hit        3  ip 0x0000000000401234  addr 0x401000:w  bp 3\n\
                   # 3 records, 3 hits, 0 lost: task/9/mem:0x401000/8:w\n";
        assert_eq!(parse_record_summary(out), Some((3, 3, 0)));
        assert_eq!(count_records(out, 9, 0x401000), 2);
        assert_eq!(count_records(out, 9, 0x402000), 0);
        assert_eq!(parse_record_summary("nothing"), None);
    }

    #[test]
    fn pids_by_name_from_sys_context() {
        let listing = "PID   EUID  EGID  STAT  CPU  AFFINITY  TIME         PRIVATE  SHARED  NAME\n\
                       0     0     0     KR+   #0   1         00:00:01.00  0 B      0 B     [kmain]\n\
                       1     0     0     UB    #0   3         00:00:00.10  1 MB     0 B     /scheme/initfs/bin/init\n\
                       4     65534 65534 UB    #0   3         00:00:00.10  1 MB     0 B     /scheme/initfs/bin/hwbpd\n\
                       4     65534 65534 US    #0   3         00:00:00.00  1 MB     0 B     /scheme/initfs/bin/hwbpd\n\
                       7     0     0     UZ    #0   3         00:00:00.00  1 MB     0 B     /scheme/initfs/bin/hwbpd\n\
                       9     0     0     UB    #0   3         00:00:00.00  1 MB     0 B     /scheme/initfs/bin/hwbpd-helper\n";
        assert_eq!(pids_named(listing, "hwbpd"), vec![4]);
        assert_eq!(pids_named(listing, "init"), vec![1]);
        assert_eq!(pids_named(listing, "kmain"), Vec::<u64>::new());
        assert_eq!(pids_named("", "hwbpd"), Vec::<u64>::new());
    }

    #[test]
    fn thread_ids_are_whole_u32s() {
        assert_eq!(parse_thread_ids(&[1, 0, 0, 0, 2, 1, 0, 0, 9]), vec![1, 258]);
    }

    #[test]
    fn splitmix_fills_any_length_and_varies() {
        let mut g = SplitMix(1);
        let mut a = [0u8; 13];
        g.fill(&mut a);
        let mut b = [0u8; 13];
        g.fill(&mut b);
        assert_ne!(a, b);
        assert!(a.iter().any(|&x| x != 0));
    }

    #[test]
    fn the_ip_summary_rows_are_read_back() {
        let out = "pid 1 ...\n# 3 records, 3 hits, 0 lost: task/1/mem:0x1000/8:w?kernel\n\
                   # summary: hits per instruction address, by watched address and access, most first\n\
                   #     hits  mode    ip                  address             access\n\
                            2  kernel  0xffff800000123454  0x0000000000001000  w\n\
                            1  user    0x0000000000401004  0x0000000000001000  w\n\
                   # 3 records at 2 instruction addresses, 0 lost\n";
        assert_eq!(
            parse_ip_summary(out),
            [(2, "kernel".to_string(), 0xffff_8000_0012_3454, "w".to_string()), (1, "user".to_string(), 0x40_1004, "w".to_string())]
        );
        assert!(parse_ip_summary("no summary\n1 2 3\n").is_empty());
    }
}
