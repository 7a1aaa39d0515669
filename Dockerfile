# enrichd: multi-stage build, slim runtime, non-root user.
#   docker build -t enrichd .
#   docker run -v $PWD/enrichd.toml:/etc/enrichd/enrichd.toml -v enrichd-data:/var/lib/enrichd -p 8686:8686 enrichd
# Inside a container the daemon must bind beyond loopback ([server] bind = "0.0.0.0:8686"), which
# enrichd refuses without [server.auth]: the mounted config needs both.
#
# The build sees the whole repository (less .dockerignore): workspace members, migrations, templates,
# the shipped tasks and the bench/test files Cargo.toml names are all needed. tests/dockerfile.rs
# checks that every path the build reads is copied into the build stage.
FROM rust:1.95-slim-bookworm AS chef
RUN cargo install cargo-chef --locked --version ^0.1
WORKDIR /src

# The dependency graph alone, so that source edits do not rebuild the dependencies.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin enrichd
COPY . .
RUN cargo build --release --locked --bin enrichd

FROM debian:bookworm-slim
# curl only for the HEALTHCHECK below.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/enrichd --create-home --shell /usr/sbin/nologin enrichd
COPY --from=build /src/target/release/enrichd /usr/local/bin/enrichd
COPY config/ /etc/enrichd/
WORKDIR /var/lib/enrichd
VOLUME /var/lib/enrichd
USER enrichd
# The default SQLite database (sqlite://enrichd.db) lands in /var/lib/enrichd.
ENV ENRICHD_CONFIG=/etc/enrichd/enrichd.toml
EXPOSE 8686
# /healthz needs no sign-in; the daemon answers it on its bind port (8686 unless the config says otherwise).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8686/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["enrichd"]
CMD ["daemon"]
