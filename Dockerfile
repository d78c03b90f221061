# syntax=docker/dockerfile:1
#
# samizdat in a small image: the release binary on distroless/cc (glibc,
# libgcc, CA certificates; no shell, no package manager), run as a
# non-root user. See docs/operators.md ("Docker").
#
#   docker build -t samizdat .
#   docker run -d --name samizdat -p 443:443 -v samizdat-state:/var/lib/samizdat \
#       samizdat serve --public-host proxy.example.org
#
# Why glibc and not a static musl binary in FROM scratch: `samizdat doctor`
# uses rustls with aws-lc (C code), which for musl needs musl-gcc in the
# builder, and DNS lookups behave differently under musl. The glibc binary
# needs only libc, libm and libgcc_s, all in distroless/cc.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the crate registry and target/ between builds; the
# binary is copied out of the target/ mount in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p samizdat \
 && install -D -m 0755 target/release/samizdat /out/samizdat \
 && install -d -m 0700 /out/state

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/samizdat /samizdat
# The state directory (the zero-config secret) belongs to the nonroot user
# (65532), so a fresh named volume mounted here is writable by it.
COPY --from=build --chown=65532:65532 /out/state /var/lib/samizdat
ENV SAMIZDAT_STATE_DIR=/var/lib/samizdat \
    NO_COLOR=1
VOLUME ["/var/lib/samizdat"]
USER 65532:65532
# Docker (20.10+) lets unprivileged users of a container bind low ports in
# the container's own network namespace, so 443 needs no capability here.
EXPOSE 443
ENTRYPOINT ["/samizdat"]
# --no-links: standard output ends up in `docker logs`; print the links
# with `docker exec CONTAINER /samizdat link` (same options) instead.
CMD ["serve", "--no-links"]
