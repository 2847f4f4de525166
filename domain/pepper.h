#pragma once
// Where the pepper comes from (README, Configuration): `--pepper-file`, or `<data-dir>/pepper` generated
// with mode 0600 on first start.

#include <filesystem>
#include <optional>

#include "domain/clock.h"
#include "domain/key_material.h"
#include "domain/status.h"

namespace keyledger {

// File format: 64 lowercase or uppercase hex characters, optionally followed by a newline,
// or exactly 32 raw bytes.
Result<Pepper> read_pepper_file(const std::filesystem::path& file);

// - `pepper_file` given: read it (an unreadable or malformed file is an error).
// - else `<data_dir>/pepper` exists: read it.
// - else if `store_has_data`: error. A data directory that already holds keys has lost its
//   pepper, and a new one would silently invalidate every key, so refuse.
// - else generate 32 bytes from `random` into `<data_dir>/pepper` (0600, written to a
//   temporary file, fsync'd and renamed) and return it.
Result<Pepper> load_or_create_pepper(const std::filesystem::path& data_dir,
                                     const std::optional<std::filesystem::path>& pepper_file,
                                     bool store_has_data, RandomSource& random);

}  // namespace keyledger
