#!/usr/bin/env bash
# Gives a machine's publisher its account on the stack's Mosquitto: it may publish on its
# own topics, and the gateway may read them (docs/operator-guide.md, "Adding a machine's
# credentials").
#
#   deploy/mosquitto/add-machine.sh MACHINE TOPIC [TOPIC...]
#
# MACHINE is the account's name (the machine's id: lowercase letters, digits, '.', '_', '-'),
# TOPIC the machine's mqtt.topic in the site configuration. A new account gets a random
# password, printed once on stdout for the publisher's settings (MACHINE_PASSWORD=... gives
# one instead); an existing account keeps its password and gets the new topics. A topic
# another account publishes on is refused.
#
# Then have the running broker reload its accounts (no client is disconnected):
#   docker compose exec mosquitto sh /pilotline-mqtt/start.sh reload
#
# AUTH_DIR chooses another folder than deploy/mosquitto/auth; GATEWAY_USER another gateway
# account than "gateway".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=deploy/mosquitto/passwd.sh
. "$here/passwd.sh"
gateway="${GATEWAY_USER:-gateway}"

if [ $# -lt 2 ]; then
  echo "usage: $0 MACHINE TOPIC [TOPIC...]" >&2
  exit 2
fi
machine="$1"
shift
check_account "$machine"
if [ "$machine" = "$gateway" ]; then
  echo "add-machine: $machine is the gateway's account" >&2
  exit 2
fi
if [ ! -f "$auth/acl" ] || [ ! -f "$auth/machines.passwd" ]; then
  echo "add-machine: no $auth/acl: run $here/setup.sh first" >&2
  exit 1
fi
for topic in "$@"; do
  # One exact topic: a wildcard would let the machine write others' topics; whitespace and
  # a leading $ (the broker's own topics) have no place in an ACL line either.
  if [ -z "$topic" ] || [[ "$topic" == *[+#[:space:][:cntrl:]]* ]] || [[ "$topic" == \$* ]]; then
    echo "add-machine: $topic: a topic is one exact topic, without +, #, spaces or a leading \$" >&2
    exit 2
  fi
  owner="$(awk -v t="$topic" '$1 == "user" { u = $2 } $1 == "topic" && $2 == "write" && $3 == t { print u; exit }' "$auth/acl")"
  if [ -n "$owner" ] && [ "$owner" != "$machine" ]; then
    echo "add-machine: $topic is already $owner's topic" >&2
    exit 1
  fi
done

umask 077
if ! awk -F: -v m="$machine" '$1 == m { found = 1 } END { exit !found }' "$auth/machines.passwd"; then
  password="${MACHINE_PASSWORD:-$(new_password)}"
  add_account "$auth/machines.passwd" "$machine" <<< "$password"
  echo "$password"
  echo "account $machine made: the password above is shown this once" >&2
fi
for topic in "$@"; do
  if awk -v m="$machine" -v t="$topic" '$1 == "user" { u = $2 } $1 == "topic" && $2 == "write" && $3 == t && u == m { found = 1 } END { exit !found }' "$auth/acl"; then
    echo "$machine already publishes on $topic" >&2
    continue
  fi
  printf '\n# %s publishes on %s; the gateway reads it\nuser %s\ntopic write %s\nuser %s\ntopic read %s\n' \
    "$machine" "$topic" "$machine" "$topic" "$gateway" "$topic" >> "$auth/acl"
  echo "$machine may publish on $topic" >&2
done
chmod 0600 "$auth"/*
echo "reload the broker: docker compose exec mosquitto sh /pilotline-mqtt/start.sh reload" >&2
