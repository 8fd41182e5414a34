//! Host-testable parts of the selftest.
#![no_std]
