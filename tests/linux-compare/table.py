#!/usr/bin/env python3
"""Read the guests' "figure" lines and print the comparison table.

    table.py LINUX_LOG [HWBP_FIGURES]

Both inputs use one line format (anything else in the file is ignored, so a
whole serial log will do: the Linux half's target/serial.log, and the hwbp
half's, from tests/redox-system/run.sh --bench):

    figure <key> <guest instructions> [anything...]

Keys: open_close, counted_hit, sampled_hit, enable_disable_64,
enable_disable_1000. Without HWBP_FIGURES (or for a key it lacks) the hwbp
column reads "not measured here". The last column is hwbp / Linux: above 1
means hwbp runs more guest instructions for the operation.

Each log's failed checks ("check <name> FAIL ...") are listed on stderr, and
make the exit status 1, as does a missing Linux figure. Exit 0 otherwise.
"""
import re
import sys

ROWS = [
    ("open_close", "open + close of a write watchpoint, len 8 (Linux: perf_event_open)"),
    ("counted_hit", "one counted watchpoint hit"),
    ("sampled_hit", "one watchpoint hit delivered as a record"),
    ("enable_disable_64", "disable + enable, 64 threads"),
    ("enable_disable_1000", "disable + enable, 1,000 threads"),
]
LINE = re.compile(r"^figure (\S+) (\d+)\b")
FAILED = re.compile(r"^check (\S+) FAIL\b")


def read_log(path):
    """(figures: key -> value, the last line per key; failed check names)."""
    found = {}
    failed = []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            m = LINE.match(line)
            if m:
                found[m.group(1)] = int(m.group(2))
            m = FAILED.match(line)
            if m:
                failed.append(m.group(1))
    return found, failed


def ratio(linux, hwbp):
    """hwbp / Linux, as "12.34x"; "-" if either is missing or zero."""
    if not linux or not hwbp:
        return "-"
    return "%.2fx" % (hwbp / linux)


def table(linux, hwbp):
    lines = [
        "| operation | Linux (guest instructions) | hwbp (guest instructions) | hwbp / Linux |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, label in ROWS:
        lx = linux.get(key)
        hb = hwbp.get(key)
        lines.append("| %s | %s | %s | %s |" % (
            label,
            "{:,}".format(lx) if lx is not None else "MISSING",
            "{:,}".format(hb) if hb is not None else "not measured here",
            ratio(lx, hb)))
    return lines


def main(argv):
    if len(argv) not in (2, 3):
        print("usage: table.py LINUX_LOG [HWBP_FIGURES]", file=sys.stderr)
        return 2
    linux, linux_failed = read_log(argv[1])
    hwbp, hwbp_failed = read_log(argv[2]) if len(argv) == 3 else ({}, [])
    for line in table(linux, hwbp):
        print(line)
    status = 0
    missing = [key for key, _ in ROWS if key not in linux]
    if missing:
        print("linux-compare: missing Linux figures: " + " ".join(missing), file=sys.stderr)
        status = 1
    for side, failed in (("Linux", linux_failed), ("hwbp", hwbp_failed)):
        if failed:
            print("linux-compare: failed %s checks: %s" % (side, " ".join(failed)), file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
