"""Where a test puts what another user (nobody) must run or write: the build folder may be
private (a clone in a 0700 folder), so such a test works in a folder of its own under /tmp
that everyone may traverse, with copies of the programs it runs there."""
import os
import shutil
import tempfile


def public_folder(prefix):
    folder = tempfile.mkdtemp(prefix=prefix)
    os.chmod(folder, 0o755)
    return folder


def public_copy(path, folder):
    """A copy of an executable in folder, runnable by anyone."""
    copy = os.path.join(folder, os.path.basename(path))
    shutil.copy2(path, copy)
    os.chmod(copy, 0o755)
    return copy
