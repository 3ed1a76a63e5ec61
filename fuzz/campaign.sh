#!/usr/bin/env bash
# A long fuzzing campaign: every target for SECONDS (default 600) one after another, then a table
# of exec counts, corpus sizes and crashes. Usage: bash fuzz/campaign.sh [SECONDS] [TARGET...]
# Results go to stdout; the last run is recorded in fuzz/CAMPAIGN.md by hand.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(RUSTC_BOOTSTRAP=1 cargo fuzz list)
fi
logs="$(mktemp -d)"
RUSTC_BOOTSTRAP=1 cargo fuzz build --release >/dev/null
printf '| target | seconds | execs | execs/s | corpus | crashes |\n|---|---|---|---|---|---|\n' >"$logs/table"
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "seeds/$target"
  status=0
  RUSTC_BOOTSTRAP=1 cargo fuzz run --release "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$logs/$target.log" 2>&1 || status=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$target.log" | tail -1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$target.log" | tail -1)"
  corpus="$(find "corpus/$target" -type f | wc -l)"
  crashes="$(find "artifacts/$target" -type f 2>/dev/null | wc -l)"
  [ "$status" -eq 0 ] || crashes="$crashes (exit $status)"
  printf '| %s | %s | %s | %s | %s | %s |\n' "$target" "$seconds" "${execs:-?}" "${rate:-?}" "$corpus" "$crashes" | tee -a "$logs/table"
done
echo
cat "$logs/table"
