//! Issue 14 on the host: `hwbp list --sim` (the demo scenario, as root and
//! as each user, raw and formatted) and `hwbp record --kernel --sim` (kernel
//! watchpoints with the hits-per-ip summary).
#![cfg(all(feature = "sim", not(target_os = "redox")))]

use clap::Parser;
use hwbp_tools::cli::{self, Cli};
use hwbp_tools::demo::{DEMO_KERNEL_WORD, KERNEL_COPY, KERNEL_READER, KERNEL_WRITER};
use libhwbp::abi::list::Listing;
use libhwbp::abi::{BpState, Placement};

fn run_cli(args: &[&str]) -> (i32, String) {
    let cli = Cli::try_parse_from(std::iter::once("hwbp").chain(args.iter().copied())).expect("arguments parse");
    let mut out = Vec::new();
    let code = cli::main_with(cli, &mut out);
    (code, String::from_utf8(out).unwrap())
}

fn raw_listing(uid: &str) -> Listing {
    let (code, out) = run_cli(&["list", "--sim", "--raw", "--sim-uid", uid]);
    assert_eq!(code, 0, "{out}");
    Listing::parse(&out).unwrap_or_else(|e| panic!("{e}\n{out}"))
}

#[test]
fn list_as_root_shows_every_users_breakpoints_in_every_state() {
    let l = raw_listing("0");
    assert_eq!(l.header.cpus, 2);
    let owners: Vec<u32> = l.entries.iter().map(|e| e.owner).collect();
    assert_eq!(owners, [0, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1001]);
    let states: Vec<BpState> = l.entries.iter().map(|e| e.state).collect();
    assert!(states.contains(&BpState::Ended) && states.contains(&BpState::Closed), "{states:?}");
    let places: Vec<&Placement> = l.entries.iter().flat_map(|e| e.pieces.iter().map(|p| &p.place)).collect();
    assert!(places.contains(&&Placement::Waiting), "a multiplexed one waits");
    assert!(places.contains(&&Placement::Off));
    // The cpu-wide kernel watch holds DR0 on CPU 0; the task's pinned
    // watch therefore takes DR1 there and DR0 on CPU 1.
    assert_eq!(l.entries[0].pieces[0].place.to_string(), "dr0@cpu0");
    assert_eq!(l.entries[0].path.to_string(), format!("cpu/0/mem:{DEMO_KERNEL_WORD:#x}/8:w?pinned&kernel"));
    assert_eq!(l.entries[1].pieces[0].place.to_string(), "dr1@cpu0,dr0@cpu1");
    // Multiplexed: the two flexible ones shared their turns.
    for e in &l.entries[2..4] {
        assert_eq!((e.count.time_running_ns, e.count.time_enabled_ns), (20_000_000, 40_000_000), "{e:?}");
    }
}

#[test]
fn list_as_a_user_never_shows_another_users_breakpoints() {
    for (uid, n) in [("1000", 7), ("1001", 1), ("4242", 0)] {
        let l = raw_listing(uid);
        assert_eq!(l.entries.len(), n, "uid {uid}");
        assert!(l.entries.iter().all(|e| e.owner.to_string() == uid), "uid {uid}: {l:?}");
        assert_eq!(l.header.uid.to_string(), uid);
    }
    let (code, out) = run_cli(&["list", "--sim", "--sim-uid", "1000"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("7 breakpoints (uid 1000: its own), 2 CPUs"), "{out}");
    assert!(!out.contains("cpu/0/mem:") && !out.contains("0x9000"), "{out}");
}

#[test]
fn list_prints_one_line_per_breakpoint_and_one_per_piece_with_its_registers() {
    let (code, out) = run_cli(&["list", "--sim"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(cli::format_list(&raw_listing("0")), out, "the table is format_list of the raw listing");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "9 breakpoints (root: every user's), 2 CPUs, at 40.0 ms");
    assert_eq!(lines[1], "  ID  OWNER  SCHED          ENABLED  STATE     COUNT  RUNNING/ENABLED ms  PATH");
    assert_eq!(lines[2], "   1      0  pinned         yes      live         10  40.0/40.0 (100%)    cpu/0/mem:0xffff800000100000/8:w?pinned&kernel");
    assert_eq!(lines[3], "      piece 0xffff800000100000/8:w    dr0 on cpu 0");
    for needle in [
        "      piece 0x7006/2:w                dr2 on cpu 0, dr1 on cpu 1",
        "      piece 0x7000/4:rw               dr0 on cpu 1",
        "      piece 0x7010/8:rw               waiting (multiplexed out: armed at a later turn)",
        "off (disabled)",
        "off (its task ended)",
        "off (closed; an events stream holds it)",
    ] {
        assert!(out.contains(needle), "{needle}:\n{out}");
    }
    assert_eq!(lines.iter().filter(|l| l.trim_start().starts_with("piece ")).count(), 10);
}

#[test]
fn list_without_sim_on_the_host_says_there_is_no_scheme() {
    let (code, out) = run_cli(&["list"]);
    assert_eq!(code, 1);
    assert!(out.contains("hwbp list: /scheme/hwbp exists only on Redox"), "{out}");
}

/// The summary rows of `out`: (hits, mode, ip, address, access).
fn summary_rows(out: &str) -> Vec<(u64, String, u64, u64, String)> {
    out.lines()
        .skip_while(|l| !l.starts_with("# summary"))
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
            (f[0].parse().unwrap(), f[1].to_string(), hex(f[2]), hex(f[3]), f[4].to_string())
        })
        .collect()
}

#[test]
fn record_kernel_counts_kernel_code_per_ip_and_tells_reads_from_writes() {
    let ev = format!("mem:{DEMO_KERNEL_WORD:#x}/16:rw");
    let (code, out) = run_cli(&["record", "--sim", "--kernel", "-a", "--sim-stores", "8", "-e", &ev]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("# 14 records, 14 hits, 0 lost: cpu/all/{ev}?kernel")), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("pid")).count(), 14);
    assert!(out.lines().filter(|l| l.starts_with("pid")).all(|l| l.trim_end_matches(" kernel").ends_with("bp 1")), "the companion's records are not printed:\n{out}");
    let k = DEMO_KERNEL_WORD;
    assert_eq!(
        summary_rows(&out),
        [
            (8, "kernel".to_string(), KERNEL_WRITER + 4, k, "w".to_string()),
            (4, "kernel".to_string(), KERNEL_READER + 4, k, "r".to_string()),
            (2, "kernel".to_string(), KERNEL_COPY + 4, k + 8, "w".to_string()),
        ],
        "{out}"
    );
    assert!(out.ends_with("# 14 records at 3 instruction addresses, 0 lost\n"), "{out}");
    // Without the companion, reads and writes are not told apart.
    let (_, out) = run_cli(&["record", "--sim", "--kernel", "--no-rw-split", "-a", "--sim-stores", "8", "-e", &ev]);
    assert!(summary_rows(&out).iter().all(|r| r.4 == "rw"), "{out}");
    assert!(out.contains("rw: a read or a write"), "{out}");
}

#[test]
fn record_kernel_on_a_user_word_counts_the_kernels_copies_beside_the_tasks_stores() {
    let (code, out) = run_cli(&["record", "--sim", "--kernel", "--sim-stores", "4", "-e", "mem:0x7000/8:w"]);
    assert_eq!(code, 0, "{out}");
    let rows = summary_rows(&out);
    assert_eq!(rows[0], (2, "kernel".to_string(), KERNEL_COPY + 4, 0x7000, "w".to_string()), "{out}");
    assert_eq!(rows.iter().filter(|r| r.1 == "user").map(|r| r.0).sum::<u64>(), 4, "{out}");
    // Without --kernel the same workload counts only the task's own stores
    // (the kernel's copies are not the task's accesses), and no summary.
    let (_, out) = run_cli(&["record", "--sim", "--sim-stores", "4", "-e", "mem:0x7000/8:w"]);
    assert!(out.contains("# 4 records, 4 hits, 0 lost"), "{out}");
    assert!(!out.contains("# summary"), "{out}");
    let (_, out) = run_cli(&["record", "--sim", "--summary", "--sim-stores", "4", "-e", "mem:0x7000/8:w"]);
    assert_eq!(summary_rows(&out).len(), 4, "--summary alone: the task's four stores:\n{out}");
}

#[test]
fn record_of_several_events_merges_their_records_in_time_order() {
    let (code, out) = run_cli(&["record", "--sim", "--sim-stores", "3", "-e", "mem:0x7000:w", "-e", "mem:0x7008/8:rw"]);
    assert_eq!(code, 0, "{out}");
    let recs: Vec<&str> = out.lines().filter(|l| l.starts_with("pid")).collect();
    assert_eq!(recs.len(), 6, "{out}");
    assert!(recs[0].ends_with("bp 1") && recs[1].ends_with("bp 2"), "{out}");
    assert!(out.contains("# 3 records, 3 hits, 0 lost: task/100/mem:0x7000/4:w"), "{out}");
    assert!(out.contains("# 3 records, 3 hits, 0 lost: task/100/mem:0x7008/8:rw"), "{out}");
}

#[test]
fn a_kernel_address_without_kernel_is_explained() {
    let ev = format!("mem:{DEMO_KERNEL_WORD:#x}/8:w");
    let (code, out) = run_cli(&["record", "--sim", "-a", "-e", &ev]);
    assert_eq!(code, 1);
    assert!(out.contains("EINVAL (22): 0xffff800000100000 is in the kernel half: a kernel watchpoint needs --kernel"), "{out}");
    let (code, out) = run_cli(&["stat", "--sim", "--kernel", "-a", "--sim-stores", "8", "-e", &ev]);
    assert_eq!(code, 0, "{out}");
    let line = out.lines().find(|l| l.contains(&ev)).unwrap();
    assert_eq!(line.split_whitespace().next(), Some("10"), "8 writes and 2 copies; the 4 reads do not hit a w watch: {line}");
}
