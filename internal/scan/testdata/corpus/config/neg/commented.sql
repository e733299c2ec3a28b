-- ALTER USER app PASSWORD 'xxxxxxxx';
-- Example: CREATE USER 'u'@'%' IDENTIFIED BY '<password>';
SELECT 1;
