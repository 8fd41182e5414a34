//! `hwbpd`: the hwbp scheme daemon. On Redox, [`hwbpd_redox::main`]; on any
//! other system there is no kernel to serve (the host runs hwbpd in process:
//! `hwbpd::InProcess`, or `hwbp --sim`).

#[cfg(target_os = "redox")]
fn main() -> ! {
    hwbpd_redox::main()
}

#[cfg(not(target_os = "redox"))]
fn main() {
    eprintln!("hwbpd: the daemon runs on Redox; on this system use hwbpd::InProcess or `hwbp --sim`");
    std::process::exit(2);
}
