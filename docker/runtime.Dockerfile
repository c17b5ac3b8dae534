# syntax=docker/dockerfile:1
# The pipeline-runtime image: `docker build -f docker/runtime.Dockerfile -t pipeline-runtime:dev .`
# (from the repository root). rdkafka is built from source (cmake) with OpenSSL and zstd;
# distroless cc-debian12 carries the glibc, libstdc++ and libssl3 it links against.

FROM rust:1-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p pipeline-runtime \
 && cp target/release/pipeline-runtime /usr/local/bin/pipeline-runtime

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /usr/local/bin/pipeline-runtime /usr/local/bin/pipeline-runtime
# uid 65532 is what the operator's pod security context expects.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/pipeline-runtime"]
