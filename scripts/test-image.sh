#!/usr/bin/env bash
# Builds the workspace test image locally (there is no registry): a rootfs
# with Debian's busybox-static, a /configs tree owned by the agent user
# (1000:1000), imported with `docker import`. Idempotent: skips the build
# when the image exists with the same recipe.
set -euo pipefail
IMAGE="${WP_TEST_IMAGE:-workspace-plugins-test:busybox}"
RECIPE_VERSION=1

if docker image inspect "$IMAGE" --format '{{index .Config.Labels "recipe"}}' 2>/dev/null | grep -qx "$RECIPE_VERSION"; then
  exit 0
fi
BUSYBOX=$(command -v busybox || true)
if [ -z "$BUSYBOX" ] || ! file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked'; then
  if ! dpkg -s busybox-static >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static
  fi
  BUSYBOX=/bin/busybox
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc,tmp,configs/plugins,configs/skills}
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/configs:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nagent:x:1000:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"
chown -R 1000:1000 "$root/configs"
tar -C "$root" -c . | docker import \
  --change 'CMD ["/bin/sh", "-c", "trap \"exit 0\" TERM INT; while :; do sleep 1; done"]' \
  --change "LABEL recipe=$RECIPE_VERSION" \
  - "$IMAGE" >/dev/null
echo "built $IMAGE"
