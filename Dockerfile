# Samotop: one image with every actor, the supervisor and the tools.
#
#   docker build -t samotop .
#   docker run --rm samotop samotop-listener --print-config
#
# The command names the program: samotop-bus, samotop-listener, samotop-auth,
# samotop-guard, samotop-mailbox, samotop-queue, samotop-relay, samotopd (all
# of them in one container, with its own redis-server), samotop-admin or
# samotop-tap; redis-server is in the image too, so the Redis service can run
# from it where no registry is reachable. All configuration comes from the
# environment (SAMOTOP_<KEY>, see docs/operations.md). The image's defaults
# are the standard ports on every address and data in /var/lib/samotop;
# the rest is the local profile, so `docker run samotop` (samotopd) works
# alone. deploy/compose.yaml and deploy/k8s/ point the actors at the broker
# ("bus") and Redis ("redis") services.
#
# Both stages are bookworm-slim: it is the Debian 12 base that builds here
# with no registry (../shared/tools/container-build makes it locally). The
# build stage installs the "build" list of deploy/deps, written out here so
# that the layer stays cached when the tests' list changes; the deploy_config
# test fails when the two lists differ.

FROM debian:bookworm-slim AS build
WORKDIR /src
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    build-essential cmake pkg-config python3 \
    libzmq3-dev libczmq-dev libhiredis-dev libmsgpack-dev libssl-dev \
    libc-ares-dev libmicrohttpd-dev libidn2-dev \
    redis-server openssl >/dev/null \
 && rm -rf /var/lib/apt/lists/*
# Marks the layers made from the sources, so that old ones can be pruned
# (tests/deploy/test_container.sh) while the package layer stays cached.
LABEL org.samotop.stage=build
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSAMOTOP_TESTS=OFF \
 && cmake --build /build -j"$(nproc)" \
 && mkdir -p /out/bin \
 && cp /build/bin/samotopd /build/bin/samotop-* /out/bin/ \
 && rm -f /out/bin/samotop-bench-* \
 && strip --strip-debug /out/bin/* \
 && mkdir -p /tmp/shlib/debian && touch /tmp/shlib/debian/control \
 && (cd /tmp/shlib && dpkg-shlibdeps -O /out/bin/samotopd /out/bin/samotop-*) \
    >/tmp/shlibs \
 && sed -n 's/^shlibs:Depends=//p' /tmp/shlibs | tr ',' '\n' \
    | sed 's/([^)]*)//; s/|.*//; s/ //g' | sort -u >/out/runtime-packages \
 && grep -q '^libzmq' /out/runtime-packages \
 && cp deploy/container/samotop-health /out/bin/

FROM debian:bookworm-slim
# The shared libraries the binaries link (found by dpkg-shlibdeps in the
# build stage, so this list cannot drift from the code), redis-server for
# samotopd and the Redis service, and CA certificates for the relay's
# verified TLS routes.
COPY --from=build /out/runtime-packages /tmp/runtime-packages
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $(cat /tmp/runtime-packages) redis-server ca-certificates >/dev/null \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages \
 && groupadd --gid 10025 samotop \
 && useradd --uid 10025 --gid samotop --home-dir /var/lib/samotop \
    --no-create-home --shell /usr/sbin/nologin samotop \
 && mkdir -p /var/lib/samotop/mail /var/lib/samotop/tls /var/lib/samotop/redis \
 && chown -R samotop:samotop /var/lib/samotop
COPY --from=build /out/bin/ /usr/local/bin/

# Ports 25, 587, 465, 143, 993 and 24 are below 1024 and the processes are
# not root: the image relies on net.ipv4.ip_unprivileged_port_start=0 in the
# container's network namespace (Docker 20.10 and later set it by default;
# deploy/k8s sets it as a pod sysctl). On the host network, use ports above
# 1023 (deploy/compose.host.yaml does).
ENV SAMOTOP_DATA=/var/lib/samotop \
    SAMOTOP_LISTEN_MTA=0.0.0.0:25 \
    SAMOTOP_LISTEN_MSA=0.0.0.0:587 \
    SAMOTOP_LISTEN_SMTPS=0.0.0.0:465 \
    SAMOTOP_LISTEN_IMAP=0.0.0.0:143 \
    SAMOTOP_LISTEN_IMAPS=0.0.0.0:993 \
    SAMOTOP_LISTEN_LMTP=0.0.0.0:24
EXPOSE 25 587 465 143 993 24 5570 5571 5572

USER samotop:samotop
WORKDIR /var/lib/samotop
# samotop-health asks the program this container runs whether it works
# (see deploy/container/samotop-health). Podman keeps a HEALTHCHECK only in
# the docker image format (BUILDAH_FORMAT=docker).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["samotop-health"]
CMD ["samotopd"]
