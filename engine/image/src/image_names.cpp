#include "ckpt/image/image_names.h"

namespace ckpt::image::names {
namespace {

std::string per_process(const char* kind, pid_t pid) { return std::string(kind) + "-" + std::to_string(pid) + ".img"; }

// "core-123.img" is a core image: a prefix, a pid, ".img".
bool is_per_process(std::string_view name, std::string_view kind) {
    if (!name.starts_with(kind) || name.size() <= kind.size() + 1 || name[kind.size()] != '-') return false;
    std::string_view rest = name.substr(kind.size() + 1);
    if (!rest.ends_with(".img")) return false;
    rest.remove_suffix(4);
    if (rest.empty()) return false;
    for (char c : rest)
        if (c < '0' || c > '9') return false;
    return true;
}

}  // namespace

std::string core(pid_t pid) { return per_process("core", pid); }
std::string mm(pid_t pid) { return per_process("mm", pid); }
std::string fds(pid_t pid) { return per_process("fds", pid); }
std::string pagemap(pid_t pid) { return per_process("pagemap", pid); }
std::string pages(pid_t pid) { return per_process("pages", pid); }
std::string saved_file(uint32_t id) { return "file-" + std::to_string(id) + ".data"; }

std::optional<Kind> kind_of(std::string_view name) {
    if (name == kInventory) return Kind::Inventory;
    if (name == kFiles) return Kind::Files;
    if (name == kIpc) return Kind::Ipc;
    if (is_per_process(name, "core")) return Kind::Core;
    if (is_per_process(name, "mm")) return Kind::Mm;
    if (is_per_process(name, "fds")) return Kind::Fds;
    if (is_per_process(name, "pagemap")) return Kind::PageMap;
    return std::nullopt;
}

}  // namespace ckpt::image::names
