#!/usr/bin/python3
"""The hostile cases xenblk-front ran in the xbfront domU, as checks.

    front-results.py DOMU_CONSOLE_LOG

The domU prints one "XBLK-HOSTILE <case> <JSON>" line per case (the JSON
of `xenblk-front run --hostile CASE --json`).  Each becomes a line
"CHECK front-hostile-<case> PASS|FAIL <detail>", and every request whose
answer was not the one the protocol demands becomes a check of its own,
"CHECK front-hostile-<case>/<request> FAIL ...", so that a known deviation
of a backend can be declared by name without hiding any other.
"""
import json
import sys


def check(name, ok, detail):
    print("CHECK front-hostile-%s %s %s" % (name, "PASS" if ok else "FAIL",
                                            detail[:600]))


def wrong_answers(case, h):
    """One failing check per request answered with the wrong status."""
    wrong = [r for r in h.get("requests", []) if not r.get("match", True)]
    for r in wrong:
        check("%s/%s" % (case, r["name"]), False,
              "status %s, the protocol demands %s" %
              (r.get("status"), r.get("expected")))
    return wrong


def judge(case, j):
    h = j.get("hostile", {})
    connected = h.get("backend_connected_after")
    if case == "ring-overflow":
        # The backend stops consuming that ring and goes to Closing.
        check(case, h.get("backend_closing") and h.get("rsp_prod_seen") == 0,
              "req_prod %s written, rsp_prod %s seen, backend state %s" %
              (h.get("req_prod_written"), h.get("rsp_prod_seen"),
               h.get("backend_state_after")))
        return
    if case == "prod-backwards":
        # req_prod moved back behind requests taken: Closing, no spinning.
        check(case, h.get("backend_closing"),
              "req_prod moved back to %s (requests taken before: %s), "
              "backend state %s" % (h.get("req_prod_written"),
                                    h.get("taken_before"),
                                    h.get("backend_state_after")))
        return
    wrong = wrong_answers(case, h)
    extra = {k: h[k] for k in ("rounds", "okay", "error", "none", "flips",
                               "sector_a_intact", "notifications")
             if k in h}
    # Wrong answers have their own checks above; this one is about the
    # case as a whole: it ran, and the backend still serves.  (The
    # double-fetch case counts its ERROR answers in h["error"]; a run that
    # went wrong says why in j["error"].)
    ok = connected and not j.get("error") and (j.get("ok") or wrong)
    if case == "double-fetch":
        ok = ok and h.get("sector_a_intact") and h.get("none") == 0
    check(case, ok, "%d requests, %d answered, %d wrong; backend %s "
          "after%s%s" % (len(h.get("requests", [])), h.get("answered", 0),
                         len(wrong),
                         "connected" if connected else "NOT connected",
                         "; " + json.dumps(extra) if extra else "",
                         "; " + j["error"] if j.get("error") else ""))


def main():
    with open(sys.argv[1], errors="replace") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line.startswith("XBLK-HOSTILE "):
                continue
            _, case, text = (line.split(" ", 2) + [""])[:3]
            try:
                j = json.loads(text)
            except ValueError:
                check(case, False, "no JSON result: %r" % text[:200])
                continue
            judge(case, j)
    return 0


if __name__ == "__main__":
    sys.exit(main())
