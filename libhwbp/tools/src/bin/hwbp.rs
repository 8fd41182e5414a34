//! `hwbp stat` / `hwbp record`: see `hwbp_tools::cli`.

use clap::Parser;

fn main() {
    // hwbpd (in process with --sim) logs every refusal, an empty non-blocking
    // read included: only errors by default (HWBP_LOG=warn shows them).
    hwbp_tools::logger::init(log::LevelFilter::Error);
    let cli = hwbp_tools::cli::Cli::parse();
    let code = hwbp_tools::cli::main_with(cli, &mut std::io::stdout());
    std::process::exit(code);
}
