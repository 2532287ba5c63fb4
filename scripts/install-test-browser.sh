#!/usr/bin/env bash
# Debian's chromium and chromium-driver, which the browser tests (tests/test_browser.py) drive through selenium.
# Where they cannot be installed (no apt-get, no root), says so and exits 0: those tests then skip with that reason.
set -u
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi
if command -v apt-get >/dev/null \
   && $sudo apt-get update -qq >/dev/null \
   && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null; then
  echo "installed $(chromium --version)"
else
  echo "could not install chromium and chromium-driver (needs apt-get and root): the browser tests will skip" >&2
fi
exit 0
