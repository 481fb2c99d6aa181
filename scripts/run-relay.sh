#!/usr/bin/env bash
# The run command: install what is missing, start RabbitMQ if it is not running, then run every
# hub of config/topology.yaml and send a demonstration document across provinces.
# Extra arguments go to `lienthong up` (e.g. --exit-after-demo, --workers 2).
set -euo pipefail
cd "$(dirname "$0")/.."
export LIENTHONG_TRANSPORT_CA=${LIENTHONG_TRANSPORT_CA:-/var/lib/lienthong/transport-ca}
scripts/bootstrap.sh
scripts/ensure-rabbitmq.sh
if [ -z "${LIENTHONG_MGMT_URL:-}" ]; then set -a; . "${LIENTHONG_ADMIN_FILE:-/var/lib/lienthong/broker-admin.env}"; set +a; fi
exec .venv/bin/lienthong up --demo "$@"
