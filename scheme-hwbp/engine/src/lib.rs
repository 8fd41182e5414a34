//! The policy engine: see the crate description.
