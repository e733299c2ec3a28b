#!/bin/bash
# Credentials come from ~/.my.cnf; never pass -p on the command line.
mysqldump --defaults-extra-file=/etc/backup/my.cnf --single-transaction shop > shop.sql
mysql --login-path=backup -e "FLUSH LOGS"
mysql_config_editor set --login-path=backup --user=backup --password
