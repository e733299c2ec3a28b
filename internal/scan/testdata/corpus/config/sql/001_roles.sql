-- roles for the orders service
CREATE ROLE orders_rw WITH LOGIN PASSWORD '@@R::A62:20@@';
CREATE USER 'shop'@'%' IDENTIFIED BY '@@R::A62:18@@';
ALTER USER reporting WITH PASSWORD '@@R:Rp-:A62:16@@';
ALTER USER 'app'@'10.%' IDENTIFIED WITH caching_sha2_password BY '@@R::A62:20@@';

CREATE ROLE etl WITH
  LOGIN
  PASSWORD '@@R::A62:22@@'
  VALID UNTIL '2027-01-01';

CREATE LOGIN svc_billing WITH PASSWORD = '@@R:Bl!:A62:18@@', CHECK_POLICY = ON;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO reporting;
SET PASSWORD FOR 'legacy'@'%' = PASSWORD('@@R::A62:16@@');
