-- Oracle schema owner and a legacy MySQL grant restored from a dump
CREATE USER hr_app IDENTIFIED BY Hr@@R::A62:12@@;
GRANT CONNECT, RESOURCE TO hr_app;
GRANT USAGE ON *.* TO 'legacy'@'%' IDENTIFIED BY PASSWORD '*@@R::hex:40@@';
