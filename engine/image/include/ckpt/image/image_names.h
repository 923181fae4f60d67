// The names of the files of one image folder, in one place: the dump writes them, the
// restore and `ckpt-engine show` read them, nothing else spells them.
//
//   inventory.img       the tree: its processes, format version, architecture (written last)
//   files.img           files, pipes and saved copies referred to by every process
//   ipc.img             System V IPC objects of the tree's own IPC namespace (when it has one)
//   core-PID.img        a process's threads, registers, signals, credentials, timers
//   mm-PID.img          its mappings and mm fields
//   fds-PID.img         its fd table
//   pagemap-PID.img     where its pages are in pages-PID.img (raw page data)
//   file-ID.data        a saved file's content
//
// PID is the process's pid as the tree sees it (the engine's own for pages-PID.img, whose
// name the page map records).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

#include "ckpt/image/image_file.h"

namespace ckpt::image::names {

inline constexpr const char* kInventory = "inventory.img";
inline constexpr const char* kFiles = "files.img";
inline constexpr const char* kIpc = "ipc.img";

std::string core(pid_t pid);
std::string mm(pid_t pid);
std::string fds(pid_t pid);
std::string pagemap(pid_t pid);
std::string pages(pid_t pid);
std::string saved_file(uint32_t id);

// The image kind of a file of an image folder by its name (nullopt: raw data or not ours).
std::optional<Kind> kind_of(std::string_view name);

}  // namespace ckpt::image::names
