#!/usr/bin/env bash
# Build a Redox image with hwbp in it, boot it headless in QEMU, run
# hwbp-selftest at boot and report its "N passed, N failed" line.
#
#   cookbook/build-and-test.sh /path/to/redox [--kvm] [--timeout SECONDS] [--no-build]
#
# /path/to/redox is a checkout of https://gitlab.redox-os.org/redox-os/redox
# (the build system; `make` works there already, with or without Podman).
# This script:
#   1. copies cookbook/recipes/* into <redox>/recipes/wip/hwbp/ (`cp -L`, so
#      the kernel series is copied, not linked: Podman builds see only the
#      Redox tree) and this hwbp tree into recipes/wip/hwbp/hwbpd/source
#      (a local-source recipe; hwbp-tools shares it);
#   2. writes config/x86_64/hwbp.toml (cookbook/config/hwbp.toml) and
#      config/x86_64/hwbp-test.toml: minimal.toml + hwbp.toml, "hwbp" added
#      to the user's login schemes (generated from the tree's config/base.toml),
#      and an init script that runs the selftest instead of a console and
#      shuts down;
#   3. `make c.hwbpd,hwbp-tools` then `make rebuild CONFIG_NAME=hwbp-test`
#      (cooks every recipe of the config, kernel-hwbp included, and writes
#      build/x86_64/hwbp-test/harddrive.img);
#   4. `make qemu CONFIG_NAME=hwbp-test gpu=no net=no audio=no usb=no kvm=no
#      qemu_serial_logfile=...` under `timeout`; the guest powers off after
#      the selftest, which ends QEMU;
#   5. reads the last "N passed, N failed" line of the serial log; exit 0 iff
#      it was found, N passed > 0 and N failed == 0.
#
# It cannot run in hwbp's own CI (no network to Redox's servers there): it
# was written against the build system's sources (redox-os/redox 81bc5bf:
# Makefile, mk/config.mk, mk/repo.mk, mk/disk.mk, mk/qemu.mk, src/recipe.rs,
# src/cook/fetch.rs, src/cook/script.rs, config/*.toml; redox-os/installer
# d7409a2 src/config/mod.rs), see cookbook/README.md. Unverified by a run.
#
# TCG (the default here) implements x86 debug registers as the SDM says for
# aligned accesses; with --kvm the host CPU does, which is also fine on bare
# metal hosts (some nested/paravirtual KVMs do not deliver data breakpoints).
set -euo pipefail

usage() {
    sed -n '2,6p' "$0" >&2
    exit 2
}

here="$(cd "$(dirname "$0")" && pwd)" # cookbook/
hwbp="$(cd "$here/.." && pwd)"        # the hwbp tree
redox=""
kvm=no
timeout_s=1800
build=1
while (($#)); do
    case "$1" in
    --kvm) kvm=yes ;;
    --timeout)
        shift
        timeout_s=${1:?--timeout needs seconds}
        ;;
    --no-build) build=0 ;;
    -h | --help) usage ;;
    -*) usage ;;
    *) redox="$1" ;;
    esac
    shift
done
[[ -n $redox ]] || usage
redox="$(cd "$redox" && pwd)"

say() { echo "build-and-test: $*"; }
fail() {
    echo "build-and-test: $*" >&2
    exit 1
}

for f in Makefile mk/repo.mk mk/qemu.mk mk/disk.mk config/base.toml config/minimal.toml; do
    [[ -f $redox/$f ]] || fail "$redox/$f missing: not a redox-os/redox build tree"
done
[[ -d $redox/recipes/wip ]] || fail "$redox/recipes/wip missing: not a redox-os/redox build tree"
command -v python3 > /dev/null || fail "python3 is needed (config generation)"
python3 -c 'import tomllib' 2> /dev/null || fail "python3 >= 3.11 is needed (tomllib)"

arch=x86_64
config_name=hwbp-test
dest="$redox/recipes/wip/hwbp"
build_dir="$redox/build/$arch/$config_name"
log="$build_dir/hwbp-serial.log"

# --- 1. recipes and source --------------------------------------------------
bash "$here/check-recipes.sh"
mkdir -p "$dest"
for r in "$here"/recipes/*/; do
    name="$(basename "$r")"
    mkdir -p "$dest/$name"
    # Recipe files only: keep the cookbook's source/ and target/ (the kernel
    # clone, build caches) between runs.
    find "$dest/$name" -mindepth 1 -maxdepth 1 ! -name source ! -name target ! -name source.tmp ! -name .hwbp-series \
        -exec rm -rf {} +
    cp -rL "$r"/. "$dest/$name/"
done
say "recipes copied to $dest"

# The kernel's fetched source goes when the series changed since it was
# patched (the cookbook's re-fetch keeps the files the old series created).
bash "$here/fresh-kernel-source.sh" "$dest/kernel-hwbp" "$hwbp"

# hwbpd's local source: the files git knows about (tracked and untracked,
# not ignored; so no target/), fresh mtimes so the cookbook sees them as new.
src="$dest/hwbpd/source"
rm -rf "$src"
mkdir -p "$src"
(cd "$hwbp" && git ls-files -z --cached --others --exclude-standard |
    xargs -0 cp --parents -P -t "$src")
say "hwbp source copied to $src"

# --- 2. filesystem configs ----------------------------------------------------
cp "$here/config/hwbp.toml" "$redox/config/$arch/hwbp.toml"
python3 - "$redox/config/base.toml" "$redox/config/$arch/$config_name.toml" <<'PY'
import json, sys, tomllib

base_path, out_path = sys.argv[1], sys.argv[2]
with open(base_path, "rb") as f:
    base = tomllib.load(f)

# Upstream's login schemes, plus hwbp for the unprivileged user.
entry = next((f for f in base.get("files", []) if f.get("path") == "/etc/login_schemes.toml"), None)
if entry is None:
    sys.exit(f"{base_path} has no /etc/login_schemes.toml entry: add \"hwbp\" for your users by hand")
schemes = tomllib.loads(entry["data"])
users = schemes.get("user_schemes", {})
if "user" not in users:
    sys.exit(f"{base_path}: no [user_schemes.user] in /etc/login_schemes.toml")
if "hwbp" not in users["user"]["schemes"]:
    users["user"]["schemes"].append("hwbp")
login = "".join(
    f"[user_schemes.{name}]\nschemes = {json.dumps(u['schemes'])}\n" for name, u in users.items()
)

# Runs instead of the console (minimal.toml's 30_console): hwbpd is up
# (20_hwbpd.service, a scheme service: /scheme/hwbp exists once it is
# ready), then the selftest, then power off, which ends QEMU.
console = "requires_weak 10_net.target 20_hwbpd.service\nion /usr/lib/hwbp-selftest.ion\n"
runner = """#!/usr/bin/env ion
echo "hwbp: selftest starting"
hwbp-selftest
echo "hwbp: selftest exited with status $?"
shutdown
"""

def file_entry(path, data):
    return f"[[files]]\npath = {json.dumps(path)}\ndata = {json.dumps(data)}\n"

with open(out_path, "w") as out:
    out.write("# Generated by hwbp's cookbook/build-and-test.sh: hwbp selftest image.\n")
    out.write('include = ["../minimal.toml", "hwbp.toml"]\n\n')
    out.write("[general]\nfilesystem_size = 320\n\n")
    out.write(file_entry("/etc/login_schemes.toml", login) + "\n")
    out.write(file_entry("/usr/lib/init.d/30_console", console) + "\n")
    out.write(file_entry("/usr/lib/hwbp-selftest.ion", runner))
PY
say "configs written: config/$arch/hwbp.toml, config/$arch/$config_name.toml"

cd "$redox"
mk=(make ARCH="$arch" CONFIG_NAME="$config_name")

# --- 3. build -------------------------------------------------------------------
if ((build)); then
    # Our two packages always rebuild from the fresh source; the kernel
    # rebuilds when its series changed (its source was removed above).
    "${mk[@]}" c.hwbpd,hwbp-tools
    "${mk[@]}" rebuild
fi
[[ -f $build_dir/harddrive.img ]] || fail "no image at $build_dir/harddrive.img"

# --- 4. boot ----------------------------------------------------------------------
rm -f "$log"
say "booting $build_dir/harddrive.img (kvm=$kvm, timeout ${timeout_s}s), serial log: $log"
set +e
# Not --foreground: on expiry the whole process group (make and QEMU) is killed.
timeout "$timeout_s" \
    "${mk[@]}" qemu gpu=no net=no audio=no usb=no kvm="$kvm" qemu_serial_logfile="$log" < /dev/null
qemu_status=$?
set -e
((qemu_status == 124)) && say "QEMU did not power off within ${timeout_s}s (killed)"

# --- 5. result --------------------------------------------------------------------
[[ -f $log ]] || fail "no serial log written"
line="$(grep -aoE '[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 || true)"
[[ -n $line ]] || fail "no 'N passed, N failed' line in $log (see its end: tail $log)"
passed="${line%% passed*}"
failed="${line#*, }"
failed="${failed%% failed*}"
say "selftest on Redox: $line"
((passed > 0 && failed == 0)) || exit 1
