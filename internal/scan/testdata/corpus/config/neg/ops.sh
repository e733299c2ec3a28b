#!/bin/bash
sshpass -p "$SSH_PASSWORD" ssh ops@10.0.4.7 uptime
sshpass -f /run/secrets/ssh_pw ssh ops@10.0.4.7 uptime
redis-cli -h cache -a "$REDIS_PASSWORD" ping
curl -u "$JENKINS_USER:$JENKINS_TOKEN" https://jenkins.internal/api/json
curl -u admin:admin http://localhost:8080/
curl -u user:password https://httpbin.org/basic-auth/user/password
