// What root does in the site's checkpoint root (dir= in plugstack.conf), and nothing more
// (docs/security.md): it makes a job's folder for the job's user where the user may not
// (a root-owned root, mode 0755), and moves a job folder aside. Always through a folder fd
// of the site root, whose path comes from the admin, never from the job; never following a
// link; no chown of a path; nothing read from inside a user's folder.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "ckpt/base/result.h"

namespace ckpt::slurm::agent {

// True when root makes job folders in site_root: a folder owned by root and writable by
// nobody else. Anywhere else (a root of the user's choosing, a 1777 root) the job's user
// makes the folder itself, with its own rights.
bool root_makes_job_folders(const std::string& site_root);

// <site_root>/<job>, owned by uid:gid with mode 0700, made if missing (see above; a no-op
// where the user makes it). A folder of another user at that name (an earlier job of the
// same id) is first moved aside, intact, to <job>.earlier-uid<UID>-<random>. Returns a
// note for the log when it did that ("" otherwise).
Result<std::string> make_job_folder(const std::string& site_root, uint64_t job, uid_t uid,
                                    gid_t gid);

// Renames <site_root>/<job> to <site_root>/<to>, asked for by the job's user's agent when the
// folder holds an earlier job of the same id (the user may not rename in the site root). `to`
// must be "<job>.earlier-" followed by 1 to 64 letters, digits, '-' or '_'; the folder must
// be uid's; the name must be free.
Result<void> move_job_folder_aside(const std::string& site_root, uint64_t job, uid_t uid,
                                   const std::string& to);

}  // namespace ckpt::slurm::agent
