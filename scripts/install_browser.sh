#!/usr/bin/env bash
# Install Debian's chromium + chromium-driver (for the search page's browser test) and wrk (for the
# server load benchmark) when missing. Idempotent and fast: a no-op when all are installed already.
# Never fatal: without root or apt-get it says what is missing, and the browser test skips with a reason.
set -u

want=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || want+=(chromium)
command -v chromedriver >/dev/null 2>&1 || [ -x /usr/bin/chromedriver ] || want+=(chromium-driver)
command -v wrk >/dev/null 2>&1 || want+=(wrk)

if [ ${#want[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: missing ${want[*]}; not root or no apt-get, so not installing" \
         "(the browser test will skip; install with: sudo apt-get install ${want[*]})" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# Update the package lists only when an install from the current ones fails (they may be stale or absent).
if ! apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null 2>&1 \
        || echo "install_browser.sh: apt-get could not install ${want[*]}; the browser test will skip" >&2
fi
exit 0
