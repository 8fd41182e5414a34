//! Which tasks exist, with how many live threads and which effective uid:
//! read from the kernel's `sys:context` listing (`/scheme/sys/context`).
//!
//! The backend reads it only for `Kernel::task`: the task's euid for the
//! permission check at open, fresh each time. Exits and identity changes
//! come from the kernel as events on the control stream, and new threads
//! join their process's plan in the kernel: nothing is rescanned.
//!
//! The listing format (kernel `src/scheme/sys/context.rs` at 663e664): one
//! header line, then one row per context,
//! `PID EUID EGID STAT CPU AFFINITY TIME PRIVATE SHARED NAME`, columns padded
//! with spaces (NAME may itself hold spaces). STAT is `U` (user) / `K`
//! (kernel) / `R` (no address space), then `R` runnable / `S` sleeping /
//! `B` blocked / `Z` dead, then `+` if running now. Kernel contexts have
//! pid 0.

use std::collections::BTreeMap;

use hwbpd::kernel::{Pid, Uid};

/// The header's first column, to recognise (and skip) the header line.
const HEADER_FIRST_COLUMN: &str = "PID";

/// One row of the listing, reduced to what hwbpd needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextRow {
    pub pid: Pid,
    pub euid: Uid,
    /// Not dead (`Z`): it can still run and hit a breakpoint.
    pub alive: bool,
}

/// A row that does not parse (logged and skipped by the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRow(pub String);

/// Parse one row: the first four whitespace-separated fields. Returns
/// `Ok(None)` for the header and blank lines.
pub fn parse_row(line: &str) -> Result<Option<ContextRow>, BadRow> {
    let mut fields = line.split_whitespace();
    let Some(first) = fields.next() else { return Ok(None) };
    if first == HEADER_FIRST_COLUMN {
        return Ok(None);
    }
    let bad = || BadRow(line.to_owned());
    let pid: Pid = first.parse().map_err(|_| bad())?;
    let euid: Uid = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
    let _egid = fields.next().ok_or_else(bad)?;
    let stat = fields.next().ok_or_else(bad)?;
    let state = stat.chars().nth(1).ok_or_else(bad)?;
    if !matches!(state, 'R' | 'S' | 'B' | 'Z') {
        return Err(bad());
    }
    Ok(Some(ContextRow { pid, euid, alive: state != 'Z' }))
}

/// A task as one scan saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskState {
    pub euid: Uid,
    /// Contexts of the task that are not dead.
    pub live_threads: u32,
}

/// One scan: every user task (pid != 0) with at least one live thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    tasks: BTreeMap<Pid, TaskState>,
}

/// Pid 0 is the kernel's own contexts, never a breakpoint target.
const KERNEL_PID: Pid = 0;

impl Snapshot {
    /// Build a snapshot from the listing's text; rows that do not parse are
    /// returned beside it (the caller logs them).
    pub fn parse(text: &str) -> (Snapshot, Vec<BadRow>) {
        let mut snap = Snapshot::default();
        let mut bad = Vec::new();
        for line in text.lines() {
            match parse_row(line) {
                Ok(Some(row)) if row.pid != KERNEL_PID && row.alive => {
                    let t = snap.tasks.entry(row.pid).or_insert(TaskState { euid: row.euid, live_threads: 0 });
                    t.live_threads = t.live_threads.saturating_add(1);
                }
                Ok(_) => {}
                Err(e) => bad.push(e),
            }
        }
        (snap, bad)
    }

    pub fn task(&self, pid: Pid) -> Option<TaskState> {
        self.tasks.get(&pid).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows as the kernel formats them (`{:<6}` columns; a name with spaces).
    fn listing(rows: &[(Pid, Uid, &str, &str)]) -> String {
        let mut s = format!(
            "{:<6}{:<6}{:<6}{:<6}{:<6}{:<11}{:<12}{:<8}{:<8}{}\n",
            "PID", "EUID", "EGID", "STAT", "CPU", "AFFINITY", "TIME", "PRIVATE", "SHARED", "NAME"
        );
        for (pid, euid, stat, name) in rows {
            s += &format!(
                "{:<6}{:<6}{:<6}{:<6}{:<6}{:<11}{:<12}{:<8}{:<8}{}\n",
                pid, euid, euid, stat, "0", "all", "00:00:00.01", "12 KB", "0 B", name
            );
        }
        s
    }

    #[test]
    fn header_and_kernel_contexts_are_not_tasks() {
        let (snap, bad) = Snapshot::parse(&listing(&[(0, 0, "KR+", "[idle]"), (0, 0, "KB", "[kmain]")]));
        assert!(bad.is_empty());
        assert_eq!(snap, Snapshot::default());
    }

    #[test]
    fn threads_of_one_pid_are_counted_and_dead_ones_are_not() {
        let text = listing(&[(7, 1000, "UR+", "/usr/bin/a b"), (7, 1000, "US", "/usr/bin/a b"), (7, 1000, "UZ", "x")]);
        let (snap, bad) = Snapshot::parse(&text);
        assert!(bad.is_empty());
        assert_eq!(snap.task(7), Some(TaskState { euid: 1000, live_threads: 2 }));
    }

    #[test]
    fn a_task_whose_threads_are_all_dead_does_not_exist() {
        let (snap, _) = Snapshot::parse(&listing(&[(9, 0, "UZ", "gone")]));
        assert_eq!(snap.task(9), None);
    }

    #[test]
    fn a_malformed_row_is_reported_and_the_rest_still_parse() {
        let mut text = listing(&[(5, 0, "UB", "init")]);
        text += "garbage row\n12 0 0 U? 0\n";
        let (snap, bad) = Snapshot::parse(&text);
        assert_eq!(snap.task(5), Some(TaskState { euid: 0, live_threads: 1 }));
        assert_eq!(bad, vec![BadRow("garbage row".into()), BadRow("12 0 0 U? 0".into())]);
    }
}
