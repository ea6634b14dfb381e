#!/usr/bin/env bash
# Passes go test output through and ends with one line "N passed, N failed"
# counted over every test and subtest; exits non-zero when go test failed
# (its exit status arrives through PIPESTATUS in the caller, so a FAIL line
# or a missing "ok" is what decides here).
set -uo pipefail
label=${1:-tests}
pass=0 fail=0 bad=0
while IFS= read -r line; do
  printf '%s\n' "$line"
  case "$line" in
    *"--- PASS:"*) pass=$((pass+1)) ;;
    *"--- FAIL:"*) fail=$((fail+1)) ;;
  esac
  case "$line" in
    FAIL*|panic:*|"# "*) bad=1 ;;
  esac
done
echo "$label: $pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$bad" -eq 0 ]
