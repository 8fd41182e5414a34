//! `hwbp-gdbstub --sim`: serve the simulated task to gdb on stdin/stdout
//! (`target remote | hwbp-gdbstub --sim`) or on a TCP port
//! (`hwbp-gdbstub --sim --listen 127.0.0.1:1234`, then
//! `target remote 127.0.0.1:1234`).

use std::io::{self, Write};
use std::process::ExitCode;

const USAGE: &str = "usage: hwbp-gdbstub --sim [--listen ADDR:PORT] [--verbose]
       hwbp-gdbstub --print-program
Serves the simulated task (a small x86-64 program on the simulated kernel,
its hardware breakpoints and watchpoints served by an in-process hwbpd) to
gdb, over stdin/stdout unless --listen is given:
  gdb -ex 'target remote | hwbp-gdbstub --sim'
--verbose logs every packet to stderr. --print-program prints the
program's code and data (hex) for the comparison with a native build.";

struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let _ = writeln!(io::stderr(), "{}", record.args());
    }
    fn flush(&self) {}
}

static LOGGER: StderrLog = StderrLog;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--help") || has("-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if has("--verbose") {
        let _ = log::set_logger(&LOGGER);
        log::set_max_level(log::LevelFilter::Debug);
    }
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .map(|i| args.get(i + 1).cloned());
    if let Some(unknown) = args.iter().enumerate().find(|(i, a)| {
        !matches!(
            a.as_str(),
            "--sim" | "--verbose" | "--listen" | "--print-program"
        ) && !(*i > 0 && args[i - 1] == "--listen")
    }) {
        eprintln!("hwbp-gdbstub: unknown argument {}\n{USAGE}", unknown.1);
        return ExitCode::from(2);
    }
    run(has("--sim"), has("--print-program"), listen)
}

#[cfg(all(feature = "sim", not(target_os = "redox")))]
fn run(sim: bool, print_program: bool, listen: Option<Option<String>>) -> ExitCode {
    use hwbp_gdbstub::command::encode_hex_bytes;
    use hwbp_gdbstub::sim::{SimTarget, program};

    if print_program {
        println!(
            "text {:#x} {}",
            program::TEXT_ADDR,
            encode_hex_bytes(&program::TEXT)
        );
        println!(
            "data {:#x} {}",
            program::DATA_ADDR,
            encode_hex_bytes(&program::DATA)
        );
        return ExitCode::SUCCESS;
    }
    if !sim {
        eprintln!("hwbp-gdbstub: nothing to serve: only --sim exists so far\n{USAGE}");
        return ExitCode::from(2);
    }
    let mut target = SimTarget::new();
    let result = match listen {
        Some(None) => {
            eprintln!("hwbp-gdbstub: --listen needs ADDR:PORT");
            return ExitCode::from(2);
        }
        Some(Some(addr)) => serve_tcp(&mut target, &addr),
        None => hwbp_gdbstub::session::serve(&mut target, io::stdin().lock(), io::stdout().lock()),
    };
    match result {
        Ok(end) => {
            log::debug!("gdbstub: session ended: {end:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hwbp-gdbstub: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(all(feature = "sim", not(target_os = "redox")))]
fn serve_tcp(
    target: &mut hwbp_gdbstub::sim::SimTarget,
    addr: &str,
) -> io::Result<hwbp_gdbstub::session::End> {
    let listener = std::net::TcpListener::bind(addr)?;
    eprintln!("hwbp-gdbstub: listening on {}", listener.local_addr()?);
    let (stream, peer) = listener.accept()?;
    log::debug!("gdbstub: connection from {peer}");
    stream.set_nodelay(true)?;
    hwbp_gdbstub::session::serve(target, stream.try_clone()?, stream)
}

#[cfg(not(all(feature = "sim", not(target_os = "redox"))))]
fn run(_sim: bool, _print_program: bool, _listen: Option<Option<String>>) -> ExitCode {
    eprintln!(
        "hwbp-gdbstub: this build serves nothing yet: the simulated task needs the host and feature `sim`, and a Redox process target is not written"
    );
    ExitCode::from(2)
}
