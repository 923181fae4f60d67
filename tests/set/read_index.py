#!/usr/bin/python3
"""Reads a ckpt index.h5 with h5py alone (no ckpt code) and prints it as JSON lines: the
job's attributes first, then one line per set.

What a user's own tool would do; test_h5py.cpp compares the output with what was written.
Usage: read_index.py INDEX.h5
"""
import json
import sys

import h5py


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def main(path):
    with h5py.File(path, "r") as f:
        out = {k: (text(v) if isinstance(v, (str, bytes)) else int(v)) for k, v in f.attrs.items()}
        lines = [out]
        for name, g in sorted(f["sets"].items(), key=lambda kv: int(kv[1].attrs["seq"])):
            s = {k: (text(v) if isinstance(v, (str, bytes)) else int(v)) for k, v in g.attrs.items()}
            s["group"] = name
            members = g["members"][()]
            files = g["files"][()]
            s["members"] = [
                {
                    "member_id": int(m["member_id"]),
                    "node": text(m["node"]),
                    "image_dir": text(m["image_dir"]),
                    "bytes": int(m["bytes"]),
                    "checksum": int(m["checksum"]),
                    "dump_time_ns": int(m["dump_time_ns"]),
                    "state": text(m["state"]),
                    "files": sorted(text(x["name"]) for x in files if x["member_id"] == m["member_id"]),
                }
                for m in members
            ]
            s["file_bytes"] = int(sum(int(x["bytes"]) for x in files))
            lines.append(s)
    for line in lines:
        print(json.dumps(line, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1])
