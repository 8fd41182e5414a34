#!/usr/bin/env bash
# Static checks of the cookbook files that need no Redox build tree (run in
# CI by tests/redox-check.sh): every recipe and config parses as TOML and
# has the fields the cookbook (redox-os/redox src/recipe.rs) and init expect;
# the kernel recipe applies exactly kernel-patch/patches/*.patch, in order,
# at the pinned commit; the init service names the `hwbp` scheme and the
# hwbpd binary.
set -euo pipefail
cd "$(dirname "$0")"
bash test-fresh-kernel-source.sh

if ! python3 -c 'import tomllib' 2> /dev/null; then
    # No Python 3.11 (tests/install-deps.sh does not install it): the
    # consistency checks that matter most, with grep, and a note.
    echo "check-recipes: note: no python3 >= 3.11 (tomllib); TOML parsing skipped, consistency checked with grep"
    fail() {
        echo "check-recipes: $*" >&2
        exit 1
    }
    k=recipes/kernel-hwbp/recipe.toml
    listed="$(grep -o '"patches/[^"]*"' "$k" | tr -d '"' | sed 's|^patches/||')"
    series="$(cd ../kernel-patch/patches && ls -1 -- *.patch | LC_ALL=C sort)"
    [[ $listed == "$series" ]] ||
        fail "kernel-hwbp: patches list != kernel-patch/patches/*.patch: list every patch, in order, in $k"
    if [[ -f ../kernel-patch/PINNED ]]; then
        pinned="$(awk 'NF { print $1; exit }' ../kernel-patch/PINNED)"
        grep -qx "rev = \"$pinned\"" "$k" || fail "kernel-hwbp: rev != kernel-patch/PINNED ($pinned)"
    fi
    s=recipes/hwbpd/20_hwbpd.service
    grep -qx 'cmd = "hwbpd"' "$s" || fail "service: cmd must be hwbpd"
    grep -qx 'type = { scheme = "hwbp" }' "$s" || fail "service: type must be { scheme = \"hwbp\" }"
    h=recipes/hwbpd/recipe.toml
    grep -qx 'COOKBOOK_CARGO_PATH=scheme-hwbp/redox' "$h" || fail "hwbpd: cargo path must be scheme-hwbp/redox"
    grep -q 'cookbook_cargo --bin hwbpd' "$h" || fail "hwbpd: script must cargo-install hwbpd"
    grep -q '20_hwbpd.service' "$h" || fail "hwbpd: script must stage 20_hwbpd.service"
    grep -qx 'cargopath = "libhwbp/tools"' recipes/hwbp-tools/recipe.toml || fail "hwbp-tools: cargopath"
    echo "check-recipes: ok (grep checks: patch series, rev, service, recipes)"
    exit 0
fi

python3 - <<'PY'
import glob, os, sys, tomllib

def load(path):
    with open(path, "rb") as f:
        return tomllib.load(f)

errors = []
def check(cond, msg):
    if not cond:
        errors.append(msg)

recipes = {}
for path in sorted(glob.glob("recipes/*/recipe.toml")):
    r = load(path)
    recipes[os.path.basename(os.path.dirname(path))] = r
    build = r.get("build", {})
    check(build.get("template") in ("cargo", "custom"), f"{path}: template must be cargo or custom")
    if build.get("template") == "custom":
        check(bool(build.get("script", "").strip()), f"{path}: custom template without script")
    for key in r:
        check(key in ("source", "build", "package", "optional-packages"), f"{path}: unknown section [{key}]")

check(set(recipes) == {"hwbpd", "hwbp-tools", "kernel-hwbp"}, f"unexpected recipe set {sorted(recipes)}")

# hwbpd: local source, builds the hwbpd binary, stages the service.
h = recipes["hwbpd"]
check("source" not in h, "hwbpd: must be a local-source recipe (no [source])")
script = h["build"]["script"]
check("COOKBOOK_CARGO_PATH=scheme-hwbp/redox\n" in script and "cookbook_cargo --bin hwbpd" in script,
      "hwbpd: script must cargo-install the hwbpd binary of scheme-hwbp/redox (hwbpd-redox)")
check('"${COOKBOOK_STAGE}/usr/lib/init.d/"' in script and "20_hwbpd.service" in script,
      "hwbpd: script must stage 20_hwbpd.service into /usr/lib/init.d")
check(os.path.isfile("../scheme-hwbp/redox/Cargo.toml"), "hwbpd: ../scheme-hwbp/redox/Cargo.toml missing")

svc = load("recipes/hwbpd/20_hwbpd.service")
check(set(svc) == {"unit", "service"}, "service: sections must be [unit] and [service]")
check(svc["service"].get("cmd") == "hwbpd", "service: cmd must be hwbpd")
check(svc["service"].get("type") == {"scheme": "hwbp"}, "service: type must be { scheme = \"hwbp\" }")
check(set(svc["service"]) <= {"cmd", "args", "envs", "inherit_envs", "type"},
      "service: unknown [service] key (init denies unknown fields)")

# hwbp-tools: same source, cargo template on libhwbp/tools.
t = recipes["hwbp-tools"]
check(t.get("source") == {"same_as": "../hwbpd"}, "hwbp-tools: source must be same_as ../hwbpd")
check(t["build"].get("cargopath") == "libhwbp/tools", "hwbp-tools: cargopath must be libhwbp/tools")
if not os.path.isfile("../libhwbp/tools/Cargo.toml"):
    print("check-recipes: note: ../libhwbp/tools/Cargo.toml does not exist yet")

# kernel-hwbp: pinned upstream kernel + exactly our series, in order.
k = recipes["kernel-hwbp"]["source"]
series = sorted(os.path.basename(p) for p in glob.glob("../kernel-patch/patches/*.patch"))
check(k.get("patches") == [f"patches/{p}" for p in series],
      f"kernel-hwbp: patches {k.get('patches')} != kernel-patch/patches {series}: "
      "list every kernel-patch/patches/*.patch, in order, in cookbook/recipes/kernel-hwbp/recipe.toml")
for p in k.get("patches", []):
    check(os.path.isfile(os.path.join("recipes/kernel-hwbp", p)), f"kernel-hwbp: {p} not reachable from the recipe dir")
if os.path.isfile("../kernel-patch/PINNED"):
    pinned = open("../kernel-patch/PINNED").read().split()
    check(bool(pinned) and k.get("rev") == pinned[0], f"kernel-hwbp: rev {k.get('rev')} != kernel-patch/PINNED {pinned[:1]}")
else:
    print("check-recipes: note: ../kernel-patch/PINNED does not exist yet")
check(len(k.get("rev", "")) == 40, "kernel-hwbp: rev must be a full commit id")
check(k.get("git", "").endswith("redox-os/kernel.git"), "kernel-hwbp: git must be the upstream kernel")

# The config fragment swaps the kernel and adds the three packages.
c = load("config/hwbp.toml")
check(c.get("packages") == {"kernel": "ignore", "kernel-hwbp": {}, "hwbpd": {}, "hwbp-tools": {}},
      f"config/hwbp.toml: packages {c.get('packages')}")

if errors:
    for e in errors:
        print(f"check-recipes: {e}", file=sys.stderr)
    sys.exit(1)
print(f"check-recipes: ok ({len(recipes)} recipes, service, config, {len(series)} kernel patches)")
PY
