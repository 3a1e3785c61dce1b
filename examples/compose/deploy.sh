#!/usr/bin/env bash
# A blue-green release of docker-compose.yml's agent, with cutover:
#   ./deploy.sh VERSION [IMAGE]
# 1. recreates the idle colour (blue or green, whichever takes no traffic)
#    with VERSION (and IMAGE, when given), remembered in .env;
# 2. switches all new requests to it once cutover has seen it healthy (the
#    switch is refused until then);
# 3. waits until the old colour has nothing in flight, and leaves it running
#    so that a rollback is instant:
#      docker-compose exec cutover cutover ctl rollback your-domain.com
set -euo pipefail
cd "$(dirname "$0")"
version=${1:?usage: deploy.sh VERSION [IMAGE]}
image=${2:-}
service=${CUTOVER_SERVICE:-your-domain.com}
compose=${COMPOSE:-docker-compose}
ctl() { $compose exec -T cutover cutover ctl "$@"; }

active=$(ctl --json status "$service" | python3 -c 'import json,sys; print(json.load(sys.stdin)["active"])')
idle=$([ "$active" = blue ] && echo green || echo blue)
IDLE=$(echo "$idle" | tr a-z A-Z)
echo "active: $active; deploying $version${image:+ ($image)} to $idle"

# Kept in .env, so a later `docker-compose up -d` recreates nothing.
remember() { touch .env; grep -v "^$1=" .env > .env.new || true; echo "$1=$2" >> .env.new; mv .env.new .env; }
remember "${IDLE}_VERSION" "$version"
[ -z "$image" ] || remember "${IDLE}_IMAGE" "$image"
$compose up -d --no-deps "$idle"

# Health-gated: refused (exit 1) while the new containers are starting.
for _ in $(seq 1 60); do
  if ctl switch "$service" --to "$idle" 2>/dev/null; then
    ctl wait-drained "$service" --timeout 10m
    echo "released $version on $idle; $active drained and kept for a rollback"
    exit 0
  fi
  sleep 1
done
echo "$idle never became healthy: traffic stays on $active" >&2
ctl status "$service" >&2 || true
exit 1
