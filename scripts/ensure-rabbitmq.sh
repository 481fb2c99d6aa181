#!/usr/bin/env bash
# Make sure a RabbitMQ with the management plugin answers on $LIENTHONG_AMQP_URL.
# Keeps a running broker; on this machine installs (Debian) and starts one otherwise.
set -euo pipefail
URL=${LIENTHONG_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
MGMT=${LIENTHONG_MGMT_URL:-http://guest:guest@127.0.0.1:15672}
say() { echo "ensure-rabbitmq: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

read -r HOST PORT < <(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or 5672)' "$URL")
answers() { timeout 3 bash -c "</dev/tcp/$1/$2" 2>/dev/null; }
local_host() { case "$HOST" in 127.*|localhost|::1) return 0;; *) return 1;; esac; }

if answers "$HOST" "$PORT"; then
  say "broker answers on $HOST:$PORT"
  if local_host && ! answers 127.0.0.1 15672; then
    say "enabling the management plugin"
    as_root rabbitmq-plugins enable rabbitmq_management >/dev/null
  fi
else
  local_host || { say "nothing answers on $HOST:$PORT and it is not this machine"; exit 1; }
  if ! command -v rabbitmq-server >/dev/null; then
    say "installing Debian's rabbitmq-server"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  say "enabling the management plugin (offline) and starting the broker"
  as_root rabbitmq-plugins --offline enable rabbitmq_management >/dev/null
  as_root rabbitmq-server -detached
  # the node takes a few seconds to register; await_startup fails until it has
  for _ in $(seq 120); do
    as_root rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1 && break
    sleep 1
  done
  answers "$HOST" "$PORT" || { say "RabbitMQ did not start"; exit 1; }
fi

say "waiting for the management API"
python3 - "$MGMT" <<'PY'
import base64, sys, time, urllib.parse, urllib.request
p = urllib.parse.urlsplit(sys.argv[1])
auth = base64.b64encode(f"{p.username or 'guest'}:{p.password or 'guest'}".encode()).decode()
url = f"{p.scheme}://{p.hostname}:{p.port or 15672}/api/overview"
deadline = time.time() + 90
while True:
    try:
        urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Basic " + auth}), timeout=3)
        break
    except Exception as exc:
        if time.time() > deadline:
            sys.exit(f"ensure-rabbitmq: management API at {url} does not answer: {exc}")
        time.sleep(1)
PY
say "ready"
