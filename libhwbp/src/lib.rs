//! libhwbp: see README.md.
