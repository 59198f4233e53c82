#!/bin/sh
# Stand-in entry point: the official image builds Redis with protected mode off (it is reached
# over the container network, not loopback); Debian's build has it on, so turn it off here.
set -eu
if [ "${1:-}" = redis-server ]; then
    shift
    case "${1:-}" in
        ""|-*) exec redis-server --protected-mode no "$@" ;;
        *) config=$1; shift; exec redis-server "$config" --protected-mode no "$@" ;;
    esac
fi
exec "$@"
