//! The hwbp-facing part of the stub: gdb's `Z1`-`Z4` points as libhwbp
//! breakpoints on the debugged task, and their hits as stop reasons.
//! Everything the stub knows of hwbp is in this file.
//!
//! Mapping (what gdbserver's x86 target does with the debug registers):
//! - `Z1` (hardware breakpoint) → an execute breakpoint (`x`) at the address;
//! - `Z2` (write watchpoint) → a write watch (`w`) of the requested length;
//! - `Z4` (access watchpoint) → a read-write watch (`rw`);
//! - `Z3` (read watchpoint) → not served: x86 has no read-only condition.
//!   gdbserver's x86 target answers `Z3` with an empty reply; gdb then
//!   inserts the read watchpoint as an access watchpoint (`Z4`) and, when
//!   it triggers, compares the value: changed means it was a write, and gdb
//!   resumes without reporting it. This stub answers the same way, so gdb
//!   does exactly what it does against Linux;
//! - `Z0` (software breakpoint) → not served: gdb writes `int3` itself.
//!
//! Every breakpoint is opened `pinned`: when the four debug registers are
//! taken, hwbpd refuses the fifth with ENOSPC instead of multiplexing it
//! (a multiplexed watchpoint would miss hits), and the stub answers `E01`,
//! the error gdbserver gives when x86's registers run out; gdb prints
//! "Could not insert hardware watchpoint N." as it does on Linux.
//! Length and alignment are hwbpd's business: a range that is not one
//! aligned 1/2/4/8-byte piece is split into pieces, each taking a register.
//!
//! And every breakpoint is opened with `stop` (contract section 7): a hit
//! stops the thread that hit — after the access for a watchpoint, before
//! the instruction for a breakpoint — and its record says which thread
//! and that it is stopped. The thread stays stopped until the stub
//! resumes it ([`HwPoints::resume_stopped`], when gdb continues or steps)
//! or closes the breakpoint (gdb's `z`). A target that has its own way to
//! hold a thread (the simulated task: nothing runs unless the stub runs
//! it) may let go of hwbp's stop at any time; one that has not (a Redox
//! process, while ptrace does not work there) must keep the breakpoint
//! that holds the thread open until it resumes it.

use libhwbp::abi::{Access, EventRecord, Target as HwTarget};
use libhwbp::{Breakpoint, BreakpointHandle, EventStream, Transport};

use crate::target::{Point, PointError, PointKind, StopReason, WatchKind};

/// One inserted point and its breakpoint.
struct Armed<T: Transport> {
    point: Point,
    /// Declared before `handle`: the stream is closed first.
    events: EventStream<T>,
    handle: BreakpointHandle<T>,
}

/// A hit of one of the inserted points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The point as gdb inserted it.
    pub point: Point,
    /// hwbpd's record of the hit.
    pub record: EventRecord,
}

impl Hit {
    /// The stop reason gdb is told.
    pub fn reason(&self) -> StopReason {
        match self.point.kind {
            PointKind::Hardware | PointKind::Software => StopReason::HwBreak,
            PointKind::Write => StopReason::Watch {
                kind: WatchKind::Write,
                addr: self.point.addr,
            },
            PointKind::Read => StopReason::Watch {
                kind: WatchKind::Read,
                addr: self.point.addr,
            },
            PointKind::Access => StopReason::Watch {
                kind: WatchKind::Access,
                addr: self.point.addr,
            },
        }
    }

    /// Whether the hit is a breakpoint (before the instruction) rather
    /// than a watchpoint (after the access).
    pub fn is_exec(&self) -> bool {
        matches!(self.point.kind, PointKind::Hardware | PointKind::Software)
    }

    /// The thread that hit (the kernel's id of the context).
    pub fn thread(&self) -> u64 {
        self.record.tid
    }

    /// Whether the hit stopped the thread (it did, unless the hit could
    /// not be recorded, or was not a user-mode one).
    pub fn stopped(&self) -> bool {
        self.record.is_stopped()
    }
}

/// The hardware points of one task.
pub struct HwPoints<T: Transport + Clone> {
    transport: T,
    task: HwTarget,
    armed: Vec<Armed<T>>,
}

fn refused(e: &libhwbp::Error) -> PointError {
    PointError::Refused {
        errno: e.errno(),
        why: e.to_string(),
    }
}

impl<T: Transport + Clone> HwPoints<T> {
    /// Points on process `pid` through `transport`.
    pub fn new(transport: T, pid: u64) -> Self {
        HwPoints {
            transport,
            task: HwTarget::Task(pid),
            armed: Vec::new(),
        }
    }

    /// The breakpoint that serves `point`, or why there is none.
    pub fn breakpoint_for(&self, point: Point) -> Result<Breakpoint, PointError> {
        let bp = match point.kind {
            PointKind::Software | PointKind::Read => return Err(PointError::Unsupported),
            // gdb's kind for an x86 breakpoint is 1 (the int3 length);
            // an execute breakpoint covers the instruction at the address.
            PointKind::Hardware => Breakpoint::exec(point.addr),
            PointKind::Write => Breakpoint::watch(point.addr)
                .len(point.len)
                .access(Access::Write),
            PointKind::Access => Breakpoint::watch(point.addr)
                .len(point.len)
                .access(Access::ReadWrite),
        };
        Ok(bp.target(self.task).pinned().stop())
    }

    /// `Z`: open the breakpoint (and its hit stream).
    pub fn insert(&mut self, point: Point) -> Result<(), PointError> {
        let bp = self.breakpoint_for(point)?;
        let handle = bp.open(self.transport.clone()).map_err(|e| refused(&e))?;
        let events = handle.events().map_err(|e| refused(&e))?;
        self.armed.push(Armed {
            point,
            events,
            handle,
        });
        Ok(())
    }

    /// `z`: close the breakpoint (hwbpd disarms it before the close
    /// returns). Removing a point that is not inserted is an error, as in
    /// gdbserver.
    pub fn remove(&mut self, point: Point) -> Result<(), PointError> {
        let Some(i) = self.armed.iter().position(|a| a.point == point) else {
            if matches!(point.kind, PointKind::Software | PointKind::Read) {
                return Err(PointError::Unsupported);
            }
            return Err(PointError::Refused {
                errno: None,
                why: format!("{point:?} is not inserted"),
            });
        };
        let armed = self.armed.swap_remove(i);
        drop(armed.events);
        armed.handle.close().map_err(|e| refused(&e))
    }

    /// Remove every point.
    pub fn clear(&mut self) {
        self.armed.clear();
    }

    /// The points inserted now.
    pub fn points(&self) -> impl Iterator<Item = Point> + '_ {
        self.armed.iter().map(|a| a.point)
    }

    /// Run again every thread a breakpoint of this task stopped (gdb
    /// resumes the process).
    pub fn resume_stopped(&mut self) -> Result<(), libhwbp::Error> {
        for a in &self.armed {
            a.handle.resume_all()?;
        }
        Ok(())
    }

    /// Every hit recorded since the last call, in the order of the points
    /// (a transport that cannot wait returns what is queued).
    pub fn take_hits(&mut self) -> Result<Vec<Hit>, libhwbp::Error> {
        let mut hits = Vec::new();
        for a in &mut self.armed {
            for record in a.events.drain()? {
                hits.push(Hit {
                    point: a.point,
                    record,
                });
            }
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct NoTransport;

    impl Transport for NoTransport {
        type Handle = usize;
        fn open(&self, _: &str, _: bool) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(
                libhwbp::abi::errno::ENOSPC,
            ))
        }
        fn dup(&self, _: usize, _: &str) -> std::io::Result<usize> {
            unreachable!()
        }
        fn read(&self, _: usize, _: &mut [u8]) -> std::io::Result<usize> {
            unreachable!()
        }
        fn write(&self, _: usize, _: &[u8]) -> std::io::Result<usize> {
            unreachable!()
        }
        fn fpath(&self, _: usize, _: &mut [u8]) -> std::io::Result<usize> {
            unreachable!()
        }
        fn set_nonblock(&self, _: usize, _: bool) -> std::io::Result<()> {
            unreachable!()
        }
        fn close(&self, _: usize) -> std::io::Result<()> {
            unreachable!()
        }
    }

    fn path(kind: PointKind, addr: u64, len: u64) -> Result<String, PointError> {
        let hw = HwPoints::new(NoTransport, 42);
        hw.breakpoint_for(Point { kind, addr, len })
            .map(|bp| bp.path().unwrap().to_string())
    }

    #[test]
    fn each_z_type_maps_to_the_x86_condition_gdbserver_uses() {
        assert_eq!(
            path(PointKind::Hardware, 0x40102f, 1).unwrap(),
            "task/42/mem:0x40102f/8:x?pinned&stop"
        );
        assert_eq!(
            path(PointKind::Write, 0x404000, 8).unwrap(),
            "task/42/mem:0x404000/8:w?pinned&stop"
        );
        assert_eq!(
            path(PointKind::Access, 0x404010, 4).unwrap(),
            "task/42/mem:0x404010/4:rw?pinned&stop"
        );
        assert_eq!(
            path(PointKind::Read, 0x404008, 8),
            Err(PointError::Unsupported),
            "x86: no read-only watch"
        );
        assert_eq!(
            path(PointKind::Software, 0x401000, 1),
            Err(PointError::Unsupported)
        );
    }

    #[test]
    fn a_refusal_carries_hwbpds_errno() {
        let mut hw = HwPoints::new(NoTransport, 42);
        let err = hw
            .insert(Point {
                kind: PointKind::Write,
                addr: 0x404000,
                len: 8,
            })
            .unwrap_err();
        assert!(
            matches!(
                err,
                PointError::Refused {
                    errno: Some(libhwbp::abi::errno::ENOSPC),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(hw.points().count(), 0);
        assert!(matches!(
            hw.remove(Point {
                kind: PointKind::Write,
                addr: 0x404000,
                len: 8
            }),
            Err(PointError::Refused { .. })
        ));
    }
}
