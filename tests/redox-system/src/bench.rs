//! The host-testable part of `hwbp-bench` (`src/bin/bench.rs`), the hwbp
//! half of issue 13's comparison with Linux (`tests/linux-compare`):
//! medians, the per-hit difference, the rdtsc calibration verdict, the
//! output lines `table.py` reads, and the bench's own check tally.
//!
//! Output lines, one each, in the format of the Linux half's `init.c`:
//!
//! ```text
//! figure <key> <median> reps=<n> min=<m> max=<M>   guest instructions
//! check <name> ok|FAIL <details>                   a sanity check
//! calib <name> <value> ...                         the rdtsc/icount checks
//! hwbp-bench: <N> passed, <M> failed               last line (the checks)
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The figure keys both halves print, in table order.
pub const KEYS: [&str; 5] = [
    "open_close",
    "counted_hit",
    "sampled_hit",
    "enable_disable_64",
    "enable_disable_1000",
];

/// Stores per rep in the hit figures.
pub const HITS: u64 = 64;
/// Reps of the hit figures.
pub const HIT_REPS: usize = 301;
/// Reps of open + close.
pub const OPEN_REPS: usize = 1001;
/// (threads, reps) of the enable + disable figures, as the Linux half.
pub const ENABLE_RUNS: [(usize, usize); 2] = [(64, 201), (1000, 31)];
/// Loop lengths of the calibration (K iterations = 2K instructions).
pub const CALIB_KS: [u64; 4] = [1_000, 10_000, 100_000, 1_000_000];
/// Reps per calibration loop length.
pub const CALIB_REPS: usize = 51;
/// What a `dec; jnz` loop of K iterations reads beyond its 2K instructions
/// when it is timed as the Linux half times it (`init.c`, gcc -O2): the
/// three moves between the first rdtsc and the loop, and the second rdtsc.
pub const CALIB_CONSTANT: u64 = 4;

/// Median, minimum and maximum of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// `v[n / 2]` of the sorted samples (the upper median for even n, as
    /// the Linux half's `stats_of`).
    pub median: u64,
    /// Smallest sample.
    pub min: u64,
    /// Largest sample.
    pub max: u64,
    /// Number of samples.
    pub n: usize,
}

/// Sort `v` and take its statistics; `None` for no samples.
pub fn stats_of(v: &mut [u64]) -> Option<Stats> {
    v.sort_unstable();
    Some(Stats {
        median: *v.get(v.len() / 2)?,
        min: *v.first()?,
        max: *v.last()?,
        n: v.len(),
    })
}

/// Samples minus the timing overhead (never below 0).
pub fn minus_overhead(v: &mut [u64], overhead: u64) {
    for x in v {
        *x = x.saturating_sub(overhead);
    }
}

/// Per-hit cost: (watched median − unwatched median) / hits, rounded to
/// the nearest (as `init.c`'s `per_hit`); 0 if the watched median is not
/// above the unwatched one or `hits` is 0.
pub fn per_hit(watched: u64, unwatched: u64, hits: u64) -> u64 {
    if watched <= unwatched || hits == 0 {
        return 0;
    }
    (watched - unwatched + hits / 2) / hits
}

/// `figure <key> <value> reps=<n> min=<m> max=<M>` (min/max of the raw
/// samples the figure came from).
pub fn figure_line(key: &str, value: u64, raw: &Stats) -> String {
    format!(
        "figure {key} {value} reps={} min={} max={}",
        raw.n, raw.min, raw.max
    )
}

/// The verdict of one calibration loop length: the fastest rep must read
/// exactly 2K + [`CALIB_CONSTANT`] (rdtsc counts retired instructions; an
/// interrupt can only add), and so must the median unless the loop is long
/// enough for interrupts to land in most reps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalibLoop {
    /// Iterations.
    pub k: u64,
    /// Statistics of the reads.
    pub stats: Stats,
}

impl CalibLoop {
    /// The instructions the loop executes: 2K.
    pub fn instructions(&self) -> u64 {
        2 * self.k
    }

    /// What an exact instruction count reads.
    pub fn expected(&self) -> u64 {
        self.instructions() + CALIB_CONSTANT
    }

    /// The minimum is exact.
    pub fn exact(&self) -> bool {
        self.stats.min == self.expected()
    }

    /// The `calib loop` line (the Linux half's format).
    pub fn line(&self) -> String {
        format!(
            "calib loop k={} instructions={} median={} min={} max={}",
            self.k,
            self.instructions(),
            self.stats.median,
            self.stats.min,
            self.stats.max
        )
    }
}

/// Loops up to this many iterations must read exactly 2K + 4 in the
/// median too (0.2 ms of virtual time: a timer tick every few ms lands in a
/// few percent of the reps at most); longer ones only in the minimum.
pub const CALIB_MEDIAN_MAX_K: u64 = 100_000;

/// The `check calib_loop` verdict over every loop length: each minimum is
/// 2K + 4, and so is each median up to [`CALIB_MEDIAN_MAX_K`] (a median
/// off by interrupts would mean the figures' medians are not instruction
/// counts either).
pub fn calib_check(loops: &[CalibLoop]) -> (bool, String) {
    let mut details = String::new();
    let mut ok = !loops.is_empty();
    for l in loops {
        let _ = write!(
            details,
            "k={}: median-2K={} min-2K={}; ",
            l.k,
            l.stats.median as i128 - i128::from(l.instructions()),
            l.stats.min as i128 - i128::from(l.instructions())
        );
        ok &= l.exact() && (l.k > CALIB_MEDIAN_MAX_K || l.stats.median == l.expected());
    }
    let _ = write!(
        details,
        "(want 2K+{CALIB_CONSTANT}: rdtsc counts guest instructions)"
    );
    (ok, details)
}

/// The bench's checks: `check <name> ok|FAIL <details>` lines and the
/// closing `hwbp-bench: N passed, M failed` (the form hwbp-system's init
/// adds to its tally).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Checks {
    /// Checks that passed.
    pub passed: u32,
    /// Checks that failed.
    pub failed: u32,
}

impl Checks {
    /// Score a check and return its line.
    pub fn check(&mut self, name: &str, ok: bool, details: &str) -> String {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        let verdict = if ok { "ok" } else { "FAIL" };
        if details.is_empty() {
            format!("check {name} {verdict}")
        } else {
            format!("check {name} {verdict} {details}")
        }
    }

    /// The last line.
    pub fn summary(&self) -> String {
        format!(
            "hwbp-bench: {} passed, {} failed",
            self.passed, self.failed
        )
    }
}

/// The `figure` lines of a log (what `table.py` reads): key → value; a
/// later line for the same key wins. Lines are trimmed first (a serial log
/// may carry `\r`), anything else is ignored.
pub fn parse_figures(log: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in log.lines() {
        let mut t = line.split_whitespace();
        if t.next() != Some("figure") {
            continue;
        }
        let (Some(key), Some(value)) = (t.next(), t.next()) else {
            continue;
        };
        if let Ok(v) = value.parse() {
            out.insert(key.to_string(), v);
        }
    }
    out
}

/// The `check` lines of a log that failed: their names.
pub fn failed_checks(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let mut t = l.split_whitespace();
            (t.next() == Some("check")).then_some(())?;
            let name = t.next()?;
            (t.next() == Some("FAIL")).then(|| name.to_string())
        })
        .collect()
}

/// What the hit records of the sampled figure must be: every one for the
/// watched address and the bench's pid, hit numbers 1, 2, ... in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecordTally {
    /// Records read.
    pub records: u64,
    /// Records whose address is not the watched word.
    pub wrong_addr: u64,
    /// Records of another pid.
    pub wrong_pid: u64,
    /// Records whose hit number is not the previous one + 1.
    pub out_of_order: u64,
}

impl RecordTally {
    /// Account one record (address, pid, hit number).
    pub fn add(&mut self, addr: u64, pid: u64, hit: u64, want_addr: u64, want_pid: u64) {
        self.records += 1;
        if addr != want_addr {
            self.wrong_addr += 1;
        }
        if pid != want_pid {
            self.wrong_pid += 1;
        }
        if hit != self.records {
            self.out_of_order += 1;
        }
    }

    /// All records arrived, each as it should be.
    pub fn complete(&self, want: u64) -> bool {
        self.records == want && self.wrong_addr == 0 && self.wrong_pid == 0 && self.out_of_order == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_take_the_upper_median_like_init_c() {
        let mut v = [5, 1, 4, 2, 3];
        assert_eq!(
            stats_of(&mut v),
            Some(Stats { median: 3, min: 1, max: 5, n: 5 })
        );
        let mut even = [4, 1, 3, 2];
        assert_eq!(stats_of(&mut even).map(|s| s.median), Some(3));
        assert_eq!(stats_of(&mut []), None);
        let mut one = [7];
        assert_eq!(
            stats_of(&mut one),
            Some(Stats { median: 7, min: 7, max: 7, n: 1 })
        );
    }

    #[test]
    fn overhead_is_subtracted_without_wrapping() {
        let mut v = [10, 2, 3];
        minus_overhead(&mut v, 3);
        assert_eq!(v, [7, 0, 0]);
    }

    #[test]
    fn per_hit_rounds_to_nearest_and_never_underflows() {
        assert_eq!(per_hit(64 * 100 + 500, 500, 64), 100);
        assert_eq!(per_hit(500 + 64 * 100 + 31, 500, 64), 100);
        assert_eq!(per_hit(500 + 64 * 100 + 32, 500, 64), 101);
        assert_eq!(per_hit(400, 500, 64), 0);
        assert_eq!(per_hit(500, 500, 64), 0);
        assert_eq!(per_hit(600, 500, 0), 0);
    }

    #[test]
    fn figure_lines_read_back_as_table_py_reads_them() {
        let s = Stats { median: 12, min: 10, max: 99, n: 1001 };
        let line = figure_line("open_close", 9, &s);
        assert_eq!(line, "figure open_close 9 reps=1001 min=10 max=99");
        let log = format!("noise\r\n{line}\r\n  figure counted_hit 480 reps=301\nfigure bad x\nfigures x 1\nfigure open_close 11 later\n");
        let f = parse_figures(&log);
        assert_eq!(f.get("open_close"), Some(&11), "the later line wins");
        assert_eq!(f.get("counted_hit"), Some(&480), "leading blanks are trimmed");
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn calibration_wants_exactly_2k_plus_4() {
        let exact = |k: u64| CalibLoop {
            k,
            stats: Stats { median: 2 * k + 4, min: 2 * k + 4, max: 2 * k + 900, n: 51 },
        };
        let loops: Vec<_> = CALIB_KS.iter().map(|&k| exact(k)).collect();
        let (ok, details) = calib_check(&loops);
        assert!(ok, "{details}");
        assert!(details.contains("k=1000: median-2K=4 min-2K=4"), "{details}");
        assert_eq!(
            loops[0].line(),
            "calib loop k=1000 instructions=2000 median=2004 min=2004 max=2900"
        );

        let mut off = loops.clone();
        off[2].stats.min = 200_003;
        off[2].stats.median = 200_003;
        assert!(!calib_check(&off).0, "one instruction short fails");
        let mut noisy = loops.clone();
        noisy[2].stats.median += 1000;
        assert!(!calib_check(&noisy).0, "a median off by interrupts fails");
        let mut long = loops;
        long[3].stats.median += 2571;
        assert!(
            calib_check(&long).0,
            "a 2M-instruction loop may see a timer tick in most reps (Linux's does)"
        );
        assert!(!calib_check(&[]).0, "no calibration is no pass");
    }

    #[test]
    fn checks_tally_and_print_like_the_linux_half() {
        let mut c = Checks::default();
        assert_eq!(c.check("open_close", true, "errno=0"), "check open_close ok errno=0");
        assert_eq!(c.check("x", false, ""), "check x FAIL");
        assert_eq!(c.summary(), "hwbp-bench: 1 passed, 1 failed");
        assert_eq!(crate::parse_counts(&c.summary()), Some((1, 1)));
        let log = "check a ok 1\r\ncheck b FAIL why\n  check c FAIL\ncheckx d FAIL\n";
        assert_eq!(failed_checks(log), vec!["b".to_string(), "c".to_string()]);
    }

    #[test]
    fn record_tally_finds_every_kind_of_wrong_record() {
        let mut t = RecordTally::default();
        for hit in 1..=3 {
            t.add(0x1000, 7, hit, 0x1000, 7);
        }
        assert!(t.complete(3));
        assert!(!t.complete(4), "a missing record");
        t.add(0x1008, 7, 4, 0x1000, 7);
        t.add(0x1000, 8, 5, 0x1000, 7);
        t.add(0x1000, 7, 9, 0x1000, 7);
        assert_eq!(
            (t.records, t.wrong_addr, t.wrong_pid, t.out_of_order),
            (6, 1, 1, 1)
        );
        assert!(!t.complete(6));
    }
}
