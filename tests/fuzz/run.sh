#!/bin/sh
# Builds the libFuzzer targets (clang, -fsanitize=fuzzer,address,undefined) and runs each for a
# bounded time: tests/fuzz/run.sh [SECONDS per target, default 60] [BUILD_DIR, default build-fuzz].
# Seeds: the webdataset fixture shards and small tars made by the data tests' writer. Exit code
# non-zero if a target crashes; the crashing input is left in BUILD_DIR as crash-*.
set -e
src=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-60}
out=${2:-$src/build-fuzz}
mkdir -p "$out/corpus-wds" "$out/corpus-json"
cflags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I$src"
libs="$(pkg-config --libs libarchive libjpeg libpng) -lm"
lib_src="$src/data/wds.c $src/data/image.c $src/data/stats.c $src/core/json.c $src/core/error.c"
clang $cflags -o "$out/fuzz_wds" "$src/tests/fuzz/fuzz_wds.c" $lib_src $libs
clang $cflags -o "$out/fuzz_json" "$src/tests/fuzz/fuzz_json.c" "$src/core/json.c" "$src/core/error.c" -lm
cp "$src"/tests/ref/fixtures/wds/*.tar "$out/corpus-wds/"
cp "$src/tests/ref/fixtures/wds/manifest.json" "$out/corpus-json/"
printf '{"a":[1,2.5e-3,"\\u00e9\\ud83d\\ude00",{"b":null}],"c":true}' > "$out/corpus-json/seed1.json"
cd "$out"
./fuzz_wds -max_total_time="$secs" -max_len=131072 -rss_limit_mb=2048 -timeout=10 corpus-wds
./fuzz_json -max_total_time="$secs" -max_len=65536 -timeout=10 corpus-json
