//! hwbpd: see README.md.
