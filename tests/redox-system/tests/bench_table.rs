//! Host tests of the two halves' meeting point (issue 13): the lines
//! hwbp-bench prints (`hwbp_redox_system::bench`) as
//! `tests/linux-compare/table.py` reads them next to a Linux log, and
//! `run.sh --bench`'s refusals before any build.

use std::path::PathBuf;
use std::process::Command;

use hwbp_redox_system::bench::{Checks, KEYS, Stats, figure_line, parse_figures};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn temp(name: &str, text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("hwbp-bench-table-{}-{name}", std::process::id()));
    std::fs::write(&p, text).expect("temp file written");
    p
}

/// (exit code, stdout, stderr) of `python3 table.py args...`.
fn table(args: &[&PathBuf]) -> (i32, String, String) {
    let out = Command::new("python3")
        .arg(repo().join("tests/linux-compare/table.py"))
        .args(args)
        .output()
        .expect("python3 runs (tests/install-deps.sh installs it)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const LINUX_LOG: &str = "linux-compare: start 6.1.0\n\
    calib loop k=1000 instructions=2000 median=2004 min=2004 max=2004\n\
    check open_close ok perf_event_open errno=0\n\
    figure open_close 10658 reps=1001 min=10658 max=9098640\n\
    raw counted_hit watched_median=30852 unwatched_median=196 hits=64\n\
    figure counted_hit 479 reps=301 min=30852 max=253553\n\
    figure sampled_hit 1301 reps=301 min=83460 max=97387\n\
    figure enable_disable_64 43659 reps=201 min=43659 max=46162\n\
    figure enable_disable_1000 626787 reps=31 min=626787 max=630526\n\
    linux-compare: done 0 failed checks\n";

/// A Redox serial log as hwbp-bench writes it: the bench's own formatter,
/// the kernel's and hwbpd's noise around it, CRLF line ends.
fn redox_log(values: &[u64; 5], failing: Option<&str>) -> String {
    let mut checks = Checks::default();
    let mut log = String::from("kernel::arch::x86_shared::start:INFO -- Redox OS starting...\r\nhwbp-system-init: started, pid 1\r\n");
    for (key, &v) in KEYS.iter().zip(values) {
        log += &checks.check(key, failing != Some(*key), "details");
        log += "\r\n";
        let raw = Stats { median: v + 3, min: v, max: v * 2, n: 301 };
        log += &figure_line(key, v, &raw);
        log += "\r\n";
    }
    log += "extra scheme_roundtrip_0 10311 reps=201\r\n";
    log += &checks.summary();
    log += "\r\nhwbp-system: 14 passed, 0 failed\r\n";
    log
}

#[test]
fn a_bench_log_and_a_linux_log_make_the_side_by_side_table() {
    let linux = temp("linux-ok", LINUX_LOG);
    let hwbp = temp("hwbp-ok", &redox_log(&[272_429, 874, 10_403, 123_568, 1_085_072], None));
    let (code, out, err) = table(&[&linux, &hwbp]);
    assert_eq!(code, 0, "stderr: {err}");
    let want = "\
| operation | Linux (guest instructions) | hwbp (guest instructions) | hwbp / Linux |
| --- | ---: | ---: | ---: |
| open + close of a write watchpoint, len 8 (Linux: perf_event_open) | 10,658 | 272,429 | 25.56x |
| one counted watchpoint hit | 479 | 874 | 1.82x |
| one watchpoint hit delivered as a record | 1,301 | 10,403 | 8.00x |
| disable + enable, 64 threads | 43,659 | 123,568 | 2.83x |
| disable + enable, 1,000 threads | 626,787 | 1,085,072 | 1.73x |
";
    assert_eq!(out, want);
    let _ = std::fs::remove_file(linux);
    let _ = std::fs::remove_file(hwbp);
}

#[test]
fn the_rust_parser_agrees_with_table_py() {
    let log = redox_log(&[1, 2, 3, 4, 5], None);
    let f = parse_figures(&log);
    assert_eq!(f.len(), 5);
    for (i, key) in KEYS.iter().enumerate() {
        assert_eq!(f.get(*key), Some(&(i as u64 + 1)), "{key}");
    }
}

#[test]
fn without_the_hwbp_half_the_column_says_so() {
    let linux = temp("linux-alone", LINUX_LOG);
    let (code, out, _) = table(&[&linux]);
    assert_eq!(code, 0);
    assert_eq!(out.matches("not measured here").count(), 5, "{out}");
    assert!(out.contains("| one counted watchpoint hit | 479 | not measured here | - |"), "{out}");
    let _ = std::fs::remove_file(linux);
}

#[test]
fn a_failed_check_in_either_log_is_exit_1_and_named() {
    let linux = temp("linux-f", LINUX_LOG);
    let hwbp = temp("hwbp-f", &redox_log(&[9, 9, 9, 9, 9], Some("sampled_hit")));
    let (code, out, err) = table(&[&linux, &hwbp]);
    assert_eq!(code, 1);
    assert!(err.contains("failed hwbp checks: sampled_hit"), "{err}");
    assert!(out.contains("| 1,301 | 9 |"), "the table is still printed: {out}");
    let _ = std::fs::remove_file(linux);
    let _ = std::fs::remove_file(hwbp);
}

#[test]
fn a_missing_linux_figure_is_exit_1() {
    let linux = temp("linux-short", &LINUX_LOG.replace("figure sampled_hit", "figurex sampled_hit"));
    let (code, out, err) = table(&[&linux]);
    assert_eq!(code, 1);
    assert!(err.contains("missing Linux figures: sampled_hit"), "{err}");
    assert!(out.contains("| MISSING |"), "{out}");
    let _ = std::fs::remove_file(linux);
}

#[test]
fn bad_usage_is_exit_2() {
    assert_eq!(table(&[]).0, 2);
}

#[test]
fn run_sh_bench_refuses_missing_artifacts_before_any_build() {
    let run = |args: &[&str]| {
        Command::new("bash")
            .arg(repo().join("tests/redox-system/run.sh"))
            .args(args)
            .output()
            .expect("bash runs")
            .status
            .code()
    };
    assert_eq!(run(&["--bench"]), Some(2));
    assert_eq!(
        run(&[
            "--bench",
            "--kernel",
            "/nonexistent/kernel.all",
            "--relibc",
            "/nonexistent",
            "--bootstrap",
            "/nonexistent/bootstrap",
            "--initfs-ar",
            "/nonexistent/redox-initfs-ar",
        ]),
        Some(2)
    );
}
