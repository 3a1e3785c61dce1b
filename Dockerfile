# cutover as a container image on a machine that can pull rust and debian images:
#   docker build -t cutover .
# Without a registry, scripts/build-image.sh builds one FROM scratch around a
# static binary (what examples/compose uses).
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
COPY --from=build /src/target/release/cutover /usr/local/bin/cutover
WORKDIR /etc/cutover
EXPOSE 8080
ENTRYPOINT ["cutover"]
CMD ["run", "-c", "/etc/cutover/proxy.toml"]
