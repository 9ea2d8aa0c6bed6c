#!/usr/bin/python3
"""A tiny QMP client for dom0 (python3-minimal: no json module).

    qmp.py SOCKET resize IMAGE NEWSIZE   block_resize the node whose file
                                         is IMAGE (the format node) to
                                         NEWSIZE bytes
    qmp.py SOCKET nodes                  list the named block nodes

QMP replies are JSON; JSON objects are Python literals once true, false
and null are names, so they are read with eval() in an empty namespace.
That is acceptable here: the peer is the device model of our own test
domain, on a socket only root in dom0 can open.
"""
import socket
import sys

TIMEOUT = 20


def encode(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        return "{" + ", ".join(encode(k) + ": " + encode(x)
                               for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(encode(x) for x in v) + "]"
    raise TypeError(type(v))


def decode(line):
    return eval(line, {"__builtins__": {}},
                {"true": True, "false": False, "null": None})


class QMP:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")
        greeting = self.read()
        if "QMP" not in greeting:
            raise RuntimeError("no QMP greeting: %r" % greeting)
        self.execute("qmp_capabilities")

    def read(self):
        line = self.file.readline()
        if not line:
            raise RuntimeError("QMP connection closed")
        return decode(line.decode())

    def execute(self, cmd, **args):
        msg = {"execute": cmd}
        if args:
            msg["arguments"] = args
        self.sock.sendall((encode(msg) + "\n").encode())
        while True:
            r = self.read()
            if "event" in r:
                continue
            if "error" in r:
                raise RuntimeError("%s: %s" % (cmd, r["error"].get("desc")))
            return r.get("return")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    q = QMP(sys.argv[1])
    nodes = q.execute("query-named-block-nodes")
    if sys.argv[2] == "nodes":
        for n in nodes:
            print(n.get("node-name"), n.get("drv"), n.get("file"))
        return
    if sys.argv[2] == "resize" and len(sys.argv) == 5:
        image, size = sys.argv[3], int(sys.argv[4])
        # the format node over the image (raw), not its protocol node (file)
        mine = [n for n in nodes if n.get("file") == image]
        top = [n for n in mine if n.get("drv") not in ("file", "host_device")]
        node = (top or mine or [None])[0]
        if node is None:
            sys.exit("no block node for %s among %s" %
                     (image, [(n.get("node-name"), n.get("file")) for n in nodes]))
        q.execute("block_resize", **{"node-name": node["node-name"],
                                     "size": size})
        print("node %s (%s) resized to %d" %
              (node["node-name"], node.get("drv"), size))
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    try:
        main()
    except (OSError, RuntimeError) as e:
        sys.exit("qmp: %s" % e)
