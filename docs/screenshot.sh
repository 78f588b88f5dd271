#!/usr/bin/env bash
# Regenerate docs/report.png: the HTML report of the built-in ResNet-18, as `fxlaws report` writes it,
# rendered by headless Chromium and stored as a small palette PNG.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
.venv/bin/fxlaws report resnet18 --loss cross_entropy --format html -o "$tmp/report.html"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$tmp/profile" --hide-scrollbars \
    --screenshot="$tmp/shot.png" --window-size=1200,1250 "file://$tmp/report.html" 2>/dev/null
.venv/bin/python -c "
from PIL import Image
Image.open('$tmp/shot.png').convert('RGB').quantize(colors=128).save('docs/report.png', optimize=True)"
ls -l docs/report.png
