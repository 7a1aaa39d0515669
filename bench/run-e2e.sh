#!/usr/bin/env bash
# End-to-end throughput of `enrichd run` (pull → enrich → approve → re-read → write) against the
# teststore and provider sandboxes with zero latency, on SQLite and on Postgres. Prints a table.
#   bench/run-e2e.sh [PRODUCTS]          (default 5000; Postgres at $ENRICHD_BENCH_POSTGRES)
set -euo pipefail
cd "$(dirname "$0")/.."
products="${1:-5000}"
pg="${ENRICHD_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
cargo build --release --quiet --bin enrichd
bin="$PWD/target/release/enrichd"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

printf '| database | products | enriched + written | wall time | items/s | peak RSS |\n|---|---|---|---|---|---|\n'
for backend in sqlite postgres; do
    sp=$(port); pp=$(port)
    "$bin" sandbox teststore --products "$products" --missing-every 1 --port "$sp" --token bench >/dev/null 2>&1 &
    store_pid=$!
    "$bin" sandbox provider --port "$pp" >/dev/null 2>&1 &
    provider_pid=$!
    sleep 0.5
    if [ "$backend" = sqlite ]; then
        url="sqlite://$work/bench.db"; rm -f "$work"/bench.db*
    else
        psql "$pg/postgres" -qc 'DROP DATABASE IF EXISTS enrichd_bench WITH (FORCE)' -qc 'CREATE DATABASE enrichd_bench'
        url="$pg/enrichd_bench"
    fi
    cat > "$work/enrichd.toml" <<TOML
[database]
url = "$url"
[daemon]
poll_interval_ms = 20
[connections.shop]
kind = "teststore"
base_url = "http://127.0.0.1:$sp"
token = "\${BENCH_TOKEN}"
[providers.sim]
kind = "openai"
base_url = "http://127.0.0.1:$pp/v1"
[tasks.copy]
prompt = "Product {{ record.id }}: write its description."
output_schema = { type = "object", additionalProperties = false, required = ["description"], properties = { description = { type = "string" } } }
fields = { description = "description" }
[pipelines.catalogue]
connection = "shop"
entity = "product"
task = "copy"
provider = "sim"
model = "gpt-4o-mini"
concurrency = 16
select = { missing = ["description"] }
review = { policy = "none" }
TOML
    start=$(date +%s.%N)
    BENCH_TOKEN=bench ENRICHD_LOG=warn /usr/bin/time -f '%M' -o "$work/rss" "$bin" --config "$work/enrichd.toml" run catalogue > "$work/out" 2>&1 || { cat "$work/out"; exit 1; }
    end=$(date +%s.%N)
    written=$(grep -o 'written [0-9]*' "$work/out" | tail -n1 | awk '{print $2}')
    secs=$(echo "$end - $start" | bc -l)
    printf '| %s | %s | %s | %.1f s | %.0f | %.0f MB |\n' "$backend" "$products" "$written" "$secs" "$(echo "$written / $secs" | bc -l)" "$(echo "$(cat "$work/rss") / 1024" | bc -l)"
    kill "$store_pid" "$provider_pid"; wait "$store_pid" "$provider_pid" 2>/dev/null || true
done
[ "$backend" = postgres ] && psql "$pg/postgres" -qc 'DROP DATABASE IF EXISTS enrichd_bench WITH (FORCE)'
