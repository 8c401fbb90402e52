#!/bin/sh
# The default user comes from the environment, as in the official image; logs go to stdout.
set -eu
umask 077
cat >"$RABBITMQ_CONFIG_FILE" <<CONF
default_user = ${RABBITMQ_DEFAULT_USER:-guest}
default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}
loopback_users = none
log.console = true
log.console.level = warning
CONF
exec rabbitmq-server "$@"
