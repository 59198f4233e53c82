# STAND-IN for haproxy:2.6, from Debian's haproxy (2.6). Like the official image: the
# configuration at /usr/local/etc/haproxy/haproxy.cfg, master-worker mode in the foreground
# (SIGUSR2 reloads), user haproxy, SIGUSR1 to stop softly.
FROM hub-standin/debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends haproxy \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /usr/local/etc/haproxy
COPY haproxy-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER haproxy
WORKDIR /var/lib/haproxy
STOPSIGNAL SIGUSR1
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
