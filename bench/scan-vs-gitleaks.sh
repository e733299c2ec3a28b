#!/usr/bin/env bash
# Throughput of `coffer scan` against gitleaks on the same tree and the
# same git history, in one run. Prints MB/s of each and the ratio.
#
#   bench/scan-vs-gitleaks.sh [TREE] [REPO]
#
# TREE defaults to this project's Go module cache (after `go mod download`);
# REPO defaults to this repository; REPO=synthetic builds a history of 27
# commits (31 MB of patches) from the k8s.io/api v0.37.2 module source, one
# commit per top-level directory. gitleaks is installed with go install.
set -euo pipefail
cd "$(dirname "$0")/.."

GITLEAKS_VERSION=v8.30.1
go mod download
TREE=${1:-$(go env GOMODCACHE)}
REPO=${2:-$PWD}
BIN=$(mktemp -d)
trap 'rm -rf "$BIN"' EXIT
if [ "$REPO" = synthetic ]; then
  src=$(cd "$BIN" && go mod download -json k8s.io/api@v0.37.2 | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  REPO=$BIN/history
  mkdir -p "$REPO"
  git -C "$REPO" init -q
  for d in "$src"/*/; do
    cp -r "$d" "$REPO/"
    chmod -R u+w "$REPO"
    git -C "$REPO" add -A
    git -C "$REPO" -c user.name=bench -c user.email=bench@localhost commit -qm "add $(basename "$d")"
  done
fi
go build -o "$BIN/coffer" ./cmd/coffer
GOBIN="$BIN" go install "github.com/zricethezav/gitleaks/v8@$GITLEAKS_VERSION"

# Both tools get the same files: no .gitignore handling, no size limit that
# one applies and the other does not (gitleaks skips nothing by size by
# default; coffer's limit is raised to 100 MB).
tree_mb=$(du -sbL "$TREE" 2>/dev/null | awk '{printf "%.1f", $1/1e6}')
hist_mb=$(git -C "$REPO" log -p -U0 --full-history --all --no-color | wc -c | awk '{printf "%.1f", $1/1e6}')

# A finding is an answer, not a failure: coffer exits 3 (docs/cli.md),
# gitleaks 1. Any other non-zero exit is a failure that would make the
# timing meaningless.
secs() {
  local s e rc=0
  s=$(date +%s.%N)
  "$@" >/dev/null 2>"$BIN/stderr" || rc=$?
  e=$(date +%s.%N)
  case "$(basename "$1"):$rc" in
    *:0 | coffer:3 | gitleaks:1) ;;
    *) echo "scan-vs-gitleaks: $1 failed (exit $rc):" >&2; cat "$BIN/stderr" >&2; exit 1 ;;
  esac
  echo "$e - $s" | bc
}

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
