#!/usr/bin/env python3
"""Idempotent patches to the upstream QEMU files we share with other devices.

Each patch adds lines next to an anchor line; it never carries upstream's
content.  If an anchor is missing (a QEMU version we do not know), the patch
fails loudly instead of building something half-registered.

  - meson.build: the Debian '+ds' tarball has no edk2 firmware, but QEMU
    unpacks it for i386 whenever bzip2 is found: only do so when it exists.
  - meson.build: register hw/block/dataplane's trace-events.
  - hw/block/trace-events: append our device model's trace events, kept in
    hw/block/trace-events.xen-block.
"""
import os
import sys

MARK = 'qemu-xen-block'


def fail(msg):
    sys.exit('patch-qemu: ' + msg)


def insert_after(path, anchor, lines, tag):
    """Insert LINES after the first line equal to ANCHOR (stripped)."""
    with open(path) as f:
        text = f.read().split('\n')
    if any(tag in l for l in text):
        return
    for i, l in enumerate(text):
        if l.strip() == anchor:
            text[i + 1:i + 1] = lines
            break
    else:
        fail(f'{path}: anchor {anchor!r} not found')
    with open(path, 'w') as f:
        f.write('\n'.join(text))


def replace_block(path, body):
    """Append BODY between marker comments, replacing an earlier copy."""
    begin, end = f'# begin {MARK}', f'# end {MARK}'
    with open(path) as f:
        text = f.read()
    if begin in text:
        text = text[:text.index(begin)] + text[text.index(end) + len(end):]
        text = text.rstrip('\n') + '\n'
    text += f'\n{begin}\n{body.rstrip()}\n{end}\n'
    with open(path, 'w') as f:
        f.write(text)


def main():
    src = sys.argv[1]
    os.chdir(src)

    insert_after('meson.build', 'endforeach' if False else
                 "unpack_edk2_blobs = false",
                 [f"# {MARK}: the +ds tarball has no edk2 blobs",
                  "if not fs.exists('pc-bios/edk2-i386-code.fd.bz2')",
                  "  edk2_targets = []",
                  "endif"],
                 f'{MARK}: the +ds tarball')

    insert_after('meson.build', "'hw/block',",
                 [f"  'hw/block/dataplane', # {MARK}"],
                 f"'hw/block/dataplane', # {MARK}")

    with open('hw/block/trace-events.xen-block') as f:
        replace_block('hw/block/trace-events', f.read())


main()
