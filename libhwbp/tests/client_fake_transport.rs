//! The client against a small fake transport that records every call:
//! proves what the client sends (paths, commands, dup names, O_NONBLOCK)
//! and how it decodes what comes back, independent of hwbpd.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;

use libhwbp::abi::errno::{self, ErrorKind};
use libhwbp::abi::{Access, AdmittedPiece, CountRecord, EventRecord, MemEvent, OpenPath, Options, PathError, Target};
use libhwbp::{Batch, Breakpoint, Error, Transport};

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Open(String, bool),
    Dup(u32, String),
    Read(u32, usize),
    Write(u32, String),
    Fpath(u32),
    SetNonblock(u32, bool),
    Close(u32),
}

#[derive(Default)]
struct State {
    next: u32,
    calls: Vec<Call>,
    open: HashMap<u32, Kind>,
    count: CountRecord,
    /// Event queue of the (single) stream.
    queue: VecDeque<EventRecord>,
    stream_ended: bool,
    /// Errno to return from the next open.
    fail_open: Option<i32>,
    /// Errno to return on empty non-blocking reads.
    empty_errno: i32,
    fail_close: bool,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Breakpoint,
    Stream { nonblock: bool },
}

#[derive(Default)]
struct Fake(RefCell<State>);

impl Fake {
    fn new() -> Fake {
        let f = Fake::default();
        f.0.borrow_mut().empty_errno = errno::EAGAIN;
        f
    }
    fn calls(&self) -> Vec<Call> {
        self.0.borrow().calls.clone()
    }
    fn open_handles(&self) -> usize {
        self.0.borrow().open.len()
    }
    fn push(&self, n: u64) {
        let mut s = self.0.borrow_mut();
        for i in 0..n {
            let flags = if i % 2 == 1 { libhwbp::abi::EVENT_STOPPED } else { 0 };
            s.queue.push_back(EventRecord {
                id: 1,
                ip: 0x40_1000 + i,
                addr: 0x1000,
                access: 1,
                pid: 42,
                cpu: 0,
                timestamp_ns: i,
                hit: i + 1,
                tid: 7 + i,
                flags,
            });
        }
    }
}

fn ebadf() -> io::Error {
    io::Error::from_raw_os_error(errno::EBADF)
}

impl Transport for Fake {
    type Handle = u32;

    fn open(&self, path: &str, nonblock: bool) -> io::Result<u32> {
        let mut s = self.0.borrow_mut();
        s.calls.push(Call::Open(path.to_string(), nonblock));
        if let Some(e) = s.fail_open.take() {
            return Err(io::Error::from_raw_os_error(e));
        }
        OpenPath::parse(path).map_err(io::Error::from)?;
        s.next += 1;
        let h = s.next;
        s.open.insert(h, Kind::Breakpoint);
        Ok(h)
    }

    fn dup(&self, h: u32, name: &str) -> io::Result<u32> {
        let mut s = self.0.borrow_mut();
        s.calls.push(Call::Dup(h, name.to_string()));
        if s.open.get(&h) != Some(&Kind::Breakpoint) {
            return Err(ebadf());
        }
        if name != libhwbp::abi::EVENTS_DUP_NAME {
            return Err(io::Error::from_raw_os_error(errno::EINVAL));
        }
        s.next += 1;
        let n = s.next;
        s.open.insert(n, Kind::Stream { nonblock: false });
        Ok(n)
    }

    fn read(&self, h: u32, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.0.borrow_mut();
        s.calls.push(Call::Read(h, buf.len()));
        match s.open.get(&h).copied() {
            None => Err(ebadf()),
            Some(Kind::Breakpoint) => {
                let b = s.count.to_bytes();
                let dst = buf.get_mut(..b.len()).ok_or(io::Error::from_raw_os_error(errno::EINVAL))?;
                dst.copy_from_slice(&b);
                Ok(b.len())
            }
            Some(Kind::Stream { nonblock }) => {
                if s.queue.is_empty() {
                    if s.stream_ended {
                        return Ok(0);
                    }
                    // The fake cannot wait: like an in-process server, a
                    // blocking read on an empty stream reports EAGAIN too.
                    let _ = nonblock;
                    return Err(io::Error::from_raw_os_error(s.empty_errno));
                }
                let fit = buf.len() / libhwbp::abi::EVENT_RECORD_SIZE;
                let take: Vec<_> = (0..fit).map_while(|_| s.queue.pop_front()).collect();
                Ok(EventRecord::encode_into(&take, buf))
            }
        }
    }

    fn write(&self, h: u32, buf: &[u8]) -> io::Result<usize> {
        let mut s = self.0.borrow_mut();
        s.calls.push(Call::Write(h, String::from_utf8_lossy(buf).into_owned()));
        if s.open.get(&h) != Some(&Kind::Breakpoint) {
            return Err(ebadf());
        }
        libhwbp::abi::Command::parse_bytes(buf).map_err(io::Error::from)?;
        Ok(buf.len())
    }

    fn fpath(&self, h: u32, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.0.borrow_mut();
        s.calls.push(Call::Fpath(h));
        let path = s
            .calls
            .iter()
            .find_map(|c| match c {
                Call::Open(p, _) => Some(p.clone()),
                _ => None,
            })
            .ok_or_else(ebadf)?;
        let p = OpenPath::parse(&path).map_err(io::Error::from)?;
        let piece = AdmittedPiece::new(p.event.addr() & !3, 4, p.event.access()).unwrap();
        let text = format!("/scheme/hwbp/{}", p.with_pieces(&[piece]));
        buf[..text.len()].copy_from_slice(text.as_bytes());
        Ok(text.len())
    }

    fn set_nonblock(&self, h: u32, nonblock: bool) -> io::Result<()> {
        let mut s = self.0.borrow_mut();
        s.calls.push(Call::SetNonblock(h, nonblock));
        match s.open.get_mut(&h) {
            Some(Kind::Stream { nonblock: nb }) => {
                *nb = nonblock;
                Ok(())
            }
            Some(Kind::Breakpoint) => Ok(()),
            None => Err(ebadf()),
        }
    }

    fn close(&self, h: u32) -> io::Result<()> {
        let mut s = self.0.borrow_mut();
        s.calls.push(Call::Close(h));
        if s.fail_close {
            return Err(io::Error::from_raw_os_error(errno::EBADF));
        }
        s.open.remove(&h).map(|_| ()).ok_or_else(ebadf)
    }
}

#[test]
fn builder_sends_the_canonical_path() {
    let fake = Fake::new();
    let bp = Breakpoint::watch(0x1000).len(6).access(Access::Write).target(Target::Task(42)).pinned().ring(16).period(2);
    let h = bp.open(&fake).unwrap();
    assert_eq!(fake.calls()[0], Call::Open("task/42/mem:0x1000/6:w?pinned&period=2&ring=16".into(), false));
    assert_eq!(h.requested_path().to_string(), "task/42/mem:0x1000/6:w?pinned&period=2&ring=16");
}

#[test]
fn builder_defaults_watch_four_bytes_rw_on_self() {
    assert_eq!(Breakpoint::watch(0x20).path().unwrap().to_string(), "self/mem:0x20/4:rw");
    assert_eq!(Breakpoint::exec(0x40_0000).path().unwrap().to_string(), "self/mem:0x400000/8:x");
    let all = Breakpoint::watch(8).target(Target::AllCpus).exclusive().disabled().kernel().nosplit().wakeup(3);
    assert_eq!(all.path().unwrap().to_string(), "cpu/all/mem:0x8/4:rw?exclusive&disabled&wakeup=3&kernel&nosplit");
}

#[test]
fn builder_from_a_parsed_path_gives_the_same_path() {
    let p = OpenPath::parse("task/1/cpu/2/mem:0x1001/3:rw?ring=5&disabled").unwrap();
    assert_eq!(Breakpoint::from_path(&p).path().unwrap(), p);
}

#[test]
fn invalid_builder_is_einval_and_sends_nothing() {
    let fake = Fake::new();
    let cases: [(Breakpoint, PathError); 5] = [
        (Breakpoint::watch(0x10).len(0), PathError::ZeroLength),
        (Breakpoint::exec(0x10).len(1), PathError::ExecLength),
        (Breakpoint::watch(0x10).period(0), PathError::OptionOutOfRange { option: "period", min: 1, max: u64::MAX }),
        (Breakpoint::watch(0x10).wakeup(0), PathError::OptionOutOfRange { option: "wakeup", min: 1, max: u64::MAX }),
        (Breakpoint::watch(0x10).ring(1 << 21), PathError::OptionOutOfRange { option: "ring", min: 1, max: 1 << 20 }),
    ];
    for (bp, want) in cases {
        let e = bp.open(&fake).unwrap_err();
        assert_eq!(e.errno(), Some(errno::EINVAL));
        assert_eq!(e.kind(), Some(ErrorKind::Invalid));
        assert!(matches!(&e, Error::Invalid(p) if *p == want), "{e:?}");
    }
    assert!(fake.calls().is_empty());
}

#[test]
fn server_errors_keep_their_errno_and_kind() {
    let fake = Fake::new();
    for (errno, kind) in [(errno::ENOSPC, ErrorKind::NoSpace), (errno::EPERM, ErrorKind::NotPermitted), (errno::ESRCH, ErrorKind::NoSuchTarget), (errno::EMFILE, ErrorKind::QuotaReached)] {
        fake.0.borrow_mut().fail_open = Some(errno);
        let e = Breakpoint::watch(0x10).open(&fake).unwrap_err();
        assert_eq!(e.errno(), Some(errno));
        assert_eq!(e.kind(), Some(kind));
        assert_eq!(io::Error::from(e).raw_os_error(), Some(errno));
    }
    assert_eq!(fake.open_handles(), 0);
}

#[test]
fn read_count_decodes_the_record_and_scales_it() {
    let fake = Fake::new();
    fake.0.borrow_mut().count = CountRecord { value: 10, time_enabled_ns: 400, time_running_ns: 100, id: 9, lost: 2 };
    let h = Breakpoint::watch(0x10).open(&fake).unwrap();
    let (c, scaled) = h.read_scaled().unwrap();
    assert_eq!((c.value, c.id, c.lost), (10, 9, 2));
    assert_eq!(scaled, Some(40));
    assert_eq!(fake.calls()[1], Call::Read(1, 40));
}

#[test]
fn commands_are_written_in_the_contract_syntax() {
    let fake = Fake::new();
    let mut h = Breakpoint::watch(0x10).open(&fake).unwrap();
    h.disable().unwrap();
    h.enable().unwrap();
    h.reset().unwrap();
    h.modify(MemEvent::new(0x2000, 2, Access::Write).unwrap(), None).unwrap();
    h.modify_to(&Breakpoint::watch(0x3000).pinned()).unwrap();
    let writes: Vec<_> = fake.calls().into_iter().filter_map(|c| if let Call::Write(_, t) = c { Some(t) } else { None }).collect();
    assert_eq!(writes, ["disable", "enable", "reset", "modify mem:0x2000/2:w", "modify mem:0x3000/4:rw?pinned"]);
    assert_eq!(h.requested_path().to_string(), "self/mem:0x3000/4:rw?pinned");
}

#[test]
fn modify_to_default_options_replaces_them_explicitly() {
    let fake = Fake::new();
    let mut h = Breakpoint::watch(0x10).pinned().open(&fake).unwrap();
    h.modify(MemEvent::new(0x20, 4, Access::Write).unwrap(), Some(Options::default())).unwrap();
    assert!(fake.calls().contains(&Call::Write(1, "modify mem:0x20/4:w?period=1".into())));
    assert!(!h.requested_path().options.pinned);
}

#[test]
fn path_reads_the_admitted_pieces_back() {
    let fake = Fake::new();
    let h = Breakpoint::watch(0x1002).access(Access::Write).target(Target::Task(3)).open(&fake).unwrap();
    let admitted = h.path().unwrap();
    assert_eq!(admitted.path, *h.requested_path());
    assert_eq!(admitted.pieces, [AdmittedPiece::new(0x1000, 4, Access::Write).unwrap()]);
    assert!(h.path_string().unwrap().starts_with("/scheme/hwbp/task/3/"));
}

#[test]
fn drop_closes_the_handle_exactly_once() {
    let fake = Fake::new();
    {
        let _h = Breakpoint::watch(0x10).open(&fake).unwrap();
        assert_eq!(fake.open_handles(), 1);
    }
    assert_eq!(fake.open_handles(), 0);
    let closes = fake.calls().iter().filter(|c| matches!(c, Call::Close(_))).count();
    assert_eq!(closes, 1);
}

#[test]
fn explicit_close_reports_errors_and_drop_does_not_close_again() {
    let fake = Fake::new();
    let h = Breakpoint::watch(0x10).open(&fake).unwrap();
    h.close().unwrap();
    let h2 = Breakpoint::watch(0x10).open(&fake).unwrap();
    fake.0.borrow_mut().fail_close = true;
    assert_eq!(h2.close().unwrap_err().errno(), Some(errno::EBADF));
    let closes = fake.calls().iter().filter(|c| matches!(c, Call::Close(_))).count();
    assert_eq!(closes, 2);
}

#[test]
fn drop_with_a_failing_close_does_not_panic() {
    let fake = Fake::new();
    let h = Breakpoint::watch(0x10).open(&fake).unwrap();
    fake.0.borrow_mut().fail_close = true;
    drop(h);
}

#[test]
fn event_stream_is_dup_events_and_decodes_batches() {
    let fake = Fake::new();
    let h = Breakpoint::watch(0x1000).access(Access::Write).open(&fake).unwrap();
    let mut ev = h.events().unwrap();
    assert!(fake.calls().contains(&Call::Dup(1, "events-v2".into())));
    fake.push(5);
    let mut out = [EventRecord::default(); 3];
    assert_eq!(ev.try_next_batch(&mut out).unwrap(), Batch::Records(3));
    assert_eq!(out.map(|r| r.hit), [1, 2, 3]);
    assert_eq!(out.map(|r| (r.tid, r.is_stopped())), [(7, false), (8, true), (9, false)]);
    assert_eq!(out[0].access_kind(), Some(Access::Write));
    assert_eq!(ev.try_next_batch(&mut out).unwrap(), Batch::Records(2));
    assert_eq!(out[..2].iter().map(|r| r.hit).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(ev.try_next_batch(&mut out).unwrap(), Batch::Empty);
    assert_eq!(ev.try_next_batch(&mut []).unwrap(), Batch::Records(0));
}

#[test]
fn redox_ewouldblock_is_an_empty_batch_too() {
    let fake = Fake::new();
    fake.0.borrow_mut().empty_errno = errno::EWOULDBLOCK_REDOX;
    let h = Breakpoint::watch(0x1000).open(&fake).unwrap();
    let mut ev = h.events().unwrap();
    assert_eq!(ev.try_next_batch(&mut [EventRecord::default(); 4]).unwrap(), Batch::Empty);
}

#[test]
fn nonblock_is_set_only_when_the_mode_changes() {
    let fake = Fake::new();
    let h = Breakpoint::watch(0x1000).open(&fake).unwrap();
    let mut ev = h.events().unwrap();
    let mut out = [EventRecord::default(); 4];
    ev.next_batch(&mut out).unwrap(); // starts blocking: no fcntl
    ev.try_next_batch(&mut out).unwrap(); // -> nonblock
    ev.try_next_batch(&mut out).unwrap(); // unchanged
    ev.next_batch(&mut out).unwrap(); // -> blocking
    let modes: Vec<_> = fake.calls().into_iter().filter_map(|c| if let Call::SetNonblock(_, nb) = c { Some(nb) } else { None }).collect();
    assert_eq!(modes, [true, false]);
}

#[test]
fn stream_end_is_reported_once_and_sticks() {
    let fake = Fake::new();
    let h = Breakpoint::watch(0x1000).open(&fake).unwrap();
    let mut ev = h.events().unwrap();
    fake.push(2);
    fake.0.borrow_mut().stream_ended = true;
    let all: Vec<_> = ev.blocking_iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), 2);
    assert!(ev.has_ended());
    let reads_before = fake.calls().len();
    assert_eq!(ev.next_batch(&mut [EventRecord::default()]).unwrap(), Batch::Ended);
    assert_eq!(fake.calls().len(), reads_before, "no read after the end");
}

#[test]
fn drain_collects_everything_queued() {
    let fake = Fake::new();
    let h = Breakpoint::watch(0x1000).open(&fake).unwrap();
    let mut ev = h.events().unwrap();
    fake.push(150);
    let got = ev.drain().unwrap();
    assert_eq!(got.len(), 150);
    assert!(got.windows(2).all(|w| w[1].hit == w[0].hit + 1));
}

#[test]
fn stream_and_handle_close_independently_on_drop() {
    let fake = Fake::new();
    let h = Breakpoint::watch(0x1000).open(&fake).unwrap();
    let ev = h.events().unwrap();
    assert_eq!(fake.open_handles(), 2);
    drop(ev);
    assert_eq!(fake.open_handles(), 1);
    drop(h);
    assert_eq!(fake.open_handles(), 0);
}

#[test]
fn partial_record_from_the_server_is_a_protocol_error() {
    #[derive(Clone)]
    struct Short;
    impl Transport for Short {
        type Handle = u8;
        fn open(&self, _: &str, _: bool) -> io::Result<u8> {
            Ok(0)
        }
        fn dup(&self, _: u8, _: &str) -> io::Result<u8> {
            Ok(1)
        }
        fn read(&self, _: u8, _: &mut [u8]) -> io::Result<usize> {
            Ok(10)
        }
        fn write(&self, _: u8, b: &[u8]) -> io::Result<usize> {
            Ok(b.len() - 1)
        }
        fn fpath(&self, _: u8, b: &mut [u8]) -> io::Result<usize> {
            b[0] = 0xff;
            Ok(1)
        }
        fn set_nonblock(&self, _: u8, _: bool) -> io::Result<()> {
            Ok(())
        }
        fn close(&self, _: u8) -> io::Result<()> {
            Ok(())
        }
    }
    let h = Breakpoint::watch(0x10).open(Short).unwrap();
    assert!(matches!(h.read_count(), Err(Error::Protocol(_))));
    assert!(matches!(h.enable(), Err(Error::Protocol(_))));
    assert!(matches!(h.path(), Err(Error::Protocol(_))));
    let mut ev = h.events().unwrap();
    assert!(matches!(ev.next_batch(&mut [EventRecord::default(); 2]), Err(Error::Protocol(_))));
}

#[test]
fn stop_is_a_task_option_and_resume_writes_its_commands() {
    let fake = Fake::new();
    let bp = Breakpoint::exec(0x40_1000).target(Target::Task(42)).stop();
    assert_eq!(bp.path().unwrap().to_string(), "task/42/mem:0x401000/8:x?stop");
    let h = bp.open(&fake).unwrap();
    assert!(fake.calls().contains(&Call::Open("task/42/mem:0x401000/8:x?stop".into(), false)));
    h.resume(8).unwrap();
    h.resume_all().unwrap();
    let writes: Vec<_> = fake.calls().into_iter().filter_map(|c| if let Call::Write(_, w) = c { Some(w) } else { None }).collect();
    assert_eq!(writes, ["resume 8", "resume"]);
    // Refused before anything is sent: cpu-wide stop, stop with a period.
    let before = fake.calls().len();
    for bad in [Breakpoint::watch(0x10).target(Target::Cpu(0)).stop(), Breakpoint::watch(0x10).target(Target::AllCpus).stop()] {
        assert_eq!(bad.path(), Err(PathError::StopNeedsTask));
        assert_eq!(bad.open(&fake).unwrap_err().kind(), Some(ErrorKind::Invalid));
    }
    assert_eq!(Breakpoint::watch(0x10).stop().period(2).path(), Err(PathError::StopWithPeriod));
    let mut cpu_wide = Breakpoint::watch(0x10).target(Target::Cpu(0)).open(&fake).unwrap();
    let stop = Options { stop: true, ..Options::default() };
    let err = cpu_wide.modify(MemEvent::new(0x20, 4, Access::Write).unwrap(), Some(stop)).unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Invalid));
    let sent: Vec<_> = fake.calls()[before..].iter().filter(|c| matches!(c, Call::Write(..))).cloned().collect();
    assert!(sent.is_empty(), "{sent:?}");
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_builder_values_give_a_checked_path_or_einval(
            addr in any::<u64>(), len in any::<u64>(), exec in any::<bool>(),
            period in any::<u64>(), wakeup in any::<u64>(), ring in any::<u64>(),
        ) {
            let mut bp = Breakpoint::watch(addr).len(len).period(period).wakeup(wakeup).ring(ring);
            if exec {
                bp = bp.access(Access::Exec);
            }
            match bp.path() {
                Ok(p) => prop_assert_eq!(OpenPath::parse(&p.to_string()), Ok(p)),
                Err(e) => prop_assert_eq!(e.errno(), errno::EINVAL),
            }
        }
    }
}
