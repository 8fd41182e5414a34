//! `libhwbp::list` against a fake transport serving listing pages: the
//! paths it opens, page following, every handle closed, and what it does
//! with a server that misbehaves (pages out of order, malformed text, a
//! snapshot that never ends, refusals).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;

use libhwbp::abi::errno::{self, ErrorKind};
use libhwbp::abi::{ListRequest, Listing};
use libhwbp::listing::{list_page, list_text, LIST_READ_MAX};
use libhwbp::{Error, Transport};

/// Serves `pages` by path, at most `chunk` bytes per read; `endless`
/// makes every read return a full chunk for ever.
#[derive(Default)]
struct Pages {
    pages: HashMap<String, String>,
    chunk: usize,
    endless: bool,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    opened: Vec<String>,
    open: HashMap<u32, (String, usize)>,
    next: u32,
}

impl Transport for Pages {
    type Handle = u32;
    fn open(&self, path: &str, _nonblock: bool) -> io::Result<u32> {
        let mut s = self.state.borrow_mut();
        s.opened.push(path.to_string());
        if !self.pages.contains_key(path) {
            return Err(io::Error::from_raw_os_error(errno::EPERM));
        }
        s.next += 1;
        let h = s.next;
        s.open.insert(h, (path.to_string(), 0));
        Ok(h)
    }
    fn dup(&self, _: u32, _: &str) -> io::Result<u32> {
        Err(io::Error::from_raw_os_error(errno::EINVAL))
    }
    fn read(&self, h: u32, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.state.borrow_mut();
        let (path, pos) = s.open.get_mut(&h).ok_or(io::Error::from_raw_os_error(errno::EBADF))?;
        if self.endless {
            let n = buf.len().min(self.chunk);
            buf[..n].fill(b'x');
            return Ok(n);
        }
        let text = self.pages[path.as_str()].as_bytes();
        let rest = text.get(*pos..).unwrap_or(&[]);
        let n = rest.len().min(buf.len()).min(self.chunk);
        buf[..n].copy_from_slice(&rest[..n]);
        *pos += n;
        Ok(n)
    }
    fn write(&self, _: u32, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(errno::EBADF))
    }
    fn fpath(&self, _: u32, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
    fn set_nonblock(&self, _: u32, _: bool) -> io::Result<()> {
        Ok(())
    }
    fn close(&self, h: u32) -> io::Result<()> {
        self.state.borrow_mut().open.remove(&h).map(|_| ()).ok_or(io::Error::from_raw_os_error(errno::EBADF))
    }
}

fn entry(id: u64) -> String {
    format!(
        "bp id={id} owner=1000 path=task/7/mem:{:#x}/8:w state=live enabled=yes value={id} lost=0 time_enabled_ns=10 time_running_ns=5\n\
         piece bp={id} piece={:#x}/8:w place=dr0@cpu0-1\n",
        0x1000 + 8 * id,
        0x1000 + 8 * id
    )
}

fn page(from: u64, ids: &[u64], next: Option<u64>) -> String {
    let mut s = format!("hwbp-list version=1 uid=1000 cpus=2 now_ns=10 from={from}\n");
    for &id in ids {
        s += &entry(id);
    }
    s + &format!("end entries={} next={}\n", ids.len(), next.map_or("none".to_string(), |n| n.to_string()))
}

fn server(pages: &[(&str, String)]) -> Pages {
    Pages { pages: pages.iter().map(|(p, t)| (p.to_string(), t.clone())).collect(), chunk: 7, ..Pages::default() }
}

#[test]
fn list_follows_next_from_page_to_page_and_closes_every_handle() {
    let t = server(&[("list", page(0, &[1, 2], Some(5))), ("list?from=5", page(5, &[5, 9], Some(12))), ("list?from=12", page(12, &[12], None))]);
    let all = libhwbp::list(&t).unwrap();
    assert_eq!(all.entries.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 5, 9, 12]);
    assert_eq!((all.next, all.header.from, all.header.cpus), (None, 0, 2));
    assert_eq!(t.state.borrow().opened, ["list", "list?from=5", "list?from=12"]);
    assert!(t.state.borrow().open.is_empty(), "every listing handle closed");
    // One page alone, and its raw text.
    let p = list_page(&t, ListRequest { from: 5 }).unwrap();
    assert_eq!(p.next, Some(12));
    assert_eq!(String::from_utf8(list_text(&t, ListRequest { from: 12 }).unwrap()).unwrap(), page(12, &[12], None));
    assert_eq!(Listing::parse(&page(12, &[12], None)).unwrap().entries[0].count.value, 12);
}

#[test]
fn a_misbehaving_server_is_a_protocol_error_not_a_loop_or_a_panic() {
    // A page whose entries go back: refused.
    let t = server(&[("list", page(0, &[1, 2], Some(3))), ("list?from=3", page(0, &[2], None))]);
    assert!(libhwbp::list(&t).is_err());
    assert!(t.state.borrow().open.is_empty());
    // Malformed text: InvalidData naming the line.
    let t = server(&[("list", page(0, &[1], None).replace("place=dr0@cpu0-1", "place=dr9@cpu0"))]);
    let e = libhwbp::list(&t).unwrap_err();
    let text = e.to_string();
    assert!(matches!(&e, Error::Os(io) if io.kind() == io::ErrorKind::InvalidData) && text.contains("line 3"), "{text}");
    // A snapshot that never ends: the client stops at LIST_READ_MAX.
    let t = Pages { endless: true, chunk: 1 << 16, ..server(&[("list", String::new())]) };
    assert!(matches!(list_text(&t, ListRequest::default()), Err(Error::Protocol(_))));
    assert!(t.state.borrow().open.is_empty(), "closed after giving up");
    assert!(LIST_READ_MAX >= libhwbp::abi::list::list_snapshot_bound(4096));
    // A refused open keeps its errno.
    let t = server(&[]);
    assert_eq!(libhwbp::list(&t).unwrap_err().kind(), Some(ErrorKind::NotPermitted));
}
