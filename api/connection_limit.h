#pragma once
// How many connections the process can hold: each takes a file descriptor.

#include <cstddef>

namespace keyledger::api {

// Descriptors kept for everything but client connections (RocksDB's files, Kafka's sockets,
// logs, webhook clients).
inline constexpr std::size_t kReservedDescriptors = 256;

// Raises the soft RLIMIT_NOFILE toward the hard one if `wanted` connections (plus
// kReservedDescriptors) need it, and returns the connection limit to use: `wanted`, or less
// (saying so in the log) if even the hard limit is not enough. An idle-connection flood must
// meet the limit, not accept() failing with EMFILE while RocksDB cannot open a file.
std::size_t connection_limit_for(std::size_t wanted);

}  // namespace keyledger::api
