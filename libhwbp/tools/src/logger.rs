//! A minimal stderr logger for the binaries (no extra dependency).

struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("[{}] {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

/// Log to stderr at `level` (HWBP_LOG=debug|info|warn|error|off overrides).
pub fn init(level: log::LevelFilter) {
    let level = std::env::var("HWBP_LOG").ok().and_then(|v| v.parse().ok()).unwrap_or(level);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
