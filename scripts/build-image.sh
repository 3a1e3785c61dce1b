#!/usr/bin/env bash
# Builds cutover's container image with no registry: FROM scratch, holding
# the cutover binary and nothing else.
#
#   scripts/build-image.sh [--fast | --binary PATH] [TAG]   # TAG defaults to cutover:latest
#
# By default the binary is a statically linked release build
# (RUSTFLAGS="-C target-feature=+crt-static", target x86_64-unknown-linux-gnu,
# in target/static so the normal build is left alone), stripped.
#
# --fast (or CUTOVER_IMAGE_FAST=1) is for tests: it takes an existing,
# dynamically linked binary ($CUTOVER_BIN, default target/debug/cutover,
# built when missing) with the few shared libraries it needs, debug info
# stripped; seconds instead of a release build. Still FROM scratch.
#
# --binary PATH takes a statically linked binary built already (what
# scripts/release.sh makes: profile-optimized and stripped) and puts it in
# the image as it is, so the image holds the file its SHA256SUMS names.
#
# CUTOVER_IMAGE_LABELS="k=v k2=v2" adds labels to the image (the tests label
# theirs so they can remove them). The repository's Dockerfile builds the
# same program on machines that can pull rust and debian images.
set -euo pipefail
cd "$(dirname "$0")/.."

fast="${CUTOVER_IMAGE_FAST:-}"
given=""
while [ $# -gt 0 ]; do
  case "$1" in
    --fast) fast=1; shift ;;
    --binary) given="${2:?--binary needs the path of a static cutover binary}"; shift 2 ;;
    *) break ;;
  esac
done
tag="${1:-cutover:latest}"
target=x86_64-unknown-linux-gnu

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/usr/local/bin"

if [ -n "$given" ]; then
  if [ ! -x "$given" ]; then
    echo "build-image.sh: --binary $given: no executable file there" >&2
    exit 1
  fi
  # A static binary names no shared library (ldd lists none with "=>").
  if ldd "$given" 2>&1 | grep -q '=>'; then
    echo "build-image.sh: --binary $given is not statically linked (expected a binary built with -C target-feature=+crt-static, as scripts/release.sh makes)" >&2
    exit 1
  fi
  cp "$given" "$context/usr/local/bin/cutover"
elif [ -n "$fast" ]; then
  bin="${CUTOVER_BIN:-target/debug/cutover}"
  [ -x "$bin" ] || cargo build --quiet --bin cutover
  objcopy --strip-debug "$bin" "$context/usr/local/bin/cutover"
  # The loader and libraries the binary names (ldd lists them resolved).
  ldd "$bin" | grep -o '/[^ ]*' | while read -r lib; do
    mkdir -p "$context$(dirname "$lib")"
    cp -L "$lib" "$context$lib"
  done
else
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --locked --bin cutover --target "$target" --target-dir target/static
  bin="target/static/$target/release/cutover"
  # A static binary names no shared library (ldd lists none with "=>").
  if ldd "$bin" 2>&1 | grep -q '=>'; then
    echo "build-image.sh: $bin is not statically linked" >&2
    exit 1
  fi
  strip -o "$context/usr/local/bin/cutover" "$bin"
fi

cat > "$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY . /
ENV PATH=/usr/local/bin
EXPOSE 80
ENTRYPOINT ["/usr/local/bin/cutover"]
CMD ["run", "--docker"]
DOCKERFILE
printf 'Dockerfile\n' > "$context/.dockerignore"

labels=(--label "org.opencontainers.image.title=cutover")
for l in ${CUTOVER_IMAGE_LABELS:-}; do
  labels+=(--label "$l")
done
if ! log=$(DOCKER_BUILDKIT=0 docker build --quiet "${labels[@]}" -t "$tag" "$context" 2>&1); then
  echo "$log" >&2
  exit 1
fi
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "$tag: $((size / 1024)) KiB"
