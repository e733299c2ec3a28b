#!/bin/bash
# Nightly export of the billing schema, run by cron on the batch host.
set -euo pipefail
ORACLE_SID=BILL
sqlplus -s billing_ro/@@R:Kx:A62:14@@@//ora-bill01.internal:1521/BILLPDB @/opt/batch/sql/close_day.sql
expdp system/"$ORACLE_SYSTEM_PASSWORD" directory=DP_DIR dumpfile=bill_%U.dmp schemas=BILLING
sqlplus / as sysdba @/opt/batch/sql/stats.sql
