#!/usr/bin/env bash
set -euo pipefail

export HEROKU_API_KEY=@@UUID@@
HEROKU_APP_ID=@@UUID@@
HEROKU_PIPELINE_ID=@@UUID@@

heroku container:login
heroku container:push web --app "$HEROKU_APP_ID"
heroku container:release web --app "$HEROKU_APP_ID"
