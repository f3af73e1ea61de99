#!/usr/bin/env bash
# The stages' Ctrl+C test alone, as a script started in the background runs it (SIGINT ignored, as POSIX has
# a non-interactive shell's `&` jobs): `(setsid bash repro.sh NAME > /dev/null 2>&1 < /dev/null &)`.
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
export RAY_AUTH_MODE=disabled
.venv/bin/python -m pytest -q -x tests/test_stages.py -k ctrl_c -p no:cacheprovider > "/tmp/repro-$1.txt" 2>&1
echo "rc $?" >> "/tmp/repro-$1.txt"
