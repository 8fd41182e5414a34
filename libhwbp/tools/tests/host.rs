//! The tools on the host: the selftest against the in-process hwbpd and
//! simulated kernel (what CI runs today; the same code runs on Redox), and
//! the `hwbp` CLI in `--sim` mode.

use clap::Parser;
use hwbp_tools::cli::{self, Cli};
use hwbp_tools::platform::sim::SimPlatform;
use hwbp_tools::selftest::{self, Report};
use libhwbp::abi::CountRecord;

fn run_cli(args: &[&str]) -> (i32, String) {
    let cli = Cli::try_parse_from(std::iter::once("hwbp").chain(args.iter().copied())).expect("arguments parse");
    let mut out = Vec::new();
    let code = cli::main_with(cli, &mut out);
    (code, String::from_utf8(out).unwrap())
}

#[test]
fn selftest_passes_every_check_on_the_simulated_kernel() {
    let mut out = Vec::new();
    let report = selftest::run(&mut SimPlatform::new(), &mut out);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(report, Report { passed: 43, failed: 0, skipped: 0 }, "{text}");
    assert!(text.lines().last().unwrap() == "43 passed, 0 failed", "{text}");
    assert!(!text.contains("FAIL"), "{text}");
}

#[test]
fn selftest_binary_prints_the_summary_line_and_exits_zero() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hwbp-selftest")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.lines().last(), Some("43 passed, 0 failed"));
}

#[test]
fn selftest_reports_a_failure_when_hwbpd_misbehaves() {
    // A server whose quota refuses everything a non-root user opens makes
    // the "own task opens" permission check fail: the selftest must say so,
    // not pass.
    let config = hwbpd::Config { user_quota: 0, ..hwbpd::Config::default() };
    let mut out = Vec::new();
    let report = selftest::run(&mut SimPlatform::with_config(config), &mut out);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(report.failed, 1, "{text}");
    assert!(text.contains("FAIL - non-root"), "{text}");
    assert!(text.ends_with(&format!("{} passed, 1 failed\n", report.passed)));
}

#[test]
fn stat_counts_the_simulated_stores() {
    let (code, out) = run_cli(&["stat", "--sim", "--sim-stores", "250", "-e", "mem:0x7000/4:w"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Performance counter stats for 'task/"), "{out}");
    let line = out.lines().find(|l| l.contains("mem:0x7000/4:w")).unwrap();
    assert_eq!(line.split_whitespace().next(), Some("250"), "{line}");
    assert!(line.contains("100.00%"), "{line}");
}

#[test]
fn stat_of_six_events_multiplexes_and_prints_scaled_counts() {
    let events: Vec<String> = (0..6).map(|i| format!("mem:{:#x}/8:w", 0x7000 + 8 * i)).collect();
    let mut args = vec!["stat", "--sim", "--sim-stores", "400"];
    for e in &events {
        args.extend(["-e", e.as_str()]);
    }
    let (code, out) = run_cli(&args);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<_> = out.lines().filter(|l| l.contains("mem:0x70")).collect();
    assert_eq!(lines.len(), 6, "{out}");
    for l in lines {
        assert!(l.contains("scaled from"), "{l}");
        let scaled: f64 = l.split_whitespace().next().unwrap().parse().unwrap();
        assert!((scaled - 400.0).abs() <= 40.0, "{l}");
    }
}

#[test]
fn record_prints_one_line_per_hit() {
    let (code, out) = run_cli(&["record", "--sim", "--sim-stores", "5", "-e", "mem:0x7000:w"]);
    assert_eq!(code, 0, "{out}");
    let hits: Vec<_> = out.lines().filter(|l| l.starts_with("pid")).collect();
    assert_eq!(hits.len(), 5, "{out}");
    assert!(hits[0].contains("addr 0x7000:w") && hits[0].contains("hit        1"), "{}", hits[0]);
    assert!(out.contains("# 5 records, 5 hits, 0 lost"), "{out}");
}

#[test]
fn record_with_period_prints_every_nth_hit() {
    let (code, out) = run_cli(&["record", "--sim", "--sim-stores", "10", "--period", "5", "-e", "mem:0x7000:w"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("# 2 records, 10 hits, 0 lost"), "{out}");
}

#[test]
fn bad_event_is_reported_with_the_reason() {
    let (code, out) = run_cli(&["stat", "--sim", "-e", "mem:0x7000:r"]);
    assert_eq!(code, 1);
    assert!(out.contains("read-only"), "{out}");
}

#[test]
fn cpu_wide_stat_as_root_works_in_the_simulation() {
    let (code, out) = run_cli(&["stat", "--sim", "--sim-stores", "3", "-a", "-e", "mem:0x7000:w"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("'cpu/all'"), "{out}");
}

#[test]
fn without_sim_the_host_says_there_is_no_scheme() {
    let (code, out) = run_cli(&["stat", "-p", "1", "-e", "mem:0x7000:w"]);
    assert_eq!(code, 1);
    assert!(out.contains("only on Redox"), "{out}");
}

#[test]
fn conflicting_targets_are_refused_by_the_parser() {
    assert!(Cli::try_parse_from(["hwbp", "stat", "-p", "1", "-a", "-e", "mem:0x10"]).is_err());
    assert!(Cli::try_parse_from(["hwbp", "stat", "-p", "1"]).is_err());
}

#[test]
fn format_stat_marks_a_never_running_counter() {
    let p = libhwbp::abi::OpenPath::parse("task/1/mem:0x10").unwrap();
    let s = cli::format_stat(&[(p, CountRecord { value: 0, time_enabled_ns: 10, time_running_ns: 0, id: 1, lost: 0 })]);
    assert!(s.contains("<not counted>") && s.contains("0.00%"), "{s}");
}
