# enrichd: multi-stage build, slim runtime, non-root user.
#   docker build -t enrichd .
#   docker run -v $PWD/enrichd.toml:/etc/enrichd/enrichd.toml -v enrichd-data:/var/lib/enrichd enrichd
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY connectors/core/Cargo.toml connectors/core/Cargo.toml
COPY connectors/teststore/Cargo.toml connectors/teststore/Cargo.toml
RUN mkdir -p src connectors/core/src connectors/teststore/src \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs connectors/core/src/lib.rs connectors/teststore/src/lib.rs \
 && cargo build --release --locked --bin enrichd \
 && rm -rf src connectors/core/src connectors/teststore/src
COPY connectors connectors
COPY migrations migrations
COPY src src
# The placeholder build left stale fingerprints for our own crates; touch the real sources.
RUN touch src/main.rs src/lib.rs connectors/core/src/lib.rs connectors/teststore/src/lib.rs \
 && cargo build --release --locked --bin enrichd

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/enrichd --create-home --shell /usr/sbin/nologin enrichd
COPY --from=build /src/target/release/enrichd /usr/local/bin/enrichd
COPY config/ /etc/enrichd/
WORKDIR /var/lib/enrichd
VOLUME /var/lib/enrichd
USER enrichd
# The default SQLite database (sqlite://enrichd.db) lands in /var/lib/enrichd. Inside a container,
# set [server] bind = "0.0.0.0:8686" in the mounted config to reach the HTTP server from outside.
ENV ENRICHD_CONFIG=/etc/enrichd/enrichd.toml
EXPOSE 8686
STOPSIGNAL SIGTERM
ENTRYPOINT ["enrichd"]
CMD ["daemon"]
