#!/usr/bin/env bash
# Builds cutover's release as it ships, into target/release-dist/VERSION/:
#
#   scripts/release.sh [--no-pgo] [--no-image] [--out DIR] [VERSION]
#
# 1. an instrumented build (-Cprofile-generate) runs the training load of
#    scripts/pgo_train.py (about 40 s; needs nginx, wrk, h2load, openssl);
# 2. llvm-profdata merges the profile it wrote: the one of rustc's own LLVM
#    (rustup's llvm-tools component, added when missing), or Debian's
#    llvm-N of the same major version;
# 3. the release build with that profile (-Cprofile-use), statically
#    linked (+crt-static) for x86_64-unknown-linux-gnu, stripped:
#    DIR/cutover, and DIR/SHA256SUMS;
# 4. the image FROM scratch around that binary, tagged cutover:VERSION
#    (scripts/build-image.sh --binary).
#
# Where no llvm-profdata for rustc's LLVM can be had, or with --no-pgo, it
# says so and builds the plain static binary; `cutover --version` says
# which it is ("profile-optimized" or "not profile-optimized"). VERSION
# defaults to Cargo.toml's and must match it. --out DIR replaces
# target/release-dist/VERSION; --no-image skips step 4.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

pgo=1
image=1
out=""
version=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-pgo) pgo=""; shift ;;
    --no-image) image=""; shift ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "release.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) version="$1"; shift ;;
  esac
done

crate_version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
version="${version:-$crate_version}"
if [ "$version" != "$crate_version" ]; then
  echo "release.sh: VERSION $version differs from Cargo.toml's version = \"$crate_version\"" \
    "(the binary reports Cargo.toml's; change it there first)" >&2
  exit 2
fi
out="${out:-target/release-dist/$version}"
target=x86_64-unknown-linux-gnu
static_flags="-C target-feature=+crt-static"

started=$(date +%s)
step_started=$started
step() {
  local now
  now=$(date +%s)
  if [ -n "${step_name:-}" ]; then
    echo "== release: $step_name took $((now - step_started)) s"
  fi
  step_name="$1"
  step_started=$now
  [ -z "$1" ] || echo "== release: $1"
}

# The commit is stamped from here, so every build below names the same one.
CUTOVER_COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
export CUTOVER_COMMIT
echo "== release: cutover $version, commit $CUTOVER_COMMIT, into $out"

# An llvm-profdata that reads what rustc's LLVM writes (same major version).
find_profdata() {
  local sysroot host major
  sysroot="$(rustc --print sysroot)"
  host="$(rustc -vV | sed -n 's/^host: //p')"
  major="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
  local candidates=("$sysroot/lib/rustlib/$host/bin/llvm-profdata" "/usr/lib/llvm-$major/bin/llvm-profdata")
  for c in "${candidates[@]}"; do
    [ -x "$c" ] && { echo "$c"; return 0; }
  done
  if command -v rustup >/dev/null 2>&1; then
    echo "== release: adding rustup's llvm-tools component (llvm-profdata)" >&2
    rustup component add llvm-tools >&2 || true
  fi
  for c in "${candidates[@]}"; do
    [ -x "$c" ] && { echo "$c"; return 0; }
  done
  echo "== release: no llvm-profdata for rustc's LLVM $major (tried: ${candidates[*]})" >&2
  return 1
}

profile_flag=""
if [ -n "$pgo" ]; then
  if profdata="$(find_profdata)"; then
    raw="$root/target/release-pgo/profiles"
    rm -rf "$raw"
    step "instrumented build (target/release-pgo/gen)"
    # Same target and flags as the shipped build, so the profile matches
    # its code; build scripts (host code) are not instrumented.
    CUTOVER_PGO=0 RUSTFLAGS="${RUSTFLAGS:-} $static_flags -Cprofile-generate=$raw" \
      cargo build --release --locked --bin cutover --target "$target" \
      --target-dir target/release-pgo/gen
    step "training the instrumented build (scripts/pgo_train.py)"
    python3 scripts/pgo_train.py "target/release-pgo/gen/$target/release/cutover"
    step "merging the profile ($profdata)"
    shopt -s nullglob
    raws=("$raw"/*.profraw)
    shopt -u nullglob
    if [ ${#raws[@]} -eq 0 ]; then
      echo "release.sh: the instrumented cutover wrote no profile into $raw" >&2
      exit 1
    fi
    merged_tmp="$root/target/release-pgo/merged.profdata"
    "$profdata" merge -o "$merged_tmp" "${raws[@]}"
    # Named by content: a new profile is a new flag, so cargo rebuilds
    # every crate with it rather than keeping builds from an older one.
    digest="$(sha256sum "$merged_tmp" | cut -c1-12)"
    profile="$root/target/release-pgo/cutover-$digest.profdata"
    mv "$merged_tmp" "$profile"
    profile_flag="-Cprofile-use=$profile"
  else
    echo "== release: building the plain binary (not profile-optimized)"
    pgo=""
  fi
else
  echo "== release: --no-pgo: building the plain binary (not profile-optimized)"
fi

if [ -n "$pgo" ]; then
  step "optimized build with the profile (target/release-pgo/use)"
  dir=target/release-pgo/use
else
  step "plain build (target/static)"
  dir=target/static
fi
CUTOVER_PGO="$([ -n "$pgo" ] && echo 1 || echo 0)" \
  RUSTFLAGS="${RUSTFLAGS:-} $static_flags $profile_flag" \
  cargo build --release --locked --bin cutover --target "$target" --target-dir "$dir"
built="$dir/$target/release/cutover"
if ldd "$built" 2>&1 | grep -q '=>'; then
  echo "release.sh: $built is not statically linked" >&2
  exit 1
fi

step "stripped binary and SHA256SUMS in $out"
mkdir -p "$out"
strip -o "$out/cutover" "$built"
(cd "$out" && sha256sum cutover > SHA256SUMS)
"$out/cutover" --version
echo "$out/cutover: $(($(stat -c %s "$out/cutover") / 1024)) KiB"
cat "$out/SHA256SUMS"

if [ -n "$image" ]; then
  step "image cutover:$version (scripts/build-image.sh --binary)"
  scripts/build-image.sh --binary "$out/cutover" "cutover:$version"
  docker run --rm "cutover:$version" --version
fi
step ""
echo "== release: done in $(($(date +%s) - started)) s: $out/cutover${image:+, image cutover:$version}"
