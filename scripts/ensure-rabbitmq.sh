#!/usr/bin/env bash
# Make sure a RabbitMQ answers on $LIENTHONG_AMQP_URL (amqps://, TLS), with the management plugin
# and RabbitMQ's EXTERNAL login (client certificates), and an admin account that is not guest.
#
# A remote broker (not this machine) is only checked: its operator configures it as
# docs/deployment.md says.  On this machine the script installs Debian's rabbitmq-server if
# needed and configures it:
#   - the transport CA ($LIENTHONG_TRANSPORT_CA, default /var/lib/lienthong/transport-ca: ca.pem,
#     ca.key) and a server certificate for localhost, copied to /etc/rabbitmq/lienthong/;
#   - a TLS listener on 5671 that verifies client certificates against that CA and lets an account
#     log in with its certificate; hub, link and agency accounts have no password, so none can
#     log in over plain AMQP (the plain listener stays on loopback for the machine's other users);
#   - the management API on loopback only;
#   - an admin account "lienthong-admin" (loopback only) whose management URL is written to
#     $LIENTHONG_ADMIN_FILE (default /var/lib/lienthong/broker-admin.env, mode 0600).
# The broker is restarted only when that configuration changes.
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${LIENTHONG_AMQP_URL:-amqps://127.0.0.1:5671/}
TRANSPORT_CA=${LIENTHONG_TRANSPORT_CA:-/var/lib/lienthong/transport-ca}
ADMIN_FILE=${LIENTHONG_ADMIN_FILE:-/var/lib/lienthong/broker-admin.env}
BROKER_TLS=/etc/rabbitmq/lienthong
CONF=/etc/rabbitmq/rabbitmq.conf
ADMIN=lienthong-admin
say() { echo "ensure-rabbitmq: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

read -r HOST PORT < <(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or 5671)' "$URL")
answers() { timeout 3 bash -c "</dev/tcp/$1/$2" 2>/dev/null; }
case "$HOST" in
  127.*|localhost|::1) ;;
  *) answers "$HOST" "$PORT" || { say "nothing answers on $HOST:$PORT and it is not this machine"; exit 1; }
     say "broker answers on $HOST:$PORT (remote: configured by its operator)"; exit 0 ;;
esac

if ! command -v rabbitmq-server >/dev/null; then
  say "installing Debian's rabbitmq-server"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi

# -- TLS material: the transport CA and the broker's server certificate ----------------------------
as_root mkdir -p "$TRANSPORT_CA" "$BROKER_TLS" "$(dirname "$ADMIN_FILE")"
if ! as_root test -f "$TRANSPORT_CA/server.pem" \
   || ! as_root openssl x509 -checkend 604800 -noout -in "$TRANSPORT_CA/server.pem" >/dev/null \
   || ! as_root openssl verify -CAfile "$TRANSPORT_CA/ca.pem" "$TRANSPORT_CA/server.pem" >/dev/null 2>&1; then
  say "making the broker's TLS certificate (transport CA in $TRANSPORT_CA)"
  as_root .venv/bin/python -m broker.cli pki broker-tls "$TRANSPORT_CA" --host localhost --host 127.0.0.1 >/dev/null
fi
changed=0
for f in ca.pem server.pem server.key; do
  if ! as_root cmp -s "$TRANSPORT_CA/$f" "$BROKER_TLS/$f"; then
    as_root install -o rabbitmq -g rabbitmq -m 0600 "$TRANSPORT_CA/$f" "$BROKER_TLS/$f"
    changed=1
  fi
done

# -- the broker's configuration (a block of rabbitmq.conf that this script owns) --------------------
BLOCK="# lienthong: begin (scripts/ensure-rabbitmq.sh)
listeners.tcp.local = 127.0.0.1:5672
listeners.ssl.default = 5671
ssl_options.cacertfile = $BROKER_TLS/ca.pem
ssl_options.certfile = $BROKER_TLS/server.pem
ssl_options.keyfile = $BROKER_TLS/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
ssl_options.versions.1 = tlsv1.3
ssl_options.versions.2 = tlsv1.2
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = AMQPLAIN
auth_mechanisms.3 = EXTERNAL
ssl_cert_login_from = common_name
loopback_users.guest = true
loopback_users.$ADMIN = true
management.tcp.ip = 127.0.0.1
management.tcp.port = 15672
# lienthong: end"
current=$(as_root sed -n '/^# lienthong: begin/,/^# lienthong: end/p' "$CONF" 2>/dev/null || true)
if [ "$current" != "$BLOCK" ]; then
  say "writing lienthong's block of $CONF"
  other=$(as_root sed '/^# lienthong: begin/,/^# lienthong: end/d' "$CONF" 2>/dev/null \
          | grep -v -E '^listeners\.tcp\.(local|default) *=' || true)
  printf '%s\n%s\n' "$other" "$BLOCK" | sed '/./,$!d' | as_root tee "$CONF" >/dev/null
  changed=1
fi
for plugin in rabbitmq_management rabbitmq_auth_mechanism_ssl; do
  if ! as_root grep -q "$plugin" /etc/rabbitmq/enabled_plugins 2>/dev/null; then
    as_root rabbitmq-plugins --offline enable "$plugin" >/dev/null
    changed=1
  fi
done

running() { as_root rabbitmqctl -q status >/dev/null 2>&1; }
await() {
  for _ in $(seq 120); do
    as_root rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1 && return 0
    sleep 1
  done
  say "RabbitMQ did not start"; exit 1
}
if running && [ "$changed" = 1 ]; then
  say "restarting the broker for its new TLS configuration"
  as_root rabbitmqctl -q stop >/dev/null
fi
if ! running; then
  say "starting the broker"
  as_root rabbitmq-server -detached
  await
fi
for _ in $(seq 60); do answers "$HOST" "$PORT" && break; sleep 1; done
answers "$HOST" "$PORT" || { say "the TLS listener does not answer on $HOST:$PORT"; exit 1; }

# -- the admin account (never guest) ----------------------------------------------------------------
if ! as_root test -s "$ADMIN_FILE" || ! as_root rabbitmqctl -q list_users 2>/dev/null | grep -q "^$ADMIN\b"; then
  say "creating the broker admin account $ADMIN ($ADMIN_FILE)"
  password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
  as_root rabbitmqctl -q delete_user "$ADMIN" >/dev/null 2>&1 || true
  as_root rabbitmqctl -q add_user "$ADMIN" "$password" >/dev/null
  as_root rabbitmqctl -q set_user_tags "$ADMIN" administrator >/dev/null
  as_root rabbitmqctl -q set_permissions -p / "$ADMIN" '.*' '.*' '.*' >/dev/null
  as_root bash -c "umask 077; printf 'LIENTHONG_MGMT_URL=http://%s:%s@127.0.0.1:15672\n' '$ADMIN' '$password' > '$ADMIN_FILE.tmp' && mv '$ADMIN_FILE.tmp' '$ADMIN_FILE'"
fi

say "waiting for the management API"
MGMT=${LIENTHONG_MGMT_URL:-$(as_root sed -n 's/^LIENTHONG_MGMT_URL=//p' "$ADMIN_FILE")}
python3 - "$MGMT" <<'PY'
import base64, sys, time, urllib.parse, urllib.request
p = urllib.parse.urlsplit(sys.argv[1])
auth = base64.b64encode(f"{urllib.parse.unquote(p.username or '')}:{urllib.parse.unquote(p.password or '')}".encode()).decode()
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
say "ready (TLS on $HOST:$PORT)"
