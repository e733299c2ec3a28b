#!/bin/sh
# Called by the release job once the rollout is healthy.
VERSION="$1"
curl -fsS -X POST \
  -H "Authorization: Bearer @@R:x7:A62:38@@" \
  -H "Content-Type: application/json" \
  -d "{\"version\": \"${VERSION}\"}" \
  https://status.internal/api/v1/deployments
curl -fsS -H "Authorization: Bearer ${STATUS_TOKEN}" https://status.internal/api/v1/ping
