#!/bin/sh
# Stand-in entry point: the official image's environment variables, then the server as the
# rabbitmq user with its log on stdout.
set -eu
if [ "${1:-}" = rabbitmq-server ]; then
    {
        echo "loopback_users = none"
        echo "listeners.tcp.default = 5672"
        [ -n "${RABBITMQ_DEFAULT_USER:-}" ] && echo "default_user = ${RABBITMQ_DEFAULT_USER}"
        [ -n "${RABBITMQ_DEFAULT_PASS:-}" ] && echo "default_pass = ${RABBITMQ_DEFAULT_PASS}"
        [ -n "${RABBITMQ_DEFAULT_VHOST:-}" ] && echo "default_vhost = ${RABBITMQ_DEFAULT_VHOST}"
        true
    } > /etc/rabbitmq/rabbitmq.conf
    chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
    export HOME=/var/lib/rabbitmq RABBITMQ_LOGS=-
    cd /var/lib/rabbitmq
    exec setpriv --reuid rabbitmq --regid rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server
fi
exec "$@"
