#!/usr/bin/env bash
# A dozen API calls covering every endpoint of the shop (demo.sh runs it while recording).
# Usage: traffic.sh [BASE_URL]   (default http://127.0.0.1:$PORT)
# Each call prints "> METHOD PATH", the response body and its status. Expected 4xx answers
# are part of the traffic; the script fails only if the shop cannot be reached.
set -euo pipefail
BASE=${1:-http://127.0.0.1:${PORT:-8080}}
JSON=(-H 'Content-Type: application/json')

call() {
  local method=$1 path=$2
  shift 2
  printf '> %s %s\n' "$method" "$path"
  curl -sS -X "$method" "$BASE$path" -H 'Accept: application/json' -w '  [%{http_code}]\n' "$@"
}

call GET  /health
call GET  /products
call GET  /products/1                     # Postgres, then cached in Redis
call GET  /products/1                     # from the Redis cache
call POST /products "${JSON[@]}" -d '{"sku": "HS-1", "name": "Headset", "price_cents": 5999}'
call POST /products "${JSON[@]}" -d '{"sku": "bad"}'                # 400
call GET  /products/1/price               # Postgres + the pricing service
call GET  /products/3/price
call POST /orders "${JSON[@]}" -d '{"product_id": 1, "quantity": 2}'  # Postgres, Kafka, Redis
call POST /orders "${JSON[@]}" -d '{"product_id": 4, "quantity": 1}'
call GET  /orders/1
call GET  /orders/999                     # 404
call GET  /stats
call GET  /now                            # time and a UUID: noise
