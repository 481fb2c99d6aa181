#!/usr/bin/env bash
# The run command: install what is missing, start RabbitMQ if it is not running, then run every
# hub of config/topology.yaml and send a demonstration document across provinces.
# Extra arguments go to `lienthong up` (e.g. --exit-after-demo, --workers 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/ensure-rabbitmq.sh
exec .venv/bin/lienthong up --demo "$@"
