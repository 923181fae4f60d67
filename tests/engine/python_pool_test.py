#!/usr/bin/env python3
"""A real multiprocessing.Pool through dump --leave-running and restore (issue 11).

  python_pool_test.py --engine ckpt-engine [--workdir DIR] [--python python3]

The workload (a Pool of 4 workers mapping a function over a list, round after round, each
round's sum checked) shares its task and result pipes between all workers, guarded by POSIX
semaphores mapped from deleted /dev/shm/sem.* files. It is dumped with --leave-running in the
middle of a round; the original must finish with the exact results; once every pid of the tree
is gone the images are restored (the engine waits for the root) and the copy must finish the
same rounds with the exact results too. Prints "SKIP" and exits 0 when there is no python3.
"""
import argparse
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

WORKLOAD = r'''
import multiprocessing as mp, sys
def f(x):
    return (x * x + 7) % 1000003, "w" * (x % 50)
if __name__ == "__main__":
    mp.set_start_method("fork")
    rounds = int(sys.argv[1])
    items = list(range(6000))
    want = sum(a + len(b) for a, b in map(f, items))
    with mp.Pool(4) as pool:
        for i in range(rounds):
            got = sum(a + len(b) for a, b in pool.map(f, items, chunksize=3))
            print("round", i, "ok" if got == want else "WRONG %d != %d" % (got, want), flush=True)
    print("DONE", flush=True)
'''
ROUNDS = 40


def fail(msg, out=None):
    print("FAIL: python-pool: " + msg)
    if out:
        print(out[-4000:])
    sys.exit(1)


def check_output(who, out):
    """Every round's result exact and the last line DONE; returns the number of rounds."""
    lines = out.splitlines()
    rounds = [l for l in lines if l.startswith("round ")]
    bad = [l for l in rounds if not l.endswith(" ok")]
    if bad:
        fail("%s: wrong results: %s" % (who, bad[0]), out)
    if not lines or lines[-1] != "DONE":
        fail("%s: did not finish (last line %r)" % (who, lines[-1] if lines else ""), out)
    return len(rounds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", required=True)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--python", default=shutil.which("python3"))
    args = ap.parse_args()
    if not args.python or not os.access(args.python, os.X_OK):
        print("SKIP: python-pool: no python3")
        return 0
    engine = os.path.abspath(args.engine)
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="python-pool-", dir=args.workdir)
    script = os.path.join(work, "pool.py")
    with open(script, "w") as f:
        f.write(WORKLOAD)
    images = os.path.join(work, "images")
    os.mkdir(images)
    # Orphans of the tree (and the restored tree) become ours, so that we can reap them.
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER

    tree = []

    def kill_tree():
        for p in tree:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass

    try:
        orig = subprocess.Popen([args.python, script, str(ROUNDS)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, close_fds=True, cwd=work)
        # Dump in the middle of the work: after a few rounds.
        seen = []
        while True:
            line = orig.stdout.readline()
            if not line:
                fail("the workload ended before the dump", "".join(seen))
            seen.append(line)
            if line.startswith("round 2 "):
                break
        time.sleep(0.05)
        d = subprocess.run([engine, "dump", "-t", str(orig.pid), "-D", images, "--leave-running"],
                           capture_output=True, text=True, timeout=120)
        if d.returncode != 0:
            orig.kill()
            fail("dump failed: " + d.stderr.strip())
        tree = [int(m.group(1)) for n in os.listdir(images) if (m := re.fullmatch(r"core-(\d+)\.img", n))]
        if len(tree) < 5:
            fail("dumped %d processes, want the pool's 5" % len(tree))
        rest, _ = orig.communicate(timeout=240)
        out = "".join(seen) + rest
        if orig.returncode != 0:
            fail("the original exited %d" % orig.returncode, out)
        if check_output("the original", out) != ROUNDS:
            fail("the original printed the wrong number of rounds", out)
        # Every pid of the tree gone (workers are reaped by their parent, or by us).
        deadline = time.time() + 30
        while any(os.path.exists("/proc/%d" % p) for p in tree) and time.time() < deadline:
            try:
                os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.05)
        r = subprocess.run([engine, "restore", "-D", images], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            fail("the restored copy (or the restore) exited %d: %s" % (r.returncode, r.stderr.strip()), r.stdout)
        n = check_output("the restored copy", r.stdout)
        # The copy goes on from the round the dump caught (a few after round 2, as the
        # original ran on while we read its output): every later round, in order, once.
        numbers = [int(l.split()[1]) for l in r.stdout.splitlines() if l.startswith("round ")]
        if not numbers or numbers != list(range(numbers[0], ROUNDS)) or numbers[0] > ROUNDS // 2:
            fail("the restored copy printed rounds %s, want the rest of %d" % (numbers[:3], ROUNDS), r.stdout)
    except subprocess.TimeoutExpired as e:
        kill_tree()
        out = e.output.decode(errors="replace") if isinstance(e.output, bytes) else (e.output or "")
        fail("timed out (the pool hangs?): %s" % (e.cmd,), out)
    finally:
        kill_tree()
    shutil.rmtree(work, ignore_errors=True)
    print("PASS: python-pool (%d rounds after restore, exact)" % n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
