//! hwbpd's logger on Redox: one line per record on stderr, which init hands
//! its services (the boot console / serial line, and the kernel log).
//! The level comes from `HWBPD_LOG` (`error`, `warn`, `info`, `debug`,
//! `trace`; default `info`). No dependency beyond `log`.

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

/// Environment variable holding the log level.
pub const LEVEL_VAR: &str = "HWBPD_LOG";

/// The level `HWBPD_LOG`'s value asks for (`None`: unset or not a level).
pub fn parse_level(value: Option<&str>) -> Option<LevelFilter> {
    value?.trim().parse().ok()
}

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            // One write per line so lines of concurrent writers do not mix;
            // a failed write to stderr has nowhere to be reported.
            let line = format!("hwbpd [{}] {}\n", record.level(), record.args());
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

static LOGGER: StderrLogger = StderrLogger;

/// Install the logger (once; later calls change nothing). Returns the level.
pub fn init() -> LevelFilter {
    let level = parse_level(std::env::var(LEVEL_VAR).ok().as_deref()).unwrap_or(LevelFilter::Info);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
    log::max_level()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_case_insensitively_and_junk_is_none() {
        assert_eq!(parse_level(Some("debug")), Some(LevelFilter::Debug));
        assert_eq!(parse_level(Some(" WARN ")), Some(LevelFilter::Warn));
        assert_eq!(parse_level(Some("off")), Some(LevelFilter::Off));
        assert_eq!(parse_level(Some("loud")), None);
        assert_eq!(parse_level(None), None);
    }
}
