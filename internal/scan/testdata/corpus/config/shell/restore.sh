#!/bin/sh
set -eu
export DB_PASSWORD=@@R::A62:18@@
mysql -h db.internal -uroot -p@@R::A62:16@@ shop < dump.sql
mysqldump --user=backup --password=@@R::A62:18@@ --single-transaction shop > /backup/shop.sql
PGPASSWORD=@@R::A62:20@@ psql -h pg.internal -U orders -d orders -f migrate.sql
