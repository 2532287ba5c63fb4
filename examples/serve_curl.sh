#!/usr/bin/env bash
# Serve a model and call its JSON API with curl.
#   examples/serve_curl.sh MODEL_DIR PHOTO [PORT]
set -euo pipefail
model=$1 photo=$2 port=${3:-8000}
multipill serve --model "$model" --port "$port" --api-key example-key &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do   # up to two minutes for the model to load
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  kill -0 $server 2>/dev/null || { echo "the server stopped before answering" >&2; exit 1; }
  sleep 0.5
done

curl -s "http://127.0.0.1:$port/health"; echo
curl -s -H "X-API-Key: example-key" "http://127.0.0.1:$port/classes"; echo
curl -s -H "X-API-Key: example-key" -F "file=@$photo" -F top_k=3 "http://127.0.0.1:$port/predict"; echo
curl -s -o /dev/null -w "without the key: %{http_code}\n" -F "file=@$photo" "http://127.0.0.1:$port/predict"
