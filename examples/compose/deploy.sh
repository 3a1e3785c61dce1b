#!/usr/bin/env bash
# A blue-green release with cutover in docker-compose:
#   ./deploy.sh IMAGE VERSION
# 1. deploys IMAGE to the standby colour, 2. waits until cutover sees it
# healthy, 3. switches all traffic at once, gated on health and VERSION,
# 4. waits until the old colour has nothing in flight, 5. stops it.
# Undo at any time with: docker compose exec cutover cutover ctl rollback agent
set -euo pipefail
image=${1:?usage: deploy.sh IMAGE VERSION}
version=${2:?usage: deploy.sh IMAGE VERSION}
ctl() { docker compose exec -T cutover cutover ctl --socket /var/lib/cutover/cutover.sock "$@"; }

active=$(ctl --json status agent | python3 -c 'import json,sys; print(json.load(sys.stdin)["active"])')
standby=$([ "$active" = blue ] && echo green || echo blue)
STANDBY=$(echo "$standby" | tr a-z A-Z)
echo "active: $active; deploying $image ($version) to $standby"

export "${STANDBY}_IMAGE=$image" "${STANDBY}_VERSION=$version"
docker compose up -d --no-deps "agent-$standby"

# The switch is refused (exit 1) until the standby pool is healthy and reports $version.
for _ in $(seq 1 60); do
  if ctl switch agent --to "$standby" --expect-version "$version"; then
    ctl wait-drained agent --timeout 10m
    docker compose stop "agent-$active"
    echo "released $version on $standby; $active stopped (start it again to keep a rollback target warm)"
    exit 0
  fi
  sleep 2
done
echo "standby $standby never became healthy with version $version: traffic stays on $active" >&2
exit 1
