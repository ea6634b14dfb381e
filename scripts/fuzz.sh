#!/usr/bin/env bash
# Runs every Go fuzz target in the repository for FUZZTIME each (default
# 30s) and prints one line per target: package, target, time, result.
# New crashers are written by `go test` to the package's
# testdata/fuzz/TARGET/ and make the run fail.
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-30s}
status=0
summary=()
for pkg in $($GO list ./...); do
  dir=$($GO list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "== $pkg $target ($FUZZTIME)"
    start=$(date +%s)
    if $GO test -run='^$' -fuzz="^${target}\$" -fuzztime="$FUZZTIME" "$pkg" 2>&1 | tail -n 5; then
      result=ok
    else
      result=FAILED
      status=1
    fi
    summary+=("$(printf '%-48s %-28s %4ss %s' "$pkg" "$target" "$(( $(date +%s) - start ))" "$result")")
  done
done
echo
printf '%s\n' "${summary[@]}"
exit $status
