#!/usr/bin/env bash
# Build KenLM's lmplz estimator into textebm's cache (~/.cache/textebm/bin,
# or $TEXTEBM_CACHE/bin) so that textebm.eval.ngram and its tests use it.
# Idempotent: returns in about a second when a working lmplz is cached.
# A first build takes a few minutes on two cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -n "${PYTHON:-}" ]; then
  PY="$PYTHON"
elif [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY="$(command -v python3 || command -v python)"
fi

cached="$("$PY" -c 'from textebm.eval.ngram import lmplz_cache_path; print(lmplz_cache_path())')"
if [ -x "$cached" ]; then
  usage="$("$cached" --help 2>&1 || true)"  # lmplz --help exits with status 1
  if [[ "$usage" == *Kneser-Ney* ]]; then
    echo "lmplz already installed: $cached"
    exit 0
  fi
fi

pkgs=(build-essential cmake libboost-program-options-dev libboost-system-dev
      libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "installing build dependencies: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

"$PY" -c 'from textebm.eval.ngram import install_lmplz; print(install_lmplz())'
