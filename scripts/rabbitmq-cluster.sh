#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this one machine, beside the default node (which it leaves alone).
#
#   scripts/rabbitmq-cluster.sh start            # nodes lt1..lt3@localhost, AMQP/TLS 5691-5693, HTTP 15681-15683
#   scripts/rabbitmq-cluster.sh stop-node N      # shut node N down (as a crash would take it away)
#   scripts/rabbitmq-cluster.sh start-node N     # start it again; it rejoins the cluster
#   scripts/rabbitmq-cluster.sh status | urls | stop
#
# Each node has its own name, ports, data and log directories under $LIENTHONG_CLUSTER_DIR
# (default /tmp/lienthong-cluster) and runs as the rabbitmq user with the default node's Erlang
# cookie, so `rabbitmqctl -n ltN@localhost` works.  Like the default node (scripts/ensure-rabbitmq.sh,
# which must have run: its TLS material, the transport CA's CRL and the admin account are reused),
# each node listens with TLS only (5691-5693), checks client certificates against that CRL, lets
# accounts log in with them, has no guest and keeps the admin to loopback.  Needs root.
set -euo pipefail
DIR=${LIENTHONG_CLUSTER_DIR:-/tmp/lienthong-cluster}
NODES=(1 2 3)
say() { echo "rabbitmq-cluster: $*" >&2; }
ctl() { rabbitmqctl -q -n "lt$1@localhost" "${@:2}"; }
CRL_DIR=${LIENTHONG_TRANSPORT_CA:-/var/lib/lienthong/transport-ca}/crl
tls_port() { echo $((5690 + $1)); }
ADMIN_FILE=${LIENTHONG_ADMIN_FILE:-/var/lib/lienthong/broker-admin.env}
admin_url() { sed -n 's/^LIENTHONG_MGMT_URL=//p' "$ADMIN_FILE"; }
admin_user() { admin_url | python3 -c 'import sys,urllib.parse as u; print(u.unquote(u.urlsplit(sys.stdin.read().strip()).username))'; }
http_port() { echo $((15680 + $1)); }
answers() { timeout 2 bash -c "</dev/tcp/127.0.0.1/$1" 2>/dev/null; }

start_node() {
  local n=$1 d="$DIR/lt$1"
  if answers "$(tls_port "$n")"; then return 0; fi
  mkdir -p "$d/mnesia" "$d/log"
  cat > "$d/rabbitmq.conf" <<EOF
listeners.tcp = none
listeners.ssl.default = $(tls_port "$n")
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = EXTERNAL
ssl_cert_login_from = common_name
loopback_users.guest = true
loopback_users.$(admin_user) = true
management.tcp.ip = 127.0.0.1
management.tcp.port = $(http_port "$n")
EOF
  cat > "$d/advanced.config" <<EOF
[{rabbit, [{ssl_options, [{cacertfile, "/etc/rabbitmq/lienthong/ca.pem"},
                          {certfile, "/etc/rabbitmq/lienthong/server.pem"},
                          {keyfile, "/etc/rabbitmq/lienthong/server.key"},
                          {verify, verify_peer},
                          {fail_if_no_peer_cert, false},
                          {crl_check, peer},
                          {crl_cache, {ssl_crl_hash_dir, {internal, [{dir, "$CRL_DIR"}]}}}]}]}].
EOF
  echo "[rabbitmq_management,rabbitmq_auth_mechanism_ssl]." > "$d/enabled_plugins"
  : > "$d/env.conf"  # not the default node's rabbitmq-env.conf (it names that node)
  chown -R rabbitmq:rabbitmq "$d"
  su rabbitmq -s /bin/sh -c "cd /var/lib/rabbitmq && env HOME=/var/lib/rabbitmq \
    RABBITMQ_NODENAME=lt$n@localhost \
    RABBITMQ_DIST_PORT=$((25680 + n)) RABBITMQ_CONF_ENV_FILE=$d/env.conf \
    RABBITMQ_CONFIG_FILE=$d/rabbitmq.conf RABBITMQ_CONFIG_FILES=$d/none.d \
    RABBITMQ_ADVANCED_CONFIG_FILE=$d/advanced.config RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins \
    RABBITMQ_MNESIA_BASE=$d/mnesia RABBITMQ_LOG_BASE=$d/log RABBITMQ_PID_FILE=$d/pid \
    ERL_EPMD_ADDRESS=127.0.0.1 /usr/lib/rabbitmq/bin/rabbitmq-server -detached"
  for _ in $(seq 120); do
    ctl "$n" await_startup --timeout 5 >/dev/null 2>&1 && return 0
    sleep 1
  done
  say "node lt$n did not start (see $d/log)"
  return 1
}

running_nodes() {
  ctl "${1:-1}" cluster_status --formatter json 2>/dev/null |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("running_nodes", [])))' 2>/dev/null || echo 0
}

wait_cluster() {
  for _ in $(seq 90); do
    for n in "${NODES[@]}"; do
      [ "$(running_nodes "$n")" = 3 ] && return 0
    done
    sleep 1
  done
  say "the cluster did not reach 3 running nodes"
  return 1
}

case "${1:-}" in
  start)
    command -v rabbitmq-server >/dev/null || { say "install Debian's rabbitmq-server first"; exit 1; }
    if [ "$(running_nodes 1)" = 3 ] && answers "$(tls_port 1)"; then say "cluster already running"; exit 0; fi
    # a fresh cluster each time: nodes restarted from old data would each wait for the last
    # node to have stopped (minutes); this cluster is for trying and testing, not for keeping data
    for n in "${NODES[@]}"; do ctl "$n" shutdown >/dev/null 2>&1 || true; done
    rm -rf "$DIR"
    # the three nodes boot side by side (each takes seconds of its own), then join one by one
    pids=()
    for n in "${NODES[@]}"; do start_node "$n" & pids+=($!); done
    for pid in "${pids[@]}"; do wait "$pid"; done
    for n in 2 3; do
      if ! ctl "$n" cluster_status 2>/dev/null | grep -q "lt1@localhost"; then
        ctl "$n" stop_app
        ctl "$n" reset
        ctl "$n" join_cluster lt1@localhost
        ctl "$n" start_app
      fi
    done
    wait_cluster
    # the default node's admin account (users are cluster-wide: once is enough)
    read -r admin password < <(admin_url | python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.stdin.read().strip()); print(u.unquote(p.username), u.unquote(p.password))')
    ctl 1 add_user "$admin" "$password" >/dev/null 2>&1 || ctl 1 change_password "$admin" "$password" >/dev/null
    ctl 1 set_user_tags "$admin" administrator >/dev/null
    ctl 1 delete_user guest >/dev/null 2>&1 || true
    say "3 nodes running: lt1..lt3@localhost on AMQP ports 5691-5693 (TLS)"
    ;;
  stop-node)
    n=${2:?node number}
    ctl "$n" shutdown >/dev/null 2>&1 || true
    say "node lt$n stopped"
    ;;
  start-node)
    n=${2:?node number}
    start_node "$n"
    wait_cluster
    say "node lt$n back in the cluster"
    ;;
  stop)
    for n in "${NODES[@]}"; do (ctl "$n" shutdown >/dev/null 2>&1 || true) & done
    wait
    say "stopped"
    ;;
  status)
    for n in "${NODES[@]}"; do
      if answers "$(tls_port "$n")"; then echo "lt$n@localhost up (amqps $(tls_port "$n"), http $(http_port "$n"))"
      else echo "lt$n@localhost down"; fi
    done
    echo "running nodes seen by lt1: $(running_nodes 1)"
    ;;
  urls)
    printf 'LIENTHONG_CLUSTER_AMQP="%s"\n' "$(for n in "${NODES[@]}"; do
      printf 'amqps://127.0.0.1:%s/ ' "$(tls_port "$n")"; done | sed 's/ $//')"
    printf 'LIENTHONG_CLUSTER_MGMT="%s"\n' "$(admin_url | sed "s/:15672/:$(http_port 3)/")"
    ;;
  *)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
