#!/usr/bin/env python3
"""Dump/restore benchmark of ckpt-engine.

Workloads (processes x MiB of touched random memory) are dumped and restored with images on
tmpfs (/dev/shm) and on disk (/var/tmp); cases are interleaved and repeated, medians are
reported, next to this machine's memcpy bandwidth measured in the same run.

    run_bench.py --engine build/engine/ckpt-engine --workload build/tests/bench/bench_workload
                 [--peer-engine OTHER/ckpt-engine]  (the restore table: this engine against it)
"""
import argparse
import ctypes
import json
import mmap
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

PR_SET_CHILD_SUBREAPER = 36


def reap_all():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wait_gone(pids, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        reap_all()
        if not any(os.path.exists(f"/proc/{p}") for p in pids):
            return
        time.sleep(0.01)
    raise RuntimeError(f"pids {pids} still taken")


def tree_pids(root):
    out, queue = [], [root]
    while queue:
        p = queue.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    queue += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            pass
    return out


def kill_tree(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_gone(pids)


def du_bytes(path):
    total = 0
    for name in os.listdir(path):
        st = os.stat(os.path.join(path, name))
        total += st.st_blocks * 512
    return total


NOBODY = 65534


def as_nobody():
    """In the workload's child, before exec: an unprivileged user's process (a Slurm job's)."""
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)


def start_workload(args, ready, mib, procs, mixed=False, nobody=False):
    """The workload set up (READY exists): its Popen and the pids of its tree. nobody: run as
    nobody (READY's folder must let nobody write)."""
    # The workload's stdio is /dev/null: a restored tree given the restorer's pipes would
    # keep them open after the restorer is gone.
    w = subprocess.Popen([args.workload, ready, str(mib), str(procs), *(["mixed"] if mixed else [])],
                         stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         preexec_fn=as_nobody if nobody else None)
    while not os.path.exists(ready):
        if w.poll() is not None:
            raise RuntimeError("workload failed")
        time.sleep(0.01)
    return w, tree_pids(w.pid)


def measured_restore(args, where):
    """restore --detach from where (-D DIR or --stream FILE): its wall time in seconds and the
    engine's peak RSS in MiB (ru_maxrss of the command; the restored tree is not its child)."""
    t = time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as err:
        p = subprocess.Popen([args.engine, "restore", *where, "--detach"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err)
        _, st, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(st)
        restore_s = time.monotonic() - t
        if p.returncode != 0:
            err.seek(0)
            raise RuntimeError("restore failed: " + err.read().strip())
    return restore_s, usage.ru_maxrss / 1024


def timed_restore(args, where):
    """restore --detach from where: its wall time in seconds."""
    return measured_restore(args, where)[0]


def one_run(args, mib, procs, base, mixed=False, extra=(), peer=None):
    """dump (with extra arguments), then restore, of procs x mib MiB (random, or mixed) into base;
    peer: another engine restoring the same images after it (the tree killed in between)."""
    workdir = tempfile.mkdtemp(prefix="ckpt-bench-", dir=base)
    images = os.path.join(workdir, "images")
    ready = os.path.join(workdir, "ready")
    try:
        w, pids = start_workload(args, ready, mib, procs, mixed)
        t = time.monotonic()
        out = subprocess.run([args.engine, "dump", "-t", str(w.pid), "-D", images, "--stats", *extra],
                             capture_output=True, text=True)
        dump_s = time.monotonic() - t
        if out.returncode != 0:
            raise RuntimeError("dump failed: " + out.stderr.strip())
        stats = json.loads(out.stdout)
        w.wait()
        wait_gone(pids)
        image_bytes = du_bytes(images)
        restore_s, restore_mib = measured_restore(args, ["-D", images])
        kill_tree(pids)
        out = {"frozen_s": stats["frozen_ms"] / 1e3, "dump_s": dump_s, "restore_s": restore_s,
               "restore_rss_mib": restore_mib, "image_bytes": image_bytes, "pages_bytes": stats["pages_bytes"],
               "stored_bytes": stats["stored_bytes"]}
        if peer:
            out["peer_restore_s"], out["peer_restore_rss_mib"] = measured_restore(
                argparse.Namespace(engine=peer), ["-D", images])
            kill_tree(pids)
        return out
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def frozen_run(args, mib, snapshot, nobody=False):
    """One dump --leave-running of 1 x mib MiB with images on tmpfs: how long the tree was
    frozen, with the copy-on-write snapshot (--snapshot) or (--no-snapshot) for the whole copy.
    nobody: the workload runs as nobody (root dumps it)."""
    workdir = tempfile.mkdtemp(prefix="ckpt-bench-", dir="/dev/shm")
    ready = os.path.join(workdir, "ready")
    try:
        if nobody:
            os.chown(workdir, NOBODY, NOBODY)
        w, pids = start_workload(args, ready, mib, 1, nobody=nobody)
        argv = [args.engine, "dump", "-t", str(w.pid), "-D", os.path.join(workdir, "images"), "--stats",
                "--leave-running", "--snapshot" if snapshot else "--no-snapshot"]
        t = time.monotonic()
        out = subprocess.run(argv, capture_output=True, text=True)
        dump_s = time.monotonic() - t
        if out.returncode != 0:
            raise RuntimeError("dump failed: " + out.stderr.strip())
        stats = json.loads(out.stdout)
        if stats.get("snapshot", False) != snapshot:
            raise RuntimeError(f"dump --leave-running of {mib} MiB: snapshot {stats.get('snapshot')}, "
                               f"wanted {snapshot}")
        kill_tree(pids)
        return {"frozen_s": stats["frozen_ms"] / 1e3, "dump_s": dump_s}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def stream_run(args, mib, stream, compress):
    """dump then restore of 1 x mib MiB on tmpfs: into an images folder, or (stream) as one
    stream into a file (dump --stream, restore --stream); compress: mixed memory dumped
    --compress. Seconds of each, and the bytes stored."""
    workdir = tempfile.mkdtemp(prefix="ckpt-bench-", dir="/dev/shm")
    ready = os.path.join(workdir, "ready")
    where = ["--stream", os.path.join(workdir, "dump.stream")] if stream else ["-D", os.path.join(workdir, "images")]
    try:
        w, pids = start_workload(args, ready, mib, 1, mixed=compress)
        t = time.monotonic()
        out = subprocess.run([args.engine, "dump", "-t", str(w.pid), *where, *(["--compress"] if compress else [])],
                             capture_output=True, text=True)
        dump_s = time.monotonic() - t
        if out.returncode != 0:
            raise RuntimeError("dump failed: " + out.stderr.strip())
        w.wait()
        wait_gone(pids)
        stored = du_bytes(where[1]) if not stream else os.path.getsize(where[1])
        restore_s = timed_restore(args, where)
        kill_tree(pids)
        wait_gone(pids)
        return {"dump_s": dump_s, "restore_s": restore_s, "bytes": stored}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def pipe_run(args, mib, compress, into_restore):
    """dump --stream of 1 x mib MiB into a pipe: read and dropped (the seconds the dump took), or
    (into_restore) read by restore --stream --new-pidns at once, the tree left running by the
    dump (the seconds until both are done: a migration). compress: mixed memory, --compress."""
    workdir = tempfile.mkdtemp(prefix="ckpt-bench-", dir="/dev/shm")
    ready = os.path.join(workdir, "ready")
    restored = []
    try:
        w, pids = start_workload(args, ready, mib, 1, mixed=compress)
        rfd, wfd = os.pipe()
        t = time.monotonic()
        dump = subprocess.Popen([args.engine, "dump", "-t", str(w.pid), "--stream", str(wfd),
                                 *(["--leave-running", "--no-snapshot"] if into_restore else []),
                                 *(["--compress"] if compress else [])],
                                pass_fds=(wfd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        os.close(wfd)
        if into_restore:
            pidfile = os.path.join(workdir, "restored.pid")
            reader = subprocess.Popen([args.engine, "restore", "--stream", str(rfd), "--new-pidns", "--detach",
                                       "--pidfile", pidfile], pass_fds=(rfd,), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            os.close(rfd)
            _, rerr = reader.communicate()
        else:
            with os.fdopen(rfd, "rb", buffering=0) as f:
                while f.read(1 << 20):
                    pass
        _, derr = dump.communicate()
        elapsed = time.monotonic() - t
        if dump.returncode != 0:
            raise RuntimeError("dump --stream into a pipe failed: " + derr.decode().strip())
        if into_restore:
            if reader.returncode != 0:
                raise RuntimeError("restore --stream from a pipe failed: " + rerr.decode().strip())
            with open(pidfile) as f:
                root = int(f.read())
            with open(f"/proc/{root}/status") as f:
                init = int(next(l for l in f if l.startswith("PPid:")).split()[1])
            restored = [init] + tree_pids(init)
        else:
            w.wait()
        return elapsed
    finally:
        kill_tree(restored)
        kill_tree(pids)
        shutil.rmtree(workdir, ignore_errors=True)


def stream_table(args):
    """dump and restore through one stream against an images folder, both on tmpfs: random
    memory as is, and mixed memory dumped --compress."""
    mib = 64 if args.quick else 1024
    results, piped = {}, {}
    for _ in range(args.repeat):  # interleaved
        for compress in (False, True):
            for stream in (True, False):
                results.setdefault((compress, stream), []).append(stream_run(args, mib, stream, compress))
            for into_restore in (False, True):
                piped.setdefault((compress, into_restore), []).append(pipe_run(args, mib, compress, into_restore))
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("dump_s", "restore_s", "bytes")}
           for k, v in results.items()}
    # The folder's dump then restore, per run, against a dump piped into a restore.
    folder_total = {c: statistics.median(r["dump_s"] + r["restore_s"] for r in results[(c, False)])
                    for c in (False, True)}
    print(f"1 process x {mib} MiB, tmpfs: one stream (--stream FILE) against an images folder (-D)")
    hdr = f"{'':<33} {'stream s':>9} {'folder s':>9} {'ratio':>6} {'stream MiB':>11} {'folder MiB':>11}"
    print(hdr)
    print("-" * len(hdr))
    for compress, memory in ((False, "random memory"), (True, "mixed memory, --compress")):
        for f, name in (("dump_s", "dump"), ("restore_s", "restore")):
            st, fo = med[(compress, True)], med[(compress, False)]
            print(f"{name + ', ' + memory:<33} {st[f]:>9.3f} {fo[f]:>9.3f} {st[f] / fo[f]:>6.2f} "
                  f"{st['bytes'] / 2**20:>11.1f} {fo['bytes'] / 2**20:>11.1f}")
    print()
    print(f"1 process x {mib} MiB: dump --stream into a pipe against dump -D into a tmpfs folder")
    hdr = f"{'':<40} {'pipe s':>9} {'folder s':>9} {'ratio':>6}"
    print(hdr)
    print("-" * len(hdr))
    for compress, memory in ((False, "random memory"), (True, "mixed memory, --compress")):
        p_dump = statistics.median(piped[(compress, False)])
        p_through = statistics.median(piped[(compress, True)])
        fo = med[(compress, False)]
        print(f"{'dump, ' + memory:<40} {p_dump:>9.3f} {fo['dump_s']:>9.3f} "
              f"{p_dump / fo['dump_s']:>6.2f}")
        print(f"{'dump | restore, ' + memory:<40} {p_through:>9.3f} "
              f"{folder_total[compress]:>9.3f} {p_through / folder_total[compress]:>6.2f}")
    print(f"(medians of {args.repeat} interleaved runs; mixed memory: 1/4 zeros, 1/4 structured, 1/2 random; "
          f"goal: ratio at most 1.10;\n the pipe's reader drops the dump, or is restore --stream --new-pidns "
          f"(dump --leave-running --no-snapshot) against the folder's dump, then restore)")


def frozen_table(args):
    """Frozen time of dump --leave-running, snapshot against the frozen full copy."""
    sizes = [64] if args.quick else [256, 1024] + ([4096] if args.big else [])
    results = {}
    for _ in range(args.repeat):  # interleaved: A B A B ...
        for mib in sizes:
            for snapshot in (True, False):
                results.setdefault((mib, snapshot), []).append(frozen_run(args, mib, snapshot))
    print("dump --leave-running, 1 process, images on tmpfs: time frozen")
    hdr = f"{'memory':<10} {'snapshot ms':>12} {'full copy ms':>13} {'ratio':>6} {'goal ms':>8} " \
          f"{'snapshot dump s':>16} {'full dump s':>12}"
    print(hdr)
    print("-" * len(hdr))
    for mib in sizes:
        snap = {k: statistics.median(r[k] for r in results[(mib, True)]) for k in ("frozen_s", "dump_s")}
        full = {k: statistics.median(r[k] for r in results[(mib, False)]) for k in ("frozen_s", "dump_s")}
        goal_ms = 20 + 5 * mib / 1024
        print(f"{f'{mib} MiB':<10} {snap['frozen_s'] * 1e3:>12.1f} {full['frozen_s'] * 1e3:>13.1f} "
              f"{snap['frozen_s'] / full['frozen_s']:>6.3f} {goal_ms:>8.1f} {snap['dump_s']:>16.3f} "
              f"{full['dump_s']:>12.3f}")
    print(f"(medians of {args.repeat} interleaved runs; goal: 20 ms + 5 ms per GiB, ratio at most 0.1 at 1 GiB)")


def counter_reader(path):
    """A function giving the count of writes a --writer workload has kept in path so far."""
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 4096)
    return lambda: struct.unpack_from("<Q", mm, 0)[0]


def slowdown_run(args, mib, hot, snapshot):
    """dump --leave-running of a process that keeps writing 64 bytes into random pages of the
    first hot percent of its mib MiB (bench_workload --writer), images on tmpfs, with the
    copy-on-write snapshot or (not snapshot) frozen for the whole copy: how many of its writes
    it made while the dump ran against its own rate just before, as seconds of its work lost."""
    workdir = tempfile.mkdtemp(prefix="ckpt-bench-", dir="/dev/shm")
    ready, counter = os.path.join(workdir, "ready"), os.path.join(workdir, "counter")
    pids = []
    try:
        w = subprocess.Popen([args.workload, "--writer", ready, str(mib), str(hot), counter],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not os.path.exists(ready):
            if w.poll() is not None:
                raise RuntimeError("workload failed")
            time.sleep(0.01)
        pids = tree_pids(w.pid)
        count = counter_reader(counter)
        time.sleep(0.2)  # past its start
        c0, t0 = count(), time.monotonic()
        time.sleep(0.5)
        c1, t1 = count(), time.monotonic()
        rate = (c1 - c0) / (t1 - t0)
        if rate <= 0:
            raise RuntimeError(f"the writer made no writes in {t1 - t0:.2f} s: its rate cannot be measured")
        argv = [args.engine, "dump", "-t", str(w.pid), "-D", os.path.join(workdir, "images"), "--stats",
                "--leave-running", "--snapshot" if snapshot else "--no-snapshot"]
        c2, t2 = count(), time.monotonic()
        out = subprocess.run(argv, capture_output=True, text=True)
        c3, t3 = count(), time.monotonic()
        if out.returncode != 0:
            raise RuntimeError("dump failed: " + out.stderr.strip())
        stats = json.loads(out.stdout)
        if stats.get("snapshot", False) != snapshot:
            raise RuntimeError(f"dump --leave-running of the writer: snapshot {stats.get('snapshot')}, wanted {snapshot}")
        if w.poll() is not None:
            raise RuntimeError("the writer did not survive its dump")
        time.sleep(0.2)
        c4, t4 = count(), time.monotonic()
        time.sleep(0.5)
        c5, t5 = count(), time.monotonic()
        dump_s = t3 - t2
        lost_s = max(0.0, dump_s - (c3 - c2) / rate)
        return {"dump_s": dump_s, "frozen_s": stats["frozen_ms"] / 1e3, "lost_s": lost_s,
                "faults": stats.get("snapshot_faults", 0), "after": (c5 - c4) / (t5 - t4) / rate}
    finally:
        kill_tree(pids)
        shutil.rmtree(workdir, ignore_errors=True)


def slowdown_table(args):
    """How much of its work a running application loses to one dump --leave-running: the
    snapshot against the frozen full copy."""
    mib = 64 if args.quick else 1024
    hots = (10, 100)
    results = {}
    for _ in range(args.repeat):  # interleaved
        for hot in hots:
            for snapshot in (True, False):
                results.setdefault((hot, snapshot), []).append(slowdown_run(args, mib, hot, snapshot))
    print(f"dump --leave-running of 1 process x {mib} MiB writing 64 bytes into random pages as fast as it can, "
          f"images on tmpfs: its work lost")
    hdr = f"{'written pages':<26} {'dump s':>7} {'frozen ms':>10} {'lost ms':>8} {'lost/dump':>10} {'waits':>7} " \
          f"{'rate after':>11}"
    print(hdr)
    print("-" * len(hdr))
    for hot in hots:
        for snapshot in (True, False):
            med = {k: statistics.median(r[k] for r in results[(hot, snapshot)])
                   for k in ("dump_s", "frozen_s", "lost_s", "faults", "after")}
            name = f"{hot} % of them, " + ("snapshot" if snapshot else "frozen copy")
            print(f"{name:<26} {med['dump_s']:>7.3f} {med['frozen_s'] * 1e3:>10.1f} {med['lost_s'] * 1e3:>8.1f} "
                  f"{med['lost_s'] / med['dump_s']:>10.2f} {med['faults']:>7.0f} {med['after']:>11.2f}")
    print(f"(medians of {args.repeat} interleaved runs; lost: the dump's time less the time the writes it made "
          f"during the dump take at its rate just before;\n waits: its writes that waited for the copy of their "
          f"page (snapshot_faults);\n rate after: its rate of writes from 0.2 to 0.7 s after the dump, against the "
          f"one before)")


def frozen_user_table(args):
    """Frozen time of dump --leave-running --snapshot of a root process against the same of an
    unprivileged user's (nobody's, whose userfaultfd root makes from /dev/userfaultfd), and
    that user's process copied frozen (--no-snapshot)."""
    mib = 64 if args.quick else 1024
    cases = (("root, snapshot", False, True), ("nobody, snapshot", True, True), ("nobody, full copy", True, False))
    results = {}
    # The build folder may be private (a clone in a 0700 folder): nobody runs a public copy
    # of the workload (root runs it too, so that both run the same file).
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "engine"))
    from public_stage import public_copy, public_folder
    public = public_folder("ckpt-bench-")
    private_workload, args.workload = args.workload, public_copy(args.workload, public)
    try:
        frozen_run(args, 64, True, nobody=True)  # warm up
        for _ in range(args.repeat):  # interleaved
            for name, nobody, snapshot in cases:
                results.setdefault(name, []).append(frozen_run(args, mib, snapshot, nobody=nobody))
    finally:
        args.workload = private_workload
        shutil.rmtree(public, ignore_errors=True)
    root_ms = statistics.median(r["frozen_s"] for r in results[cases[0][0]]) * 1e3
    print(f"dump --leave-running, 1 process x {mib} MiB, images on tmpfs: time frozen by the process's user")
    hdr = f"{'case':<18} {'frozen ms':>10} {'/ root':>7} {'dump s':>8}"
    print(hdr)
    print("-" * len(hdr))
    for name, _, _ in cases:
        frozen_ms = statistics.median(r["frozen_s"] for r in results[name]) * 1e3
        dump_s = statistics.median(r["dump_s"] for r in results[name])
        print(f"{name:<18} {frozen_ms:>10.1f} {frozen_ms / root_ms:>7.3f} {dump_s:>8.3f}")
    print(f"(medians of {args.repeat} interleaved runs; goal: nobody's snapshot within 1.2 of root's)")


def compress_run(args, mib, base, level):
    """dump, then restore, of 1 x mib MiB of mixed memory (zeros, structured, random) into
    base: uncompressed (level 0) or dump --compress=level."""
    return one_run(args, mib, 1, base, mixed=True, extra=[f"--compress={level}"] if level else [],
                   peer=args.peer_engine)


def compress_table(args):
    """dump --compress (zstd levels 1 and 3) against the uncompressed dump, same run; the restore's
    wall time and the engine's peak RSS, and (--peer-engine) the peer's restoring the same images."""
    mib = 64 if args.quick else 1024
    levels = [0, 1, 3]
    places = [("tmpfs", "/dev/shm"), ("disk", "/var/tmp")]
    results = {}
    for _ in range(args.repeat):  # interleaved
        for place, base in places:
            for level in levels:
                results.setdefault((place, level), []).append(compress_run(args, mib, base, level))
    print(f"1 process x {mib} MiB of mixed memory (1/4 zeros, 1/4 structured, 1/2 random): dump --compress")
    hdr = f"{'images':<6} {'dump':<12} {'dump s':>7} {'ratio':>6} {'restore s':>9} {'ratio':>6} " \
          f"{'image MiB':>9} {'ratio':>6} {'rss MiB':>7}"
    if args.peer_engine:
        hdr += f" {'peer restore s':>14} {'peer rss MiB':>12}"
    print(hdr)
    print("-" * len(hdr))
    for place, _ in places:
        peer = {k: statistics.median(r[k] for r in results[(place, 0)]) for k in results[(place, 0)][0]}
        for level in levels:
            med = {k: statistics.median(r[k] for r in results[(place, level)]) for k in results[(place, level)][0]}
            name = f"--compress={level}" if level else "uncompressed"
            print(f"{place:<6} {name:<12} {med['dump_s']:>7.3f} {med['dump_s'] / peer['dump_s']:>6.2f} "
                  f"{med['restore_s']:>9.3f} {med['restore_s'] / peer['restore_s']:>6.2f} "
                  f"{med['image_bytes'] / 2**20:>9.1f} {med['image_bytes'] / peer['image_bytes']:>6.3f} "
                  f"{med['restore_rss_mib']:>7.0f}"
                  + (f" {med['peer_restore_s']:>14.3f} {med['peer_restore_rss_mib']:>12.0f}" if args.peer_engine else ""))
    print(f"(medians of {args.repeat} interleaved runs; ratios to the uncompressed dump of the same run; "
          f"rss: the restore engine's peak RSS (ru_maxrss, which counts the pages file an uncompressed "
          f"restore maps); peer: --peer-engine restoring the same images; {os.cpu_count()} cores)")


def incremental_run(args, mib):
    """1 x mib MiB with images on tmpfs: a full dump --leave-running (the peer), one with
    --track-mem (which arms the tracker), 1 % of the pages written, then the incremental dump
    --prev-images-dir of the armed one: seconds and page bytes of each."""
    workdir = tempfile.mkdtemp(prefix="ckpt-bench-", dir="/dev/shm")
    ready = os.path.join(workdir, "ready")
    try:
        w, pids = start_workload(args, ready, mib, 1)

        def dump(name, *extra):
            argv = [args.engine, "dump", "-t", str(w.pid), "-D", os.path.join(workdir, name), "--stats",
                    "--leave-running", *extra]
            t = time.monotonic()
            out = subprocess.run(argv, capture_output=True, text=True)
            took = time.monotonic() - t
            if out.returncode != 0:
                raise RuntimeError(f"dump {' '.join(extra)} failed: " + out.stderr.strip())
            return {"dump_s": took, "pages_bytes": json.loads(out.stdout)["pages_bytes"]}

        full = dump("full")
        shutil.rmtree(os.path.join(workdir, "full"))  # tmpfs: one large dump at a time
        armed = dump("armed", "--track-mem")
        w.send_signal(signal.SIGUSR1)
        while not os.path.exists(ready + ".1"):
            time.sleep(0.005)
        incr = dump("incr", "--track-mem", "--prev-images-dir", os.path.join(workdir, "armed"))
        shutil.rmtree(os.path.join(workdir, "armed"))  # the next dump reads only incr's own images
        # A full dump of the tracked process, its tracker kept (the agent's full set).
        refull = dump("refull", "--track-mem", "--prev-images-dir", os.path.join(workdir, "incr"), "--max-chain", "0")
        kill_tree(pids)
        return {"full_s": full["dump_s"], "full_bytes": full["pages_bytes"], "armed_s": armed["dump_s"],
                "incr_s": incr["dump_s"], "incr_bytes": incr["pages_bytes"], "refull_s": refull["dump_s"]}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def incremental_table(args):
    """Incremental dump after 1 % of the pages were written against a full dump, same run."""
    sizes = [64] if args.quick else [256] + ([1024, 4096] if args.big else [])
    results = {}
    for _ in range(args.repeat):  # interleaved
        for mib in sizes:
            results.setdefault(mib, []).append(incremental_run(args, mib))
    print("dump --leave-running, 1 process, images on tmpfs: incremental after 1 % of pages written")
    hdr = f"{'memory':<10} {'full s':>8} {'armed s':>8} {'refull s':>8} {'incr s':>8} {'time ratio':>10} " \
          f"{'full MiB':>9} {'incr MiB':>9} {'bytes ratio':>11}"
    print(hdr)
    print("-" * len(hdr))
    for mib in sizes:
        med = {k: statistics.median(r[k] for r in results[mib]) for k in results[mib][0]}
        print(f"{f'{mib} MiB':<10} {med['full_s']:>8.3f} {med['armed_s']:>8.3f} {med['refull_s']:>8.3f} {med['incr_s']:>8.3f} "
              f"{med['incr_s'] / min(med['full_s'], med['armed_s']):>10.3f} {med['full_bytes'] / 2**20:>9.1f} "
              f"{med['incr_bytes'] / 2**20:>9.2f} {med['incr_bytes'] / med['full_bytes']:>11.4f}")
    print(f"(medians of {args.repeat} interleaved runs; full: dump --leave-running; armed: the same with "
          f"--track-mem; refull: a full dump of the tracked process, --track-mem --prev-images-dir incr "
          f"--max-chain 0; incr: --track-mem --prev-images-dir armed; time ratio: incr against the faster "
          f"of full and armed (the first dump of a large process can be slowed by the machine, e.g. a VM "
          f"backing fresh memory); goal: ratios at most 0.05)")


def restore_run(args, mib, procs, engines):
    """procs x mib MiB dumped once (images on tmpfs), then restored by each engine in turn (the
    tree killed in between): restore seconds by engine."""
    workdir = tempfile.mkdtemp(prefix="ckpt-bench-", dir="/dev/shm")
    images = os.path.join(workdir, "images")
    ready = os.path.join(workdir, "ready")
    try:
        w, pids = start_workload(args, ready, mib, procs)
        out = subprocess.run([args.engine, "dump", "-t", str(w.pid), "-D", images], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError("dump failed: " + out.stderr.strip())
        w.wait()
        wait_gone(pids)
        took = {}
        for name, engine in engines:
            took[name] = timed_restore(argparse.Namespace(engine=engine), ["-D", images])
            kill_tree(pids)
        return took
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def restore_table(args):
    """Restore speed of trees against one process of the same total memory, this engine
    against a peer engine (--peer-engine, e.g. one built from main) in the same run."""
    cases = [(1, 1024), (16, 16), (16, 64)] if not args.quick else [(1, 64), (16, 4)]
    engines = [("this", args.engine)] + ([("peer", args.peer_engine)] if args.peer_engine else [])
    results = {}
    for r in range(args.repeat):  # interleaved: every case once per round, engines alternating first
        for procs, mib in cases:
            order = engines if r % 2 == 0 else engines[::-1]
            for name, s in restore_run(args, mib, procs, order).items():
                results.setdefault((procs, mib, name), []).append(s)
    print("restore -D, images on tmpfs: restore GiB/s (touched memory / wall time of the command)")
    names = [n for n, _ in engines]
    hdr = f"{'workload':<14}" + "".join(f" {n + ' s':>9} {n + ' GiB/s':>11} {n + ' per GiB':>14}" for n in names)
    if len(names) > 1:
        hdr += f" {'this/peer GiB/s':>15}"
    print(hdr)
    print("-" * len(hdr))
    base = {}  # seconds per GiB of the 1-process case, by engine
    for procs, mib in cases:
        gib = procs * mib / 1024
        line = f"{f'{procs} x {mib} MiB':<14}"
        rate = {}
        for n in names:
            s = statistics.median(results[(procs, mib, n)])
            rate[n] = gib / s
            if procs == 1:
                base[n] = s / gib
            line += f" {s:>9.3f} {rate[n]:>11.2f} {(s / gib) / base[n]:>14.2f}"
        if len(names) > 1:
            line += f" {rate['this'] / rate['peer']:>15.2f}"
        print(line)
    print(f"(medians of {args.repeat} interleaved runs; 'per GiB': restore seconds per GiB against the 1-process "
          f"case of the same engine, goal: at most 1.00 for 16 processes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    ap.add_argument("--big", action="store_true", help="also 4 GiB in the frozen-time table, 1 and 4 GiB in the incremental one")
    ap.add_argument("--frozen-only", action="store_true", help="only the --leave-running frozen-time table")
    ap.add_argument("--frozen-user-only", action="store_true",
                    help="only the frozen time of a root process against an unprivileged user's (--snapshot)")
    ap.add_argument("--stream-only", action="store_true", help="only the stream against folder table")
    ap.add_argument("--incremental-only", action="store_true", help="only the incremental dump table")
    ap.add_argument("--restore-only", action="store_true", help="only the tree restore table")
    ap.add_argument("--peer-engine", help="another ckpt-engine (e.g. built from main) to restore the same images "
                    "in the restore and compress tables")
    ap.add_argument("--compress-only", action="store_true", help="only the dump --compress table")
    ap.add_argument("--slowdown-only", action="store_true",
                    help="only the table of an application's work lost to a dump --leave-running")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run_bench.py: needs root")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    if args.frozen_only:
        frozen_table(args)
        return
    if args.frozen_user_only:
        frozen_user_table(args)
        return
    if args.stream_only:
        stream_table(args)
        return
    if args.incremental_only:
        incremental_table(args)
        return
    if args.restore_only:
        restore_table(args)
        return
    if args.compress_only:
        compress_table(args)
        return
    if args.slowdown_only:
        slowdown_table(args)
        return
    cases = [(1, 256), (1, 1024), (16, 16)] if not args.quick else [(1, 64), (4, 8)]
    places = [("tmpfs", "/dev/shm"), ("disk", "/var/tmp")]
    memcpy = float(subprocess.run([args.workload, "--memcpy", "256"], capture_output=True, text=True).stdout)
    one_run(args, 64, 1, "/dev/shm")  # warm up
    results = {}
    for _ in range(args.repeat):  # interleaved: every case once per round
        for procs, mib in cases:
            for place, base in places:
                results.setdefault((procs, mib, place), []).append(one_run(args, mib, procs, base))

    print(f"memcpy bandwidth (one core, same run): {memcpy:.2f} GiB/s")
    hdr = f"{'workload':<22} {'images':<6} {'frozen s':>9} {'dump s':>8} {'restore s':>9} " \
          f"{'dump GiB/s':>10} {'restore GiB/s':>13} {'image/touched':>13}"
    print(hdr)
    print("-" * len(hdr))
    for (procs, mib, place), runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        touched = procs * mib * 2**20
        print(f"{f'{procs} x {mib} MiB':<22} {place:<6} {med['frozen_s']:>9.3f} {med['dump_s']:>8.3f} "
              f"{med['restore_s']:>9.3f} {touched / med['dump_s'] / 2**30:>10.2f} "
              f"{touched / med['restore_s'] / 2**30:>13.2f} {med['image_bytes'] / touched:>13.4f}")
    print(f"(medians of {args.repeat} interleaved runs; GiB/s = touched memory / wall time of the command)")
    print()
    frozen_table(args)
    print()
    frozen_user_table(args)
    print()
    slowdown_table(args)
    print()
    stream_table(args)
    print()
    incremental_table(args)
    print()
    restore_table(args)
    print()
    compress_table(args)


if __name__ == "__main__":
    main()
