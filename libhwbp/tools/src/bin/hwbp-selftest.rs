//! hwbp-selftest: on Redox against /scheme/hwbp; on the host against an
//! in-process hwbpd on the simulated kernel. Prints `N passed, N failed`
//! and exits non-zero if anything failed.

fn main() {
    hwbp_tools::logger::init(log::LevelFilter::Error);
    #[cfg(target_os = "redox")]
    if let Some(arg) = std::env::args().nth(1) {
        if let Some(code) = hwbp_tools::platform::redox::helper_main(&arg) {
            std::process::exit(code);
        }
    }
    #[cfg(target_os = "redox")]
    let mut platform = hwbp_tools::platform::redox::RedoxPlatform;
    #[cfg(not(target_os = "redox"))]
    let mut platform = hwbp_tools::platform::sim::SimPlatform::new();
    let report = hwbp_tools::selftest::run(&mut platform, &mut std::io::stdout());
    std::process::exit(if report.failed == 0 { 0 } else { 1 });
}
