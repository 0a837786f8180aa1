#!/usr/bin/env bash
# Run the benchmarks (figures go to the terminal; the reviewed figures live in bench/RESULTS.md).
#
#   scripts/bench.sh                 all three: email poller, WhatsApp limiter (+ BullMQ baseline), transcription
#   scripts/bench.sh email|whatsapp|transcription   one of them
#
# Uses the local services (started here if needed, left running) and takes about 10 minutes in all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ -x .venv/bin/python ]] || { python3 -m venv .venv; .venv/bin/python -m pip install -q -r requirements-dev.txt; }
scripts/services.sh up
# shellcheck disable=SC1090
. "$(scripts/services.sh env)"
which="${1:-all}"
say() { printf '\nbench: %s\n' "$*" >&2; }
if [[ "$which" == all || "$which" == email ]]; then
    say "email poller: idle / 10-new polls on a 10,000-message mailbox vs the original; 5,000-message ingest"
    .venv/bin/python -m bench.email_poll
fi
if [[ "$which" == all || "$which" == whatsapp ]]; then
    say "WhatsApp: limiter accuracy (4 processes x 10 threads, 600 messages) and high-lane latency; BullMQ baseline"
    (cd bench/bullmq && npm ci --silent --no-audit --no-fund)
    .venv/bin/python -m bench.whatsapp_limiter --bullmq
fi
if [[ "$which" == all || "$which" == transcription ]]; then
    say "transcription: peak RSS for a 200 MB recording (streaming vs in memory), transcode speed"
    .venv/bin/python bench/transcription_memory.py
fi
