// image_claim DIR UID GID: rewrites the identity a dump records (the inventory's owner and
// every process's credentials in core-*.img) and reseals the images, as a user who edits
// their own checkpoint to claim another identity would. The engine's --restore-as must
// refuse the result.
#include <dirent.h>

#include <cstdio>
#include <string>
#include <string_view>

#include "ckpt/base/strings.h"
#include "ckpt/image/image_file.h"
#include "core.pb.h"
#include "inventory.pb.h"

namespace {

using ckpt::image::Kind;

ckpt::Result<void> claim(const std::string& dir, uint32_t uid, uint32_t gid) {
    ckpt::image::Inventory inv;
    std::string path = dir + "/inventory.img";
    CKPT_TRY(ckpt::image::read_image(path, Kind::Inventory, &inv));
    inv.set_owner_uid(uid);
    inv.set_owner_gid(gid);
    CKPT_TRY(ckpt::image::write_image(path, Kind::Inventory, inv));
    DIR* d = ::opendir(dir.c_str());
    if (!d) return ckpt::sys_error("opendir {}", dir);
    int cores = 0;
    while (dirent* e = ::readdir(d)) {
        std::string_view name = e->d_name;
        if (!name.starts_with("core-") || !name.ends_with(".img")) continue;
        ckpt::image::TaskCore core;
        std::string p = dir + "/" + std::string(name);
        CKPT_TRY(ckpt::image::read_image(p, Kind::Core, &core));
        auto* c = core.mutable_creds();
        c->set_uid(uid), c->set_euid(uid), c->set_suid(uid), c->set_fsuid(uid);
        c->set_gid(gid), c->set_egid(gid), c->set_sgid(gid), c->set_fsgid(gid);
        CKPT_TRY(ckpt::image::write_image(p, Kind::Core, core));
        ++cores;
    }
    ::closedir(d);
    if (cores == 0) return ckpt::error("{}: no core-*.img", dir);
    return ckpt::ok();
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: image_claim DIR UID GID\n");
        return 2;
    }
    auto uid = ckpt::parse_uint(argv[2]);
    auto gid = ckpt::parse_uint(argv[3]);
    if (!uid || !gid) {
        std::fprintf(stderr, "image_claim: bad UID or GID\n");
        return 2;
    }
    if (auto r = claim(argv[1], static_cast<uint32_t>(*uid), static_cast<uint32_t>(*gid)); !r) {
        std::fprintf(stderr, "image_claim: %s\n", r.error().message().c_str());
        return 1;
    }
    return 0;
}
