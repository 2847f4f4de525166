#include "projections/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>
#include <new>

namespace keyledger {

namespace {

std::size_t rounded(std::size_t bytes) {
  return (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
}

}  // namespace

void* allocate_huge_pages(std::size_t bytes, bool advise) {
  const std::size_t size = rounded(bytes);
  // Map one huge page more than needed, then unmap the unaligned head and the tail.
  const std::size_t span = size + kHugePageBytes;
  void* raw = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) {
    throw std::bad_alloc();
  }
  const auto start = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t aligned = (start + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  if (aligned > start) {
    ::munmap(raw, aligned - start);
  }
  const std::uintptr_t end = start + span;
  if (end > aligned + size) {
    ::munmap(reinterpret_cast<void*>(aligned + size), end - (aligned + size));
  }
  void* p = reinterpret_cast<void*>(aligned);
  if (advise) {
    ::madvise(p, size, MADV_HUGEPAGE);  // advice only: a failure changes nothing
  }
  return p;
}

void free_huge_pages(void* p, std::size_t bytes) noexcept {
  if (p != nullptr) {
    ::munmap(p, rounded(bytes));
  }
}

}  // namespace keyledger
