//! The tools on the host: the selftest against the in-process hwbpd and
//! simulated kernel (what CI runs today; the same code runs on Redox), the
//! `hwbp` CLI in `--sim` mode, and `hwbp-target`.
#![cfg(all(feature = "sim", not(target_os = "redox")))]

mod faulty;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use clap::Parser;
use hwbp_tools::cli::{self, Cli};
use hwbp_tools::platform::sim::SimPlatform;
use hwbp_tools::selftest::{self, Report};
use libhwbp::abi::CountRecord;

/// Checks as root on the host.
const ROOT_CHECKS: u32 = 98;
/// Checks as non-root (restart skipped).
const NON_ROOT_CHECKS: u32 = 96;

/// Checks of contract features hwbpd does not have yet on this branch.
/// They must fail honestly until then; any other failure fails the test.
/// Empty since hwbpd counts exactly from the kernel's counts (the 100,000
/// stores checks) and issue 12 (ESRCH for any numeric id, the non-root ring
/// cap, quota held by events streams). Add a check here only while the
/// feature it checks is being built.
const PENDING_IN_HWBPD: &[&str] = &[];

fn selftest_on(mut p: SimPlatform) -> (Report, String) {
    let mut out = Vec::new();
    let report = selftest::run(&mut p, &mut out);
    (report, String::from_utf8(out).unwrap())
}

fn assert_only_pending_failures(report: &Report, text: &str) {
    let unexpected: Vec<_> = report.failures.iter().filter(|f| !PENDING_IN_HWBPD.contains(&f.as_str())).collect();
    assert!(unexpected.is_empty(), "unexpected failures {unexpected:?}:\n{text}");
    assert_eq!(text.lines().last().unwrap(), format!("{} passed, {} failed", report.passed, report.failed));
}

fn run_cli(args: &[&str]) -> (i32, String) {
    let cli = Cli::try_parse_from(std::iter::once("hwbp").chain(args.iter().copied())).expect("arguments parse");
    let mut out = Vec::new();
    let code = cli::main_with(cli, &mut out);
    (code, String::from_utf8(out).unwrap())
}

#[test]
fn selftest_as_root_runs_every_check_and_fails_only_what_hwbpd_lacks_yet() {
    let (report, text) = selftest_on(SimPlatform::new());
    assert_eq!(report.passed + report.failed, ROOT_CHECKS, "{text}");
    assert_eq!(report.skipped, 0, "{text}");
    assert_only_pending_failures(&report, &text);
    assert!(report.passed >= 80, "{text}");
}

#[test]
fn selftest_as_non_root_checks_eperm_and_quota_and_its_own_task() {
    let (report, text) = selftest_on(SimPlatform::non_root());
    assert_eq!(report.passed + report.failed, NON_ROOT_CHECKS, "{text}");
    assert_eq!(report.skipped, 2, "only the restart needs root: {text}");
    assert_only_pending_failures(&report, &text);
    for name in ["non-root: cpu/all is EPERM", "non-root: another user's task is EPERM", "non-root: its own task opens", "non-root: EMFILE at the quota, closing one frees a place"] {
        assert!(text.contains(&format!("ok - {name}")), "{name}: {text}");
    }
}

#[test]
fn selftest_binary_prints_the_summary_line_and_exits_by_it() {
    for args in [&[][..], &["--non-root"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_hwbp-selftest")).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().unwrap();
        assert!(last.ends_with(" failed") && last.contains(" passed, "), "{text}");
        assert_eq!(out.status.success(), last.ends_with(" 0 failed"), "{text}");
        assert!(text.lines().next().unwrap().contains(if args.is_empty() { "as root" } else { "as non-root" }), "{text}");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_hwbp-selftest")).arg("--bogus").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn selftest_reports_a_failure_when_hwbpd_misbehaves() {
    // A server whose quota refuses everything a non-root user opens makes
    // the "own task opens" permission check fail: the selftest must say so,
    // not pass.
    let config = hwbpd::Config { user_quota: 0, ..hwbpd::Config::default() };
    let (report, text) = selftest_on(SimPlatform::with_config(config));
    assert!(report.failures.contains(&"non-root: its own task opens (helper)".to_string()), "{text}");
    assert!(report.failures.contains(&"non-root: ring=4096 opens (helper)".to_string()), "{text}");
}

#[test]
fn an_over_count_fails_the_checks_that_see_it() {
    // Every store happens twice (a count above the truth): the checks must
    // fail, never pass, and the tolerance of the scaled counts must not hide
    // the raw over-count.
    let (report, text) = faulty::run(faulty::Fault::DoubleStores);
    for name in [
        "data len=4 access=w slot=0",
        "6 flexible on 4 registers: raw counts never above the truth",
        "8 threads created after the watch opened x 1,000 stores = exactly 8,000",
        "identical breakpoints each count every hit",
        "ring=4 overflow: the oldest records are dropped and counted in lost",
        "exclusive: nothing else counts while it is armed, all take turns",
    ] {
        assert!(report.failures.contains(&name.to_string()), "{name} did not fail:\n{text}");
    }
}

#[test]
fn a_breakpoint_left_armed_after_the_restart_fails_the_restart_check() {
    let (report, text) = faulty::run(faulty::Fault::ArmAfterRestart);
    assert!(report.failures.contains(&"hwbpd killed and restarted: nothing left armed".to_string()), "{text}");
}

#[test]
fn a_new_thread_that_is_not_watched_fails_the_thread_check() {
    // Threads that run their first stores unwatched (the Redox bug of
    // issue 10): 8,000 is not reached.
    let (report, text) = faulty::run(faulty::Fault::UnwatchedNewThreads);
    assert!(report.failures.contains(&"8 threads created after the watch opened x 1,000 stores = exactly 8,000".to_string()), "{text}");
}

#[test]
fn a_child_that_inherits_the_watch_fails_the_child_check() {
    let (report, text) = faulty::run(faulty::Fault::ChildIsSelf);
    assert!(report.failures.contains(&"a child process starts unwatched".to_string()), "{text}");
}

#[test]
fn hwbp_target_prints_its_pid_and_page_then_makes_the_stores_on_go() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hwbp-target"))
        .args(["--stores", "1234", "--calls", "7", "--threads", "3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map(|l| l.unwrap());
    assert_eq!(lines.next().unwrap(), format!("pid {}", child.id()));
    let addr = lines.next().unwrap();
    let a = u64::from_str_radix(addr.strip_prefix("addr 0x").unwrap(), 16).unwrap();
    assert_eq!(a % 4096, 0, "{addr}");
    assert!(lines.next().unwrap().starts_with("func 0x"));
    assert_eq!(lines.next().unwrap(), "ready");
    writeln!(stdin, "go").unwrap();
    assert_eq!(lines.next().unwrap(), "stores 1234");
    assert_eq!(lines.next().unwrap(), "calls 7");
    assert_eq!(lines.next().unwrap(), "done");
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn hwbp_target_waits_for_a_go_file() {
    let dir = std::env::temp_dir().join(format!("hwbp-target-go-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_hwbp-target"))
        .args(["--stores", "5", "--exit", "--go-file", dir.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map(|l| l.unwrap());
    for _ in 0..4 {
        lines.next().unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(child.try_wait().unwrap().is_none(), "ran before the go file");
    std::fs::write(&dir, b"").unwrap();
    assert_eq!(lines.next().unwrap(), "stores 5");
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_file(&dir);
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
    assert!(hits[0].split_whitespace().nth(2) == Some("tid") && !hits[0].ends_with(" stopped"), "{}", hits[0]);
    assert!(out.contains("# 5 records, 5 hits, 0 lost"), "{out}");
}

#[test]
fn a_record_line_names_the_thread_and_marks_a_stop() {
    let r = libhwbp::abi::EventRecord { pid: 100, tid: 7, addr: 0x7000, access: 1, hit: 3, flags: libhwbp::abi::EVENT_STOPPED, ..Default::default() };
    let line = cli::format_record(&r);
    let words: Vec<_> = line.split_whitespace().collect();
    assert_eq!(&words[..4], ["pid", "100", "tid", "7"], "{line}");
    assert!(line.ends_with("bp 0 stopped"), "{line}");
    let kernel = libhwbp::abi::EventRecord { flags: libhwbp::abi::EVENT_KERNEL_MODE, ..r };
    assert!(cli::format_record(&kernel).ends_with("bp 0 kernel"), "{}", cli::format_record(&kernel));
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

#[test]
fn a_failed_open_says_which_event_and_why() {
    let (code, out) = run_cli(&["stat", "--sim", "-e", "mem:0x7f0000001003/16:rw"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("mem:0x7f0000001003/16:rw: EINVAL (22): it needs 5 debug registers (0x7f0000001003/1, 0x7f0000001004/4, 0x7f0000001008/8, 0x7f0000001010/2, 0x7f0000001012/1) and x86 has 4"),
        "{out}"
    );
    let (code, out) = run_cli(&["stat", "--sim", "--pinned", "-e", "mem:0x7001/8:w", "-e", "mem:0x7011/8:w"]);
    assert_eq!(code, 1);
    assert!(out.contains("mem:0x7011/8:w: ENOSPC (28): pinned, it needs 4 debug registers (0x7011/1, 0x7012/2, 0x7014/4, 0x7018/1)"), "{out}");
    let (code, out) = run_cli(&["record", "--sim", "-C", "7", "-e", "mem:0x7000:w"]);
    assert_eq!(code, 1);
    assert!(out.contains("ESRCH (3): no CPU 7"), "{out}");
    let (_, out) = run_cli(&["stat", "--sim", "-e", "mem:0x800000000000/8:w"]);
    assert!(out.contains("is not a canonical address"), "{out}");
}

#[test]
fn eperm_is_explained_by_what_needs_root() {
    use libhwbp::abi::OpenPath;
    let eperm = || libhwbp::Error::Os(std::io::Error::from_raw_os_error(libhwbp::abi::errno::EPERM));
    let why = |p: &str| cli::explain_open_error(&OpenPath::parse(p).unwrap(), &eperm());
    assert!(why("cpu/all/mem:0x1000").contains("cpu-wide targets (-C, -a) are root only"));
    assert!(why("task/5/mem:0xffff800000001000").contains("kernel half"));
    assert!(why("task/5/mem:0x1000?kernel").contains("kernel option"));
    assert!(why("task/5/mem:0x1000?ring=8192").contains("above 4096"));
    assert!(why("task/5/mem:0x1000").contains("process 5 belongs to another user"));
    assert_eq!(cli::pieces_of(&libhwbp::abi::MemEvent::new(0x1001, 6, libhwbp::abi::Access::Write).unwrap()), [(0x1001, 1), (0x1002, 2), (0x1004, 2), (0x1006, 1)]);
}

#[test]
fn ready_file_appears_once_the_breakpoints_are_open() {
    let f = std::env::temp_dir().join(format!("hwbp-ready-{}", std::process::id()));
    let _ = std::fs::remove_file(&f);
    let (code, out) = run_cli(&["stat", "--sim", "--sim-stores", "2", "--ready-file", f.to_str().unwrap(), "-e", "mem:0x7000:w"]);
    assert_eq!(code, 0, "{out}");
    assert!(f.exists());
    let _ = std::fs::remove_file(&f);
    // Not created when the open fails.
    let (code, _) = run_cli(&["record", "--sim", "--ready-file", f.to_str().unwrap(), "-e", "mem:0x7000:r"]);
    assert_eq!(code, 1);
    assert!(!f.exists());
    let (code, out) = run_cli(&["stat", "--sim", "--ready-file", "/nonexistent-dir/x", "-e", "mem:0x7000:w"]);
    assert_eq!(code, 1);
    assert!(out.contains("--ready-file /nonexistent-dir/x"), "{out}");
}
