# syntax=docker/dockerfile:1
# moonborn-scim: a release build on the Rust image, run on Debian slim as a non-root user.
#
#   docker build -t moonborn-scim .                   (add --build-arg GIT_SHA=$(git rev-parse HEAD))
#   docker run -p 8080:8080 -v moonborn-data:/data moonborn-scim
#
# Both stages are Debian 12 (bookworm), so the binary's glibc matches the runtime's.

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
# Shown as moonborn_build_info{git_sha=…} when given.
ARG GIT_SHA=""
ENV MOONBORN_GIT_SHA=${GIT_SHA}
WORKDIR /src
COPY . .
# The registry and target directories are BuildKit caches: a rebuild after a source change
# compiles only this crate.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin moonborn-scim \
    && install -D -m 0755 target/release/moonborn-scim /out/moonborn-scim

FROM debian:bookworm-slim AS runtime
# curl for HEALTHCHECK only; outbound TLS (webhooks, PostgreSQL) needs no CA bundle: the public
# roots are compiled in (--ca-file adds private ones).
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin moonborn \
    && mkdir -p /data && chown moonborn:moonborn /data
COPY --from=build /out/moonborn-scim /usr/local/bin/moonborn-scim
USER moonborn
WORKDIR /data
VOLUME /data
ENV MOONBORN_DATABASE_URL=sqlite:///data/moonborn-scim.db \
    MOONBORN_LISTEN=0.0.0.0:8080 \
    MOONBORN_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["moonborn-scim"]
CMD ["serve"]
