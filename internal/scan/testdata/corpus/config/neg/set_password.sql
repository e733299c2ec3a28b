SET PASSWORD FOR 'root'@'localhost' = PASSWORD('root');
SET PASSWORD FOR 'app'@'%' = '';
