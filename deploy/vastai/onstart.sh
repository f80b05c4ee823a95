#!/bin/bash
# AI Telephone server bootstrap for a Vast.ai instance. Rendered by deploy/vastai/onstart.py:
# @@NAMES@@ are replaced with shell-quoted values. No secrets in here: the API key and the TLS
# certificate/key arrive as container environment variables from the create request.
# Vast runs this at every container start, so every step is safe to repeat.
set -euo pipefail

REPO_URL=@@REPO_URL@@
REPO_REF=@@REPO_REF@@
OLLAMA_MODEL=@@OLLAMA_MODEL@@
CHATTERBOX_REPO=@@CHATTERBOX_REPO@@
CHATTERBOX_PATTERNS=@@CHATTERBOX_PATTERNS@@
CHATTERBOX_MODEL=@@CHATTERBOX_MODEL@@
PORT=@@PORT@@

# On Vast.ai none of these is set. tests/test_onstart_run.py runs this very script in a scratch
# root on 127.0.0.1, with stand-ins first on PATH for the commands that need the internet.
R=${AI_TELEPHONE_ONSTART_ROOT:-}
BIND_HOST=${AI_TELEPHONE_ONSTART_BIND_HOST:-0.0.0.0}
PORT=${AI_TELEPHONE_ONSTART_PORT:-$PORT}  # the public port Vast would map, for tests with several "instances"
SVC_USER=${AI_TELEPHONE_ONSTART_USER:-ai-telephone}
OLLAMA_ADDR=${AI_TELEPHONE_ONSTART_OLLAMA:-127.0.0.1:11434}
export PATH="${AI_TELEPHONE_ONSTART_PATH:+$AI_TELEPHONE_ONSTART_PATH:}/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

APP_DIR=$R/opt/ai-telephone
VENV="$APP_DIR/venv"
ETC=$R/etc/ai-telephone
DATA=$R/var/lib/ai-telephone
LOG=$R/var/log/ai-telephone-onstart.log
export DEBIAN_FRONTEND=noninteractive HF_HOME="$DATA/hf"

log() { printf '%s onstart: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
die() { log "FAILED: $*"; exit 1; }

# wait_for SECONDS WHAT CMD...: poll CMD every 2 s until it succeeds; fail after SECONDS.
wait_for() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { log "gave up waiting for $what"; return 1; }
    sleep 2
  done
  log "$what is ready"
}

# retry TIMES CMD...: run CMD until it succeeds, at most TIMES times (downloads fail sometimes).
retry() {
  local times=$1 n=1
  shift
  until "$@"; do
    [ "$n" -lt "$times" ] || return 1
    log "attempt $n of $* failed; trying again"
    n=$((n + 1))
    sleep $((n * 5))
  done
}

# run_forever NAME CMD...: the restart loop used where there is no systemd (Vast containers).
run_forever() {
  local name=$1
  shift
  while true; do
    log "starting $name"
    "$@" || log "$name exited with status $?"
    sleep 5
  done
}

has_systemd() { [ -d /run/systemd/system ]; }

# env_value NAME: a variable from this process, else from PID 1 (the container's own environment).
env_value() {
  local value="${!1:-}"
  if [ -z "$value" ] && [ -r /proc/1/environ ]; then
    value=$({ tr '\0' '\n' </proc/1/environ; } 2>/dev/null | sed -n "s/^$1=//p" | head -n 1)
  fi
  printf '%s' "$value"
}

install_packages() {
  log "installing system packages"
  retry 3 apt-get update -qq
  retry 3 apt-get install -y -qq --no-install-recommends \
    ca-certificates curl git zstd python3-venv espeak-ng libsndfile1 haproxy >/dev/null
  # scripts/serve runs its own HAProxy; the distribution's service (no listeners) is not needed.
  if has_systemd; then systemctl disable --now haproxy.service >/dev/null 2>&1 || true; fi
  id -u "$SVC_USER" >/dev/null 2>&1 ||
    useradd --system --home-dir "$DATA" --create-home --shell /usr/sbin/nologin "$SVC_USER"
  install -d -o "$SVC_USER" -g "$SVC_USER" -m 0750 "$DATA" "$HF_HOME"
}

write_secrets() {
  local key cert tls_key
  key=$(env_value AI_TELEPHONE_API_KEY)
  cert=$(env_value AI_TELEPHONE_TLS_CERT_B64)
  tls_key=$(env_value AI_TELEPHONE_TLS_KEY_B64)
  if [ -z "$key" ] || [ -z "$cert" ] || [ -z "$tls_key" ]; then
    die "AI_TELEPHONE_API_KEY, AI_TELEPHONE_TLS_CERT_B64 and AI_TELEPHONE_TLS_KEY_B64 must be set"
  fi
  install -d -o root -g "$SVC_USER" -m 0750 "$ETC"
  (
    umask 077
    printf '%s\n' "$key" >"$ETC/api-key"
    printf '%s' "$cert" | base64 -d >"$ETC/server-cert.pem"
    printf '%s' "$tls_key" | base64 -d >"$ETC/server-key.pem"
  )
  chown "$SVC_USER:$SVC_USER" "$ETC/api-key" "$ETC/server-cert.pem" "$ETC/server-key.pem"
  cat >"$ETC/config.yaml" <<YAML
server:
  host: 0.0.0.0
  port: $PORT
  api_key_file: $ETC/api-key
  llm:
    backend: ollama
    ollama_host: http://$OLLAMA_ADDR
    model: "$OLLAMA_MODEL"
  tts:
    engine: chatterbox
    chatterbox:
      model: $CHATTERBOX_MODEL
      device: cuda
YAML
  cat >"$ETC/server.env" <<ENV
AI_TELEPHONE_CONFIG=$ETC/config.yaml
AI_TELEPHONE_BIND=$BIND_HOST:$PORT
AI_TELEPHONE_TLS_CERT=$ETC/server-cert.pem
AI_TELEPHONE_TLS_KEY=$ETC/server-key.pem
OLLAMA_HOST=http://$OLLAMA_ADDR
HF_HOME=$HF_HOME
ENV
  # `up --set server.x.y=v` arrives as AI_TELEPHONE__SERVER__X__Y=v: config overrides the server reads.
  { env; { tr '\0' '\n' </proc/1/environ; } 2>/dev/null || true; } |
    grep -E '^AI_TELEPHONE__[A-Z0-9_]+=[A-Za-z0-9_.:/@+-]*$' | sort -u -t= -k1,1 >>"$ETC/server.env" || true
  chmod 0640 "$ETC/config.yaml" "$ETC/server.env"
  chgrp "$SVC_USER" "$ETC/config.yaml" "$ETC/server.env"
  log "wrote the API key, TLS certificate and config to $ETC"
}

ollama_up() { curl -fsS "http://$OLLAMA_ADDR/api/version"; }

start_ollama() {
  if ! command -v ollama >/dev/null; then
    log "installing Ollama"
    retry 3 sh -c 'curl -fsSL https://ollama.com/install.sh | sh'
  fi
  if has_systemd; then
    # Keep Ollama on loopback: only the server on this machine talks to it.
    install -d /etc/systemd/system/ollama.service.d
    printf '[Service]\nEnvironment=OLLAMA_HOST=%s\n' "$OLLAMA_ADDR" >/etc/systemd/system/ollama.service.d/loopback.conf
    systemctl daemon-reload
    systemctl enable --now ollama.service
  elif ! ollama_up >/dev/null 2>&1; then
    OLLAMA_HOST="$OLLAMA_ADDR" run_forever ollama ollama serve >>"$DATA/ollama.log" 2>&1 &
  fi
  wait_for 180 "Ollama on $OLLAMA_ADDR" ollama_up || die "Ollama did not start (see $DATA/ollama.log)"
  log "pulling $OLLAMA_MODEL"
  OLLAMA_HOST="$OLLAMA_ADDR" retry 3 ollama pull "$OLLAMA_MODEL" || die "could not pull $OLLAMA_MODEL"
  OLLAMA_HOST="$OLLAMA_ADDR" ollama show "$OLLAMA_MODEL" >/dev/null || die "$OLLAMA_MODEL missing after pull"
  log "model $OLLAMA_MODEL is ready"
}

install_server() {
  if [ -d "$APP_DIR/.git" ]; then
    log "updating $APP_DIR to $REPO_REF"
    retry 3 git -C "$APP_DIR" fetch --depth 1 origin "$REPO_REF"
    git -C "$APP_DIR" checkout -q --force FETCH_HEAD
  else
    log "cloning $REPO_URL ($REPO_REF)"
    retry 3 git clone -q --depth 1 --branch "$REPO_REF" "$REPO_URL" "$APP_DIR"
  fi
  local py
  py=$(command -v python3.11 || command -v python3) || die "no python3 in the image"
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$py is older than Python 3.11"
  # Reuse the image's CUDA torch 2.6.0 (the version chatterbox-tts pins) instead of a 3 GB download.
  [ -x "$VENV/bin/python" ] || "$py" -m venv --system-site-packages "$VENV"
  log "installing requirements-server.txt"
  retry 3 "$VENV/bin/pip" install -q --disable-pip-version-check -r "$APP_DIR/requirements-server.txt"
  log "fetching Chatterbox weights ($CHATTERBOX_REPO)"
  # shellcheck disable=SC2086  # the patterns are a word list on purpose
  retry 3 runuser -u "$SVC_USER" -- env HF_HOME="$HF_HOME" "$VENV/bin/python" -c \
    'import sys; from huggingface_hub import snapshot_download; snapshot_download(sys.argv[1], allow_patterns=sys.argv[2:])' \
    "$CHATTERBOX_REPO" $CHATTERBOX_PATTERNS >/dev/null
}

# HAProxy (TLS, slow-client timeouts) in front of gunicorn, as the systemd unit runs it.
serve() (
  set -a
  # shellcheck source=/dev/null
  . "$ETC/server.env"
  set +a
  cd "$APP_DIR"
  exec runuser -u "$SVC_USER" -- "$APP_DIR/scripts/serve"
)

start_server() {
  if has_systemd; then
    install -m 0644 "$APP_DIR/systemd/ai-telephone-server.service" /etc/systemd/system/
    systemctl daemon-reload
    systemctl enable ai-telephone-server.service
    systemctl restart ai-telephone-server.service
  else
    run_forever server serve >>"$DATA/server.log" 2>&1 &
  fi
  log "server starting on port $PORT (TLS); /health says when it is ready"
}

main() {
  trap '' HUP
  log "bootstrap begins"
  install_packages
  write_secrets
  start_ollama
  install_server
  start_server
  log "bootstrap done"
  wait
}

# Vast waits for nothing here: the bootstrap runs in the background and logs to $LOG.
mkdir -p "$(dirname "$LOG")"
touch "$LOG"
chmod 0600 "$LOG"
main >>"$LOG" 2>&1 &
disown
echo "ai-telephone: bootstrap running in the background, log: $LOG"
