# The operator image: `docker build -f docker/operator.Dockerfile -t datapipeline-operator:dev .`
# (from the repository root; needs BuildKit for the cache mounts: Docker 23+, or
# DOCKER_BUILDKIT=1 on older engines). No `# syntax=` line: the built-in Dockerfile
# frontend does everything here, and a syntax line would make BuildKit pull a frontend image.
#
# The operator reads consumer offsets with rdkafka, so it links librdkafka the same way the
# runtime does (configure build, static zlib and zstd, system OpenSSL): it runs on
# distroless cc-debian12, which carries glibc, libgcc, libstdc++ and libssl3.

# Builds both binaries, as docker/runtime.Dockerfile does (see there): the second image's
# build then reuses the first one's compilation from the shared target cache.
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p pipeline-runtime -p datapipeline-operator \
 && cp target/release/datapipeline-operator /usr/local/bin/datapipeline-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /usr/local/bin/datapipeline-operator /usr/local/bin/datapipeline-operator
# distroless `nonroot`; the chart runs it with a read-only root filesystem.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/datapipeline-operator"]
CMD ["run"]
