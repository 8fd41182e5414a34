//! `hwbp stat` / `hwbp record`: see `hwbp_tools::cli`.

use clap::Parser;

fn main() {
    hwbp_tools::logger::init(log::LevelFilter::Warn);
    let cli = hwbp_tools::cli::Cli::parse();
    let code = hwbp_tools::cli::main_with(cli, &mut std::io::stdout());
    std::process::exit(code);
}
