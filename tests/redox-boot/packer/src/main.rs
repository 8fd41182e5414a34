//! `redox-boot-pack initfs ELF OUT` and `redox-boot-pack bundle KERNEL INITFS OUT`.
use std::process::ExitCode;

fn run(args: &[String]) -> Result<(), String> {
    let read = |p: &String| std::fs::read(p).map_err(|e| format!("{p}: {e}"));
    let (out_path, bytes) = match args {
        [cmd, elf, out] if cmd == "initfs" => {
            (out, redox_boot_pack::pack_initfs(&read(elf)?).map_err(|e| format!("{elf}: {e}"))?)
        }
        [cmd, kernel, initfs, out] if cmd == "bundle" => {
            (out, redox_boot_pack::pack_bundle(&read(kernel)?, &read(initfs)?).map_err(|e| e.to_string())?)
        }
        _ => return Err("usage: redox-boot-pack initfs ELF OUT | bundle KERNEL INITFS OUT".into()),
    };
    std::fs::write(out_path, bytes).map_err(|e| format!("{out_path}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("redox-boot-pack: {e}");
            ExitCode::FAILURE
        }
    }
}
