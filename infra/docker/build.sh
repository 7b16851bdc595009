#!/usr/bin/env bash
# Build (and optionally push) codemill's cluster image from the repository root:
#   bash infra/docker/build.sh                  # docker build -t $CODEMILL_IMAGE
#   bash infra/docker/build.sh --push           # ... then docker push
# The KubeRay manifests (infra/kuberay/) and the launcher config (infra/cluster.yaml) name this image; to use
# your own registry, set CODEMILL_IMAGE and change the `image:` lines the same way (kustomize edit set image).
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE="${CODEMILL_IMAGE:-ghcr.io/codemill/codemill:0.1.0-cu128}"
docker build -f infra/docker/Dockerfile -t "$IMAGE" .
if [ "${1:-}" = "--push" ]; then
  docker push "$IMAGE"
fi
echo "built $IMAGE"
