#!/bin/sh
# Stand-in entry point, as the official image's: `haproxy ...` runs master-worker, no daemon.
set -eu
if [ "${1:-}" = haproxy ]; then
    shift
    set -- haproxy -W -db "$@"
fi
exec "$@"
