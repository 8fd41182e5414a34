//! The packet layer of gdb's remote serial protocol (RSP).
//!
//! On the wire a packet is `$<payload>#<two hex digits>`, the digits being
//! the sum of the payload bytes modulo 256. Until `QStartNoAckMode` each
//! side answers every packet with `+` (good checksum) or `-` (resend).
//! A lone `0x03` byte outside a packet is an interrupt request (Ctrl-C).
//!
//! Payload bytes `$`, `#`, `}` and `*` are sent escaped as `}` followed by
//! the byte XOR 0x20 (gdb's reader undoes it for every packet; `*` would
//! otherwise start a run-length encoding). This stub never run-length
//! encodes what it sends, and gdb never sends run-length encoded packets.

use std::io::{self, Read, Write};

/// The escape byte of the protocol.
const ESCAPE: u8 = b'}';
/// What an escaped byte is XOR-ed with.
const ESCAPE_XOR: u8 = 0x20;
/// The interrupt request byte (Ctrl-C).
pub const INTERRUPT: u8 = 0x03;

/// The checksum of a payload as it is sent.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b))
}

fn needs_escape(b: u8) -> bool {
    matches!(b, b'$' | b'#' | ESCAPE | b'*')
}

/// `payload` framed for sending: `$`, escaped bytes, `#`, checksum.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + 4);
    for &b in payload {
        if needs_escape(b) {
            body.push(ESCAPE);
            body.push(b ^ ESCAPE_XOR);
        } else {
            body.push(b);
        }
    }
    let sum = checksum(&body);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(b'$');
    out.extend_from_slice(&body);
    out.push(b'#');
    out.extend_from_slice(format!("{sum:02x}").as_bytes());
    out
}

/// Undo the escaping of a received payload.
pub fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b == ESCAPE {
            if let Some(&next) = bytes.next() {
                out.push(next ^ ESCAPE_XOR);
            }
        } else {
            out.push(b);
        }
    }
    out
}

/// What arrived on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A packet with a good checksum (payload unescaped).
    Packet(Vec<u8>),
    /// A packet whose checksum did not match (answered with `-`).
    Corrupt,
    /// `0x03` outside a packet.
    Interrupt,
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One side of an RSP connection: reads packets, sends replies, does the
/// acknowledgements while they are on.
pub struct Connection<R: Read, W: Write> {
    input: R,
    output: W,
    /// Whether `+`/`-` are exchanged (until `QStartNoAckMode`).
    acks: bool,
    /// The last packet sent, framed, for a `-` from gdb.
    last_sent: Vec<u8>,
    /// One byte read ahead and not yet used.
    pending: Option<u8>,
}

impl<R: Read, W: Write> Connection<R, W> {
    pub fn new(input: R, output: W) -> Self {
        Connection {
            input,
            output,
            acks: true,
            last_sent: Vec::new(),
            pending: None,
        }
    }

    /// Stop sending and expecting acknowledgements (after the `OK` to
    /// `QStartNoAckMode` went out, acknowledged as usual).
    pub fn disable_acks(&mut self) {
        self.acks = false;
    }

    fn byte(&mut self) -> io::Result<Option<u8>> {
        if let Some(b) = self.pending.take() {
            return Ok(Some(b));
        }
        let mut b = [0u8; 1];
        loop {
            match self.input.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(b[0])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The next packet or interrupt; `None` when the peer closed the
    /// connection. Stray acknowledgements are skipped, except that a `-`
    /// resends the last packet.
    pub fn receive(&mut self) -> io::Result<Option<Incoming>> {
        loop {
            let Some(b) = self.byte()? else {
                return Ok(None);
            };
            match b {
                b'$' => return self.packet_body().map(Some),
                INTERRUPT => return Ok(Some(Incoming::Interrupt)),
                b'-' if self.acks && !self.last_sent.is_empty() => {
                    let again = self.last_sent.clone();
                    self.output.write_all(&again)?;
                    self.output.flush()?;
                }
                // '+', and noise between packets.
                _ => {}
            }
        }
    }

    fn packet_body(&mut self) -> io::Result<Incoming> {
        let mut raw = Vec::new();
        loop {
            let Some(b) = self.byte()? else {
                return Err(io::ErrorKind::UnexpectedEof.into());
            };
            match b {
                b'#' => break,
                // A new packet before the end of this one: start over.
                b'$' => raw.clear(),
                _ => raw.push(b),
            }
        }
        let mut digits = [0u8; 2];
        for d in &mut digits {
            *d = self.byte()?.ok_or(io::ErrorKind::UnexpectedEof)?;
        }
        let sent = match (hex_value(digits[0]), hex_value(digits[1])) {
            (Some(h), Some(l)) => Some((h << 4) | l),
            _ => None,
        };
        // Without acks the checksum is not checked (the transport is
        // reliable, and gdb may send anything there).
        if !self.acks {
            return Ok(Incoming::Packet(unescape(&raw)));
        }
        if sent == Some(checksum(&raw)) {
            self.output.write_all(b"+")?;
            self.output.flush()?;
            Ok(Incoming::Packet(unescape(&raw)))
        } else {
            self.output.write_all(b"-")?;
            self.output.flush()?;
            Ok(Incoming::Corrupt)
        }
    }

    /// Send one packet. With acks on, waits for gdb's `+` (a `-` resends).
    pub fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        let framed = frame(payload);
        self.output.write_all(&framed)?;
        self.output.flush()?;
        self.last_sent = framed;
        if !self.acks {
            return Ok(());
        }
        loop {
            match self.byte()? {
                None => return Err(io::ErrorKind::UnexpectedEof.into()),
                Some(b'+') => return Ok(()),
                Some(b'-') => {
                    let again = self.last_sent.clone();
                    self.output.write_all(&again)?;
                    self.output.flush()?;
                }
                // gdb's next packet or an interrupt before its ack: keep it.
                Some(b) if b == b'$' || b == INTERRUPT => {
                    self.pending = Some(b);
                    return Ok(());
                }
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(input: &[u8]) -> Connection<&[u8], Vec<u8>> {
        Connection::new(input, Vec::new())
    }

    #[test]
    fn a_packet_with_a_good_checksum_is_acknowledged_and_returned() {
        let mut c = conn(b"+$qSupported#37");
        assert_eq!(
            c.receive().unwrap(),
            Some(Incoming::Packet(b"qSupported".to_vec()))
        );
        assert_eq!(c.output, b"+");
        assert_eq!(c.receive().unwrap(), None, "end of input");
    }

    #[test]
    fn a_bad_checksum_is_refused_with_a_minus() {
        let mut c = conn(b"$g#00");
        assert_eq!(c.receive().unwrap(), Some(Incoming::Corrupt));
        assert_eq!(c.output, b"-");
    }

    #[test]
    fn sending_frames_escapes_and_waits_for_the_ack() {
        let mut c = conn(b"-+");
        c.send(b"a#b").unwrap();
        let framed = frame(b"a#b");
        assert_eq!(framed, b"$a}\x03b#43");
        let mut twice = framed.clone();
        twice.extend_from_slice(&framed);
        assert_eq!(c.output, twice, "resent once after the '-'");
    }

    #[test]
    fn escaped_payloads_round_trip() {
        let payload = b"$#}*plain".to_vec();
        let framed = frame(&payload);
        let body = &framed[1..framed.len() - 3];
        assert_eq!(unescape(body), payload);
        assert!(!body[..].contains(&b'*') && !body.contains(&b'#'));
    }

    #[test]
    fn an_interrupt_byte_between_packets_is_reported() {
        let mut c = conn(b"\x03$?#3f");
        assert_eq!(c.receive().unwrap(), Some(Incoming::Interrupt));
        assert_eq!(c.receive().unwrap(), Some(Incoming::Packet(b"?".to_vec())));
    }

    #[test]
    fn without_acks_nothing_is_acknowledged() {
        let mut c = conn(b"$m0,1#xx");
        c.disable_acks();
        assert_eq!(
            c.receive().unwrap(),
            Some(Incoming::Packet(b"m0,1".to_vec()))
        );
        c.send(b"OK").unwrap();
        assert_eq!(c.output, b"$OK#9a");
    }

    #[test]
    fn a_packet_that_arrives_before_the_ack_is_kept() {
        let mut c = conn(b"$?#3f");
        c.send(b"OK").unwrap();
        assert_eq!(c.receive().unwrap(), Some(Incoming::Packet(b"?".to_vec())));
    }
}
