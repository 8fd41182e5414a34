//! Nothing to link: the check is `tests/config.rs`, which loads
//! `cookbook/config/hwbp.toml` through `redox_installer::Config::from_file`
//! (the code the Redox build uses to read filesystem configs), included the
//! way cookbook/README.md says, after an upstream-shaped base config.
