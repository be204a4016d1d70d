# The challenge-stream image: the static binary and the CA roots, nothing else. No shell, no
# package manager, no writable path needed (it runs with a read-only root filesystem).
#
# The build context is bin/image/, which `make image` fills with a CGO_ENABLED=0 binary and the
# build host's CA bundle before building this file; no base image is pulled:
#
#   make image                                     # buildah: no daemon, no pull (see Makefile)
#   make image-context && docker build -f Dockerfile -t challenge-stream bin/image
FROM scratch

# For sslmode=verify-full against a server whose CA is a public one; a private CA is mounted
# and named with sslrootcert= in DATABASE_URL.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY challenge-stream /usr/local/bin/challenge-stream

ENV PATH=/usr/local/bin
# 65532 is the conventional "nonroot" uid/gid of distroless images; no passwd entry needed.
USER 65532:65532
# /metrics, /livez, /readyz (--metrics-addr :9464).
EXPOSE 9464
ENTRYPOINT ["challenge-stream"]
CMD ["run"]
