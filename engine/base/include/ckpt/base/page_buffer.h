// Large buffers of the engine's own (page data on its way between a process and its
// images): anonymous memory aligned to 2 MiB and advised huge, so that the first fill
// faults once per 2 MiB instead of once per 4 KiB page. A page fault can cost more than
// copying the page: on the development machine (a VM) the first write to a fresh 4 MiB
// buffer takes 11 ms in small pages and 0.4 ms in huge ones, against 0.3 ms to hash it.
// Best effort: where the kernel gives no huge pages it is ordinary memory.
#pragma once

#include <cstddef>
#include <utility>

namespace ckpt {

class PageBuffer {
public:
    PageBuffer() = default;
    // size bytes (rounded up to whole pages); empty (false) when the memory cannot be had.
    explicit PageBuffer(size_t size);
    PageBuffer(PageBuffer&& o) noexcept
        : map_(std::exchange(o.map_, nullptr)), map_len_(std::exchange(o.map_len_, 0)),
          data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
    PageBuffer& operator=(PageBuffer&& o) noexcept {
        if (this != &o) {
            release();
            map_ = std::exchange(o.map_, nullptr);
            map_len_ = std::exchange(o.map_len_, 0);
            data_ = std::exchange(o.data_, nullptr);
            size_ = std::exchange(o.size_, 0);
        }
        return *this;
    }
    PageBuffer(const PageBuffer&) = delete;
    PageBuffer& operator=(const PageBuffer&) = delete;
    ~PageBuffer() { release(); }

    char* data() const { return data_; }
    size_t size() const { return size_; }
    explicit operator bool() const { return data_ != nullptr; }

private:
    void release();
    void* map_ = nullptr;
    size_t map_len_ = 0;
    char* data_ = nullptr;
    size_t size_ = 0;
};

}  // namespace ckpt
