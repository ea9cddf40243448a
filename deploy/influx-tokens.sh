#!/bin/sh
# pilotline's least-privilege InfluxDB 2 tokens, made with the influx CLI and the operator
# token (the CLI's active configuration, or INFLUX_HOST and INFLUX_TOKEN):
#   write_token  writes the bucket and nothing else: the gateway's influx.token_file
#   read_token   reads the bucket and nothing else: Grafana's (InfluxQL through the DBRP
#                mapping, which a read permission on the bucket is enough to use)
# Each is written to a file of mode 0600 owned by the user that reads it, renamed over the one
# before; then the authorizations those files held before are deleted.
#
# In the compose stack InfluxDB runs it once, at its first setup, as root (an init script:
# compose.yaml), into secrets/influx/. Later, to rotate both tokens, or on a stack set up
# before this script existed:
#   docker compose exec -T influxdb /docker-entrypoint-initdb.d/pilotline-tokens.sh
#   docker compose restart pilotline grafana
# Against another InfluxDB 2 (a systemd install), as root, with the influx CLI:
#   INFLUX_HOST=https://influx.plant.example:8086 INFLUX_TOKEN="$(cat operator-token)" \
#   PILOTLINE_INFLUX_ORG=plant PILOTLINE_INFLUX_BUCKET=pilotline \
#   PILOTLINE_TOKENS_DIR=/etc/pilotline/credentials PILOTLINE_WRITE_OWNER=root:root \
#   PILOTLINE_READ_OWNER=grafana:grafana sh deploy/influx-tokens.sh
set -eu

org=${PILOTLINE_INFLUX_ORG:-${DOCKER_INFLUXDB_INIT_ORG:?set PILOTLINE_INFLUX_ORG}}
bucket=${PILOTLINE_INFLUX_BUCKET:-${DOCKER_INFLUXDB_INIT_BUCKET:?set PILOTLINE_INFLUX_BUCKET}}
user=${PILOTLINE_INFLUX_USER:-${DOCKER_INFLUXDB_INIT_USERNAME:-admin}}  # the tokens' user
dir=${PILOTLINE_TOKENS_DIR:-/pilotline-tokens}
write_owner=${PILOTLINE_WRITE_OWNER:-10001:10001}  # deploy/Dockerfile's pilotline user
read_owner=${PILOTLINE_READ_OWNER:-472:0}          # the grafana image's user
write_description="pilotline gateway: write $bucket"
read_description="grafana: read $bucket"

fail() { echo "influx-tokens.sh: $*" >&2; exit 1; }

# A key's string values in the CLI's JSON, one a line (tokens, ids and our descriptions hold
# no comma, brace or quote).
# shellcheck disable=SC2020  # tr: each of , { } becomes a newline
field() { tr ',{}' '\n\n\n' | sed -n "s/^[[:space:]]*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p"; }

bucket_id=${DOCKER_INFLUXDB_INIT_BUCKET_ID:-}
if [ -z "$bucket_id" ]; then
  bucket_id=$(influx bucket list --org "$org" --name "$bucket" --json | field id | head -n 1)
fi
[ -n "$bucket_id" ] || fail "no bucket $bucket in the organisation $org"

# $1 file name, $2 owner, $3 description, $4 --write-bucket or --read-bucket
make_token() {
  answer=$(influx auth create --org "$org" --user "$user" --description "$3" "$4" "$bucket_id" --json)
  token=$(printf '%s\n' "$answer" | field token)
  new_id=$(printf '%s\n' "$answer" | field id | head -n 1)
  if [ -z "$token" ] || [ -z "$new_id" ]; then fail "no token in influx's answer for $3"; fi
  tmp="$dir/.$1.$$"
  (umask 077 && printf '%s\n' "$token" > "$tmp")
  chown "$2" "$tmp"
  mv -f "$tmp" "$dir/$1"
  echo "influx-tokens.sh: $dir/$1 (0600, $2): $3"
  # the tokens made by an earlier run for the same purpose: no longer in any file
  # shellcheck disable=SC2020
  influx auth list --org "$org" --user "$user" --json | tr ',{}' '\n\n\n' |
    awk -v want="$3" -v keep="$new_id" '
      /^[[:space:]]*"id":/ { split($0, part, "\""); id = part[4] }
      /^[[:space:]]*"description":/ { split($0, part, "\""); if (part[4] == want && id != keep) print id }
    ' | while read -r old; do
      influx auth delete --id "$old" > /dev/null
      echo "influx-tokens.sh: deleted the earlier token $old ($3)"
    done
}

mkdir -p "$dir"
make_token write_token "$write_owner" "$write_description" --write-bucket
make_token read_token "$read_owner" "$read_description" --read-bucket
