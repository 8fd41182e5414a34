//! Real gdb against the stub: the scripted session of `gdb/session.gdb`
//! and `gdb/session-after.gdb` (watch, rwatch, awatch, hbreak on the
//! simulated task, five continues, delete, a fifth hardware watchpoint)
//! must print what gdb prints for the same program on Linux
//! (`gdb/expected.txt`, recorded natively; `compare/compare.sh` re-records
//! and checks it), and the packets must be the ones gdbserver's x86 target
//! exchanges for it.
//!
//! Needs gdb (Debian's `gdb`; `tests/install-deps.sh` installs it).

#![cfg(all(feature = "sim", not(target_os = "redox")))]

use std::process::Command;

const GDB_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/gdb");
const STUB: &str = env!("CARGO_BIN_EXE_hwbp-gdbstub");
/// Seconds gdb may take (the session takes about one).
const GDB_TIMEOUT_S: &str = "120";

/// Run the scripted session; `before` are `-ex` commands run before
/// connecting. Returns everything gdb printed (the stub's stderr is
/// gdb's).
fn run_session(before: &[&str]) -> (std::process::ExitStatus, String) {
    let mut cmd = Command::new("timeout");
    cmd.arg(GDB_TIMEOUT_S).args(["gdb", "-batch", "-nx"]).current_dir(GDB_DIR);
    for b in before {
        cmd.args(["-ex", b]);
    }
    cmd.args(["-ex", &format!("target remote | {STUB} --sim"), "-x", "session.gdb", "-x", "session-after.gdb"]);
    // stdout and stderr into one file, in the order gdb wrote them (gdb
    // prints errors on stderr, between stops on stdout).
    let path = std::env::temp_dir().join(format!("hwbp-gdbstub-{}-{}.txt", std::process::id(), before.len()));
    let file = std::fs::File::create(&path).unwrap();
    cmd.stdout(file.try_clone().unwrap()).stderr(file);
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run gdb ({e}): install it (bash tests/install-deps.sh)"));
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    (status, text)
}

/// The rules of `compare/normalize.sh`.
fn normalize(transcript: &str) -> String {
    let mut out = String::new();
    let mut started = false;
    for line in transcript.lines() {
        if !started {
            started = line == "0x0000000000401000 in ?? ()";
            continue;
        }
        let line = if line.starts_with("[Inferior 1 (") && line.ends_with(") exited normally]") {
            "[Inferior 1 (PROCESS) exited normally]"
        } else {
            line
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `expected` appear in `text` in this order.
fn assert_in_order(text: &str, expected: &[&str]) {
    let mut at = 0;
    for want in expected {
        match text[at..].find(want) {
            Some(i) => at += i + want.len(),
            None => panic!("expected, after byte {at} of the transcript:\n{want}\n\ntranscript:\n{text}"),
        }
    }
}

#[test]
fn each_stop_is_reported_where_and_with_the_values_gdb_reports_on_linux() {
    let (status, text) = run_session(&[]);
    assert_in_order(
        &text,
        &[
            "0x0000000000401000 in ?? ()\n",
            "Hardware watchpoint 1: *(long *)0x404000\n",
            "Hardware read watchpoint 2: *(long *)0x404008\n",
            "Hardware access (read/write) watchpoint 3: *(long *)0x404010\n",
            "Hardware assisted breakpoint 4 at 0x40102f\n",
            // add rax, [step]: a read of step, reported after the load.
            "\nHardware read watchpoint 2: *(long *)0x404008\n\nValue = 5\n0x0000000000401015 in ?? ()\n",
            // mov [counter], rax.
            "\nHardware watchpoint 1: *(long *)0x404000\n\nOld value = 0\nNew value = 5\n0x000000000040101d in ?? ()\n",
            // call tick: before tick's first instruction.
            "\nBreakpoint 4, 0x000000000040102f in ?? ()\n",
            // mov rdx, [ticks] (gdb single-steps off the breakpoint into it).
            "\nHardware access (read/write) watchpoint 3: *(long *)0x404010\n\nValue = 0\n0x0000000000401037 in ?? ()\n",
            // mov [ticks], rdx.
            "\nHardware access (read/write) watchpoint 3: *(long *)0x404010\n\nOld value = 0\nNew value = 1\n0x0000000000401043 in ?? ()\n",
            "1       hw watchpoint   keep y                      *(long *)0x404000\n\tbreakpoint already hit 1 time\n",
            "3       acc watchpoint  keep y                      *(long *)0x404010\n\tbreakpoint already hit 2 times\n",
            "Hardware watchpoint 9: *(long *)0x404020\n",
            "Could not insert hardware watchpoint 9.\nCould not insert hardware breakpoints:\nYou may have requested too many hardware breakpoints/watchpoints.\n",
            // After `delete 9` the four left fit; the next store to counter.
            "\nHardware watchpoint 5: *(long *)0x404000\n\nOld value = 5\nNew value = 10\n0x000000000040101d in ?? ()\n",
            "exited normally]\n",
        ],
    );
    // Every stop above and nothing more: the whole transcript is the one
    // gdb printed natively for the same program.
    let expected = std::fs::read_to_string(format!("{GDB_DIR}/expected.txt")).unwrap();
    let got = normalize(&text);
    if got != expected {
        let first = got.lines().zip(expected.lines()).position(|(a, b)| a != b);
        panic!("the transcript differs from gdb/expected.txt (first differing line: {first:?})\n--- got:\n{got}\n--- expected:\n{expected}");
    }
    assert!(status.success(), "gdb ended with {status}");
}

/// The packets of a session: (packet gdb sent, reply) in order, from
/// `set debug remote 1`.
fn exchanges(log: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut sent: Option<String> = None;
    for line in log.lines() {
        let line = line.trim_start().trim_start_matches("[remote] ").trim_start();
        if let Some(p) = line.strip_prefix("Sending packet: $") {
            sent = Some(p.rsplit_once('#').map_or(p, |(body, _)| body).to_string());
        } else if let Some(r) = line.strip_prefix("Packet received: ") {
            if let Some(s) = sent.take() {
                out.push((s, r.to_string()));
            }
        } else if line == "Packet received:" && let Some(s) = sent.take() {
            out.push((s, String::new()));
        }
    }
    out
}

#[test]
fn the_packets_are_the_ones_gdbserver_exchanges_for_x86_debug_registers() {
    let (status, log) = run_session(&["set debug remote 1"]);
    assert!(status.success(), "gdb ended with {status}:\n{log}");
    let ex = exchanges(&log);
    let reply = |packet: &str| -> Vec<&str> { ex.iter().filter(|(s, _)| s == packet).map(|(_, r)| r.as_str()).collect() };
    let supported = ex.iter().find(|(s, _)| s.starts_with("qSupported")).expect("qSupported sent");
    assert!(supported.1.split(';').any(|f| f == "hwbreak+"), "{}", supported.1);
    // rwatch: no read-only watch on x86; gdb falls back to Z4 and
    // filters writes by value, as against gdbserver.
    assert_eq!(reply("Z3,404008,8"), [""], "Z3 is answered empty (not supported)");
    assert!(reply("Z4,404008,8").iter().all(|r| *r == "OK") && !reply("Z4,404008,8").is_empty());
    assert!(reply("Z1,40102f,1").iter().all(|r| *r == "OK"));
    assert!(reply("z1,40102f,1").iter().all(|r| *r == "OK"));
    // The fifth watchpoint: hwbpd's ENOSPC for a pinned breakpoint.
    assert_eq!(reply("Z2,404020,8"), ["E01"]);
    let stops: Vec<&str> = ex.iter().filter(|(s, _)| s == "c" || s == "s").map(|(_, r)| r.as_str()).collect();
    assert_eq!(
        stops,
        [
            "T05awatch:404008;thread:1;",
            "T05watch:404000;thread:1;",
            "T05hwbreak:;thread:1;",
            "T05awatch:404010;thread:1;",
            "T05awatch:404010;thread:1;",
            "T05watch:404000;thread:1;",
            "W00",
        ],
        "stop replies of every continue and step"
    );
}

/// `break` (no `Z0` here): gdb writes `int3` into the simulated task's
/// code with `M`, the interpreter traps on it with rip past it, gdb moves
/// rip back and steps over its breakpoint, exactly as on Linux (these
/// lines are what gdb 13 prints natively for the same commands).
#[test]
fn software_breakpoints_stepi_and_disassembly_work_through_memory_and_registers() {
    let out = Command::new("timeout")
        .arg(GDB_TIMEOUT_S)
        .args(["gdb", "-batch", "-nx"])
        .args(["-ex", &format!("target remote | {STUB} --sim")])
        .args(["-ex", "x/2i $pc", "-ex", "break *0x401022", "-ex", "continue", "-ex", "info registers rip rcx rax"])
        .args(["-ex", "stepi", "-ex", "x/i $pc", "-ex", "continue", "-ex", "print $rax", "-ex", "delete", "-ex", "continue"])
        .output()
        .expect("gdb runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_in_order(
        &text,
        &[
            "=> 0x401000:\tmov    $0x3,%ecx\n   0x401005:\tmov    0x404000,%rax\n",
            "Breakpoint 1 at 0x401022\n",
            "\nBreakpoint 1, 0x0000000000401022 in ?? ()\n",
            "rip            0x401022            0x401022\nrcx            0x3                 3\nrax            0x5                 5\n",
            "0x0000000000401024 in ?? ()\n=> 0x401024:\tjne    0x401005\n",
            "\nBreakpoint 1, 0x0000000000401022 in ?? ()\n$1 = 10\n",
            "[Inferior 1 (Remote target) exited normally]\n",
        ],
    );
}
