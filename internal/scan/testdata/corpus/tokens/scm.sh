export GITHUB_TOKEN=@@R:ghp_:A62:36@@
export GH_OAUTH=@@R:gho_:A62:36@@
export GH_APP=@@R:ghs_:A62:36@@
export GH_REFRESH=@@R:ghr_:A62:76@@
export GH_FINE=@@R:github_pat_:A62:82@@
export GITLAB_TOKEN=@@R:glpat-:URL:20@@
curl -X POST -F token=@@R:glptt-:hex:40@@ -F ref=main https://gitlab.internal/api/v4/projects/1/trigger/pipeline
gitlab-runner register --token @@R:glrt-:URL:20@@
export GIT_SHA=@@R::hex:40@@
