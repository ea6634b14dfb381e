#!/bin/sh
# Prints the version of release builds and packages, from git:
#   vX.Y.Z tag on HEAD           X.Y.Z
#   N commits past vX.Y.Z        X.Y.Z+gitYYYYMMDD.N.HASH   (sorts after X.Y.Z)
#   no tag                       0.0.0+gitYYYYMMDD.HASH
# YYYYMMDD is HEAD's commit date (UTC), so the same commit always gives the
# same version. Outside a git checkout: 0.0.0 (give VERSION= to make).
# The result is a valid Debian upstream version ([0-9][A-Za-z0-9.+~]*).
set -eu
cd "$(dirname "$0")/.."
if ! hash=$(git rev-parse --short=12 HEAD 2>/dev/null); then
  echo 0.0.0
  exit 0
fi
date=$(TZ=UTC0 git log -1 --format=%cd --date=format-local:%Y%m%d HEAD)
if desc=$(git describe --tags --long --match 'v[0-9]*' HEAD 2>/dev/null); then
  # vX.Y.Z-N-gHASH
  tag=${desc%-*-g*}
  rest=${desc#"$tag"-}
  n=${rest%%-*}
  # v1.2.0-rc1 sorts before 1.2.0 as 1.2.0~rc1
  v=$(printf '%s' "${tag#v}" | tr -- - '~')
  if [ "$n" = 0 ]; then
    echo "$v"
  else
    echo "$v+git$date.$n.$hash"
  fi
else
  echo "0.0.0+git$date.$hash"
fi
