# shellcheck shell=bash
# Shared by setup.sh and add-machine.sh (sourced): where the accounts are, and how one is
# made. Not run on its own.

# shellcheck disable=SC2034  # used by the scripts that source this one
auth="${AUTH_DIR:-$here/auth}"

# An account's name: what a pilotline id may be (and never a ':', which ends it in the
# password file).
check_account() {
  if [[ ! "$1" =~ ^[a-z0-9][a-z0-9._-]*$ ]]; then
    echo "$1: an account's name is lowercase letters, digits, '.', '_' and '-'" >&2
    exit 2
  fi
}

# 32 hex digits from the kernel's random source.
new_password() {
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
  echo
}

# add_account FILE USER < password: adds (or replaces) USER's salted hash in FILE. The
# password goes through stdin, never the command line (where `ps` would show it).
add_account() {
  local file="$1" user="$2" password
  IFS= read -r password
  if command -v mosquitto_passwd >/dev/null 2>&1; then
    printf '%s\n%s\n' "$password" "$password" | mosquitto_passwd "$file" "$user" >/dev/null
  else
    local dir
    dir="$(cd "$(dirname "$file")" && pwd)"
    printf '%s\n%s\n' "$password" "$password" | docker run --rm -i \
      --user "$(id -u):$(id -g)" -v "$dir:/auth" --entrypoint mosquitto_passwd \
      "${MOSQUITTO_IMAGE:-eclipse-mosquitto:2}" "/auth/$(basename "$file")" "$user" >/dev/null
  fi
}
