#!/usr/bin/env bash
# Throughput of `coffer scan` against gitleaks on the same tree and the
# same git history, in one run. Prints MB/s of each and the ratio.
#
#   bench/scan-vs-gitleaks.sh [TREE] [REPO]
#
# TREE defaults to this project's Go module cache (after `go mod download`);
# REPO defaults to this repository. gitleaks is installed with go install.
set -euo pipefail
cd "$(dirname "$0")/.."

GITLEAKS_VERSION=v8.30.1
go mod download
TREE=${1:-$(go env GOMODCACHE)}
REPO=${2:-$PWD}
BIN=$(mktemp -d)
trap 'rm -rf "$BIN"' EXIT
go build -o "$BIN/coffer" ./cmd/coffer
GOBIN="$BIN" go install "github.com/zricethezav/gitleaks/v8@$GITLEAKS_VERSION"

# Both tools get the same files: no .gitignore handling, no size limit that
# one applies and the other does not (gitleaks skips nothing by size by
# default; coffer's limit is raised to 100 MB).
tree_mb=$(du -sbL "$TREE" 2>/dev/null | awk '{printf "%.1f", $1/1e6}')
hist_mb=$(git -C "$REPO" log -p -U0 --full-history --all --no-color | wc -c | awk '{printf "%.1f", $1/1e6}')

secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s.%N); echo "$e - $s" | bc; }

c_dir=$(secs "$BIN/coffer" scan --no-ignore --max-file-size 100000000 -o json "$TREE")
g_dir=$(secs "$BIN/gitleaks" dir --no-banner --max-decode-depth 0 --report-format json --report-path "$BIN/gl.json" "$TREE")
c_git=$(secs "$BIN/coffer" scan --git -o json "$REPO")
g_git=$(secs "$BIN/gitleaks" git --no-banner --max-decode-depth 0 --report-format json --report-path "$BIN/gl.json" "$REPO")

printf 'cores: %s\n' "$(nproc)"
printf 'directory %s (%s MB)\n' "$TREE" "$tree_mb"
printf '  coffer   %7.2fs %8.1f MB/s\n' "$c_dir" "$(echo "$tree_mb / $c_dir" | bc -l)"
printf '  gitleaks %7.2fs %8.1f MB/s\n' "$g_dir" "$(echo "$tree_mb / $g_dir" | bc -l)"
printf '  ratio    %7.2fx\n' "$(echo "$g_dir / $c_dir" | bc -l)"
printf 'history %s (%s MB of patches)\n' "$REPO" "$hist_mb"
printf '  coffer   %7.2fs %8.1f MB/s\n' "$c_git" "$(echo "$hist_mb / $c_git" | bc -l)"
printf '  gitleaks %7.2fs %8.1f MB/s\n' "$g_git" "$(echo "$hist_mb / $g_git" | bc -l)"
printf '  ratio    %7.2fx\n' "$(echo "$g_git / $c_git" | bc -l)"
