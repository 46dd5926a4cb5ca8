# syntax=docker/dockerfile:1
# Build stage: dependencies in their own cached layer, then the binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# Stubs for every target Cargo.toml names (each [[bench]] name; the first name is the package's).
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && for b in $(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | tail -n +2); do echo 'fn main() {}' > "benches/$b.rs"; done \
 && cargo build --release --locked --bin image-mirror-webhook \
 && rm -rf src benches
COPY src src
COPY benches benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin image-mirror-webhook

# Final stage: the binary and glibc only; no shell, non-root, fits a read-only root filesystem.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/image-mirror-webhook /usr/local/bin/image-mirror-webhook
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/image-mirror-webhook"]
CMD ["serve"]
