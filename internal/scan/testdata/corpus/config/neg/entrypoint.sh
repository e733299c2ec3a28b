#!/bin/sh
export DB_PASSWORD="$(cat /run/secrets/db_password)"
export REDIS_PASSWORD="${REDIS_PASSWORD:-}"
mysql -u root -p"$MYSQL_ROOT_PASSWORD" -e 'select 1'
mysql -h db -u app -p
PGPASSWORD="$POSTGRES_PASSWORD" psql -h db -U postgres -c 'select 1'
redis-cli -a "$REDIS_PASSWORD" ping
