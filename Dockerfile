# syntax=docker/dockerfile:1
#
# meshgate's image: the workspace built in a Rust image on Debian bookworm, then the binary alone on
# distroless (glibc, CA certificates, no shell), running as UID 2103 like Linkerd's gateway. The root
# filesystem can be mounted read-only: meshgate writes nothing but its logs to stderr.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t meshgate:dev .
#
# Each platform builds natively (under emulation for the other one); TARGETARCH keeps the build
# caches of the two apart.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY gateway gateway
COPY identity identity
COPY benches benches
COPY tests tests
# Debug info and symbols stay out of the shipped binary (≈ 10 MB instead of ≈ 54 MB).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,id=cargo-registry-${TARGETARCH},target=/usr/local/cargo/registry \
    --mount=type=cache,id=meshgate-target-${TARGETARCH},target=/src/target \
    cargo build --locked --release --package meshgate --bin meshgate \
    && install -D -m 0755 target/release/meshgate /out/meshgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/meshgate /usr/local/bin/meshgate
USER 2103:2103
# 4143: mTLS data port (multicluster gateway); 4191: admin (/ready, /live, /metrics).
EXPOSE 4143 4191
ENTRYPOINT ["/usr/local/bin/meshgate"]
CMD ["run"]
