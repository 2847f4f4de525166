# shellcheck shell=bash disable=SC2154,SC2034  # repo, build, tmp come from the caller; keyledger_pid and kl go back to it
# Shell helpers shared by ops/bench/verify/run and ops/bench/verify/instructions; sourced,
# not run. The caller sets `repo`, `build` and `tmp` before using them.

die() { echo "ops/bench/verify/$(basename "$0"): $*" >&2; exit 1; }

# The script's header comment, up to `set -euo`, as its --help.
usage() { sed -n '2,/^set -euo/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; }

wait_for() { # SECONDS COMMAND...
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}

# build_release TARGET...: installs what is missing, then builds TARGETs in $build (Release).
build_release() {
  export CC="${KEYLEDGER_CC:-gcc}"
  export CXX="${KEYLEDGER_CXX:-g++}"
  "$repo/ops/setup"
  cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKEYLEDGER_SANITIZE=OFF \
    -DKEYLEDGER_BUILD_BENCH=ON >/dev/null
  cmake --build "$build" -j "${KEYLEDGER_JOBS:-$(nproc)}" --target "$@" >&2
}

# start_keyledger SECONDS COMMAND... [-- SERVE_ARG...]: runs `COMMAND serve` on a free port of
# 127.0.0.1 with its data in $tmp/data (or $kl_data), no Kafka, no webhook deliveries (the
# bench agents' URLs point nowhere; they would only add load) and tiers no run can exhaust.
# Waits up to SECONDS for it to be ready; sets keyledger_pid and kl (its URL). Its output goes
# to $tmp/keyledger.out/.err (or $tmp/$kl_name.out/.err).
start_keyledger() {
  local seconds="$1"
  shift
  local command=() extra=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    command+=("$1")
    shift
  done
  if [ $# -gt 0 ]; then
    shift
    extra=("$@")
  fi
  local name="${kl_name:-keyledger}"
  "${command[@]}" serve --data-dir "${kl_data:-$tmp/data}" --listen 127.0.0.1:0 --kafka-brokers none \
    --disable-webhooks --rate-limit-tiers "standard:1000000:1000000,elevated:1000000:1000000" \
    "${extra[@]+"${extra[@]}"}" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  keyledger_pid=$!
  wait_for "$seconds" grep -q '^keyledger listening on ' "$tmp/$name.out" || die "$name did not start"
  kl="http://$(sed -n 's/^keyledger listening on //p' "$tmp/$name.out" | head -n 1)"
  wait_for "$seconds" curl -sf -o /dev/null "$kl/readyz" || die "keyledger never became ready"
}
