-- passwords are set by the operator; see docs/runbook.md
CREATE ROLE readonly NOLOGIN;
ALTER ROLE app PASSWORD NULL;
CREATE USER app WITH PASSWORD :'app_password';
ALTER USER deploy WITH ENCRYPTED PASSWORD :'deploy_password';
GRANT SELECT ON ALL TABLES IN SCHEMA public TO readonly;
