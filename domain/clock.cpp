#include "domain/clock.h"

#include <sodium.h>

#include <array>

namespace keyledger {

void SystemRandom::fill(std::span<std::uint8_t> out) { randombytes_buf(out.data(), out.size()); }

SeededRandom::SeededRandom(std::uint64_t seed) : seed_(seed) {}

void SeededRandom::fill(std::span<std::uint8_t> out) {
  // Each call draws from its own keystream: seed in bytes 0–7, call counter in bytes 8–15.
  const std::uint64_t call = counter_.fetch_add(1);
  std::array<std::uint8_t, randombytes_SEEDBYTES> stream_seed{};
  for (std::size_t i = 0; i < 8; ++i) {
    stream_seed[i] = static_cast<std::uint8_t>(seed_ >> (8 * i));
    stream_seed[8 + i] = static_cast<std::uint8_t>(call >> (8 * i));
  }
  randombytes_buf_deterministic(out.data(), out.size(), stream_seed.data());
}

}  // namespace keyledger
