// Boost's assertions in the fuzz build (BOOST_ENABLE_ASSERT_HANDLER, top-level CMakeLists.txt):
// every one aborts, so the fuzzer reports it, except one that is wrong upstream.
//
// Boost.Beast 1.74 asserts `n >= 5` in basic_parser::parse_chunk_header where n may rightly be
// 3 or 4: a last chunk "0\r\n" whose closing CRLF has not arrived yet. The code after the
// assertion asks for more input, which is right; Beast corrected the assertion upstream
// (boostorg/beast pull request 2861). Release builds (NDEBUG) never check it.
// tests/fuzz/regressions/http_request/ keeps the input that met it.

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace boost {

namespace {

bool known_wrong(std::string_view expr, std::string_view file) {
  return expr == "n >= 5" && file.ends_with("boost/beast/http/impl/basic_parser.ipp");
}

}  // namespace

void assertion_failed(char const* expr, char const* function, char const* file, long line) {
  if (known_wrong(expr, file)) {
    return;
  }
  std::fprintf(stderr, "Boost assertion failed: %s in %s (%s:%ld)\n", expr, function, file, line);
  std::abort();
}

void assertion_failed_msg(char const* expr, char const* msg, char const* function, char const* file, long line) {
  std::fprintf(stderr, "Boost assertion failed: %s (%s) in %s (%s:%ld)\n", expr, msg, function, file, line);
  std::abort();
}

}  // namespace boost
