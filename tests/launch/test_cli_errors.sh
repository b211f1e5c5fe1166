#!/usr/bin/env bash
# The command line refuses what it cannot use, with exit code 2 and a message that says what to
# type instead: a stray word (a config key without --set is the usual one, and used to be dropped
# silently), a missing required option, an unknown command.
# usage: test_cli_errors.sh <build/tessera> <configs/tiny.yaml>
set -uo pipefail
tessera=$1 config=$2
fail=0
expect() {  # expect <exit code> <text in stderr> <args...>
  local code=$1 text=$2
  shift 2
  local err rc
  err=$("$tessera" "$@" 2>&1 >/dev/null)
  rc=$?
  if [ "$rc" -ne "$code" ] || [[ "$err" != *"$text"* ]]; then
    echo "FAIL: tessera $* -> exit $rc, '$err' (want exit $code and '$text')"
    fail=1
  else
    echo "ok: tessera $* -> exit $rc: $err"
  fi
}
expect 2 "--set key=value" train --config "$config" train.steps=6
expect 2 "--set key=value" prepare --config "$config" extra
expect 2 "--set key=value" checkpoint convert --from a --to b extra
expect 2 "config" train
expect 2 "unknown command 'frobnicate'" frobnicate
exit $fail
