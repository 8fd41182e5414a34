//! The config fragment as the Redox installer reads it: included after an
//! upstream-shaped config (`cookbook/config/testdata/upstream-base.toml`,
//! written in the shape of redox-os/redox `config/base.toml` + `minimal.toml`:
//! general, packages, users, files), merged by `redox_installer` itself.

use std::path::{Path, PathBuf};

use redox_installer::{Config, PackageConfig};

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// `config/x86_64/my-hwbp.toml` of cookbook/README.md, next to the files it
/// includes (as build-and-test.sh writes it).
fn user_config(dir: &Path) -> PathBuf {
    let tree = dir.join("x86_64");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::copy(config_dir().join("hwbp.toml"), tree.join("hwbp.toml")).unwrap();
    std::fs::copy(config_dir().join("testdata/upstream-base.toml"), tree.join("base.toml")).unwrap();
    let me = tree.join("my-hwbp.toml");
    std::fs::write(&me, "include = [\"base.toml\", \"hwbp.toml\"]\n").unwrap();
    me
}

#[test]
fn the_fragment_replaces_the_kernel_and_adds_hwbp_after_an_upstream_config() {
    let dir = std::env::temp_dir().join(format!("hwbp-config-check-{}", std::process::id()));
    let config = Config::from_file(&user_config(&dir)).expect("redox_installer accepts the merged config");
    std::fs::remove_dir_all(&dir).ok();
    let pkg = |name: &str| config.packages.get(name).cloned();
    assert!(matches!(pkg("kernel"), Some(PackageConfig::Build(ref s)) if s == "ignore"), "upstream's kernel is ignored: {:?}", pkg("kernel"));
    // `name = {}`: built from its recipe (the installer reads `{}` as a
    // spec with no version, git or path).
    for name in ["kernel-hwbp", "hwbpd", "hwbp-tools"] {
        let from_recipe = matches!(
            pkg(name),
            Some(PackageConfig::Empty | PackageConfig::Spec { version: None, git: None, path: None })
        );
        assert!(from_recipe, "{name}: {:?}", pkg(name));
    }
    // What the base config brought stays.
    assert!(pkg("base").is_some() && pkg("bootloader").is_some());
    assert!(config.users.contains_key("user"));
}

#[test]
fn a_broken_fragment_is_refused_by_the_same_parser() {
    let dir = std::env::temp_dir().join(format!("hwbp-config-check-bad-{}", std::process::id()));
    let me = user_config(&dir);
    std::fs::write(me.with_file_name("hwbp.toml"), "[packages]\nkernel-hwbp = [1, 2]\n").unwrap();
    let result = Config::from_file(&me);
    std::fs::remove_dir_all(&dir).ok();
    assert!(result.is_err(), "a package entry that is no package config must not parse");
}
