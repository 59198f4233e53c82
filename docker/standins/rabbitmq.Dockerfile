# STAND-IN for rabbitmq:3.13-management, from Debian's rabbitmq-server (3.10).
# Supports what docker/compose.yaml uses: RABBITMQ_DEFAULT_USER/PASS, the plugins file at
# /etc/rabbitmq/enabled_plugins (management, prometheus), the data volume at
# /var/lib/rabbitmq, `rabbitmq-diagnostics` for the health check, logs on stdout.
FROM hub-standin/debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends rabbitmq-server \
 && rm -rf /var/lib/apt/lists/* \
 && printf 'NODENAME=rabbit@localhost\n' > /etc/rabbitmq/rabbitmq-env.conf \
 && rm -f /etc/rabbitmq/enabled_plugins
COPY rabbitmq-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/rabbitmq
EXPOSE 5672 15672 15692
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["rabbitmq-server"]
