#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "domain/key_material.h"

int main(int argc, char** argv) {
  if (!keyledger::crypto_init()) {
    return 1;
  }
  return Catch::Session().run(argc, argv);
}
