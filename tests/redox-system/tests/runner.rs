//! Host tests of `run.sh` without booting: its verdict parsing
//! (`run.sh --verdict-of LOG`) and its refusals before any build.

use std::path::PathBuf;
use std::process::Command;

fn run_sh(args: &[&str]) -> (i32, String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("run.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .expect("bash runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn verdict_of(name: &str, log: &str) -> (i32, String) {
    let path = std::env::temp_dir().join(format!(
        "hwbp-redox-system-{}-{name}.log",
        std::process::id()
    ));
    std::fs::write(&path, log).expect("temp log written");
    let r = run_sh(&["--verdict-of", path.to_str().expect("utf-8 temp path")]);
    let _ = std::fs::remove_file(&path);
    r
}

#[test]
fn all_passed_is_exit_0_even_with_carriage_returns_and_noise() {
    let log = "Redox OS starting\r\n  selftest| 42 passed, 0 failed\r\nhwbp-system: init checks 10 passed, 0 failed; selftest checks 84 passed, 0 failed\r\nhwbp-system: 94 passed, 0 failed\r\nShutdown with outb(0x604, 0x2000)\r\n";
    assert_eq!(
        verdict_of("pass", log),
        (0, "hwbp-system: 94 passed, 0 failed\n".to_string())
    );
}

#[test]
fn any_failure_is_exit_1() {
    assert_eq!(
        verdict_of("fail", "hwbp-system: 91 passed, 7 failed\n").0,
        1
    );
}

#[test]
fn nothing_passed_is_no_success() {
    assert_eq!(verdict_of("zero", "hwbp-system: 0 passed, 0 failed\n").0, 1);
}

#[test]
fn the_last_verdict_counts() {
    let log = "hwbp-system: 1 passed, 1 failed\nhwbp-system: 5 passed, 0 failed\n";
    assert_eq!(
        verdict_of("last", log),
        (0, "hwbp-system: 5 passed, 0 failed\n".to_string())
    );
}

#[test]
fn a_log_without_verdict_is_124() {
    // A sub-program's own count line is not the system verdict; nor is a page-fault loop.
    let log = "  selftest| 41 passed, 1 failed\nPage fault: FFFFFFFF815498F4 (empty)\n";
    assert_eq!(verdict_of("none", log), (124, "no verdict\n".to_string()));
}

#[test]
fn missing_arguments_or_artifacts_are_exit_2_before_any_build() {
    assert_eq!(run_sh(&[]).0, 2);
    assert_eq!(run_sh(&["--kernel", "/nonexistent/kernel.all"]).0, 2);
    let (code, _) = run_sh(&[
        "--kernel",
        "/nonexistent/kernel.all",
        "--relibc",
        "/nonexistent",
        "--bootstrap",
        "/nonexistent/bootstrap",
        "--initfs-ar",
        "/nonexistent/redox-initfs-ar",
    ]);
    assert_eq!(code, 2);
}
