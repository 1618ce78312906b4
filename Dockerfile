# syntax=docker/dockerfile:1
# The one Loam image: `loam node` (a storage node) and `loam operator` (the DataStore controller).
# Its entrypoint is the `loam` command, so a Pod gives only the subcommand and its flags:
#   args: [node, --etcd, ..., --data, /var/lib/loam]      args: [operator, --metrics-listen, $(POD_IP):8080]
# It runs as uid/gid 65532 and writes nothing outside its volumes, so it works with a read-only root
# filesystem: HOME and TMPDIR are /tmp (mount an emptyDir there), node data goes to the volume the
# operator mounts at /var/lib/loam.
#
#   docker build -t ghcr.io/loam-dev/loam:0.1.0 .
# test/dockerfile.test.ts checks what can be checked without docker (the files it copies exist, the
# entrypoint exists, the user is not root).

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: every dependency, compile the TypeScript, then drop the dev dependencies ---------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
ENV npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
# The manifests first, so the dependency layer is reused while only sources change.
COPY package.json package-lock.json ./
COPY sdk/package.json sdk/
COPY node/package.json node/
COPY operator/package.json operator/
# --ignore-scripts: the root `prepare` script would build before the sources are here (built below),
# and no dependency needs an install script (package.json's allowScripts says the same).
RUN npm ci --ignore-scripts
COPY tsconfig.base.json ./
COPY sdk/tsconfig.json sdk/
COPY sdk/src sdk/src
COPY sdk/proto sdk/proto
COPY node/tsconfig.json node/
COPY node/src node/src
COPY node/bin node/bin
COPY operator/tsconfig.json operator/
COPY operator/src operator/src
RUN npm run build \
 && npm prune --omit=dev --ignore-scripts \
 && rm -rf sdk/src node/src operator/src */tsconfig.tsbuildinfo \
 && node node/bin/loam.js --help > /dev/null

# ---- runtime ----------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="loam" \
      org.opencontainers.image.description="Loam storage node and operator (loam node, loam operator)" \
      org.opencontainers.image.source="https://github.com/loam-dev/loam" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production \
    HOME=/tmp \
    TMPDIR=/tmp \
    npm_config_update_notifier=false
WORKDIR /app
COPY --from=build --chown=0:0 /app/package.json /app/package-lock.json ./
COPY --from=build --chown=0:0 /app/node_modules ./node_modules
COPY --from=build --chown=0:0 /app/sdk ./sdk
COPY --from=build --chown=0:0 /app/node ./node
COPY --from=build --chown=0:0 /app/operator ./operator
# `loam` on PATH too (a Pod's `command: [loam, ...]`); the data directory a node's volume mounts over.
RUN ln -s /app/node/bin/loam.js /usr/local/bin/loam \
 && chmod 0755 /app/node/bin/loam.js \
 && mkdir -p /var/lib/loam \
 && chown 65532:65532 /var/lib/loam
# Numeric, so Kubernetes' runAsNonRoot can verify it without a passwd entry.
USER 65532:65532
VOLUME ["/tmp", "/var/lib/loam"]
EXPOSE 7480 7481 8080
ENTRYPOINT ["node", "/app/node/bin/loam.js"]
CMD ["--help"]
