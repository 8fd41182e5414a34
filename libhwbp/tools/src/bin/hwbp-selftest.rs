//! hwbp-selftest: on Redox against /scheme/hwbp; on the host against an
//! in-process hwbpd on the simulated kernel. Prints `N passed, N failed`
//! and exits non-zero if anything failed.
//!
//! ```text
//! hwbp-selftest [--non-root] [--other-pid PID] [--hwbpd-pid PID --hwbpd-cmd PATH [--hwbpd-arg ARG]...]
//! ```
//! - `--non-root`: the selftest runs as a non-root user: it checks that
//!   its own task works and that cpu-wide targets, the `kernel` option,
//!   kernel addresses, other users' tasks (`--other-pid`, a live task of
//!   another uid; on Redox default 1) and rings above 4096 are EPERM, and
//!   the per-uid quota. Without it the selftest expects root.
//! - Redox only: `--hwbpd-pid` / `--hwbpd-cmd`: how to kill hwbpd and start
//!   it again for the restart checks (skipped without them).

fn main() {
    hwbp_tools::logger::init(log::LevelFilter::Error);
    let args: Vec<String> = std::env::args().skip(1).collect();
    #[cfg(target_os = "redox")]
    if let Some(arg) = args.first() {
        if let Some(code) = hwbp_tools::platform::redox::helper_main(arg) {
            std::process::exit(code);
        }
    }
    let opts = match hwbp_tools::selftest::Args::parse(&args) {
        Ok(o) => o,
        Err(why) => {
            eprintln!("hwbp-selftest: {why}");
            eprintln!("usage: hwbp-selftest [--non-root] [--other-pid PID] [--hwbpd-pid PID --hwbpd-cmd PATH [--hwbpd-arg ARG]...]");
            std::process::exit(2);
        }
    };
    #[cfg(target_os = "redox")]
    let mut platform = hwbp_tools::platform::redox::RedoxPlatform::new(&opts);
    #[cfg(all(feature = "sim", not(target_os = "redox")))]
    let mut platform = if opts.non_root {
        hwbp_tools::platform::sim::SimPlatform::non_root()
    } else {
        hwbp_tools::platform::sim::SimPlatform::new()
    };
    #[cfg(not(any(target_os = "redox", feature = "sim")))]
    {
        let _ = opts;
        eprintln!("hwbp-selftest: built without the `sim` feature, and this is not Redox: nothing to test");
        std::process::exit(2);
    }
    #[cfg(any(target_os = "redox", feature = "sim"))]
    {
        let report = hwbp_tools::selftest::run(&mut platform, &mut std::io::stdout());
        std::process::exit(if report.failed == 0 { 0 } else { 1 });
    }
}
