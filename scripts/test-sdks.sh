#!/usr/bin/env bash
# Drives `kiln serve` with the official `cloudflare` and `openai` npm SDKs (pinned in
# tests/sdk/package-lock.json), unchanged but for their base URL. The server runs on a free
# port with the tiny test Llama (tests/fixtures/llama/tiny-llama3) installed as the default
# text-generation model; other catalog names (the llama the OpenAI checks ask for) are served
# by it as a stand-in. Skips, exit 0, when node or npm is missing. Needs the npm registry the
# first time (npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "test-sdks: SKIPPED: $tool is not installed (the SDK tests need Node.js 20+ and npm)"
        exit 0
    fi
done

echo "== installing the SDKs (npm ci in tests/sdk)"
if ! (cd tests/sdk && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
    echo "test-sdks: SKIPPED: npm ci failed (is the npm registry reachable?); the SDK tests did not run"
    exit 0
fi
echo "   cloudflare $(node -p 'require("./tests/sdk/node_modules/cloudflare/package.json").version')," \
    "openai $(node -p 'require("./tests/sdk/node_modules/openai/package.json").version')," \
    "node $(node --version)"

echo "== building kiln"
# The test profile: `cargo test --workspace` has just built this binary (for the CLI tests), so
# this is a no-op there instead of a second, unoptimised build of every workspace crate.
cargo build --quiet --profile test --bin kiln

work=$(mktemp -d)
server_pid=
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Only the models.toml model is installed: an empty KILN_HOME and HF cache.
mkdir -p "$work/home" "$work/hub"
printf '[models."%s"]\npath = "%s"\n' \
    "@hf/huggingfacetb/smollm2-135m-instruct" "$root/tests/fixtures/llama/tiny-llama3" \
    >"$work/models.toml"
token=sdk-test-token
log=$work/server.log

echo "== starting kiln serve on a free port"
KILN_HOME=$work/home HF_HUB_CACHE=$work/hub \
    target/debug/kiln serve --host 127.0.0.1 --port 0 --models "$work/models.toml" \
    --api-token "$token" --kv-cache-memory $((64 << 20)) >"$log" 2>&1 &
server_pid=$!

base=
deadline=$((SECONDS + 60))
while ((SECONDS < deadline)); do
    base=$(sed -n 's/^kiln: listening on \(http:\/\/[^ ]*\).*/\1/p' "$log" | head -n 1)
    [[ -n "$base" ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "test-sdks: FAILED: kiln serve exited before listening; its log:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ -z "$base" ]]; then
    echo "test-sdks: FAILED: kiln serve did not report its address within 60 s; its log:" >&2
    cat "$log" >&2
    exit 1
fi
echo "   $base"

echo "== SDK checks (tests/sdk/sdk_test.mjs)"
if ! KILN_BASE=$base KILN_TOKEN=$token node tests/sdk/sdk_test.mjs; then
    echo "test-sdks: FAILED; the server's log:" >&2
    cat "$log" >&2
    exit 1
fi

echo "== stopping kiln serve (SIGTERM)"
kill -TERM "$server_pid"
deadline=$((SECONDS + 30))
while ((SECONDS < deadline)); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$server_pid" 2>/dev/null; then
    echo "test-sdks: FAILED: kiln serve did not exit within 30 s of SIGTERM; its log:" >&2
    cat "$log" >&2
    exit 1
fi
status=0
wait "$server_pid" || status=$?
server_pid=
if [[ $status -ne 0 ]]; then
    echo "test-sdks: FAILED: kiln serve exited with status $status after SIGTERM; its log:" >&2
    cat "$log" >&2
    exit 1
fi
if ! grep -q '^kiln: stopped' "$log"; then
    echo "test-sdks: FAILED: kiln serve exited without 'kiln: stopped'; its log:" >&2
    cat "$log" >&2
    exit 1
fi
echo "test-sdks: OK"
