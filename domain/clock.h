#pragma once
// Time and randomness are injected so tests can fix the time and make key bytes repeatable.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <span>

namespace keyledger {

using TimePoint = std::chrono::system_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::system_clock::now(); }
};

// A clock that moves only when told to; for tests.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(TimePoint start) : now_ns_(start.time_since_epoch().count()) {}
  TimePoint now() const override { return TimePoint(TimePoint::duration(now_ns_.load())); }
  void advance(std::chrono::nanoseconds d) {
    now_ns_ += std::chrono::duration_cast<TimePoint::duration>(d).count();
  }
  void set(TimePoint t) { now_ns_ = t.time_since_epoch().count(); }

 private:
  std::atomic<TimePoint::duration::rep> now_ns_;
};

// Source of random bytes for keys, ids and nonces.
class RandomSource {
 public:
  virtual ~RandomSource() = default;
  virtual void fill(std::span<std::uint8_t> out) = 0;
};

// libsodium's CSPRNG (randombytes_buf). Requires sodium_init() (see crypto_init()).
class SystemRandom final : public RandomSource {
 public:
  void fill(std::span<std::uint8_t> out) override;
};

// Deterministic bytes from a seed (ChaCha20 keystream via randombytes_buf_deterministic);
// for tests only: never use it to make real keys.
class SeededRandom final : public RandomSource {
 public:
  explicit SeededRandom(std::uint64_t seed);
  void fill(std::span<std::uint8_t> out) override;

 private:
  std::uint64_t seed_;
  std::atomic<std::uint64_t> counter_{0};  // every fill its own stream, from any thread
};

}  // namespace keyledger
