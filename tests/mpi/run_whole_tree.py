#!/usr/bin/env python3
"""An Open MPI job of 4 ranks on this node (mpirun -n 4) dumped by ckpt-engine as one whole
tree, from mpirun down (mpirun, its ranks, their ptys, pipes, sockets, shared memory), killed,
restored under the same pids, and required to finish with the right result: every step printed
once, in order, by the one job (not started again), the sum right, mpirun's exit status 0.

usage: run_whole_tree.py ENGINE PROGRAM {sm,tcp}

sm: the ranks talk through shared memory (btl vader); tcp: through TCP connections over the
loopback (btl tcp), which the dump and restore keep open (--tcp-established). The test is its
own child subreaper, so the restored mpirun (restore --detach) is its child again and its
exit status is seen."""
import ctypes
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

STEPS = 60


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    fail(f"timed out after {timeout} s waiting for {what}")


def reap():
    """Reaps every child that has ended (the ranks of a killed mpirun are this subreaper's)."""
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def tree_of(root):
    """The pids of root and its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return sorted(out)


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("sm", "tcp"):
        print(__doc__)
        return 2
    engine, program, transport = sys.argv[1:]
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        fail("prctl(PR_SET_CHILD_SUBREAPER)")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_mpi_yield_when_idle="1", OMPI_MCA_oob_tcp_if_include="lo")
    if transport == "sm":
        env["OMPI_MCA_btl"] = "self,vader"
    else:
        env.update(OMPI_MCA_btl="self,tcp", OMPI_MCA_btl_tcp_if_include="lo")
    work = tempfile.mkdtemp(prefix="ckpt-whole-tree-")
    images = os.path.join(work, "images")
    os.mkdir(images)
    out_path = os.path.join(work, "out.log")
    engine_args = ["--tcp-established", "--file-locks"]
    job = None
    try:
        with open(out_path, "w") as out:
            # Its own session; no fd of ours but stdio (close_fds).
            job = subprocess.Popen(["mpirun", "-n", "4", "--oversubscribe", program, str(STEPS)], stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work, start_new_session=True)

        def steps_done():
            with open(out_path) as f:
                return [int(m) for m in re.findall(r"^step (\d+)$", f.read(), re.M)]

        wait_for(lambda: len(steps_done()) >= 8, 120, "the job's 8th step")
        before = tree_of(job.pid)
        if len(before) < 5:
            fail(f"mpirun's tree is {before}: not mpirun and 4 ranks")
        d = subprocess.run([engine, "dump", "-t", str(job.pid), "-D", images] + engine_args, capture_output=True,
                           text=True)
        if d.returncode != 0:
            fail(f"dump: exit {d.returncode}: {d.stderr.strip()}")
        at_dump = len(steps_done())
        # The dump killed the tree: mpirun is reaped here, the ranks by this subreaper too.
        job.wait(timeout=30)
        def gone():
            reap()
            return all(not os.path.exists(f"/proc/{p}") for p in before)

        wait_for(gone, 30, "the dumped tree to be gone")
        r = subprocess.run([engine, "restore", "-D", images, "--detach"] + engine_args, capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"restore: exit {r.returncode}: {r.stderr.strip()}")
        after = tree_of(job.pid)
        if after != before:
            fail(f"the restored tree's pids are {after}, the dumped tree's were {before}")
        # mpirun is this subreaper's child again.
        end = time.monotonic() + 180
        status = None
        while time.monotonic() < end:
            pid, st = os.waitpid(job.pid, os.WNOHANG)
            if pid == job.pid:
                status = st
                break
            time.sleep(0.2)
        if status is None:
            fail("the restored job did not finish within 180 s")
        text = open(out_path).read()
        steps = steps_done()
        if steps != list(range(1, STEPS + 1)):
            fail(f"steps printed {steps[:5]}...{steps[-5:]} ({len(steps)}), not 1..{STEPS} once each in order")
        if not re.search(r"^RESULT OK ", text, re.M):
            fail(f"no 'RESULT OK' in the job's output:\n{text[-2000:]}")
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            fail(f"mpirun ended with wait status {status:#x}:\n{text[-2000:]}")
        print(f"PASS: {transport}: dumped at step {at_dump} of {STEPS}, {len(before)} processes restored under the "
              f"same pids, the job finished right", flush=True)
        return 0
    finally:
        if job is not None:
            for p in tree_of(job.pid):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    sys.exit(main())
