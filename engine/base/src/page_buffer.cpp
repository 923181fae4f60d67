#include "ckpt/base/page_buffer.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>

namespace ckpt {

namespace {
constexpr size_t kHugePage = 2u << 20;
}

PageBuffer::PageBuffer(size_t size) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    size = (size + page - 1) / page * page;
    // Room to start at a huge page boundary when the buffer spans one: the kernel makes a
    // huge page only of an aligned 2 MiB inside one mapping.
    const size_t slack = size >= kHugePage ? kHugePage - page : 0;
    void* p = mmap(nullptr, size + slack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return;
    map_ = p;
    map_len_ = size + slack;
    auto at = reinterpret_cast<uintptr_t>(p);
    if (slack) at = (at + kHugePage - 1) & ~(kHugePage - 1);
    data_ = reinterpret_cast<char*>(at);
    size_ = size;
    if (slack) (void)madvise(data_, size, MADV_HUGEPAGE);
}

void PageBuffer::release() {
    if (map_) munmap(map_, map_len_);
    map_ = nullptr;
    map_len_ = 0;
    data_ = nullptr;
    size_ = 0;
}

}  // namespace ckpt
