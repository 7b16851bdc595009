# Sourced (not run) by infra/cluster.yaml's start commands on every node, just before `ray start`: exports the
# secrets codemill's stages and Ray read from the environment, fetched from AWS SSM Parameter Store with the
# node's instance role. Nothing is printed or put in a Ray runtime env; the one thing written is the Ray
# token, to ~/.ray/auth_token (mode 0600, the container user's), where Ray's CLI finds it in later shells
# (`ray exec infra/cluster.yaml 'ray status'`).
#
# SecureString parameters under ${CODEMILL_SSM_PREFIX:-/codemill} (create them once, see infra/README.md):
#   github-tokens   -> GITHUB_TOKENS  (comma-separated tokens; the crawl's GitHub source)
#   serve-api-key   -> CODEMILL_SERVE_API_KEY  (the serve stage's api_key_env in dags/codegeex.yaml)
#   ray-auth-token  -> RAY_AUTH_TOKEN and RAY_AUTH_MODE=token (Ray's token authentication, same on all nodes)
# A parameter that does not exist is skipped with a note (a crawl from GitHub then fails with its own
# message); any other error (no permission, no region) stops the start command.

_codemill_ssm_get() {
  python - "$1" <<'PY'
import sys

import boto3
from botocore.exceptions import ClientError

try:
    value = boto3.client("ssm").get_parameter(Name=sys.argv[1], WithDecryption=True)["Parameter"]["Value"]
except ClientError as exc:
    if exc.response.get("Error", {}).get("Code") == "ParameterNotFound":
        sys.exit(3)
    print(f"node-secrets: cannot read SSM parameter {sys.argv[1]}: {exc}", file=sys.stderr)
    sys.exit(1)
sys.stdout.write(value.strip())
PY
}

_codemill_export_from_ssm() {
  local var="$1" name="${CODEMILL_SSM_PREFIX:-/codemill}/$2" value rc=0
  value="$(_codemill_ssm_get "$name")" || rc=$?
  if [ "$rc" -eq 3 ]; then
    echo "node-secrets: no SSM parameter $name; $var stays unset" >&2
    return 1
  elif [ "$rc" -ne 0 ]; then
    return 2
  fi
  export "$var=$value"
}

_codemill_export_from_ssm GITHUB_TOKENS github-tokens || [ $? -eq 1 ] || return 1
_codemill_export_from_ssm CODEMILL_SERVE_API_KEY serve-api-key || [ $? -eq 1 ] || return 1
if _codemill_export_from_ssm RAY_AUTH_TOKEN ray-auth-token; then
  export RAY_AUTH_MODE=token
  (umask 077 && mkdir -p "$HOME/.ray" && printf '%s' "$RAY_AUTH_TOKEN" > "$HOME/.ray/auth_token") || return 1
elif [ $? -ne 1 ]; then
  return 1
fi
unset -f _codemill_ssm_get _codemill_export_from_ssm
