# serve.sh - sourced by the HTTP benchmarks: starts `$HEED serve` on a free
# port of 127.0.0.1 with a fresh data folder in $dir, sets $base to its URL,
# and stops it (removing $dir) when the script exits. $name labels errors.
dir=$(mktemp -d)
out="$dir/serve.out"
: >"$out"
"$HEED" serve --port 0 --data-dir "$dir/data" >"$out" 2>"$dir/serve.err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
i=0
while ! grep -q "listening on" "$out" && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
port=$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out")
[ -n "$port" ] || { echo "$name: the server did not start"; cat "$dir/serve.err"; exit 1; }
base="http://127.0.0.1:$port"
