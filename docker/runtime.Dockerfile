# The pipeline-runtime image: `docker build -f docker/runtime.Dockerfile -t pipeline-runtime:dev .`
# (from the repository root; needs BuildKit for the cache mounts: Docker 23+, or
# DOCKER_BUILDKIT=1 on older engines). No `# syntax=` line: the built-in Dockerfile
# frontend does everything here, and a syntax line would make BuildKit pull a frontend image.
#
# librdkafka is compiled by rdkafka-sys with its own configure script (no cmake, no curl);
# zlib and zstd are linked in statically, OpenSSL dynamically. So the binary needs glibc,
# libgcc, libstdc++ and libssl3: exactly what distroless cc-debian12 carries. The builder
# image (buildpack-deps) already has the compiler, make, perl, pkg-config and libssl-dev.

# Both binaries are built, in one cargo invocation, by both Dockerfiles: the features of
# their common dependencies then resolve the same way, so with the shared target cache the
# second image's build finds everything compiled by the first (e2e/images.sh builds
# both).
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p pipeline-runtime -p datapipeline-operator \
 && cp target/release/pipeline-runtime /usr/local/bin/pipeline-runtime

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /usr/local/bin/pipeline-runtime /usr/local/bin/pipeline-runtime
# uid 65532 is what the operator's pod security context expects.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/pipeline-runtime"]
