#!/usr/bin/env python3
"""The libvirt series' QEMU capabilities test data is what the patched QEMU
says today.

libvirt-patches/ carries caps_10.2.2_x86_64+mergebarriers.replies, captured
once from out/qemu-system-x86_64 with libvirt's qemucapsprobe.  If the QEMU
series changes the property (name, type, description) or the machine types
it is on, the libvirt test data goes stale silently.  This probes the
current binary the same way and compares what libvirt's capability is
derived from: the 'merge-barriers' and 'merge-layout' entries of
qom-list-properties on generic-pc-machine, and the QEMU version.  Host-specific parts (CPU
models, KVM) are not compared.  Speaks TAP.
"""

import json
import os
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(TOP, "scripts"))
from mblib.report import Tap  # noqa: E402

PROBE = os.path.join(TOP, "out/libvirt-src/build/tests/qemucapsprobe")
QEMU = os.path.join(TOP, "out/qemu-system-x86_64")
DATA = os.path.join(TOP, "out/libvirt-src/tests/qemucapabilitiesdata/"
                    "caps_10.2.2_x86_64+mergebarriers.replies")


def messages(text):
    """The JSON messages of a .replies file (objects separated by blank lines)."""
    dec = json.JSONDecoder()
    i, out = 0, []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        obj, i = dec.raw_decode(text, i)
        out.append(obj)


def reply_to(msgs, command, **arguments):
    """The reply to the first command with these arguments."""
    for k, m in enumerate(msgs):
        if m.get("execute") == command and \
           all(m.get("arguments", {}).get(a) == v for a, v in arguments.items()):
            ident = m.get("id")
            for r in msgs[k + 1:]:
                if r.get("id") == ident and "return" in r:
                    return r["return"]
    return None


PROPERTIES = ("merge-barriers", "merge-layout")


def summary(msgs):
    """{property: its qom-list-properties entry or None}, QEMU version"""
    props = reply_to(msgs, "qom-list-properties", typename="generic-pc-machine")
    version = reply_to(msgs, "query-version")
    found = {p.get("name"): p for p in props or []}
    return ({name: found.get(name) for name in PROPERTIES},
            version["qemu"] if version else None)


def main():
    tap = Tap()
    check = tap.check
    for path in (PROBE, QEMU):
        if not os.access(path, os.X_OK):
            print(f"Bail out! no {path}: run make build-libvirt / make")
            return 1
    probe = subprocess.run([PROBE, QEMU], capture_output=True, text=True,
                           timeout=300)
    if probe.returncode != 0:
        print(f"Bail out! qemucapsprobe failed: {probe.stderr.strip()[-300:]}")
        return 1
    now = summary(messages(probe.stdout))
    data = summary(messages(open(DATA).read()))
    for name in PROPERTIES:
        print(f"# probed now:  {now[0][name]}")
        print(f"# test data:   {data[0][name]}")
        check(now[0][name] is not None,
              f"the patched QEMU lists {name} among generic-pc-machine's properties")
        check(now[0][name] == data[0][name],
              f"the test data's {name} property (name, type, description) is the QEMU's")
    check(now[1] == data[1], f"the test data's QEMU version is the QEMU's ({now[1]})")
    print(f"1..{tap.n}")
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
