#!/usr/bin/env python3
"""Read the guest's "figure" lines and print the comparison table.

    table.py LINUX_LOG [HWBP_FIGURES]

Both inputs use one line format (anything else in the file is ignored, so a
whole serial log will do):

    figure <key> <guest instructions> [anything...]

Keys: open_close, counted_hit, sampled_hit, enable_disable_64,
enable_disable_1000. Without HWBP_FIGURES (or for a key it lacks) the hwbp
column reads "not measured here". Exit 0 only if every Linux figure is there.
"""
import re
import sys

ROWS = [
    ("open_close", "perf_event_open + close, breakpoint W len 8"),
    ("counted_hit", "one counted watchpoint hit"),
    ("sampled_hit", "one watchpoint hit as a sample record"),
    ("enable_disable_64", "enable + disable, 64 threads"),
    ("enable_disable_1000", "enable + disable, 1,000 threads"),
]
LINE = re.compile(r"^figure (\S+) (\d+)\b")


def figures(path):
    found = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line.strip())
            if m:
                found[m.group(1)] = int(m.group(2))
    return found


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: table.py LINUX_LOG [HWBP_FIGURES]")
    linux = figures(sys.argv[1])
    hwbp = figures(sys.argv[2]) if len(sys.argv) == 3 else {}
    print("| operation | Linux (guest instructions) | hwbp (guest instructions) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    missing = []
    for key, label in ROWS:
        lx = linux.get(key)
        hb = hwbp.get(key)
        if lx is None:
            missing.append(key)
        ratio = "-"
        if lx and hb:
            ratio = "%.2fx" % (lx / hb)  # Linux / hwbp: >1 means hwbp is cheaper
        print("| %s | %s | %s | %s |" % (
            label,
            "{:,}".format(lx) if lx is not None else "MISSING",
            "{:,}".format(hb) if hb is not None else "not measured here",
            ratio))
    if missing:
        print("linux-compare: missing figures: " + " ".join(missing), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
