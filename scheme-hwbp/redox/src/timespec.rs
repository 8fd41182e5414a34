//! The `time:` scheme's record and the rotation timer's arithmetic.
//!
//! `/scheme/time/<clock>` (kernel `src/scheme/time.rs` at 663e664; `<clock>`
//! is the number of `syscall::flag::CLOCK_*`: 1 realtime, 4 monotonic): a read
//! returns the clock's current time as a `TimeSpec`; a write of a `TimeSpec`
//! registers a one-shot timeout at that absolute time, after which the
//! handle reports `EVENT_READ` to an event queue. `TimeSpec` is
//! `#[repr(C)] { tv_sec: i64, tv_nsec: i32 }`: 16 bytes with 4 of padding,
//! in the machine's (little-endian) byte order.

/// `CLOCK_MONOTONIC`'s number (the `<clock>` of the path): 4 on Redox.
pub const CLOCK_MONOTONIC: usize = syscall::flag::CLOCK_MONOTONIC;

/// Size of a `TimeSpec` as read and written.
pub const TIMESPEC_SIZE: usize = 16;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Nanoseconds to the record's bytes.
pub fn encode(ns: u64) -> [u8; TIMESPEC_SIZE] {
    let sec = (ns / NANOS_PER_SEC) as i64; // u64::MAX / 1e9 fits in i64
    let nsec = (ns % NANOS_PER_SEC) as i32; // < 1e9 fits in i32
    let mut b = [0u8; TIMESPEC_SIZE];
    b[..8].copy_from_slice(&sec.to_le_bytes());
    b[8..12].copy_from_slice(&nsec.to_le_bytes());
    b
}

/// The record's bytes to nanoseconds; `None` for a negative or malformed time.
pub fn decode(b: &[u8; TIMESPEC_SIZE]) -> Option<u64> {
    let sec = i64::from_le_bytes(b[..8].try_into().ok()?);
    let nsec = i32::from_le_bytes(b[8..12].try_into().ok()?);
    let sec = u64::try_from(sec).ok()?;
    let nsec = u64::try_from(nsec).ok().filter(|&n| n < NANOS_PER_SEC)?;
    sec.checked_mul(NANOS_PER_SEC)?.checked_add(nsec)
}

/// The next deadline of a periodic timer that was due at `due` and is
/// handled at `now`: one period later, or, if the loop fell behind by more
/// than a period, one period from now (ticks are skipped, not bunched).
pub fn next_deadline(due: u64, period: u64, now: u64) -> u64 {
    debug_assert!(period > 0);
    let next = due.saturating_add(period);
    if next > now { next } else { now.saturating_add(period) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespec_round_trips_and_matches_the_kernel_layout() {
        let b = encode(3 * NANOS_PER_SEC + 250);
        assert_eq!(&b[..8], &3i64.to_le_bytes());
        assert_eq!(&b[8..12], &250i32.to_le_bytes());
        assert_eq!(&b[12..], &[0; 4]);
        assert_eq!(decode(&b), Some(3 * NANOS_PER_SEC + 250));
        assert_eq!(decode(&encode(u64::MAX)), Some(u64::MAX));
    }

    #[test]
    fn encoding_matches_the_syscall_crates_timespec_bytes() {
        let ts = syscall::data::TimeSpec { tv_sec: 1_234, tv_nsec: 567_890 };
        let theirs: &[u8] = &ts;
        assert_eq!(theirs.len(), TIMESPEC_SIZE);
        assert_eq!(&encode(1_234 * NANOS_PER_SEC + 567_890)[..12], &theirs[..12]);
        let mut b = [0u8; TIMESPEC_SIZE];
        b[..12].copy_from_slice(&theirs[..12]);
        assert_eq!(decode(&b), Some(1_234_000_567_890));
    }

    #[test]
    fn negative_or_out_of_range_times_do_not_decode() {
        let mut b = encode(0);
        b[..8].copy_from_slice(&(-1i64).to_le_bytes());
        assert_eq!(decode(&b), None);
        let mut b = encode(0);
        b[8..12].copy_from_slice(&1_000_000_000i32.to_le_bytes());
        assert_eq!(decode(&b), None);
    }

    #[test]
    fn a_late_tick_skips_ahead_instead_of_bunching() {
        assert_eq!(next_deadline(100, 10, 103), 110);
        assert_eq!(next_deadline(100, 10, 110), 120);
        assert_eq!(next_deadline(100, 10, 175), 185);
    }
}
