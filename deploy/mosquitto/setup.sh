#!/usr/bin/env bash
# Closes the stack's Mosquitto: the gateway's account, the accounts file of the machines and
# the ACL, made once before the first `docker compose up` (README, "Deployment").
#
#   deploy/mosquitto/setup.sh
#
# Writes what is missing, never overwriting:
#   deploy/secrets/mqtt_password        the gateway's password (random; compose gives it to
#                                       the gateway as /run/secrets/mqtt_password)
#   deploy/mosquitto/auth/gateway.passwd   the gateway's account (a salted hash)
#   deploy/mosquitto/auth/machines.passwd  the machines' accounts: add-machine.sh adds them
#   deploy/mosquitto/auth/acl              who may publish and read what
# auth/ is mode 0700 and its files 0600: only you read them on the host.
#
# SECRETS_DIR and AUTH_DIR choose other folders; GATEWAY_USER another account name than
# "gateway". mosquitto_passwd is taken from the PATH, else run from the eclipse-mosquitto
# image (docker). PUBLISH_BACK_PREFIX (e.g. "uns") lets the gateway also write <prefix>/#,
# for the site's publish_back: section (README, "Published back"); an acl already made is
# never rewritten: add its "topic write <prefix>/#" line under "user gateway" by hand.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=deploy/mosquitto/passwd.sh
. "$here/passwd.sh"
secrets="${SECRETS_DIR:-$here/../secrets}"
gateway="${GATEWAY_USER:-gateway}"
check_account "$gateway"
publish_back="${PUBLISH_BACK_PREFIX:-}"
case "$publish_back" in
  "" ) ;;
  *[+#]* | /* | */ | \$* | *" "* )
    echo "PUBLISH_BACK_PREFIX $publish_back: a plain topic prefix (no wildcards, spaces, \$ or" \
      "leading or trailing /)" >&2
    exit 2 ;;
esac

umask 077
mkdir -p "$auth" "$secrets"
chmod 0700 "$auth"

password_file="$secrets/mqtt_password"
if [ ! -f "$password_file" ]; then
  new_password > "$password_file"
  # The gateway's container user reads it through the compose secret (a bind mount): the
  # 0700 secrets folder, not this file's mode, keeps the host's other users out (as for the
  # other secrets; compose.yaml's header).
  chmod 0444 "$password_file"
  echo "made $password_file (the gateway's MQTT password)" >&2
fi
if [ ! -f "$auth/gateway.passwd" ]; then
  touch "$auth/gateway.passwd"
  add_account "$auth/gateway.passwd" "$gateway" < "$password_file"
  echo "made $auth/gateway.passwd (account $gateway)" >&2
fi
if [ ! -f "$auth/machines.passwd" ]; then
  touch "$auth/machines.passwd"
  echo "made $auth/machines.passwd (no machine yet: add-machine.sh MACHINE TOPIC)" >&2
fi
if [ ! -f "$auth/acl" ]; then
  cat > "$auth/acl" <<ACL
# Who may publish and read what on pilotline's Mosquitto. setup.sh wrote it, add-machine.sh
# appends to it; Mosquitto reads it at start and on reload. What is not listed is refused,
# and clients without an account are not let in at all.

# The gateway: it reads each machine's topic (granted with each machine, below) and publishes
# its alerts under pilotline/ (alerts.mqtt, whose topic_prefix defaults to
# pilotline/<site>/alerts). A channel with another topic_prefix needs its own line here.
user $gateway
topic write pilotline/#
ACL
  if [ -n "$publish_back" ]; then
    cat >> "$auth/acl" <<ACL
# publish_back: (README, "Published back"): each machine's state, capacity and booking.
# Readers of the namespace need their own account and a line "topic read $publish_back/#".
topic write $publish_back/#
ACL
  fi
  echo "made $auth/acl" >&2
fi
chmod 0600 "$auth"/*
echo "the gateway's account: mqtt.username $gateway, mqtt.password_file /run/secrets/mqtt_password" >&2
