#!/usr/bin/env python3
"""Write an uncompressed "newc" cpio archive for Linux's initramfs.

    mkcpio.py OUT INIT

The archive holds /dev (directory), /dev/console (character device 5:1, so
the kernel can open init's console without devtmpfs), /proc, /sys and /init
(the file INIT, mode 0755). No cpio(1), no root needed for the device node:
the node exists only inside the archive. Deterministic (mtime 0, fixed
inode numbers), so the same INIT gives the same bytes.
"""
import stat
import sys


def entry(ino, name, mode, data=b"", rdev=(0, 0), nlink=1):
    name_b = name.encode() + b"\0"
    fields = [
        ino, mode, 0, 0, nlink, 0, len(data),  # ino mode uid gid nlink mtime filesize
        0, 0, rdev[0], rdev[1],                # devmajor devminor rdevmajor rdevminor
        len(name_b), 0,                        # namesize check
    ]
    hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
    out = hdr + name_b
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: mkcpio.py OUT INIT")
    out_path, init_path = sys.argv[1:]
    with open(init_path, "rb") as f:
        init = f.read()
    parts = [
        entry(1, "dev", stat.S_IFDIR | 0o755, nlink=2),
        entry(2, "dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        entry(3, "proc", stat.S_IFDIR | 0o755, nlink=2),
        entry(4, "sys", stat.S_IFDIR | 0o755, nlink=2),
        entry(5, "init", stat.S_IFREG | 0o755, init),
        entry(0, "TRAILER!!!", 0),
    ]
    blob = b"".join(parts)
    blob += b"\0" * (-len(blob) % 512)
    with open(out_path, "wb") as f:
        f.write(blob)


if __name__ == "__main__":
    main()
