# syntax=docker/dockerfile:1
# The operator image: `docker build -f docker/operator.Dockerfile -t datapipeline-operator:dev .`
# (from the repository root). The operator depends only on pipeline-config and the kube
# stack (rustls, no OpenSSL), so it builds in a few minutes and runs on distroless.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p datapipeline-operator \
 && cp target/release/datapipeline-operator /usr/local/bin/datapipeline-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /usr/local/bin/datapipeline-operator /usr/local/bin/datapipeline-operator
# distroless `nonroot`; the chart runs it with a read-only root filesystem.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/datapipeline-operator"]
CMD ["run"]
