// The key table's usage journal records (projections/usage.h, UsageJournalWriter and
// read_usage_journal): what a start reads back from disk, where a torn or corrupted record
// must be refused, never misread.
//
// Checked: a record that reads back is written again, cell for cell, into a record that reads
// back to the same cells (key id, minute, counts, addresses with their counts) and the same
// bytes when written a third time; minutes read back lie in 1 .. 2^31 - 1 Unix minutes; ids
// and addresses are within their bounds; a cut of a record that reads back either reads back
// to a prefix of its cells or is refused.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "projections/usage.h"
#include "support/checks.h"

namespace keyledger::fuzz {
namespace {

struct Cell {
  std::string key_id;
  std::int64_t minute_start = 0;
  std::array<std::uint32_t, ActiveKeyTable::kCountedOutcomes> counts{};
  std::vector<std::pair<std::string, std::uint32_t>> sources;
  bool operator==(const Cell&) const = default;
};

bool read(std::string_view record, std::vector<Cell>& cells) {
  cells.clear();
  return read_usage_journal(record, [&](const ActiveKeyTable::CountedMinute& c) {
    cells.push_back({c.key_id.str(), c.minute_start, c.counts, c.sources()});
  });
}

std::string write(const std::vector<Cell>& cells) {
  std::string record;
  UsageJournalWriter writer(record, cells.empty() ? 1 : cells.front().minute_start / 60);
  for (const Cell& cell : cells) {
    const InlineId id(cell.key_id);
    writer.add(ActiveKeyTable::CountedMinute{id, cell.minute_start, cell.counts, std::nullopt, cell.sources});
  }
  return record;
}

void run(std::string_view input) {
  std::vector<Cell> cells;
  if (!read(input, cells)) {
    return;
  }
  for (const Cell& cell : cells) {
    FUZZ_CHECK(cell.minute_start % 60 == 0 && cell.minute_start >= 60 && cell.minute_start / 60 <= INT32_MAX,
               "minute out of range: " + std::to_string(cell.minute_start));
    FUZZ_CHECK(!cell.key_id.empty() && cell.key_id.size() <= InlineId::kCapacity, printable(cell.key_id));
    for (const auto& [address, n] : cell.sources) {
      FUZZ_CHECK(address.size() <= 255, printable(address));
    }
  }
  const std::string again = write(cells);
  std::vector<Cell> reread;
  FUZZ_CHECK(read(again, reread), "a written record is refused: " + printable(again));
  FUZZ_CHECK(reread == cells, "a written record reads back otherwise: " + printable(again));
  FUZZ_CHECK(write(reread) == again, "writing the same cells twice gives other bytes");
  // Cuts: a prefix of the cells, or refused.
  for (std::size_t cut = 0; cut < again.size(); cut += 1 + again.size() / 16) {
    std::vector<Cell> part;
    if (read(std::string_view(again).substr(0, cut), part)) {
      FUZZ_CHECK(part.size() <= cells.size() && std::equal(part.begin(), part.end(), cells.begin()),
                 "a cut record reads back other cells: " + printable(again.substr(0, cut)));
    }
  }
}

}  // namespace
}  // namespace keyledger::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  keyledger::fuzz::run(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
