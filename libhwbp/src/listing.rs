//! Reading the listing (`/scheme/hwbp/list`): every breakpoint the caller
//! may see, page by page. The format is `abi::list`.

use std::io;

use crate::abi::list::{ListRequest, Listing};
use crate::client::{Error, Result};
use crate::transport::Transport;

/// The most bytes the client reads from one listing handle before it
/// gives up on the server (a snapshot is at most
/// `abi::list::list_snapshot_bound(cpus)`: 32 KiB and a little with a few
/// CPUs).
pub const LIST_READ_MAX: usize = 64 << 20;

/// The text of one snapshot: open `req`'s path, read to the end, close.
pub fn list_text<T: Transport>(transport: &T, req: ListRequest) -> Result<Vec<u8>> {
    let path = req.to_string();
    let h = transport.open(&path, false).inspect_err(|e| log::debug!("libhwbp: open {path}: {e}"))?;
    let mut text = Vec::new();
    let mut chunk = vec![0u8; 4096];
    let result = loop {
        match transport.read(h, &mut chunk) {
            Ok(0) => break Ok(()),
            Ok(n) if n <= chunk.len() && text.len() + n <= LIST_READ_MAX => text.extend_from_slice(&chunk[..n]),
            Ok(_) => break Err(Error::Protocol("listing longer than the client reads")),
            Err(e) => break Err(e.into()),
        }
    };
    let closed = transport.close(h);
    result?;
    closed?;
    Ok(text)
}

/// One parsed snapshot (`list?from=<req.from>`).
pub fn list_page<T: Transport>(transport: &T, req: ListRequest) -> Result<Listing> {
    let text = list_text(transport, req)?;
    Listing::parse_bytes(&text).map_err(|e| Error::Os(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))
}

/// Every breakpoint the caller may see (root: every one; any other uid:
/// those it owns), following `next=` from page to page. The header is the
/// first page's; `next` is `None`. Pages are separate snapshots: a
/// breakpoint opened or closed meanwhile may or may not appear.
pub fn list<T: Transport>(transport: &T) -> Result<Listing> {
    let mut all = list_page(transport, ListRequest::default())?;
    while let Some(from) = all.next.take() {
        let page = list_page(transport, ListRequest { from })?;
        if page.entries.first().is_some_and(|e| all.entries.last().is_some_and(|l| e.id <= l.id)) {
            return Err(Error::Protocol("listing pages out of order"));
        }
        all.entries.extend(page.entries);
        all.next = page.next;
    }
    Ok(all)
}
