#!/bin/sh
# Runs in the Mosquitto container (compose.yaml's command; this folder is mounted read-only
# at /pilotline-mqtt): copies the site's accounts and ACL (./auth) to /mosquitto/auth, owned
# by the broker's user with mode 0600, then starts Mosquitto. Copied rather than used in place
# because the files on the host are the operator's, mode 0600 in a 0700 folder, and
# Mosquitto (which drops root to its own user before reading them) could not read those.
#
#   docker compose exec mosquitto sh /pilotline-mqtt/start.sh reload
#
# copies them again and has the running broker reload them (SIGHUP: no client disconnected).
set -eu
site=/pilotline-mqtt
if [ ! -f "$site/auth/acl" ]; then
  echo "pilotline: no accounts in deploy/mosquitto/auth: run deploy/mosquitto/setup.sh first" >&2
  exit 1
fi
mkdir -p /mosquitto/auth
for f in gateway.passwd machines.passwd acl; do
  cp "$site/auth/$f" "/mosquitto/auth/$f.new"
  chown mosquitto:mosquitto "/mosquitto/auth/$f.new"
  chmod 0600 "/mosquitto/auth/$f.new"
  mv "/mosquitto/auth/$f.new" "/mosquitto/auth/$f"
done
chown mosquitto:mosquitto /mosquitto/auth
chmod 0700 /mosquitto/auth
if [ "${1:-}" = reload ]; then
  kill -HUP 1   # Mosquitto is the container's process 1 (exec below)
  echo "pilotline: Mosquitto reloads its accounts and ACL" >&2
  exit 0
fi
exec mosquitto -c "$site/mosquitto.conf"
