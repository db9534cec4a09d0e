# syntax=docker/dockerfile:1
#
# One image with the binaries: denylist-sidecar (the default entrypoint), denylistctl,
# denylist-injector and denylist-receiver. Non-root, no shell, nothing written to the root filesystem: it runs
# with readOnlyRootFilesystem (the socket lives on an emptyDir mounted by the injector).
#
#   docker build -t denylist:dev .
#
# The build matches the README's `cargo build --release`; dependencies are compiled in their
# own layer (cargo-chef), so a source change rebuilds only the workspace crates.
# (This repository's CI has no container engine: the Dockerfile is kept plain and is not
# built there.)

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# The dependency recipe: changes only when a Cargo.toml or Cargo.lock changes.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked \
        --bin denylist-sidecar --bin denylistctl --bin denylist-injector --bin denylist-receiver \
    && mkdir -p /out \
    && cp target/release/denylist-sidecar target/release/denylistctl target/release/denylist-injector \
        target/release/denylist-receiver /out/

# glibc and libgcc only; TLS and crypto are linked statically (rustls with aws-lc-rs).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/ /usr/local/bin/
# Numeric, so Kubernetes can verify runAsNonRoot without an explicit runAsUser.
USER 65532:65532
# gRPC (loopback), admin HTTP, injector HTTPS.
EXPOSE 50151 9151 8443
ENTRYPOINT ["/usr/local/bin/denylist-sidecar"]
