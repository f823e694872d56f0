#!/usr/bin/env bash
# Set up everything `make book` and `make test` need; safe to run again (it only does what is missing).
#   - Debian packages: WordNet 3.0 (wordnet-base, wordnet-sense-index) and chromium (book screenshot test),
#     installed with apt-get when running as root, otherwise a message says what to install;
#   - .venv with the pinned requirements (requirements/pins.txt) and hrvlm installed editable.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv

missing=()
[ -f /usr/share/wordnet/data.noun ] && [ -f /usr/share/wordnet/index.sense ] || missing+=(wordnet-base wordnet-sense-index)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "[setup] please install these Debian/Ubuntu packages: sudo apt-get install --no-install-recommends ${missing[*]}"
    echo "[setup]   (WordNet alternatives: an NLTK data folder with corpora/wordnet, or '.venv/bin/hrvlm wordnet download' online;"
    echo "[setup]    without chromium the book's screenshot test is skipped)"
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
want=$(cat pyproject.toml requirements/pins.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$VENV/.hrvlm-requirements" 2>/dev/null)" != "$want" ]; then
  echo "[setup] pip install -e '.[book,test]' with the pins of requirements/pins.txt (a few minutes the first time)"
  "$VENV/bin/pip" install -q --disable-pip-version-check -c requirements/pins.txt -e ".[book,test]"
  echo "$want" > "$VENV/.hrvlm-requirements"
fi
