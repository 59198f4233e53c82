# STAND-IN base for tests/test_docker.py: Debian bookworm (debootstrap minbase, imported by
# build.sh) plus this machine's CA certificates, so that apt and pip inside `docker build`
# trust the same TLS interception as the host. Not an official image.
FROM hub-standin/debian-rootfs:bookworm
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY local/ /usr/local/share/ca-certificates/
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    LANG=C.UTF-8
CMD ["bash"]
