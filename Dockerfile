# syntax=docker/dockerfile:1
# comet in a container: built with the Rust image, run on distroless (glibc and libgcc, no
# shell) as a non-root user.
#
#   docker build -t comet .
#   docker run --rm -p 8000:8000 \
#     --security-opt seccomp=deploy/seccomp-io_uring.json \
#     --ulimit nofile=1048576:1048576 \
#     -e COMET_PUBLISH_SECRET=change-me comet
#
# io_uring needs the seccomp profile: Docker 25+, containerd 2 and Podman block
# io_uring_setup/_enter/_register in their default profiles (see the README, "Deploying").

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The caches keep the crates and the build between builds on one host.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p comet \
    && cp target/release/comet /usr/local/bin/comet

# Debian 12's glibc, the same the build links against; user nonroot is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/comet /usr/local/bin/comet
# The publish API listens on every address of the container, so that other containers can
# publish; comet then refuses to start without COMET_PUBLISH_SECRET (or --insecure-publish).
# Port 8001 is for the container network only: never publish it to the outside (-p).
ENV COMET_LISTEN=0.0.0.0:8000 \
    COMET_PUBLISH_LISTEN=0.0.0.0:8001
EXPOSE 8000
USER nonroot
ENTRYPOINT ["/usr/local/bin/comet"]
CMD ["serve"]
