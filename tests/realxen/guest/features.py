#!/usr/bin/python3
"""The negotiated-features check of the real-Xen bench.

    features.py XS_BACKEND XS_FRONTEND DOMU_CONSOLE_LOG DOMID

XS_BACKEND and XS_FRONTEND are `xenstore-ls -f` of the backend's and the
frontend's directories, taken while xvda was connected; the domU's console
log carries its "XBLK-FEAT <name> <value>" lines (sysfs values of xvda and
blkfront's own summary from dmesg).

Prints the feature table ("XBLK-FEATTABLE ..." lines) and one line
"CHECK features PASS|FAIL <detail>": FAIL when a feature both sides
advertise was not used, or one is used that the backend never offered.
The frontend is Linux's xen-blkfront with max_ring_page_order=2,
max_indirect_segments=256, in a 2-vCPU domU (so at most 2 queues).
"""
import re
import sys

VDEV = "51712"               # xvda
FRONT_MAX_RING_ORDER = 2
FRONT_MAX_QUEUES = 2         # vCPUs of the domU
FRONT_MAX_INDIRECT = 256
BLKIF_MAX_SEGMENTS = 11      # per request without indirect descriptors


def read_xs(path, prefix):
    """{relative key: value} of the nodes under prefix."""
    nodes = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r'^(\S+) = "(.*)"\s*$', line)
            if m and m.group(1).startswith(prefix + "/"):
                nodes[m.group(1)[len(prefix) + 1:]] = m.group(2)
    return nodes


def read_domu(path):
    feat = {}
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode(errors="replace").rstrip("\r\n")
            m = re.match(r"^XBLK-FEAT (\S+) ?(.*)$", line)
            if m:
                feat[m.group(1)] = m.group(2).strip()
    return feat


def num(v, default=None):
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    xs_be, xs_fe, log, domid = sys.argv[1:]
    be = read_xs(xs_be, "/local/domain/0/backend/qdisk/%s/%s" % (domid, VDEV))
    fe = read_xs(xs_fe, "/local/domain/%s/device/vbd/%s" % (domid, VDEV))
    du = read_domu(log)
    rows, bad = [], []

    def row(name, backend, frontend, domu, expected, ok):
        rows.append((name, backend, frontend, domu, expected,
                     "ok" if ok else "MISMATCH"))
        if not ok:
            bad.append(name)

    if not be or not fe or "size" not in du:
        print("CHECK features FAIL missing data: backend nodes %d, frontend "
              "nodes %d, domU values %d" % (len(be), len(fe), len(du)))
        return

    dmesg = du.get("dmesg", "")

    def blkfront_says(what):
        m = re.search(what + r": (\w+)", dmesg)
        return m.group(1) if m else "?"

    # Multi-queue: the frontend writes per-queue directories queue-N/.
    be_q = num(be.get("multi-queue-max-queues"), 1)
    fe_q = num(fe.get("multi-queue-num-queues"), 1)
    du_q = num(du.get("nr_hw_queues"), 0)
    want_q = min(be_q, FRONT_MAX_QUEUES)
    row("queues", "multi-queue-max-queues=%s" % be.get("multi-queue-max-queues", "-"),
        "multi-queue-num-queues=%s" % fe.get("multi-queue-num-queues", "-"),
        "mq/ dirs=%s" % du.get("nr_hw_queues", "?"), want_q,
        fe_q == want_q and du_q == want_q)

    # Multi-page rings: ring-page-order, and that many ring-refN nodes.
    q0 = "queue-0/" if fe_q > 1 else ""
    be_o = num(be.get("max-ring-page-order"), 0)
    fe_o = num(fe.get(q0 + "ring-page-order", fe.get("ring-page-order")), 0)
    refs = [k for k in fe if re.match(re.escape(q0) + r"ring-ref\d*$", k)]
    want_o = min(be_o, FRONT_MAX_RING_ORDER)
    row("ring pages", "max-ring-page-order=%s" % be.get("max-ring-page-order", "-"),
        "ring-page-order=%s, %d ring-ref" % (fe.get(q0 + "ring-page-order",
                                                    fe.get("ring-page-order", "-")), len(refs)),
        "-", "%d page(s)" % (1 << want_o),
        fe_o == want_o and len(refs) == 1 << want_o)

    # Persistent grants: used only when both sides advertise them.
    be_p = be.get("feature-persistent", "0") == "1"
    fe_p = fe.get("feature-persistent", "0") == "1"
    du_p = blkfront_says("persistent grants")
    row("persistent grants", "feature-persistent=%s" % be.get("feature-persistent", "-"),
        "feature-persistent=%s" % fe.get("feature-persistent", "-"),
        "blkfront: %s" % du_p, "used" if be_p and fe_p else "unused",
        du_p == ("enabled" if be_p and fe_p else "disabled"))

    # Indirect descriptors: blkfront uses them when the backend offers
    # more segments than a plain request carries.
    be_i = num(be.get("feature-max-indirect-segments"), 0)
    du_seg = num(du.get("max_segments"), 0)
    use_i = be_i > BLKIF_MAX_SEGMENTS
    row("indirect", "feature-max-indirect-segments=%s" % be.get("feature-max-indirect-segments", "-"),
        "-", "max_segments=%s, blkfront: %s" % (du.get("max_segments", "?"),
                                               blkfront_says("indirect descriptors")),
        "max_segments %s" % ("> 11" if use_i else "= 11"),
        (du_seg > BLKIF_MAX_SEGMENTS) == use_i and du_seg >= 1)

    # Discard: the queue's discard_max_bytes > 0 iff feature-discard.
    be_d = be.get("feature-discard", "0") == "1"
    du_d = num(du.get("discard_max_bytes"), 0)
    row("discard", "feature-discard=%s granularity=%s" % (be.get("feature-discard", "-"),
                                                           be.get("discard-granularity", "-")),
        "-", "discard_max_bytes=%s granularity=%s" % (du.get("discard_max_bytes", "?"),
                                                      du.get("discard_granularity", "?")),
        "on" if be_d else "off", (du_d > 0) == be_d)

    # Flush: a volatile write cache iff feature-flush-cache (or barrier).
    be_f = "1" in (be.get("feature-flush-cache"), be.get("feature-barrier"))
    du_wc = du.get("write_cache", "?")
    row("flush", "feature-flush-cache=%s" % be.get("feature-flush-cache", "-"),
        "-", "write_cache=%s" % du_wc,
        "write back" if be_f else "write through",
        du_wc == ("write back" if be_f else "write through"))

    # Sizes: sectors counts 512-byte units; the block sizes as advertised.
    row("size", "sectors=%s" % be.get("sectors", "-"), "-",
        "size=%s" % du.get("size", "?"), be.get("sectors", "?"),
        num(be.get("sectors")) is not None and num(be.get("sectors")) == num(du.get("size")))
    ss = num(be.get("sector-size"))
    row("logical block", "sector-size=%s" % be.get("sector-size", "-"), "-",
        "logical_block_size=%s" % du.get("logical_block_size", "?"), ss,
        ss is not None and ss == num(du.get("logical_block_size")))
    pss = num(be.get("physical-sector-size"), ss)
    row("physical block", "physical-sector-size=%s" % be.get("physical-sector-size", "-"),
        "-", "physical_block_size=%s" % du.get("physical_block_size", "?"), pss,
        pss is not None and pss == num(du.get("physical_block_size")))

    # The frontend's own nodes: protocol, event channel(s), ring refs.
    evt = [k for k in fe if k.endswith("event-channel")]
    row("frontend nodes", "-", "protocol=%s, %d event-channel" % (fe.get("protocol", "-"), len(evt)),
        "-", "x86_64-abi, %d" % want_q,
        fe.get("protocol") == "x86_64-abi" and len(evt) == max(fe_q, 1))

    widths = [max(len(str(r[i])) for r in rows + [("feature", "backend offers",
              "frontend wrote", "domU sees", "expected", "")]) for i in range(6)]
    head = ("feature", "backend offers", "frontend wrote", "domU sees",
            "expected", "")
    for r in [head] + rows:
        print("XBLK-FEATTABLE " + " | ".join(str(c).ljust(w) for c, w in
                                             zip(r, widths)).rstrip())
    print("XBLK-FEATTABLE %s" % (dmesg or "blkfront: (no summary line in dmesg)"))
    if bad:
        print("CHECK features FAIL mismatch: %s" % ", ".join(bad))
    else:
        print("CHECK features PASS queues %d, ring pages %d, persistent %s, "
              "indirect %s, discard %s, flush %s" %
              (want_q, 1 << want_o, "on" if be_p and fe_p else "off",
               "on" if use_i else "off", "on" if be_d else "off",
               "on" if be_f else "off"))


if __name__ == "__main__":
    main()
