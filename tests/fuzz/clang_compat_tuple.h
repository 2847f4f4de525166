#pragma once
// Force-included into api/metrics.cpp in the fuzz tree only (clang_compat.cmake).
//
// Metrics looks up a std::map<std::tuple<std::string, std::string, unsigned>, …, std::less<>>
// by a std::tuple<std::string_view, std::string_view, unsigned>. libstdc++ 12 compares such
// tuples through operator<=>, which clang 14 cannot instantiate for string_view against string
// ("no matching function for call to object of type 'const std::less<>'"); g++ can. These two
// comparisons give the same order by hand.
#include <string>
#include <string_view>
#include <tuple>

namespace std {
inline bool operator<(const tuple<string_view, string_view, unsigned>& a,
                      const tuple<string, string, unsigned>& b) {
  return a < tuple<string_view, string_view, unsigned>(get<0>(b), get<1>(b), get<2>(b));
}
inline bool operator<(const tuple<string, string, unsigned>& a,
                      const tuple<string_view, string_view, unsigned>& b) {
  return tuple<string_view, string_view, unsigned>(get<0>(a), get<1>(a), get<2>(a)) < b;
}
}  // namespace std
