#!/usr/bin/env bash
# A RabbitMQ node of its own on this machine, in no cluster: another operator's broker beside the
# default node (which it leaves alone), for hubs on independent brokers.
#
#   scripts/rabbitmq-node.sh start NAME    # node NAME@localhost, its own ports (printed), data kept
#   scripts/rabbitmq-node.sh stop NAME     # shut it down; 'start' brings it back with what it held
#   scripts/rabbitmq-node.sh urls NAME     # LIENTHONG_NODE_AMQP=amqps://... LIENTHONG_NODE_MGMT=http://admin:...@...
#   scripts/rabbitmq-node.sh kill NAME     # end its process at once, as a crash would
#   scripts/rabbitmq-node.sh status NAME | delete NAME (end it and remove its data and account)
#
# NAME: lower-case letters, digits and '-'.  Each node has a slot n (1-20, kept with its data) and
# listens with TLS only on 5700+n (AMQP) and on loopback 15700+n (management); its Erlang
# distribution port is 25700+n.  Like the default node (scripts/ensure-rabbitmq.sh, which must have
# run: the transport CA and its CRL are shared, as one government transport CA would be), it checks
# client certificates against that CA and its CRL, lets accounts log in with them (EXTERNAL), has no
# guest and no plain listener; it has a server certificate of its own from that CA, its own admin
# account NAME-admin (loopback only), whose management URL is in $DIR/NAME.admin.env (0600), and the
# open-file limit of the default node.  Data, logs and configuration: $DIR/NAME
# (DIR=$LIENTHONG_NODES_DIR, default /var/lib/lienthong/nodes).  Needs root.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${LIENTHONG_NODES_DIR:-/var/lib/lienthong/nodes}
TRANSPORT_CA=${LIENTHONG_TRANSPORT_CA:-/var/lib/lienthong/transport-ca}
say() { echo "rabbitmq-node: $*" >&2; }
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
answers() { timeout 2 bash -c "</dev/tcp/127.0.0.1/$1" 2>/dev/null; }

CMD=${1:-}
NAME=${2:-}
[ -n "$CMD" ] && [ -n "$NAME" ] || usage
[[ "$NAME" =~ ^[a-z][a-z0-9-]{0,30}$ ]] || { say "NAME: lower-case letters, digits and '-', not '$NAME'"; exit 2; }
case "$NAME" in rabbit|lt1|lt2|lt3) say "$NAME is another node's name (default node or cluster)"; exit 2 ;; esac
D=$DIR/$NAME
NODE=$NAME@localhost
ADMIN=$NAME-admin
ADMIN_FILE=$DIR/$NAME.admin.env
ctl() { rabbitmqctl -q -n "$NODE" "$@"; }

slot() {  # the node's slot: kept with its data, else the first one no other node holds
  if [ -f "$D/slot" ]; then cat "$D/slot"; return; fi
  local n
  for n in $(seq 20); do
    grep -qx "$n" "$DIR"/*/slot 2>/dev/null && continue
    answers $((5700 + n)) || answers $((15700 + n)) || { echo "$n"; return; }
  done
  say "no free slot (20 nodes?)"; exit 1
}

admin_account() {  # no guest; NAME-admin and its file, made again if either is missing
  ctl delete_user guest >/dev/null 2>&1 || true
  local users  # read whole: a pipe into grep -q would cut rabbitmqctl off (a failure under pipefail)
  users=$(ctl list_users)
  if [ ! -s "$ADMIN_FILE" ] || ! grep -q "^$ADMIN\b" <<<"$users"; then
    say "creating its admin account $ADMIN ($ADMIN_FILE)"
    local password
    password=$(python3 -c 'import secrets; print(secrets.token_hex(24))')  # hex: a leading '-' would be read by rabbitmqctl as an option
    ctl delete_user "$ADMIN" >/dev/null 2>&1 || true
    ctl add_user "$ADMIN" "$password" >/dev/null
    ctl set_user_tags "$ADMIN" administrator >/dev/null
    ctl set_permissions -p / "$ADMIN" '.*' '.*' '.*' >/dev/null
    (umask 077; printf 'LIENTHONG_MGMT_URL=http://%s:%s@127.0.0.1:%s\n' "$ADMIN" "$password" "$http" > "$ADMIN_FILE.tmp")
    mv "$ADMIN_FILE.tmp" "$ADMIN_FILE"
  fi
}

start() {
  command -v rabbitmq-server >/dev/null || { say "install Debian's rabbitmq-server first (scripts/ensure-rabbitmq.sh)"; exit 1; }
  [ -f "$TRANSPORT_CA/ca.key" ] && [ -d "$TRANSPORT_CA/crl" ] ||
    { say "no transport CA with a CRL in $TRANSPORT_CA: run scripts/ensure-rabbitmq.sh first"; exit 1; }
  mkdir -p "$D/mnesia" "$D/log" "$D/tls"
  local n amqps http
  n=$(slot); echo "$n" > "$D/slot"
  amqps=$((5700 + n)); http=$((15700 + n))
  if answers "$amqps" && ctl status >/dev/null 2>&1; then
    admin_account  # a start cut short after the node came up left it without one
    say "$NODE already running (amqps $amqps, http $http)"; return 0
  fi
  # its own server certificate from the transport CA (made again when missing or near its end)
  if ! openssl x509 -checkend 604800 -noout -in "$D/tls/server.pem" >/dev/null 2>&1 ||
     ! openssl verify -CAfile "$TRANSPORT_CA/ca.pem" "$D/tls/server.pem" >/dev/null 2>&1; then
    "$ROOT/.venv/bin/python" - "$TRANSPORT_CA" "$D/tls" <<'PY'
import sys
from pathlib import Path
from broker.relay import devpki
ca, out = Path(sys.argv[1]), Path(sys.argv[2])
devpki.write_pair((out / "server.key", out / "server.pem"),
                  devpki.issue_server(devpki.load_ca(ca / "ca.pem", ca / "ca.key"), ["localhost", "127.0.0.1"]))
PY
  fi
  cp "$TRANSPORT_CA/ca.pem" "$D/tls/ca.pem"
  cat > "$D/rabbitmq.conf" <<EOF
# scripts/rabbitmq-node.sh: TLS only, client-certificate logins, management on loopback, no guest
listeners.tcp = none
listeners.ssl.default = $amqps
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = EXTERNAL
ssl_cert_login_from = common_name
loopback_users.guest = true
loopback_users.$ADMIN = true
management.tcp.ip = 127.0.0.1
management.tcp.port = $http
EOF
  cat > "$D/advanced.config" <<EOF
[{rabbit, [{ssl_options, [{cacertfile, "$D/tls/ca.pem"},
                          {certfile, "$D/tls/server.pem"},
                          {keyfile, "$D/tls/server.key"},
                          {verify, verify_peer},
                          {fail_if_no_peer_cert, false},
                          {versions, ['tlsv1.3', 'tlsv1.2']},
                          {crl_check, peer},
                          {crl_cache, {ssl_crl_hash_dir, {internal, [{dir, "$TRANSPORT_CA/crl"}]}}}]}]}].
EOF
  echo "[rabbitmq_management,rabbitmq_auth_mechanism_ssl]." > "$D/enabled_plugins"
  # not the default node's rabbitmq-env.conf (it names that node); the same open-file limit, and
  # Erlang distribution (rabbitmqctl's way in) on loopback only
  cat > "$D/env.conf" <<'EOF'
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
  chown -R rabbitmq:rabbitmq "$D"
  chmod 0700 "$D/tls"
  say "starting $NODE (amqps $amqps, http $http)"
  su rabbitmq -s /bin/sh -c "cd /var/lib/rabbitmq && env HOME=/var/lib/rabbitmq \
    RABBITMQ_NODENAME=$NODE RABBITMQ_DIST_PORT=$((25700 + n)) RABBITMQ_CONF_ENV_FILE=$D/env.conf \
    RABBITMQ_CONFIG_FILE=$D/rabbitmq.conf RABBITMQ_CONFIG_FILES=$D/none.d \
    RABBITMQ_ADVANCED_CONFIG_FILE=$D/advanced.config RABBITMQ_ENABLED_PLUGINS_FILE=$D/enabled_plugins \
    RABBITMQ_MNESIA_BASE=$D/mnesia RABBITMQ_LOG_BASE=$D/log RABBITMQ_PID_FILE=$D/pid \
    ERL_EPMD_ADDRESS=127.0.0.1 /usr/lib/rabbitmq/bin/rabbitmq-server -detached"
  local ok=0
  for _ in $(seq 120); do
    if ctl await_startup --timeout 5 >/dev/null 2>&1; then ok=1; break; fi
    sleep 1
  done
  [ "$ok" = 1 ] || { say "$NODE did not start (see $D/log)"; exit 1; }
  admin_account
  for _ in $(seq 60); do answers "$http" && answers "$amqps" && break; sleep 1; done
  answers "$amqps" || { say "$NODE's TLS listener does not answer on $amqps"; exit 1; }
  say "$NODE running: amqps://127.0.0.1:$amqps/, management on 127.0.0.1:$http"
}

kill_node() {
  local pid
  pid=$(cat "$D/pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
  for _ in $(seq 30); do ctl status >/dev/null 2>&1 || return 0; sleep 1; done
}

case "$CMD" in
  start) start ;;
  stop)
    ctl shutdown >/dev/null 2>&1 || true
    say "$NODE stopped" ;;
  kill)
    kill_node
    say "$NODE killed" ;;
  status)
    if [ -f "$D/slot" ] && ctl status >/dev/null 2>&1; then
      echo "$NODE up (amqps $((5700 + $(cat "$D/slot"))), http $((15700 + $(cat "$D/slot"))))"
    else echo "$NODE down"; exit 1; fi ;;
  urls)
    [ -f "$D/slot" ] && [ -s "$ADMIN_FILE" ] || { say "$NODE was never started"; exit 1; }
    printf 'LIENTHONG_NODE_AMQP=amqps://127.0.0.1:%s/\n' $((5700 + $(cat "$D/slot")))
    printf 'LIENTHONG_NODE_MGMT=%s\n' "$(sed -n 's/^LIENTHONG_MGMT_URL=//p' "$ADMIN_FILE")" ;;
  delete)
    # a node holding thousands of quorum queues may take many minutes to stop gracefully: its data
    # goes anyway, so it has a minute, then its process is ended
    timeout 60 rabbitmqctl -q -n "$NODE" shutdown >/dev/null 2>&1 || true
    kill_node
    rm -rf "$D" "$ADMIN_FILE"
    say "$NODE deleted" ;;
  *) usage ;;
esac
