#pragma once
// Memory for big, randomly accessed arrays (the key table's slots): mapped straight from the
// kernel in 2 MiB-aligned blocks advised as transparent huge pages (madvise MADV_HUGEPAGE),
// so a lookup in a table of a million keys does not also miss the TLB, and given back to the
// kernel when freed. Where huge pages are off, the advice is ignored and plain pages serve.

#include <cstddef>

namespace keyledger {

inline constexpr std::size_t kHugePageBytes = std::size_t{2} << 20;

// `bytes` rounded up to whole huge pages, zero-filled, 2 MiB-aligned. Throws std::bad_alloc.
// Without `advise`, the block is left to plain pages, resident only where touched.
void* allocate_huge_pages(std::size_t bytes, bool advise = true);
// Frees what allocate_huge_pages(bytes) returned.
void free_huge_pages(void* p, std::size_t bytes) noexcept;

}  // namespace keyledger

namespace keyledger {

// A std::allocator stand-in for vectors that may grow big: blocks of a megabyte or more come
// from allocate_huge_pages, smaller ones from operator new.
template <typename T>
class HugePageAllocator {
 public:
  using value_type = T;
  static constexpr std::size_t kThresholdBytes = std::size_t{1} << 20;

  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    return static_cast<T*>(bytes >= kThresholdBytes ? allocate_huge_pages(bytes) : ::operator new(bytes));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    const std::size_t bytes = n * sizeof(T);
    if (bytes >= kThresholdBytes) {
      free_huge_pages(p, bytes);
    } else {
      ::operator delete(p);
    }
  }
  template <typename U>
  bool operator==(const HugePageAllocator<U>&) const noexcept {
    return true;
  }
};

}  // namespace keyledger
