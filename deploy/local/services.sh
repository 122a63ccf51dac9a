#!/usr/bin/env bash
# All local services at once: deploy/local/services.sh up|down|status
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cmd="${1:-}"
case "$cmd" in
    up) "$here/kafka.sh" up; "$here/redis.sh" up; "$here/postgres.sh" up ;;
    down) "$here/kafka.sh" down; "$here/redis.sh" down; "$here/postgres.sh" down ;;
    status) rc=0; for s in kafka redis postgres; do "$here/$s.sh" status || rc=1; done; exit $rc ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
