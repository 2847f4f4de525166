#pragma once
// An allocator for big, randomly accessed arrays (the key table): allocations of 2 MiB or
// more are aligned to 2 MiB and advised to the kernel as transparent huge pages
// (madvise(MADV_HUGEPAGE)), so a lookup in a table of a million keys does not also miss the
// TLB. Smaller ones come from operator new. Where huge pages are off, the advice is ignored.

#include <sys/mman.h>

#include <cstddef>
#include <new>

namespace keyledger {

inline constexpr std::size_t kHugePageBytes = std::size_t{2} << 20;

template <typename T>
class HugePageAllocator {
 public:
  using value_type = T;

  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < kHugePageBytes) {
      return static_cast<T*>(::operator new(bytes));
    }
    const std::size_t rounded = (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
    void* p = ::operator new(rounded, std::align_val_t{kHugePageBytes});
    ::madvise(p, rounded, MADV_HUGEPAGE);  // advice only: failure changes nothing
    return static_cast<T*>(p);
  }

  void deallocate(T* p, std::size_t n) noexcept {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < kHugePageBytes) {
      ::operator delete(p);
    } else {
      ::operator delete(p, std::align_val_t{kHugePageBytes});
    }
  }

  template <typename U>
  bool operator==(const HugePageAllocator<U>&) const noexcept {
    return true;
  }
};

}  // namespace keyledger
