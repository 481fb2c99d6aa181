#!/usr/bin/env bash
# Make sure a RabbitMQ answers on $LIENTHONG_AMQP_URL (amqps://, TLS), with the management plugin
# and RabbitMQ's EXTERNAL login (client certificates), and an admin account that is not guest.
#
# A remote broker (not this machine) is only checked: its operator configures it as
# docs/deployment.md says.  On this machine the script installs Debian's rabbitmq-server if
# needed and configures it:
#   - the transport CA ($LIENTHONG_TRANSPORT_CA, default /var/lib/lienthong/transport-ca: ca.pem,
#     ca.key) and a server certificate for localhost, copied to /etc/rabbitmq/lienthong/;
#   - the transport CA's CRL in $LIENTHONG_TRANSPORT_CA/crl/, made or re-signed when due
#     ('lienthong pki broker-crl'); 'lienthong pki revoke' adds broker accounts to it;
#   - a TLS listener on 5671 that verifies client certificates against that CA and its CRL (read
#     at every login) and lets an account log in with its certificate; no plain AMQP listener;
#   - the management API on loopback only; no guest account; 65,536 open files (RabbitMQ's production
#     figure): /etc/security/limits.d/lienthong-rabbitmq.conf lets su's session of the rabbitmq user
#     have them and rabbitmq-env.conf takes them (where root itself may not raise the limit, as in
#     some containers, the node gets root's hard limit, and the script says so);
#   - an admin account "lienthong-admin" (loopback only) whose management URL is written to
#     $LIENTHONG_ADMIN_FILE (default /var/lib/lienthong/broker-admin.env, mode 0600).
# Its settings are /etc/rabbitmq/lienthong/conf.d/10-lienthong.conf and /etc/rabbitmq/lienthong/
# advanced.config (the TLS options: RabbitMQ takes ssl_options from there whole), named in a block of
# /etc/rabbitmq/rabbitmq-env.conf, so that only this node reads them (not the nodes of
# scripts/rabbitmq-cluster.sh, which have their own).  An older version of this script kept a block
# in rabbitmq.conf; the files above override it, and it is left alone.
# The broker is restarted only when that configuration changes, or when the running node has fewer
# open files than it would get.
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${LIENTHONG_AMQP_URL:-amqps://127.0.0.1:5671/}
TRANSPORT_CA=${LIENTHONG_TRANSPORT_CA:-/var/lib/lienthong/transport-ca}
ADMIN_FILE=${LIENTHONG_ADMIN_FILE:-/var/lib/lienthong/broker-admin.env}
BROKER_TLS=/etc/rabbitmq/lienthong
CONF_D=$BROKER_TLS/conf.d/10-lienthong.conf
ADVANCED=$BROKER_TLS/advanced.config
ENV_FILE=/etc/rabbitmq/rabbitmq-env.conf
CRL_DIR=$TRANSPORT_CA/crl
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

# -- the transport CA's CRL: without a current one the broker refuses every certificate ---------------
as_root .venv/bin/python -m broker.cli pki broker-crl "$TRANSPORT_CA" --if-due >/dev/null
as_root chmod go+rx "$TRANSPORT_CA" "$CRL_DIR"  # the broker's own user reads the CRL there (ca.key stays 0600)

# -- the broker's configuration (two files this script owns) -------------------------------------------
CONF_TEXT="# lienthong (scripts/ensure-rabbitmq.sh): TLS only, client-certificate logins, management on loopback
listeners.tcp = none
listeners.ssl.default = 5671
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = EXTERNAL
ssl_cert_login_from = common_name
loopback_users.guest = true
loopback_users.$ADMIN = true
management.tcp.ip = 127.0.0.1
management.tcp.port = 15672"
ADVANCED_TEXT="%% lienthong (scripts/ensure-rabbitmq.sh): the TLS listener's options, the transport CA's CRL included
[{rabbit, [{ssl_options, [{cacertfile, \"$BROKER_TLS/ca.pem\"},
                          {certfile, \"$BROKER_TLS/server.pem\"},
                          {keyfile, \"$BROKER_TLS/server.key\"},
                          {verify, verify_peer},
                          {fail_if_no_peer_cert, false},
                          {versions, ['tlsv1.3', 'tlsv1.2']},
                          {crl_check, peer},
                          {crl_cache, {ssl_crl_hash_dir, {internal, [{dir, \"$CRL_DIR\"}]}}}]}]}]."
own() {  # own FILE TEXT MARKER: write TEXT to FILE if it differs; a FILE not written by this script is not overwritten
  local current
  current=$(as_root cat "$1" 2>/dev/null || true)
  [ "$current" = "$2" ] && return 0
  if [ -n "$current" ] && [ "${current#"$3"}" = "$current" ]; then
    say "$1 exists and was not written by this script: add lienthong's settings to it by hand:"; echo "$2" >&2; exit 1
  fi
  say "writing $1"
  as_root mkdir -p "$(dirname "$1")"
  printf '%s\n' "$2" | as_root tee "$1" >/dev/null
  changed=1
}
own "$CONF_D" "$CONF_TEXT" "# lienthong"
own "$ADVANCED" "$ADVANCED_TEXT" "%% lienthong"
# the node is started through su, whose session limits give it 1,024 open files: too few for a
# broker with thousands of queues and connections (when its file handles run out it accepts no
# connection at all).  su applies pam_limits: the limits file raises the rabbitmq user's hard limit
# (root may), rabbitmq-env.conf then raises the node's soft limit to it.  Where root may not raise
# its own hard limit (no CAP_SYS_RESOURCE: a container), the file would only make su's pam_limits
# fail, so it is not written, and the node gets root's hard limit.
NOFILE=65536
LIMITS_FILE=/etc/security/limits.d/lienthong-rabbitmq.conf
if as_root bash -c "ulimit -Hn $NOFILE" 2>/dev/null; then
  want_files=$NOFILE
  LIMITS_TEXT="# lienthong (scripts/ensure-rabbitmq.sh): RabbitMQ's open-file limit for its node, started through su
rabbitmq soft nofile $NOFILE
rabbitmq hard nofile $NOFILE"
  if [ "$(as_root cat "$LIMITS_FILE" 2>/dev/null || true)" != "$LIMITS_TEXT" ]; then
    say "writing $LIMITS_FILE"
    printf '%s\n' "$LIMITS_TEXT" | as_root tee "$LIMITS_FILE" >/dev/null
  fi
else
  want_files=$(as_root bash -c 'ulimit -Hn')
  as_root rm -f "$LIMITS_FILE"
  say "root may not raise the open-file limit above $want_files here (no CAP_SYS_RESOURCE: a container?): the broker gets $want_files, not RabbitMQ's $NOFILE"
fi
ENV_BLOCK="# lienthong: begin (scripts/ensure-rabbitmq.sh)
CONFIG_FILES=$(dirname "$CONF_D")
ADVANCED_CONFIG_FILE=$ADVANCED
ulimit -n $NOFILE 2>/dev/null || ulimit -n \"\$(ulimit -Hn)\"
# lienthong: end"
current=$(as_root sed -n '/^# lienthong: begin/,/^# lienthong: end/p' "$ENV_FILE" 2>/dev/null || true)
if [ "$current" != "$ENV_BLOCK" ]; then
  say "naming them in $ENV_FILE"
  other=$(as_root sed '/^# lienthong: begin/,/^# lienthong: end/d' "$ENV_FILE" 2>/dev/null || true)
  printf '%s\n%s\n' "$other" "$ENV_BLOCK" | sed '/./,$!d' | as_root tee "$ENV_FILE" >/dev/null
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
node_files() {  # the running node's open-file limit (0: no node)
  local pid
  pid=$(as_root rabbitmqctl -q eval 'list_to_integer(os:getpid()).' 2>/dev/null || echo 0)
  as_root awk '/^Max open files/ {print $4}' "/proc/$pid/limits" 2>/dev/null || echo 0
}
if running && [ "$changed" = 0 ] && [ "$(node_files)" -lt "$want_files" ]; then
  say "the broker has $(node_files) open files, not $want_files: restarting it"
  changed=1
fi
if running && [ "$changed" = 1 ]; then
  say "restarting the broker for its new configuration"
  as_root rabbitmqctl -q stop >/dev/null
fi
if ! running; then
  say "starting the broker"
  as_root rabbitmq-server -detached
  await
fi
for _ in $(seq 60); do answers "$HOST" "$PORT" && break; sleep 1; done
answers "$HOST" "$PORT" || { say "the TLS listener does not answer on $HOST:$PORT"; exit 1; }
if answers 127.0.0.1 5672; then say "plain AMQP still listens on 127.0.0.1:5672 (see rabbitmq-diagnostics listeners)"; exit 1; fi
# the users, read whole (a pipe into grep -q would cut rabbitmqctl off mid-list: a failure under pipefail)
users=$(as_root rabbitmqctl -q list_users) || { say "cannot list the broker's users"; exit 1; }
if grep -q "^guest\b" <<<"$users"; then
  say "deleting the guest account"
  as_root rabbitmqctl -q delete_user guest >/dev/null
fi

# -- the admin account (never guest) ----------------------------------------------------------------
if ! as_root test -s "$ADMIN_FILE" || ! grep -q "^$ADMIN\b" <<<"$users"; then
  say "creating the broker admin account $ADMIN ($ADMIN_FILE)"
  password=$(python3 -c 'import secrets; print(secrets.token_hex(24))')  # hex: a leading '-' would be read by rabbitmqctl as an option
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
