// keyledger: wires the layers together. Subcommands: serve, token create, rebuild-projections.
#include <iostream>

#include "domain/key_material.h"

int main() {
  if (!keyledger::crypto_init()) {
    std::cerr << "keyledger: libsodium failed to initialise\n";
    return 1;
  }
  std::cerr << "keyledger: not implemented yet\n";
  return 2;
}
