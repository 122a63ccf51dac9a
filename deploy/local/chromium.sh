#!/usr/bin/env bash
# Headless Chromium and ChromeDriver for the inspector's browser test (Debian packages
# chromium, chromium-driver): deploy/local/chromium.sh install
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
case "${1:-}" in
    install)
        ensure_pkg /usr/bin/chromium chromium
        ensure_pkg /usr/bin/chromedriver chromium-driver
        echo "chromium.sh: $(/usr/bin/chromium --version 2>/dev/null | head -n1)"
        ;;
    *) echo "usage: $0 install" >&2; exit 2 ;;
esac
