#!/bin/sh
# The compose stack's secrets, made and replaced by the user who runs the stack (no root).
#
#   ./secrets.sh init              secrets/ (0700) with random InfluxDB and Grafana passwords
#                                  and the InfluxDB operator token, secrets/influx/ where
#                                  InfluxDB's first setup writes pilotline's own tokens
#                                  (influx-tokens.sh), and PILOTLINE_SECRETS_GID in .env
#   COMMAND | ./secrets.sh put NAME
#                                  COMMAND's output, one token, into secrets/NAME (0640),
#                                  replacing the file before (even a read-only one)
#
# The folder is closed to other users of the host (0700). A file only InfluxDB's setup reads
# (as root) is 0600; one Grafana or Prometheus reads is 0640 in your group, which compose adds
# to those containers (group_add: PILOTLINE_SECRETS_GID, written to .env by init): their
# users (472, nobody) are not you. Rootful Docker; the files are bind-mounted as they are.
#
# `put` takes exactly one line of token characters and refuses anything else, leaving the
# previous file as it was: a TTY's carriage returns and the command's own messages (what
# `docker compose exec` without -T mixes into its output) never become the secret.
set -eu
cd "$(dirname "$0")"
umask 077
secrets=${PILOTLINE_SECRETS_DIR:-secrets}

fail() { echo "secrets.sh: $*" >&2; exit 1; }

# Write stdin's one line to $secrets/$1 with mode $2: a temporary file in the same folder,
# renamed over the old one (a rename needs the folder writable, not the file).
install_line() {
  tmp=$(mktemp "$(dirname "$secrets/$1")/.$(basename "$1").XXXXXX")
  trap 'rm -f "$tmp"' EXIT
  cat > "$tmp"
  chmod "$2" "$tmp"
  mv -f "$tmp" "$secrets/$1"
  trap - EXIT
}

random_secret() {  # name bytes mode: made once, never overwritten
  if [ -s "$secrets/$1" ]; then
    echo "kept     $secrets/$1"
  else
    od -An -tx1 -N"$2" /dev/urandom | tr -d ' \n' | install_line "$1" "$3"
    echo "made     $secrets/$1"
  fi
}

init() {
  mkdir -p "$secrets/influx"
  chmod 0700 "$secrets" "$secrets/influx"
  random_secret influx_password 16 0600   # read by InfluxDB's setup, as root
  random_secret influx_token 32 0600      # the operator token: InfluxDB's setup alone
  random_secret grafana_password 16 0640  # Grafana (uid 472, your group through group_add)
  # Placeholders until InfluxDB's first setup replaces them (influx-tokens.sh) and until
  # `put scrape_token`: compose mounts only files that exist.
  for name in influx/write_token influx/read_token scrape_token; do
    [ -e "$secrets/$name" ] || install_line "$name" 0640 < /dev/null
  done
  if ! grep -qs '^PILOTLINE_SECRETS_GID=' .env; then
    echo "PILOTLINE_SECRETS_GID=$(id -g)" >> .env
    echo "wrote    .env: PILOTLINE_SECRETS_GID=$(id -g) (the group Grafana and Prometheus read with)"
  fi
}

put() {
  name=${1:?usage: COMMAND | secrets.sh put NAME}
  case "$name" in
    */* | .* | "") fail "put: $name: a file name in $secrets/, without a folder" ;;
  esac
  [ -d "$secrets" ] || fail "no $secrets/ folder: run ./secrets.sh init first"
  value=$(cat)  # drops the final newline; a carriage return stays and is refused below
  lines=$(printf '%s' "$value" | awk 'END { print NR }')
  if [ -z "$value" ]; then
    fail "put $name: nothing on standard input; $secrets/$name left as it was"
  elif printf '%s' "$value" | grep -q "$(printf '\r')"; then
    fail "put $name: a carriage return in the input (a TTY's output: use docker compose exec -T); $secrets/$name left as it was"
  elif [ "$lines" -ne 1 ]; then
    fail "put $name: $lines lines on standard input, one token expected (messages on stdout? docker compose exec -T keeps stderr apart); $secrets/$name left as it was"
  elif printf '%s' "$value" | grep -q '[^A-Za-z0-9._~+/=-]'; then
    fail "put $name: not a token (characters other than letters, digits and ._~+/=-); $secrets/$name left as it was"
  fi
  printf '%s\n' "$value" | install_line "$name" 0640
  echo "wrote    $secrets/$name (0640)"
}

case "${1:-}" in
  init) init ;;
  put) shift; put "$@" ;;
  *) fail "usage: ./secrets.sh init | COMMAND | ./secrets.sh put NAME" ;;
esac
